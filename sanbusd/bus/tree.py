"""The object tree on the bus: our own ObjectManager, Properties, Introspectable and dispatcher.

Why not dbus-fast's ServiceInterface: at SAN scale (16,384 LUN paths) exporting one
ServiceInterface per object took 4.4 s and GetManagedObjects 8 s (measured on a 2-core machine),
dbus-fast emits InterfacesAdded from the child path, one signal per interface (ObjectManager clients
such as GDBusObjectManagerClient listen on the manager path and miss them), and it does not tell a
handler who called. Here every object is a dict of ready-made Variants, built once when the kernel
changes; GetManagedObjects marshals that dict as it is; signals go out from the ObjectManager path,
one per object; and the dispatcher hands each handler the caller's unique bus name explicitly, so
no ContextVar is needed to know who is calling.

Every method call that reaches the daemon goes through this dispatcher, on any path: it answers
Peer itself, and anything it does not serve with the standard UnknownObject / UnknownMethod /
UnknownInterface / UnknownProperty / InvalidArgs. Nothing falls through to the library's own
ServiceInterface dispatch (which answered NotSupported for an empty Properties interface, and
raised out of its reader - a traceback in the log - for calls sent with NO_REPLY_EXPECTED). A
call sent with NO_REPLY_EXPECTED is carried out but never answered.

GetManagedObjects at SAN scale (16,384 LUN paths, a 9 MiB reply) is served from bytes: each
object's dict entry is marshalled once and kept until apply() changes that object, and the
reply's body is the concatenation of the cached entries, so a call costs a header and a copy
instead of marshalling the whole tree (entries are marshalled by dbus-fast's own marshaller, or
by dbusfix's where the library writes non-ASCII strings wrongly, as Debian 12's 1.84 does). Its
replies are handed to the connection one at a time, each when the bus has taken in the previous
one, so a small reply (a Properties.Get) waits for at most one large reply ahead of it instead
of for every queued one; a reply's body is taken from the tree when it is handed over, so it is
never older than a signal sent before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable
from xml.sax.saxutils import quoteattr

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.signature import get_signature_tree

from .. import errors
from ..authz.registry import (AUTH_NO_USER_INTERACTION, Authorizer, Call, Registration,
                              check_registrations)
from . import dbusfix
from .contract import ApiSpec, MethodDef

log = logging.getLogger(__name__)

OM_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
INTROSPECT_IFACE = "org.freedesktop.DBus.Introspectable"
PEER_IFACE = "org.freedesktop.DBus.Peer"

_STD_XML = {
    PEER_IFACE: """<interface name="org.freedesktop.DBus.Peer"><method name="Ping"/><method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method></interface>""",
    INTROSPECT_IFACE: """<interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect"><arg name="xml_data" type="s" direction="out"/></method></interface>""",
    PROPS_IFACE: """<interface name="org.freedesktop.DBus.Properties"><method name="Get"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="out"/></method><method name="GetAll"><arg name="interface_name" type="s" direction="in"/><arg name="props" type="a{sv}" direction="out"/></method><method name="Set"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method><signal name="PropertiesChanged"><arg name="interface_name" type="s"/><arg name="changed_properties" type="a{sv}"/><arg name="invalidated_properties" type="as"/></signal></interface>""",
    OM_IFACE: """<interface name="org.freedesktop.DBus.ObjectManager"><method name="GetManagedObjects"><arg name="objects" type="a{oa{sa{sv}}}" direction="out"/></method><signal name="InterfacesAdded"><arg name="object" type="o"/><arg name="interfaces" type="a{sa{sv}}"/></signal><signal name="InterfacesRemoved"><arg name="object" type="o"/><arg name="interfaces" type="as"/></signal></interface>""",
}
_DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')

# Members of the standard interfaces, for calls that name no interface.
_STD_MEMBERS = {"Ping": PEER_IFACE, "GetMachineId": PEER_IFACE, "Introspect": INTROSPECT_IFACE,
                "Get": PROPS_IFACE, "GetAll": PROPS_IFACE, "Set": PROPS_IFACE,
                "GetManagedObjects": OM_IFACE}
# Where libdbus (and so the bus daemon) reads the machine id, in its order.
_MACHINE_ID_FILES = ("/var/lib/dbus/machine-id", "/etc/machine-id")
_NO_REPLY = int(MessageFlag.NO_REPLY_EXPECTED)
_FAILED = errors.ERROR_PREFIX + "Failed"
_INTERNAL = "internal error in sanbusd (details in its log)"


def wants_reply(msg: Message) -> bool:
    """False for a call sent with NO_REPLY_EXPECTED: it must not be answered."""
    flags = msg.flags
    return not (int(getattr(flags, "value", flags) or 0) & _NO_REPLY)


# -- GetManagedObjects from cached bytes --------------------------------------------------------

GMO_SIGNATURE = "a{oa{sa{sv}}}"
_PADS = tuple(b"\0" * n for n in range(8))
_MAX_ARRAY = 1 << 26            # the D-Bus specification's limit for one array (64 MiB)
MAX_MESSAGE_SIZE = dbusfix.MAX_MESSAGE_SIZE     # ... and for one message (128 MiB)
BULK_TIMEOUT = 10.0             # s; how long one large reply may hold up the next
ROUND_TRIP_TIMEOUT = 2.0        # s; the bus answers GetId behind a large reply in ~50 ms


def marshal_entry(path: str, obj: dict[str, dict[str, Variant]]) -> bytes:
    """One object's {oa{sa{sv}}} dict entry as it appears in a GetManagedObjects body at an
    8-aligned offset. The body is a uint32 length, 4 bytes of padding (dict entries are 8-aligned)
    and the entries, each at an 8-aligned offset; so a one-entry array's bytes from offset 8 are
    the entry, and every alignment inside it is relative to a multiple of 8 - the same bytes at any
    8-aligned offset of any body."""
    return bytes(memoryview(dbusfix.marshal_body(GMO_SIGNATURE, [{path: obj}]))[8:])


def join_entries(entries) -> bytes:
    """A whole a{oa{sa{sv}}} body from entries made by marshal_entry, in order: the length,
    padding, and each entry padded to an 8-aligned offset (no padding after the last one: the
    array's length ends with its last element)."""
    parts = [b""]
    pos = 8
    for entry in entries:
        pad = -pos & 7
        if pad:
            parts.append(_PADS[pad])
            pos += pad
        parts.append(entry)
        pos += len(entry)
    length = pos - 8
    if length > _MAX_ARRAY:
        raise ValueError(f"GetManagedObjects would be {length} bytes, more than an array may hold")
    parts[0] = length.to_bytes(4, "little") + _PADS[4]
    return b"".join(parts)


def frame_reply(reply: Message, body: bytes, negotiate_unix_fd: bool = False) -> bytearray:
    """The wire bytes of `reply` (a method return with signature GMO_SIGNATURE, serial set) with
    `body` as its already-marshalled body. The header is the library's own (dbusfix's where the
    library marshals strings wrongly, as 1.84 does): that of the same reply with an empty array
    as body (8 bytes: length 0 and padding), whose body length is then
    set to the real one. Raises ValueError if the library's bytes do not look like that."""
    head = dbusfix.marshall_message(Message(
        message_type=MessageType.METHOD_RETURN, flags=reply.flags,
        reply_serial=reply.reply_serial, destination=reply.destination,
        signature=GMO_SIGNATURE, body=[{}], serial=reply.serial, validate=False),
        negotiate_unix_fd)
    if (len(head) < 24 or len(head) % 8 or head[0:1] != b"l"
            or bytes(head[4:8]) != (8).to_bytes(4, "little") or bytes(head[-8:]) != bytes(8)):
        raise ValueError("unexpected header layout from dbus-fast")
    if len(head) - 8 + len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"GetManagedObjects would exceed {MAX_MESSAGE_SIZE} bytes")
    out = bytearray(memoryview(head)[:-8])
    out[4:8] = len(body).to_bytes(4, "little")
    out += body
    return out


class PremarshalledReply(Message):
    """A GetManagedObjects reply whose body is already bytes. It carries the objects as its
    `body` too, so that if framing the bytes fails, it marshals like any other reply."""

    __slots__ = ("raw_body",)

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:   # what the writer calls
        try:
            return frame_reply(self, self.raw_body, negotiate_unix_fd)
        except Exception as e:  # noqa: BLE001 - the plain reply is always right
            log.warning("GetManagedObjects: cannot send the cached reply (%s); marshalling it", e)
            return dbusfix.marshall_message(self, negotiate_unix_fd)


def _fast_path_works() -> bool:
    """Whether this dbus-fast frames a cached body into the same bytes as it marshals the reply
    itself (checked once, on a small tree with the awkward cases)."""
    objs = {"/a": {"x.Y": {"S": Variant("s", "é"), "E": Variant("ao", []),
                           "D": Variant("a{sv}", {"k": Variant("t", 1)})}},
            "/a/b_2d": {}, "/c": {"x.Z": {}, "x.Y": {"B": Variant("b", True)}}}
    call = Message(destination=":1.1", path="/", member="GetManagedObjects", serial=5,
                   sender=":1.9")
    plain = Message.new_method_return(call, GMO_SIGNATURE, [objs])
    plain.serial = 7
    fast = PremarshalledReply(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                              destination=call.sender, signature=GMO_SIGNATURE, body=[objs],
                              serial=7)
    fast.raw_body = join_entries(marshal_entry(p, o) for p, o in objs.items())
    try:
        return bytes(frame_reply(fast, fast.raw_body)) == \
            bytes(dbusfix.marshall_message(plain, False))
    except Exception:  # noqa: BLE001 - then the fast path is off
        return False


def _no_hold(msg: Message) -> Callable[[], None]:
    return _release_nothing


def _release_nothing() -> None:
    pass


class ObjectTree:
    def __init__(self, api: ApiSpec, authorizer: Authorizer, root: str,
                 details: Callable[[str], dict[str, str]] = lambda path: {},
                 on_call: Callable[[Message], Callable[[], None]] = _no_hold) -> None:
        self.api = api
        # Told of every method call when it arrives; the function it returns is called once the
        # call is answered (or dropped). The life cycle counts calls in flight with it.
        self.on_call = on_call
        self.root = root
        self.authorizer = authorizer
        self.registrations: dict[tuple[str, str], Registration] = {}
        self.objects: dict[str, dict[str, dict[str, Variant]]] = {}
        self._children: dict[str, dict[str, int]] = {}
        self.bus = None
        self.details = details
        self._tasks: set[asyncio.Task] = set()
        self._machine_id: str | None = None
        # GetManagedObjects: each object's marshalled entry, the joined body (None: rebuild),
        # whether the cached path is usable, and the calls waiting for their reply's turn.
        self._entries: dict[str, bytes] = {}
        self._body: bytes | None = None
        self._fast: bool | None = None          # None: not checked yet
        self._fast_failing = False              # the last build from the cache failed (logged)
        self._gmo_waiting: deque[tuple[Message, Callable[[], None]]] = deque()
        self._gmo_sender: asyncio.Future | None = None
        self._pace = True                       # wait for the bus between large replies

    def register(self, registry: dict[tuple[str, str], Registration]) -> None:
        """The handlers of every method; raises RuntimeError unless they match the XML."""
        self.registrations = check_registrations(self.api, registry)

    # -- content ------------------------------------------------------------------------------

    def variants(self, iface: str, props: dict[str, Any]) -> dict[str, Variant]:
        pdefs = self.api.interfaces[iface].properties
        out = {}
        for name, pdef in pdefs.items():
            out[name] = Variant(pdef.tree, props[name], False)
        return out

    def _index_add(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        while parent:
            kids = self._children.setdefault(parent, {})
            kids[name] = kids.get(name, 0) + 1
            parent, _, name = parent.rpartition("/")
        kids = self._children.setdefault("/", {})
        # the loop above stops at "" for the first element; record it under "/"
        first = path.split("/")[1]
        kids[first] = kids.get(first, 0) + 1

    def _index_remove(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        chain = []
        while parent:
            chain.append((parent, name))
            parent, _, name = parent.rpartition("/")
        chain.append(("/", path.split("/")[1]))
        for parent, name in chain:
            kids = self._children.get(parent)
            if kids is None:
                continue
            kids[name] -= 1
            if kids[name] <= 0:
                del kids[name]

    def _stale(self, path: str) -> None:
        """`path` changed: its cached entry, and the joined body, must be made again."""
        self._entries.pop(path, None)
        self._body = None

    def apply(self, updates: dict[str, dict[str, dict[str, Any]] | None]) -> None:
        """Set objects to new contents (None removes) and send the signals for what changed:
        one InterfacesAdded/Removed per object from the manager path, one PropertiesChanged per
        object and interface."""
        # Order: new objects, then property changes (which may point at new objects or stop
        # pointing at old ones), then removals; a client never sees a dangling reference.
        added_s: list[Message] = []
        changed_s: list[Message] = []
        removed_s: list[Message] = []
        for path, ifaces in updates.items():
            old = self.objects.get(path)
            if ifaces is None:
                if old is not None:
                    del self.objects[path]
                    self._stale(path)
                    self._index_remove(path)
                    removed_s.append(self._signal(self.root, OM_IFACE, "InterfacesRemoved",
                                                  "oas", [path, list(old)]))
                continue
            new = {iface: self.variants(iface, props) for iface, props in ifaces.items()}
            if old is None:
                self.objects[path] = new
                self._stale(path)
                self._index_add(path)
                added_s.append(self._signal(self.root, OM_IFACE, "InterfacesAdded",
                                            "oa{sa{sv}}", [path, new]))
                continue
            added = {i: v for i, v in new.items() if i not in old}
            removed = [i for i in old if i not in new]
            for iface, props in new.items():
                if iface in added:
                    continue
                changed = {k: v for k, v in props.items() if old[iface].get(k) != v}
                if changed:
                    changed_s.append(self._signal(path, PROPS_IFACE, "PropertiesChanged",
                                                  "sa{sv}as", [iface, changed, []]))
            if new != old or list(new) != list(old):
                self._stale(path)
            self.objects[path] = new
            if added:
                added_s.append(self._signal(self.root, OM_IFACE, "InterfacesAdded",
                                            "oa{sa{sv}}", [path, added]))
            if removed:
                removed_s.append(self._signal(self.root, OM_IFACE, "InterfacesRemoved", "oas",
                                              [path, removed]))
        if self.bus is not None:
            for sig in (*added_s, *changed_s, *removed_s):
                self.bus.send(sig)

    def emit(self, path: str, iface: str, member: str, sig: str, body: list) -> None:
        """A signal of one of our interfaces (e.g. Job.Completed)."""
        if self.bus is not None:
            self.bus.send(self._signal(path, iface, member, sig, body))

    @staticmethod
    def _signal(path: str, iface: str, member: str, sig: str, body: list) -> Message:
        return Message(message_type=MessageType.SIGNAL, path=path, interface=iface,
                       member=member, signature=sig, body=body, validate=False)

    # -- GetManagedObjects --------------------------------------------------------------------

    def managed_objects_body(self) -> bytes:
        """The marshalled body of GetManagedObjects, from the cached entries (made again only
        for the objects that changed since the last call)."""
        if self._body is None:
            entries = self._entries

            def each():
                for path, obj in self.objects.items():
                    entry = entries.get(path)
                    if entry is None:
                        entry = entries[path] = marshal_entry(path, obj)
                    yield entry
            self._body = join_entries(each())
        return self._body

    def managed_objects_reply(self, msg: Message) -> Message:
        """The reply to GetManagedObjects `msg`: from the cached bytes when this dbus-fast
        frames them as it would marshal the reply itself, else the plain reply."""
        if self._fast is None:
            self._fast = _fast_path_works()
            if not self._fast:
                log.warning("GetManagedObjects: this dbus-fast does not frame cached bodies "
                            "as expected; every reply is marshalled in full")
        if self._fast:
            try:
                reply = PremarshalledReply(message_type=MessageType.METHOD_RETURN,
                                           reply_serial=msg.serial, destination=msg.sender,
                                           signature=GMO_SIGNATURE, body=[self.objects])
                reply.raw_body = self.managed_objects_body()
                self._fast_failing = False
                return reply
            except Exception as e:  # noqa: BLE001 - the plain reply is always right
                self._body = None
                if not self._fast_failing:
                    self._fast_failing = True
                    log.warning("GetManagedObjects: cannot build the reply from the cache "
                                "(%s); marshalling it in full", e)
        return Message.new_method_return(msg, GMO_SIGNATURE, [self.objects])

    def _queue_managed_objects(self, msg: Message) -> None:
        if not wants_reply(msg):
            return
        self._gmo_waiting.append((msg, self.on_call(msg)))
        if self._gmo_sender is None or self._gmo_sender.done():
            self._gmo_sender = asyncio.ensure_future(self._send_managed_objects())

    async def _send_managed_objects(self) -> None:
        """Send the waiting GetManagedObjects replies one at a time: the next one is handed to
        the connection only when the previous one is written out and the bus has taken it in
        (a round trip to the bus behind it has come back). A reply cannot overtake a message
        ahead of it on the connection, so this bounds what a small reply waits for to the rest
        of one large reply, instead of every queued one."""
        while self._gmo_waiting:
            msg, release = self._gmo_waiting.popleft()
            try:
                written = self._reply(msg, self.managed_objects_reply(msg))
            finally:
                release()
            if not isinstance(written, asyncio.Future):
                continue
            try:
                await asyncio.wait_for(asyncio.shield(written), BULK_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a lost or stuck connection: nothing to wait for
                continue
            if self._gmo_waiting and self._pace:
                try:
                    await asyncio.wait_for(self._bus_round_trip(), ROUND_TRIP_TIMEOUT)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - a bus that does not answer GetId
                    self._pace = False
                    log.info("GetManagedObjects: the bus did not answer GetId (%s); large "
                             "replies are no longer paced", type(e).__name__)

    async def _bus_round_trip(self) -> None:
        """A call to the bus itself (GetId, allowed by every bus policy); its reply comes after
        the bus has read everything sent before it."""
        call = getattr(self.bus, "call", None)
        if call is not None:
            await call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="GetId"))

    # -- dispatch -----------------------------------------------------------------------------

    def attach(self, bus) -> None:
        self.bus = bus
        bus.add_message_handler(self._on_message)

    def _is_node(self, path: str) -> bool:
        """A path that introspects (an object, the manager, a path with objects below it, or
        one on the way to the manager) though it may have no object."""
        return (path in self.objects or path == self.root or path == "/"
                or bool(self._children.get(path)) or self.root.startswith(path + "/"))

    def _reply(self, msg: Message, reply: Message):
        """Send `reply` to `msg` unless the caller asked for none; the library's future, if any."""
        if not wants_reply(msg) or self.bus is None or not self.bus.connected:
            return None
        try:
            return self.bus.send(reply)
        except Exception:  # noqa: BLE001 - e.g. a reply that cannot be marshalled (a bug here)
            log.exception("cannot send the reply to %s.%s", msg.interface, msg.member)
            try:
                return self.bus.send(Message.new_error(msg, _FAILED, _INTERNAL))
            except Exception:  # noqa: BLE001 - the connection is gone
                return None

    def _on_message(self, msg: Message):
        """Every method call, on any path, is answered here (True: handled, nothing for the
        library to do); replies and signals are the library's (pending calls, name owners)."""
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        release = self.on_call(msg)
        try:
            try:
                reply = self._dispatch(msg)
            except errors.SanError as e:
                reply = Message.new_error(msg, e.dbus_name, e.message)
            except Exception as e:  # noqa: BLE001 - the one net under every call
                reply = Message.new_error(msg, *errors.to_dbus(e))
            if isinstance(reply, Message):
                self._reply(msg, reply)
        finally:
            release()
        return True

    def _dispatch(self, msg: Message) -> Message | None:
        """The reply to `msg`, or None when it is answered later (or needs no answer)."""
        path = msg.path or "/"
        member = msg.member or ""
        obj = self.objects.get(path)
        iface = msg.interface
        known = obj is not None or self._is_node(path)
        if iface is None:
            iface = self._interface_of(obj, member)
            if iface is None:
                if known:
                    raise errors.BusError(errors.UNKNOWN_METHOD, f"no method {member} at {path}")
                raise errors.BusError(errors.UNKNOWN_OBJECT, f"no object at {path}")
        if iface == PEER_IFACE:                     # on every path, as libdbus and sd-bus do
            return self._peer(msg, member)
        if not known:
            raise errors.BusError(errors.UNKNOWN_OBJECT, f"no object at {path}")
        if iface == INTROSPECT_IFACE:
            if member != "Introspect":
                raise errors.BusError(errors.UNKNOWN_METHOD, f"{iface} has no method {member}")
            self._expect(msg, iface, "")
            return Message.new_method_return(msg, "s", [self.introspect(path)])
        if iface == OM_IFACE:
            if path != self.root:
                raise errors.BusError(errors.UNKNOWN_METHOD,
                                      f"the ObjectManager is at {self.root}")
            if member != "GetManagedObjects":
                raise errors.BusError(errors.UNKNOWN_METHOD, f"{iface} has no method {member}")
            self._expect(msg, iface, "")
            self._queue_managed_objects(msg)
            return None
        if obj is None and path != self.root:
            raise errors.BusError(errors.UNKNOWN_OBJECT, f"no object at {path}")
        if iface == PROPS_IFACE:
            return self._properties(msg, path, obj or {})
        if obj is None or iface not in obj:
            raise errors.BusError(errors.UNKNOWN_INTERFACE, f"{path} has no interface {iface}")
        mdef = self.api.interfaces[iface].methods.get(member)
        if mdef is None:
            raise errors.BusError(errors.UNKNOWN_METHOD, f"{iface} has no method {member}")
        self._expect(msg, iface, mdef.in_signature)
        reg = self.registrations[(iface, mdef.name)]
        *args, raw_options = msg.body
        call = Call(sender=msg.sender or "", path=path, interface=iface, member=mdef.name,
                    options=self._options(raw_options, reg))
        self._spawn(self._run(msg, call, reg, mdef, args), msg)
        return None

    def _interface_of(self, obj: dict | None, member: str) -> str | None:
        """A call without an interface: the object's interface with that method, else the
        standard interface with it."""
        for iface in obj or ():
            if member in self.api.interfaces[iface].methods:
                return iface
        return _STD_MEMBERS.get(member)

    def _spawn(self, coro, msg: Message) -> None:
        release = self.on_call(msg)     # held from now until the task is done
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: release())

    @staticmethod
    def _expect(msg: Message, iface: str, signature: str) -> None:
        if msg.signature != signature:
            raise errors.InvalidArgs(
                f"{iface}.{msg.member} takes arguments of type ({signature}), "
                f"not ({msg.signature})")

    def _peer(self, msg: Message, member: str) -> Message:
        if member == "Ping":
            self._expect(msg, PEER_IFACE, "")
            return Message.new_method_return(msg)
        if member == "GetMachineId":
            self._expect(msg, PEER_IFACE, "")
            return Message.new_method_return(msg, "s", [self.machine_id()])
        raise errors.BusError(errors.UNKNOWN_METHOD, f"{PEER_IFACE} has no method {member}")

    def machine_id(self) -> str:
        """The machine id, read where libdbus reads it (the bus daemon's own answer would need
        a call to the bus that the system bus's policy does not allow)."""
        if self._machine_id is None:
            for name in _MACHINE_ID_FILES:
                try:
                    with open(name, encoding="ascii", errors="replace") as f:
                        text = f.read(64).strip()
                except OSError:
                    continue
                if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
                    self._machine_id = text
                    break
            else:
                raise errors.Failed("this machine has no machine id (/etc/machine-id); "
                                    "systemd-machine-id-setup makes one")
        return self._machine_id

    @staticmethod
    def _options(raw: dict[str, Variant], reg: Registration) -> dict[str, Any]:
        allowed = {AUTH_NO_USER_INTERACTION: "b", **reg.options}
        out = {}
        for key, var in raw.items():
            sig = allowed.get(key)
            if sig is None:
                raise errors.InvalidArgs(
                    f"unknown option {key[:64]!r} for {reg.member}; known options: "
                    + ", ".join(f"{k} ({s})" for k, s in sorted(allowed.items())))
            if var.signature != sig:
                raise errors.InvalidArgs(f"option {key!r} must have type {sig}, "
                                         f"not {var.signature}")
            out[key] = var.value
        return out

    async def _run(self, msg: Message, call: Call, reg: Registration, mdef: MethodDef,
                   args: list) -> None:
        try:
            if reg.action is not None and not (reg.exempt is not None
                                               and await reg.exempt(call)):
                await self.authorizer.check(call, reg.action, self.details(call.path))
            result = await reg.fn(call, *args)
            out_sig = mdef.out_signature
            if out_sig == "":
                body = []
            elif len(get_signature_tree(out_sig).types) == 1:
                body = [result]
            else:
                body = list(result)
            reply = Message.new_method_return(msg, out_sig, body)
        except asyncio.CancelledError:
            reply = Message.new_error(msg, errors.ERROR_PREFIX + "Cancelled",
                                      "the daemon is shutting down")
        except Exception as e:  # noqa: BLE001 - the one net under every call
            reply = Message.new_error(msg, *errors.to_dbus(e))
        self._reply(msg, reply)

    def _properties(self, msg: Message, path: str, obj: dict[str, dict[str, Variant]]):
        """Properties of an object (or of the manager's path, which has none of its own). An
        empty interface name means any interface (the D-Bus specification): the first of the
        object's interfaces that has the property."""
        member = msg.member
        standard = {PEER_IFACE, INTROSPECT_IFACE, PROPS_IFACE}
        if path == self.root:
            standard.add(OM_IFACE)

        def props_of(iface: str) -> dict[str, Variant]:
            props = obj.get(iface)
            if props is not None:
                return props
            if iface in standard:
                return {}
            raise errors.BusError(errors.UNKNOWN_INTERFACE, f"{path} has no interface {iface}")

        def find(iface: str, name: str) -> Variant:
            if iface == "":
                for props in obj.values():
                    if name in props:
                        return props[name]
                raise errors.BusError(errors.UNKNOWN_PROPERTY, f"{path} has no property {name}")
            props = props_of(iface)
            if name not in props:
                raise errors.BusError(errors.UNKNOWN_PROPERTY, f"{iface} has no property {name}")
            return props[name]

        if member == "Get":
            self._expect(msg, PROPS_IFACE, "ss")
            iface, name = msg.body
            return Message.new_method_return(msg, "v", [find(iface, name)])
        if member == "GetAll":
            self._expect(msg, PROPS_IFACE, "s")
            (iface,) = msg.body
            if iface == "":
                merged: dict[str, Variant] = {}
                for props in obj.values():
                    for key, value in props.items():
                        merged.setdefault(key, value)
                return Message.new_method_return(msg, "a{sv}", [merged])
            return Message.new_method_return(msg, "a{sv}", [props_of(iface)])
        if member == "Set":
            self._expect(msg, PROPS_IFACE, "ssv")
            iface, name, _ = msg.body
            find(iface, name)
            where = f"{iface}.{name}" if iface else name
            raise errors.BusError(errors.PROPERTY_READ_ONLY, f"{where} is read-only")
        raise errors.BusError(errors.UNKNOWN_METHOD, f"{PROPS_IFACE} has no method {member}")

    # -- introspection ------------------------------------------------------------------------

    def introspect(self, path: str) -> str:
        parts = [_DOCTYPE, f"<node name={quoteattr(path)}>"]
        obj = self.objects.get(path)
        if obj is not None or path == self.root:
            parts += [_STD_XML[PEER_IFACE], _STD_XML[INTROSPECT_IFACE], _STD_XML[PROPS_IFACE]]
        if path == self.root:
            parts.append(_STD_XML[OM_IFACE])
        for iface in obj or ():
            parts.append(self.api.interfaces[iface].xml)
        key = path if path == "/" else path.rstrip("/")
        for child in sorted(self._children.get(key, {})):
            parts.append(f"<node name={quoteattr(child)}/>")
        if path != self.root and self.root.startswith(key.rstrip("/") + "/") and not \
                self._children.get(key):
            nxt = self.root[len(key.rstrip("/")) + 1:].split("/")[0]
            parts.append(f"<node name={quoteattr(nxt)}/>")
        parts.append("</node>")
        return "\n".join(parts)
