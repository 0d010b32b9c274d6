"""The daemon's life: populated before it owns the name, clean stop, clear start-up errors."""

import os
import signal
import subprocess
import sys
import time

from sanbus_testing import DEMO_FABRIC, ROOT, busctl, start_daemon


def test_name_is_owned_only_once_the_objects_exist(system_bus, tmp_path):
    # Watch for the name, then ask at once: everything must already be there.
    proc = subprocess.Popen([sys.executable, "-m", "sanbusd", "--simulate", str(DEMO_FABRIC),
                             "--sim-dir", str(tmp_path / "sim"), "--bus", system_bus.address],
                            env=system_bus.env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not system_bus.has_name("org.example.SanStorage"):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()                  # so that reading its stderr cannot block
                raise AssertionError("sanbusd did not take its name: "
                                     + proc.communicate(timeout=10)[1].decode())
        out = subprocess.run(["busctl", f"--address={system_bus.address}", "tree",
                              "org.example.SanStorage"], capture_output=True, text=True,
                             timeout=60).stdout
        assert out.count("/luns/") == 7 and out.count("/hosts/host") == 5
        assert out.count("/vhbas/") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert b"Traceback" not in proc.communicate(timeout=10)[1]
    assert not system_bus.has_name("org.example.SanStorage")


def test_sigterm_stops_cleanly_and_releases_the_name(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 3
    assert not system_bus.has_name("org.example.SanStorage")
    assert not os.path.exists(d.sim_dir / "control")
    assert "stopping on signal" in d.log()


def test_a_second_daemon_does_not_steal_the_name(system_bus, tmp_path):
    first = start_daemon(system_bus, tmp_path / "a")
    try:
        r = subprocess.run([sys.executable, "-m", "sanbusd", "--simulate", str(DEMO_FABRIC),
                            "--sim-dir", str(tmp_path / "b"), "--bus", system_bus.address],
                           env=system_bus.env(), capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert "cannot own org.example.SanStorage" in r.stderr
        out = busctl(first, "get-property", "org.example.SanStorage", f"{ROOT}/Manager",
                     "org.example.SanStorage.Manager", "Backend").stdout
        assert out.strip() == 's "simulated"'
    finally:
        assert first.stop() == 0


def test_a_bad_fabric_file_is_a_clear_start_up_error(system_bus, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[host]]\ntype = "fc"\nwwnn = "zz"\n')
    r = subprocess.run([sys.executable, "-m", "sanbusd", "--simulate", str(bad), "--sim-dir",
                        str(tmp_path / "sim"), "--bus", system_bus.address],
                       env=system_bus.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "host[0]" in r.stderr and "16 hex digits" in r.stderr
    assert "Traceback" not in r.stderr


def test_reads_a_plain_sysfs_tree_with_sysfs_root(system_bus, tmp_path):
    subprocess.run([sys.executable, "-m", "sanbusd.cli.sim", "layout", str(DEMO_FABRIC),
                    str(tmp_path / "tree")], check=True, capture_output=True, timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "sanbusd", "--sysfs-root",
                             str(tmp_path / "tree" / "sys"), "--bus", system_bus.address],
                            env=system_bus.env(), stderr=subprocess.PIPE)
    try:
        system_bus.wait_for_name("org.example.SanStorage", 15)
        out = subprocess.run(["busctl", f"--address={system_bus.address}", "get-property",
                              "org.example.SanStorage", f"{ROOT}/Manager",
                              "org.example.SanStorage.Manager", "Backend"],
                             capture_output=True, text=True, timeout=60).stdout
        assert out.strip() == 's "kernel"'
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_tells_systemd_it_is_ready_once_the_name_is_owned(system_bus, tmp_path):
    """Type=notify-style readiness through systemd-python's sd_notify (as under systemd)."""
    import socket as so
    sock_path = str(tmp_path / "notify")
    sock = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    proc = subprocess.Popen([sys.executable, "-m", "sanbusd", "--simulate", str(DEMO_FABRIC),
                             "--sim-dir", str(tmp_path / "sim"), "--bus", system_bus.address],
                            env=system_bus.env(NOTIFY_SOCKET=sock_path),
                            stderr=subprocess.DEVNULL)
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg
        assert system_bus.has_name("org.example.SanStorage")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        sock.close()
