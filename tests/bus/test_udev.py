"""The real kernel adapter (sysfs + pyudev) driven by umockdev's fake /sys and uevents."""

import json
import subprocess
import sys
from pathlib import Path

from sanbus_testing import ROOT

HERE = Path(__file__).parent


def test_udev_events_keep_the_objects_in_step(system_bus):
    r = subprocess.run(["umockdev-wrapper", sys.executable, str(HERE / "umockdev_scenario.py"),
                        system_bus.address], capture_output=True, text=True, timeout=120,
                       env=system_bus.env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ready"] == "ready", out
    assert out["initial"] == [f"{ROOT}/hosts/host1", f"{ROOT}/luns/1_0_0_0"]
    assert out["fc_wwpn"] == "10000090fa1b2c01"
    assert out["rports"] == [{"Name": "rport-1:0-0", "WWPN": "500a098101a1b2c3",
                              "WWNN": "500a098000a1b2c3", "PortId": "", "Roles": ["FCP Target"],
                              "PortState": "Online", "ScsiTargetId": 0}]
    assert out["lun0"] == {"Vendor": "NETAPP", "Model": "LUN C-Mode",
                           "WWID": "naa.600a0980000000000000000000000000",
                           "Size": 2097152 * 512, "BlockDevice": "/dev/sdb",
                           "TargetPortName": "500a098101a1b2c3"}
    assert out["added"] and out["lun5_block"] == "/dev/sdc"
    assert out["rescan_suggested"] is True
    assert out["removed"] and out["host_luns"] == [f"{ROOT}/luns/1_0_0_0"]
    assert out["exit"] == 0 and "Traceback" not in out["stderr"], out["stderr"]
