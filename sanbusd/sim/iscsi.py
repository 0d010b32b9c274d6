"""iSCSI sessions: an `iscsi_tcp` host per session, logged in to an array's portal, with the LUNs
the array masks to its initiator name, laid out as the kernel's iSCSI transport class does
(Debian 12's 6.1, recorded in the kernel lane):

    devices/platform/hostH                                  the session's SCSI host (iscsi_tcp)
        iscsi_host/hostH                                     class/iscsi_host/hostH
        sessionN/iscsi_session/sessionN                      class/iscsi_session/sessionN
            targetname, state, tpgt, initiatorname, recovery_tmo, ...
            device -> ../../ (sessionN: its parent directory is the host)
        sessionN/connectionN:0/iscsi_connection/connectionN:0
            address, port, persistent_address, persistent_port, state
        sessionN/targetH:0:0/H:0:0:L                         the LUNs (channel 0, target id 0)

A portal going silent (`portal-down ADDRESS`, what a tc filter dropping its traffic does on the
kernel): each session through it FAILED and its devices blocked at once; after the session's
recovery_tmo the session FREE and the devices transport-offline, and multipathd's checker fails
their paths (dm's PATH_FAILED). The kernel sends no uevent for a session's state nor for a
device's; the dm events of the paths' maps are what a listener hears. `portal-up`: the session
LOGGED_IN, the devices running, the paths reinstated.
"""

from __future__ import annotations

from ..backend.uevent import UEvent
from ..model.ids import HCTL
from .core import SanAdminError, SanCore
from .devices import SimHost
from .files import uevent

LOGGED_IN, FAILED, FREE = "LOGGED_IN", "FAILED", "FREE"
TARGET_ID = 0                       # one target per session: H:0:0:L


class IscsiMixin(SanCore):
    # -- where things are -----------------------------------------------------------------------

    def _iscsi_array(self, h: SimHost) -> int | None:
        """The index of the array whose portal the host's session is logged in to."""
        if h.spec.type != "iscsi" or not h.spec.portal:
            return None
        for ai, arr in enumerate(self.fabric.arrays):
            if h.spec.portal in arr.portals:
                return ai
        return None

    @staticmethod
    def _session_dir(h: SimHost) -> str:
        return f"{h.devdir}/session{h.session}"

    def _session_rel(self, h: SimHost) -> str:
        return f"{self._session_dir(h)}/iscsi_session/session{h.session}"

    def _connection_rel(self, h: SimHost) -> str:
        return f"{self._session_dir(h)}/connection{h.session}:0/iscsi_connection/connection{h.session}:0"

    def _iscsi_masked(self, h: SimHost, ai: int) -> list[int]:
        return sorted(n for n, spec in self.fabric.arrays[ai].luns.items()
                      if h.spec.initiator in spec.masked_to)

    # -- login (at start) and scans -------------------------------------------------------------

    def _iscsi_login(self, h: SimHost) -> list[UEvent]:
        """iscsiadm's login: the session and its connection, then the scan of every LUN the
        target masks to the initiator (the kernel scans a new session at once)."""
        ai = self._iscsi_array(h)
        if ai is None:
            return []
        arr = self.fabric.arrays[ai]
        if not h.session:
            h.session = self._next_session
            self._next_session += 1
        h.session_state = LOGGED_IN
        address, _, port = h.spec.portal.rpartition(":")
        sdir = self._session_dir(h)
        self.fs.attrs(sdir, {"uevent": "DEVTYPE=iscsi_session"})
        name = f"session{h.session}"
        rel = self.fs.class_dev(sdir, "iscsi_session", name, {
            "targetname": arr.iqn, "state": LOGGED_IN, "target_state": "SCANNED",
            "target_id": str(TARGET_ID), "tpgt": "1", "initiatorname": h.spec.initiator,
            "ifacename": "default", "recovery_tmo": str(int(h.spec.recovery_tmo)), "abort_tmo": "15",
            "lu_reset_tmo": "30", "tgt_reset_tmo": "30", "creator": "1", "fast_abort": "1"})
        events = [uevent("add", "iscsi_session", rel)]
        cdir = f"{sdir}/connection{h.session}:0"
        self.fs.attrs(cdir, {"uevent": "DEVTYPE=iscsi_connection"})
        crel = self.fs.class_dev(cdir, "iscsi_connection", f"connection{h.session}:0", {
            "address": address, "port": port, "persistent_address": address,
            "persistent_port": port, "state": "up", "ping_tmo": "5", "recv_tmo": "5"})
        events.append(uevent("add", "iscsi_connection", crel))
        self.fs.set(f"{h.devdir}/iscsi_host/host{h.number}", "ipaddress", address)
        for n in self._iscsi_masked(h, ai):
            events += self._add_lun(h, 0, TARGET_ID, n, None)  # type: ignore[attr-defined]
        return events

    def _iscsi_scan(self, h: SimHost, target: int | None, lun: int | None) -> list[UEvent]:
        """A scan of the session's host: its one target, the LUNs masked to the initiator (a
        targeted scan asks for one LUN; an unmasked one attaches nothing, as LIO answers)."""
        ai = self._iscsi_array(h)
        if ai is None or h.session_state != LOGGED_IN or target not in (None, TARGET_ID):
            return []
        masked = self._iscsi_masked(h, ai)
        wanted = masked if lun is None else [lun] if lun in masked else []
        events: list[UEvent] = []
        for n in wanted:
            events += self._add_lun(h, 0, TARGET_ID, n, None)  # type: ignore[attr-defined]
        return events

    def _iscsi_lun_spec(self, h: SimHost, lun: int):
        ai = self._iscsi_array(h)
        return (ai, self.fabric.arrays[ai].luns.get(lun)) if ai is not None else (None, None)

    # -- the SAN admin: a portal goes silent, comes back ----------------------------------------

    def _portal_hosts(self, address: str) -> list[SimHost]:
        known = sorted({p.rpartition(":")[0] for a in self.fabric.arrays for p in a.portals})
        if address not in known:
            raise SanAdminError(f"no iSCSI portal with address {address!r} (portals: "
                                f"{', '.join(known) or 'none'})")
        return [h for h in self.hosts.values()
                if h.session and h.spec.portal.rpartition(":")[0] == address]

    def _session_state(self, h: SimHost, state: str) -> None:
        h.session_state = state
        self.fs.set(self._session_rel(h), "state", state)
        self.fs.set(self._connection_rel(h), "state", "up" if state == LOGGED_IN else "failed")

    def _host_luns(self, h: SimHost) -> list[HCTL]:
        return sorted(k for k in self.luns if k.host == h.number)

    def portal_down(self, address: str) -> None:
        """The portal's traffic stops (a tc filter drops it): each session through it fails at
        once (the noop-out times out) and its devices block; after recovery_tmo the session is
        FREE and the devices transport-offline, and multipathd fails their paths."""
        with self._changing():
            hosts = [h for h in self._portal_hosts(address) if h.session_state == LOGGED_IN]
            for h in hosts:
                self._session_state(h, FAILED)
                for hctl in self._host_luns(h):
                    # I/O queues on a blocked device: the path checker's TUR stays pending.
                    self._set_device_state(hctl, "blocked")  # type: ignore[attr-defined]
        for h in hosts:
            self._later(h.spec.recovery_tmo, self._iscsi_recovery_timedout, h.number)

    def _iscsi_recovery_timedout(self, number: int) -> None:
        with self._changing():
            h = self.hosts.get(number)
            if h is None or h.session_state != FAILED:
                return
            self._session_state(h, FREE)
            hctls = [k for k in self._host_luns(h)
                     if self._set_device_state(k, "transport-offline")]  # type: ignore[attr-defined]
            events = self._devices_changed(hctls)  # type: ignore[attr-defined]
        self._send(events)

    def portal_up(self, address: str) -> None:
        """The portal answers again: iscsid logs each session in again, the devices run, and
        multipathd reinstates their paths."""
        with self._changing():
            events: list[UEvent] = []
            for h in self._portal_hosts(address):
                if h.session_state == LOGGED_IN:
                    continue
                self._session_state(h, LOGGED_IN)
                hctls = [k for k in self._host_luns(h)
                         if self._set_device_state(k, "running")]  # type: ignore[attr-defined]
                events += self._devices_changed(hctls)  # type: ignore[attr-defined]
        self._send(events)

    def _resume_iscsi(self) -> None:
        """After reopening a saved SAN: a session that was recovering still times out."""
        for h in self.hosts.values():
            if h.session_state == FAILED:
                self._later(h.spec.recovery_tmo, self._iscsi_recovery_timedout, h.number)

    def iscsi_sessions(self) -> dict[str, dict]:
        """For the control socket's status."""
        with self._lock:
            return {f"session{h.session}": {"host": h.number, "portal": h.spec.portal,
                                            "initiator": h.spec.initiator, "state": h.session_state}
                    for h in sorted(self.hosts.values(), key=lambda h: h.session) if h.session}
