"""NPIV: Manager.CreateVhba, FcHost.CreateVhba, Vhba.Delete, Vhba.SetPersistent."""

from __future__ import annotations

from .. import errors
from ..authz.polkit import PolkitAuthorizer
from ..authz.registry import Call, method
from ..config import VHBA_MAX_WAIT, Settings
from ..model.ids import normalize_wwn
from ..ops.vhba import CreateRequest, VhbaOps
from ..publish import paths
from ..publish.render import FC_I, MANAGER_I, VHBA_I
from ..state import State
from .scsi_host import host_number

ACTION = "org.example.sanstorage.manage-vhba"
CREATE_OPTIONS = {"parent_wwnn": "s", "parent_wwpn": "s", "fabric_wwn": "s", "wwnn": "s",
                  "wwpn": "s", "persistent": "b", "wait": "u", "wait_luns": "b",
                  "keep_failed": "b"}


class VhbaApi:
    def __init__(self, state: State, vhbas: VhbaOps, authorizer: PolkitAuthorizer,
                 settings: Settings) -> None:
        self.state = state
        self.vhbas = vhbas
        self.authorizer = authorizer
        self.settings = settings

    @method(MANAGER_I, "CreateVhba", action=ACTION, options={**CREATE_OPTIONS, "parent": "o"})
    async def create(self, call: Call) -> str:
        o = call.options
        host = None
        if "parent" in o:
            host = host_number(o["parent"], self.state.inventory.hosts)
        return await self._create(call, host)

    @method(FC_I, "CreateVhba", action=ACTION, options=CREATE_OPTIONS)
    async def create_on(self, call: Call) -> str:
        if {"parent_wwnn", "parent_wwpn", "fabric_wwn"} & call.options.keys():
            raise errors.InvalidArgument("FcHost.CreateVhba uses its own host as the parent; "
                                         "use Manager.CreateVhba to choose one by WWN")
        _, host = paths.parse(call.path)  # type: ignore[misc]
        return await self._create(call, host)  # type: ignore[arg-type]

    async def _create(self, call: Call, host: int | None) -> str:
        o = call.options
        wwn = {k: errors.invalid_argument(normalize_wwn, o[k], k)
               for k in ("parent_wwnn", "parent_wwpn", "fabric_wwn", "wwnn", "wwpn") if k in o}
        wait = o.get("wait", self.settings.vhba_wait)
        if not 1 <= wait <= VHBA_MAX_WAIT:
            raise errors.InvalidArgument(f"wait {wait} s is out of range (1-{VHBA_MAX_WAIT})")
        inv = self.state.inventory
        parent = self.vhbas.choose_parent(inv, host, wwn.get("parent_wwnn"),
                                          wwn.get("parent_wwpn"), wwn.get("fabric_wwn"))
        taken = self.vhbas.wwns_in_use(inv)
        wwpn = wwn.get("wwpn") or self.vhbas.generate_wwn(taken)
        wwnn = wwn.get("wwnn") or self.vhbas.generate_wwn(taken | {wwpn})
        req = CreateRequest(parent, wwpn, wwnn, persistent=o.get("persistent", False),
                            wait=wait, wait_luns=o.get("wait_luns", True),
                            keep_failed=o.get("keep_failed", False))
        created = await self.vhbas.create(req, await self.authorizer.uid_of(call))
        return paths.vhba(created)

    def _wwpn(self, call: Call) -> str:
        parsed = paths.parse(call.path)
        if parsed is None or parsed[0] != "vhba":
            raise errors.NotFound(f"no vHBA at {call.path}")
        return parsed[1]  # type: ignore[return-value]

    @method(VHBA_I, "Delete", action=ACTION, options={"force": "b"})
    async def delete(self, call: Call) -> None:
        await self.vhbas.delete(self._wwpn(call), call.options.get("force", False))

    @method(VHBA_I, "SetPersistent", action=ACTION)
    async def set_persistent(self, call: Call, persistent: bool) -> None:
        await self.vhbas.set_persistent(self._wwpn(call), persistent)

