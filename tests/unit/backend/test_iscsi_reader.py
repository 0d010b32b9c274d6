"""iSCSI sessions read from a sysfs tree laid out as kernel 6.1's iscsi_tcp lays it out (from
a real guest: one host per session, the session below its host, connection 0 beside it)."""

import os
from pathlib import Path

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.backend.uevent import UEvent, dirty_from_event
from sanbusd.kinds import read_all
from sanbusd.publish import paths
from sanbusd.publish.render import RenderContext, render_session


def _attrs(d: Path, **values: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for k, v in values.items():
        (d / k).write_text(v + "\n")


def iscsi_tree(root: Path) -> Path:
    sys = root / "sys"
    host = sys / "devices/platform/host0"
    _attrs(host / "scsi_host/host0", proc_name="iscsi_tcp", state="running", unique_id="0")
    _attrs(host / "iscsi_host/host0", ipaddress="192.168.77.1", initiatorname="(null)")
    sess = host / "session1"
    _attrs(sess / "iscsi_session/session1", targetname="iqn.2003-01.org.linux-iscsi.kl:tgt1",
           state="LOGGED_IN", tpgt="1", initiatorname="iqn.2004-10.com.example:kl-initiator",
           recovery_tmo="5")
    os.symlink("../../../session1", sess / "iscsi_session/session1/device")
    _attrs(sess / "connection1:0/iscsi_connection/connection1:0", address="192.168.77.1",
           port="3260", persistent_address="192.168.77.1", persistent_port="3260", state="up")
    for cls, rel in (("scsi_host", "devices/platform/host0/scsi_host/host0"),
                     ("iscsi_host", "devices/platform/host0/iscsi_host/host0"),
                     ("iscsi_session", "devices/platform/host0/session1/iscsi_session/session1"),
                     ("iscsi_connection", "devices/platform/host0/session1/connection1:0/"
                                          "iscsi_connection/connection1:0")):
        name = os.path.basename(rel)
        (sys / "class" / cls).mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../{rel}", sys / "class" / cls / name)
    return sys


def test_a_session_is_read_with_its_host_target_and_portal(tmp_path):
    inv = read_all(SysfsReader(iscsi_tree(tmp_path)))
    assert inv.hosts[0].transport == "iscsi"
    s = inv.sessions["session1"]
    assert (s.host, s.target_name, s.state, s.tpgt) == (
        0, "iqn.2003-01.org.linux-iscsi.kl:tgt1", "LOGGED_IN", 1)
    assert (s.address, s.port, s.recovery_tmo) == ("192.168.77.1", 3260, 5)
    props = render_session(RenderContext(inv), s)["org.example.SanStorage.IscsiSession"]
    assert props["Host"] == paths.host(0)
    assert props["Portal"] == "192.168.77.1:3260"
    assert paths.parse(paths.session("session1")) == ("session", "session1")
    assert paths.parse(f"{paths.ROOT}/iscsi/session01") is None     # strict: a near miss
    assert paths.parse(f"{paths.ROOT}/iscsi/session0") is None      # sessions start at 1


def test_session_and_connection_events_dirty_the_session():
    for sub, dev in (("iscsi_session", "/devices/platform/host0/session3/iscsi_session/session3"),
                     ("iscsi_connection",
                      "/devices/platform/host0/session3/connection3:0/iscsi_connection/"
                      "connection3:0")):
        d = dirty_from_event(UEvent("change", sub, dev))
        assert d.sessions == {"session3"}, sub
