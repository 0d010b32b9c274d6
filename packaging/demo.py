"""The demo: sanbusd on the simulated SAN, on a private system bus with real polkitd, walked
through with the tools an admin already has (sanctl, busctl, gdbus)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from sanbusd.devbus import PrivateBus  # noqa: E402

VENV_BIN = Path(sys.executable).parent
FABRIC = TOP / "data" / "fabrics" / "demo.toml"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def shell(cmd: str, env: dict, check: bool = True) -> None:
    print(f"{DIM}# {cmd}{RESET}", flush=True)
    subprocess.run(shlex.split(cmd), env=env, check=check)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sanbusd-demo."))
    work.chmod(0o755)                   # polkitd runs as its own user and must reach the bus
    bus = PrivateBus(str(work / "bus")).start()
    env = bus.env(PATH=f"{VENV_BIN}:{os.environ['PATH']}", SANBUSD_SIM_DIR=str(work / "san"))
    daemon = monitor = None
    try:
        bus.start_polkitd()
        say("A private system bus with the real polkitd; sanbusd on the simulated SAN "
            f"({FABRIC.relative_to(TOP)})")
        print(f"DBUS_SYSTEM_BUS_ADDRESS={bus.address}")
        daemon = subprocess.Popen(["sanbusd", "--simulate", str(FABRIC)], env=env,
                                  stderr=open(work / "sanbusd.log", "wb"))
        bus.wait_for_name("org.example.SanStorage", 30)
        print((work / "sanbusd.log").read_text().strip())

        say("What this host sees: SCSI hosts, FC ports, remote target ports and LUN paths")
        shell("sanctl status", env)

        say("The same objects with standard tools")
        shell("busctl --system tree org.example.SanStorage", env)
        shell("busctl --system introspect org.example.SanStorage "
              "/org/example/SanStorage/hosts/host1 org.example.SanStorage.FcHost", env)
        shell("gdbus call --system --dest org.example.SanStorage --object-path "
              "/org/example/SanStorage/Manager --method org.example.SanStorage.Manager."
              "ResolveDevice \"{'wwpn': <'0x500a098101a1b2c3'>}\" \"{}\"", env)

        say("The simulated sysfs is a real tree: lsscsi reads it too")
        shell(f"lsscsi --sysfsroot={work / 'san' / 'sys'} --transport", env)

        say("Live: the array's fabric-A port goes down, then comes back (sanctl monitor)")
        monitor = subprocess.Popen(["sanctl", "monitor"], env=env)
        time.sleep(0.5)
        shell("sanbusd-sim port-down 500a098101a1b2c3", env)
        time.sleep(3)
        shell("sanbusd-sim port-up 500a098101a1b2c3", env)
        time.sleep(1)
        monitor.terminate()
        monitor.wait()

        say("The main story. The SAN team: \"I've provisioned the LUNs, the LUNs are 27, 28, "
            "29 and 53.\" (They also mapped LUN 30, and didn't say.)")
        shell("sanbusd-sim provision --array netapp1 --lun 27,28,29,53,30 "
              "--to 10000090fa1b2c01,10000090fa1b2c02", env)
        time.sleep(0.5)
        print("The array raised a unit attention; the host objects say a scan is due:")
        shell("busctl --system get-property org.example.SanStorage "
              "/org/example/SanStorage/hosts/host1 org.example.SanStorage.ScsiHost "
              "RescanSuggested", env)
        say("The VM admin scans for exactly those LUNs: every path, and not LUN 30")
        shell("sanctl scan --lun 27,28,29,53", env)
        print("What sanbusd wrote to the hosts' scan files (no wildcard):")
        shell("sanbusd-sim writes", env)

        say("The same with busctl, as another service would: a scan of one host for LUN 30")
        shell("busctl --system --timeout=120 call org.example.SanStorage "
              "/org/example/SanStorage/hosts/host1 org.example.SanStorage.ScsiHost Scan "
              "a{sv} 1 luns at 1 30", env)

        say("Multipath: a VM gets the map, never one path. Create every map that can be "
            "created (each WWID seen on two or more paths), through multipathd")
        shell("sanctl multipath create-all", env)
        shell("sanctl multipath list", env)

        say("Live: fabric A's target port goes down: the maps turn degraded (sanctl monitor), "
            "and heal when it comes back")
        monitor = subprocess.Popen(["sanctl", "monitor"], env=env)
        time.sleep(0.5)
        shell("sanbusd-sim port-down 500a098101a1b2c3", env)
        time.sleep(1.5)
        shell("sanctl multipath list", env)
        shell("sanbusd-sim port-up 500a098101a1b2c3", env)
        time.sleep(1.5)
        monitor.terminate()
        monitor.wait()
        monitor = None

        say("Flush a map that is no longer wanted. In use, it is refused, naming who uses it")
        shell("sanbusd-sim hold-open mpatha --by 'qemu-system-x86 (pid 4242)'", env)
        shell("sanctl multipath flush mpatha", env, check=False)
        shell("sanbusd-sim release mpatha", env)
        shell("sanctl multipath flush mpatha", env)
        shell("sanctl multipath config", env)

        say("NPIV: a virtual HBA for one VM. The SAN team zones LUN 60 to the WWPN the VM admin "
            "chose, 5001a4a0000000f1")
        shell("sanbusd-sim provision --array netapp1 --lun 60 --size 20G --to 5001a4a0000000f1",
              env)
        shell("sanctl vhba create --parent 20000090fa1b2c01/10000090fa1b2c01 "
              "--wwpn 5001a4a0000000f1 --persistent", env)
        print("It logged in, and LUN 60 is behind it (and only behind it):")
        shell("sanctl vhba list", env)
        shell("busctl --system get-property org.example.SanStorage "
              "/org/example/SanStorage/vhbas/5001a4a0000000f1 org.example.SanStorage.Vhba "
              "State Host Persistent", env)
        say("The VM is retired: its vHBA goes, with its LUN paths")
        shell("sanctl vhba delete 5001a4a0000000f1", env)
        shell("sanctl vhba list", env)

        say("Bad input gets a named error that says what to do")
        r = subprocess.run(shlex.split(
            "busctl --system call org.example.SanStorage /org/example/SanStorage/Manager "
            "org.example.SanStorage.Manager ResolveDevice a{sv}a{sv} 1 wwpn s nonsense 0"),
            env=env, capture_output=True, text=True)
        print(f"{DIM}# busctl --system call ... ResolveDevice ... wwpn s nonsense{RESET}\n"
              f"{r.stderr.strip()}")
        say("Done. sanbusd stops cleanly on SIGTERM.")
        return 0
    finally:
        for p in (monitor, daemon):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        bus.stop()


if __name__ == "__main__":
    sys.exit(main())
