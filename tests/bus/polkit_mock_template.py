"""python-dbusmock template: a polkitd whose verdict the test forces, and which records calls.

Only for what real polkitd cannot be made to do on demand: a challenge, a dismissed dialog, a
polkit error, a hang. Everything else is tested against the real polkitd.

Mock methods (interface org.freedesktop.DBus.Mock):
  SetVerdict(s)   allow | deny | challenge | dismissed | error | hang
  GetCalls() -> s JSON list of CheckAuthorization calls (subject, action, details, flags, id)
  GetCancelled() -> as   the cancellation ids CancelCheckAuthorization was called with
"""

import json

import dbus

from dbusmock import MOCK_IFACE

BUS_NAME = "org.freedesktop.PolicyKit1"
MAIN_OBJ = "/org/freedesktop/PolicyKit1/Authority"
MAIN_IFACE = "org.freedesktop.PolicyKit1.Authority"
SYSTEM_BUS = True


def load(mock, _parameters):
    mock.AddProperties(MAIN_IFACE, dbus.Dictionary(
        {"BackendName": "mock", "BackendVersion": "0", "BackendFeatures": dbus.UInt32(1)},
        signature="sv"))
    mock.verdict = "deny"
    mock.calls = []
    mock.cancelled = []
    mock.hanging = []


@dbus.service.method(MAIN_IFACE, in_signature="(sa{sv})sa{ss}us", out_signature="(bba{ss})",
                     async_callbacks=("ok_cb", "err_cb"))
def CheckAuthorization(self, subject, action_id, details, flags, cancellation_id, ok_cb, err_cb):
    self.calls.append({"subject": [str(subject[0]), {str(k): str(v) for k, v in
                                                      subject[1].items()}],
                       "action": str(action_id),
                       "details": {str(k): str(v) for k, v in details.items()},
                       "flags": int(flags), "id": str(cancellation_id)})
    v = self.verdict
    if v == "hang":
        self.hanging.append(ok_cb)
    elif v == "error":
        err_cb(dbus.exceptions.DBusException("polkit is broken today",
                                             name="org.freedesktop.PolicyKit1.Error.Failed"))
    elif v == "allow":
        ok_cb((True, False, {}))
    elif v == "challenge":
        ok_cb((False, True, {}))
    elif v == "dismissed":
        ok_cb((False, False, {"polkit.dismissed": "true"}))
    else:
        ok_cb((False, False, {}))


@dbus.service.method(MAIN_IFACE, in_signature="s", out_signature="")
def CancelCheckAuthorization(self, cancellation_id):
    self.cancelled.append(str(cancellation_id))


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="")
def SetVerdict(self, verdict):
    self.verdict = str(verdict)


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="s")
def GetCalls(self):
    return json.dumps(self.calls)


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="as")
def GetCancelled(self):
    return self.cancelled


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="")
def ReleaseHangingAllowed(self):
    """Answer every hanging check with "authorized" (as if the admin typed the password)."""
    for ok_cb in self.hanging:
        ok_cb((True, False, {}))
    self.hanging = []
