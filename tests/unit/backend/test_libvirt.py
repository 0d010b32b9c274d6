"""vHBAs and pool refreshes through libvirt, against libvirt's test driver.

The test driver (test:///<file>) is an in-process libvirt with the node devices and pools of
libvirt_nodedev.xml. What it can and cannot do shapes these tests:
- nodeDeviceCreateXML checks the parent (unknown -> "Could not find parent device", no vport_ops
  -> "not capable of vport operations") but then always makes "scsi_host12" by copying
  scsi_host11; a second create silently replaces the first, and it refuses no WWN (a duplicate
  WWPN, or the kernel's EINVAL, never happens): those paths are driven by a fake create below.
- destroy() deletes any node device, a physical HBA too (sanbusd must refuse that itself).
- pools of every type can be defined in the file; all start active; refresh does nothing on the
  host, so which pools were refreshed is observed by wrapping virStoragePool.refresh.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sanbusd import errors
from sanbusd.backend.libvirt import HostIds, LibvirtVports, pools_to_refresh

pytestmark = pytest.mark.timeout(30)

HERE = Path(__file__).resolve().parent
NODE_FILE = HERE / "libvirt_nodedev.xml"
URI = f"test://{NODE_FILE}"
TOP = HERE.parents[2]

HBA3 = dict(parent_host=3, parent_wwnn="20000024ff000003", parent_wwpn="21000024ff000003")
VHBA = dict(wwpn="2101001b32a9da5e", wwnn="2001001b32a9da5e")


@pytest.fixture
def libvirt():
    return pytest.importorskip("libvirt")


@pytest.fixture
def lv(libvirt):
    v = LibvirtVports(URI, appear_timeout=0.5)
    yield v
    v.close()


def fc_hosts(lv, libvirt) -> dict[str, str]:
    """name -> XML of every fc_host node device libvirt lists."""
    conn = lv.connection()
    return {d.name(): d.XMLDesc(0)
            for d in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_FC_HOST)}


def make_error(libvirt, code: int, domain: int, message: str, int1: int = -1):
    e = libvirt.libvirtError(message)
    e.err = (code, domain, message, 2, message, None, None, int1, -1)
    e.args = (message,)
    return e


# --- vHBAs --------------------------------------------------------------------------------------

def test_create_returns_the_vhbas_own_host_and_libvirt_lists_it(lv, libvirt):
    host = lv.create_vport(**HBA3, **VHBA)
    assert host == 12                       # the test driver's vHBAs are always scsi_host12
    hosts = fc_hosts(lv, libvirt)
    assert "scsi_host12" in hosts
    assert "<wwpn>2101001b32a9da5e</wwpn>" in hosts["scsi_host12"]
    assert "<wwnn>2001001b32a9da5e</wwnn>" in hosts["scsi_host12"]
    assert lv.connection().nodeDeviceLookupByName("scsi_host12").parent() == "scsi_host3"
    # a vHBA is not itself vport-capable: CAP_VPORTS still lists only the physical HBA
    vports = lv.connection().listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_VPORTS)
    assert [d.name() for d in vports] == ["scsi_host3"]


def test_create_names_the_parent_by_host_number_when_its_wwns_are_not_given(lv, libvirt):
    host = lv.create_vport(3, "", "", **VHBA)
    assert lv.connection().nodeDeviceLookupByName(f"scsi_host{host}").parent() == "scsi_host3"


def test_create_accepts_the_wwn_forms_callers_type(lv, libvirt):
    lv.create_vport(3, "0x20000024FF000003", "21:00:00:24:ff:00:00:03",
                    wwpn="0x2101001B32A9DA5E", wwnn="20:01:00:1b:32:a9:da:5e")
    assert "<wwpn>2101001b32a9da5e</wwpn>" in fc_hosts(lv, libvirt)["scsi_host12"]


def test_delete_removes_the_vhba(lv, libvirt):
    host = lv.create_vport(**HBA3, **VHBA)
    lv.delete_vport(host)
    assert "scsi_host12" not in fc_hosts(lv, libvirt)
    with pytest.raises(libvirt.libvirtError):
        lv.connection().nodeDeviceLookupByName("scsi_host12")


def test_delete_refuses_a_physical_hba(lv, libvirt):
    # The test driver would destroy scsi_host3 itself; a real libvirt errors out later, on the
    # write. Either way sanbusd says what is wrong first.
    with pytest.raises(errors.InvalidArgument, match="scsi_host3 is not a vHBA"):
        lv.delete_vport(3)
    assert "scsi_host3" in fc_hosts(lv, libvirt)


def test_delete_of_a_host_libvirt_does_not_know_is_not_found(lv):
    with pytest.raises(errors.NotFound, match="no node device scsi_host99"):
        lv.delete_vport(99)


@pytest.mark.parametrize("parent", [
    dict(parent_host=99, parent_wwnn="20000024ff000099", parent_wwpn="21000024ff000099"),
    dict(parent_host=99, parent_wwnn="", parent_wwpn=""),
], ids=["by-wwns", "by-name"])
def test_a_parent_libvirt_does_not_know_is_not_found(lv, libvirt, parent):
    with pytest.raises(errors.NotFound, match="Could not find parent device.*nodedev-list"):
        lv.create_vport(**parent, **VHBA)
    assert "scsi_host12" not in fc_hosts(lv, libvirt)


@pytest.mark.parametrize("wwnn, wwpn", [("20000024ff000004", "21000024ff000004"), ("", "")],
                         ids=["by-wwns", "by-name"])
def test_a_parent_without_npiv_is_not_supported(lv, wwnn, wwpn):
    # by name libvirt itself says so; by WWNs it only says "Could not find parent device"
    with pytest.raises(errors.NotSupported,
                       match="scsi_host4 is not capable of vport operations.*nodedev-list"):
        lv.create_vport(4, wwnn, wwpn, **VHBA)


def test_a_parent_whose_wwns_libvirt_sees_elsewhere_is_not_found(lv):
    with pytest.raises(errors.NotFound, match="its scsi_host3 has WWNN 20000024ff000003 WWPN "
                                              "21000024ff000003, not 20000024ff000004"):
        lv.create_vport(3, "20000024ff000004", "21000024ff000004", **VHBA)


def test_a_wwpn_in_use_already_exists(lv, libvirt):
    with pytest.raises(errors.AlreadyExists, match="already in use by scsi_host11"):
        lv.create_vport(**HBA3, wwpn="2100001b32000011", wwnn="2000001b32000099")
    assert "scsi_host12" not in fc_hosts(lv, libvirt)


@pytest.mark.parametrize("field", ["wwpn", "wwnn", "parent_wwnn"])
def test_a_malformed_wwn_is_an_invalid_argument(lv, field):
    args = {**HBA3, **VHBA, field: "2101001b32a9da5e'/><evil/>"}
    with pytest.raises(errors.InvalidArgument, match="16 hex digits"):
        lv.create_vport(**args)


def _einval(libvirt):
    return make_error(libvirt, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_NODEDEV,
                      "Write of '2101001b32a9da5e:2001001b32a9da5e' to "
                      "'/sys/class/fc_host/host3/vport_create' during vport create/delete "
                      "failed: Invalid argument", int1=22)


def test_the_kernels_einval_for_a_wwpn_taken_meanwhile_is_already_exists(lv, libvirt, monkeypatch):
    conn = lv.connection()
    real_create = conn.nodeDeviceCreateXML

    def someone_else_was_first(xml, flags):       # a concurrent creator took the WWPN
        real_create(xml, flags)
        raise _einval(libvirt)

    monkeypatch.setattr(conn, "nodeDeviceCreateXML", someone_else_was_first)
    with pytest.raises(errors.AlreadyExists, match="already in use by scsi_host12"):
        lv.create_vport(**HBA3, **VHBA)


def test_the_kernels_einval_for_wwns_the_hba_refuses_is_an_invalid_argument(lv, libvirt,
                                                                            monkeypatch):
    def refuse(xml, flags):
        raise _einval(libvirt)

    monkeypatch.setattr(lv.connection(), "nodeDeviceCreateXML", refuse)
    with pytest.raises(errors.InvalidArgument, match="Invalid argument: the HBA refused"):
        lv.create_vport(**HBA3, **VHBA)


def _not_seen(libvirt):
    return make_error(libvirt, libvirt.VIR_ERR_NO_NODE_DEVICE, libvirt.VIR_FROM_NODEDEV,
                      "Node device not found: no node device for 'new device' with matching "
                      "wwnn '2001001b32a9da5e' and wwpn '2101001b32a9da5e'")


def test_a_vhba_libvirt_saw_late_is_still_found(lv, libvirt, monkeypatch):
    conn = lv.connection()
    real_create = conn.nodeDeviceCreateXML

    def late(xml, flags):
        real_create(xml, flags)
        raise _not_seen(libvirt)

    monkeypatch.setattr(conn, "nodeDeviceCreateXML", late)
    assert lv.create_vport(**HBA3, **VHBA) == 12


def test_a_vhba_libvirt_never_sees_times_out(lv, libvirt, monkeypatch):
    def never(xml, flags):
        raise _not_seen(libvirt)

    monkeypatch.setattr(lv.connection(), "nodeDeviceCreateXML", never)
    with pytest.raises(errors.TimedOut, match="did not list its SCSI host within 0.5 s"):
        lv.create_vport(**HBA3, **VHBA)


def test_a_call_the_driver_lacks_is_not_supported(lv, libvirt, monkeypatch):
    conn = lv.connection()

    def unsupported(xml, flags):        # the test driver's own refusal, a real libvirtError
        return conn.nodeDeviceDefineXML(xml, flags)

    monkeypatch.setattr(conn, "nodeDeviceCreateXML", unsupported)
    with pytest.raises(errors.NotSupported, match="not supported by the connection driver.*"
                                                  "remove libvirt_uri"):
        lv.create_vport(**HBA3, **VHBA)


# --- the connection -----------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["test:///nonexistent/file.xml",
                                 "qemu+unix:///system?socket=/nonexistent/libvirt-sock"])
def test_an_unreachable_libvirt_is_a_failure_that_says_what_to_do(libvirt, uri):
    v = LibvirtVports(uri)
    for call in (lambda: v.create_vport(**HBA3, **VHBA), lambda: v.delete_vport(12),
                 lambda: v.refresh_pools({3}, {3})):
        with pytest.raises(errors.Failed) as got:
            call()
        msg = got.value.message
        assert msg.startswith(f"cannot reach libvirt at {uri} (")
        assert msg.endswith("start libvirtd, or remove libvirt_uri from the settings to create "
                            "vHBAs through sysfs")
        assert not isinstance(got.value.__cause__, libvirt.libvirtError)


def test_the_connection_opens_on_first_use_and_reopens_once_after_a_drop(lv, libvirt):
    assert lv._conn is None                 # nothing opened by the constructor
    first = lv.connection()
    first.close()                           # libvirtd went away and the socket closed
    assert lv.create_vport(**HBA3, **VHBA) == 12
    assert lv.connection() is not first


def test_a_drop_with_libvirt_gone_for_good_is_a_failure(lv, libvirt):
    lv.connection().close()
    lv.uri = "test:///nonexistent/file.xml"
    with pytest.raises(errors.Failed, match="cannot reach libvirt at test:///nonexistent"):
        lv.delete_vport(12)


@pytest.mark.timeout(90)
def test_the_module_imports_and_answers_without_python3_libvirt():
    code = textwrap.dedent("""
        import sys
        sys.modules["libvirt"] = None       # import libvirt -> ImportError
        from sanbusd import errors
        from sanbusd.backend.libvirt import LibvirtVports
        v = LibvirtVports("qemu:///system")
        try:
            v.create_vport(3, "", "", "2101001b32a9da5e", "2001001b32a9da5e")
        except errors.NotSupported as e:
            print(e.message)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=TOP, env={"PYTHONPATH": str(TOP), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "python3-libvirt is not installed" in r.stdout
    assert "remove libvirt_uri" in r.stdout


@pytest.mark.timeout(90)
def test_libvirt_prints_nothing_to_stderr(libvirt):
    code = textwrap.dedent(f"""
        from sanbusd import errors
        from sanbusd.backend.libvirt import LibvirtVports
        v = LibvirtVports({URI!r})
        for call in (lambda: v.create_vport(99, "", "", "2101001b32a9da5e", "2001001b32a9da5e"),
                     lambda: v.delete_vport(99)):
            try:
                call()
            except errors.SanError as e:
                print(type(e).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=TOP, env={"PYTHONPATH": str(TOP), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NotFound", "NotFound"]
    assert r.stderr == ""


# --- pool refresh, through the test driver ------------------------------------------------------

@pytest.fixture
def refreshed(libvirt, monkeypatch):
    """Names of the pools whose refresh() was called, in order."""
    calls: list[str] = []
    real = libvirt.virStoragePool.refresh

    def spy(self, flags=0):
        calls.append(self.name())
        return real(self, flags)

    monkeypatch.setattr(libvirt.virStoragePool, "refresh", spy)
    return calls


def test_a_targeted_scan_refreshes_only_mpath_pools(lv, refreshed):
    # host4 has a scsi pool; a targeted scan there must not be followed by its wildcard refresh
    assert lv.refresh_pools({4}, set()) == ["mpath"]
    assert refreshed == ["mpath"]


def test_a_wildcard_scan_refreshes_the_hosts_scsi_pool(lv, refreshed):
    assert lv.refresh_pools({4}, {4}) == ["mpath", "scsi-host4"]
    assert sorted(refreshed) == ["mpath", "scsi-host4"]


def test_a_wildcard_scan_elsewhere_does_not_refresh_this_hosts_pool(lv, refreshed):
    assert lv.refresh_pools({4, 3}, {3}) == ["mpath", "scsi-parentaddr-host3"]


def test_a_parentaddr_pool_is_tied_to_its_host_through_libvirts_pci_device(lv, refreshed):
    # scsi_host3 hangs below pci_0000_10_00_0 with unique_id 7: the pool's <parentaddr>
    assert lv.refresh_pools({3}, {3}) == ["mpath", "scsi-parentaddr-host3"]


def test_an_fc_host_pool_is_tied_to_its_vhba_by_wwns(lv, refreshed):
    # from libvirt's node device scsi_host11
    assert lv.refresh_pools({11}, {11}) == ["mpath", "scsi-vhba11"]
    # from the caller's inventory, for a host libvirt does not list (yet)
    ids = {30: HostIds(wwnn="2000001b32000011", wwpn="2100001b32000011")}
    assert lv.refresh_pools({30}, {30}, ids) == ["mpath", "scsi-vhba11"]


def test_iscsi_and_logical_pools_are_never_refreshed(lv, refreshed):
    lv.refresh_pools({3, 4, 11}, {3, 4, 11})
    assert "iscsi" not in refreshed and "vg0" not in refreshed
    assert sorted(refreshed) == ["mpath", "scsi-host4", "scsi-parentaddr-host3", "scsi-vhba11"]


def test_no_change_refreshes_nothing(lv, refreshed):
    assert lv.refresh_pools(set(), {4}) == []
    assert refreshed == []


def test_an_inactive_pool_is_not_refreshed(lv, refreshed):
    lv.connection().storagePoolLookupByName("mpath").destroy()
    lv.connection().storagePoolLookupByName("scsi-host4").destroy()
    assert lv.refresh_pools({4}, {4}) == []
    assert refreshed == []


def test_one_pool_failing_to_refresh_does_not_stop_the_others(lv, libvirt, monkeypatch):
    real = libvirt.virStoragePool.refresh

    def flaky(self, flags=0):
        if self.name() == "mpath":
            raise make_error(libvirt, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_STORAGE,
                             "internal error: Child process (/usr/sbin/dmsetup ...) unexpected "
                             "exit status 1")
        return real(self, flags)

    monkeypatch.setattr(libvirt.virStoragePool, "refresh", flaky)
    with pytest.raises(errors.Failed,
                       match=r"refreshed scsi-host4; could not refresh mpath \(internal error"):
        lv.refresh_pools({4}, {4})


# --- the pool rule, pure ------------------------------------------------------------------------

def pool(ptype: str, adapter: str = "", name: str = "p") -> str:
    source = f"<source>{adapter}</source>" if adapter else "<source/>"
    return (f"<pool type='{ptype}'><name>{name}</name>{source}"
            "<target><path>/dev</path></target></pool>")


PARENTADDR = ("<adapter type='scsi_host'><parentaddr unique_id='7'><address domain='0x0000' "
              "bus='0x10' slot='0x00' function='0x0'/></parentaddr></adapter>")
IDS = {3: HostIds(wwnn="20000024ff000003", wwpn="21000024ff000003", unique_id=7,
                  pci=(0, 0x10, 0, 0))}


@pytest.mark.parametrize("xml, changed, wildcard, ids, expected", [
    (pool("scsi", "<adapter type='scsi_host' name='host3'/>"), {3}, {3}, None, True),
    (pool("scsi", "<adapter type='scsi_host' name='host3'/>"), {3}, set(), None, False),
    (pool("scsi", "<adapter type='scsi_host' name='host3'/>"), {3}, {4}, None, False),
    (pool("scsi", "<adapter type='scsi_host' name='host3'/>"), {4}, {3}, None, False),
    (pool("scsi", "<adapter name='scsi_host3'/>"), {3}, {3}, None, True),       # no type: scsi_host
    (pool("scsi", "<adapter type='scsi_host' name='host33'/>"), {3}, {3}, None, False),
    (pool("scsi", PARENTADDR), {3}, {3}, IDS, True),
    (pool("scsi", PARENTADDR), {3}, {3}, {3: HostIds(unique_id=7)}, False),     # PCI unknown
    (pool("scsi", PARENTADDR), {3}, {3}, {3: HostIds(unique_id=8, pci=(0, 16, 0, 0))}, False),
    (pool("scsi", PARENTADDR), {3}, {3}, None, False),
    (pool("scsi", "<adapter type='fc_host' wwnn='20000024FF000003' wwpn='0x21000024ff000003'/>"),
     {3}, {3}, IDS, True),
    (pool("scsi", "<adapter type='fc_host' wwnn='20000024ff000003' wwpn='21000024ff000003'/>"),
     {3}, set(), IDS, False),
    (pool("scsi", "<adapter type='fc_host' wwnn='20000024ff000009' wwpn='21000024ff000003'/>"),
     {3}, {3}, IDS, False),
    (pool("scsi"), {3}, {3}, IDS, False),                                        # no adapter
    (pool("mpath"), {3}, set(), None, True),
    (pool("mpath"), set(), set(), None, False),
    (pool("iscsi", "<host name='192.0.2.1'/><device path='iqn.x:y'/>"), {3}, {3}, IDS, False),
    (pool("iscsi-direct"), {3}, {3}, IDS, False),
    (pool("fs", "<device path='/dev/sdb1'/>"), {3}, {3}, IDS, False),
    (pool("netfs"), {3}, {3}, IDS, False),
    (pool("logical"), {3}, {3}, IDS, False),
    (pool("disk", "<device path='/dev/sdb'/>"), {3}, {3}, IDS, False),
    (pool("dir"), {3}, {3}, IDS, False),
    ("<pool type='scsi'><name>p", {3}, {3}, IDS, False),                        # unparsable
])
def test_the_refresh_rule(xml, changed, wildcard, ids, expected):
    got = pools_to_refresh([("p", xml, True)], changed, wildcard, ids)
    assert got == (["p"] if expected else [])


def test_the_refresh_rule_skips_inactive_pools():
    assert pools_to_refresh([("p", pool("mpath"), False),
                             ("q", pool("scsi", "<adapter name='host3'/>"), False)],
                            {3}, {3}) == []


def test_host_ids_from_an_inventory_record():
    from sanbusd.model.records import FcPort, ScsiHost
    h = ScsiHost(number=3, unique_id=7, transport="fc",
                 fc=FcPort(wwnn="20000024ff000003", wwpn="21000024ff000003"))
    assert HostIds.of_host(h) == HostIds("20000024ff000003", "21000024ff000003", 7, None)
    assert HostIds.of_host(ScsiHost(number=5)) == HostIds("", "", 0, None)
