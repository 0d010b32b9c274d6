"""multipathd's JSON read into map statuses, a map's health from its paths, WWIDs as multipath
writes them, and the drop-in sanbusd writes (render -> parse), all pure.

The JSON samples are real `multipathd show maps json` replies of multipath-tools 0.9.4 (two
scsi_debug hosts, two LUNs, maps made by multipathd itself), copied from
../shared/reference/kernel-samples/multipath-{show,ops}.txt into
tests/unit/backend/samples/multipathd/. The ops capture was cut off in the middle of its JSON.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sanbusd import persist
from sanbusd.model.multipath import (DEFAULT_FIND, FIND_MULTIPATHS, HEADER, UNKNOWN, MapStatus,
                                     MultipathSettings, PathStatus, PathView, health,
                                     mpath_wwid, parse_dropin, parse_map_json, parse_maps_json,
                                     parse_paths_raw, render_dropin)

SAMPLES = Path(__file__).resolve().parents[1] / "backend" / "samples" / "multipathd"
SHOW_MAPS = (SAMPLES / "sample-show-maps.json").read_text()
CUT_MAPS = (SAMPLES / "sample-ops-show-maps-cut.txt").read_text()


def doc():
    return json.loads(SHOW_MAPS)


# -- show maps json ---------------------------------------------------------------------------

def test_real_show_maps_json_is_keyed_by_dm_device_with_every_path():
    maps = parse_maps_json(SHOW_MAPS)
    assert list(maps) == ["dm-0", "dm-1"]
    a, b = maps["dm-0"], maps["dm-1"]
    assert (a.name, a.wwid, a.dm, a.features, a.hwhandler) == (
        "mpatha", "1Linux_scsi_debug_2000", "dm-0", "0", "1 alua")
    assert (b.name, b.wwid, b.dm) == ("mpathb", "1Linux_scsi_debug_2001", "dm-1")
    # every path of every path group, in the map's order, with dm's and the checker's state
    assert a.paths == (PathStatus("sdc", "active", "ready", "running"),
                       PathStatus("sdb", "active", "ready", "running"))
    assert [p.dev for p in b.paths] == ["sda", "sdd"]
    assert a.path("sdb") == PathStatus("sdb", "active", "ready", "running")
    assert a.path("sda") is None


def test_a_failed_path_shows_its_states():
    d = doc()
    p = d["maps"][0]["path_groups"][1]["paths"][0]
    p.update(dm_st="failed", chk_st="faulty", dev_st="offline")
    m = parse_maps_json(json.dumps(d))["dm-0"]
    assert m.path("sdb") == PathStatus("sdb", "failed", "faulty", "offline")
    assert m.path("sdc") == PathStatus("sdc", "active", "ready", "running")


def test_single_map_json():
    d = doc()
    one = {"major_version": 0, "minor_version": 1, "map": d["maps"][1]}
    m = parse_map_json(json.dumps(one, indent=3))
    assert isinstance(m, MapStatus)
    assert (m.name, m.wwid, m.dm, m.hwhandler) == ("mpathb", "1Linux_scsi_debug_2001", "dm-1",
                                                   "1 alua")
    assert [p.dev for p in m.paths] == ["sda", "sdd"]
    with pytest.raises(ValueError, match='no "map"'):
        parse_map_json(json.dumps({"major_version": 0, "maps": []}))
    with pytest.raises(ValueError, match="not an object"):
        parse_map_json(json.dumps({"map": ["mpatha"]}))


def test_undef_and_missing_states_are_unknown():
    d = doc()
    p0 = d["maps"][0]["path_groups"][0]["paths"][0]
    p0["dm_st"] = "[undef]"
    p0["chk_st"] = "undef"
    p0["dev_st"] = "[undef]"
    p1 = d["maps"][0]["path_groups"][1]["paths"][0]
    del p1["dm_st"], p1["chk_st"]
    m = parse_maps_json(json.dumps(d))["dm-0"]
    assert m.paths == (PathStatus("sdc", UNKNOWN, UNKNOWN, UNKNOWN),
                       PathStatus("sdb", UNKNOWN, UNKNOWN, "running"))
    assert PathStatus("sdx") == PathStatus("sdx", UNKNOWN, UNKNOWN, UNKNOWN)


def test_older_or_newer_json_is_read_for_what_it_has():
    d = doc()
    # an older multipathd: no path groups, "wwid" for "uuid", no features/hwhandler
    old = d["maps"][0]
    del old["path_groups"], old["features"], old["hwhandler"]
    old["wwid"] = old.pop("uuid")
    # a newer one: fields nobody knows yet, at every level, and a renamed checker field
    new = d["maps"][1]
    new["future_field"] = {"x": [1, 2]}
    new["path_groups"][0]["new_group_field"] = True
    p = new["path_groups"][0]["paths"][0]
    p["checker_state"] = p.pop("chk_st")
    p["new_path_field"] = None
    d["maps"].append({"name": "mpathc"})            # not bound to a dm device yet: left out
    d["new_top_level"] = 42
    maps = parse_maps_json(json.dumps(d))
    assert list(maps) == ["dm-0", "dm-1"]
    assert maps["dm-0"] == MapStatus("mpatha", "1Linux_scsi_debug_2000", "dm-0", "", "", ())
    assert maps["dm-1"].paths[0] == PathStatus("sda", "active", "ready", "running")
    assert maps["dm-1"].features == "0"


def test_oddly_shaped_parts_are_skipped_not_fatal():
    d = doc()
    groups = d["maps"][0]["path_groups"]
    groups[0]["paths"].append({"dm_st": "active"})          # no dev: skipped
    groups[0]["paths"].append("sdz")                         # not an object
    groups.append("group")                                   # not an object
    groups.append({"paths": None})
    groups.append({"paths": 2})                              # a count, not a list
    d["maps"][1]["path_groups"] = "none"
    d["maps"][1]["name"] = None
    maps = parse_maps_json(json.dumps(d))
    assert [p.dev for p in maps["dm-0"].paths] == ["sdc", "sdb"]
    assert maps["dm-1"].paths == () and maps["dm-1"].name == ""
    assert parse_maps_json('{"maps": []}') == {}


@pytest.mark.parametrize("reply, message", [
    ("fail", "not JSON: 'fail'"),
    ("", "not JSON"),
    ("timeout\n", "not JSON: 'timeout'"),
    (CUT_MAPS, "not JSON"),                                  # the reply cut short
    ("[1, 2]", "not an object"),
    ('"maps"', "not an object"),
    ('{"major_version": 0}', 'no "maps" list'),
    ('{"maps": {"dm-0": {}}}', 'no "maps" list'),
    ('{"maps": ["mpatha"]}', "not an object"),
])
def test_not_json_or_not_a_map_list_is_a_clear_value_error(reply, message):
    with pytest.raises(ValueError, match="multipathd|map") as e:
        parse_maps_json(reply)
    assert message in str(e.value)
    assert len(str(e.value)) < 200                         # a bounded excerpt, not the reply


def test_a_long_garbage_reply_is_quoted_short():
    with pytest.raises(ValueError) as e:
        parse_maps_json("x" * 100_000)
    assert len(str(e.value)) < 200


# -- show paths raw format "%d %w" --------------------------------------------------------------

def test_paths_raw():
    text = ("sdc 1Linux_scsi_debug_2000\nsda 1Linux_scsi_debug_2001\n"
            "sdb 1Linux_scsi_debug_2000\nsdd 1Linux_scsi_debug_2001\n"
            "sde \nsdf undef\n\n")
    assert parse_paths_raw(text) == {"sdc": "1Linux_scsi_debug_2000",
                                     "sda": "1Linux_scsi_debug_2001",
                                     "sdb": "1Linux_scsi_debug_2000",
                                     "sdd": "1Linux_scsi_debug_2001"}
    assert parse_paths_raw("") == {}
    with pytest.raises(ValueError, match="did not list paths"):
        parse_paths_raw("multipath-tools v0.9.4 (12/19, 2022)\nCLI commands reference:\n"
                        " list|show paths [raw] format $format\n")


# -- health -------------------------------------------------------------------------------------

def pv(device="running", dm="active", checker="ready", dev="sdx"):
    return PathView(dev, device, dm, checker)


@pytest.mark.parametrize("paths, expected", [
    ([pv(), pv()], "healthy"),
    ([pv(), pv(checker="ghost")], "healthy"),               # ALUA standby: up
    ([pv(), pv(dm="failed")], "degraded"),
    ([pv(), pv(checker="faulty")], "degraded"),
    ([pv(), pv(checker="shaky")], "degraded"),
    ([pv(), pv(checker="i/o timeout")], "degraded"),
    ([pv(), pv(device="offline")], "degraded"),
    ([pv(), pv(device="transport-offline", dm=UNKNOWN, checker=UNKNOWN)], "degraded"),
    ([pv(dm="failed"), pv(device="offline")], "failed"),
    ([pv(checker="faulty")], "failed"),
    ([], "failed"),                                          # no path is up
    # multipathd absent: nothing is down, nothing is known to be up
    ([pv(dm=UNKNOWN, checker=UNKNOWN), pv(dm=UNKNOWN, checker=UNKNOWN)], UNKNOWN),
    ([pv(device=UNKNOWN), pv()], UNKNOWN),                   # a path whose LUN is not shown
    ([pv(), pv(checker="i/o pending")], "healthy"),          # still checking: not down
    ([pv(dm=UNKNOWN, checker=UNKNOWN), pv(dm="failed")], "degraded"),
])
def test_health(paths, expected):
    assert health(paths) == expected


def test_path_up_down_known():
    assert pv().up and not pv().down and pv().known
    assert pv(dm="failed").down and not pv(dm="failed").up
    assert pv(device="blocked").down
    off = pv(device="offline", dm=UNKNOWN, checker=UNKNOWN)
    assert off.down and not off.up and not off.known
    unk = pv(dm=UNKNOWN, checker=UNKNOWN)
    assert unk.up and not unk.down and not unk.known      # unknown does not count against it
    pend = pv(checker="i/o pending")
    assert pend.up and not pend.down
    assert pv(checker="i/o timeout").down


# -- WWIDs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("naa.6001405abcdef0123456789abcdef0123", "36001405abcdef0123456789abcdef0123"),
    ("NAA.6001405ABCDEF0", "36001405abcdef0"),
    (" naa.600a0b80001234 \n", "3600a0b80001234"),
    ("eui.0025385b71b2c0fe", "20025385b71b2c0fe"),
    ("36001405abcdef0123456789abcdef0123", "36001405abcdef0123456789abcdef0123"),
    ("3600a0b80001234", "3600a0b80001234"),
    ("1Linux_scsi_debug_2000", "1Linux_scsi_debug_2000"),   # udev's ID_SERIAL, kept as is
    ("t10.Linux_scsi_debug", "1Linux_scsi_debug"),           # t10 text keeps its case
    ("8" + "a" * 127, "8" + "a" * 127),                      # 128 characters: the limit
])
def test_mpath_wwid_accepts(given, expected):
    assert mpath_wwid(given) == expected


@pytest.mark.parametrize("bad", [
    "", "   ", "3600 1405", "3600\t1405", "36001405\nabc", '"36001405"', "36001405'", "^36001405$",
    "3600.*", "3600*", "(3600)", "3600|3601", "3600+", "3600?", "[3600]", "3600\\d", "3600$",
    "3600{2}", "3600/1", "3600#x", "-3600", "_3600", "8" + "a" * 128, "naa.", "naa.zz12",
    "eui.", "36001405\0",
])
def test_mpath_wwid_rejects(bad):
    with pytest.raises(ValueError, match="not a WWID; give it as sysfs shows it"):
        mpath_wwid(bad)


# -- the drop-in ----------------------------------------------------------------------------------

W1, W2, W3 = "36001405aaaa", "36001405bbbb", "1Linux_scsi_debug_2000"


def test_render_everything_and_read_it_back():
    s = MultipathSettings(True, "greedy", (W1, W2), (W3,))
    text = render_dropin(s)
    assert text == (HEADER
                    + "defaults {\n\tuser_friendly_names yes\n\tfind_multipaths greedy\n}\n"
                    + f'blacklist {{\n\twwid "^{W3}$"\n\twwid ".*"\n}}\n'
                    + f'blacklist_exceptions {{\n\twwid "^{W1}$"\n\twwid "^{W2}$"\n}}\n')
    assert parse_dropin(text) == s


def test_include_only_is_blacklist_all_but_these():
    text = render_dropin(MultipathSettings(include_wwids=(W1,)))
    assert "defaults" not in text
    assert 'blacklist {\n\twwid ".*"\n}\n' in text
    assert f'blacklist_exceptions {{\n\twwid "^{W1}$"\n}}\n' in text
    assert parse_dropin(text) == MultipathSettings(include_wwids=(W1,))


@pytest.mark.parametrize("s", [
    MultipathSettings(),
    MultipathSettings(False),
    MultipathSettings(True),
    MultipathSettings(None, "no"),
    MultipathSettings(False, DEFAULT_FIND),
    MultipathSettings(exclude_wwids=(W1, W3)),
    MultipathSettings(include_wwids=(W1, W2, W3)),
    MultipathSettings(False, "smart", (W3,), (W1, W2)),
    *(MultipathSettings(True, f) for f in FIND_MULTIPATHS),
])
def test_round_trip(s):
    text = render_dropin(s)
    assert text.startswith(HEADER) and text.endswith("\n")
    assert parse_dropin(text) == s
    assert render_dropin(parse_dropin(text)) == text


def test_empty_settings_write_only_the_header():
    assert render_dropin(MultipathSettings()) == HEADER
    assert parse_dropin("") == MultipathSettings()


def test_parse_is_tolerant_of_comments_and_unknown_lines():
    text = (HEADER + "# a comment\n\ndefaults {\n  user_friendly_names   no   # trailing\n"
            "  polling_interval 10\n  find_multipaths On\n}\n"
            "devices {\n  device {\n    vendor \"LIO-ORG\"\n  }\n}\n"
            f"blacklist {{\n  devnode \"^sda$\"\n  wwid \"^{W1}$\"\n}}\n")
    assert parse_dropin(text) == MultipathSettings(False, "yes", (), (W1,))


def test_validated_normalizes():
    s = MultipathSettings(True, " Smart ", ("naa.6001405AAAA",), (W3,)).validated()
    assert s == MultipathSettings(True, "smart", (W1,), (W3,))
    assert MultipathSettings(find_multipaths="off").validated().find_multipaths == "no"
    assert MultipathSettings(find_multipaths="ON").validated().find_multipaths == "yes"
    assert MultipathSettings().validated() == MultipathSettings()


@pytest.mark.parametrize("s, message", [
    (MultipathSettings(find_multipaths="sometimes"),
     "find_multipaths 'sometimes' is not one of strict, no, yes, greedy, smart"),
    (MultipathSettings(find_multipaths=""), "find_multipaths '' is not one of"),
    (MultipathSettings(include_wwids=(W1, W1)), f"include_wwids: WWID {W1} is given twice"),
    (MultipathSettings(include_wwids=(W1, "naa.6001405aaaa")),
     f"include_wwids: WWID {W1} is given twice"),              # the same WWID in two forms
    (MultipathSettings(exclude_wwids=(W3, W3)), f"exclude_wwids: WWID {W3} is given twice"),
    (MultipathSettings(include_wwids=(W1, W2), exclude_wwids=(W3, "naa.6001405bbbb")),
     f"WWID {W2} is both included and excluded"),
    (MultipathSettings(include_wwids=("3600 1",)), "include_wwids: '3600 1' is not a WWID"),
    (MultipathSettings(exclude_wwids=('.*',)), "exclude_wwids: '.*' is not a WWID"),
    (MultipathSettings(include_wwids=tuple(f"3600{i:05d}" for i in range(4097))),
     "include_wwids: at most 4096 WWIDs"),
])
def test_validated_rejects_naming_the_problem(s, message):
    with pytest.raises(ValueError) as e:
        s.validated()
    assert message in str(e.value)


def test_validated_settings_render_no_regex_but_their_own():
    """Whatever passes validation is written as an anchored literal: a WWID cannot widen the
    blacklist (".*" appears only for the include-only idiom)."""
    s = MultipathSettings(None, None, (), ("naa.600a0b8", W3)).validated()
    text = render_dropin(s)
    assert '".*"' not in text
    assert parse_dropin(text) == s


# -- writing it: persist.write_text -----------------------------------------------------------

def test_write_text_writes_atomically_with_the_mode(tmp_path):
    path = tmp_path / "etc" / "multipath" / "conf.d" / "sanbusd.conf"
    text = render_dropin(MultipathSettings(True, "no", (W1,)))
    persist.write_text(path, text, 0o644)
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o755 == 0o755     # readable by multipathd
    persist.write_text(path, HEADER, 0o644)                              # replaces it
    assert path.read_text() == HEADER
    assert os.listdir(path.parent) == ["sanbusd.conf"]                   # no temporary left


def test_write_text_defaults_to_private(tmp_path):
    path = tmp_path / "state" / "x.txt"
    persist.write_text(path, "secret\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_write_text_failing_leaves_the_old_file(tmp_path):
    path = tmp_path / "sanbusd.conf"
    persist.write_text(path, "old\n", 0o644)
    with pytest.raises(UnicodeEncodeError):
        persist.write_text(path, "new \udc80\n", 0o644)     # cannot be encoded: fails mid-write
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["sanbusd.conf"]
