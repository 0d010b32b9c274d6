"""The documented limits of a scan, exactly at the edge, through both scan methods
(ScsiHost.Scan and Manager.ScanAll): the last value allowed is served (no complaint about its
range), the first one past it is InvalidArgument and nothing reaches the kernel. And object paths
that only look like a host's (host01, host0_2) name nothing: NotFound, nothing written.

Limits (data/org.example.SanStorage.xml, ScsiHost.Scan): LUN 0-16383, at most 4096 LUNs a call,
channel 0-255, target 0-65535, timeout 1-3600 s.
"""

import asyncio

import pytest
from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

from sanbus_testing import ROOT, fc_fabric, start_daemon

MGR = f"{ROOT}/Manager"
HOST0 = f"{ROOT}/hosts/host0"
INVALID = "org.example.SanStorage.Error.InvalidArgument"
NOT_FOUND = "org.example.SanStorage.Error.NotFound"
TYPES = {"luns": "at", "channel": "u", "target": "u", "timeout": "u", "hosts": "ao"}


def call(d, path, iface, member, options):
    async def go():
        bus = await connect(d.bus.address)
        try:
            return await asyncio.wait_for(bus.call(Message(
                destination="org.example.SanStorage", path=path, interface=iface, member=member,
                signature="a{sv}", body=[{k: Variant(TYPES[k], v) for k, v in options.items()}])),
                120)
        finally:
            bus.disconnect()
    return asyncio.run(go())


def scan(d, method, **options):
    """Scan host0 with ScsiHost.Scan, or with Manager.ScanAll naming host0."""
    if method == "Scan":
        return call(d, HOST0, "org.example.SanStorage.ScsiHost", "Scan", options)
    return call(d, MGR, "org.example.SanStorage.Manager", "ScanAll",
                {**options, "hosts": [HOST0]})


def scan_writes(d):
    return [w["data"] for w in d.writes() if w["path"].endswith("/scan")]


@pytest.fixture
def fast(system_bus, tmp_path):
    """One FC port (host0) zoned to one array port (target 0); scans take no time."""
    d = start_daemon(system_bus, tmp_path, fc_fabric(tmp_path / "fast.toml"))
    yield d
    assert d.stop() == 0
    assert "Traceback" not in d.log()


METHODS = pytest.mark.parametrize("method", ["Scan", "ScanAll"])


@METHODS
def test_the_highest_lun_is_scanned_and_found(fast, method):
    fast.sim({"command": "provision", "array": "arr", "luns": [16383],
              "initiators": ["1000000000000001"]})
    reply = scan(fast, method, luns=[16383])
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    assert reply.body[0] == [f"{ROOT}/luns/0_0_0_16383"]
    assert scan_writes(fast) == ["0 0 16383"]


@METHODS
@pytest.mark.parametrize("options,writes", [
    ({"luns": [0], "channel": 255}, []),             # no target port on channel 255
    ({"luns": [0], "target": 65535}, []),            # nor a target 65535
    ({"luns": [0], "timeout": 1}, ["0 0 0"]),
    ({"luns": [0], "timeout": 3600}, ["0 0 0"]),
    # 4096 LUNs, on a target that is not there (4096 real writes take the simulated SAN
    # minutes: it saves its state after each one)
    ({"luns": list(range(4096)), "target": 7}, []),
], ids=["channel=255", "target=65535", "timeout=1", "timeout=3600", "4096-luns"])
def test_the_last_value_allowed_is_served(fast, method, options, writes):
    reply = scan(fast, method, **options)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    assert reply.body[0] == []                       # nothing is there to be found
    assert scan_writes(fast) == writes


@METHODS
@pytest.mark.parametrize("options,words", [
    ({"luns": [16384]}, "LUN 16384 is out of range: give LUN numbers 0-16383"),
    ({"luns": [27, 65535]}, "LUN 65535 is out of range"),
    ({"luns": [0], "channel": 256}, "channel 256 is out of range (0-255)"),
    ({"luns": [0], "target": 65536}, "target 65536 is out of range (0-65535)"),
    ({"luns": [0], "timeout": 0}, "timeout 0 s is out of range (1-3600)"),
    ({"luns": [0], "timeout": 3601}, "timeout 3601 s is out of range (1-3600)"),
    ({"luns": list(range(4097))}, "4097 LUNs in one call; at most 4096"),
    ({"channel": 256}, "channel 256 is out of range"),           # a wildcard scan, too
    ({"target": 65536}, "target 65536 is out of range"),
], ids=["lun=16384", "lun=65535", "channel=256", "target=65536", "timeout=0", "timeout=3601",
        "4097-luns", "wildcard-channel=256", "wildcard-target=65536"])
def test_the_first_value_past_a_limit_is_refused_and_nothing_is_written(fast, method, options,
                                                                       words):
    reply = scan(fast, method, **options)
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == INVALID, reply.body
    assert words in reply.body[0]
    assert fast.writes() == []


@pytest.mark.parametrize("near_miss", ["host01", "host1_2", "host0_2", "Host1", "host1_0",
                                       "host001", "hostx1"])
def test_a_path_that_only_looks_like_a_host_names_nothing(daemon, near_miss):
    path = f"{ROOT}/hosts/{near_miss}"
    reply = call(daemon, MGR, "org.example.SanStorage.Manager", "ScanAll",
                 {"hosts": [path], "luns": [27]})
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == NOT_FOUND, reply.body
    assert f"no SCSI host at {path}" in reply.body[0]
    # ... also next to a real host: the whole call is refused
    reply = call(daemon, MGR, "org.example.SanStorage.Manager", "ScanAll",
                 {"hosts": [f"{ROOT}/hosts/host1", path]})
    assert reply.error_name == NOT_FOUND, reply.body
    # and it is no object to call a method on
    reply = call(daemon, path, "org.example.SanStorage.ScsiHost", "Scan", {"luns": [27]})
    assert reply.error_name == "org.freedesktop.DBus.Error.UnknownObject", reply.body
    assert daemon.writes() == []


@pytest.mark.parametrize("path,iface,member", [
    (f"{ROOT}/luns/1_0_0_00", "org.example.SanStorage.Lun", "Delete"),
    (f"{ROOT}/luns/01_0_0_0", "org.example.SanStorage.Lun", "Rescan"),
    (f"{ROOT}/luns/1_0_0_0_0", "org.example.SanStorage.Lun", "Delete"),
    (f"{ROOT}/LUNS/1_0_0_0", "org.example.SanStorage.Lun", "Delete"),
    (f"{ROOT}/Luns/1_0_0_0", "org.example.SanStorage.Lun", "Rescan"),
    (f"{ROOT}/Hosts/host1", "org.example.SanStorage.ScsiHost", "Scan"),
])
def test_a_path_that_only_looks_like_a_lun_names_nothing(daemon, path, iface, member):
    reply = call(daemon, path, iface, member, {})
    assert reply.error_name == "org.freedesktop.DBus.Error.UnknownObject", reply.body
    assert daemon.writes() == []
