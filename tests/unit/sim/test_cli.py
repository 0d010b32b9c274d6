"""sanbusd-sim says what is wrong in one line, never with a traceback; the control socket checks
every request itself and answers an error, whatever a client sends."""

import json
import subprocess
import sys

import pytest

from sanbusd.model.ids import HCTL
from sanbusd.sim.control import answer
from sanbusd.sim.fabric import load_fabric
from sanbusd.sim.generate import generate, small_fc_fabric



def sim_cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "sanbusd.cli.sim", *args],
                          capture_output=True, text=True, timeout=timeout)


def refused(r, *words):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


FABRIC_WITH_BAD_MASK = """
[[host]]
type = "fc"
wwnn = "2000000000000001"
wwpn = "1000000000000001"
fabric = "A"
[[array]]
name = "arr"
wwnn = "5000000000000001"
[[array.port]]
wwpn = "5000000000000011"
fabric = "A"
[[array.lun]]
lun = 0
[[array.lun]]
lun = 1
masked_to = ["1000000000000001", "zz"]
"""


def test_layout_names_the_bad_entry_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(FABRIC_WITH_BAD_MASK)
    r = sim_cli("layout", str(bad), str(tmp_path / "out"))
    refused(r, "array[0].lun[1].masked_to", "'zz'", "16 hex digits")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text,words", [
    ('[[array]]\nwwnn = "5000000000000001"\n[[array.lun]]\nlun = 0\nsize = "ten"\n',
     ["array[0].lun[0]", "'ten' is not a size"]),
    ("host = 5\n", ["host", "[[host]]"]),
    ('[[host]]\ntype = "sas"\ndisk = [{size = 5.5}]\n', ["host[0].disk[0]", "size"]),
    ("switch = 3\n", ["switch", "table"]),
    ("[[host]\n", ["bad.toml"]),
])
def test_layout_refuses_malformed_fabrics_in_one_line(tmp_path, text, words):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = sim_cli("layout", str(bad), str(tmp_path / "out"))
    refused(r, *words)
    assert len(r.stderr.strip().splitlines()) == 1


def test_layout_of_a_missing_file(tmp_path):
    refused(sim_cli("layout", str(tmp_path / "none.toml"), str(tmp_path / "out")),
            "none.toml", "No such file")


def test_a_bad_wwpn_is_refused_before_anything_is_sent(tmp_path):
    # No daemon at --dir: the check must come first, or the message would be about the socket.
    r = sim_cli("--dir", str(tmp_path), "port-down", "nonsense")
    refused(r, "WWPN 'nonsense'", "16 hex digits")
    refused(sim_cli("--dir", str(tmp_path), "provision", "--array", "a", "--lun", "1",
                    "--to", "1000000000000001,xyz"), "WWPN 'xyz'", "16 hex digits")


@pytest.mark.parametrize("args,words", [
    (["provision", "--array", "a", "--lun", "x", "--to", "1000000000000001"], ["'x'", "LUN"]),
    (["provision", "--array", "a", "--lun", "5-2", "--to", "1000000000000001"], ["'5-2'"]),
    (["resize", "--array", "a", "--lun", "1", "--size", "10X"], ["'10X' is not a size"]),
    (["mpath-create", "--wwid", " "], ["is not a WWID"]),
    (["port-up", "500a098101a1b2c3"], ["no simulated SAN at"]),
    (["generate", "--hosts", "3", "--paths", "2"], ["hosts a multiple"]),
])
def test_other_mistakes_are_one_clear_line(tmp_path, args, words):
    refused(sim_cli("--dir", str(tmp_path), *args), *words)


@pytest.mark.parametrize("request_bytes,words", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"command": 5}', "JSON object"),
    (b'{"command": "explode"}', "unknown command 'explode'"),
    (b'{"command": "port-down"}', "missing 'wwpn'"),
    (b'{"command": "port-down", "wwpn": "nonsense"}', "16 hex digits"),
    (b'{"command": "port-down", "wwpn": 5}', "'wwpn' must be str"),
    (b'{"command": "port-down", "wwpn": "5000000000000099"}', "no array port with WWPN"),
    (b'{"command": "provision", "array": "netapp1", "luns": ["27"], "initiators": '
     b'["10000090fa1b2c01"]}', "LUN '27'"),
    (b'{"command": "provision", "array": "netapp1", "luns": [27], "initiators": ["zz"]}',
     "16 hex digits"),
    (b'{"command": "provision", "array": "nope", "luns": [27], "initiators": '
     b'["10000090fa1b2c01"]}', "no array named 'nope' (arrays: netapp1)"),
    (b'{"command": "provision", "array": "netapp1", "luns": [27], "size": "big", '
     b'"initiators": ["10000090fa1b2c01"]}', "'big' is not a size"),
    (b'{"command": "unprovision", "array": "netapp1", "luns": [0, 77]}',
     "array netapp1 has no LUN 77"),
    (b'{"command": "resize", "array": "netapp1", "lun": true, "size": "1G"}', "must be int"),
    (b'{"command": "mpath-create", "wwid": "naa.6000000000000000"}', "no LUN path with WWID"),
    (b'{"command": "mpath-remove", "wwid": "36000"}', "no map for WWID"),
])
def test_the_control_socket_answers_an_error_and_changes_nothing(sim, request_bytes, words):
    before = (sorted(sim.luns), {n: set(s.masked_to) for n, s in sim.fabric.arrays[0].luns.items()})
    reply = answer(sim, request_bytes)
    assert reply["ok"] is False and words in reply["error"], reply
    assert (sorted(sim.luns), {n: set(s.masked_to)
                               for n, s in sim.fabric.arrays[0].luns.items()}) == before


def test_the_control_socket_serves_good_requests(sim):
    req = {"command": "provision", "array": "netapp1", "luns": [27], "size": "1G",
           "initiators": ["0x10:00:00:90:fa:1b:2c:01"]}
    assert answer(sim, json.dumps(req).encode()) == {"ok": True}
    assert "10000090fa1b2c01" in sim.fabric.arrays[0].luns[27].masked_to
    sim.scan_host(1, 0, 0, 27)
    reply = answer(sim, b'{"command": "writes"}')
    assert [(w["path"], w["data"], w["result"]) for w in reply["writes"]] == [
        ("class/scsi_host/host1/scan", "0 0 27", "ok")]
    reply = answer(sim, json.dumps({"command": "mpath-create",
                                    "wwid": sim.fabric.arrays[0].luns[27].wwid}).encode())
    assert reply["ok"] and reply["map"]["name"] == "mpatha" and HCTL(1, 0, 0, 27) in sim.luns


def test_small_fc_fabric_says_what_it_lays_out(tmp_path):
    f = load_fabric(small_fc_fabric(tmp_path / "f.toml", hosts=3, scan_delay=0.5,
                                    host_delays={0: 4.0}, luns=(0, 7), array_ports=2))
    assert [h.wwpn for h in f.hosts] == ["1000000000000001", "1000000000000002",
                                         "1000000000000003"]
    assert [h.scan_delay for h in f.hosts] == [4.0, None, None] and f.scan_delay == 0.5
    (arr,) = f.arrays
    assert [p.wwpn for p in arr.ports] == ["5000000000000011", "5000000000000021"]
    assert sorted(arr.luns) == [0, 7]
    assert all(lun.masked_to == {h.wwpn for h in f.hosts} for lun in arr.luns.values())


def test_generate_refuses_numbers_that_do_not_divide():
    with pytest.raises(ValueError, match="multiple"):
        generate(3, 2, 1, 16, 0)
    assert "[[array.lun]]" in generate(2, 2, 1, 4, 0)
