"""Smoke tests of the kernel lab itself: does the real kernel show what the lane promises?

One QEMU boot per scenario (module-scoped fixtures); the tests below assert on its report.
If the guest cannot boot, every test here fails with the tail of the console log.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lab

pytestmark = pytest.mark.kernel_lab

BOOT_TIMEOUT = 300  # a smoke boot takes ~10-20 s; anything near this is a hang


def completed_report(result: lab.GuestResult) -> dict:
    """The scenario's report; fail loudly (console tail included) if the guest never produced one."""
    if result.exit_code is None or result.report is None:
        pytest.fail(f"the guest did not complete the scenario\n{result.describe()}", pytrace=False)
    return result.report


def assert_all_checks_passed(result: lab.GuestResult) -> None:
    report = completed_report(result)
    assert report["checks"], "the scenario recorded no checks"
    assert result.ok and not result.failed_checks, result.describe()


# --------------------------------------------------------------------------------------------
# scsi_debug: 2 hosts x 2 targets x 4 LUNs


@pytest.fixture(scope="module")
def scsi_debug_boot(kernel_image: lab.KernelImage, tmp_path_factory: pytest.TempPathFactory) -> lab.GuestResult:
    outdir = tmp_path_factory.mktemp("smoke_scsi_debug")
    return lab.run_scenario("smoke_scsi_debug", image=kernel_image, outdir=outdir, timeout=BOOT_TIMEOUT)


def test_scsi_debug_scenario_checks_pass(scsi_debug_boot: lab.GuestResult) -> None:
    assert_all_checks_passed(scsi_debug_boot)


def test_scsi_debug_hosts_appear_in_sysfs(scsi_debug_boot: lab.GuestResult) -> None:
    data = completed_report(scsi_debug_boot)["data"]
    hosts = data["scsi_hosts"]
    assert sorted(hosts) == [f"host{h}" for h in data["scsi_debug_hosts"]], hosts
    assert len(hosts) == 2
    for name, info in hosts.items():
        assert info["proc_name"] == "scsi_debug", (name, info)
        assert info["state"] == "running", (name, info)
        assert info["device_path"].startswith("/sys/devices/pseudo_0/adapter"), (name, info)


def test_scsi_debug_luns_are_block_devices_with_shared_wwids(scsi_debug_boot: lab.GuestResult) -> None:
    data = completed_report(scsi_debug_boot)["data"]
    devices = {d["hctl"]: d for d in data["scsi_devices"]}
    expected = {f"{h}:0:{t}:{lun}" for h in data["scsi_debug_hosts"] for t in range(2) for lun in range(4)}
    assert set(devices) == expected

    for dev in devices.values():
        assert (dev["vendor"], dev["model"]) == ("Linux", "scsi_debug"), dev
        assert re.fullmatch(r"sd[a-z]+", dev["block"] or ""), dev
        assert dev["size_bytes"] == 8 * 1024 * 1024, dev
        assert (dev["wwid"] or "").startswith("naa.3333333"), dev

    first, second = data["scsi_debug_hosts"]
    for t in range(2):
        for lun in range(4):  # vpd_use_hostno=0: both hosts are paths to the same LUN
            assert devices[f"{first}:0:{t}:{lun}"]["wwid"] == devices[f"{second}:0:{t}:{lun}"]["wwid"]
    assert len({d["wwid"] for d in devices.values()}) == 8


def test_lsscsi_lists_every_disk(scsi_debug_boot: lab.GuestResult) -> None:
    data = completed_report(scsi_debug_boot)["data"]
    listed = dict(re.findall(r"^\[(\d+:\d+:\d+:\d+)\]\s+disk\s.*?(/dev/sd[a-z]+)", data["lsscsi"], re.M))
    assert listed == {d["hctl"]: f"/dev/{d['block']}" for d in data["scsi_devices"]}, data["lsscsi"]


# --------------------------------------------------------------------------------------------
# FCoE VN2VN initiator + LIO tcm_fc target (two NICs on one QEMU hub)


@pytest.fixture(scope="module")
def fcoe_boot(kernel_image: lab.KernelImage, tmp_path_factory: pytest.TempPathFactory) -> lab.GuestResult:
    outdir = tmp_path_factory.mktemp("smoke_fcoe")
    return lab.run_scenario("smoke_fcoe", image=kernel_image, outdir=outdir, nics=2, timeout=BOOT_TIMEOUT)


def test_fcoe_scenario_checks_pass(fcoe_boot: lab.GuestResult) -> None:
    assert_all_checks_passed(fcoe_boot)


def test_fc_host_attributes(fcoe_boot: lab.GuestResult) -> None:
    data = completed_report(fcoe_boot)["data"]
    attrs = data["fc_host"]
    # libfcoe derives the WWNs from the initiator NIC's MAC (lab.nic_mac(0)).
    assert attrs["port_name"] == "0x2000" + lab.nic_mac(0).replace(":", ""), attrs
    assert attrs["node_name"] == "0x1000" + lab.nic_mac(0).replace(":", ""), attrs
    assert attrs["port_state"] == "Online", attrs
    assert attrs["port_id"] == "0x00000a", attrs  # VN2VN port id from the MAC's last byte
    assert int(attrs["max_npiv_vports"]) > 0, attrs
    assert attrs["npiv_vports_inuse"] == "0", attrs


def test_fc_rport_to_lio_target(fcoe_boot: lab.GuestResult) -> None:
    data = completed_report(fcoe_boot)["data"]
    host = data["fcoe"]["initiator_host"]
    (name, rport), *others = data["rports"].items()
    assert not others, data["rports"]
    assert name.startswith(f"rport-{host}:0-"), name
    assert rport["port_name"] == data["fcoe"]["target_wwpn"] == "0x200052540000000b", rport
    assert "FCP Target" in rport["roles"], rport
    assert rport["port_state"] == "Online", rport
    assert int(rport["scsi_target_id"]) >= 0, rport


def test_fc_lun_masking_change_is_found_by_scan(fcoe_boot: lab.GuestResult) -> None:
    data = completed_report(fcoe_boot)["data"]
    host = data["fcoe"]["initiator_host"]
    target_id = next(iter(data["rports"].values()))["scsi_target_id"]
    before = {d["hctl"]: d for d in data["luns_before"]}
    after = {d["hctl"]: d for d in data["luns_after_map"]}
    lun0, lun1 = f"{host}:0:{target_id}:0", f"{host}:0:{target_id}:1"

    assert list(before) == [lun0]
    assert (before[lun0]["vendor"], before[lun0]["model"]) == ("LIO-ORG", "RAMDISK-MCP"), before
    assert sorted(after) == [lun0, lun1]
    assert after[lun1]["block"] and after[lun1]["size_bytes"] == 8 * 1024 * 1024, after[lun1]


def test_console_log_is_kept(fcoe_boot: lab.GuestResult) -> None:
    log = Path(fcoe_boot.console_log).read_text(errors="replace")
    assert "KLAB-SCENARIO-START" in log and "KLAB-SCENARIO-EXIT rc=0" in log, fcoe_boot.console_tail()
