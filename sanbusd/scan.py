"""Discover new SAN storage: scan SCSI hosts and answer with the LUN paths that appeared.

Lessons built in (shared/reference/kernel-san.md):
- Targeted scans never write a wildcard: "the LUNs are 27, 28, 29 and 53" becomes one "C T L" per
  online FC target port (fc_remote_ports with scsi_target_id >= 0) or known target, per LUN, in
  plain decimal, because the kernel parses base 0 ("010" is 8). os-brick learned that wildcards
  attach LUNs nobody asked for (P1).
- A `scan` write blocks its host for as long as the scan takes and cannot be cancelled (P2). Hosts
  are scanned in parallel on a bounded pool, one write per host at a time; a caller's timeout
  bounds the *wait*, never the write. A host whose write is still running answers a later scan by
  waiting for it, or with Busy — threads never pile up.
- A successful write does not mean a LUN appeared: what appeared is read back from sysfs, and the
  call returns once those LUNs' objects are on the bus (udisks' "wait for object").
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors, paths
from .kernel.formats import HCTL, parse_target_name
from .kernel.sysfs import Dirty

if TYPE_CHECKING:
    from .daemon import Daemon
    from .jobs import Job

log = logging.getLogger(__name__)

MAX_LUN = 16383             # flat-space addressing; larger numbers need the array's encoding
MAX_LUNS_PER_CALL = 4096
MAX_CHANNEL = 255
MAX_TARGET = 65535
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 3600
SETTLE_TIMEOUT = 20.0       # udisks' UDISKS_DEFAULT_WAIT_TIMEOUT
MAX_PARALLEL_HOSTS = 16     # VDSM's fc-scan uses min(64, ncpu) workers; sysfs writes mostly wait

SCAN_OPTIONS = {"luns": "at", "channel": "u", "target": "u", "timeout": "u"}
SCAN_ALL_OPTIONS = {**SCAN_OPTIONS, "hosts": "ao"}


@dataclass(frozen=True, slots=True)
class ScanRequest:
    hosts: tuple[int, ...]
    luns: tuple[int, ...] | None
    channel: int | None
    target: int | None
    timeout: int


def request_from_options(options: dict[str, Any], known_hosts: set[int],
                         host: int | None = None) -> ScanRequest:
    """Validate a Scan/ScanAll call's options (types were checked by the dispatcher)."""
    luns = None
    if "luns" in options:
        raw = options["luns"]
        if not raw:
            raise errors.InvalidArgument("luns is empty: give the LUN numbers to look for "
                                         "(e.g. [27, 28, 29, 53]) or leave the option out to "
                                         "scan for everything")
        if len(raw) > MAX_LUNS_PER_CALL:
            raise errors.InvalidArgument(f"{len(raw)} LUNs in one call; at most "
                                         f"{MAX_LUNS_PER_CALL}")
        bad = [n for n in raw if n > MAX_LUN]
        if bad:
            raise errors.InvalidArgument(
                f"LUN {bad[0]} is out of range: give LUN numbers 0-{MAX_LUN} as the storage "
                "team lists them")
        luns = tuple(sorted(set(raw)))
    channel = options.get("channel")
    if channel is not None and channel > MAX_CHANNEL:
        raise errors.InvalidArgument(f"channel {channel} is out of range (0-{MAX_CHANNEL})")
    target = options.get("target")
    if target is not None and target > MAX_TARGET:
        raise errors.InvalidArgument(f"target {target} is out of range (0-{MAX_TARGET})")
    timeout = options.get("timeout", DEFAULT_TIMEOUT)
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise errors.InvalidArgument(f"timeout {timeout} s is out of range (1-{MAX_TIMEOUT})")
    if host is not None:
        hosts: tuple[int, ...] = (host,)
    elif "hosts" in options:
        if not options["hosts"]:
            raise errors.InvalidArgument("hosts is empty: name host objects, or leave the "
                                         "option out to scan all hosts")
        chosen = []
        for p in options["hosts"]:
            parsed = paths.parse(p)
            if parsed is None or parsed[0] != "host" or parsed[1] not in known_hosts:
                raise errors.NotFound(f"no SCSI host at {p[:120]}; `sanctl status` lists them")
            chosen.append(parsed[1])
        hosts = tuple(sorted(set(chosen)))  # type: ignore[arg-type]
    else:
        hosts = tuple(sorted(known_hosts))
    return ScanRequest(hosts, luns, channel, target, timeout)


def plan_host(req: ScanRequest, fc: bool, fc_targets: list[tuple[int, int]],
              known_targets: list[tuple[int, int]]) -> list[str]:
    """The exact strings to write to hostN/scan. `fc_targets` are (channel, scsi_target_id) of
    Online target rports; `known_targets` the (channel, id) of existing SCSI targets."""
    def fmt(v: int | None) -> str:
        return "-" if v is None else str(v)

    if req.luns is None:
        return [f"{fmt(req.channel)} {fmt(req.target)} -"]
    targets = fc_targets if fc else known_targets
    targets = sorted({(c, t) for c, t in targets
                      if (req.channel is None or c == req.channel)
                      and (req.target is None or t == req.target)})
    return [f"{c} {t} {lun}" for c, t in targets for lun in req.luns]


@dataclass(slots=True)
class HostOutcome:
    host: int
    error: errors.SanError | None = None
    skipped: bool = False


class Scanner:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self._executor = ThreadPoolExecutor(MAX_PARALLEL_HOSTS, thread_name_prefix="scan")
        self._slots = asyncio.Semaphore(MAX_PARALLEL_HOSTS)
        self._writes: dict[int, asyncio.Future] = {}           # host -> the kernel write running
        self._inflight: dict[ScanRequest, asyncio.Future] = {}

    async def scan(self, req: ScanRequest, uid: int) -> list[str]:
        """Run (or join an identical running) scan; the LUN paths that appeared."""
        shared = self._inflight.get(req)
        if shared is None:
            shared = asyncio.ensure_future(self._run(req, uid))
            self._inflight[req] = shared
            shared.add_done_callback(lambda _f: self._inflight.pop(req, None))
        return await asyncio.shield(shared)

    # -- the kernel side ----------------------------------------------------------------------

    def _targets(self, host: int) -> tuple[bool, list[tuple[int, int]], list[tuple[int, int]]]:
        """Read, fresh from sysfs, what a targeted scan of `host` may address (worker thread)."""
        reader = self.daemon.kernel.reader
        h = reader.read_host(host)
        if h is None:
            raise errors.NotFound(f"host{host} is gone")
        fc_targets = []
        for name in reader.rport_names():
            if name.startswith(f"rport-{host}:"):
                r = reader.read_rport(name)
                if r is not None and r.port_state == "Online" and r.scsi_target_id >= 0:
                    fc_targets.append((r.channel, r.scsi_target_id))
        known = []
        for entry in os.listdir(os.path.join(reader.root, "bus", "scsi", "devices")):
            t = parse_target_name(entry)
            if t is not None and t[0] == host:
                known.append((t[1], t[2]))
        return h.transport == "fc", fc_targets, known

    async def _write(self, host: int, line: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        running = self._writes.get(host)
        if running is not None and not running.done():
            try:
                await asyncio.wait_for(asyncio.shield(running), deadline - loop.time())
            except asyncio.TimeoutError:
                raise errors.Busy(f"host{host} is still busy with an earlier scan that the "
                                  "kernel has not finished; try again later") from None
            except Exception:  # noqa: BLE001 - the earlier scan's failure is its caller's
                pass
        path = f"class/scsi_host/host{host}/scan"
        fut = loop.run_in_executor(self._executor, self.daemon.kernel.write, path, line)
        # Nobody may be left awaiting it (the caller timed out): keep its outcome quiet.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._writes[host] = fut
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise errors.TimedOut(
                f"host{host}: the scan did not finish in time; the kernel goes on scanning "
                "this host (a scan cannot be stopped) and its LUNs will still appear") from None
        except OSError as e:
            raise errors.from_errno(e, f"host{host}: scan {line!r} was refused") from None

    async def _scan_host(self, req: ScanRequest, host: int, job: "Job",
                         deadline: float) -> HostOutcome:
        async with self._slots:
            if job.cancelled.is_set():
                return HostOutcome(host, skipped=True)
            try:
                fc, fc_targets, known = await asyncio.to_thread(self._targets, host)
                for line in plan_host(req, fc, fc_targets, known):
                    await self._write(host, line, deadline)
                    if job.cancelled.is_set():
                        break
            except errors.SanError as e:
                return HostOutcome(host, error=e)
        return HostOutcome(host)

    # -- one scan request ---------------------------------------------------------------------

    async def _run(self, req: ScanRequest, uid: int) -> list[str]:
        d = self.daemon
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.timeout
        job = d.jobs.start("scan", [paths.host(h) for h in req.hosts], uid)
        reader = d.kernel.reader
        before = set(await asyncio.to_thread(reader.lun_ids))
        done = 0

        async def one(host: int) -> HostOutcome:
            nonlocal done
            outcome = await self._scan_host(req, host, job, deadline)
            done += 1
            d.jobs.progress(job, done / len(req.hosts))
            return outcome

        tasks = [asyncio.ensure_future(one(h)) for h in req.hosts]
        cancel_wait = asyncio.ensure_future(job.cancelled.wait())
        while not all(t.done() for t in tasks) and not job.cancelled.is_set():
            await asyncio.wait([*tasks, cancel_wait], return_when=asyncio.FIRST_COMPLETED)
        cancel_wait.cancel()

        scanned = set(req.hosts)
        after = set(await asyncio.to_thread(reader.lun_ids))
        new = sorted(h for h in after - before if h.host in scanned)
        added = [paths.lun(h) for h in new]
        # Publish from sysfs now rather than wait on udev alone; udev's events refresh again.
        d.pump.feed_dirty(Dirty(luns=set(new)))
        await self._settle(new, deadline)
        # Only a host the kernel really scanned has answered the suggestion: not one whose scan
        # string it refused, that is still scanning (TimedOut) or that a Cancel skipped.
        d.publisher.clear_rescan_suggested(
            {o.host for t in tasks if t.done() and not t.cancelled() and t.exception() is None
             and (o := t.result()).error is None and not o.skipped})

        if job.cancelled.is_set():
            outcomes = [t.result() for t in tasks if t.done()]
            for t in tasks:
                if not t.done():
                    t.add_done_callback(lambda f: f.cancelled() or f.exception())
            msg = (f"scan cancelled after {len(outcomes)} of {len(req.hosts)} hosts; "
                   f"{len(added)} LUN paths appeared")
            d.jobs.finish(job, False, msg)
            raise errors.Cancelled(msg)
        failures = [o for t in tasks if (o := t.result()).error is not None]
        if failures:
            first = failures[0].error
            timed_out = [o for o in failures if isinstance(o.error, errors.TimedOut)]
            cls = errors.TimedOut if timed_out else type(first)
            detail = "; ".join(o.error.message for o in failures if o.error is not None)
            msg = (f"{detail}. {len(added)} LUN paths appeared on the other hosts"
                   + (": " + ", ".join(added) if added else ""))
            d.jobs.finish(job, False, msg)
            raise cls(msg)
        d.jobs.finish(job, True, f"{len(added)} LUN paths appeared")
        log.info("scan of %s (luns %s) added %d LUN paths", [f"host{h}" for h in req.hosts],
                 "all" if req.luns is None else list(req.luns), len(added))
        return added

    async def _settle(self, new: list[HCTL], deadline: float) -> None:
        """Until every new LUN is an object on the bus, and a disk has its block device, set up
        by udev (so /dev/disk/by-id links exist when the caller hands it to a VM)."""
        tree = self.daemon.tree
        kernel = self.daemon.kernel
        want = [paths.lun(h) for h in new]

        def settled() -> bool:
            for p in want:
                obj = tree.objects.get(p)
                if obj is None:
                    return False
                lun = obj["org.example.SanStorage.Lun"]
                if lun["Type"].value == 0 and not (
                        lun["BlockDevice"].value
                        and kernel.block_ready(lun["BlockDevice"].value[len("/dev/"):])):
                    return False
            return True
        if not want:
            return
        bound = max(1.0, min(SETTLE_TIMEOUT, deadline - asyncio.get_running_loop().time()))
        if not await self.daemon.publisher.wait_for(settled, bound):
            log.warning("scan: %d new LUNs not settled on the bus after %.0f s", len(want),
                        bound)
