"""The one client of org.example.SanStorage: connect, call with a{sv} options, read the tree.

sanctl, the benchmarks and the tests use it; so can Ansible modules and other Python tools. Values
come back as plain Python (no Variants), ready for JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.signature import get_signature_tree

from . import BUS_NAME
from .bus import dbusfix

ROOT = "/org/example/SanStorage"
MANAGER = ROOT + "/Manager"
IFACE = "org.example.SanStorage."
OM_IFACE = "org.freedesktop.DBus.ObjectManager"


class ClientError(Exception):
    """A call failed; `name` is the D-Bus error name (or "" when there was no answer)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}" if name else text)
        self.name = name
        self.text = text


async def connect(bus: str = "system") -> MessageBus:
    """"system" (honours DBUS_SYSTEM_BUS_ADDRESS), "session", or a D-Bus address."""
    dbusfix.apply()         # a client reading a burst of signals needs it as much as the daemon
    if bus == "system":
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    if bus == "session":
        return await MessageBus(bus_type=BusType.SESSION).connect()
    return await MessageBus(bus_address=bus).connect()


def options(**values: Any) -> dict[str, Variant]:
    """Python values -> a{sv} options, typed as the API expects them (`auth_no_user_interaction`
    for auth.no_user_interaction)."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key.replace("auth_", "auth.", 1) if key.startswith("auth_") else key] = \
            Variant(_OPTION_TYPES.get(key) or _guess(value), value)
    return out


_OPTION_TYPES = {"luns": "at", "hosts": "ao", "channel": "u", "target": "u", "timeout": "u",
                 "force": "b", "auth_no_user_interaction": "b", "wwids": "as"}


def _guess(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "u" if value >= 0 else "i"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    raise TypeError(f"give the D-Bus type of {value!r} as a Variant")


def plain(v: Any) -> Any:
    """Variants -> plain Python (for JSON and printing)."""
    if isinstance(v, Variant):
        return plain(v.value)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


async def call(bus: MessageBus, path: str, interface: str, member: str, signature: str = "",
               body: list | None = None, timeout: float | None = None) -> list:
    """One method call on sanbusd; the reply's body as plain Python. Raises ClientError."""
    msg = Message(destination=BUS_NAME, path=path, interface=interface, member=member,
                  signature=signature, body=body or [])
    try:
        reply = await (asyncio.wait_for(bus.call(msg), timeout) if timeout else bus.call(msg))
    except asyncio.TimeoutError:
        raise ClientError("", f"{member}: no answer within {timeout:g} s") from None
    if reply.message_type == MessageType.ERROR:
        raise ClientError(reply.error_name or "", reply.body[0] if reply.body else "")
    return plain(reply.body)


async def call_method(bus: MessageBus, path: str, interface: str, member: str, *args: Any,
                      opts: dict[str, Variant] | None = None,
                      timeout: float | None = None) -> Any:
    """Call a sanbusd method whose last argument is a{sv} options; `interface` may be short
    ("Manager"). Returns the single result (or None, or a list for several)."""
    iface = interface if "." in interface else IFACE + interface
    sig = "".join(_arg_sig(a) for a in args) + "a{sv}"
    get_signature_tree(sig)
    body = await call(bus, path, iface, member, sig, [*args, opts or {}], timeout)
    return None if not body else body[0] if len(body) == 1 else body


def _arg_sig(a: Any) -> str:
    if isinstance(a, dict):
        return "a{sv}"
    return _guess(a)


async def managed_objects(bus: MessageBus) -> dict[str, dict[str, dict[str, Any]]]:
    (objs,) = await call(bus, ROOT, OM_IFACE, "GetManagedObjects")
    return objs


async def add_match(bus: MessageBus, rule: str) -> None:
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[rule]))


SIGNAL_RULES = (
    f"type='signal',sender='{BUS_NAME}',path='{ROOT}',interface='{OM_IFACE}'",
    f"type='signal',sender='{BUS_NAME}',path_namespace='{ROOT}',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
    f"type='signal',sender='{BUS_NAME}',path_namespace='{ROOT}/jobs'",
)


def objects_with(objs: dict, interface: str) -> list[dict[str, Any]]:
    """The properties of `interface` (short or full name) of every object that has it."""
    iface = interface if "." in interface else IFACE + interface
    return [o[iface] for o in objs.values() if iface in o]
