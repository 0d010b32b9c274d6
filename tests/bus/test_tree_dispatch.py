"""Every method call that reaches sanbusd, on any path, gets sanbusd's own documented answer.

Odd messages (paths outside the tree, objects that do not exist, no interface, unknown interfaces
and members, Properties with an empty or unknown interface) are answered with the standard names
the API documents (UnknownObject / UnknownMethod / UnknownInterface / UnknownProperty /
PropertyReadOnly / InvalidArgs), never with a library's NotSupported; with NO_REPLY_EXPECTED
nothing at all is sent back; Peer works on every path; and the daemon never logs a traceback.

"Nothing sent back" is checked on the bus itself: the bus drops a reply nobody asked for, so the
test watches sanbusd's outgoing messages as a monitor (org.freedesktop.DBus.Monitoring, allowed
to root by the private bus's policy) and looks for a reply to any of the calls sent with
NO_REPLY_EXPECTED before the reply to a Ping sent after them.
"""

from __future__ import annotations

import asyncio
import subprocess

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from sanbus_testing import BUS_NAME, ROOT

from sanbusd.client import connect

MGR = f"{ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"
PROPS = "org.freedesktop.DBus.Properties"
PEER = "org.freedesktop.DBus.Peer"
INTRO = "org.freedesktop.DBus.Introspectable"
OM = "org.freedesktop.DBus.ObjectManager"
NOPE = "org.example.Nope"
E = "org.freedesktop.DBus.Error."
DOCUMENTED = {E + n for n in ("UnknownObject", "UnknownMethod", "UnknownInterface",
                              "UnknownProperty", "PropertyReadOnly", "InvalidArgs")}
OK = "return"
WAIT = 10       # seconds; every wait in this file is bounded


def _outside_cases(path: str, node: bool) -> list[tuple]:
    """A path that is no object: `node` says whether it is on the way to the tree (/, /org...)."""
    none_member = E + ("UnknownMethod" if node else "UnknownObject")
    return [
        (path, PROPS, "Get", "ss", ["", "X"], E + "UnknownObject"),
        (path, PROPS, "GetAll", "s", [""], E + "UnknownObject"),
        (path, PROPS, "Set", "ssv", ["", "X", Variant("s", "y")], E + "UnknownObject"),
        (path, PROPS, "Get", "ss", [NOPE, "X"], E + "UnknownObject"),
        (path, PROPS, "GetAll", "s", ["x"], E + "UnknownObject"),
        (path, PROPS, "GetAll", "s", [MGR_I], E + "UnknownObject"),
        (path, PROPS, "Set", "ssv", [NOPE, "X", Variant("u", 1)], E + "UnknownObject"),
        (path, PROPS, "Frobnicate", "", [], E + "UnknownObject"),
        (path, NOPE, "Foo", "", [], E + "UnknownObject"),
        (path, MGR_I, "ResolveDevice", "a{sv}a{sv}", [{}, {}], E + "UnknownObject"),
        (path, None, "Foo", "", [], none_member),
        (path, None, "GetAll", "s", [""], E + "UnknownObject"),
        (path, INTRO, "Introspect", "", [], OK if node else E + "UnknownObject"),
        (path, INTRO, "Foo", "", [], none_member),
        (path, OM, "GetManagedObjects", "", [], none_member),
        (path, PEER, "Ping", "", [], OK),
        (path, PEER, "GetMachineId", "", [], OK),
        (path, None, "Ping", "", [], OK),
        (path, PEER, "Ping", "s", ["x"], E + "InvalidArgs"),
        (path, PEER, "Foo", "", [], E + "UnknownMethod"),
    ]


CASES = [
    *_outside_cases("/", node=True),
    *_outside_cases("/org", node=True),
    *_outside_cases("/nowhere", node=False),
    *_outside_cases(f"{ROOT}/nothing", node=False),
    *_outside_cases(f"{ROOT}/luns/9_9_9_9", node=False),
    # an object: the empty interface name means "any interface" (the D-Bus specification)
    (MGR, PROPS, "Get", "ss", ["", "Version"], OK),
    (MGR, PROPS, "Get", "ss", ["", "Nope"], E + "UnknownProperty"),
    (MGR, PROPS, "GetAll", "s", [""], OK),
    (MGR, PROPS, "Set", "ssv", ["", "Version", Variant("s", "9")], E + "PropertyReadOnly"),
    (MGR, PROPS, "Set", "ssv", ["", "Nope", Variant("s", "9")], E + "UnknownProperty"),
    (MGR, PROPS, "Get", "ss", [NOPE, "Version"], E + "UnknownInterface"),
    (MGR, PROPS, "GetAll", "s", [NOPE], E + "UnknownInterface"),
    (MGR, PROPS, "Set", "ssv", [NOPE, "Version", Variant("s", "9")], E + "UnknownInterface"),
    (MGR, PROPS, "GetAll", "s", [PEER], OK),
    (MGR, PROPS, "Get", "ss", [PEER, "X"], E + "UnknownProperty"),
    (MGR, PROPS, "Get", "s", [MGR_I], E + "InvalidArgs"),
    (MGR, PROPS, "Frobnicate", "", [], E + "UnknownMethod"),
    (MGR, NOPE, "Foo", "", [], E + "UnknownInterface"),
    (MGR, None, "Foo", "", [], E + "UnknownMethod"),
    (MGR, None, "GetAll", "s", [MGR_I], OK),
    (MGR, MGR_I, "Foo", "", [], E + "UnknownMethod"),
    (MGR, MGR_I, "ResolveDevice", "s", ["x"], E + "InvalidArgs"),
    (MGR, OM, "GetManagedObjects", "", [], E + "UnknownMethod"),
    (MGR, INTRO, "Introspect", "", [], OK),
    (MGR, PEER, "Ping", "", [], OK),
    # the ObjectManager's own path: it has the standard interfaces, none with properties
    (ROOT, PROPS, "GetAll", "s", [""], OK),
    (ROOT, PROPS, "GetAll", "s", [OM], OK),
    (ROOT, PROPS, "GetAll", "s", [NOPE], E + "UnknownInterface"),
    (ROOT, PROPS, "Get", "ss", ["", "X"], E + "UnknownProperty"),
    (ROOT, OM, "Foo", "", [], E + "UnknownMethod"),
    (ROOT, OM, "GetManagedObjects", "s", ["x"], E + "InvalidArgs"),
    (ROOT, None, "GetManagedObjects", "", [], OK),
    (ROOT, NOPE, "Foo", "", [], E + "UnknownInterface"),
    (ROOT, PEER, "GetMachineId", "", [], OK),
]


def _message(case, flags=MessageFlag.NONE) -> Message:
    path, iface, member, sig, body, _ = case
    return Message(destination=BUS_NAME, path=path, interface=iface, member=member,
                   signature=sig, body=body, flags=flags)


async def _call(bus: MessageBus, msg: Message) -> Message:
    return await asyncio.wait_for(bus.call(msg), WAIT)


def test_odd_calls_get_documented_answers(daemon):
    async def go():
        bus = await connect(daemon.bus.address)
        wrong = []
        try:
            for case in CASES:
                reply = await _call(bus, _message(case))
                want = case[-1]
                if reply.message_type == MessageType.ERROR:
                    got = reply.error_name
                    text = reply.body[0] if reply.body else ""
                    if got not in DOCUMENTED or got != want or not text or "Traceback" in text:
                        wrong.append((case[:4], want, got, text))
                elif want != OK:
                    wrong.append((case[:4], want, OK, reply.body))
            # Peer answers the same everywhere
            ids = [(await _call(bus, _message((p, PEER, "GetMachineId", "", [], OK)))).body
                   for p in ("/", "/nowhere", MGR)]
        finally:
            bus.disconnect()
        return wrong, ids

    wrong, ids = asyncio.run(go())
    assert not wrong, "\n".join(map(repr, wrong))
    assert ids[0] == ids[1] == ids[2] and len(ids[0][0]) == 32, ids
    assert "Traceback" not in daemon.log()


def test_no_reply_expected_gets_no_reply_and_no_traceback(daemon):
    """The brief's reproducer plus every case above with NO_REPLY_EXPECTED: no reply leaves
    sanbusd for any of them, the Ping sent after them is answered, the log stays clean."""
    env = daemon.env
    r = subprocess.run(["dbus-send", "--system", "--type=method_call", f"--dest={BUS_NAME}",
                        "/nowhere", f"{PROPS}.GetAll", "string:x"], env=env,
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr

    async def go():
        client = await connect(daemon.bus.address)
        monitor = await MessageBus(bus_address=daemon.bus.address).connect()
        try:
            owner = (await _call(client, Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
                body=[BUS_NAME]))).body[0]
            replies: list[Message] = []
            ping_seen = asyncio.Event()
            ping_serial = 0

            def watch(m: Message):
                if m.sender == owner and m.destination == client.unique_name and \
                        m.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
                    replies.append(m)
                    if ping_serial and m.reply_serial == ping_serial:
                        ping_seen.set()
                # A monitored call is "handled": the library must not answer it (a monitor that
                # sends anything is disconnected by the bus).
                return m.message_type == MessageType.METHOD_CALL or None

            monitor.add_message_handler(watch)
            became = await _call(monitor, Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus.Monitoring", member="BecomeMonitor",
                signature="asu", body=[[f"sender='{owner}'"], 0]))
            assert became.message_type == MessageType.METHOD_RETURN, became.body

            silent = set()
            for case in CASES:
                msg = _message(case, MessageFlag.NO_REPLY_EXPECTED)
                await asyncio.wait_for(client.send(msg), WAIT)
                silent.add(msg.serial)
            ping = Message(destination=BUS_NAME, path="/nowhere", interface=PEER, member="Ping")
            ping.serial = client.next_serial()
            ping_serial = ping.serial
            reply = await _call(client, ping)
            assert reply.message_type == MessageType.METHOD_RETURN
            # The monitor sees sanbusd's messages in the order sanbusd sent them: once it has
            # seen the Ping's reply, a reply to any earlier call would have been seen too.
            await asyncio.wait_for(ping_seen.wait(), WAIT)
            assert monitor.connected
            # GetMachineId may be answered after a round trip to the bus: give late replies
            # a moment to show up too.
            await asyncio.sleep(0.3)
            return [(m.reply_serial, m.error_name, m.body) for m in replies
                    if m.reply_serial in silent]
        finally:
            client.disconnect()
            monitor.disconnect()

    unwanted = asyncio.run(go())
    assert not unwanted, f"replies to calls sent with NO_REPLY_EXPECTED: {unwanted}"
    log = daemon.log()
    assert "Traceback" not in log, log
