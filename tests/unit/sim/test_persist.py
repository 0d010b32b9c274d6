"""The simulated SAN outlives its daemon: reopening DIR carries on where it stopped."""

import json
import logging
import shutil
import time

import pytest

from sanbusd.backend.sysfs import SysfsReader
from sanbusd.kinds import read_all
from sanbusd.model.ids import HCTL
from sanbusd.sim.fabric import generated_wwid
from sanbusd.sim.san import SimulatedSan

from sanbus_testing import DEMO_FABRIC, wait_until

A1, A2 = "10000090fa1b2c01", "10000090fa1b2c02"


@pytest.fixture
def fabric(tmp_path):
    # A copy whose delays are short, so the tests can change it and wait for timers.
    text = DEMO_FABRIC.read_text().replace("scan_delay = 0.3", "scan_delay = 0")
    path = tmp_path / "demo.toml"
    path.write_text(text.replace("dev_loss_tmo = 2.0", "dev_loss_tmo = 0.3"))
    return path


def picture(sim):
    inv = read_all(SysfsReader(sim.root))
    return {k: dict(getattr(inv, k)) for k in ("hosts", "rports", "luns", "vports", "maps")}


def test_a_reopened_san_is_the_one_that_stopped(tmp_path, fabric):
    d = tmp_path / "sim"
    san = SimulatedSan.open(fabric, d)
    san.provision("netapp1", 27, 1 << 30, {A1, A2})
    san.delete_lun(HCTL(1, 0, 0, 2))
    san.vport_create(2, "2000000000000011", "2000000000000012")
    san.mpath_create(generated_wwid(0, 1))
    before, writes = picture(san), [(w.path, w.data, w.result) for w in san.writes]
    san.close()
    assert json.loads((d / "state.json").read_text())["version"] == 1

    again = SimulatedSan.open(fabric, d)
    try:
        assert picture(again) == before
        assert [(w.path, w.data, w.result) for w in again.writes] == writes
        # The SAN admin's change is still on the array: a scan finds LUN 27 ...
        again.scan_host(1, 0, 0, 27)
        assert HCTL(1, 0, 0, 27) in again.luns
        # ... and the kernel's bookkeeping too: the next sd name is not one in use.
        assert len(set(again.blocks.values())) == len(again.blocks)
        assert again.maps["dm-0"].name == "mpatha"
    finally:
        again.close()


def test_fresh_lays_out_the_fabric_file_again(tmp_path, fabric):
    d = tmp_path / "sim"
    san = SimulatedSan.open(fabric, d)
    first = picture(san)
    san.delete_lun(HCTL(1, 0, 0, 2))
    san.close()
    again = SimulatedSan.open(fabric, d, fresh=True)
    assert picture(again) == first and again.writes == []
    again.close()
    assert (d / "writes.jsonl").read_text() == ""


def test_another_fabric_file_lays_out_afresh_and_says_why(tmp_path, fabric, caplog):
    d = tmp_path / "sim"
    san = SimulatedSan.open(fabric, d)
    san.delete_lun(HCTL(1, 0, 0, 2))
    san.close()
    other = tmp_path / "other.toml"
    other.write_text(fabric.read_text().replace('size = "50G"', 'size = "60G"'))
    with caplog.at_level(logging.INFO, logger="sanbusd.sim"):
        again = SimulatedSan.open(other, d)
    assert HCTL(1, 0, 0, 2) in again.luns and again.writes == []
    assert "fabric file differs" in caplog.text and str(fabric) in caplog.text
    again.delete_lun(HCTL(1, 0, 0, 2))
    again.close()
    # The same content under another name is the same fabric: reused.
    shutil.copy(other, tmp_path / "moved.toml")
    again = SimulatedSan.open(tmp_path / "moved.toml", d)
    assert HCTL(1, 0, 0, 2) not in again.luns
    again.close()


def test_a_damaged_state_lays_out_afresh(tmp_path, fabric, caplog):
    d = tmp_path / "sim"
    SimulatedSan.open(fabric, d).close()
    (d / "state.json").write_text("{not json")
    with caplog.at_level(logging.INFO, logger="sanbusd.sim"):
        san = SimulatedSan.open(fabric, d)
    assert "damaged" in caplog.text and san.luns
    san.close()


def test_work_under_way_goes_on_after_reopening(tmp_path, fabric):
    """A port that was down when the daemon stopped still loses its rports after dev_loss_tmo,
    and a vport whose fabric login was under way completes it."""
    d = tmp_path / "sim"
    san = SimulatedSan.open(fabric, d)
    san.port_down("500a098101a1b2c3")
    san.vport_create(2, "2000000000000011", "2000000000000012")
    san.close()                                     # before dev_loss_tmo and the login
    time.sleep(0.5)
    again = SimulatedSan.open(fabric, d)
    try:
        assert again.rports["rport-1:0-0"].state == "Blocked"

        def port_gone():
            with again._lock:                       # timers change it from their thread
                return "rport-1:0-0" not in again.rports and not [
                    h for h in again.luns if h.host == 1]
        wait_until(port_gone, timeout=5)
        wait_until(lambda: picture(again)["vports"]["vport-2:0-0"].state == "Active", timeout=5)
    finally:
        again.close()


def test_changes_are_saved_without_a_close(tmp_path, fabric):
    """A daemon that is killed loses at most the last moment of changes."""
    d = tmp_path / "sim"
    san = SimulatedSan.open(fabric, d)
    san.delete_lun(HCTL(1, 0, 0, 2))

    def saved():
        state = json.loads((d / "state.json").read_text())
        return [1, 0, 0, 2] not in [row[:4] for row in state["luns"]]
    wait_until(saved, timeout=5)
    assert "1:0:0:2/device/delete" in (d / "writes.jsonl").read_text()
    san.close()
