"""NPIV virtual HBAs: create, delete, keep across restarts.

What users of libvirt run into, and what is done about it here:
- Host numbers change across reboots: parents are named (and records keyed) by WWNN/WWPN.
- A vHBA's LUNs show up seconds after vport_create returns: the create waits for the fabric
  login and then scans the new host itself, so the call returns once the LUNs are objects.
- vHBAs do not survive a reboot: `persistent` ones are recorded (persist.py, atomic) and
  re-created when sanbusd starts.
- A failed create must not leave a vport behind: it is deleted again unless the caller asked to
  keep it. Creates on one parent are serialized, so its max_npiv_vports is never overrun by us.
No D-Bus here: parents are host numbers, vHBAs are identified by their WWPN.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import errors, persist
from ..backend.base import Backend
from ..config import Settings
from ..model.records import Dirty, Inventory, Vport
from ..state import State
from .jobs import Jobs
from .scan import Scanner, scan_request

log = logging.getLogger(__name__)

FAILED_STATES = {
    "No Fabric Support": (errors.NotSupported, "the fabric does not support NPIV (or there is no "
                          "switch on this link): zone the port on an NPIV-enabled switch"),
    "Fabric Rejected WWN": (errors.AlreadyExists, "another port on the fabric already uses this "
                            "WWPN: choose another WWPN, or leave it out to have one generated"),
}
RECORDS_FILE = "vhbas.json"


@dataclass(frozen=True)
class VhbaRecord:
    wwpn: str
    wwnn: str
    parent_wwnn: str
    parent_wwpn: str


@dataclass
class RecordStatus:
    status: str = "present"         # present | re-created | failed
    message: str = ""


@dataclass(frozen=True)
class CreateRequest:
    parent: int
    wwpn: str
    wwnn: str
    persistent: bool = False
    wait: int = 30
    wait_luns: bool = True
    keep_failed: bool = False


class VhbaRecords:
    """The persistent vHBAs, in STATE_DIR/vhbas.json. A file that cannot be read is never
    overwritten: persistence is then refused until an administrator looks at it."""

    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / RECORDS_FILE
        self.records: dict[str, VhbaRecord] = {}
        self.status: dict[str, RecordStatus] = {}
        self.broken = ""

    def load(self) -> None:
        try:
            data = persist.read_json(self.path)
            if data is None:
                return
            for item in data.get("vhbas", []):
                r = VhbaRecord(**{k: str(item[k]) for k in
                                  ("wwpn", "wwnn", "parent_wwnn", "parent_wwpn")})
                self.records[r.wwpn] = r
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:
            self.broken = (f"{self.path} cannot be used ({e}); persistent vHBAs are not "
                           "re-created and no record is changed until it is fixed or removed")
            log.error("%s", self.broken)

    def _save(self, records: dict[str, VhbaRecord]) -> None:
        if self.broken:
            raise errors.Failed(self.broken)
        try:
            persist.write_json(self.path, {"vhbas": [asdict(r) for r in records.values()]})
        except OSError as e:
            raise errors.Failed(f"cannot write {self.path} ({e.strerror}); check the state "
                                "directory") from None
        self.records = records

    def add(self, r: VhbaRecord) -> None:
        self._save({**self.records, r.wwpn: r})
        self.status[r.wwpn] = RecordStatus()

    def remove(self, wwpn: str) -> None:
        if wwpn in self.records:
            self._save({k: v for k, v in self.records.items() if k != wwpn})
        self.status.pop(wwpn, None)


class VhbaOps:
    def __init__(self, backend: Backend, state: State, scanner: Scanner, jobs: Jobs,
                 settings: Settings, records: VhbaRecords, libvirt=None,
                 on_records: Callable[[], None] = lambda: None) -> None:
        self.backend = backend
        self.state = state
        self.scanner = scanner
        self.jobs = jobs
        self.settings = settings
        self.records = records
        self.libvirt = libvirt
        self.on_records = on_records        # the records or their status changed
        self._parent_locks: dict[int, asyncio.Lock] = {}

    # -- choosing and checking ------------------------------------------------------------------

    def choose_parent(self, inv: Inventory, host: int | None = None,
                      parent_wwnn: str | None = None, parent_wwpn: str | None = None,
                      fabric_wwn: str | None = None) -> int:
        if (parent_wwnn is None) != (parent_wwpn is None):
            raise errors.InvalidArgument("give both parent_wwnn and parent_wwpn, or neither")
        if host is not None:
            return self._check_parent(inv, host)
        if parent_wwpn is not None:
            for h in inv.hosts.values():
                if h.fc is not None and (h.fc.wwnn, h.fc.wwpn) == (parent_wwnn, parent_wwpn):
                    return self._check_parent(inv, h.number)
            raise errors.NotFound(f"no FC port with WWNN {parent_wwnn} and WWPN {parent_wwpn}; "
                                  "`sanctl status` lists the ports")
        candidates = [h for h in sorted(inv.hosts.values(), key=lambda h: h.number)
                      if h.fc is not None and h.fc.npiv_capable and not h.vport
                      and h.fc.port_state == "Online"
                      and (fabric_wwn is None or h.fc.fabric_name == fabric_wwn)]
        if not candidates:
            where = f"on fabric {fabric_wwn}" if fabric_wwn else "on this machine"
            raise errors.NotFound(f"no Online NPIV-capable FC port {where}")
        roomy = [h for h in candidates if h.fc.vports_in_use < h.fc.max_vports]  # type: ignore[union-attr]
        if not roomy:
            raise errors.NoSpace("every NPIV-capable port is at its max_npiv_vports; delete a "
                                 "vHBA first")
        return roomy[0].number

    def _check_parent(self, inv: Inventory, host: int) -> int:
        h = inv.hosts.get(host)
        if h is None:
            raise errors.NotFound(f"host{host} is gone")
        if h.fc is None:
            raise errors.InvalidArgument(f"host{host} is not an FC port ({h.transport}); NPIV "
                                         "needs an FC HBA")
        if not h.fc.npiv_capable or h.vport:
            raise errors.InvalidArgument(
                f"host{host} cannot create vHBAs ({'it is a vHBA itself' if h.vport else 'its driver has no NPIV'})")
        if h.fc.vports_in_use >= h.fc.max_vports:
            raise errors.NoSpace(f"host{host} has {h.fc.vports_in_use} of {h.fc.max_vports} "
                                 "vHBAs (max_npiv_vports); delete one first")
        return host

    @staticmethod
    def wwns_in_use(inv: Inventory) -> set[str]:
        out = set()
        for h in inv.hosts.values():
            if h.fc is not None:
                out |= {h.fc.wwpn, h.fc.wwnn}
        for v in inv.vports.values():
            out |= {v.wwpn, v.wwnn}
        for r in inv.rports.values():
            out |= {r.wwpn, r.wwnn}
        return out - {""}

    def generate_wwn(self, taken: set[str]) -> str:
        while True:
            wwn = "5" + self.settings.vhba_oui + secrets.token_hex(5)[:9]
            if wwn not in taken:
                return wwn

    # -- create ---------------------------------------------------------------------------------

    def find(self, wwpn: str, inv: Inventory | None = None) -> Vport | None:
        inv = inv or self.state.inventory
        return next((v for v in inv.vports.values() if v.wwpn == wwpn), None)

    async def create(self, req: CreateRequest, uid: int) -> str:
        """The new vHBA's WWPN, once it is on the bus (and, with wait_luns, its LUNs)."""
        inv = self.state.inventory
        if req.wwpn in self.wwns_in_use(inv):
            raise errors.AlreadyExists(f"WWPN {req.wwpn} is already a port here; choose another, "
                                       "or leave wwpn out to have one generated")
        if req.persistent and self.records.broken:
            # Nothing is made that could not be recorded.
            raise errors.Failed(self.records.broken)
        job = self.jobs.start("vhba-create", [("host", req.parent)], uid, cancelable=False)
        try:
            wwpn = await self._create(req, uid)
        except errors.SanError as e:
            self.jobs.finish(job, False, e.message)
            raise
        self.jobs.finish(job, True, f"vHBA {wwpn} created")
        return wwpn

    async def _create(self, req: CreateRequest, uid: int = 0) -> str:
        self._check_parent(self.state.inventory, req.parent)
        # One write at a time per parent: the kernel counts vports under its own lock, and
        # answers ENOSPC (NoSpace) at max_npiv_vports; no write of ours races another's.
        lock = self._parent_locks.setdefault(req.parent, asyncio.Lock())
        async with lock:
            await self._kernel_create(req.parent, req.wwpn, req.wwnn)
        self.state.pump.feed_dirty(Dirty.of(hosts={req.parent}))
        deadline = time.monotonic() + req.wait
        v = await self._wait_login(req.wwpn, req.parent, deadline)
        if v is None or v.state != "Active":
            state = "Initializing" if v is None else v.state
            err = self._login_error(req, state)
            if req.keep_failed and v is not None:
                # As asked (keep_failed): the caller sees the state; nothing is wrong here.
                log.info("vHBA %s on host%d did not log in to the fabric (%s); kept",
                            req.wwpn, req.parent, state)
            else:
                # The caller gets the error; the daemon itself is fine.
                log.info("vHBA %s on host%d did not log in to the fabric (%s); deleting it "
                         "again", req.wwpn, req.parent, state)
                await self._cleanup(req, v)
                raise err
        elif req.wait_luns and v.host is not None:
            await self._wait_luns(v.host, deadline, uid)
        if req.persistent:
            parent = self.state.inventory.hosts.get(req.parent)
            assert parent is not None and parent.fc is not None
            try:
                self.records.add(VhbaRecord(req.wwpn, req.wwnn, parent.fc.wwnn,
                                            parent.fc.wwpn))
            except errors.SanError:
                # A vHBA asked to be persistent that cannot be recorded is not left behind.
                log.info("vHBA %s could not be recorded; deleting it again", req.wwpn)
                await self._cleanup(req, v)
                raise
            self.on_records()
        log.info("vHBA %s (WWNN %s) on host%d: %s", req.wwpn, req.wwnn, req.parent,
                 v.state if v else "Initializing")
        return req.wwpn

    async def _wait_luns(self, host: int, deadline: float, uid: int) -> None:
        """The LUNs zoned to a new vHBA: the kernel scans its new target ports by itself, and
        may be done before we look; a scan of the new host (it sees only what is zoned to it)
        waits for that, then everything the host has is re-read and settled."""
        remaining = max(1, int(deadline - time.monotonic()) + 1)
        try:
            await self.scanner.scan(scan_request(self.settings, (host,), timeout=min(
                remaining, self.settings.scan_max_timeout)), uid)
        except errors.SanError as e:
            log.warning("host%d (a new vHBA): scanning it failed: %s", host, e.message)
        await self.state.pump.sync(Dirty.of(hosts={host}))
        luns = [k for k in self.state.inventory.luns if k.host == host]
        await self.scanner.settle(luns, max(deadline, time.monotonic() + 1))

    @staticmethod
    def _login_error(req: CreateRequest, state: str) -> errors.SanError:
        if state == "Initializing":
            return errors.TimedOut(f"vHBA {req.wwpn} did not finish its fabric login within "
                                   f"{req.wait} s; give a longer wait, or keep_failed=true to look "
                                   "at it")
        cls, hint = FAILED_STATES.get(state, (errors.Failed, "check the port's link and zoning"))
        return cls(f"vHBA {req.wwpn} did not log in to the fabric: {state}; {hint}. "
                   + ("It was kept (keep_failed)." if req.keep_failed else
                      "It was deleted again (keep_failed=true keeps it)."))

    async def _kernel_create(self, parent: int, wwpn: str, wwnn: str) -> None:
        inv = self.state.inventory
        h = inv.hosts[parent]
        try:
            if self.libvirt is not None:
                await asyncio.to_thread(self.libvirt.create_vport, parent, h.fc.wwnn,  # type: ignore[union-attr]
                                        h.fc.wwpn, wwpn, wwnn)  # type: ignore[union-attr]
            else:
                await asyncio.to_thread(self.backend.vport_create, parent, wwpn, wwnn)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise errors.InvalidArgument(
                    f"host{parent}: the kernel refused vHBA {wwpn}:{wwnn} (EINVAL): the WWPN "
                    "is probably in use on this port already") from None
            raise errors.from_errno(e, f"host{parent}: creating vHBA {wwpn} was refused") from None

    async def _sync_vports(self, parent: int, extra: Dirty | None = None) -> None:
        names = await asyncio.to_thread(self.backend.reader.vport_names)
        d = Dirty.of(vports=[n for n in names if n.startswith(f"vport-{parent}:")]
                     + [n for n, v in self.state.inventory.vports.items() if v.parent == parent],
                     hosts={parent})
        if extra is not None:
            d.merge(extra)
        await self.state.pump.sync(d)

    async def _wait_login(self, wwpn: str, parent: int, deadline: float) -> Vport | None:
        """The vport once it has left Initializing and its own host is published. Events
        usually tell; the vport is also re-read every second, because not every driver
        announces a vport_state change."""
        def logged_in() -> bool:
            v = self.find(wwpn)
            return v is not None and v.state not in ("Initializing", "") and (
                v.host is None or v.host in self.state.inventory.hosts)
        while not logged_in():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if await self.state.wait_for(logged_in, min(1.0, remaining)):
                break
            v = self.find(wwpn)
            if v is None:
                await self._sync_vports(parent)
            else:
                await self.state.pump.sync(Dirty.of(
                    vports={v.name}, hosts={v.parent} | ({v.host} if v.host is not None else set())))
        return self.find(wwpn)

    async def _cleanup(self, req: CreateRequest, v: Vport | None) -> None:
        try:
            await self._kernel_delete(req.parent, req.wwpn, req.wwnn, v)
            await self._wait_gone(req.wwpn, req.parent)
        except errors.SanError as e:
            log.error("vHBA %s failed and could not be deleted again: %s", req.wwpn, e.message)

    # -- delete ---------------------------------------------------------------------------------

    def in_use(self, v: Vport) -> list[str]:
        """Why the vHBA's LUNs are in use (a multipath map holds one, or a process has one
        open or mounted), or []. Blocking (reads /proc)."""
        inv = self.state.inventory
        out = []
        if v.host is None:
            return out
        for lun in inv.luns.values():
            if lun.hctl.host != v.host:
                continue
            if lun.holder:
                m = inv.maps.get(lun.holder)
                out.append(f"{lun.hctl} (/dev/{lun.block}) is a path of "
                           f"{'multipath map ' + m.name if m else lun.holder}")
            elif lun.block:
                users = self.backend.block_users(lun.block)
                if users:
                    out.append(f"{lun.hctl} (/dev/{lun.block}) is in use by "
                               + ", ".join(users))
        return out

    async def delete(self, wwpn: str, force: bool = False) -> None:
        v = self.find(wwpn)
        if v is None:
            raise errors.NotFound(f"no vHBA with WWPN {wwpn}")
        busy = await asyncio.to_thread(self.in_use, v)
        if busy and not force:
            raise errors.Busy("; ".join(busy) + ": stop using them (flush the map, stop the "
                              "VM) first, or pass force=true")
        if v.host is not None and self.scanner.is_scanning(v.host):
            raise errors.Busy(f"a scan of host{v.host} (this vHBA) is running; delete it once "
                              "the scan has finished")
        lock = self._parent_locks.setdefault(v.parent, asyncio.Lock())
        async with lock:
            await self._kernel_delete(v.parent, v.wwpn, v.wwnn, v)
        await self._wait_gone(wwpn, v.parent)
        if wwpn in self.records.records:
            self.records.remove(wwpn)
            self.on_records()

    async def _kernel_delete(self, parent: int, wwpn: str, wwnn: str, v: Vport | None) -> None:
        try:
            if self.libvirt is not None and v is not None and v.host is not None:
                await asyncio.to_thread(self.libvirt.delete_vport, v.host)
            else:
                await asyncio.to_thread(self.backend.vport_delete, parent, wwpn, wwnn)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise errors.NotFound(f"vHBA {wwpn} is gone already") from None
            raise errors.from_errno(e, f"host{parent}: deleting vHBA {wwpn} was refused") from None

    async def _wait_gone(self, wwpn: str, parent: int) -> None:
        deadline = time.monotonic() + self.settings.settle_timeout
        while self.find(wwpn) is not None:
            v = self.find(wwpn)
            extra = Dirty.of(hosts={v.host}) if v is not None and v.host is not None else None
            await self._sync_vports(parent, extra)
            if self.find(wwpn) is None:
                return
            if time.monotonic() > deadline:
                raise errors.TimedOut(f"vHBA {wwpn} was deleted but is still listed after "
                                      f"{self.settings.settle_timeout:g} s")
            await asyncio.sleep(0.1)

    # -- persistence ----------------------------------------------------------------------------

    async def set_persistent(self, wwpn: str, persistent: bool) -> None:
        v = self.find(wwpn)
        if v is None:
            raise errors.NotFound(f"no vHBA with WWPN {wwpn}")
        if persistent:
            parent = self.state.inventory.hosts.get(v.parent)
            if parent is None or parent.fc is None:
                raise errors.Failed(f"the parent host{v.parent} of vHBA {wwpn} is gone")
            self.records.add(VhbaRecord(v.wwpn, v.wwnn, parent.fc.wwnn, parent.fc.wwpn))
        else:
            self.records.remove(wwpn)
        self.on_records()

    async def restore(self) -> None:
        """At start: re-create every recorded vHBA that is missing (in parallel)."""
        self.records.load()
        if self.records.records:
            await asyncio.gather(*(self._restore_one(r) for r in self.records.records.values()))
            self.on_records()

    async def _restore_one(self, r: VhbaRecord) -> None:
        inv = self.state.inventory
        if self.find(r.wwpn) is not None:
            self.records.status[r.wwpn] = RecordStatus("present")
            return
        parent = next((h for h in inv.hosts.values() if h.fc is not None
                       and (h.fc.wwnn, h.fc.wwpn) == (r.parent_wwnn, r.parent_wwpn)), None)
        try:
            if parent is None:
                raise errors.NotFound(f"its parent port (WWNN {r.parent_wwnn}, WWPN "
                                      f"{r.parent_wwpn}) is not on this machine")
            await self._create(CreateRequest(parent.number, r.wwpn, r.wwnn,
                                             wait=self.settings.vhba_wait, wait_luns=False,
                                             keep_failed=True))
            self.records.status[r.wwpn] = RecordStatus("re-created")
            log.info("re-created persistent vHBA %s on host%d", r.wwpn, parent.number)
        except errors.SanError as e:
            self.records.status[r.wwpn] = RecordStatus(
                "failed", f"{e.message}; fix it and restart sanbusd, or drop the record with "
                "Vhba.SetPersistent(false) once it exists")
            log.error("cannot re-create persistent vHBA %s: %s", r.wwpn, e.message)

    def record_rows(self) -> list[dict[str, str]]:
        rows = []
        for wwpn, r in sorted(self.records.records.items()):
            st = self.records.status.get(wwpn, RecordStatus())
            rows.append({"WWPN": r.wwpn, "WWNN": r.wwnn, "ParentWWNN": r.parent_wwnn,
                         "ParentWWPN": r.parent_wwpn, "Status": st.status,
                         "Message": st.message})
        return rows

