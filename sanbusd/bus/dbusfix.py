"""A fix for dbus-fast 5.2.0's writer: a full socket (EAGAIN) must mean "wait", not "disconnect".

`_MessageWriter.write_callback` sends with a non-blocking socket and treats BlockingIOError like
any other error: it finalizes the connection. dbus-next 0.2.3 has the same bug (its issue #153).
A scan that adds thousands of LUNs sends thousands of InterfacesAdded in one go, fills the socket
buffer, and the daemon lost the bus (seen with bench/scan.py at 1,024 LUNs). Here EAGAIN leaves
the message where it is; the writer stays registered and goes on when the socket is writable.

The daemon applies it at start, and only to the versions it was written and tested against
(TESTED; pyproject.toml's bounds say the same): the replacement copies the library's private
writer, which another version may have changed. On any other version it logs that it did not
apply, and tests/bus/test_scan.py's burst test tells whether that version needs it.
"""

from __future__ import annotations

import array
import logging
import socket
from importlib.metadata import PackageNotFoundError, version

from dbus_fast.aio import message_bus as _mb

log = logging.getLogger(__name__)

TESTED = ("5.2.0",)

_Writer = _mb._MessageWriter


def _write_callback(self, remove_writer: bool = True) -> None:
    sock = self.sock
    try:
        while True:
            if self.buf is None:
                if not self.messages:
                    if remove_writer:
                        self.loop.remove_writer(self.fd)
                    return
                buf, unix_fds, fut = self.messages.popleft()
                self.unix_fds = unix_fds
                self.buf = memoryview(buf)
                self.offset = 0
                self.fut = fut
            try:
                if self.unix_fds and self.negotiate_unix_fd:
                    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                array.array("i", self.unix_fds))]
                    self.offset += sock.sendmsg([self.buf[self.offset:]], ancdata)
                    self.unix_fds = None
                else:
                    self.offset += sock.send(self.buf[self.offset:])
            except (BlockingIOError, InterruptedError):
                # The socket is full: keep (or get) the writer registered and wait for it.
                self.loop.add_writer(self.fd, self.write_callback)
                return
            if self.offset < len(self.buf):
                return
            self.buf = None
            _mb._future_set_result(self.fut, None)
    except Exception as e:  # noqa: BLE001 - as upstream: a real error ends the connection
        if self.bus._user_disconnect:
            _mb._future_set_result(self.fut, None)
        else:
            _mb._future_set_exception(self.fut, e)
        self.bus._finalize(e)


def installed_version() -> str:
    try:
        return version("dbus-fast")
    except PackageNotFoundError:
        return "unknown"


def apply() -> bool:
    """Patch the writer if this dbus-fast is one the fix was written for; True if patched."""
    if getattr(_Writer, "_sanbusd_eagain_fix", False):
        return True
    found = installed_version()
    if found not in TESTED:
        log.warning("dbus-fast %s: the EAGAIN fix was written for %s and is not applied; "
                    "if a burst of signals drops the bus connection, this version needs it "
                    "(tests/bus/test_scan.py checks)", found, ", ".join(TESTED))
        return False
    _Writer.write_callback = _write_callback
    _Writer._sanbusd_eagain_fix = True
    return True
