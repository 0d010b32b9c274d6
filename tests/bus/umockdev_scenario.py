"""sanbusd's real kernel adapter (sysfs reader + pyudev monitor) under umockdev.

Run as: umockdev-wrapper python umockdev_scenario.py BUS_ADDRESS
The testbed plays /sys and udev: an FC host with one LUN at start, then a LUN added, a unit
attention, and a LUN removed, each with its uevent. The daemon runs unmodified (root /sys, udev
on) and is observed over D-Bus. Prints one JSON object with what was seen.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

from dbus_fast import Message, MessageType  # noqa: E402
from sanbusd.client import connect, plain  # noqa: E402

ADDRESS = sys.argv[1]
ROOT = "/org/example/SanStorage"
HOST = "/devices/pci0000:00/0000:05:00.0/host1"
TARGET = HOST + "/rport-1:0-0/target1:0:0"

tb = UMockdev.Testbed.new()


def add(text: str) -> None:
    assert tb.add_from_string(text), text


def add_lun(lun: int, block: str) -> str:
    dev = f"{TARGET}/1:0:0:{lun}"
    add(f"P: {dev}\nE: DEVTYPE=scsi_device\nE: SUBSYSTEM=scsi\nA: vendor=NETAPP  \n"
        f"A: model=LUN C-Mode      \nA: rev=9800\nA: type=0\nA: state=running\n"
        f"A: wwid=naa.600a09800000000000000000000000{lun:02x}\n")
    add(f"P: {dev}/scsi_device/1:0:0:{lun}\nE: SUBSYSTEM=scsi_device\n")
    add(f"P: {dev}/block/{block}\nE: SUBSYSTEM=block\nE: DEVTYPE=disk\nA: size=2097152\n")
    return dev


add(f"P: {HOST}\nE: DEVTYPE=scsi_host\nE: SUBSYSTEM=scsi\n")
add(f"P: {HOST}/scsi_host/host1\nE: SUBSYSTEM=scsi_host\nA: proc_name=lpfc\nA: state=running\n"
    "A: unique_id=1\n")
add(f"P: {HOST}/fc_host/host1\nE: SUBSYSTEM=fc_host\nA: port_name=0x10000090fa1b2c01\n"
    "A: node_name=0x20000090fa1b2c01\nA: port_state=Online\nA: port_type=NPort (fabric via "
    "point-to-point)\nA: speed=16 Gbit\n")
add(f"P: {HOST}/rport-1:0-0/fc_remote_ports/rport-1:0-0\nE: SUBSYSTEM=fc_remote_ports\n"
    "A: port_name=0x500a098101a1b2c3\nA: node_name=0x500a098000a1b2c3\nA: roles=FCP Target\n"
    "A: port_state=Online\nA: scsi_target_id=0\n")
add_lun(0, "sdb")

out: dict = {}
r, w = os.pipe()
env = dict(os.environ, UMOCKDEV_DIR=tb.get_root_dir())   # set by C setenv(): not in os.environ
daemon = subprocess.Popen([sys.executable, "-m", "sanbusd", "--bus", ADDRESS, "--ready-fd",
                           str(w)], env=env, pass_fds=(w,), stderr=subprocess.PIPE)
os.close(w)
out["ready"] = os.read(r, 16).decode().strip()


async def objects(bus):
    reply = await bus.call(Message(destination="org.example.SanStorage", path=ROOT,
                                   interface="org.freedesktop.DBus.ObjectManager",
                                   member="GetManagedObjects"))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return reply.body[0]


async def wait_for(bus, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objs = await objects(bus)
        if pred(objs):
            return objs
        await asyncio.sleep(0.05)
    return await objects(bus)


async def main():
    bus = await connect(ADDRESS)
    objs = await objects(bus)
    out["initial"] = sorted(p for p in objs if "/luns/" in p or "/hosts/" in p)
    host = objs[f"{ROOT}/hosts/host1"]
    out["fc_wwpn"] = host["org.example.SanStorage.FcHost"]["WWPN"].value
    out["rports"] = plain(host["org.example.SanStorage.FcHost"]["RemotePorts"])
    lun0 = objs[f"{ROOT}/luns/1_0_0_0"]["org.example.SanStorage.Lun"]
    out["lun0"] = {k: lun0[k].value for k in ("Vendor", "Model", "WWID", "Size", "BlockDevice",
                                              "TargetPortName")}

    # A LUN appears: the kernel's uevents, in the kernel's order.
    dev = add_lun(5, "sdc")
    t0 = time.monotonic()
    for path, action in ((dev, "add"), (f"{dev}/scsi_device/1:0:0:5", "add"),
                         (f"{dev}/block/sdc", "add")):
        tb.uevent("/sys" + path, action)
    objs = await wait_for(bus, lambda o: f"{ROOT}/luns/1_0_0_5" in o)
    out["added"] = f"{ROOT}/luns/1_0_0_5" in objs
    out["added_after_s"] = round(time.monotonic() - t0, 3)
    if out["added"]:
        out["lun5_block"] = objs[f"{ROOT}/luns/1_0_0_5"]["org.example.SanStorage.Lun"][
            "BlockDevice"].value

    # The array says its LUN inventory changed (a unit attention on a LUN we have).
    tb.set_property(f"/sys{TARGET}/1:0:0:0", "SDEV_UA", "REPORTED_LUNS_DATA_HAS_CHANGED")
    tb.uevent(f"/sys{TARGET}/1:0:0:0", "change")
    objs = await wait_for(bus, lambda o: o[f"{ROOT}/hosts/host1"][
        "org.example.SanStorage.ScsiHost"]["RescanSuggested"].value)
    out["rescan_suggested"] = objs[f"{ROOT}/hosts/host1"]["org.example.SanStorage.ScsiHost"][
        "RescanSuggested"].value

    # The LUN goes: remove events first, then the device is gone from sysfs.
    for path in (f"{dev}/block/sdc", f"{dev}/scsi_device/1:0:0:5", dev):
        tb.uevent("/sys" + path, "remove")
    tb.remove_device(f"/sys{dev}")
    objs = await wait_for(bus, lambda o: f"{ROOT}/luns/1_0_0_5" not in o)
    out["removed"] = f"{ROOT}/luns/1_0_0_5" not in objs
    out["host_luns"] = objs[f"{ROOT}/hosts/host1"]["org.example.SanStorage.ScsiHost"][
        "Luns"].value
    bus.disconnect()


asyncio.run(main())
daemon.terminate()
out["exit"] = daemon.wait(10)
out["stderr"] = daemon.stderr.read().decode()[-3000:]
print(json.dumps(out))
