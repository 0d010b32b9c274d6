"""Fast host-side tests of lab.py's own logic (no QEMU, no root needed)."""

from __future__ import annotations

from pathlib import Path

import json

import pytest

import lab
import sanview
import scenarios
from sanscenario import to_toml


def write_module_tree(moddir: Path) -> None:
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(
        "kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/lib/crc-t10dif.ko\n"
        "kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n"
        "kernel/drivers/scsi/scsi_common.ko:\n"
        "kernel/lib/crc-t10dif.ko:\n"
        "kernel/crypto/crct10dif_generic.ko:\n"
        "kernel/arch/x86/crypto/crct10dif-pclmul.ko:\n"
        "kernel/drivers/md/dm-mod.ko:\n"
    )
    (moddir / "modules.softdep").write_text(
        "# Soft dependencies extracted from modules themselves.\n"
        "softdep crc-t10dif pre: crct10dif\n"
        "softdep dm_mod post: does-not-exist\n"
    )
    (moddir / "modules.alias").write_text(
        "alias crct10dif crct10dif_generic\n"
        "alias crct10dif crct10dif_pclmul\n"
        "alias scsi:t-0x00* sd_mod\n"
    )
    (moddir / "modules.builtin").write_text("kernel/fs/configfs/configfs.ko\n")


def test_closure_follows_deps_softdeps_and_aliases(tmp_path: Path) -> None:
    write_module_tree(tmp_path / "mods")
    index = lab.ModuleIndex.load(tmp_path / "mods")
    assert index.closure(["sd_mod", "dm-mod", "configfs"]) == [
        "kernel/arch/x86/crypto/crct10dif-pclmul.ko",  # softdep of crc-t10dif, via an alias
        "kernel/crypto/crct10dif_generic.ko",
        "kernel/drivers/md/dm-mod.ko",  # '-' and '_' are the same module name
        "kernel/drivers/scsi/scsi_common.ko",
        "kernel/drivers/scsi/scsi_mod.ko",
        "kernel/drivers/scsi/sd_mod.ko",
        "kernel/lib/crc-t10dif.ko",
    ]  # configfs is built in: nothing to pack; a softdep on a missing module is ignored


def test_closure_rejects_unknown_modules(tmp_path: Path) -> None:
    write_module_tree(tmp_path / "mods")
    with pytest.raises(KeyError, match="no_such_module"):
        lab.ModuleIndex.load(tmp_path / "mods").closure(["no_such_module"])


def image(tmp_path: Path) -> lab.KernelImage:
    return lab.KernelImage("6.1.0-0-amd64", "linux-image-6.1.0-0-amd64",
                           tmp_path / "vmlinuz", tmp_path / "initrd.img", ())


def test_qemu_argv_uses_tcg_and_puts_nics_on_one_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lab.ACCEL_ENV, raising=False)
    argv = lab._qemu_argv(image(tmp_path), tmp_path, nics=2, mem_mb=1024)
    joined = " ".join(argv)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "-nic none" in joined and "-no-reboot" in joined and "-m 1024" in joined
    assert "virtio-net-pci,netdev=nic0,mac=52:54:00:00:00:0a,romfile=" in joined
    assert "virtio-net-pci,netdev=nic1,mac=52:54:00:00:00:0b,romfile=" in joined
    assert joined.count("hubid=0") == 2
    assert f"local,path={tmp_path},mount_tag=out" in joined
    assert lab.nic_mac(1) == "52:54:00:00:00:0b"


def test_scenario_command_quotes_arguments() -> None:
    command = lab.scenario_command("group", "it's; rm -rf /")
    assert command.endswith("group.py 'it'\"'\"'s; rm -rf /'")
    assert "PYTHONPATH=" in command
    with pytest.raises(FileNotFoundError):
        lab.scenario_command("no_such_scenario")


def test_describe_shows_failed_checks_and_console_tail(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("".join(f"line {i}\n" for i in range(100)))
    result = lab.GuestResult(
        command="true", exit_code=1,
        report={"checks": [{"name": "LUN 1 appeared", "ok": False, "detail": "got []"},
                           {"name": "fine", "ok": True}]},
        console_log=console, outdir=tmp_path, boot_seconds=2.5, run_seconds=None,
        wall_seconds=9.0, host_boot_seconds=5.0,
    )
    text = result.describe(tail_lines=3)
    assert "FAILED CHECK LUN 1 appeared: got []" in text
    assert "line 99" in text and "line 96" not in text
    assert "run=n/a" in text
    assert not result.ok


def test_normalize_keeps_what_differs_in_substance() -> None:
    """The normalization hides host numbers and sdX names, and nothing else."""
    tree = {
        f"{sanview.ROOT}/hosts/host7": {sanview.HOST_I: {
            "Name": "host7", "Number": 7, "Driver": "fcoe", "Transport": "fc", "State": "running",
            "UniqueId": 3, "Luns": [f"{sanview.ROOT}/luns/7_0_0_1"]}},
        f"{sanview.ROOT}/luns/7_0_0_1": {sanview.LUN_I: {
            "HCTL": "7:0:0:1", "Host": f"{sanview.ROOT}/hosts/host7", "BlockDevice": "/dev/sdq",
            "WWID": "naa.1", "Size": 1}},
        f"{sanview.ROOT}/hosts/host9": {sanview.HOST_I: {"Name": "host9"}},  # not one of ours
    }
    norm = sanview.normalize(tree, [7])
    assert norm == {
        f"{sanview.ROOT}/hosts/host0": {sanview.HOST_I: {
            "Name": "host0", "Number": 0, "Driver": "fcoe", "Transport": "fc", "State": "running",
            "Luns": [f"{sanview.ROOT}/luns/0_0_0_1"]}},
        f"{sanview.ROOT}/luns/0_0_0_1": {sanview.LUN_I: {
            "HCTL": "0:0:0:1", "Host": f"{sanview.ROOT}/hosts/host0", "BlockDevice": True,
            "WWID": "naa.1", "Size": 1}},
    }
    other = json.loads(json.dumps(tree))
    other[f"{sanview.ROOT}/luns/7_0_0_1"][sanview.LUN_I]["WWID"] = "naa.2"
    assert sanview.tree_differences(norm, sanview.normalize(other, [7])) == [
        f"{sanview.ROOT}/luns/0_0_0_1 Lun.WWID: kernel 'naa.1', simulation 'naa.2'"]


@pytest.mark.parametrize("name", sorted(scenarios.ALL))
def test_every_scenario_fabric_is_a_valid_fabric_file(name: str, tmp_path: Path) -> None:
    from sanbusd.sim.fabric import load_fabric

    scenario = scenarios.ALL[name]
    for checkpoint in scenario.checkpoints:
        path = tmp_path / f"{checkpoint}.toml"
        path.write_text(to_toml(scenario.fabric(checkpoint)))
        fabric = load_fabric(path)
        assert fabric.hosts, (checkpoint, path.read_text())


def test_every_scenario_is_in_exactly_one_group() -> None:
    grouped = [n for names in scenarios.GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(scenarios.ALL)


def test_sysfs_differences_names_what_differs() -> None:
    sysfs = {"hosts": {"host0": {"proc_name": "scsi_debug", "state": "running", "unique_id": "0",
                                 "transport": "other"}},
             "rports": {},
             "luns": {"0:0:0:0": {"vendor": "Linux", "model": "scsi_debug", "rev": "0191", "type": 0,
                                  "wwid": "naa.33333330000007d0", "block": "sda", "size_bytes": 8388608,
                                  "state": "running", "rport": None}}}
    objects = sanview.expected_from_sysfs(sysfs)
    assert sanview.sysfs_differences(objects, sysfs) == []
    objects[sanview.lun_path("0:0:0:0")][sanview.LUN_I]["Size"] = 0
    del objects[sanview.host_path("host0")]
    assert sanview.sysfs_differences(objects, sysfs) == [
        f"missing object {sanview.ROOT}/hosts/host0",
        f"{sanview.ROOT}/luns/0_0_0_0 Lun.Size = 0, sysfs says 8388608"]


def test_simulated_san_lays_out_the_fcoe_scenarios_kernel_facts(tmp_path: Path) -> None:
    """The fabric keys the kernel lane needed (port_id, roles, switch wwn, wwid = "") reach sysfs."""
    from sanbusd.sim.fabric import parse_fabric
    from sanbusd.sim.san import SimulatedSan

    fcoe = scenarios.ALL["fcoe"]
    sim = SimulatedSan(parse_fabric(fcoe.fabric("initial")), tmp_path / "sys")
    sim.build()
    sys_ = tmp_path / "sys" / "class"

    def attr(path: str) -> str:
        return (sys_ / path).read_text().strip()

    assert attr("fc_host/host0/port_id") == "0x00000a"  # VN2VN: from the MAC
    assert attr("fc_host/host0/fabric_name") == "0x0"  # no switch
    assert attr("fc_host/host0/port_name") == "0x" + fcoe.initiator_wwpn
    assert attr("fc_remote_ports/rport-0:0-0/roles") == "FCP Target, FCP Initiator"
    assert attr("fc_remote_ports/rport-0:0-0/port_id") == "0x00000b"
    assert attr("fc_transport/target0:0:0/port_id") == "0x00000b"  # the kernel copies the rport's
    assert not (sys_ / "scsi_device/0:0:0:0/device/wwid").exists()  # no VPD page 0x83
    assert attr("scsi_device/0:0:0:0/device/vendor") == "LIO-ORG"


def test_udev_monitor_parser_keeps_the_unit_attention() -> None:
    from guestsan import parse_udev_monitor

    text = ("monitor will print the received events for:\nUDEV - the event which udev sends out after rule processing\n\n"
            "UDEV  [20.142422] change   /devices/x/host1/rport-1:0-0/target1:0:0/1:0:0:0 (scsi)\n"
            "ACTION=change\nDEVPATH=/devices/x/host1/rport-1:0-0/target1:0:0/1:0:0:0\n"
            "SDEV_UA=REPORTED_LUNS_DATA_HAS_CHANGED\nSEQNUM=775\n\n"
            "UDEV  [20.2] add      /devices/x/host1/rport-1:0-0/target1:0:0/1:0:0:0/block/sdb (block)\n"
            "ACTION=add\nSEQNUM=777\n\n")
    assert parse_udev_monitor(text) == [
        {"t": 20.142422, "action": "change", "devpath": "/devices/x/host1/rport-1:0-0/target1:0:0/1:0:0:0",
         "subsystem": "scsi", "ua": "REPORTED_LUNS_DATA_HAS_CHANGED"},
        {"t": 20.2, "action": "add", "devpath": "/devices/x/host1/rport-1:0-0/target1:0:0/1:0:0:0/block/sdb",
         "subsystem": "block"},
    ]


def test_normalize_refs_renames_hosts_and_disks_everywhere() -> None:
    recorded = {"added": [f"{sanview.ROOT}/luns/7_0_0_27"], "attached": ["7:0:0:0", "7:0:0:27"],
                "message": "host7: scan '3 - -' was refused; host12 is not ours",
                "stdout": "HCTL      LUN  DEVICE\n7:0:0:27  27   /dev/sdq\n"}
    assert sanview.normalize_refs(recorded, [7]) == {
        "added": [f"{sanview.ROOT}/luns/0_0_0_27"], "attached": ["0:0:0:0", "0:0:0:27"],
        "message": "host0: scan '3 - -' was refused; host12 is not ours",
        "stdout": "HCTL LUN DEVICE\n0:0:0:27 27 /dev/sdX\n"}


def test_fc_discover_fabric_has_the_volumes_and_masks_them_per_checkpoint(tmp_path: Path) -> None:
    """The story's simulated array has every volume from the start; provisioning only masks."""
    from sanbusd.sim.fabric import parse_fabric

    s = scenarios.ALL["fc_discover"]
    for checkpoint, visible in (("initial", {0}), ("targeted", {0, 27, 28, 29, 53}),
                                ("wildcard", {0, 27, 28, 29, 30, 53})):
        (array,) = parse_fabric(s.fabric(checkpoint)).arrays
        assert set(array.luns) == {0, 27, 28, 29, 30, 53}
        assert {n for n, lun in array.luns.items() if lun.masked_to} == visible
        assert all(lun.wwid == "" for lun in array.luns.values())  # LIO RAM disks: no VPD 0x83


def test_scsi_debug_scan_fabric_per_checkpoint() -> None:
    s = scenarios.ALL["scsi_debug_scan"]
    final = s.disks("final")
    assert sorted(final[0]) == [(t, n) for t in range(2) for n in (0, 1, 2, 3, 5)]
    assert sorted(final[1]) == [(t, n) for t in range(2) for n in range(8) if (t, n) != (1, 7)]
    assert final[1][(0, 2)] == 1 << 30 and final[0][(0, 2)] == 8 << 20
    assert all(sorted(d) == [(t, n) for t in range(2) for n in (0, 1, 2, 3, 5)] for d in s.disks("targeted").values())
