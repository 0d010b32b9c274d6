"""The daemon's life cycle under systemd: readiness and status, the watchdog, idle exit, and the
state that must outlive an idle exit.

**Idle rule.** With `idle_exit` > 0, sanbusd exits once, for `idle_exit` seconds on end, no
method call has been in flight, no job has been running, and no *ObjectManager client* has been
connected. An ObjectManager client is a connection that called GetManagedObjects and is still on
the bus (sanctl monitor, a GUI through GDBusObjectManagerClient, any tool that mirrors the tree):
it reads the tree once and then follows it through signals, and signals do not activate a
service. systemd-hostnamed and -timedated may exit under their watchers because their state only
changes through their own methods, whose next call starts them again; sanbusd's changes with the
kernel (a LUN appears, a port goes down, a map degrades), so a watcher of a stopped sanbusd would
see a frozen picture and never know. A one-shot caller (busctl, sanctl status, a GUI that only
calls) disconnects and holds nothing; a client that merely adds match rules without ever calling
is invisible to sanbusd (the bus does not tell a service who listens) and does not hold it either.
Kernel events do not hold it: what they change is re-read from the kernel at the next start,
except the storage's unit attentions (RescanSuggested), which the kernel reports once: one that
arrives while sanbusd is not running is not seen. Where that matters, leave `idle_exit` at 0.

**Nothing lost.** What exists only in sanbusd's memory - the hosts whose storage suggested a
rescan, finished jobs still in their retention time, the next job number - is written atomically
to RUN_DIR/state.json (/run/sanbusd: gone at reboot, as that state should be) when sanbusd exits
cleanly (idle or SIGTERM), before it releases its name, and read back (and removed) at the next
start before it owns the name. A corrupt file is set aside with one log line; sanbusd starts
without it.

**Idle exit without losing a call.** Once idle: write the state, release the name (a call sent
after that activates a new sanbusd), answer the calls that were already on their way (the bus
delivered them before the reply to ReleaseName), write the state again if they changed it, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from .model.ids import HCTL
from .ops.jobs import Job, Jobs
from .persist import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
DBUS = "org.freedesktop.DBus"


# -- systemd: sd_notify and the watchdog --------------------------------------------------------

def notify(text: str) -> None:
    """sd_notify(text) when systemd (or anything else) listens on $NOTIFY_SOCKET."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon as sd
        sd.notify(text)
    except Exception as e:  # noqa: BLE001 - the service still works without it
        log.warning("sd_notify(%s) failed: %s", text.split("=", 1)[0], e)


def watchdog_interval(environ: dict[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises), or None when no watchdog is asked of this process ($WATCHDOG_PID names another)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if owner and owner != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


class Watchdog:
    """WATCHDOG=1 every `interval` seconds, sent from a timer on the event loop: a loop that is
    stuck (a blocking call, an endless callback) stops the pings, and systemd kills and restarts
    the service (WatchdogSec=, Restart=on-failure)."""

    def __init__(self, interval: float, send: Callable[[str], None] = notify) -> None:
        self.interval = interval
        self.send = send
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._ping()

    def _ping(self) -> None:
        self.send("WATCHDOG=1")
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._ping)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


# -- idle ---------------------------------------------------------------------------------------

class IdleTracker:
    """What keeps the daemon up: calls in flight, running jobs, ObjectManager clients (the rule
    in the module's doc). Pure: the clock is given, the jobs are asked for when checking."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self.in_flight = 0
        self.watchers: set[str] = set()     # unique names of ObjectManager clients
        self.last_busy = clock()

    def call_started(self, sender: str, interface: str | None,
                     member: str | None) -> tuple[Callable[[], None], bool]:
        """A call arrived: (the function to call once it is answered, whether its sender is a
        new ObjectManager client to watch)."""
        self.in_flight += 1
        self.last_busy = self.clock()
        new_watcher = False
        if member == "GetManagedObjects" and interface in (OM_IFACE, None) and sender:
            new_watcher = sender not in self.watchers
            self.watchers.add(sender)
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.in_flight -= 1
                self.last_busy = self.clock()
        return release, new_watcher

    def watcher_gone(self, name: str) -> None:
        if name in self.watchers:
            self.watchers.discard(name)
            self.last_busy = self.clock()

    def busy(self, jobs_running: int) -> str:
        """Why the daemon is not idle ("" when it is)."""
        why = []
        if self.in_flight:
            why.append(f"{self.in_flight} calls in flight")
        if jobs_running:
            why.append(f"{jobs_running} jobs running")
        if self.watchers:
            why.append(f"{len(self.watchers)} ObjectManager clients")
        return ", ".join(why)

    def due(self, jobs_running: int) -> float | None:
        """Seconds until the idle exit is due (0: now), None while something holds the daemon
        (the idle time then starts again once nothing does)."""
        now = self.clock()
        if self.busy(jobs_running):
            self.last_busy = now
            return None
        return max(0.0, self.last_busy + self.timeout - now)


class Lifecycle:
    """The idle tracker on the bus: counts calls through the tree's on_call hook, follows the
    ObjectManager clients until they leave the bus, and says when the idle exit is due."""

    def __init__(self, timeout: float, jobs: Jobs) -> None:
        self.tracker = IdleTracker(timeout)
        self.jobs = jobs
        self.bus = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return self.tracker.timeout > 0

    def call_started(self, msg) -> Callable[[], None]:
        """ObjectTree.on_call."""
        release, new_watcher = self.tracker.call_started(msg.sender or "", msg.interface,
                                                         msg.member)
        if new_watcher and self.enabled and self.bus is not None:
            task = asyncio.ensure_future(self._watch(msg.sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return release

    def attach(self, bus) -> None:
        self.bus = bus
        if self.enabled:
            bus.add_message_handler(self._on_message)

    def _rule(self, name: str) -> str:
        return (f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',"
                f"arg0='{name}'")

    async def _bus_call(self, member: str, signature: str, body: list):
        from dbus_fast import Message
        return await self.bus.call(Message(destination=DBUS, path="/org/freedesktop/DBus",
                                           interface=DBUS, member=member, signature=signature,
                                           body=body))

    async def _watch(self, name: str) -> None:
        """Follow `name` until it leaves the bus (it may have left already)."""
        try:
            await self._bus_call("AddMatch", "s", [self._rule(name)])
            reply = await self._bus_call("NameHasOwner", "s", [name])
            if reply.message_type.name == "METHOD_RETURN" and reply.body[0] is False:
                self._gone(name)
        except Exception as e:  # noqa: BLE001 - then it does not hold the daemon
            log.warning("cannot follow the ObjectManager client %s (%s); it does not keep "
                        "sanbusd running", name, e)
            self.tracker.watcher_gone(name)

    def _on_message(self, msg):
        if (msg.message_type.name == "SIGNAL" and msg.member == "NameOwnerChanged"
                and msg.sender == DBUS and msg.signature == "sss" and msg.body[2] == ""
                and msg.body[0] in self.tracker.watchers):
            self._gone(msg.body[0])
        return None

    def _gone(self, name: str) -> None:
        if name not in self.tracker.watchers:
            return
        self.tracker.watcher_gone(name)
        if self.bus is not None and self.bus.connected:
            task = asyncio.ensure_future(self._unwatch(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _unwatch(self, name: str) -> None:
        try:
            await self._bus_call("RemoveMatch", "s", [self._rule(name)])
        except Exception:  # noqa: BLE001 - a leftover match rule costs nothing
            pass

    def busy(self) -> str:
        return self.tracker.busy(self.jobs.running)

    async def wait_idle(self) -> None:
        """Returns once the idle exit is due (never when idle_exit is 0)."""
        if not self.enabled:
            await asyncio.Event().wait()
        poll = min(1.0, self.tracker.timeout / 4)
        while True:
            due = self.tracker.due(self.jobs.running)
            if due is not None and due <= 0:
                return
            await asyncio.sleep(poll if due is None else min(due, poll) or poll)

    async def drained(self, timeout: float) -> bool:
        """Once no call is in flight and no job runs (after the name is released, only calls
        already on their way can come)."""
        deadline = time.monotonic() + timeout
        while self.tracker.in_flight or self.jobs.running:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


# -- state kept across an idle exit -------------------------------------------------------------

def host_identity(host: Any) -> str:
    """What tells a host from another that got its number later (numbers are reused): driver,
    unique_id and, for FC, the port's WWPN."""
    fc = getattr(host, "fc", None)
    return f"{host.driver}:{host.unique_id}:{fc.wwpn if fc is not None else ''}"


def _ref_out(kind: str, key: object) -> list:
    return [kind, list(key) if isinstance(key, tuple) else key]


def _ref_in(item: Any) -> tuple[str, object]:
    kind, key = item
    if kind == "lun":
        return ("lun", HCTL(*(int(x) for x in key)))
    if kind == "host":
        return ("host", int(key))
    raise ValueError(f"unknown job object kind {kind!r}")


def boot_key(sysfs_root: str) -> str:
    """What changes when the kernel the state describes starts over: the boot id for /sys; for
    another tree (the simulated SAN's, laid out afresh with a new directory) that directory's
    inode and change time. /run is emptied at boot anyway; this also covers a simulated SAN."""
    try:
        if os.path.realpath(sysfs_root) == "/sys":
            with open("/proc/sys/kernel/random/boot_id") as f:
                return f.read().strip()
        st = os.stat(sysfs_root)
        return f"{st.st_ino}:{st.st_ctime_ns}"
    except OSError:
        return ""


def snapshot(inventory: Any, rescan_suggested: set[int], jobs: Jobs, boot: str = "") -> dict:
    """What only memory has: JSON-ready."""
    return {
        "version": STATE_VERSION,
        "boot": boot,
        "rescan_suggested": [{"host": n, "id": host_identity(inventory.hosts[n])}
                             for n in sorted(rescan_suggested) if n in inventory.hosts],
        "jobs": [{"number": j.number, "operation": j.operation,
                  "objects": [_ref_out(k, v) for k, v in j.objects],
                  "started_by_uid": j.started_by_uid, "cancelable": j.cancelable,
                  "start_time": j.start_time, "progress": j.progress, "success": j.success,
                  "message": j.message, "finished_at": j.finished_at}
                 for j in sorted(jobs.jobs.values(), key=lambda j: j.number) if j.finished],
        "next_job": jobs.next_number(),
    }


def parse(data: Any) -> tuple[list[tuple[int, str]], list[Job], int]:
    """(hosts that had RescanSuggested with their identity, finished jobs, next job number)
    from a snapshot; ValueError when it is not one."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError("not a sanbusd state file of version "
                         f"{STATE_VERSION}")
    try:
        hosts = [(int(h["host"]), str(h["id"])) for h in data["rescan_suggested"]]
        jobs = []
        for j in data["jobs"]:
            job = Job(int(j["number"]), str(j["operation"]),
                      [_ref_in(o) for o in j["objects"]], int(j["started_by_uid"]),
                      bool(j["cancelable"]), start_time=int(j["start_time"]),
                      progress=float(j["progress"]), finished=True, success=bool(j["success"]),
                      message=str(j["message"]), finished_at=float(j["finished_at"]))
            jobs.append(job)
        next_job = int(data["next_job"])
        str(data["boot"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed ({type(e).__name__}: {e})") from None
    return hosts, jobs, next_job


class RunState:
    """RUN_DIR/state.json: written at a clean exit, read back (and removed) at start."""

    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / STATE_FILE
        self.written: dict | None = None

    def save(self, data: dict) -> bool:
        if data == self.written:
            return True
        try:
            write_json(self.path, data)
        except OSError as e:
            log.warning("cannot keep RescanSuggested and finished jobs across the exit: "
                        "writing %s failed (%s)", self.path, e.strerror or e)
            return False
        self.written = data
        return True

    def take(self) -> dict | None:
        """The state the last sanbusd left (None: none, or unusable - then said in the log and
        set aside as state.json.corrupt), removing the file so it is never read twice."""
        try:
            data = read_json(self.path)
        except (ValueError, OSError) as e:
            self._set_aside(str(e) if isinstance(e, ValueError) else
                            f"{self.path} cannot be read ({e.strerror or e})")
            return None
        if data is None:
            return None
        try:
            parse(data)
        except ValueError as e:
            self._set_aside(f"{self.path} is corrupt ({e})")
            return None
        try:
            self.path.unlink()
        except OSError:
            pass
        return data

    def _set_aside(self, why: str) -> None:
        log.warning("%s; starting without the RescanSuggested hints and finished jobs it "
                    "kept across the last exit", why)
        try:
            os.replace(self.path, self.path.with_name(STATE_FILE + ".corrupt"))
        except OSError:
            pass


def restore(data: dict, inventory: Any, suggest: Callable[[set[int]], None],
            jobs: Jobs, boot: str = "") -> str:
    """Put a snapshot back: RescanSuggested on the hosts that are still the same hosts, the
    finished jobs still in their retention time; nothing from another boot (or another layout
    of the simulated SAN). What came back, for the log."""
    hosts, finished, next_job = parse(data)
    if data["boot"] != boot:
        return "nothing: it was written before the kernel (or simulated SAN) started over"
    same = {n for n, ident in hosts
            if n in inventory.hosts and host_identity(inventory.hosts[n]) == ident}
    if same:
        suggest(same)
    back = jobs.restore(finished, next_job)
    return (f"RescanSuggested on {len(same)} of {len(hosts)} hosts, "
            f"{len(back)} of {len(finished)} finished jobs")
