"""The one table of D-Bus errors, and the one place that turns any exception into one of them.

Callers only ever see `org.example.SanStorage.Error.*` or `org.freedesktop.DBus.Error.InvalidArgs`
(plus the bus's own UnknownMethod/UnknownObject); never a Python class name or a traceback.
"""

from __future__ import annotations

import errno
import logging

ERROR_PREFIX = "org.example.SanStorage.Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
PROPERTY_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"

log = logging.getLogger(__name__)


class SanError(Exception):
    """Base of every error a caller may see. `name` is the short D-Bus error name."""

    name = "Failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def dbus_name(self) -> str:
        return ERROR_PREFIX + self.name


def _error(name: str, doc: str) -> type[SanError]:
    return type(name, (SanError,), {"name": name, "__doc__": doc})


Failed = _error("Failed", "The operation failed; the message says why.")
Cancelled = _error("Cancelled", "The operation (or its job) was cancelled.")
NotAuthorized = _error("NotAuthorized", "polkit said no.")
NotAuthorizedCanObtain = _error("NotAuthorizedCanObtain", "Authentication would grant it.")
NotAuthorizedDismissed = _error("NotAuthorizedDismissed", "The authentication dialog was dismissed.")
NotSupported = _error("NotSupported", "The hardware or backend cannot do this.")
TimedOut = _error("TimedOut", "The operation did not finish in time.")
Busy = _error("Busy", "The device or host is in use; retry later.")
NotFound = _error("NotFound", "No such host, LUN, port or map.")
AlreadyExists = _error("AlreadyExists", "Such an object already exists.")
InvalidArgument = _error("InvalidArgument", "A value is well-typed but not acceptable.")
NoSpace = _error("NoSpace", "A limit (e.g. max_npiv_vports) is reached.")

ALL_ERRORS: tuple[type[SanError], ...] = (
    Failed, Cancelled, NotAuthorized, NotAuthorizedCanObtain, NotAuthorizedDismissed,
    NotSupported, TimedOut, Busy, NotFound, AlreadyExists, InvalidArgument, NoSpace,
)


class InvalidArgs(SanError):
    """Wrong types or unknown option keys: the standard D-Bus InvalidArgs."""

    name = "InvalidArgs"

    @property
    def dbus_name(self) -> str:
        return INVALID_ARGS


class BusError(SanError):
    """A standard org.freedesktop.DBus.Error.* (UnknownObject, UnknownMethod, ...)."""

    def __init__(self, dbus_name: str, message: str) -> None:
        super().__init__(message)
        self._dbus_name = dbus_name

    @property
    def dbus_name(self) -> str:
        return self._dbus_name


# How kernel errnos from sysfs writes read to a caller.
_ERRNO_MAP: dict[int, type[SanError]] = {
    errno.EINVAL: InvalidArgument,
    errno.ENOSPC: NoSpace,
    errno.ENOENT: NotSupported,
    errno.ENODEV: NotFound,
    errno.ENXIO: NotFound,
    errno.EBUSY: Busy,
    errno.EAGAIN: Busy,
    errno.EEXIST: AlreadyExists,
    errno.EPERM: NotAuthorized,
    errno.EACCES: NotAuthorized,
    errno.ETIMEDOUT: TimedOut,
}


def from_errno(err: OSError, what: str) -> SanError:
    """A kernel write failed: name the error after the errno, keep the kernel's words in the message."""
    cls = _ERRNO_MAP.get(err.errno or 0, Failed)
    reason = errno.errorcode.get(err.errno or 0, "error")
    return cls(f"{what}: the kernel answered {reason} ({err.strerror or 'no detail'})")


def to_dbus(exc: BaseException) -> tuple[str, str]:
    """Map any exception to (error name, message). Unknown exceptions are logged here, once, with
    their traceback, and reach the caller as a plain Failed without internals."""
    if isinstance(exc, SanError):
        return exc.dbus_name, exc.message
    if isinstance(exc, OSError):
        mapped = from_errno(exc, "system call failed")
        return mapped.dbus_name, mapped.message
    log.error("internal error while serving a call", exc_info=exc)
    return ERROR_PREFIX + "Failed", "internal error in sanbusd (details are in its log)"


def invalid_argument(fn, *args):
    """Call a pure parser; its ValueError (whose message says what to give) is InvalidArgument."""
    try:
        return fn(*args)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
