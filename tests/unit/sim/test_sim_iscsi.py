"""The simulated SAN's iSCSI sessions (sanbusd/sim/iscsi.py): laid out as the kernel lane saw them,
scans, the SAN admin's provision by initiator name, a portal going silent and coming back."""

from __future__ import annotations

import time

import pytest

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.model.ids import HCTL
from sanbusd.sim import control
from sanbusd.sim.fabric import FabricError, parse_fabric
from sanbusd.sim.san import SimulatedSan

TARGET = "iqn.2003-01.org.linux-iscsi.klab:tgt1"
INITIATOR = "iqn.2004-10.com.example:klab-initiator"


def wwid(lun: int) -> str:
    return "naa.6001405" + f"{lun:08x}1111222233334444"[:25]


def fabric(recovery_tmo: float = 0.2, policy: str = "strict", luns: dict | None = None) -> dict:
    luns = {0: [INITIATOR], 4: []} if luns is None else luns
    return {
        "defaults": {"scan_delay": 0.0},
        "multipathd": {"conf": f"defaults {{\n user_friendly_names yes\n find_multipaths {policy}\n}}\n"},
        "array": [{"name": "lio", "vendor": "LIO-ORG", "model": "RAMDISK-MCP", "rev": "4.0", "iqn": TARGET,
                   "portals": ["127.0.0.1:3260", "192.168.77.1:3260"],
                   "lun": [{"lun": n, "size": "8M", "wwid": wwid(n), "masked_to": to} for n, to in luns.items()]}],
        "host": [{"type": "iscsi", "initiator": INITIATOR, "portal": p, "recovery_tmo": recovery_tmo}
                 for p in ("127.0.0.1:3260", "192.168.77.1")],
    }


@pytest.fixture
def san(tmp_path):
    def make(**kw) -> SimulatedSan:
        s = SimulatedSan(parse_fabric(fabric(**kw)), tmp_path / "sys")
        s.build()
        s.events = []
        s.set_event_sink(s.events.extend)
        made.append(s)
        return s
    made: list[SimulatedSan] = []
    yield make
    for s in made:
        s.close()


def wait_for(pred, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sessions_are_laid_out_as_on_the_kernel(san, tmp_path):
    s = san()
    r = SysfsReader(tmp_path / "sys")
    assert r.session_names() == ["session1", "session2"]
    one, two = (r.read_session(n) for n in r.session_names())
    assert (one.host, one.address, one.port, one.state, one.tpgt) == (0, "127.0.0.1", 3260, "LOGGED_IN", 1)
    assert (two.host, two.address, two.target_name, two.initiator_name) == (1, "192.168.77.1", TARGET, INITIATOR)
    assert one.recovery_tmo == 0  # int(0.2): the kernel's attribute is whole seconds
    assert [h.transport for h in map(r.read_host, r.host_numbers())] == ["iscsi", "iscsi"]
    # LUNs below the session, channel 0, target 0, as the kernel puts them
    assert s.luns[HCTL(0, 0, 0, 0)] == "devices/platform/host0/session1/target0:0:0/0:0:0:0"
    assert r.lun_ids() == [HCTL(0, 0, 0, 0), HCTL(1, 0, 0, 0)]
    lun = r.read_lun(HCTL(1, 0, 0, 0))
    assert (lun.vendor, lun.model, lun.rev, lun.wwid, lun.size) == ("LIO-ORG", "RAMDISK-MCP", "4.0", wwid(0), 8 << 20)
    assert s.serials[HCTL(1, 0, 0, 0)] == "3" + wwid(0)[4:]


def test_targeted_scan_attaches_a_masked_lun_only(san):
    s = san()
    s.scan_host(0, 0, 0, 4)
    assert HCTL(0, 0, 0, 4) not in s.luns  # not masked to the initiator yet
    control.handle(s, {"command": "provision", "array": "lio", "luns": [4], "size": "8M",
                       "initiators": [INITIATOR]})
    ua = [e for e in s.events if e.properties.get("SDEV_UA")]
    # LIO queues it per ACL (the initiator's name): one of the initiator's sessions hears it
    assert [e.devpath.rsplit("/", 1)[1] for e in ua] == ["0:0:0:0"]
    s.scan_host(0, 0, 0, 4)
    s.scan_host(1, 0, 0, 4)
    assert {HCTL(0, 0, 0, 4), HCTL(1, 0, 0, 4)} <= set(s.luns)
    assert HCTL(0, 0, 0, 5) not in s.luns and HCTL(0, 0, 1, 4) not in s.luns


def test_portal_down_fails_the_session_then_times_out_and_fails_the_paths(san, tmp_path):
    s = san(policy="no")
    r = SysfsReader(tmp_path / "sys")
    (m,) = s.maps.values()
    s.events.clear()
    control.handle(s, {"command": "portal-down", "address": "192.168.77.1"})
    assert r.read_session("session2").state == "FAILED" and r.read_session("session1").state == "LOGGED_IN"
    assert r.read_lun(HCTL(1, 0, 0, 0)).state == "blocked"
    assert m.failed == [] and s.events == []  # no uevent: the checker's TUR is pending on a blocked device
    wait_for(lambda: r.read_session("session2").state == "FREE")
    wait_for(lambda: m.failed == [s.blocks[HCTL(1, 0, 0, 0)]])
    assert r.read_lun(HCTL(1, 0, 0, 0)).state == "transport-offline"
    assert [e.properties.get("DM_ACTION") for e in s.events] == ["PATH_FAILED"]
    view = s.mpd_view(m.name)
    assert [p.host_adapter for g in view.groups for p in g.paths] == ["127.0.0.1", "[undef]"]
    control.handle(s, {"command": "portal-up", "address": "192.168.77.1"})
    assert r.read_session("session2").state == "LOGGED_IN" and r.read_lun(HCTL(1, 0, 0, 0)).state == "running"
    assert m.failed == [] and s.events[-1].properties.get("DM_ACTION") == "PATH_REINSTATED"


def test_portal_up_before_the_recovery_timeout(san, tmp_path):
    s = san(recovery_tmo=30, policy="no")
    (m,) = s.maps.values()
    s.portal_down("192.168.77.1")
    s.portal_up("192.168.77.1")
    r = SysfsReader(tmp_path / "sys")
    assert r.read_session("session2").state == "LOGGED_IN" and r.read_lun(HCTL(1, 0, 0, 0)).state == "running"
    assert m.failed == []


def test_lio_maps_queue_as_multipathd_s_hardware_table_says(san):
    s = san(policy="no")
    (m,) = s.maps.values()
    view = s.mpd_view(m.name)
    assert (view.features, view.queueing, view.failback, view.hwhandler) == (
        "1 queue_if_no_path", "12 chk", "immediate", "1 alua")
    assert {p.target_wwnn for g in view.groups for p in g.paths} == {TARGET}


def test_the_saved_state_keeps_the_sessions_and_a_recovery_under_way(tmp_path):
    state = tmp_path / "state.json"
    s = SimulatedSan(parse_fabric(fabric(recovery_tmo=0.3)), tmp_path / "sys", state_file=state)
    s.build()
    s.portal_down("192.168.77.1")
    s.close()                       # stopped while the session recovers
    again = SimulatedSan(parse_fabric(fabric(recovery_tmo=0.3)), tmp_path / "sys", state_file=state)
    assert again._reopen({"digest": None}) is None
    try:
        assert [(h.session, h.session_state) for h in again.hosts.values()] == [(1, "LOGGED_IN"), (2, "FAILED")]
        r = SysfsReader(tmp_path / "sys")
        wait_for(lambda: r.read_session("session2").state == "FREE")  # the timeout was re-armed
        assert again._next_session == 3
    finally:
        again.close()


@pytest.mark.parametrize(("request_", "error"), [
    ({"command": "portal-down", "address": "10.9.9.9"}, "no iSCSI portal with address '10.9.9.9'"),
    ({"command": "portal-up"}, "missing 'address'"),
    ({"command": "portal-down", "address": "a b"}, "must be a portal's address"),
    ({"command": "provision", "array": "lio", "luns": [4], "initiators": ["iqn.bad"]}, "WWPN"),
])
def test_refusals_say_what_is_wrong(san, request_, error):
    s = san()
    answer = control.answer(s, __import__("json").dumps(request_).encode())
    assert not answer["ok"] and error in answer["error"], answer


@pytest.mark.parametrize(("change", "error"), [
    (lambda f: f["host"][0].update(portal="10.0.0.1:3260"), "portal 10.0.0.1:3260 is no array's"),
    (lambda f: f["host"][0].update(initiator="nope"), "initiator must be an iSCSI name"),
    (lambda f: f["array"][0].update(iqn="x"), "iqn must be an iSCSI name"),
    (lambda f: f["array"][0].update(portals=["1.2.3.4:99999"]), "a portal is"),
    (lambda f: f["array"][0]["lun"][0].update(masked_to=["iqn-nope"]), "masked_to"),
])
def test_fabric_mistakes_are_named(change, error):
    f = fabric()
    change(f)
    with pytest.raises(FabricError, match=error):
        parse_fabric(f)
