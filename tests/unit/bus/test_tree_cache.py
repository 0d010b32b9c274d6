"""GetManagedObjects from cached bytes: the same reply, byte for byte, as marshalling the tree.

The tree keeps each object's marshalled dict entry and joins them into the reply's body. These
tests build trees with awkward content (empty arrays, nested a{sv}, structs, every basic type,
escaped path elements, entries of every length modulo 8, so every padding case occurs), change
them (adds, property changes, interface changes, removals, identical re-renders) and compare the
cached reply with dbus-fast's plain one after every step: the bytes, and the unmarshalled body
against the tree's content. No bus is needed.

The plain reply is marshalled as the connection would send it (dbusfix.marshall_message: the
library's own marshaller, or on Debian 12's dbus-fast 1.84, whose marshaller writes non-ASCII
strings wrongly, dbusfix's). tests/installed/test_debian_dbus_fast.py runs this file under
Debian's python3 and its dbus-fast 1.84 too.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller

from sanbusd.authz.registry import Authorizer
from sanbusd.bus import dbusfix
from sanbusd.bus import tree as tree_mod
from sanbusd.bus.contract import parse_api
from sanbusd.bus.tree import GMO_SIGNATURE, ObjectTree, PremarshalledReply
from sanbusd.client import plain
from sanbusd.publish import paths

ROOT = "/org/example/SanStorage"
OM = "org.freedesktop.DBus.ObjectManager"
A = "org.example.Test.A"
B = "org.example.Test.B"

API = parse_api(f"""<node>
  <interface name="{A}">
    <property name="S" type="s" access="read"/>
    <property name="U" type="u" access="read"/>
    <property name="T" type="t" access="read"/>
    <property name="B" type="b" access="read"/>
    <property name="D" type="d" access="read"/>
    <property name="Y" type="y" access="read"/>
    <property name="N" type="n" access="read"/>
    <property name="X" type="x" access="read"/>
    <property name="O" type="o" access="read"/>
    <property name="Paths" type="ao" access="read"/>
    <property name="Names" type="as" access="read"/>
  </interface>
  <interface name="{B}">
    <property name="Extra" type="a{{sv}}" access="read"/>
    <property name="Pairs" type="a(su)" access="read"/>
    <property name="Bytes" type="ay" access="read"/>
    <property name="Map" type="a{{st}}" access="read"/>
  </interface>
</node>""")


def a_props(n: int, **over) -> dict:
    props = {"S": "x" * (n % 13), "U": n, "T": 2**40 + n, "B": n % 2 == 0, "D": n / 7,
             "Y": n % 256, "N": -n % 30000, "X": -(2**40) - n,
             "O": f"{ROOT}/luns/1_0_0_{n}" if n % 3 else "/",
             "Paths": [f"{ROOT}/hosts/host{i}" for i in range(n % 4)],
             "Names": ["é" + "n" * (i + n // 4) for i in range(n % 5)]}
    props.update(over)
    return props


def b_props(n: int, **over) -> dict:
    props = {"Extra": {} if n % 2 else {
                "k": Variant("s", "v" * (n % 7)), "nested": Variant("a{sv}", {
                    "inner": Variant("a{sv}", {"deep": Variant("at", [n, n + 1])}),
                    "empty": Variant("a{sv}", {}), "none": Variant("as", [])})},
             "Pairs": [("p" * i, i) for i in range(n % 3)],
             "Bytes": bytes(range(n % 9)),
             "Map": {f"m{i}": i for i in range(n % 4)}}
    props.update(over)
    return props


def lun_path(n: int) -> str:
    # escaped elements (paths.escape turns anything into [A-Za-z0-9_]) of every length
    return f"{ROOT}/multipath/" + paths.escape("é/../" * (n % 3) + "w" * n)


def new_tree() -> ObjectTree:
    return ObjectTree(API, Authorizer(), ROOT)


def gmo_call(serial: int = 11, flags: MessageFlag = MessageFlag.NONE) -> Message:
    return Message(destination="org.example.SanStorage", path=ROOT, interface=OM,
                   member="GetManagedObjects", serial=serial, sender=":1.42", flags=flags)


def unmarshal(data: bytes) -> Message:
    stream = io.BytesIO(bytes(data))
    try:
        reader = Unmarshaller(stream, negotiate_unix_fd=False)
    except TypeError:               # dbus-fast 1.84 has no such argument (and no fds here)
        reader = Unmarshaller(stream)
    msg = reader.unmarshall()
    assert msg is not None, "incomplete message"
    return msg


def assert_cached_reply_is_right(tree: ObjectTree) -> bytes:
    call = gmo_call()
    fast = tree.managed_objects_reply(call)
    assert isinstance(fast, PremarshalledReply)
    fast.serial = 99
    reference = Message.new_method_return(call, GMO_SIGNATURE, [tree.objects])
    reference.serial = 99
    got, want = bytes(fast._marshall(False)), bytes(dbusfix.marshall_message(reference))
    assert got == want
    if dbusfix.LIBRARY_MARSHALS_UTF8:
        assert want == bytes(reference._marshall(False))     # the library's own bytes
    msg = unmarshal(got)
    assert msg.message_type == MessageType.METHOD_RETURN and msg.reply_serial == 11
    assert msg.destination == ":1.42" and msg.signature == GMO_SIGNATURE
    assert plain(msg.body) == [plain(tree.objects)]
    assert list(msg.body[0]) == list(tree.objects)          # the tree's order, too
    return got


def test_cached_reply_matches_the_plain_one_through_adds_changes_and_removals():
    tree = new_tree()
    assert_cached_reply_is_right(tree)                        # the empty tree: a{} is 8 bytes

    tree.apply({f"{ROOT}/Manager": {A: a_props(0)}})
    assert_cached_reply_is_right(tree)

    tree.apply({lun_path(n): ({B: b_props(n), A: a_props(n)} if n % 4 == 3 else
                              {A: a_props(n), B: b_props(n)} if n % 4 else
                              {B: b_props(n)} if n % 8 else {})
                for n in range(1, 100)})
    assert_cached_reply_is_right(tree)
    assert {len(e) % 8 for e in tree._entries.values()} == set(range(8))   # every padding

    # property changes (longer, shorter, empty arrays, nested a{sv} edited)
    tree.apply({lun_path(5): {A: a_props(5, S="changed" * 9, Paths=[]), B: b_props(5)},
                lun_path(6): {A: a_props(6, Names=[]), B: b_props(6, Extra={
                    "nested": Variant("a{sv}", {"x": Variant("v", Variant("s", "y"))})})}})
    assert_cached_reply_is_right(tree)

    # interfaces added and removed on existing objects
    tree.apply({lun_path(7): {B: b_props(7)}, lun_path(8): {A: a_props(8), B: b_props(8)}})
    assert_cached_reply_is_right(tree)

    # removals, including the first and the last object; then one comes back (at the end)
    first, *_, last = list(tree.objects)
    tree.apply({first: None, last: None, lun_path(20): None, "/not/there": None})
    assert_cached_reply_is_right(tree)
    tree.apply({first: {A: a_props(1)}})
    assert_cached_reply_is_right(tree)

    # everything gone
    tree.apply({p: None for p in list(tree.objects)})
    assert_cached_reply_is_right(tree)


def test_only_changed_objects_are_marshalled_again():
    tree = new_tree()
    tree.apply({lun_path(n): {A: a_props(n), B: b_props(n)} for n in range(1, 20)})
    body = tree.managed_objects_body()
    entries = dict(tree._entries)
    assert tree.managed_objects_body() is body                # no change: the same bytes

    # the same content again (a re-render that changed nothing): nothing is made again
    tree.apply({lun_path(3): {A: a_props(3), B: b_props(3)}})
    assert tree.managed_objects_body() is body

    tree.apply({lun_path(3): {A: a_props(3, U=12345), B: b_props(3)},
                lun_path(4): None})
    assert_cached_reply_is_right(tree)
    for path, entry in tree._entries.items():
        if path != lun_path(3):
            assert entry is entries[path], path
    assert tree._entries[lun_path(3)] is not entries[lun_path(3)]
    assert lun_path(4) not in tree._entries


def test_the_plain_reply_is_used_when_the_cache_cannot_be():
    tree = new_tree()
    tree.apply({lun_path(n): {A: a_props(n)} for n in range(1, 6)})
    want = assert_cached_reply_is_right(tree)

    # framing fails when the writer asks for the bytes: the reply marshals itself instead
    orig = tree_mod.frame_reply
    try:
        tree_mod.frame_reply = lambda *a, **k: (_ for _ in ()).throw(ValueError("no"))
        reply = tree.managed_objects_reply(gmo_call())
        reply.serial = 99
        assert bytes(reply._marshall(False)) == want
    finally:
        tree_mod.frame_reply = orig

    # building the body fails: a plain reply; once it builds again, cached replies again
    orig_entry = tree_mod.marshal_entry
    try:
        tree_mod.marshal_entry = lambda *a: (_ for _ in ()).throw(ValueError("no"))
        tree.apply({lun_path(9): {A: a_props(9)}})
        for _ in range(2):
            reply = tree.managed_objects_reply(gmo_call())
            assert type(reply) is Message
            reply.serial = 99
            assert plain(unmarshal(dbusfix.marshall_message(reply)).body) == \
                [plain(tree.objects)]
    finally:
        tree_mod.marshal_entry = orig_entry
    assert_cached_reply_is_right(tree)

    # a dbus-fast that frames differently is detected up front
    tree2 = new_tree()
    orig_check = tree_mod._fast_path_works
    try:
        tree_mod._fast_path_works = lambda: False
        assert type(tree2.managed_objects_reply(gmo_call())) is Message
    finally:
        tree_mod._fast_path_works = orig_check


class FakeBus:
    """Records what is sent; GetManagedObjects replies are "written" when the test says so."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[Message, asyncio.Future]] = []
        self.serial = 0
        self.round_trips = 0

    def add_message_handler(self, handler) -> None:
        self.handler = handler

    async def call(self, msg: Message) -> Message:
        assert msg.destination == "org.freedesktop.DBus" and msg.member == "GetId"
        self.round_trips += 1
        msg.serial = 1000 + self.round_trips
        return Message.new_method_return(msg, "s", ["0" * 32])

    def send(self, msg: Message) -> asyncio.Future:
        self.serial += 1
        msg.serial = self.serial
        fut = asyncio.get_running_loop().create_future()
        if not isinstance(msg, PremarshalledReply):
            fut.set_result(None)                # small messages are written at once
        self.sent.append((msg, fut))
        return fut


async def settle() -> None:
    """Let the tree's sender task run as far as it can."""
    for _ in range(50):
        await asyncio.sleep(0)


def test_large_replies_go_out_one_at_a_time_and_small_ones_do_not_wait_behind_them():
    async def go():
        tree = new_tree()
        bus = FakeBus()
        tree.attach(bus)
        tree.apply({lun_path(n): {A: a_props(n)} for n in range(1, 4)})
        for serial in (21, 22, 23):
            assert bus.handler(gmo_call(serial)) is True
        bus.handler(gmo_call(24, MessageFlag.NO_REPLY_EXPECTED))   # never answered
        await asyncio.sleep(0)
        large = [m for m, _ in bus.sent if isinstance(m, PremarshalledReply)]
        assert [m.reply_serial for m in large] == [21]            # one in flight

        get = Message(destination="org.example.SanStorage", path=lun_path(1),
                      interface="org.freedesktop.DBus.Properties", member="Get",
                      signature="ss", body=[A, "U"], serial=30, sender=":1.42")
        assert bus.handler(get) is True
        assert bus.sent[-1][0].reply_serial == 30                 # answered at once

        # a change while replies wait: its signal goes out first, and the waiting replies
        # carry the new content (never older than a signal the client has seen)
        tree.apply({lun_path(2): {A: a_props(2, S="new")}})
        assert bus.sent[-1][0].member == "PropertiesChanged"

        for expect in (22, 23):
            next(f for m, f in bus.sent if isinstance(m, PremarshalledReply)
                 and not f.done()).set_result(None)
            await settle()
            large = [m for m, _ in bus.sent if isinstance(m, PremarshalledReply)]
            assert large[-1].reply_serial == expect
            assert bus.round_trips == expect - 21      # the bus took in the one before
        next(f for m, f in bus.sent if isinstance(m, PremarshalledReply)
             and not f.done()).set_result(None)
        await settle()
        assert bus.round_trips == 2                     # none after the last one
        assert tree._pace
        large = [m for m, _ in bus.sent if isinstance(m, PremarshalledReply)]
        assert [m.reply_serial for m in large] == [21, 22, 23]
        body = plain(unmarshal(large[-1]._marshall(False)).body[0])
        assert body[lun_path(2)][A]["S"] == "new"
        first = plain(unmarshal(large[0]._marshall(False)).body[0])
        assert first[lun_path(2)][A]["S"] == "xx"   # handed over before the change
    asyncio.run(asyncio.wait_for(go(), 10))


def test_a_bus_that_does_not_answer_between_large_replies_only_stops_the_pacing():
    async def go():
        tree = new_tree()
        bus = FakeBus()

        async def refuse(msg):
            bus.round_trips += 1
            raise ConnectionError("no")
        bus.call = refuse
        tree.attach(bus)
        tree.apply({lun_path(1): {A: a_props(1)}})
        for serial in (21, 22, 23):
            bus.handler(gmo_call(serial))
        for _ in range(3):
            await settle()
            for m, f in bus.sent:
                if not f.done():
                    f.set_result(None)
        await settle()
        assert [m.reply_serial for m, _ in bus.sent
                if isinstance(m, PremarshalledReply)] == [21, 22, 23]
        assert bus.round_trips == 1 and not tree._pace
    asyncio.run(asyncio.wait_for(go(), 10))


@pytest.mark.parametrize("flags", [MessageFlag.NONE, MessageFlag.NO_REPLY_EXPECTED])
def test_odd_calls_are_answered_by_the_tree_or_not_at_all(flags):
    async def go():
        tree = new_tree()
        bus = FakeBus()
        tree.attach(bus)
        tree.apply({lun_path(1): {A: a_props(1)}})
        answers = []
        for path, iface, member, sig, body in [
                ("/nowhere", "org.freedesktop.DBus.Properties", "GetAll", "s", [""]),
                ("/nowhere", "org.freedesktop.DBus.Properties", "Get", "ss", ["", "S"]),
                ("/", None, "Frob", "", []),
                (lun_path(1), "org.freedesktop.DBus.Properties", "Get", "ss", ["", "S"]),
                ("/nowhere", "org.freedesktop.DBus.Peer", "Ping", "", [])]:
            n = len(bus.sent)
            msg = Message(destination="org.example.SanStorage", path=path, interface=iface,
                          member=member, signature=sig, body=body, serial=40 + n,
                          sender=":1.42", flags=flags)
            assert bus.handler(msg) is True                 # never left to the library
            answers.append([(m.error_name, m.body) for m, _ in bus.sent[n:]])
        return answers
    answers = asyncio.run(asyncio.wait_for(go(), 10))
    if flags == MessageFlag.NO_REPLY_EXPECTED:
        assert answers == [[]] * 5
    else:
        e = "org.freedesktop.DBus.Error."
        assert [a[0][0] for a in answers] == [e + "UnknownObject", e + "UnknownObject",
                                             e + "UnknownMethod", None, None]
        assert answers[3][0][1][0].value == "x"
