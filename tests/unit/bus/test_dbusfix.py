"""sanbusd's fixes for dbus-fast (sanbusd/bus/dbusfix.py), on whichever dbus-fast runs them.

The venv has the newest release (5.2); tests/installed/test_debian_dbus_fast.py runs this file
under Debian's python3 with Debian 12's python3-dbus-fast 1.84 as well. Each test says what it
shows on both: the writer's flaws are real there (a full socket drops the connection; on 1.84,
queued messages also go out newest first), the patched writer has neither, and messages are
marshalled right (1.84's marshaller writes a non-ASCII string's length in characters).
"""

from __future__ import annotations

import asyncio
import io
import socket

import pytest
from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller
from dbus_fast.aio import message_bus as mb

from sanbusd.bus import dbusfix
from sanbusd.client import plain

ROOT = "/org/example/SanStorage"


def unmarshal(data: bytes) -> Message:
    stream = io.BytesIO(bytes(data))
    try:
        reader = Unmarshaller(stream, negotiate_unix_fd=False)
    except TypeError:               # dbus-fast 1.84 has no such argument
        reader = Unmarshaller(stream)
    msg = reader.unmarshall()
    assert msg is not None, "incomplete message"
    return msg


def unmarshal_all(data: bytes) -> list[Message]:
    """The messages in a stream of them (each cut by its own lengths), unmarshalled by the
    library."""
    out, pos = [], 0
    while pos < len(data):
        fields = int.from_bytes(data[pos + 12:pos + 16], "little")
        body = int.from_bytes(data[pos + 4:pos + 8], "little")
        end = pos + 16 + fields + (-fields & 7) + body
        assert end <= len(data), "incomplete message"
        out.append(unmarshal(data[pos:end]))
        pos = end
    return out


def messages(text: str) -> list[Message]:
    """Messages of every kind and the awkward bodies, with `text` in their strings."""
    props = {"S": Variant("s", text), "O": Variant("o", ROOT + "/luns/1_0_0_1"),
             "Names": Variant("as", [text, "", text * 3]), "E": Variant("ao", []),
             "T": Variant("t", 2**63 + 5), "X": Variant("x", -(2**40)), "D": Variant("d", 0.1),
             "Y": Variant("y", 200), "N": Variant("n", -3), "Q": Variant("q", 65535),
             "I": Variant("i", -7), "U": Variant("u", 2**32 - 1), "B": Variant("b", True),
             "G": Variant("g", "a{sv}"), "Bytes": Variant("ay", bytes(range(9))),
             "Pairs": Variant("a(su)", [[text, 1], ["p", 2]]),   # 1.84: lists
             "Deep": Variant("a{sv}", {"v": Variant("v", Variant("s", text)),
                                       "e": Variant("a{sv}", {}),
                                       "m": Variant("a{st}", {text: 1, "k": 2})})}
    return [
        Message(destination="org.example.SanStorage", path=ROOT + "/Manager",
                interface="org.example.SanStorage.Manager", member="ScanAll",
                signature="a{sv}", body=[{"hosts": Variant("ao", [ROOT + "/hosts/host1"]),
                                          "name": Variant("s", text)}], serial=3),
        Message(message_type=MessageType.SIGNAL, path=ROOT,
                interface="org.freedesktop.DBus.ObjectManager", member="InterfacesAdded",
                signature="oa{sa{sv}}", body=[ROOT + "/luns/1_0_0_1", {"x.Y": props}],
                serial=2**32 - 1),
        Message(message_type=MessageType.ERROR, error_name="org.example.SanStorage.Error.Invalid",
                reply_serial=9, destination=":1.42", signature="s",
                body=[f"{text!r} is not a WWID; give it as sysfs shows it (naa.6001405...)"],
                serial=10),
        Message(message_type=MessageType.METHOD_RETURN, reply_serial=11, destination=":1.7",
                signature="a{oa{sa{sv}}}", body=[{ROOT + "/a": {"x.Y": props, "x.Z": {}},
                                                  ROOT + "/b": {}}], serial=12),
        Message(message_type=MessageType.METHOD_RETURN, reply_serial=13, destination=":1.7",
                serial=14, flags=MessageFlag.NO_REPLY_EXPECTED),
        Message(destination="org.example.Test", path="/", member="TakeFd", signature="h",
                body=[0], unix_fds=[1], serial=15),
    ]


@pytest.mark.parametrize("text", ["plain ascii", "é…✓ naa.6001405… Ω", ""])
def test_messages_are_marshalled_as_a_sound_dbus_fast_does(text):
    for msg in messages(text):
        for fds in (False, True):
            ours = bytes(dbusfix._marshall_own(msg, fds))
            assert bytes(dbusfix.marshall_message(msg, fds)) == (
                ours if not dbusfix.LIBRARY_MARSHALS_UTF8 else bytes(msg._marshall(fds)))
            if dbusfix.LIBRARY_MARSHALS_UTF8 or text.isascii():
                # 5.2 for everything; 1.84 where its marshaller is right (ASCII strings)
                assert ours == bytes(msg._marshall(fds)), msg.member or msg.error_name
            (back,) = unmarshal_all(ours)
            assert plain(back.body) == plain(msg.body)
            assert (back.message_type, back.serial, back.signature, back.path,
                    back.interface, back.member, back.error_name, back.destination,
                    back.reply_serial) == (msg.message_type, msg.serial, msg.signature,
                                           msg.path, msg.interface, msg.member,
                                           msg.error_name, msg.destination, msg.reply_serial)
            assert back.flags == msg.flags


def test_a_string_length_is_counted_in_bytes():
    body = bytes(dbusfix.marshal_body("s", ["é…"]))
    assert body == (5).to_bytes(4, "little") + "é…".encode() + b"\0"
    lib = bytes(Message(path="/", member="M", signature="s", body=["é…"])._marshall(False))
    assert dbusfix.LIBRARY_MARSHALS_UTF8 == lib.endswith(body)


def test_bad_bodies_are_refused_not_sent():
    for sig, body in [("s", [1]), ("(su)", [("a",)]), ("v", ["not a variant"]), ("u", [-1]),
                      ("as", [[1]]), ("ss", ["one"])]:
        with pytest.raises(Exception):     # noqa: B017 - struct.error, TypeError, ValueError
            dbusfix._marshall_own(Message(path="/", member="M", signature=sig, body=body))


def test_the_writer_is_recognised_and_its_flaws_found():
    flaws = dbusfix.writer_flaws()
    assert "eagain" in flaws                    # 1.84 and 5.2 alike
    assert ("lifo" in flaws) == (dbusfix.installed_version().startswith("1."))
    assert dbusfix.apply() is True
    st = dbusfix.status()
    assert st["writer"] == "patched" and st["version"] == dbusfix.installed_version()
    assert st["marshal"] == ("library" if dbusfix.LIBRARY_MARSHALS_UTF8 else "ours")
    assert mb._MessageWriter.write_callback is dbusfix._write_callback
    assert (mb._MessageWriter.buffer_message is dbusfix._buffer_message) == \
        (not dbusfix.LIBRARY_MARSHALS_UTF8)
    assert dbusfix.apply() is True and dbusfix.status() == st        # once


def test_an_unknown_writer_shape_is_left_alone(monkeypatch):
    class Other:
        def __init__(self, bus):
            self.queue = []

        def write_callback(self, remove_writer=True):
            pass

    monkeypatch.setattr(dbusfix, "_Writer", Other)
    with pytest.raises(ValueError, match="keeps no"):
        dbusfix.writer_flaws()


class FakeBus:
    """What _MessageWriter needs of a bus, on one end of a socket pair."""

    def __init__(self, sock: socket.socket, loop) -> None:
        self._negotiate_unix_fd = False
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._user_disconnect = False
        self.unique_name = ":1.1"
        self.finalized: list[BaseException | None] = []

    def _finalize(self, err=None) -> None:
        """As the library's: the connection is over (here: nothing more is written)."""
        self.finalized.append(err)
        self._loop.remove_writer(self._fd)


def burst(write_callback, buffer_message, count: int = 3000, text: str = "é… LUN") -> tuple:
    """Send `count` signals through a real _MessageWriter (with these methods) into a socket
    with a small buffer that the other end reads only from the event loop, as the bus daemon
    does: the writer meets a full socket many times. What arrived, and the bus's finalize
    calls."""
    orig = (mb._MessageWriter.write_callback, mb._MessageWriter.buffer_message)
    mb._MessageWriter.write_callback = write_callback
    mb._MessageWriter.buffer_message = buffer_message

    async def go():
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        peer.setblocking(False)
        bus = FakeBus(ours, loop)
        writer = mb._MessageWriter(bus)
        received = bytearray()

        def read():
            try:
                received.extend(peer.recv(65536))
            except BlockingIOError:
                pass
        loop.add_reader(peer.fileno(), read)
        futures = []
        for n in range(count):
            if bus.finalized:
                break
            msg = Message(message_type=MessageType.SIGNAL, path=f"{ROOT}/luns/1_0_0_{n}",
                          interface="org.freedesktop.DBus.ObjectManager",
                          member="InterfacesAdded", signature="oa{sa{sv}}",
                          body=[f"{ROOT}/luns/1_0_0_{n}", {"x.Lun": {
                              "Vendor": Variant("s", text), "N": Variant("u", n)}}],
                          serial=n + 1)
            fut = loop.create_future()
            writer.schedule_write(msg, fut)
            futures.append(fut)
            if n % 500 == 0:
                await asyncio.sleep(0)          # the reader gets a turn now and then
        done, _ = await asyncio.wait(futures, timeout=0 if bus.finalized else 20)
        for _ in range(200):                    # let the reader take in the rest
            await asyncio.sleep(0.01)
            if bus.finalized or (not writer.messages and writer.buf is None):
                break
        for fut in futures:
            if fut.done():
                fut.exception()                 # retrieved (a failed one is the flaw's)
            else:
                fut.cancel()
        await asyncio.sleep(0.05)
        loop.remove_reader(peer.fileno())
        loop.remove_writer(ours.fileno())
        ours.close()
        peer.close()
        return bytes(received), bus.finalized, sum(not f.cancelled() and f.exception() is None
                                                   for f in done)
    try:
        return asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        mb._MessageWriter.write_callback, mb._MessageWriter.buffer_message = orig


def test_the_library_writer_drops_the_connection_on_a_full_socket():
    """The flaw, on this dbus-fast: EAGAIN finalizes the connection."""
    data, finalized, _ = burst(dbusfix.LIBRARY_WRITE_CALLBACK, dbusfix.LIBRARY_BUFFER_MESSAGE,
                               text="ascii")
    assert finalized and isinstance(finalized[0], BlockingIOError)


def test_the_patched_writer_waits_and_sends_everything_in_order():
    dbusfix.apply()
    data, finalized, done = burst(dbusfix._write_callback, mb._MessageWriter.buffer_message)
    assert finalized == []
    assert done == 3000
    got = unmarshal_all(data)
    assert [m.serial for m in got] == list(range(1, 3001))        # all, in the order sent
    assert {plain(m.body[1])["x.Lun"]["Vendor"] for m in got} == {"é… LUN"}
