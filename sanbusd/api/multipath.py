"""Multipath: Manager.CreateAllMultipathMaps, Manager.SetMultipathConfig, MultipathMap.Flush."""

from __future__ import annotations

from dbus_fast import Variant

from .. import errors
from ..authz.polkit import PolkitAuthorizer
from ..authz.registry import Call, method
from ..model.multipath import mpath_wwid
from ..ops.multipath import MultipathOps
from ..publish import paths
from ..publish.render import MANAGER_I, MAP_I

ACTION = "org.example.sanstorage.manage-multipath"
REMOVE_ACTION = "org.example.sanstorage.remove-device"
MAX_WAIT = 600
# SetMultipathConfig's keys: D-Bus type, and the setting they change.
CONFIG_KEYS = {"user_friendly_names": ("b", "user_friendly_names"),
               "find_multipaths": ("s", "find_multipaths"),
               "include_wwids": ("as", "include_wwids"),
               "exclude_wwids": ("as", "exclude_wwids")}


def config_changes(raw: dict[str, Variant]) -> dict:
    out: dict = {}
    for key, var in raw.items():
        spec = CONFIG_KEYS.get(key)
        if spec is None:
            raise errors.InvalidArgs(f"unknown multipath setting {key[:64]!r}; use one or more "
                                     "of " + ", ".join(f"{k} ({t})" for k, (t, _) in
                                                       CONFIG_KEYS.items()))
        if var.signature != spec[0]:
            raise errors.InvalidArgs(f"setting {key!r} must have type {spec[0]}, not "
                                     f"{var.signature}")
        value = var.value
        out[spec[1]] = tuple(value) if spec[0] == "as" else value
    if not out:
        raise errors.InvalidArgs("config is empty; give one or more of " + ", ".join(CONFIG_KEYS))
    return out


class MultipathApi:
    def __init__(self, multipath: MultipathOps, authorizer: PolkitAuthorizer) -> None:
        self.multipath = multipath
        self.authorizer = authorizer

    @method(MANAGER_I, "CreateAllMultipathMaps", action=ACTION,
            options={"wwids": "as", "all_eligible": "b", "timeout": "u"})
    async def create_all(self, call: Call) -> list[str]:
        o = call.options
        wwids = None
        if "wwids" in o:
            if o.get("all_eligible"):
                raise errors.InvalidArgument("give either wwids or all_eligible, not both")
            if not o["wwids"]:
                raise errors.InvalidArgument("wwids is empty; leave it out to map every WWID "
                                             "with two or more paths")
            wwids = list(dict.fromkeys(errors.invalid_argument(mpath_wwid, w)
                                       for w in o["wwids"]))
        timeout = o.get("timeout", 60)
        if not 1 <= timeout <= MAX_WAIT:
            raise errors.InvalidArgument(f"timeout {timeout} s is out of range (1-{MAX_WAIT})")
        done = await self.multipath.create_all(wwids, o.get("all_eligible", False), timeout,
                                               await self.authorizer.uid_of(call))
        return [paths.multipath(w) for w in done]

    @method(MANAGER_I, "SetMultipathConfig", action=ACTION)
    async def set_config(self, call: Call, config: dict[str, Variant]) -> None:
        await self.multipath.set_config(config_changes(config))

    @method(MAP_I, "Flush", action=ACTION, options={"deferred": "b", "remove_paths": "b"})
    async def flush(self, call: Call) -> None:
        parsed = paths.parse(call.path)
        if parsed is None or parsed[0] != "multipath":
            raise errors.NotFound(f"no multipath map at {call.path}")
        if call.options.get("remove_paths"):
            # Deleting the paths is Lun.Delete's business: the caller needs its action too.
            await self.authorizer.check(call, REMOVE_ACTION,
                                        {"wwid": str(parsed[1]), "paths": "remove"})
        await self.multipath.flush(str(parsed[1]), call.options.get("deferred", False),
                                   call.options.get("remove_paths", False))
