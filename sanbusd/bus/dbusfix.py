"""Fixes for the dbus-fast we run on, from the newest release (5.2) back to Debian 12's 1.84.

1. **The writer** (every version we know of, 1.84 and 5.2 included): `_MessageWriter.write_callback`
   sends with a non-blocking socket and treats BlockingIOError like any other error: it finalizes
   the connection. dbus-next 0.2.3 has the same bug (its issue #153). A scan that adds thousands
   of LUNs sends thousands of InterfacesAdded in one go, fills the socket buffer, and the daemon
   lost the bus (1,024 LUNs: bench/scan.py on 5.2, the same scan on 1.84). Here EAGAIN leaves
   the message where it is; the writer stays registered and goes on when the socket is
   writable. 1.84's writer also takes queued messages from the wrong end (`deque.pop()`):
   whenever messages wait, they go out newest first (a method's reply before the signals sent
   ahead of it); this one takes them in order, as 5.2 does.
2. **Strings** (1.84): its marshaller writes a string's length in characters, not in UTF-8 bytes,
   so any non-ASCII string (an error text with "…", a vendor string) makes an invalid message and
   the bus daemon drops the connection that sent it. Where the library does that, messages are
   marshalled by `marshall_message` below instead (pure Python, the D-Bus specification's
   little-endian format; the same bytes as 5.2's marshaller, which tests/unit/bus checks).

`apply()` patches the library's private writer only after checking the shape of its code (the
attributes the writer keeps, the arguments of the methods replaced, what the replaced method uses)
rather than a version number, and only where the flaw is there; anything it does not recognise is
left alone and logged. `status()` says what was found and done. tests/unit/bus/test_dbusfix.py and
tests/installed/test_debian_dbus_fast.py run against both versions.
"""

from __future__ import annotations

import array
import ast
import inspect
import logging
import socket
import struct
import textwrap
from copy import copy
from importlib.metadata import PackageNotFoundError, version

from dbus_fast import Message, Variant
from dbus_fast._private.marshaller import Marshaller
from dbus_fast.aio import message_bus as _mb
from dbus_fast.signature import get_signature_tree

log = logging.getLogger(__name__)

_Writer = _mb._MessageWriter
# The library's own, kept for tests/unit/bus/test_dbusfix.py, which shows their flaws.
LIBRARY_WRITE_CALLBACK = _Writer.write_callback
LIBRARY_BUFFER_MESSAGE = _Writer.buffer_message
_LIBRARY_MARSHALL = Message._marshall
MAX_MESSAGE_SIZE = 1 << 27      # D-Bus specification: one message, 128 MiB
MAX_ARRAY_SIZE = 1 << 26        # one array, 64 MiB

# What the replacement write_callback reads and writes: the writer's own attributes, set by
# the library's __init__, and two of the bus's.
_WRITER_ATTRS = frozenset({"messages", "negotiate_unix_fd", "bus", "sock", "loop", "buf", "fd",
                           "offset", "unix_fds", "fut"})
_BUS_ATTRS = frozenset({"_user_disconnect", "_finalize"})

_status: dict[str, str] = {}


# -- 1. the writer --------------------------------------------------------------------------------

def _write_callback(self, remove_writer: bool = True) -> None:
    sock = self.sock
    try:
        while True:
            if self.buf is None:
                if not self.messages:
                    if remove_writer:
                        self.loop.remove_writer(self.fd)
                    return
                buf, unix_fds, fut = self.messages.popleft()        # in the order queued
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


def _buffer_message(self, msg: Message, future=None) -> None:
    """The library's buffer_message, marshalling with marshall_message (see `_marshall_of`)."""
    unix_fds = msg.unix_fds
    self.messages.append((_marshall_of(msg, self.negotiate_unix_fd),
                          copy(unix_fds) if unix_fds else None, future))


def _marshall_of(msg: Message, negotiate_unix_fd: bool) -> bytearray:
    """A message's wire bytes: its own _marshall if its class has one of its own (it then
    marshals correctly itself, as bus/tree.py's PremarshalledReply does), else ours."""
    if type(msg)._marshall is _LIBRARY_MARSHALL:
        return marshall_message(msg, negotiate_unix_fd)
    return msg._marshall(negotiate_unix_fd)


def _class_ast(cls) -> ast.ClassDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    node = tree.body[0]
    if not isinstance(node, ast.ClassDef):
        raise ValueError("not a class")
    return node


def _method(cls_node: ast.ClassDef, name: str) -> ast.FunctionDef:
    for node in cls_node.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ValueError(f"it has no {name}()")


def _self_attrs(fn: ast.FunctionDef) -> set[str]:
    return {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "self"}


def _arg_names(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.args]


def writer_flaws() -> list[str]:
    """The flaws of this dbus-fast's _MessageWriter: "eagain" (a full socket ends the
    connection), "lifo" (queued messages go out newest first). Raises ValueError saying what
    differs if its code is not the shape the replacement write_callback and buffer_message were
    written for (the attributes it keeps, their arguments, what write_callback uses)."""
    cls = _class_ast(_Writer)
    init = _method(cls, "__init__")
    assigned = set()
    for n in ast.walk(init):
        targets = n.targets if isinstance(n, ast.Assign) else \
            [n.target] if isinstance(n, ast.AnnAssign) else []
        assigned |= {t.attr for t in targets if isinstance(t, ast.Attribute)
                     and isinstance(t.value, ast.Name) and t.value.id == "self"}
    if missing := _WRITER_ATTRS - assigned:
        raise ValueError(f"its writer keeps no {', '.join(sorted(missing))}")
    wc = _method(cls, "write_callback")
    if _arg_names(wc) != ["self", "remove_writer"]:
        raise ValueError(f"write_callback takes {_arg_names(wc)}")
    if extra := _self_attrs(wc) - _WRITER_ATTRS - {"write_callback"}:
        raise ValueError(f"write_callback also uses {', '.join(sorted(extra))}")
    bus_attrs = {n.attr for n in ast.walk(wc) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Attribute) and n.value.attr == "bus"}
    if bus_attrs != _BUS_ATTRS:
        raise ValueError(f"write_callback uses the bus's {', '.join(sorted(bus_attrs))}")
    bm = _method(cls, "buffer_message")
    if _arg_names(bm) != ["self", "msg", "future"]:
        raise ValueError(f"buffer_message takes {_arg_names(bm)}")
    appended = [n for n in ast.walk(bm) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr == "append"]
    if len(appended) != 1 or not (len(appended[0].args) == 1 and isinstance(
            appended[0].args[0], ast.Tuple) and len(appended[0].args[0].elts) == 3):
        raise ValueError("buffer_message does not queue (bytes, fds, future)")
    for name in ("_future_set_result", "_future_set_exception"):
        if not callable(getattr(_mb, name, None)):
            raise ValueError(f"dbus_fast.aio.message_bus has no {name}")
    flaws = []
    caught = {n.id for h in ast.walk(wc) if isinstance(h, ast.ExceptHandler) and h.type
              for n in ast.walk(h.type) if isinstance(n, ast.Name)}
    if "BlockingIOError" not in caught:
        flaws.append("eagain")
    pops = {n.func.attr for n in ast.walk(wc) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr in ("pop", "popleft")}
    if pops != {"popleft"}:
        flaws.append("lifo")
    return flaws


# -- 2. strings -----------------------------------------------------------------------------------

def library_marshals_utf8() -> bool:
    """Whether the library writes a string's length in bytes (5.2) or in characters (1.84)."""
    try:
        data = _LIBRARY_MARSHALL(Message(path="/", member="M", signature="s", body=["é"],
                                         serial=1), False)
    except Exception:  # noqa: BLE001 - a library that cannot: ours is used
        return False
    return bytes(data[-7:]) == b"\x02\x00\x00\x00\xc3\xa9\x00"


_PADS = tuple(b"\0" * n for n in range(8))
_U32 = struct.Struct("<I").pack
_FIXED = {"y": (1, struct.Struct("<B").pack), "n": (2, struct.Struct("<h").pack),
          "q": (2, struct.Struct("<H").pack), "i": (4, struct.Struct("<i").pack),
          "u": (4, _U32), "h": (4, _U32), "x": (8, struct.Struct("<q").pack),
          "t": (8, struct.Struct("<Q").pack), "d": (8, struct.Struct("<d").pack)}


def _write(buf: bytearray, t, value) -> None:
    """Append `value` of SignatureType `t` to `buf` (aligned relative to its start)."""
    tok = t.token
    fixed = _FIXED.get(tok)
    if fixed is not None:
        size, pack = fixed
        buf += _PADS[-len(buf) % size]
        buf += pack(value)
    elif tok == "s" or tok == "o":
        data = value.encode()
        buf += _PADS[-len(buf) & 3]
        buf += _U32(len(data))
        buf += data
        buf.append(0)
    elif tok == "a":
        buf += _PADS[-len(buf) & 3]
        at = len(buf)
        buf += b"\0\0\0\0"
        child = t.children[0]
        ctok = child.token
        if ctok in "xtd{(":
            buf += _PADS[-len(buf) & 7]
        start = len(buf)
        if ctok == "{":
            key_t, value_t = child.children
            for k, v in value.items():
                buf += _PADS[-len(buf) & 7]
                _write(buf, key_t, k)
                _write(buf, value_t, v)
        elif ctok == "y":
            buf += bytes(value)
        else:
            for v in value:
                _write(buf, child, v)
        length = len(buf) - start
        if length > MAX_ARRAY_SIZE:
            raise ValueError(f"an array of {length} bytes is more than D-Bus allows")
        buf[at:at + 4] = _U32(length)
    elif tok == "v":
        if not isinstance(value, Variant):
            raise TypeError(f"a variant must be a Variant, not {type(value).__name__}")
        sig = value.signature.encode()
        buf.append(len(sig))
        buf += sig
        buf.append(0)
        _write(buf, value.type, value.value)
    elif tok == "b":
        buf += _PADS[-len(buf) & 3]
        buf += _U32(1 if value else 0)
    elif tok == "(":
        buf += _PADS[-len(buf) & 7]
        for ct, v in zip(t.children, value, strict=True):
            _write(buf, ct, v)
    elif tok == "g":
        data = value.encode()
        buf.append(len(data))
        buf += data
        buf.append(0)
    else:
        raise NotImplementedError(f"D-Bus type {tok!r}")


LIBRARY_MARSHALS_UTF8 = library_marshals_utf8()


def marshal_body(signature: str, body: list) -> bytearray:
    """The body `body` of signature `signature` in D-Bus's little-endian format, starting at an
    8-aligned offset of a message: the library's where it marshals strings right, else ours."""
    if LIBRARY_MARSHALS_UTF8:
        return Marshaller(signature, body).marshall()
    return _marshal_body_own(signature, body)


def _marshal_body_own(signature: str, body: list) -> bytearray:
    buf = bytearray()
    types = get_signature_tree(signature).types
    if len(types) != len(body):
        raise ValueError(f"a body of signature {signature!r} needs {len(types)} values, "
                         f"not {len(body)}")
    for t, value in zip(types, body):
        _write(buf, t, value)
    return buf


def _field_s(h: bytearray, code: int, sig: bytes, value: str) -> None:
    h += _PADS[-len(h) & 7]
    h += bytes((code, 1)) + sig + b"\0"
    data = value.encode()
    h += _U32(len(data))            # 4-aligned already: 8-aligned + 4
    h += data
    h.append(0)


def marshall_message(msg: Message, negotiate_unix_fd: bool = False) -> bytearray:
    """`msg` on the wire: the same bytes as dbus-fast 5.2's Message._marshall (fields in its
    order), with every string's length in bytes. Ours where the library's is wrong (1.84);
    the library's own elsewhere."""
    if LIBRARY_MARSHALS_UTF8:
        return _LIBRARY_MARSHALL(msg, negotiate_unix_fd)
    return _marshall_own(msg, negotiate_unix_fd)


def _marshall_own(msg: Message, negotiate_unix_fd: bool = False) -> bytearray:
    body = _marshal_body_own(msg.signature, msg.body)
    flags = msg.flags
    h = bytearray(struct.pack("<BBBBIII", 0x6C, msg.message_type.value,
                              int(getattr(flags, "value", flags)), 1, len(body), msg.serial, 0))
    if msg.path:
        _field_s(h, 1, b"o", msg.path)
    if msg.interface:
        _field_s(h, 2, b"s", msg.interface)
    if msg.member:
        _field_s(h, 3, b"s", msg.member)
    if msg.error_name:
        _field_s(h, 4, b"s", msg.error_name)
    if msg.reply_serial:
        h += _PADS[-len(h) & 7]
        h += b"\x05\x01u\0" + _U32(msg.reply_serial)
    if msg.destination:
        _field_s(h, 6, b"s", msg.destination)
    if msg.signature:
        h += _PADS[-len(h) & 7]
        sig = msg.signature.encode()
        h += b"\x08\x01g\0" + bytes((len(sig),)) + sig + b"\0"
    if msg.unix_fds and negotiate_unix_fd:
        h += _PADS[-len(h) & 7]
        h += b"\x09\x01u\0" + _U32(len(msg.unix_fds))
    h[12:16] = _U32(len(h) - 16)
    h += _PADS[-len(h) & 7]
    if len(h) + len(body) > MAX_MESSAGE_SIZE:
        raise ValueError(f"a message of {len(h) + len(body)} bytes is more than D-Bus allows")
    h += body
    return h


# -- applying them --------------------------------------------------------------------------------

def installed_version() -> str:
    try:
        return version("dbus-fast")
    except PackageNotFoundError:
        return "unknown"


def status() -> dict[str, str]:
    """What apply() found and did: "writer" is "patched" (flaws fixed), "sound" (no flaw found)
    or "not applied: why"; "flaws" the writer's flaws; "marshal" is "ours" (the library's
    string marshalling is wrong) or "library"."""
    return dict(_status)


def apply() -> bool:
    """Apply the fixes this dbus-fast needs (once); True if its writer is patched or sound."""
    if not _status:
        _apply()
    return _status["writer"] in ("patched", "sound")


def _apply() -> None:
    found = installed_version()
    _status["version"] = found
    marshal_ok = LIBRARY_MARSHALS_UTF8
    _status["marshal"] = "library" if marshal_ok else "ours"
    try:
        flaws = writer_flaws()
    except (OSError, TypeError, ValueError, SyntaxError) as e:
        _status["writer"] = f"not applied: {e}"
        _status["flaws"] = "unknown"
        log.warning("dbus-fast %s: its message writer is not the one sanbusd's fixes were "
                    "written for (%s): they are not applied; if a burst of signals drops the "
                    "bus connection, this version needs them (tests/bus/test_scan.py checks)",
                    found, e)
        if not marshal_ok:
            log.warning("dbus-fast %s marshals non-ASCII strings wrongly: a message with one "
                        "will cost the connection", found)
        return
    _status["flaws"] = ",".join(flaws) or "none"
    if flaws:
        _Writer.write_callback = _write_callback
    if not marshal_ok:
        _Writer.buffer_message = _buffer_message
    _status["writer"] = "patched" if flaws else "sound"
    done = [*(["a full socket waits"] if "eagain" in flaws else []),
            *(["queued messages go out in order"] if "lifo" in flaws else []),
            *([] if marshal_ok else ["strings are marshalled with their length in bytes"])]
    if done:
        log.info("dbus-fast %s: fixed: %s", found, "; ".join(done))
