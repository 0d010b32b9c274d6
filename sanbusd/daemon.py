"""sanbusd: the daemon, and the composition root that builds it.

`build` makes every piece and hands each its collaborators explicitly:

    events: backend (kernel | simulated SAN) -> state (inventory, refresh) -> publisher -> bus tree
    calls:  bus tree -> authorization (polkit) -> api handler -> operation -> backend

Start-up order is udisks': every object exists before org.example.SanStorage is requested, so
"started" (Type=dbus, or a client's activation) means "populated".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from dbus_fast import DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply

from . import BUS_NAME, __version__, config, lifecycle
from .api.job import JobApi
from .api.lun import LunApi
from .api.manager import ManagerApi
from .api.multipath import MultipathApi
from .api.scsi_host import ScsiHostApi
from .api.vhba import VhbaApi
from .authz.polkit import PolkitAuthorizer
from .authz.registry import collect
from .backend.base import Backend
from .backend.multipathd import MultipathdClient
from .bus import dbusfix
from .bus.contract import load_api
from .bus.tree import ObjectTree
from .client import connect
from .ops.jobs import Jobs
from .ops.lun import LunOps
from .ops.multipath import MultipathOps
from .ops.scan import Scanner
from .ops.vhba import VhbaOps, VhbaRecords
from .publish import paths
from .publish.publisher import Publisher
from .publish.render import polkit_details
from .state import State

log = logging.getLogger("sanbusd")


# The objects that implement the API, one per interface (their @methods are checked against the
# XML when the daemon is built).
API_CLASSES = (ManagerApi, ScsiHostApi, LunApi, JobApi, VhbaApi, MultipathApi)


@dataclass
class Daemon:
    settings: config.Settings
    backend: Backend
    bus: MessageBus
    tree: ObjectTree
    state: State
    jobs: Jobs
    scanner: Scanner
    vhbas: VhbaOps
    multipath: MultipathOps
    life: lifecycle.Lifecycle


def build(settings: config.Settings, backend: Backend, bus: MessageBus) -> Daemon:
    """Every piece, wired. Nothing here does I/O; `Daemon.run` starts them in order."""
    authorizer = PolkitAuthorizer(bus, settings.polkit_timeout)
    tree = ObjectTree(load_api(), authorizer, paths.ROOT,
                      details=lambda path: polkit_details(state.inventory, path))
    publisher = Publisher(tree, backend.name)
    state = State(backend, publisher)
    jobs = Jobs(settings.job_retention, on_change=publisher.job_changed,
                on_completed=publisher.job_completed, on_drop=publisher.job_dropped)
    scanner = Scanner(backend, state, jobs, settings)
    luns = LunOps(backend, state, scanner, settings)
    mpathd = MultipathdClient(settings.multipathd_socket or backend.multipathd_socket,
                              settings.multipathd_timeout)
    multipath = MultipathOps(backend, state, jobs, settings, mpathd, luns)
    state.map_states = multipath.states
    libvirt = None
    if settings.libvirt_uri:
        from .backend.libvirt import LibvirtVports
        libvirt = LibvirtVports(settings.libvirt_uri)
        if settings.libvirt_refresh_pools:
            scanner.after_scan = pool_refresher(libvirt, state, settings)
    records = VhbaRecords(settings.state_directory)
    vhbas = VhbaOps(backend, state, scanner, jobs, settings, records, libvirt,
                    on_records=lambda: state.set_persistent(set(records.records),
                                                            vhbas.record_rows()))
    # Fail closed: refuses to start unless every method of the XML is implemented here, with
    # the polkit action the XML names.
    tree.register(collect(
        ManagerApi(state, scanner, authorizer, settings),
        ScsiHostApi(scanner, authorizer, settings),
        LunApi(luns),
        JobApi(jobs, authorizer),
        VhbaApi(state, vhbas, authorizer, settings),
        MultipathApi(multipath, authorizer)))
    life = lifecycle.Lifecycle(settings.idle_exit, jobs)
    tree.on_call = life.call_started
    return Daemon(settings, backend, bus, tree, state, jobs, scanner, vhbas, multipath, life)


def pool_refresher(libvirt, state: State, settings: config.Settings):
    """After a scan: refresh the libvirt storage pools that may show its new LUNs, by the rule
    in backend/libvirt.py (a scsi pool only after a wildcard scan of its host, so a refresh
    never attaches what a targeted scan left out). A failure is logged, never the scan's."""
    from . import errors
    from .backend.libvirt import HostIds

    async def refresh(hosts: set[int], wildcard: set[int]) -> None:
        inv = state.inventory
        ids = {n: HostIds.of_host(inv.hosts[n]) for n in hosts if n in inv.hosts}
        try:
            names = await asyncio.wait_for(asyncio.to_thread(
                libvirt.refresh_pools, hosts, wildcard, ids), settings.settle_timeout)
            if names:
                log.info("refreshed libvirt storage pools %s", ", ".join(names))
        except (errors.SanError, asyncio.TimeoutError) as e:
            log.warning("refreshing libvirt storage pools failed: %s",
                        getattr(e, "message", "no answer in time"))
    return refresh


async def run(settings: config.Settings, backend: Backend, ready_fd: int | None = None) -> int:
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    bus = await connect(settings.bus)
    d = build(settings, backend, bus)
    # Listen before reading (udisks' order): a change during the read arrives as an event that
    # the pump handles once the tree is up, so nothing between read and name is lost.
    backend.start(loop, d.state.pump.feed, d.state.pump.reconcile)
    d.multipath.start()
    inv = await d.state.load()
    log.info("read %d hosts, %d remote ports, %d LUN paths, %d vports, %d multipath maps "
             "in %.2f s", len(inv.hosts), len(inv.rports), len(inv.luns), len(inv.vports),
             len(inv.maps), time.monotonic() - t0)
    # What the last sanbusd kept across its exit (RescanSuggested, finished jobs) is part of
    # "populated" too.
    run_state = lifecycle.RunState(settings.runtime_directory)
    boot = lifecycle.boot_key(os.path.join(settings.sim_directory, "sys") if settings.simulate
                              else settings.sysfs_root)
    kept = run_state.take()
    if kept is not None:
        log.info("restored from %s: %s", run_state.path, lifecycle.restore(
            kept, d.state.inventory, d.state.suggest_rescan, d.jobs, boot))
    d.life.attach(bus)
    d.tree.attach(bus)
    d.state.pump.start()
    # Persistent vHBAs are part of "populated": re-create the missing ones before the name.
    await d.vhbas.restore()
    try:
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    except DBusError as e:      # the bus policy: only root may own the name
        log.error("cannot own %s: %s", BUS_NAME, e.text)
        return 1
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        log.error("cannot own %s (%s): another sanbusd is running", BUS_NAME, reply.name)
        return 1
    log.info("sanbusd %s owns %s (%s backend) after %.2f s", __version__, BUS_NAME,
             backend.name, time.monotonic() - t0)
    _notify_ready(inv, settings)
    interval = lifecycle.watchdog_interval(dict(os.environ), os.getpid())
    watchdog = lifecycle.Watchdog(interval) if interval else None
    if watchdog is not None:
        watchdog.start()
        log.debug("watchdog: WATCHDOG=1 every %.2f s", interval)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    disconnected = asyncio.ensure_future(bus.wait_for_disconnect())
    stop = asyncio.ensure_future(stopping.wait())
    idle = asyncio.ensure_future(d.life.wait_idle())
    await asyncio.wait({disconnected, stop, idle}, return_when=asyncio.FIRST_COMPLETED)
    idle.cancel()
    if disconnected.done():
        if watchdog is not None:
            watchdog.stop()
        why = None if disconnected.cancelled() else disconnected.exception()
        log.error("lost the bus connection%s; exiting", f" ({why!r})" if why else "")
        return 1
    if stop.done():
        log.info("stopping on signal")
        lifecycle.notify("STOPPING=1\nSTATUS=Stopping on signal")
    else:
        log.info("idle for %g s (no calls, jobs or ObjectManager clients): exiting; the next "
                 "call starts sanbusd again", settings.idle_exit)
        lifecycle.notify("STOPPING=1\nSTATUS=Idle: exiting until the next call")

    def kept_state() -> dict:
        return lifecycle.snapshot(d.state.inventory, d.state.rescan_suggested, d.jobs, boot)
    # Before the name goes: the next sanbusd reads this file before it asks for the name.
    run_state.save(kept_state())
    try:
        await asyncio.wait_for(bus.release_name(BUS_NAME), 2)
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
    if not stop.done():
        # Answer the calls that reached us before the name went (a scan may take long).
        if not await d.life.drained(settings.scan_max_timeout + settings.settle_timeout):
            log.warning("exiting with %s", d.life.busy())
        run_state.save(kept_state())    # only if those calls changed it
    if watchdog is not None:
        watchdog.stop()
    d.state.pump.stop()
    d.multipath.stop()
    backend.stop()
    bus.disconnect()
    return 0


def _notify_ready(inv, settings: config.Settings) -> None:
    idle = (f"; exits after {settings.idle_exit:g} s idle" if settings.idle_exit
            else "")
    lifecycle.notify(f"READY=1\nSTATUS=Publishing {len(inv.hosts)} SCSI hosts, "
                     f"{len(inv.luns)} LUN paths, {len(inv.maps)} multipath maps{idle}")


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    # journald only if it is really there: without it JournalHandler drops messages silently.
    if os.environ.get("JOURNAL_STREAM") or os.path.exists("/run/systemd/journal/socket"):
        try:
            from systemd.journal import JournalHandler
            root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="sanbusd"))
            return
        except Exception:  # noqa: BLE001 - fall back to stderr
            pass
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("sanbusd[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sanbusd", description="D-Bus system service for SAN storage: SCSI hosts, FC ports, "
        "LUNs, NPIV vHBAs and multipath maps as objects on org.example.SanStorage.")
    p.add_argument("--simulate", metavar="FABRIC",
                   help="run on a simulated SAN described by FABRIC (TOML), not the kernel")
    p.add_argument("--sim-dir", metavar="DIR",
                   help="where the simulated SAN keeps its sysfs tree, state and control socket "
                        "(default: $SANBUSD_SIM_DIR or /run/sanbusd-sim); DIR/sys can be read "
                        "by lsscsi --sysfsroot. A SAN already there is reused, as a real SAN "
                        "outlives a daemon restart")
    p.add_argument("--sim-fresh", action="store_true", default=None,
                   help="lay the simulated SAN out afresh from FABRIC, discarding the one in DIR")
    p.add_argument("--bus", metavar="system|session|ADDRESS",
                   help="the bus to serve on (default: system; honours DBUS_SYSTEM_BUS_ADDRESS)")
    p.add_argument("--sysfs-root", metavar="DIR",
                   help="read the kernel's picture from DIR instead of /sys (no udev events "
                        "then)")
    p.add_argument("--scan-parallel-hosts", type=int, metavar="N",
                   help="hosts scanned at once (default 16)")
    p.add_argument("--job-retention", type=float, metavar="S",
                   help="seconds a finished job stays on the bus (default 60; "
                        "$SANBUSD_JOB_RETENTION)")
    p.add_argument("--polkit-timeout", type=float, metavar="S",
                   help="seconds to wait for polkit before answering TimedOut (default 120; "
                        "$SANBUSD_POLKIT_TIMEOUT)")
    p.add_argument("--idle-exit", type=float, metavar="S",
                   help="exit after S seconds without calls, running jobs or ObjectManager "
                        "clients; the next call activates it again (0 = never; default 0, "
                        "300 when systemd starts it; $SANBUSD_IDLE_EXIT)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where persistent vHBAs are recorded (default /var/lib/sanbusd; on the "
                        "simulated SAN, SIM_DIR/state; $SANBUSD_STATE_DIR)")
    p.add_argument("--libvirt-uri", metavar="URI",
                   help="create and delete vHBAs through libvirt's node-device API at URI "
                        "(e.g. qemu:///system), so virsh and libvirt's pools know them "
                        "(default: sysfs; $SANBUSD_LIBVIRT_URI)")
    p.add_argument("--libvirt-refresh-pools", action="store_true", default=None,
                   help="after a scan or a vHBA login, refresh the libvirt storage pools that "
                        "show those hosts (mpath pools; scsi pools only after a wildcard scan)")
    p.add_argument("--vhba-oui", metavar="OUI",
                   help="IEEE OUI (6 hex digits) of generated vHBA WWNs (default 001a4a)")
    p.add_argument("--multipathd-timeout", type=float, metavar="S",
                   help="seconds one multipathd command may take, retries included (default "
                        "30; $SANBUSD_MULTIPATHD_TIMEOUT)")
    p.add_argument("--multipathd-poll", type=float, metavar="S",
                   help="compare path states with multipathd's this often while maps exist "
                        "(default 5; $SANBUSD_MULTIPATHD_POLL)")
    p.add_argument("--multipathd-socket", metavar="ADDRESS",
                   help="where multipathd listens (default @/org/kernel/linux/storage/"
                        "multipathd; on the simulated SAN, SIM_DIR/multipathd.sock)")
    p.add_argument("--config", metavar="FILE",
                   help=f"the configuration file (default {config.CONFIG_FILE}, if it exists); "
                        "the environment and the command line override it")
    p.add_argument("--check-config", action="store_true",
                   help="read the configuration file, environment and command line, print the "
                        "settings in force and exit: 0 if valid, 2 (saying what is wrong) if not")
    p.add_argument("--ready-fd", type=int, metavar="FD", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", default=None, help="debug logging")
    p.add_argument("--version", action="version", version=f"sanbusd {__version__}")
    return p.parse_args(argv)


def make_backend(settings: config.Settings) -> Backend:
    if settings.simulate:
        from .sim.backend import SimBackend
        backend = SimBackend(settings.simulate, settings.sim_directory, fresh=settings.sim_fresh)
        log.info("simulated SAN in %s", backend.directory)
        return backend
    from .backend.kernel import KernelBackend
    return KernelBackend(settings.sysfs_root)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli = {k: v for k, v in vars(args).items()
           if k not in ("ready_fd", "config", "check_config")}
    try:
        settings = config.from_sources(cli, config_file=args.config)
    except ValueError as e:
        if args.check_config:
            print(f"sanbusd: {e}", file=sys.stderr)
            return 2
        setup_logging(False)
        log.error("cannot start: %s", e)
        return 2
    if args.check_config:
        print(config.describe(settings, args.config))
        return 0
    setup_logging(settings.verbose)
    dbusfix.apply()
    try:
        backend = make_backend(settings)
    except Exception as e:  # noqa: BLE001 - a bad fabric file or root is a usage error
        log.error("cannot start: %s", e)
        return 2
    try:
        return asyncio.run(run(settings, backend, args.ready_fd))
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    except (ConnectionError, OSError) as e:
        log.error("cannot connect to the %s bus: %s", settings.bus, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
