"""Host side of the real-kernel test lane: build a bootable kernel image and run scenarios in QEMU.

The host kernel this project is developed on has no SCSI, FC or device-mapper support, so the
lane boots Debian's stock kernel under QEMU (TCG; KVM is not usable here) and runs *scenario*
scripts inside it against the real SCSI midlayer, ``scsi_debug``, FCoE/libfc and dm-multipath.

How a boot works:

* ``prepare()`` downloads Debian's current ``linux-image-*-amd64`` package (never installed; it is
  only unpacked into a cache directory) and builds a busybox initramfs holding the modules we need.
* ``boot()`` starts QEMU with that kernel and shares two host directories over virtio-9p: the host
  ``/`` (read-only, so the guest can use the host's Python, udev, multipath-tools and the project
  checkout at their normal paths) and a per-boot output directory (read-write). ``guest_init.sh``
  turns the read-only host root into a writable one with a tmpfs overlay, ``switch_root``s into it
  and runs ``run.sh`` from the output directory, then writes ``exit_code`` and powers off.

Everything the guest wants to report goes through the output directory (``report.json`` written
by ``guestlib.Report``) or the serial console (always saved as ``console.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

log = logging.getLogger("sanbusd.kernel_lab")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SCENARIO_DIR = HERE / "scenarios"
GUEST_INIT = HERE / "guest_init.sh"

DEFAULT_CACHE_DIR = Path("/var/cache/sanbusd-kernel-lab")
CACHE_ENV = "SANBUSD_KLAB_CACHE"
# Optional pin, e.g. "linux-image-6.1.0-56-amd64"; by default we follow the linux-image-amd64 metapackage.
KERNEL_PKG_ENV = "SANBUSD_KLAB_KERNEL_PKG"
# Only for machines with a working /dev/kvm; on the reference machine KVM aborts, hence TCG by default.
ACCEL_ENV = "SANBUSD_KLAB_ACCEL"

# Debian packages the lane needs on the host. The guest runs the host's own userland, so tools a
# scenario calls (udevadm, multipath, sg_inq, lsscsi, ip) must be installed on the host.
HOST_PACKAGES = (
    "qemu-system-x86",  # qemu-system-x86_64 (TCG)
    "busybox-static",  # the initramfs userland; must be static, it runs before the host root is mounted
    "cpio",  # initramfs archive
    "kmod",  # depmod on the host, modprobe in the guest
    "udev",  # systemd-udevd/udevadm in the guest (lsscsi -i, multipath need the udev database)
    "multipath-tools",
    "dmsetup",
    "sg3-utils",
    "lsscsi",
    "iproute2",  # `ip link set up` for the FCoE NICs
    # libvirtd + virsh for the npiv scenario's node-device vHBAs (no libvirt-daemon-system: its
    # configs, units and users are not needed; guestsan.Libvirtd starts only the drivers it needs)
    "libvirt-daemon",
    "libvirt-clients",
    # iscsid + iscsiadm for the iscsi_multipath scenario (the initiator; LIO's iSCSI target is
    # driven through configfs, no targetcli needed)
    "open-iscsi",
)

# Modules packed into the initramfs (their dependency closure is added automatically).
# rd_mcp, the RAM-disk LIO backstore, is part of target_core_mod.
INITRD_MODULES = (
    "virtio_pci", "virtio_net", "9p", "9pnet_virtio", "overlay", "configfs",
    "scsi_mod", "sd_mod", "sg", "scsi_dh_alua", "scsi_dh_rdac", "scsi_dh_emc", "scsi_debug",
    "scsi_transport_fc", "libfc", "libfcoe", "fcoe",
    "target_core_mod", "target_core_iblock", "target_core_file", "tcm_fc",
    "dm_mod", "dm_multipath", "dm_round_robin", "dm_service_time", "dm_queue_length",
    # iSCSI multipath (group mpath): LIO's iSCSI target, the open-iscsi initiator's transport
    # (libiscsi, scsi_transport_iscsi; crc32c for its digests, auto-loaded at login), a dummy NIC
    # for the second portal's address, and what `tc` auto-loads to drop one portal's traffic
    # (a prio qdisc, a u32 filter, the gact drop action). The kernel and modprobe find them by
    # their aliases (rtnl-link-dummy, net-sch-prio, ...), which depmod indexes in the initramfs.
    "iscsi_target_mod", "iscsi_tcp", "crc32c", "dummy", "sch_prio", "cls_u32", "act_gact",
)

# Modules /init loads before handing over to the scenario. scsi_dh_* must be present before any
# multipath-capable device shows up (scsi_debug reports TPGS; without scsi_dh_alua multipath fails
# with "error attaching hardware handler"). scsi_debug, fcoe and tcm_fc are left to scenarios
# because their parameters and timing are what scenarios are about.
BOOT_MODULES = (
    "virtio_pci", "9pnet_virtio", "9p", "overlay", "configfs", "virtio_net",
    "scsi_mod", "sd_mod", "sg", "scsi_dh_alua", "scsi_dh_rdac", "scsi_dh_emc",
    "dm_mod", "dm_multipath", "dm_round_robin", "dm_service_time", "dm_queue_length",
)

# Bump when the initramfs layout changes in a way the cache key would not notice.
INITRD_LAYOUT_VERSION = 1

GUEST_OUT_DIR = "/run/kl-out"  # where the output share is mounted in the guest
RUN_SCRIPT = "run.sh"  # written into outdir by boot(); guest_init.sh runs it
NIC_MAC_PREFIX = "52:54:00:00:00:"
FIRST_NIC = 0x0A  # NIC i gets MAC 52:54:00:00:00:(0a + i)

SCENARIO_START_MARKER = b"KLAB-SCENARIO-START"


# --------------------------------------------------------------------------------------------
# Small process helpers


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command, return its stdout; on failure raise with the command's output attached."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"command failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail}")
    return proc.stdout


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[step] = round(time.monotonic() - start, 2)
        log.info("kernel lab: %s took %.1fs", step, timings[step])


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialise prepare() between concurrent pytest processes sharing one cache."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Host packages (apt)


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "-o", "DPkg::Lock::Timeout=900", *args], env=env)


def _is_installed(package: str) -> bool:
    proc = subprocess.run(["dpkg", "-s", package], capture_output=True, text=True)
    # `dpkg -s` also succeeds for removed packages whose config files remain.
    return proc.returncode == 0 and "Status: install ok installed" in proc.stdout


def ensure_host_packages(packages: Iterable[str] = HOST_PACKAGES) -> list[str]:
    """Install whatever is missing; return the packages that were installed."""
    missing = [p for p in packages if not _is_installed(p)]
    if missing:
        log.info("kernel lab: installing %s", " ".join(missing))
        _apt_get("update", "-qq")
        _apt_get("install", "-y", "-qq", "--no-install-recommends", *missing)
    return missing


# --------------------------------------------------------------------------------------------
# Kernel package


def resolve_kernel_package() -> str:
    """Name of the versioned kernel package, e.g. ``linux-image-6.1.0-56-amd64``."""
    pinned = os.environ.get(KERNEL_PKG_ENV)
    if pinned:
        return pinned
    for attempt in range(2):
        out = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True
        ).stdout
        match = re.search(r"Depends:\s*(linux-image-\d\S*)", out)
        if match:
            return match.group(1)
        if attempt == 0:  # a fresh machine may have no package lists yet
            _apt_get("update", "-qq")
    raise RuntimeError(f"cannot resolve the kernel behind linux-image-amd64:\n{out}")


def _download_deb(package: str, deb_dir: Path) -> Path:
    """`apt-get download` the package into ``deb_dir`` (a download only; nothing is installed)."""
    shutil.rmtree(deb_dir, ignore_errors=True)
    deb_dir.mkdir(parents=True)
    try:
        _run(["apt-get", "download", package], cwd=deb_dir)
    except RuntimeError:
        # Stale package lists point at a version the mirror no longer carries.
        _apt_get("update", "-qq")
        _run(["apt-get", "download", package], cwd=deb_dir)
    return sorted(deb_dir.glob(f"{package}_*.deb"))[-1]


# --------------------------------------------------------------------------------------------
# Module dependency closure, resolved from the kernel's own modules.dep


def _module_name(path: str) -> str:
    """``kernel/drivers/scsi/sd_mod.ko.xz`` -> ``sd_mod`` (dashes and underscores are equivalent)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


@dataclass
class ModuleIndex:
    """What modprobe knows about a module tree: dependencies, soft dependencies, aliases, built-ins."""

    paths: dict[str, str]  # module name -> path relative to lib/modules/<kver>
    deps: dict[str, list[str]]  # relative path -> relative paths it needs
    softdeps: dict[str, list[str]]  # module name -> "pre:"/"post:" names (may be aliases)
    aliases: list[tuple[str, str]]  # (pattern, module name)
    builtin: set[str]

    @classmethod
    def load(cls, moddir: Path) -> ModuleIndex:
        paths: dict[str, str] = {}
        deps: dict[str, list[str]] = {}
        for line in (moddir / "modules.dep").read_text().splitlines():
            target, _, needs = line.partition(":")
            paths[_module_name(target)] = target
            deps[target] = needs.split()
        softdeps: dict[str, list[str]] = {}
        for line in _read_lines(moddir / "modules.softdep"):
            words = line.split()
            if len(words) >= 2 and words[0] == "softdep":
                names = [w for w in words[2:] if w not in ("pre:", "post:")]
                softdeps.setdefault(words[1].replace("-", "_"), []).extend(names)
        aliases = []
        for line in _read_lines(moddir / "modules.alias"):
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                aliases.append((words[1], words[2].replace("-", "_")))
        builtin = {_module_name(p) for p in _read_lines(moddir / "modules.builtin")}
        return cls(paths, deps, softdeps, aliases, builtin)

    def resolve(self, name: str) -> list[str]:
        """Module names a request for ``name`` means: itself, or whatever an alias points to."""
        name = name.replace("-", "_")
        if name in self.paths or name in self.builtin:
            return [name]
        return sorted({mod for pattern, mod in self.aliases if fnmatchcase(name, pattern)})

    def closure(self, requested: Iterable[str]) -> list[str]:
        """Relative paths of every loadable module needed for ``requested`` (hard + soft deps)."""
        wanted: set[str] = set()
        todo = list(requested)
        while todo:
            request = todo.pop()
            names = self.resolve(request)
            if not names:
                raise KeyError(f"module {request!r} is neither built in nor in modules.dep/alias")
            for name in names:
                if name in self.builtin or name not in self.paths:
                    continue
                path = self.paths[name]
                if path in wanted:
                    continue
                wanted.add(path)
                todo.extend(_module_name(dep) for dep in self.deps[path])
                # Soft deps matter: crc-t10dif needs a crct10dif implementation at load time.
                todo.extend(self._optional(self.softdeps.get(name, [])))
        return sorted(wanted)

    def _optional(self, names: list[str]) -> list[str]:
        # A softdep on something this kernel does not have is not an error for modprobe either.
        return [n for n in names if self.resolve(n)]


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --------------------------------------------------------------------------------------------
# Kernel image (vmlinuz + module subset + initramfs), cached by kernel version


@dataclass(frozen=True)
class KernelImage:
    version: str  # e.g. "6.1.0-56-amd64"
    package: str  # e.g. "linux-image-6.1.0-56-amd64"
    vmlinuz: Path
    initrd: Path
    modules: tuple[str, ...]  # relative paths of the modules in the initramfs
    timings: dict[str, float] = field(default_factory=dict, compare=False)


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def prepare(cache_dir: Path | None = None) -> KernelImage:
    """Make sure QEMU and a bootable kernel + initramfs exist; cheap when everything is cached.

    Cache layout (``<kver>`` = kernel version)::

        debs/<package>_<version>_amd64.deb   the downloaded kernel package (70 MB)
        <kver>/vmlinuz
        <kver>/modules/lib/modules/<kver>/    only the module closure we need (+ modules.order etc.)
        <kver>/modules.json                   which modules were requested for that subset
        <kver>/initrd-<key>.img               key = hash of guest_init.sh, busybox, module lists
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    timings: dict[str, float] = {}
    start = time.monotonic()
    with _locked(cache_dir / ".lock"):
        with _timed(timings, "host packages"):
            ensure_host_packages()
        with _timed(timings, "resolve kernel"):
            package = resolve_kernel_package()
        kdir = cache_dir / package.removeprefix("linux-image-")
        if not _module_subset_current(kdir):
            _fetch_kernel(package, kdir, timings)
        stamp = json.loads((kdir / "modules.json").read_text())
        kver, modules = stamp["kver"], tuple(stamp["closure"])
        initrd = kdir / f"initrd-{_initrd_key(kver, modules)}.img"
        if not initrd.exists():
            with _timed(timings, "build initramfs"):
                _build_initrd(kdir / "modules", kver, initrd)
    timings["total"] = round(time.monotonic() - start, 2)
    return KernelImage(kver, package, kdir / "vmlinuz", initrd, modules, timings)


def _module_subset_current(kdir: Path) -> bool:
    stamp = kdir / "modules.json"
    if not (stamp.exists() and (kdir / "vmlinuz").exists()):
        return False
    return json.loads(stamp.read_text()).get("requested") == sorted(INITRD_MODULES)


def _fetch_kernel(package: str, kdir: Path, timings: dict[str, float]) -> None:
    """Download the kernel .deb, keep vmlinuz and the module closure, drop the rest.

    The .deb (70 MB) and its unpacked tree (~400 MB) are only scratch space: after this, the cache
    holds about 17 MB per kernel version.
    """
    (kdir / "modules.json").unlink(missing_ok=True)  # the stamp goes last; an interrupted run redoes it all
    shutil.rmtree(kdir / "modules", ignore_errors=True)
    download, scratch = kdir / "download.tmp", kdir / "extract.tmp"
    try:
        with _timed(timings, "download kernel"):
            deb = _download_deb(package, download)
        with _timed(timings, "extract kernel + module subset"):
            _extract_kernel(deb, scratch, kdir)
    finally:
        shutil.rmtree(download, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _extract_kernel(deb: Path, scratch: Path, kdir: Path) -> None:
    """Unpack ``deb`` into ``scratch``; copy vmlinuz and the module closure into ``kdir``."""
    shutil.rmtree(scratch, ignore_errors=True)
    _run(["dpkg", "-x", str(deb), str(scratch)])
    src = _modules_dir(scratch)
    kver = src.name
    # Debian ships no modules.dep; generate it for the unpacked tree only (-b), not the host's.
    _run(["depmod", "-b", str(src.parents[2]), kver])
    closure = ModuleIndex.load(src).closure(INITRD_MODULES)
    dst = kdir / "modules" / "lib" / "modules" / kver
    for rel in closure:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    # depmod needs these to regenerate a consistent index for the subset later.
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    shutil.copy2(scratch / "boot" / f"vmlinuz-{kver}", kdir / "vmlinuz")
    stamp = {"kver": kver, "requested": sorted(INITRD_MODULES), "closure": closure, "deb": deb.name}
    (kdir / "modules.json").write_text(json.dumps(stamp, indent=1))


def _modules_dir(root: Path) -> Path:
    """``lib/modules/<kver>`` of an unpacked kernel package (the one directory in there)."""
    # Packages from trixie on ship /usr/lib/modules; accept either layout.
    for parent in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        versions = sorted(parent.iterdir()) if parent.is_dir() else []
        if len(versions) == 1:
            return versions[0]
    raise RuntimeError(f"expected exactly one lib/modules/<kver> in the kernel package under {root}")


def _initrd_key(kver: str, modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(f"{INITRD_LAYOUT_VERSION}\n{kver}\n".encode())
    h.update("\n".join(modules).encode() + b"\n" + "\n".join(BOOT_MODULES).encode())
    h.update(GUEST_INIT.read_bytes())
    h.update(Path("/bin/busybox").read_bytes())
    return h.hexdigest()[:16]


def _build_initrd(module_root: Path, kver: str, out: Path) -> None:
    """busybox + /init + the module subset (re-indexed by depmod), as a gzip'd newc cpio."""
    staging = out.with_suffix(".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _install_busybox(staging)
        shutil.copytree(module_root / "lib", staging / "lib", dirs_exist_ok=True)
        _decompress_modules(staging / "lib" / "modules" / kver)
        _run(["depmod", "-b", str(staging), kver])
        for d in ("proc", "sys", "dev", "run", "tmp", "mnt", "lower", "rw", "newroot", "etc/klab"):
            (staging / d).mkdir(parents=True, exist_ok=True)
        (staging / "etc/klab/boot-modules").write_text("\n".join(BOOT_MODULES) + "\n")
        shutil.copy2(GUEST_INIT, staging / "init")
        (staging / "init").chmod(0o755)
        _write_cpio_gz(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in out.parent.glob("initrd-*.img"):
        if old != out:
            old.unlink()


def _install_busybox(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    # --list-full gives each applet's canonical location (sbin/modprobe matters: the kernel
    # calls /sbin/modprobe itself to load crypto helpers on demand).
    for applet in _run(["/bin/busybox", "--list-full"]).split():
        link = root / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def _decompress_modules(moddir: Path) -> None:
    """busybox modprobe cannot be relied on to read compressed modules; store them plain."""
    for packed in moddir.rglob("*.ko.xz"):
        packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
        packed.unlink()
    leftovers = [p.name for p in moddir.rglob("*.ko.*")]
    if leftovers:
        raise RuntimeError(f"unsupported module compression: {leftovers[:5]}")


def _write_cpio_gz(root: Path, out: Path) -> None:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
        cwd=root, input="\n".join(names).encode() + b"\n", capture_output=True, check=True,
    ).stdout
    tmp = out.with_suffix(".tmp")
    # Level 1: the kernel decompresses it under TCG on every boot, size hardly matters.
    tmp.write_bytes(gzip.compress(archive, compresslevel=1, mtime=0))
    tmp.rename(out)


# --------------------------------------------------------------------------------------------
# Booting


@dataclass
class GuestResult:
    command: str
    exit_code: int | None  # the scenario's exit code; None if the guest never got that far
    report: dict | None  # parsed outdir/report.json (written by guestlib.Report), if any
    console_log: Path
    outdir: Path
    boot_seconds: float | None  # guest uptime when the scenario started
    run_seconds: float | None  # guest time the scenario took
    wall_seconds: float  # host time of the whole QEMU run
    host_boot_seconds: float | None  # host time until the scenario started (includes kernel load)
    timed_out: bool = False
    qemu_returncode: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def failed_checks(self) -> list[dict]:
        return [c for c in (self.report or {}).get("checks", []) if not c.get("ok")]

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self, tail_lines: int = 60) -> str:
        """Everything a human needs when a kernel test fails."""
        parts = [
            f"command: {self.command}",
            f"exit_code={self.exit_code} timed_out={self.timed_out} qemu_rc={self.qemu_returncode} "
            + self.timing_line(),
            f"outdir: {self.outdir}",
        ]
        if self.report is None:
            parts.append("no report.json was written")
        for check in self.failed_checks:
            parts.append(f"FAILED CHECK {check['name']}: {check.get('detail', '')}")
        parts.append(f"--- last {tail_lines} console lines ({self.console_log}) ---")
        parts.append(self.console_tail(tail_lines))
        return "\n".join(parts)

    def timing_line(self) -> str:
        return (
            f"boot={_secs(self.boot_seconds)} run={_secs(self.run_seconds)} wall={_secs(self.wall_seconds)} "
            f"(host time to scenario start {_secs(self.host_boot_seconds)})"
        )


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}s"


# Every boot of this process, for the timing summary pytest prints at the end (see conftest.py).
BOOT_HISTORY: list[tuple[str, GuestResult]] = []


def guest_python() -> str:
    """The interpreter scenarios run with: the checkout's venv if it exists, else the venv this
    process runs in (a git worktree without its own .venv, run with another checkout's venv),
    else Debian's python3.

    The guest sees the host filesystem at the same paths, so the venv (and the interpreter its
    symlinks point to) works in the guest as it is. PYTHONPATH (scenario_command) puts this
    checkout first, so the guest imports this checkout's sanbusd whichever venv it uses (the
    group records ``sanbusd_module``).
    """
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    if sys.prefix != sys.base_prefix:
        return sys.executable
    return "/usr/bin/python3"


def scenario_command(name: str, *args: str) -> str:
    """Shell command that runs ``scenarios/<name>.py`` in the guest with guestlib and the project importable."""
    script = SCENARIO_DIR / f"{name}.py"
    if not script.exists():
        raise FileNotFoundError(script)
    pythonpath = f"{REPO_ROOT}:{HERE}"
    return shlex.join(["env", f"PYTHONPATH={pythonpath}", guest_python(), str(script), *args])


def run_scenario(name: str, *, image: KernelImage, outdir: Path, **boot_args) -> GuestResult:
    return boot(scenario_command(name), image=image, outdir=outdir, label=name, **boot_args)


def run_group(group: str, names: Iterable[str], *, image: KernelImage, outdir: Path,
              **boot_args) -> GuestResult:
    """One boot for a group of scenarios (``scenarios/group.py``; see sanscenario.GroupRunner)."""
    names = list(names)
    return boot(scenario_command("group", *names), image=image, outdir=outdir,
                label=f"group {group} ({', '.join(names)})", **boot_args)


def boot(
    command: str,
    *,
    image: KernelImage,
    outdir: Path,
    nics: int = 0,
    timeout: float = 600,
    mem_mb: int = 2048,
    label: str | None = None,
) -> GuestResult:
    """Boot the lab kernel, run ``command`` (a /bin/sh command line) in the guest, power off.

    The command is never put on the kernel command line (which cannot carry arbitrary characters);
    it goes into ``outdir/run.sh``, which the guest's /init runs from the output share.
    """
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    _clear_previous_run(outdir)
    (outdir / RUN_SCRIPT).write_text(f"#!/bin/sh\n# written by tests/kernel/lab.py\n{command}\n")
    console_log = outdir / "console.log"
    argv = _qemu_argv(image, outdir, nics=nics, mem_mb=mem_mb)
    (outdir / "qemu-argv.txt").write_text(shlex.join(argv) + "\n")

    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker_seen: list[float] = []
    reader = threading.Thread(
        target=_copy_console, args=(proc, console_log, start, marker_seen), daemon=True
    )
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    reader.join(timeout=10)
    wall = time.monotonic() - start
    if timed_out:
        with open(console_log, "ab") as fh:
            fh.write(f"\n[lab.py] QEMU killed after the {timeout:.0f}s timeout\n".encode())

    guest_times = _read_guest_times(outdir)
    started, ended = guest_times.get("scenario_start"), guest_times.get("scenario_end")
    result = GuestResult(
        command=command,
        exit_code=_read_int(outdir / "exit_code"),
        report=_read_json(outdir / "report.json"),
        console_log=console_log,
        outdir=outdir,
        boot_seconds=started,
        run_seconds=round(ended - started, 2) if started is not None and ended is not None else None,
        wall_seconds=round(wall, 2),
        host_boot_seconds=round(marker_seen[0], 2) if marker_seen else None,
        timed_out=timed_out,
        qemu_returncode=proc.returncode,
    )
    BOOT_HISTORY.append((label or command, result))
    log.info("kernel lab: %s: exit=%s %s", label or command, result.exit_code, result.timing_line())
    return result


def _qemu_argv(image: KernelImage, outdir: Path, *, nics: int, mem_mb: int) -> list[str]:
    accel = os.environ.get(ACCEL_ENV, "tcg")
    argv = [
        "qemu-system-x86_64", "-accel", accel,
        "-nographic", "-no-reboot",  # a guest panic (panic=-1 reboots) ends QEMU instead of looping
        "-m", str(mem_mb), "-smp", "2",
        "-nic", "none",  # no default NIC: skips the iPXE ROM and keeps NIC numbering explicit
        "-kernel", str(image.vmlinuz), "-initrd", str(image.initrd),
        "-append", "console=ttyS0 panic=-1 quiet",
        # The host root, read-only; remap keeps inode numbers unique across host mounts.
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={outdir},mount_tag=out,security_model=none",
    ]
    if nics > 0xFF - FIRST_NIC:
        raise ValueError(f"too many NICs: {nics}")
    for i in range(nics):
        # All NICs on one hub: FCoE VN2VN needs the initiator and target ports on one L2 segment.
        mac = nic_mac(i)
        argv += [
            "-netdev", f"hubport,id=nic{i},hubid=0",
            # romfile= (empty): no iPXE option ROM, which only slows down the BIOS.
            "-device", f"virtio-net-pci,netdev=nic{i},mac={mac},romfile=",
        ]
    return argv


def nic_mac(index: int) -> str:
    """MAC address of NIC ``index`` (0 -> 52:54:00:00:00:0a)."""
    return f"{NIC_MAC_PREFIX}{FIRST_NIC + index:02x}"


def _copy_console(proc: subprocess.Popen, console_log: Path, start: float, marker_seen: list[float]) -> None:
    """Save the serial console line by line, noting when the scenario-start marker goes by."""
    assert proc.stdout is not None
    with open(console_log, "wb") as fh:
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            if not marker_seen and SCENARIO_START_MARKER in line:
                marker_seen.append(time.monotonic() - start)


def _clear_previous_run(outdir: Path) -> None:
    # A reused outdir must not make a failed boot look like the previous, successful one.
    for name in ("exit_code", "report.json", "klab-times", "console.log", "dmesg.txt"):
        (outdir / name).unlink(missing_ok=True)


def _read_guest_times(outdir: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    path = outdir / "klab-times"
    for line in _read_lines(path):
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            times[key] = float(value)
    return times


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except OSError:
        return None
    except ValueError as exc:
        return {"checks": [{"name": "report.json is valid JSON", "ok": False, "detail": str(exc)}]}


def main(argv: list[str] | None = None) -> int:
    """``python3 tests/kernel/lab.py [prepare]`` fills the cache and prints where things are;
    ``python3 tests/kernel/lab.py shell [--nics 2]`` boots the guest with an interactive shell on
    the console (the host root as /, /run/kl-out writable; leave with `exit`, or Ctrl-A X).
    """
    parser = argparse.ArgumentParser(description="sanbusd kernel lab")
    parser.add_argument("action", nargs="?", choices=("prepare", "shell"), default="prepare")
    parser.add_argument("--nics", type=int, default=0)
    parser.add_argument("--mem-mb", type=int, default=2048)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image = prepare()
    if args.action == "prepare":
        summary = {"version": image.version, "vmlinuz": str(image.vmlinuz), "initrd": str(image.initrd),
                   "modules": len(image.modules), "timings": image.timings}
        print(json.dumps(summary, indent=1))
        return 0
    outdir = Path(tempfile.mkdtemp(prefix="klab-shell-"))
    (outdir / RUN_SCRIPT).write_text("#!/bin/sh\nsh -i\n")
    print(f"output share: {outdir} (guest: {GUEST_OUT_DIR})", flush=True)
    # Unlike boot(), QEMU keeps this terminal as the serial console.
    return subprocess.call(_qemu_argv(image, outdir, nics=args.nics, mem_mb=args.mem_mb))


if __name__ == "__main__":
    sys.exit(main())
