"""A GDBus ObjectManager client (what GUIs such as virt-manager use), run as its own process.

Prints one JSON line per event: {"event": "added"|"removed"|"ready", "path": ..., "interfaces": [...]}.
GDBusObjectManagerClient listens for InterfacesAdded/Removed on the manager's path only, so it
sees objects come and go only if the daemon sends those signals from there.
"""

import json
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

address, seconds = sys.argv[1], float(sys.argv[2])


def out(**kw):
    print(json.dumps(kw), flush=True)


conn = Gio.DBusConnection.new_for_address_sync(
    address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
    | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
manager = Gio.DBusObjectManagerClient.new_sync(
    conn, Gio.DBusObjectManagerClientFlags.NONE, "org.example.SanStorage",
    "/org/example/SanStorage", None, None, None)
manager.connect("object-added", lambda m, o: out(
    event="added", path=o.get_object_path(),
    interfaces=sorted(i.get_interface_name() for i in o.get_interfaces())))
manager.connect("object-removed", lambda m, o: out(event="removed", path=o.get_object_path()))
out(event="ready", objects=sorted(o.get_object_path() for o in manager.get_objects()))
loop = GLib.MainLoop()
GLib.timeout_add(int(seconds * 1000), loop.quit)
loop.run()
