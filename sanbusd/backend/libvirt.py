"""vHBAs through libvirt's node-device API, and the storage-pool refresh that follows a change.

When the `libvirt_uri` setting is set, sanbusd creates and deletes NPIV vports (vHBAs) through
libvirt instead of writing `vport_create`/`vport_delete` in sysfs, so that `virsh nodedev-list
--cap fc_host` and libvirt's storage pools know them:

- create: `nodeDeviceCreateXML` with a `<parent wwnn= wwpn=/>` (or `<parent>scsi_hostN</parent>`)
  and the vport's WWNs; libvirt writes vport_create and answers with the vport's own node device,
  `scsi_hostM`. M is the new host's number.
- delete: `virNodeDevice.destroy()` on `scsi_hostM`; libvirt writes vport_delete on the parent.

Every method blocks (libvirt calls, and a pool refresh that may wait for udev): call them from a
worker thread. Every libvirt failure leaves here as one of sanbusd's errors (sanbusd/errors.py)
whose message says what to do; a `libvirtError` never escapes. The `libvirt` module is imported on
first use, so this module imports (and the daemon runs on sysfs) without python3-libvirt.

Storage-pool refresh rule (the project's decision)
--------------------------------------------------
After sanbusd changed hosts (a scan, a LUN deleted, a vHBA created), libvirt's pools may be
stale. Refreshing a pool is not a neutral read for every pool type, so `refresh_pools` refreshes:

- only ACTIVE pools;
- `mpath` pools after any change (their refresh only lists /dev/mapper: safe);
- `scsi` pools whose adapter names one of the changed hosts -- `<adapter type='scsi_host'
  name='hostN'/>`, a `<parentaddr unique_id=...>` (PCI address + unique_id) that resolves to
  host N, or `<adapter type='fc_host' wwnn= wwpn=/>` with host N's WWNs -- and only when host N
  was scanned with a wildcard ("- - -"). libvirt's scsi refresh itself writes a wildcard scan to
  its host: after sanbusd's targeted scan it would attach the LUNs the caller left out on purpose
  and re-attach LUNs deleted through sysfs; after a wildcard scan it attaches nothing new.
  A scsi pool whose adapter cannot be tied to a host is not refreshed (stale beats intrusive);
- never `iscsi` (its refresh rescans the whole session: a wildcard), `fs`, `netfs`, `logical`,
  `disk`, `dir` or any other type (their refresh rescans or is unrelated to SCSI hosts).

The decision is the pure function `pools_to_refresh`; `LibvirtVports.refresh_pools` feeds it
libvirt's pools and the hosts' identities and refreshes what it picks.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, TypeVar
from xml.sax.saxutils import quoteattr

from .. import errors
from ..model.ids import normalize_wwn

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCSI_HOST_RE = re.compile(r"^(?:scsi_)?host(\d+)$")
_HINT_LIBVIRT = ("start libvirtd, or remove libvirt_uri from the settings to create vHBAs "
                 "through sysfs")
_HINT_LIST = "see `virsh nodedev-list --cap vports` for the FC hosts that can hold vHBAs"
_PARENT_DEPTH = 8               # how far up the node-device tree a host's PCI function may be


# --- which pools to refresh (pure) --------------------------------------------------------------

PciAddress = tuple[int, int, int, int]          # domain, bus, slot, function


@dataclass(frozen=True)
class HostIds:
    """What names a SCSI host in a pool's <adapter>: its WWNs (FC hosts), its scsi_host
    unique_id and the PCI function it hangs below (for <parentaddr>). Unknown fields stay
    empty/None; `refresh_pools` fills them from libvirt's node devices."""

    wwnn: str = ""
    wwpn: str = ""
    unique_id: int | None = None
    pci: PciAddress | None = None

    @classmethod
    def of_host(cls, host: Any) -> "HostIds":
        """From an inventory record (sanbusd.model.records.ScsiHost: .unique_id, .fc)."""
        fc = getattr(host, "fc", None)
        return cls(wwnn=(fc.wwnn if fc else ""), wwpn=(fc.wwpn if fc else ""),
                   unique_id=getattr(host, "unique_id", None))

    def complete(self, other: "HostIds") -> "HostIds":
        """These ids, with the fields they lack taken from `other`."""
        return HostIds(self.wwnn or other.wwnn, self.wwpn or other.wwpn,
                       self.unique_id if self.unique_id is not None else other.unique_id,
                       self.pci if self.pci is not None else other.pci)

    @property
    def whole(self) -> bool:
        return bool(self.wwnn and self.wwpn) and self.unique_id is not None and self.pci is not None


@dataclass(frozen=True)
class _Adapter:
    kind: str                           # "name" | "parentaddr" | "fc_host" | "unknown"
    host: int | None = None             # kind "name"
    unique_id: int | None = None        # kind "parentaddr"
    pci: PciAddress | None = None
    wwnn: str = ""                      # kind "fc_host"
    wwpn: str = ""


def _wwn(text: str | None) -> str:
    s = (text or "").strip().lower()
    s = s[2:] if s.startswith("0x") else s
    return s.replace(":", "")


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip(), 0)
    except ValueError:
        return None


def _pool_adapter(root: ET.Element) -> _Adapter:
    a = root.find("./source/adapter")
    if a is None:
        return _Adapter("unknown")
    kind = a.get("type") or ("fc_host" if a.get("wwpn") else "scsi_host")
    if kind == "fc_host":
        return _Adapter("fc_host", wwnn=_wwn(a.get("wwnn")), wwpn=_wwn(a.get("wwpn")))
    if kind != "scsi_host":
        return _Adapter("unknown")
    name = a.get("name")
    if name:
        m = _SCSI_HOST_RE.match(name.strip())
        return _Adapter("name", host=int(m.group(1))) if m else _Adapter("unknown")
    pa = a.find("./parentaddr")
    addr = pa.find("./address") if pa is not None else None
    if pa is None or addr is None:
        return _Adapter("unknown")
    pci = tuple(_int(addr.get(k)) for k in ("domain", "bus", "slot", "function"))
    uid = _int(pa.get("unique_id"))
    if uid is None or any(v is None for v in pci):
        return _Adapter("unknown")
    return _Adapter("parentaddr", unique_id=uid, pci=pci)  # type: ignore[arg-type]


def _adapter_names(ad: _Adapter, host: int, ids: HostIds | None) -> bool:
    if ad.kind == "name":
        return ad.host == host
    if ids is None:
        return False
    if ad.kind == "parentaddr":
        return (ids.unique_id is not None and ids.pci is not None
                and ad.unique_id == ids.unique_id and ad.pci == ids.pci)
    if ad.kind == "fc_host":
        return bool(ad.wwpn) and ad.wwpn == _wwn(ids.wwpn) and ad.wwnn == _wwn(ids.wwnn)
    return False


def pools_to_refresh(pools: Iterable[tuple[str, str, bool]], changed_hosts: Iterable[int],
                     wildcard_scanned: Iterable[int],
                     ids: Mapping[int, HostIds] | None = None) -> list[str]:
    """The pool rule of this module's docstring. `pools`: (name, XMLDesc, active) per pool;
    `ids`: what names each host in an <adapter> (needed for parentaddr and fc_host adapters).
    Returns the names to refresh, sorted."""
    changed = set(changed_hosts)
    if not changed:
        return []
    candidates = changed & set(wildcard_scanned)
    ids = ids or {}
    out: list[str] = []
    for name, xml, active in pools:
        if not active:
            continue
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            log.warning("libvirt: cannot parse the XML of storage pool %r; not refreshing it", name)
            continue
        ptype = root.get("type", "")
        if ptype == "mpath":
            out.append(name)
        elif ptype == "scsi" and candidates:
            ad = _pool_adapter(root)
            if any(_adapter_names(ad, h, ids.get(h)) for h in candidates):
                out.append(name)
    return sorted(out)


def _needs_ids(pools: Iterable[tuple[str, str, bool]]) -> bool:
    """Does any active scsi pool name its host by something else than "hostN"?"""
    for _name, xml, active in pools:
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            continue
        if active and root.get("type") == "scsi" and _pool_adapter(root).kind != "name":
            return True
    return False


# --- node-device XML ----------------------------------------------------------------------------

def _vport_xml(parent_host: int, parent_wwnn: str, parent_wwpn: str, wwpn: str, wwnn: str) -> str:
    if parent_wwnn and parent_wwpn:
        parent = f"<parent wwnn={quoteattr(parent_wwnn)} wwpn={quoteattr(parent_wwpn)}/>"
    else:
        parent = f"<parent>scsi_host{int(parent_host)}</parent>"
    return (f"<device>{parent}<capability type='scsi_host'><capability type='fc_host'>"
            f"<wwnn>{wwnn}</wwnn><wwpn>{wwpn}</wwpn></capability></capability></device>")


def _host_of_name(name: str) -> int | None:
    m = re.fullmatch(r"scsi_host(\d+)", name or "")
    return int(m.group(1)) if m else None


def _caps(root: ET.Element) -> dict[str, ET.Element]:
    """Every <capability type=...> in a node device, nested ones too (fc_host, vport_ops)."""
    return {c.get("type", ""): c for c in root.iter("capability")}


def _host_ids_of_xml(root: ET.Element) -> HostIds:
    caps = _caps(root)
    fc = caps.get("fc_host")
    sh = caps.get("scsi_host")
    return HostIds(wwnn=_wwn(fc.findtext("wwnn")) if fc is not None else "",
                   wwpn=_wwn(fc.findtext("wwpn")) if fc is not None else "",
                   unique_id=_int(sh.findtext("unique_id")) if sh is not None else None)


def _pci_of_xml(root: ET.Element) -> PciAddress | None:
    pci = _caps(root).get("pci")
    if pci is None:
        return None
    vals = tuple(_int(pci.findtext(k)) for k in ("domain", "bus", "slot", "function"))
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


# --- libvirt errors -> sanbusd errors -----------------------------------------------------------

_ERRNO_ERRORS: dict[int, type[errors.SanError]] = {
    _errno.ENOSPC: errors.NoSpace, _errno.EBUSY: errors.Busy, _errno.EAGAIN: errors.Busy,
    _errno.EEXIST: errors.AlreadyExists, _errno.ENOENT: errors.NotSupported,
    _errno.ENODEV: errors.NotFound, _errno.ENXIO: errors.NotFound,
    _errno.ETIMEDOUT: errors.TimedOut, _errno.EPERM: errors.Failed, _errno.EACCES: errors.Failed,
    _errno.EINVAL: errors.InvalidArgument,
}


def _errno_of(e: Any) -> int | None:
    """The errno behind a VIR_ERR_SYSTEM_ERROR: int1, or the strerror text at the end."""
    n = e.get_int1()
    if isinstance(n, int) and n > 0:
        return n
    msg = str(e)
    for code in _ERRNO_ERRORS:
        if msg.endswith(os.strerror(code)):
            return code
    return None


class LibvirtVports:
    """vHBAs and pool refreshes through libvirt at `uri` (e.g. "qemu:///system")."""

    def __init__(self, uri: str, *, appear_timeout: float = 10.0) -> None:
        self.uri = uri
        self.appear_timeout = appear_timeout    # wait for a vHBA libvirt did not see in time
        self._conn: Any = None
        self._lock = threading.Lock()

    # -- the connection -----------------------------------------------------------------------

    def _libvirt(self) -> Any:
        try:
            import libvirt
        except ImportError:
            raise errors.NotSupported(
                f"python3-libvirt is not installed, so sanbusd cannot reach libvirt at {self.uri}: "
                "install python3-libvirt, or remove libvirt_uri from the settings to create "
                "vHBAs through sysfs") from None
        _quiet(libvirt)
        return libvirt

    def connection(self) -> Any:
        """The libvirt connection, opened on first use (for diagnostics and tests)."""
        lv = self._libvirt()
        with self._lock:
            if self._conn is None:
                try:
                    conn = lv.open(self.uri)
                except lv.libvirtError as e:
                    raise self._unreachable(e) from None
                if conn is None:
                    raise errors.Failed(f"cannot reach libvirt at {self.uri} (no connection): "
                                        f"{_HINT_LIBVIRT}")
                self._conn = conn
            return self._conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:       # noqa: BLE001 - closing a dead connection
                pass

    def _forget(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        try:
            conn.close()
        except Exception:           # noqa: BLE001
            pass

    def _unreachable(self, e: Any) -> errors.SanError:
        return errors.Failed(f"cannot reach libvirt at {self.uri} ({_reason(e)}): {_HINT_LIBVIRT}")

    def _dropped(self, conn: Any, e: Any) -> bool:
        lv = self._libvirt()
        code, domain = e.get_error_code(), e.get_error_domain()
        if code in (lv.VIR_ERR_INVALID_CONN, lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_RPC):
            return True
        if code == lv.VIR_ERR_SYSTEM_ERROR and domain == lv.VIR_FROM_RPC:
            return True
        try:
            return conn.isAlive() != 1
        except Exception:           # noqa: BLE001 - a dead connection may refuse even this
            return True

    def _call(self, what: str, fn: Callable[[Any, bool], T],
              classify: Callable[[Any, str], errors.SanError | None] | None = None) -> T:
        """Run fn(conn, retrying) with libvirt errors translated; once more on a fresh
        connection if the first one turns out to have dropped."""
        lv = self._libvirt()
        for retrying in (False, True):
            conn = self.connection()
            try:
                return fn(conn, retrying)
            except lv.libvirtError as e:
                if not retrying and self._dropped(conn, e):
                    log.info("libvirt: the connection to %s dropped (%s); reconnecting",
                             self.uri, _reason(e))
                    self._forget(conn)
                    continue
                raise ((classify and classify(e, what)) or self._translate(e, what)) from None
        raise AssertionError("unreachable")

    def _translate(self, e: Any, what: str) -> errors.SanError:
        lv = self._libvirt()
        code, msg = e.get_error_code(), _reason(e)
        said = f"{what}: libvirt says {msg}"
        if code in (lv.VIR_ERR_INVALID_CONN, lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_RPC) or (
                code == lv.VIR_ERR_SYSTEM_ERROR and e.get_error_domain() == lv.VIR_FROM_RPC):
            return errors.Failed(f"{what}: lost libvirt at {self.uri} ({msg}): {_HINT_LIBVIRT}")
        if "not capable of vport operations" in msg:
            return errors.NotSupported(f"{said}: that host's HBA cannot hold vHBAs (no NPIV); "
                                       f"{_HINT_LIST}")
        if "Could not find parent" in msg or "Could not find any vport capable" in msg:
            return errors.NotFound(f"{said}: libvirt knows no such NPIV-capable FC host; "
                                   f"{_HINT_LIST}")
        if code in (lv.VIR_ERR_NO_NODE_DEVICE, lv.VIR_ERR_NO_STORAGE_POOL):
            return errors.NotFound(f"{said}: {_HINT_LIST}")
        if code in (lv.VIR_ERR_NO_SUPPORT, lv.VIR_ERR_OPERATION_UNSUPPORTED,
                    lv.VIR_ERR_CONFIG_UNSUPPORTED):
            return errors.NotSupported(f"{said}: this libvirt driver ({self.uri}) cannot do it; "
                                       "use a libvirtd with the node-device driver, or remove "
                                       "libvirt_uri from the settings")
        if code in (lv.VIR_ERR_OPERATION_TIMEOUT, lv.VIR_ERR_AGENT_UNRESPONSIVE):
            return errors.TimedOut(f"{said}: retry once libvirtd answers")
        if code in (lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_AUTH_CANCELLED, lv.VIR_ERR_AUTH_UNAVAILABLE,
                    lv.VIR_ERR_ACCESS_DENIED):
            return errors.Failed(f"{said}: let sanbusd's user manage node devices in libvirt's "
                                 "access control, or remove libvirt_uri from the settings")
        if code in (lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_XML_ERROR, lv.VIR_ERR_XML_DETAIL):
            return errors.InvalidArgument(said)
        if code == lv.VIR_ERR_SYSTEM_ERROR:
            n = _errno_of(e)
            cls = _ERRNO_ERRORS.get(n or 0, errors.Failed)
            if n in (_errno.EPERM, _errno.EACCES):
                return cls(f"{said}: libvirtd may not write to sysfs (is it running as root?)")
            return cls(said)
        return errors.Failed(said)

    # -- vHBAs ----------------------------------------------------------------------------------

    def _fc_hosts(self, conn: Any) -> dict[str, ET.Element]:
        lv = self._libvirt()
        out = {}
        for dev in conn.listAllDevices(lv.VIR_CONNECT_LIST_NODE_DEVICES_CAP_FC_HOST):
            try:
                out[dev.name()] = ET.fromstring(dev.XMLDesc(0))
            except lv.libvirtError:         # gone while we listed
                continue
        return out

    def _holder_of(self, conn: Any, wwpn: str) -> tuple[str, HostIds] | None:
        for name, root in self._fc_hosts(conn).items():
            ids = _host_ids_of_xml(root)
            if ids.wwpn == wwpn:
                return name, ids
        return None

    def create_vport(self, parent_host: int, parent_wwnn: str, parent_wwpn: str,
                     wwpn: str, wwnn: str) -> int:
        """Create a vHBA with these WWNs on FC host `parent_host` (named to libvirt by its WWNs
        when given, else as scsi_host<parent_host>). Returns the vHBA's own host number."""
        wwpn = errors.invalid_argument(normalize_wwn, wwpn, "WWPN")
        wwnn = errors.invalid_argument(normalize_wwn, wwnn, "WWNN")
        if parent_wwnn or parent_wwpn:
            parent_wwnn = errors.invalid_argument(normalize_wwn, parent_wwnn, "parent WWNN")
            parent_wwpn = errors.invalid_argument(normalize_wwn, parent_wwpn, "parent WWPN")
        xml = _vport_xml(parent_host, parent_wwnn, parent_wwpn, wwpn, wwnn)
        what = f"cannot create a vHBA with WWPN {wwpn} on host {parent_host}"
        lv = self._libvirt()

        def in_use(conn: Any) -> errors.SanError | None:
            held = self._holder_of(conn, wwpn)
            if held is None:
                return None
            return errors.AlreadyExists(
                f"{what}: WWPN {wwpn} is already in use by {held[0]}; delete that vHBA first, or "
                "choose another WWPN")

        def create(conn: Any, retrying: bool) -> int:
            if retrying:    # did the first attempt create it before the connection dropped?
                held = self._holder_of(conn, wwpn)
                if held and held[1].wwnn == wwnn:
                    return self._number_of(held[0], what)
            exists = in_use(conn)
            if exists:
                raise exists
            try:
                dev = conn.nodeDeviceCreateXML(xml, 0)
            except lv.libvirtError as e:
                if e.get_error_code() == lv.VIR_ERR_NO_NODE_DEVICE and "matching wwnn" in str(e):
                    return self._await_vport(conn, wwpn, what)
                raise
            return self._number_of(dev.name(), what)

        def classify(e: Any, _what: str) -> errors.SanError | None:
            # The kernel's EINVAL for a vport write is ambiguous: a WWPN in use, or WWNs the
            # HBA refuses. Say which.
            if e.get_error_code() == lv.VIR_ERR_SYSTEM_ERROR and _errno_of(e) == _errno.EINVAL:
                try:
                    exists = in_use(self.connection())
                except (lv.libvirtError, errors.SanError):
                    exists = None
                return exists or errors.InvalidArgument(
                    f"{what}: libvirt says {_reason(e)}: the HBA refused these WWNs; give a "
                    "WWPN/WWNN pair that is not zero, not the HBA's own and unique in the fabric")
            if "Could not find parent" in str(e) and parent_wwpn:
                # libvirt finds a parent by WWNs among NPIV-capable hosts only: say whether
                # host `parent_host` is there but cannot hold vHBAs, or has other WWNs.
                try:
                    return self._why_no_parent(self.connection(), parent_host, parent_wwnn,
                                               parent_wwpn, what, _reason(e))
                except (lv.libvirtError, errors.SanError):
                    return None
            return None

        return self._call(what, create, classify)

    def _why_no_parent(self, conn: Any, host: int, wwnn: str, wwpn: str, what: str,
                       said: str) -> errors.SanError | None:
        lv = self._libvirt()
        try:
            root = ET.fromstring(conn.nodeDeviceLookupByName(f"scsi_host{host}").XMLDesc(0))
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_NODE_DEVICE:
                return None
            raise
        ids = _host_ids_of_xml(root)
        if (ids.wwnn, ids.wwpn) != (wwnn, wwpn):
            return errors.NotFound(
                f"{what}: libvirt says {said}: its scsi_host{host} has WWNN {ids.wwnn or '-'} "
                f"WWPN {ids.wwpn or '-'}, not {wwnn} {wwpn}; {_HINT_LIST}")
        if "vport_ops" not in _caps(root):
            return errors.NotSupported(
                f"{what}: libvirt says {said}: scsi_host{host} is not capable of vport "
                f"operations (no NPIV); {_HINT_LIST}")
        return None

    def _await_vport(self, conn: Any, wwpn: str, what: str) -> int:
        """libvirt wrote vport_create but did not see the new host in its own wait: look a
        little longer."""
        deadline = time.monotonic() + self.appear_timeout
        while True:
            held = self._holder_of(conn, wwpn)
            if held:
                return self._number_of(held[0], what)
            if time.monotonic() >= deadline:
                raise errors.TimedOut(
                    f"{what}: the kernel took the vport but libvirt did not list its SCSI host "
                    f"within {self.appear_timeout:g} s; check `virsh nodedev-list --cap fc_host` "
                    "and delete the vHBA if it is not wanted")
            time.sleep(0.2)

    @staticmethod
    def _number_of(name: str, what: str) -> int:
        n = _host_of_name(name)
        if n is None:
            raise errors.Failed(f"{what}: libvirt named the new vHBA {name!r}, not scsi_hostN; "
                                "find it with `virsh nodedev-list --cap fc_host`")
        return n

    def delete_vport(self, host: int) -> None:
        """Delete the vHBA whose own SCSI host is `host` (libvirt node device scsi_host<host>).
        Refuses a host that is not a vHBA (whose parent is not an NPIV-capable FC host)."""
        name = f"scsi_host{int(host)}"
        what = f"cannot delete vHBA host {host}"
        lv = self._libvirt()

        def delete(conn: Any, _retrying: bool) -> None:
            try:
                dev = conn.nodeDeviceLookupByName(name)
            except lv.libvirtError as e:
                if e.get_error_code() == lv.VIR_ERR_NO_NODE_DEVICE:
                    raise errors.NotFound(f"{what}: libvirt has no node device {name}; "
                                          "see `virsh nodedev-list --cap fc_host`") from None
                raise
            root = ET.fromstring(dev.XMLDesc(0))
            parent = dev.parent() or ""
            parent_caps: dict[str, ET.Element] = {}
            if parent:
                try:
                    parent_caps = _caps(ET.fromstring(
                        conn.nodeDeviceLookupByName(parent).XMLDesc(0)))
                except lv.libvirtError as e:
                    if e.get_error_code() != lv.VIR_ERR_NO_NODE_DEVICE:
                        raise
            if "fc_host" not in _caps(root) or "vport_ops" not in parent_caps:
                raise errors.InvalidArgument(
                    f"{what}: {name} is not a vHBA (its parent {parent or 'none'} is not an "
                    "NPIV-capable FC host); only vHBAs can be deleted")
            dev.destroy()

        self._call(what, delete)

    # -- storage pools -------------------------------------------------------------------------

    def refresh_pools(self, changed_hosts: set[int], wildcard_scanned: set[int],
                      hosts: Mapping[int, HostIds] | None = None) -> list[str]:
        """Refresh the pools the rule in this module's docstring picks; returns their names.
        `hosts`: what the caller knows of each host (HostIds.of_host(inventory.hosts[n])); what
        it lacks (a host's PCI function, say) is read from libvirt's node devices. A pool that
        fails to refresh does not stop the others; the failures are raised together after."""
        if not changed_hosts:
            return []
        lv = self._libvirt()
        what = "cannot refresh libvirt's storage pools"

        def run(conn: Any, _retrying: bool) -> list[str]:
            try:
                objs = conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            except lv.libvirtError as e:
                if e.get_error_code() in (lv.VIR_ERR_NO_SUPPORT, lv.VIR_ERR_OPERATION_UNSUPPORTED):
                    return []          # no storage driver: no pools to keep current
                raise
            pools, by_name = [], {}
            for p in objs:
                try:
                    pools.append((p.name(), p.XMLDesc(0), bool(p.isActive())))
                except lv.libvirtError:     # gone or stopped while we listed
                    continue
                by_name[p.name()] = p
            ids: dict[int, HostIds] = dict(hosts or {})
            candidates = set(changed_hosts) & set(wildcard_scanned)
            if candidates and _needs_ids(pools):
                for h in candidates:
                    known = ids.get(h, HostIds())
                    if not known.whole:
                        ids[h] = known.complete(self._ids_from_libvirt(conn, h))
            chosen = pools_to_refresh(pools, changed_hosts, wildcard_scanned, ids)
            done, failed = [], []
            for name in chosen:
                try:
                    by_name[name].refresh(0)
                    done.append(name)
                except lv.libvirtError as e:
                    if e.get_error_code() in (lv.VIR_ERR_NO_STORAGE_POOL,
                                              lv.VIR_ERR_OPERATION_INVALID) \
                            and not self._pool_active(conn, name):
                        continue            # undefined or stopped meanwhile: nothing to refresh
                    if self._dropped(conn, e):
                        raise
                    failed.append(f"{name} ({_reason(e)})")
            if failed:
                raise errors.Failed(
                    f"{what}: refreshed {', '.join(done) or 'none'}; could not refresh "
                    f"{'; '.join(failed)}: run `virsh pool-refresh <pool>` once the cause is fixed")
            return done

        return self._call(what, run)

    def _pool_active(self, conn: Any, name: str) -> bool:
        lv = self._libvirt()
        try:
            return bool(conn.storagePoolLookupByName(name).isActive())
        except lv.libvirtError:
            return False

    def _ids_from_libvirt(self, conn: Any, host: int) -> HostIds:
        """Host `host`'s WWNs and unique_id from node device scsi_host<host>, and the PCI
        function above it (a vHBA's is its parent HBA's, as in its sysfs path)."""
        lv = self._libvirt()
        try:
            dev = conn.nodeDeviceLookupByName(f"scsi_host{host}")
            ids = _host_ids_of_xml(ET.fromstring(dev.XMLDesc(0)))
            parent = dev.parent()
            for _ in range(_PARENT_DEPTH):
                if not parent:
                    break
                pdev = conn.nodeDeviceLookupByName(parent)
                pci = _pci_of_xml(ET.fromstring(pdev.XMLDesc(0)))
                if pci is not None:
                    return replace(ids, pci=pci)
                parent = pdev.parent()
            return ids
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_NODE_DEVICE:
                return HostIds()            # libvirt does not know it (yet): match by name only
            raise


def _reason(e: Any) -> str:
    return (e.get_error_message() or str(e) or "no detail").strip()


_quieted = False


def _quiet(libvirt: Any) -> None:
    """libvirt prints every error to stderr unless a handler is registered; ours are raised."""
    global _quieted
    if not _quieted:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quieted = True
