"""Authorization: every privileged call is checked with polkit, for the real caller, fail-closed.

The pattern is udisks' (udisks_daemon_util_check_authorization_sync): subject
('system-bus-name', {'name': sender}) so there is no pid-reuse race; flag AllowUserInteraction
unless the caller passed auth.no_user_interaction; details carry the host/WWPN/WWID and a
polkit.message; the answer maps to NotAuthorized / NotAuthorizedCanObtain /
NotAuthorizedDismissed. polkitd authorizes uid 0 itself: the "uid 0 only" rule here applies solely
when polkitd is not on the bus at all. A check that does not finish in time is cancelled
(CancelCheckAuthorization, so no dialog stays up) and answers TimedOut. After authorization (which
may have waited on a password dialog) the caller must still be on the bus.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os

from dbus_fast import Message, MessageType, Variant

from .. import errors
from .registry import Authorizer, Call

log = logging.getLogger(__name__)

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"
DBUS_NAME = "org.freedesktop.DBus"
FLAG_ALLOW_USER_INTERACTION = 1

MESSAGES = {
    "org.example.sanstorage.rescan": "Authentication is required to rescan SCSI hosts for new storage",
    "org.example.sanstorage.manage-vhba": "Authentication is required to create or delete an NPIV virtual HBA",
    "org.example.sanstorage.manage-multipath": "Authentication is required to change multipath devices",
    "org.example.sanstorage.remove-device": "Authentication is required to remove a SCSI device",
    "org.example.sanstorage.reset-link": "Authentication is required to reset an FC link",
    "org.example.sanstorage.cancel-job-other-user": "Authentication is required to cancel another user's job",
}


class PolkitAuthorizer(Authorizer):
    def __init__(self, bus, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout
        self._ids = itertools.count(1)

    async def _bus_call(self, dest: str, path: str, iface: str, member: str, sig: str,
                        body: list) -> Message:
        return await self.bus.call(Message(destination=dest, path=path, interface=iface,
                                           member=member, signature=sig, body=body))

    async def _polkit_present(self) -> bool:
        reply = await self._bus_call(DBUS_NAME, "/org/freedesktop/DBus", DBUS_NAME,
                                     "NameHasOwner", "s", [POLKIT_NAME])
        if reply.message_type == MessageType.ERROR:
            return False
        if reply.body[0]:
            return True
        # Not running now, but maybe activatable (the usual case on a real system).
        reply = await self._bus_call(DBUS_NAME, "/org/freedesktop/DBus", DBUS_NAME,
                                     "ListActivatableNames", "", [])
        return reply.message_type != MessageType.ERROR and POLKIT_NAME in reply.body[0]

    async def caller_uid(self, sender: str) -> int | None:
        reply = await self._bus_call(DBUS_NAME, "/org/freedesktop/DBus", DBUS_NAME,
                                     "GetConnectionUnixUser", "s", [sender])
        if reply.message_type == MessageType.ERROR:
            return None
        return int(reply.body[0])

    async def uid_of(self, call: Call) -> int:
        """The caller's uid, for jobs they start and may cancel."""
        uid = await self.caller_uid(call.sender)
        if uid is None:
            raise errors.Failed("cannot tell who called: the caller has left the bus")
        return uid

    async def check(self, call: Call, action: str, details: dict[str, str]) -> None:
        if not call.sender:
            raise errors.NotAuthorized("the call has no sender; refusing")
        if not await self._polkit_present():
            uid = await self.caller_uid(call.sender)
            if uid != 0:
                raise errors.NotAuthorized(
                    f"polkit is not available and the caller is not root: {action} denied")
            log.info("polkit absent: allowing %s for root caller %s", action, call.sender)
        else:
            await self._check_polkit(call, action, details)
        # The dialog may have taken a while: act only for a caller that is still there.
        reply = await self._bus_call(DBUS_NAME, "/org/freedesktop/DBus", DBUS_NAME,
                                     "NameHasOwner", "s", [call.sender])
        if reply.message_type == MessageType.ERROR or not reply.body[0]:
            raise errors.Cancelled("the caller left the bus before the operation could start")

    async def _check_polkit(self, call: Call, action: str, details: dict[str, str]) -> None:
        flags = FLAG_ALLOW_USER_INTERACTION if call.allow_interaction else 0
        cancel_id = f"sanbusd-{os.getpid()}-{next(self._ids)}"
        det = {k: str(v) for k, v in details.items()}
        det["polkit.message"] = MESSAGES.get(action, f"Authentication is required for {action}")
        msg = Message(destination=POLKIT_NAME, path=POLKIT_PATH, interface=POLKIT_IFACE,
                      member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                      body=[["system-bus-name", {"name": Variant("s", call.sender)}],
                            action, det, flags, cancel_id])
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), self.timeout)
        except asyncio.TimeoutError:
            await self._cancel(cancel_id)
            raise errors.TimedOut(f"polkit did not answer within {self.timeout:g} s for "
                                  f"{action}; try again") from None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            log.warning("polkit error for %s: %s %s", action, reply.error_name, text)
            raise errors.Failed(f"the authorization check for {action} failed: "
                                f"{reply.error_name}: {text}")
        authorized, challenge, result = reply.body[0]
        if authorized:
            return
        if result.get("polkit.dismissed"):
            raise errors.NotAuthorizedDismissed(f"authentication for {action} was dismissed")
        if challenge:
            raise errors.NotAuthorizedCanObtain(
                f"{action} needs authentication; run the command interactively (without "
                "auth.no_user_interaction) or ask an administrator to grant it in polkit")
        raise errors.NotAuthorized(f"not authorized for {action}; an administrator can grant "
                                   "it with a polkit rule (see the README)")

    async def _cancel(self, cancel_id: str) -> None:
        try:
            await asyncio.wait_for(self._bus_call(POLKIT_NAME, POLKIT_PATH, POLKIT_IFACE,
                                                  "CancelCheckAuthorization", "s", [cancel_id]),
                                   5)
        except Exception as e:  # noqa: BLE001 - best effort; the caller already gets TimedOut
            log.info("CancelCheckAuthorization(%s) failed: %s", cancel_id, e)
