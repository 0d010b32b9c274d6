"""sanbusd: the daemon. Reads the kernel, publishes the tree, then owns the name.

Start-up order is udisks': every object exists before org.example.SanStorage is requested, so
"started" (Type=dbus, or a client's activation) means "populated". Kernel events are coalesced per
burst (lvmdbusd's udevwatch does the same) into one sysfs re-read of exactly the touched records
and one batch of signals; a lost event (ENOBUFS) or an explicit reconcile re-reads everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply

from . import BUS_NAME, __version__, dbusfix, errors  # noqa: F401 - dbusfix patches at import
from .inventory import diff
from .kernel.port import Kernel, SimKernel, SysfsKernel
from .kernel.sysfs import Dirty
from .kernel.uevent import UEvent, dirty_from_event
from .jobs import Jobs
from .kernel.uevent import LUNS_CHANGED_UA
from .scan import Scanner
from .service import context, host, job, lun, manager  # noqa: F401 - they register handlers
from .service.api import load_api
from .service.publisher import Publisher
from .service.tree import ObjectTree

if TYPE_CHECKING:
    from .authz import PolkitAuthorizer

log = logging.getLogger("sanbusd")

SETTLE_QUIET = 0.05     # a burst has ended after this long without events (s)
SETTLE_MAX = 0.5        # ... or after this long in any case, so a storm still makes progress


class EventPump:
    """Collects uevents, waits for the burst to end, re-reads what they touched, publishes."""

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.pending = Dirty()
        self.events: list[UEvent] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.listeners: list = []          # callables(list[UEvent]) run after each publish
        self._waiting: list[asyncio.Future] = []   # resolved after the next refresh

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def sync(self, dirty: Dirty) -> None:
        """feed_dirty, and return once those records are published."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self.feed_dirty(dirty)
        await fut

    def feed_dirty(self, dirty: Dirty) -> None:
        """Records an operation knows it changed (e.g. LUNs a scan found): re-read them now
        instead of waiting on udev, which may be slow under a storm or not running at all."""
        self.pending.merge(dirty)
        self._wakeup.set()

    def feed(self, events: list[UEvent]) -> None:
        for ev in events:
            self.pending.merge(dirty_from_event(ev))
        self.events.extend(events)
        self._wakeup.set()

    def reconcile(self) -> None:
        self.pending.everything = True
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            start = time.monotonic()
            while time.monotonic() - start < SETTLE_MAX:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), SETTLE_QUIET)
                except asyncio.TimeoutError:
                    break
            self._wakeup.clear()
            dirty, self.pending = self.pending, Dirty()
            events, self.events = self.events, []
            waiting, self._waiting = self._waiting, []
            try:
                await self.daemon.refresh(dirty)
            except Exception:  # noqa: BLE001 - never let one bad burst stop the pump
                log.exception("refresh after %d events failed; reconciling", len(events))
                self.pending.everything = True
                self._wakeup.set()
                await asyncio.sleep(1)
            for fut in waiting:
                if not fut.done():
                    fut.set_result(None)
            for fn in self.listeners:
                fn(events)


class Daemon:
    def __init__(self, kernel: Kernel, bus_address: str) -> None:
        self.kernel = kernel
        self.bus_address = bus_address
        self.tree: ObjectTree | None = None
        self.publisher: Publisher | None = None
        self.bus: MessageBus | None = None
        self.pump = EventPump(self)
        self.pump.listeners.append(self._unit_attentions)
        self.jobs: Jobs | None = None
        self.authorizer: "PolkitAuthorizer | None" = None
        self.scanner: Scanner | None = None
        self._refresh_lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    def _unit_attentions(self, events: list[UEvent]) -> None:
        """The storage said its LUN inventory changed (the kernel does not rescan by itself):
        surface it on the host, so a GUI can offer a scan (never scan blindly from here, P5)."""
        hosts = set()
        for ev in events:
            if ev.properties.get("SDEV_UA") == LUNS_CHANGED_UA:
                hctl = dirty_from_event(ev).luns
                hosts |= {h.host for h in hctl}
        if hosts and self.publisher is not None:
            log.info("storage reports changed LUN inventory on %s: a scan will find the new "
                     "LUNs", ", ".join(f"host{h}" for h in sorted(hosts)))
            self.publisher.suggest_rescan(hosts)

    async def caller_uid(self, sender: str) -> int:
        assert self.authorizer is not None
        uid = await self.authorizer.caller_uid(sender)
        if uid is None:
            raise errors.Failed("cannot tell who called: the caller has left the bus")
        return uid

    async def refresh(self, dirty: Dirty) -> None:
        if not dirty:
            return
        async with self._refresh_lock:
            assert self.publisher is not None
            old = self.publisher.inventory
            # sysfs reads block (and a host may vanish mid-read): keep them off the loop.
            new, keys = await asyncio.to_thread(self.kernel.reader.refresh, old, dirty)
            # Also with nothing to publish: waiters may be waiting for udev to finish (a uevent
            # announced after its rules ran), which the records do not show.
            self.publisher.update(new, diff(old, new, keys))

    async def run(self, ready_fd: int | None = None) -> int:
        from .authz import PolkitAuthorizer
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        # Listen before reading (udisks' order): a change during the read arrives as an event
        # that the pump handles once the tree is up, so nothing between read and name is lost.
        self.kernel.start(loop, self.pump.feed, self.pump.reconcile)
        inv = await asyncio.to_thread(self.kernel.reader.read_all)
        log.info("read %d hosts, %d remote ports, %d LUN paths, %d vports, %d multipath maps "
                 "in %.2f s", len(inv.hosts), len(inv.rports), len(inv.luns), len(inv.vports),
                 len(inv.maps), time.monotonic() - t0)
        self.bus = await _connect(self.bus_address)
        self.authorizer = PolkitAuthorizer(self.bus)
        self.tree = ObjectTree(load_api(), self.authorizer)
        self.publisher = Publisher(self.tree, self.kernel.backend)
        self.jobs = Jobs(self.tree)
        self.scanner = Scanner(self)
        context.set_daemon(self)
        self.publisher.publish_all(inv)
        self.tree.attach(self.bus)
        self.pump.start()
        try:
            reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as e:      # the bus policy: only root may own the name
            log.error("cannot own %s: %s", BUS_NAME, e.text)
            return 1
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            log.error("cannot own %s (%s): another sanbusd is running", BUS_NAME, reply.name)
            return 1
        log.info("sanbusd %s owns %s (%s backend) after %.2f s", __version__, BUS_NAME,
                 self.kernel.backend, time.monotonic() - t0)
        _notify_ready()
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        disconnected = asyncio.ensure_future(self.bus.wait_for_disconnect())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if disconnected.done():
            log.error("lost the bus connection; exiting")
            return 1
        log.info("stopping on signal")
        self.pump.stop()
        self.kernel.stop()
        try:
            await asyncio.wait_for(self.bus.release_name(BUS_NAME), 2)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        self.bus.disconnect()
        return 0


async def _connect(address: str) -> MessageBus:
    if address == "system":
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    if address == "session":
        return await MessageBus(bus_type=BusType.SESSION).connect()
    return await MessageBus(bus_address=address).connect()


def _notify_ready() -> None:
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon as sd
        sd.notify("READY=1\nSTATUS=Publishing SAN storage")
    except Exception as e:  # noqa: BLE001 - readiness is still visible as the bus name
        log.warning("sd_notify failed: %s", e)


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
                   help="where the simulated SAN lays out its sysfs tree and control socket "
                        "(default: $SANBUSD_SIM_DIR or /run/sanbusd-sim); DIR/sys can be read "
                        "by lsscsi --sysfsroot")
    p.add_argument("--bus", default="system", metavar="system|session|ADDRESS",
                   help="the bus to serve on (default: system; honours DBUS_SYSTEM_BUS_ADDRESS)")
    p.add_argument("--sysfs-root", default="/sys", metavar="DIR",
                   help="read the kernel's picture from DIR instead of /sys (no udev events "
                        "then)")
    p.add_argument("--ready-fd", type=int, metavar="FD", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"sanbusd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.simulate:
            from .cli.sim import default_sim_dir
            kernel: Kernel = SimKernel(args.simulate, args.sim_dir or default_sim_dir())
            log.info("simulated SAN laid out in %s", kernel.directory)  # type: ignore[attr-defined]
        else:
            kernel = SysfsKernel(args.sysfs_root)
    except Exception as e:  # noqa: BLE001 - a bad fabric file or root is a usage error
        log.error("cannot start: %s", e)
        return 2
    try:
        return asyncio.run(Daemon(kernel, args.bus).run(args.ready_fd))
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    except (ConnectionError, OSError) as e:
        log.error("cannot connect to the %s bus: %s", args.bus, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
