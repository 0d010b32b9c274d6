"""Bad input gets a named error and a message that says what to do; no traceback ever leaks."""

import asyncio
import re

import pytest
from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

from sanbus_testing import ROOT, busctl

from sanbusd.bus.contract import parse_api
from sanbusd.authz.registry import Authorizer, Registration
from sanbusd.bus.tree import ObjectTree

MGR = f"{ROOT}/Manager"
LEAK = re.compile(r"Traceback|File \"|\.py\b|line \d+|Error\(|Exception")


def call_err(d, *args):
    r = busctl(d, "call", "org.example.SanStorage", *args, check=False)
    assert r.returncode != 0, r.stdout
    return r.stderr.strip()


def errname(d, path, iface, member, sig, body):
    async def go():
        bus = await connect(d.bus.address)
        reply = await asyncio.wait_for(bus.call(Message(
            destination="org.example.SanStorage", path=path, interface=iface, member=member,
            signature=sig, body=body)), 60)
        bus.disconnect()
        return reply
    reply = asyncio.run(go())
    assert reply.message_type == MessageType.ERROR
    text = reply.body[0] if reply.body else ""
    assert not LEAK.search(text), text
    return reply.error_name, text


@pytest.mark.parametrize("path,iface,member,sig,body,name,words", [
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "s", ["x"],
     "org.freedesktop.DBus.Error.InvalidArgs", "takes arguments of type (a{sv}a{sv})"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"hctl": Variant("s", "1:0:0:0")}, {"force": Variant("b", True)}],
     "org.freedesktop.DBus.Error.InvalidArgs", "unknown option 'force'"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"hctl": Variant("s", "1:0:0:0")}, {"auth.no_user_interaction": Variant("s", "yes")}],
     "org.freedesktop.DBus.Error.InvalidArgs", "must have type b"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"hctl": Variant("u", 5)}, {}], "org.freedesktop.DBus.Error.InvalidArgs", "type s"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"wwpn": Variant("s", "../../etc/passwd")}, {}],
     "org.example.SanStorage.Error.InvalidArgument", "16 hex digits"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"hctl": Variant("s", "1:0:0")}, {}],
     "org.example.SanStorage.Error.InvalidArgument", "H:C:T:L"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
     [{"path": Variant("s", "/etc/passwd")}, {}],
     "org.example.SanStorage.Error.InvalidArgument", "under /dev"),
    (MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}", [{}, {}],
     "org.freedesktop.DBus.Error.InvalidArgs", "devspec is empty"),
    (MGR, "org.example.SanStorage.Manager", "Explode", "", [],
     "org.freedesktop.DBus.Error.UnknownMethod", "no method Explode"),
    (f"{ROOT}/luns/9_9_9_9", "org.freedesktop.DBus.Properties", "GetAll", "s",
     ["org.example.SanStorage.Lun"], "org.freedesktop.DBus.Error.UnknownObject", "no object"),
    (f"{ROOT}/hosts/host1", "org.freedesktop.DBus.Properties", "Set", "ssv",
     ["org.example.SanStorage.ScsiHost", "State", Variant("s", "deleted")],
     "org.freedesktop.DBus.Error.PropertyReadOnly", "read-only"),
    (f"{ROOT}/hosts/host1", "org.freedesktop.DBus.Properties", "Get", "ss",
     ["org.example.SanStorage.Lun", "Size"], "org.freedesktop.DBus.Error.UnknownInterface", ""),
    (f"{ROOT}/hosts/host1", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", [],
     "org.freedesktop.DBus.Error.UnknownMethod", f"ObjectManager is at {ROOT}"),
])
def test_bad_calls_get_named_errors(daemon, path, iface, member, sig, body, name, words):
    got, text = errname(daemon, path, iface, member, sig, body)
    assert got == name
    assert words in text


def test_busctl_user_sees_the_message(daemon):
    text = call_err(daemon, MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}",
                    "1", "bogus", "s", "x", "0")
    assert "unknown devspec key 'bogus'" in text and "path (s)" in text


def test_an_internal_error_reaches_the_caller_as_failed_without_internals(system_bus):
    """A handler that crashes (a bug): the caller gets Error.Failed and a plain sentence; the
    traceback goes to the daemon's log only, and the daemon keeps serving."""
    api = parse_api("""<node><interface name="org.example.SanStorage.Test">
      <method name="Crash"><annotation name="org.example.SanStorage.PolkitAction" value="none"/>
        <arg type="a{sv}" direction="in"/></method>
      <method name="Fine"><annotation name="org.example.SanStorage.PolkitAction" value="none"/>
        <arg type="a{sv}" direction="in"/><arg type="s" direction="out"/></method>
      <property name="X" type="u" access="read"/></interface></node>""")

    async def crash(call):
        return {}["no such key"]

    async def fine(call):
        return "still here"

    registry = {("org.example.SanStorage.Test", "Crash"): Registration(
        "org.example.SanStorage.Test", "Crash", crash, None, {}),
        ("org.example.SanStorage.Test", "Fine"): Registration(
        "org.example.SanStorage.Test", "Fine", fine, None, {})}

    system_bus.allow_test_owner("org.example.SanStorageTest")

    async def go():
        server = await connect(system_bus.address)
        await server.request_name("org.example.SanStorageTest")
        tree = ObjectTree(api, Authorizer(), root="/test")
        tree.register(registry)
        tree.apply({"/test/obj": {"org.example.SanStorage.Test": {"X": 1}}})
        tree.attach(server)
        client = await connect(system_bus.address)
        replies = []
        for member in ("Crash", "Fine"):
            replies.append(await asyncio.wait_for(client.call(Message(
                destination="org.example.SanStorageTest", path="/test/obj",
                interface="org.example.SanStorage.Test", member=member, signature="a{sv}",
                body=[{}])), 60))
        server.disconnect()
        client.disconnect()
        return replies
    crashed, fine_reply = asyncio.run(go())
    assert crashed.message_type == MessageType.ERROR
    assert crashed.error_name == "org.example.SanStorage.Error.Failed"
    assert crashed.body == ["internal error in sanbusd (details are in its log)"]
    assert fine_reply.body == ["still here"]


def test_a_method_without_action_or_readonly_declaration_is_refused():
    from sanbusd.authz.registry import method
    with pytest.raises(TypeError, match="exactly one of"):
        method("org.example.SanStorage.Manager", "X")
    api = parse_api("""<node><interface name="org.example.SanStorage.Test">
      <method name="Undeclared"><annotation name="org.example.SanStorage.PolkitAction"
       value="org.example.sanstorage.rescan"/><arg type="a{sv}" direction="in"/></method>
      </interface></node>""")
    with pytest.raises(RuntimeError, match="fail closed.*Undeclared has no implementation"):
        ObjectTree(api, Authorizer(), "/test").register({})

    async def f(call):
        return None
    with pytest.raises(RuntimeError, match="code declares action None"):
        ObjectTree(api, Authorizer(), "/test").register(
            {("org.example.SanStorage.Test", "Undeclared"):
             Registration("org.example.SanStorage.Test", "Undeclared", f, None, {})})
    with pytest.raises(ValueError, match="no org.example.SanStorage.PolkitAction"):
        parse_api("""<node><interface name="a.b"><method name="M"/></interface></node>""")


def test_daemon_survives_garbage_and_keeps_answering(daemon):
    for args in (["--expect-reply=no", MGR, "org.example.SanStorage.Manager", "ResolveDevice",
                  "s", "x"],
                 [MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}", "1",
                  "path", "s", "/dev/" + "x" * 5000, "0"],
                 [MGR, "org.example.SanStorage.Manager", "ResolveDevice", "a{sv}a{sv}", "1",
                  "path", "s", "/dev/\x01\x02../..", "0"]):
        busctl(daemon, "call", "org.example.SanStorage", *args, check=False)
    out = busctl(daemon, "get-property", "org.example.SanStorage", MGR,
                 "org.example.SanStorage.Manager", "Version").stdout
    assert out.startswith('s "')
