"""Discover new SAN storage: scan SCSI hosts and answer with the LUN paths that appeared.

Lessons built in:
- Targeted scans never write a wildcard: "the LUNs are 27, 28, 29 and 53" becomes one "C T L" per
  online FC target port (fc_remote_ports with scsi_target_id >= 0) or known target, per LUN, in
  plain decimal, because the kernel parses base 0 ("010" is 8). os-brick learned that wildcards
  attach LUNs nobody asked for.
- A `scan` write blocks its host for as long as the scan takes and cannot be cancelled. Hosts
  are scanned in parallel on a bounded pool, one write per host at a time; a caller's timeout
  bounds the *wait*, never the write. A host whose write is still running answers a later scan by
  waiting for it, or with Busy — threads never pile up.
- A successful write does not mean a LUN appeared: what appeared is read back from sysfs, and the
  call returns once those LUNs' objects are on the bus (udisks' "wait for object").
- A LUN path being deleted while a scan of its host runs could be added right back by that scan:
  `is_scanning` lets the delete answer Busy instead.

No D-Bus here: hosts are numbers, LUN paths HCTLs; the API layer turns them into object paths.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable

from .. import errors
from ..backend.base import Backend
from ..config import Settings
from ..model.ids import HCTL
from ..model.records import Dirty
from ..state import State
from .jobs import Job, Jobs

log = logging.getLogger(__name__)

# Limits, documented in the XML contract (ScsiHost.Scan).
MAX_LUN = 16383             # flat-space addressing; larger numbers need the array's encoding
MAX_LUNS_PER_CALL = 4096
MAX_CHANNEL = 255
MAX_TARGET = 65535


@dataclass(frozen=True, slots=True)
class ScanRequest:
    hosts: tuple[int, ...]
    luns: tuple[int, ...] | None
    channel: int | None
    target: int | None
    timeout: int


def scan_request(settings: Settings, hosts: tuple[int, ...], luns: list[int] | None = None,
                 channel: int | None = None, target: int | None = None,
                 timeout: int | None = None) -> ScanRequest:
    """Validate what a caller asked for (types were checked by the dispatcher)."""
    if luns is not None:
        if not luns:
            raise errors.InvalidArgument("luns is empty: give the LUN numbers to look for "
                                         "(e.g. [27, 28, 29, 53]) or leave the option out to "
                                         "scan for everything")
        if len(luns) > MAX_LUNS_PER_CALL:
            raise errors.InvalidArgument(f"{len(luns)} LUNs in one call; at most "
                                         f"{MAX_LUNS_PER_CALL}")
        bad = [n for n in luns if not 0 <= n <= MAX_LUN]
        if bad:
            raise errors.InvalidArgument(
                f"LUN {bad[0]} is out of range: give LUN numbers 0-{MAX_LUN} as the storage "
                "team lists them")
    if channel is not None and not 0 <= channel <= MAX_CHANNEL:
        raise errors.InvalidArgument(f"channel {channel} is out of range (0-{MAX_CHANNEL})")
    if target is not None and not 0 <= target <= MAX_TARGET:
        raise errors.InvalidArgument(f"target {target} is out of range (0-{MAX_TARGET})")
    timeout = settings.scan_timeout if timeout is None else timeout
    if not 1 <= timeout <= settings.scan_max_timeout:
        raise errors.InvalidArgument(f"timeout {timeout} s is out of range "
                                     f"(1-{settings.scan_max_timeout})")
    if not hosts:
        raise errors.InvalidArgument("hosts is empty: name host objects, or leave the option "
                                     "out to scan all hosts")
    return ScanRequest(tuple(sorted(set(hosts))),
                       None if luns is None else tuple(sorted(set(luns))), channel, target,
                       timeout)


def plan_host(req: ScanRequest, fc: bool, fc_targets: list[tuple[int, int]],
              known_targets: list[tuple[int, int]]
              ) -> list[tuple[int | None, int | None, int | None]]:
    """The exact (channel, target, lun) scans of one host, None meaning "all". `fc_targets` are
    (channel, scsi_target_id) of Online target rports; `known_targets` the (channel, id) of
    existing SCSI targets. With LUN numbers there is never a wildcard."""
    if req.luns is None:
        return [(req.channel, req.target, None)]
    targets = fc_targets if fc else known_targets
    targets = sorted({(c, t) for c, t in targets
                      if (req.channel is None or c == req.channel)
                      and (req.target is None or t == req.target)})
    return [(c, t, lun) for c, t in targets for lun in req.luns]


@dataclass(slots=True)
class HostOutcome:
    host: int
    error: errors.SanError | None = None
    skipped: bool = False


class Scanner:
    def __init__(self, backend: Backend, state: State, jobs: Jobs, settings: Settings) -> None:
        self.backend = backend
        self.state = state
        self.jobs = jobs
        self.settings = settings
        self._executor = ThreadPoolExecutor(settings.scan_parallel_hosts,
                                            thread_name_prefix="scan")
        self._slots = asyncio.Semaphore(settings.scan_parallel_hosts)
        self._writes: dict[int, asyncio.Future] = {}           # host -> the kernel write running
        self._inflight: dict[ScanRequest, asyncio.Future] = {}
        # Told after each scan which hosts the kernel scanned, and which of them with a
        # wildcard (e.g. to refresh libvirt's storage pools; see daemon.build).
        self.after_scan: Callable[[set[int], set[int]], Awaitable[None]] | None = None

    async def scan(self, req: ScanRequest, uid: int) -> list[HCTL]:
        """Run (or join an identical running) scan; the LUN paths that appeared."""
        shared = self._inflight.get(req)
        if shared is None:
            shared = asyncio.ensure_future(self._run(req, uid))
            self._inflight[req] = shared
            shared.add_done_callback(lambda _f: self._inflight.pop(req, None))
        return await asyncio.shield(shared)

    def is_scanning(self, host: int) -> bool:
        """Is a scan of `host` under way (requested, or still running in the kernel)?"""
        running = self._writes.get(host)
        return (running is not None and not running.done()) or any(
            host in req.hosts for req in self._inflight)

    # -- the kernel side ----------------------------------------------------------------------

    def _targets(self, host: int) -> tuple[bool, list[tuple[int, int]], list[tuple[int, int]]]:
        """What a targeted scan of `host` may address, fresh from sysfs (worker thread)."""
        try:
            return self.backend.reader.scan_targets(host)
        except KeyError:
            raise errors.NotFound(f"host{host} is gone") from None

    async def _write(self, host: int, ctl: tuple[int | None, int | None, int | None],
                     deadline: float) -> None:
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
        fut = loop.run_in_executor(self._executor, self.backend.scan_host, host, *ctl)
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
            raise errors.from_errno(e, f"host{host}: scan {format_ctl(ctl)!r} was refused") from None

    async def _scan_host(self, req: ScanRequest, host: int, job: Job,
                         deadline: float) -> HostOutcome:
        async with self._slots:
            if job.cancelled.is_set():
                return HostOutcome(host, skipped=True)
            try:
                fc, fc_targets, known = await asyncio.to_thread(self._targets, host)
                for ctl in plan_host(req, fc, fc_targets, known):
                    await self._write(host, ctl, deadline)
                    if job.cancelled.is_set():
                        break
            except errors.SanError as e:
                return HostOutcome(host, error=e)
        return HostOutcome(host)

    # -- one scan request ---------------------------------------------------------------------

    async def _run(self, req: ScanRequest, uid: int) -> list[HCTL]:
        jobs = self.jobs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.timeout
        job = jobs.start("scan", [("host", h) for h in req.hosts], uid)
        reader = self.backend.reader
        before = set(await asyncio.to_thread(reader.lun_ids))
        done = 0

        async def one(host: int) -> HostOutcome:
            nonlocal done
            outcome = await self._scan_host(req, host, job, deadline)
            done += 1
            jobs.progress(job, done / len(req.hosts))
            return outcome

        tasks = [asyncio.ensure_future(one(h)) for h in req.hosts]
        cancel_wait = asyncio.ensure_future(job.cancelled.wait())
        while not all(t.done() for t in tasks) and not job.cancelled.is_set():
            await asyncio.wait([*tasks, cancel_wait], return_when=asyncio.FIRST_COMPLETED)
        cancel_wait.cancel()

        scanned = set(req.hosts)
        after = set(await asyncio.to_thread(reader.lun_ids))
        added = sorted(h for h in after - before if h.host in scanned)
        # Publish from sysfs now rather than wait on udev alone; udev's events refresh again.
        self.state.pump.feed_dirty(Dirty.of(luns=added))
        await self.settle(added, deadline)
        # Only a host the kernel really scanned has answered the suggestion: not one whose scan
        # string it refused, that is still scanning (TimedOut) or that a Cancel skipped.
        scanned_ok = {o.host for t in tasks if t.done() and not t.cancelled()
                      and t.exception() is None and (o := t.result()).error is None
                      and not o.skipped}
        self.state.clear_rescan_suggested(scanned_ok)
        if self.after_scan is not None and scanned_ok:
            await self.after_scan(scanned_ok, scanned_ok if req.luns is None else set())

        if job.cancelled.is_set():
            outcomes = [t.result() for t in tasks if t.done()]
            for t in tasks:
                if not t.done():
                    t.add_done_callback(lambda f: f.cancelled() or f.exception())
            msg = (f"scan cancelled after {len(outcomes)} of {len(req.hosts)} hosts; "
                   f"{len(added)} LUN paths appeared")
            jobs.finish(job, False, msg)
            raise errors.Cancelled(msg)
        failures = [o for t in tasks if (o := t.result()).error is not None]
        if failures:
            first = failures[0].error
            timed_out = [o for o in failures if isinstance(o.error, errors.TimedOut)]
            cls = errors.TimedOut if timed_out else type(first)
            detail = "; ".join(o.error.message for o in failures if o.error is not None)
            msg = (f"{detail}. {len(added)} LUN paths appeared on the other hosts"
                   + (": " + ", ".join(map(str, added)) if added else ""))
            jobs.finish(job, False, msg)
            raise cls(msg)
        jobs.finish(job, True, f"{len(added)} LUN paths appeared")
        log.info("scan of %s (luns %s) added %d LUN paths", [f"host{h}" for h in req.hosts],
                 "all" if req.luns is None else list(req.luns), len(added))
        return added

    async def settle(self, new: list[HCTL], deadline: float) -> None:
        """Until every new LUN is published, and a disk has its block device, set up by udev
        (so /dev/disk/by-id links exist when the caller hands it to a VM)."""
        state, backend = self.state, self.backend

        def settled() -> bool:
            luns = state.inventory.luns
            for hctl in new:
                lun = luns.get(hctl)
                if lun is None:
                    return False
                if lun.type == 0 and not (lun.block and backend.block_ready(lun.block)):
                    return False
            return True
        if not new:
            return
        bound = max(1.0, min(self.settings.settle_timeout,
                             deadline - asyncio.get_running_loop().time()))
        if not await state.wait_for(settled, bound):
            log.warning("scan: %d new LUNs not settled after %.0f s", len(new), bound)


def format_ctl(ctl: tuple[int | None, int | None, int | None]) -> str:
    return " ".join("-" if v is None else str(v) for v in ctl)
