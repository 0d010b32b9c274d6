"""The simulated multipathd, spoken to through a real socket with libmpathcmd's framing (a native
size_t holding the text's length plus its NUL, then the text and the NUL, both ways), as the
daemon's client and `multipathd -k` speak to the real one.

The real sample (samples/real-show-maps-json.txt) is multipath-tools 0.9.4's `show maps json`
over two scsi_debug hosts with the same two LUNs, from
../shared/reference/kernel-samples/multipath-show.txt; a fabric replaying that setup must give
the same text but for the sd names the kernel's probing order picked.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import tomllib
from pathlib import Path

import pytest

from sanbus_testing import DEMO_FABRIC, wait_until

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.kinds import read_all
from sanbusd.model.ids import HCTL
from sanbusd.sim.fabric import generated_wwid, load_fabric, parse_fabric
from sanbusd.sim.multipathd import MultipathdServer, load_conf, parse_conf_sections
from sanbusd.sim.san import SimulatedSan

SAMPLE = Path(__file__).with_name("samples") / "real-show-maps-json.txt"
LEN = struct.Struct("@N")
WAIT = 2.0                          # no socket wait in these tests is longer

W = {n: "3" + generated_wwid(0, n)[4:] for n in (0, 1, 2)}     # netapp1 LUNs 0-2: two paths
A_PORT = "500a098101a1b2c3"         # netapp1's port on fabric A: host1's paths


# -- a tiny libmpathcmd ---------------------------------------------------------------------------

def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def send(s: socket.socket, cmd: str) -> None:
    data = cmd.encode() + b"\0"
    s.sendall(LEN.pack(len(data)) + data)


def receive(s: socket.socket) -> str:
    (n,) = LEN.unpack(_recv_exact(s, LEN.size))
    assert 0 < n <= 32 << 20
    body = _recv_exact(s, n)
    assert body.endswith(b"\0") and b"\0" not in body[:-1]
    return body[:-1].decode()


def ask(path: str, cmd: str, timeout: float = WAIT) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        send(s, cmd)
        return receive(s)


def maps(path: str) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(ask(path, "show maps json"))["maps"]}


def paths_of(m: dict) -> dict[str, dict]:
    return {p["dev"]: p for g in m["path_groups"] for p in g["paths"]}


def write_conf(sim, name: str, text: str) -> None:
    d = sim.etc / "multipath" / "conf.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)


def reconfigure(sock: str) -> None:
    assert ask(sock, "reconfigure") == "ok\n"
    ask(sock, "show maps json")         # waits for the reconfigure to let go of the lock


# -- fixtures ---------------------------------------------------------------------------------------

def _start(sim: SimulatedSan, tmp_path: Path):
    sim.events = []
    sim.set_event_sink(sim.events.append)           # one list per batch
    server = MultipathdServer(sim, tmp_path / "mpd.sock")
    sim.multipathd = server
    server.start()
    return server


@pytest.fixture
def san(tmp_path):
    s = SimulatedSan(load_fabric(DEMO_FABRIC), tmp_path / "sys")
    s.fabric.scan_delay = 0
    s.fabric.multipathd.reconfigure_delay = 0
    s.build()
    server = _start(s, tmp_path)
    s.sock = server.path
    yield s
    server.close()
    s.close()


def flat(sim) -> list:
    return [e for batch in sim.events for e in batch]


# -- the protocol and the JSON ---------------------------------------------------------------------

def test_show_maps_json_has_the_real_keys_and_layout(san):
    for n in (0, 1):
        assert ask(san.sock, f"add map {W[n]}") == "ok\n"
    text = ask(san.sock, "show maps json")
    ours, real = json.loads(text), json.loads(SAMPLE.read_text())
    assert set(ours) == set(real) == {"major_version", "minor_version", "maps"}
    assert (ours["major_version"], ours["minor_version"]) == (0, 1)
    rm, om = real["maps"][0], ours["maps"][0]
    assert list(om) == list(rm)                                     # same keys, same order
    assert list(om["path_groups"][0]) == list(rm["path_groups"][0])
    assert list(om["path_groups"][0]["paths"][0]) == list(rm["path_groups"][0]["paths"][0])
    assert (om["name"], om["uuid"], om["sysfs"], om["paths"]) == ("mpatha", W[0], "dm-0", 2)
    # print.c's indentation: 3 spaces a level, "key" : value inside a map
    assert text.startswith('{\n   "major_version": 0,\n   "minor_version": 1,\n   "maps": [{\n'
                           '      "name" : "mpatha",\n')
    assert text.endswith("   }]\n}\n")
    fc = paths_of(om)[san.blocks[HCTL(1, 0, 0, 0)]]
    assert (fc["host_wwpn"], fc["target_wwpn"], fc["host_wwnn"], fc["target_wwnn"]) == (
        "0x10000090fa1b2c01", "0x500a098101a1b2c3", "0x20000090fa1b2c01", "0x500a098000a1b2c3")
    assert re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]", fc["host_adapter"])


SCSI_DEBUG = """
[defaults]
scan_delay = 0
[multipathd]
reconfigure_delay = 0
conf = '''
defaults {
    user_friendly_names yes
    find_multipaths no
    path_grouping_policy failover
}
'''
[[host]]
type = "other"
driver = "scsi_debug"
[[host.disk]]
lun = 0
vendor = "Linux"
model = "scsi_debug"
rev = "0191"
size = "8M"
wwid = "naa.33333330000007d0"
mpath_wwid = "1Linux_scsi_debug_2000"
[[host.disk]]
lun = 1
vendor = "Linux"
model = "scsi_debug"
rev = "0191"
size = "8M"
wwid = "naa.33333330000007d1"
mpath_wwid = "1Linux_scsi_debug_2001"
"""


def test_the_scsi_debug_lab_replays_to_the_real_text(tmp_path):
    """Two scsi_debug hosts with the same two LUNs, find_multipaths no: multipathd makes
    mpatha and mpathb by itself, and says so in the very text 0.9.4 printed (sd names aside)."""
    host = SCSI_DEBUG[SCSI_DEBUG.index("[[host]]"):]
    fabric = parse_fabric(tomllib.loads(SCSI_DEBUG + host))        # a second, same host
    sim = SimulatedSan(fabric, tmp_path / "sys")
    sim.build()
    server = _start(sim, tmp_path)
    try:
        ours = ask(server.path, "show maps json")
    finally:
        server.close()
        sim.close()

    def strip_devs(t: str) -> str:
        t = re.sub(r'"dev" : "sd[a-z]+"', '"dev" : "sdX"', t)
        return re.sub(r'"dev_t" : "8:\d+"', '"dev_t" : "8:N"', t)
    assert strip_devs(ours) == strip_devs(SAMPLE.read_text())
    assert json.loads(ours)["maps"][0]["path_groups"][0]["paths"][0]["dev"] == sim.blocks[
        HCTL(0, 0, 0, 0)]


def test_several_commands_on_one_connection_and_show_map(san):
    san.mpath_create(W[1])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(san.sock)
        send(s, "show daemon")
        assert re.fullmatch(r"pid \d+ idle\n", receive(s))
        for name in ("mpatha", "dm-0"):
            send(s, f"show map {name} json")
            one = json.loads(receive(s))
            assert set(one) == {"major_version", "minor_version", "map"}
            assert one["map"]["uuid"] == W[1]
        send(s, f"show map {W[1]} json")        # 0.9.4 finds a map by dm-N or name only
        assert receive(s) == "fail\n"
        send(s, "show map mpathz json")
        assert receive(s) == "fail\n"
        send(s, "show status")
        assert receive(s) == "path checker states:\nup                  2\n\npaths: 2\nbusy: False\n"


def test_unknown_commands_answer_as_0_9_4_does(san):
    assert ask(san.sock, "frobnicate").startswith("frobnicate: not found\n")
    assert ask(san.sock, "show frob maps") == "fail\n"        # an unknown word not at the end
    assert ask(san.sock, "add map").startswith("add map: Missing argument\n")
    assert "CLI commands reference" in ask(san.sock, "show")


# -- add map, del map, reconfigure -----------------------------------------------------------------

def test_add_map_makes_a_map_over_every_path_and_remembers_the_wwid(san):
    inv = read_all(SysfsReader(san.root))
    assert ask(san.sock, f"add map {W[2]}") == "ok\n"
    m = maps(san.sock)["mpatha"]
    assert sorted(paths_of(m)) == sorted([inv.luns[HCTL(1, 0, 0, 2)].block,
                                          inv.luns[HCTL(2, 0, 0, 2)].block])
    assert m["action"] == "create" and m["map_loads"] == 1
    assert (san.root / "devices/virtual/block/dm-0/dm/uuid").read_text() == f"mpath-{W[2]}\n"
    assert f"/{W[2]}/\n" in (san.etc / "multipath/wwids").read_text()
    assert ask(san.sock, f"add map {W[2]}") == "ok\n"              # there already
    assert ask(san.sock, "add map 3600a0980000000000000000000000099") == "fail\n"  # no paths
    assert list(maps(san.sock)) == ["mpatha"]


def test_del_map_flushes_and_add_map_fails_until_a_reconfigure(san):
    assert ask(san.sock, f"add map {W[0]}") == "ok\n"
    san.events.clear()
    assert ask(san.sock, f"del map {W[0]}") == "fail\n"            # a WWID is not its dm name
    assert ask(san.sock, "remove map mpatha") == "ok\n"
    assert maps(san.sock) == {} and not (san.root / "devices/virtual/block/dm-0").exists()
    assert ("remove", "dm-0") in {(e.action, e.sys_name) for e in flat(san)}
    assert ask(san.sock, "del map mpatha") == "fail\n"             # gone already
    # the real 0.9.4 pitfall: add map of a WWID just flushed answers fail ...
    assert ask(san.sock, f"add map {W[0]}") == "fail\n"
    assert maps(san.sock) == {}
    # ... a reconfigure makes it again (strict: the WWID is in the wwids file), same name
    reconfigure(san.sock)
    assert maps(san.sock)["mpatha"]["uuid"] == W[0]
    assert ask(san.sock, "del map mpatha") == "ok\n"
    reconfigure(san.sock)
    assert ask(san.sock, "del map mpatha") == "ok\n"


def test_reconfigure_makes_what_find_multipaths_allows(san):
    boot = "35000c500a1b2c3d4"                  # the SAS boot disk: one path
    san.mpath_create(W[0])                      # into the wwids file
    san.mpath_remove(W[0])
    reconfigure(san.sock)                       # strict: only WWIDs in the wwids file
    assert {m["uuid"] for m in maps(san.sock).values()} == {W[0]}
    write_conf(san, "sanbusd.conf", "defaults {\n\tfind_multipaths yes\n}\n")
    reconfigure(san.sock)                       # yes: two paths or more, or in the file
    assert {m["uuid"] for m in maps(san.sock).values()} == {W[0], W[1], W[2]}
    write_conf(san, "sanbusd.conf", "defaults {\n\tfind_multipaths greedy\n}\n")
    reconfigure(san.sock)                       # greedy: every WWID, one path or not
    assert boot in {m["uuid"] for m in maps(san.sock).values()}
    assert ask(san.sock, "show map mpathd json") != "fail\n"


def test_friendly_names_off_and_on_rename_maps_and_keep_bindings(san):
    san.mpath_create(W[1])
    write_conf(san, "sanbusd.conf", "defaults {\n  user_friendly_names no\n}\n")
    reconfigure(san.sock)
    assert list(maps(san.sock)) == [W[1]]
    assert (san.root / "devices/virtual/block/dm-0/dm/name").read_text() == f"{W[1]}\n"
    assert ask(san.sock, f"del map {W[1]}") == "ok\n"                # the name is the WWID
    (san.etc / "multipath/conf.d/sanbusd.conf").unlink()
    reconfigure(san.sock)                                               # back, same binding
    assert list(maps(san.sock)) == ["mpatha"]
    assert ask(san.sock, f"add map {W[2]}") == "ok\n"
    assert set(maps(san.sock)) == {"mpatha", "mpathb"}


def test_blacklist_and_exceptions_from_a_drop_in(san):
    write_conf(san, "sanbusd.conf", f"""# Written by sanbusd
defaults {{
\tuser_friendly_names yes
\tfind_multipaths strict
}}
blacklist {{
\twwid ".*"
}}
blacklist_exceptions {{
\twwid "^{W[1]}$"
}}
""")
    reconfigure(san.sock)
    assert ask(san.sock, f"add map {W[0]}") == "blacklisted\n"
    assert ask(san.sock, f"add map {W[1]}") == "ok\n"                  # the exception wins
    conf = load_conf(san.etc)
    assert (conf.blacklist, conf.exceptions) == ([".*"], [f"^{W[1]}$"])
    # a map that became blacklisted goes at the next reconfigure (an open one stays)
    assert ask(san.sock, f"add map {W[2]}") == "blacklisted\n"
    write_conf(san, "sanbusd.conf", f'blacklist {{\n wwid "{W[1]}"\n}}\n')
    san.hold_open("mpatha", "qemu (pid 1)")
    reconfigure(san.sock)
    assert list(maps(san.sock)) == ["mpatha"]
    san.release("mpatha")
    reconfigure(san.sock)
    assert maps(san.sock) == {}


def test_the_conf_parser_reads_real_syntax_tolerantly():
    secs = parse_conf_sections("""
# comment
defaults { user_friendly_names "yes" }   ! another comment
blacklist {
    wwid "^3600a0980000000000000000000000001$"  # quoted, with a comment
    device {
        vendor "NETAPP"
    }
}
}   # a stray brace is read past
multipaths {
    multipath {
        wwid 3600a0980000000000000000000000002
        alias data1
    }
}
""")
    assert [s.name for s in secs] == ["defaults", "blacklist", "multipaths"]
    assert secs[0].entries == [("user_friendly_names", "yes")]
    assert secs[1].entries == [("wwid", "^3600a0980000000000000000000000001$")]


# -- open maps and deferred remove -------------------------------------------------------------

def test_an_open_map_is_not_flushed(san):
    san.mpath_create(W[0])
    san.hold_open("mpatha", 'qemu-system-x86 (pid 4242)')
    assert san.block_users("dm-0") == ["qemu-system-x86 (pid 4242)"]
    san.events.clear()
    assert ask(san.sock, "del map mpatha") == "fail\n"
    assert list(maps(san.sock)) == ["mpatha"] and san.events == []
    san.release("dm-0")
    assert san.block_users("dm-0") == []
    assert ask(san.sock, "del map mpatha") == "ok\n"


def test_deferred_remove_waits_for_the_last_holder(san):
    san.mpath_create(W[0])
    san.mpath_create(W[1])
    san.dm_deferred_remove("mpatha")                   # not open: gone now
    assert "dm-0" not in san.maps
    san.hold_open("dm-1", "a mount")
    san.events.clear()
    san.dm_deferred_remove("dm-1")
    assert "dm-1" in san.maps and san.events == []
    san.release("mpathb")
    assert "dm-1" not in san.maps
    assert ("remove", "dm-1") in {(e.action, e.sys_name) for e in flat(san)}
    with pytest.raises(OSError) as e:
        san.dm_deferred_remove("mpathq")
    assert e.value.errno == 6                           # ENXIO


# -- paths failing and coming back ----------------------------------------------------------------

def test_a_port_going_down_fails_its_paths_in_the_same_batch(san):
    for n in (0, 1):
        san.mpath_create(W[n])
    san.events.clear()
    san.port_down(A_PORT)
    (batch,) = san.events                           # one burst: the port and the maps' paths
    failed = [e for e in batch if e.properties.get("DM_ACTION") == "PATH_FAILED"]
    assert {e.sys_name for e in failed} == {"dm-0", "dm-1"}
    assert {e.subsystem for e in batch if e not in failed} == {"fc_remote_ports"}
    sd = san.blocks[HCTL(1, 0, 0, 0)]
    ev = next(e for e in failed if e.sys_name == "dm-0")
    assert (ev.action, ev.properties["DM_PATH"], ev.properties["DM_NR_VALID_PATHS"],
            ev.properties["DM_NAME"]) == ("change", f"8:{(ord(sd[2]) - 97) * 16}", "1", "mpatha")
    p = paths_of(maps(san.sock)["mpatha"])[sd]
    assert (p["dm_st"], p["chk_st"], p["dev_st"]) == ("failed", "faulty", "offline")
    assert maps(san.sock)["mpatha"]["paths"] == 1 and maps(san.sock)["mpatha"]["path_faults"] == 1
    assert (san.root / san.luns[HCTL(1, 0, 0, 0)] / "state").read_text() == "blocked\n"
    san.events.clear()
    san.port_up(A_PORT)
    (batch,) = san.events
    assert sum(e.properties.get("DM_ACTION") == "PATH_REINSTATED" for e in batch) == 2
    p = paths_of(maps(san.sock)["mpatha"])[sd]
    assert (p["dm_st"], p["chk_st"], p["dev_st"]) == ("active", "ready", "running")


def test_device_state_offline_is_seen_by_the_checker_only(san):
    """echo offline > device/state: the kernel sends no uevent; dm's PATH_FAILED is the news."""
    san.mpath_create(W[2])
    san.events.clear()
    hctl = HCTL(2, 0, 0, 2)
    san.device_state(hctl, "offline")
    (batch,) = san.events
    assert [(e.sys_name, e.properties["DM_ACTION"]) for e in batch] == [("dm-0", "PATH_FAILED")]
    assert read_all(SysfsReader(san.root)).luns[hctl].state == "offline"
    with pytest.raises(OSError) as e:
        san.device_state(hctl, "blocked")               # store_state_field: EINVAL
    assert e.value.errno == 22
    san.write(f"class/scsi_device/{hctl}/device/state", "running\n")    # the raw write too
    assert paths_of(maps(san.sock)["mpatha"])[san.blocks[hctl]]["chk_st"] == "ready"


def test_checker_delay_fails_the_path_later_in_its_own_batch(san):
    san.mpath_create(W[0])
    san.fabric.multipathd.checker_delay = 0.2
    san.events.clear()
    san.device_state(HCTL(1, 0, 0, 0), "offline")
    sd = san.blocks[HCTL(1, 0, 0, 0)]
    p = paths_of(maps(san.sock)["mpatha"])[sd]
    assert (p["dm_st"], p["chk_st"], p["dev_st"]) == ("active", "ready", "offline")   # pending
    wait_until(lambda: len(san.events) == 1, timeout=WAIT)
    assert paths_of(maps(san.sock)["mpatha"])[sd]["dm_st"] == "failed"


def test_paths_lost_leave_the_map_and_the_last_one_flushes_it(san):
    san.mpath_create(W[0])
    san.mpath_create(W[1])
    san.hold_open("mpathb", "qemu")
    san.delete_lun(HCTL(1, 0, 0, 0))
    assert list(paths_of(maps(san.sock)["mpatha"])) == [san.blocks[HCTL(2, 0, 0, 0)]]
    san.delete_lun(HCTL(2, 0, 0, 0))                    # the last path: flushed
    san.delete_lun(HCTL(1, 0, 0, 1))
    san.delete_lun(HCTL(2, 0, 0, 1))                    # the last path of an open map: stays
    assert list(maps(san.sock)) == ["mpathb"] and maps(san.sock)["mpathb"]["path_groups"] == []


def test_new_paths_join_their_map_and_make_maps_the_policy_allows(san):
    san.mpath_create(W[0])                              # W[0] in the wwids file
    san.delete_lun(HCTL(2, 0, 0, 0))
    san.delete_lun(HCTL(2, 0, 0, 1))
    san.events.clear()
    san.scan_host(2, None, None, None)
    (kernel, multipathd) = san.events                   # the path, then multipathd's reaction
    assert all(e.properties.get("DM_NAME") is None for e in kernel)
    assert ("change", "dm-0") in {(e.action, e.sys_name) for e in multipathd}
    m = maps(san.sock)["mpatha"]
    # loaded three times: made, without the deleted path, with the path found again
    assert len(paths_of(m)) == 2 and m["action"] == "reload" and m["map_loads"] == 3
    assert set(maps(san.sock)) == {"mpatha"}            # strict: W[1] is not in the wwids file
    write_conf(san, "sanbusd.conf", "defaults {\n find_multipaths yes\n}\n")
    reconfigure(san.sock)
    assert set(maps(san.sock)) == {"mpatha", "mpathb", "mpathc"}


# -- modes ----------------------------------------------------------------------------------------

def test_absent_hung_garbage_and_restart(san):
    server = san.multipathd
    server.set_mode("absent")
    with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
        ask(san.sock, "show daemon")
    server.set_mode("running")
    assert ask(san.sock, "show daemon").startswith("pid ")

    server.set_mode("hung")
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        ask(san.sock, "show maps json", timeout=0.3)    # read, never answered
    assert time.monotonic() - t0 < WAIT
    server.set_mode("garbage")
    reply = ask(san.sock, "show maps json")
    with pytest.raises(ValueError):
        json.loads(reply)
    server.set_mode("running")

    san.mpath_create(W[0])
    server.set_mode("restart")
    with pytest.raises(ConnectionRefusedError):
        ask(san.sock, "show daemon")
    wait_until(lambda: _answers(san.sock), timeout=WAIT)
    assert list(maps(san.sock)) == ["mpatha"]           # its state kept


def _answers(sock: str) -> bool:
    try:
        return ask(sock, "show daemon").startswith("pid ")
    except OSError:
        return False


def test_commands_during_a_reconfigure_wait_or_answer_timeout(san):
    san.fabric.multipathd.reconfigure_delay = 0.6
    san.fabric.multipathd.uxsock_timeout = 0.2
    assert ask(san.sock, "reconfigure") == "ok\n"
    assert ask(san.sock, "show maps json") == "timeout\n"       # the lock is taken
    assert re.fullmatch(r"pid \d+ configure\n", ask(san.sock, "show daemon"))   # unlocked
    san.fabric.multipathd.uxsock_timeout = WAIT
    assert json.loads(ask(san.sock, "show maps json"))["maps"] == []    # waited, then answered


# -- persistence and the backend ---------------------------------------------------------------

def test_state_survives_a_restart_of_the_daemon(tmp_path):
    from sanbusd.sim.backend import SimBackend
    fabric = tmp_path / "demo.toml"
    fabric.write_text(DEMO_FABRIC.read_text().replace("scan_delay = 0.3", "scan_delay = 0"))
    d = tmp_path / "sim"
    b = SimBackend(fabric, str(d))
    try:
        assert b.multipathd_socket == str(d / "multipathd.sock")
        assert b.multipath_conf_dir == str(d / "etc/multipath/conf.d")
        assert "find_multipaths strict" in (d / "etc/multipath.conf").read_text()
        assert ask(b.multipathd_socket, f"add map {W[0]}") == "ok\n"
        assert ask(b.multipathd_socket, f"add map {W[1]}") == "ok\n"
        assert ask(b.multipathd_socket, "del map mpatha") == "ok\n"
        b.sim.hold_open("mpathb", "qemu")
        b.sim.device_state(HCTL(1, 0, 0, 1), "offline")
    finally:
        b.stop()
    again = SimBackend(fabric, str(d))
    try:
        sock = again.multipathd_socket
        assert list(maps(sock)) == ["mpathb"]
        assert ask(sock, f"add map {W[0]}") == "fail\n"              # still just flushed
        assert again.block_users("dm-1") == ["qemu"]
        sd = again.sim.blocks[HCTL(1, 0, 0, 1)]
        assert paths_of(maps(sock)["mpathb"])[sd]["dm_st"] == "failed"
        assert again.sim.wwids == [W[0], W[1]]
        assert again.sim.bindings == {W[0]: "mpatha", W[1]: "mpathb"}
        again.dm_deferred_remove("mpathb")
        assert list(maps(sock)) == ["mpathb"]
    finally:
        again.stop()


# -- the SAN admin's control socket and sanbusd-sim ----------------------------------------------

def test_control_requests_for_multipathd_device_state_and_open_maps(san):
    from sanbusd.sim.control import answer
    def req(**kw) -> dict:
        return answer(san, json.dumps(kw).encode())
    assert req(command="mpath-create", wwid=W[0])["ok"]
    assert req(command="hold-open", block="mpatha", by="qemu (pid 7)") == {"ok": True}
    assert san.block_users("dm-0") == ["qemu (pid 7)"]
    assert "map in use" in req(command="mpath-remove", wwid=W[0])["error"]
    assert req(command="release", block="dm-0") == {"ok": True}
    assert req(command="device-state", hctl="1:0:0:0", state="offline") == {"ok": True}
    assert maps(san.sock)["mpatha"]["paths"] == 1
    bad = req(command="device-state", hctl="1:0:0:0", state="blocked")
    assert not bad["ok"] and "Invalid argument" in bad["error"]
    assert "no such device" in req(command="device-state", hctl="9:0:0:0", state="offline")[
        "error"]
    assert "H:C:T:L" in req(command="device-state", hctl="sdc", state="offline")["error"]
    assert "mode must be" in req(command="multipathd", mode="sleepy")["error"]
    assert req(command="multipathd", mode="absent") == {"ok": True}
    with pytest.raises(ConnectionRefusedError):
        ask(san.sock, "show daemon")
    assert req(command="multipathd", mode="running") == {"ok": True}
    status = req(command="status")
    assert status["opened"] == {} and status["multipath"]["wwids"] == [W[0]]
    assert status["multipath"]["mode"] == "running"
    assert status["multipath"]["config"]["find_multipaths"] == "strict"


def test_sanbusd_sim_checks_the_new_commands_before_sending(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "sanbusd.cli.sim", "--dir",
                               str(tmp_path), *args], capture_output=True, text=True,
                              timeout=30)
    r = cli("multipathd", "sleepy")
    assert r.returncode != 0 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
    r = cli("device-state", "sdc", "offline")
    assert r.returncode != 0 and "H:C:T:L" in r.stderr
    r = cli("device-state", "1:0:0:0", "blocked")
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = cli("multipathd", "hung")                        # no SAN there: one line, no traceback
    assert r.returncode != 0 and "no simulated SAN" in r.stderr and "Traceback" not in r.stderr
