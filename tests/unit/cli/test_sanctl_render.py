"""What `sanctl status` and `sanctl multipath list` print from the objects (no bus needed)."""

from sanbusd.cli.sanctl import render_maps, render_status

IF = "org.example.SanStorage."
ROOT = "/org/example/SanStorage"


def objects():
    def path(dev, lun, up, dev_state="running", dm="active", chk="ready"):
        return {"Lun": lun, "Device": dev, "DmState": dm, "DeviceState": dev_state,
                "CheckerState": chk, "Up": up}
    return {
        f"{ROOT}/Manager": {IF + "Manager": {"Version": "0", "Backend": "kernel",
                                             "Multipathd": "running"}},
        f"{ROOT}/hosts/host2": {IF + "ScsiHost": {"Name": "host2", "Number": 2,
                                                   "Driver": "iscsi_tcp", "Transport": "iscsi",
                                                   "State": "running", "Luns": []}},
        f"{ROOT}/iscsi/session3": {IF + "IscsiSession": {
            "Name": "session3", "Host": f"{ROOT}/hosts/host2", "State": "FAILED",
            "TargetName": "iqn.2003-01.org.example:tgt1", "Portal": "192.168.77.1:3260"}},
        f"{ROOT}/luns/2_0_0_1": {IF + "Lun": {
            "HCTL": "2:0:0:1", "Vendor": "LIO-ORG", "Model": "RAMDISK-MCP", "Size": 8 << 20,
            "BlockDevice": "/dev/sdb", "State": "blocked", "TargetPortName": "",
            "WWID": "naa.6001"}},
        f"{ROOT}/multipath/36001": {IF + "MultipathMap": {
            "Name": "mpatha", "WWID": "36001", "DmDevice": "/dev/dm-0", "Size": 1 << 30,
            "Health": "degraded", "ActivePaths": 1, "TotalPaths": 2, "Features": "0",
            "HwHandler": "1 alua",
            "Paths": [path("sdb", f"{ROOT}/luns/2_0_0_1", False, "blocked", "failed", "faulty"),
                      path("sdc", "/", True)]}},
    }


def test_status_lists_iscsi_sessions_and_maps_with_their_health():
    out = render_status(objects())
    assert "iSCSI sessions" in out
    line = next(l for l in out.splitlines() if l.startswith("session3"))
    assert line.split() == ["session3", "host2", "iqn.2003-01.org.example:tgt1",
                            "192.168.77.1:3260", "FAILED"]
    assert "mpatha" in out and "degraded" in out and "1/2" in out


def test_multipath_list_shows_which_path_is_down_and_why():
    out = render_maps(objects())
    assert out.splitlines()[0].startswith("mpatha (36001) /dev/dm-0 1 GiB degraded, 1/2 paths up")
    down = next(l for l in out.splitlines() if "sdb" in l).split()
    assert down == ["2:0:0:1", "sdb", "failed", "blocked", "faulty", "DOWN"]
    assert next(l for l in out.splitlines() if "sdc" in l).split()[-1] == "up"
