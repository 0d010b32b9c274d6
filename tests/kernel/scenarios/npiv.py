"""NPIV vHBAs on the FCoE VN2VN initiator: through sysfs, through sanbusd, across restarts, through libvirt.

Kernel side: the FCoE VN2VN initiator + LIO tcm_fc target of scenarios/fcoe.py (guestlib shares
them when both scenarios run in one boot). VN2VN has no fabric and so no FDISC: every vport ends
"No Fabric Support" and its own fc_host stays Linkdown. That is what the lane can show of NPIV,
and it is enough for the whole life cycle:

1. *What the kernel says* (no sanbusd call): ``vport_create`` on the initiator, the vport's states
   as they come, its new fc_host/scsi_host, the parent's ``npiv_vports_inuse``, the refusals
   (the same WWPN again, an unknown vport deleted) with their errnos; sanbusd, watching, publishes
   the vport as a Vhba object and its host (checkpoint ``sysfs_vport``); ``vport_delete``.
2. *The story* (also replayed on the simulated SAN, ``simulate``): ``FcHost.CreateVhba`` with
   ``keep_failed`` answers the new Vhba, with its Host, in "No Fabric Support" (checkpoint
   ``kept``); the same WWPN again is refused; ``Manager.CreateVhba`` without ``keep_failed``
   answers NotSupported and leaves no vport; ``Vhba.Delete`` removes the vport, its host and
   their objects.
3. *Persistent* (kernel only): a second sanbusd ("b", its own private bus and ``--state-dir``)
   creates a persistent vHBA; it stops; the vport is deleted behind its back (``vport_delete``);
   it starts again with the same state directory and re-creates it, and
   ``Manager.PersistentVhbas`` says "re-created" (checkpoint ``recreated``: the group's sanbusd
   sees it too). A second daemon, not the group's, so that the group's signal record stays one
   daemon's.
4. *libvirt* (kernel only): sanbusd "b" again, with ``--libvirt-uri nodedev:///system`` and the
   group's libvirtd (``libvirtd = True``): the created vHBA is in ``virsh nodedev-list --cap
   fc_host``, and ``Vhba.Delete`` (libvirt's node-device destroy) takes it out again.

Checkpoint ``final``: every vport gone again. Simulated side: fcoe.py's fabric with a switch that
has no NPIV (``npiv = false``; ``wwn = "0"``: VN2VN has no switch), and the vports of each
checkpoint as ``[[host.vport]]``. Host-side assertions: test_npiv.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context

from .fcoe import Fcoe

SYSFS_VPORT = "sysfs_vport"  # a vport made through sysfs, behind sanbusd's back
KEPT = "kept"  # after FcHost.CreateVhba keep_failed=true
RECREATED = "recreated"  # after sanbusd "b" re-created its persistent vHBA at start
FINAL = "final"  # every vport deleted again

MGR = f"{sanview.ROOT}/Manager"
MGR_I = sanview.MANAGER_I
FC_I = sanview.FC_I
HOST_I = sanview.HOST_I
VHBA_I = sanview.VHBA_I
ERR = "org.example.SanStorage.Error."
STATE_DIR_B = "/run/sanbus-klab-b/state"


@dataclass(frozen=True)
class Npiv(Fcoe):
    name: ClassVar[str] = "npiv"
    libvirtd: ClassVar[bool] = True
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, SYSFS_VPORT, KEPT, RECREATED, FINAL)
    story_checkpoints: ClassVar[tuple[str, ...]] = (KEPT,)
    # Compared with the same story on the simulated SAN (after sanview.normalize_refs).
    story_records: ClassVar[tuple[str, ...]] = ("create_kept", "duplicate", "not_supported", "delete")

    # (WWPN, WWNN) of each vport; 16 hex digits, as the API spells them
    sysfs_wwns: tuple[str, str] = ("2000000000000011", "2000000000000012")
    kept_wwns: tuple[str, str] = ("2000000000000021", "2000000000000022")
    refused_wwns: tuple[str, str] = ("2000000000000031", "2000000000000032")
    persistent_wwns: tuple[str, str] = ("2000000000000041", "2000000000000042")
    libvirt_wwns: tuple[str, str] = ("2000000000000051", "2000000000000052")
    # VN2VN: no fabric, no FDISC
    end_state: str = "No Fabric Support"
    wait: int = 30  # CreateVhba's "wait" (s): how long the fabric login may take
    state_settle_seconds: float = 1.0  # sysfs phase: how long the vport's state must hold still

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        fabric = self.fabric_with({n: True for n in self.luns})
        fabric["switch"]["vn2vn"]["npiv"] = False  # "No Fabric Support", as VN2VN
        vports = {SYSFS_VPORT: [self.sysfs_wwns], KEPT: [self.kept_wwns],
                  RECREATED: [self.persistent_wwns]}.get(checkpoint, [])
        if vports:
            fabric["host"][0]["vport"] = [{"wwpn": p, "wwnn": n} for p, n in vports]
        return fabric

    def simulate(self, sim: Any) -> None:
        self._story(sim)

    # -- the real kernel -----------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)  # FCoE + LIO (shared with the fcoe scenario in the same boot)

    def exercise(self, ctx: Context) -> None:
        from guestsan import SanStack

        host = self._fc.initiator_host
        # Each part runs even if an earlier one failed (its failure is a failed check already).
        _part(ctx, "what the kernel says", self._sysfs_facts, ctx, host)
        _part(ctx, "the story", self._story, ctx)
        b = DaemonB(SanStack(run_dir=Path("/run/sanbus-klab-b"), log_prefix="b-",
                             daemon_args=("--state-dir", STATE_DIR_B)))
        try:
            _part(ctx, "persistent", self._persistent, ctx, host, b)
            _part(ctx, "libvirt", self._libvirt, ctx, host, b)
        finally:
            ctx.record("daemon_b", b.close())
        ctx.check_equal('sanbusd "b" stops cleanly at the end', ctx.data["daemon_b"]["stop_rc"], 0)
        ctx.check_equal("nothing alarming in sanbusd \"b\"'s log", ctx.data["daemon_b"]["log_problems"], [])
        ctx.set_hosts([host])
        ctx.checkpoint(FINAL)

    def _sysfs_facts(self, ctx: Context, host: int) -> None:
        """vport_create/vport_delete by hand: what the kernel answers, and sanbusd follows."""
        import guestlib as g
        from guestsan import objects_added, objects_removed

        wwpn, wwnn = self.sysfs_wwns
        client = ctx.client
        facts: dict[str, Any] = {"parent": host, "parent_before": g.fc_host_attrs(host),
                                 "vports_before": g.fc_vports()}
        vhba = sanview.vhba_path(wwpn)
        mark = client.mark()
        with ctx.step(f"vport_create {wwpn}:{wwnn} on host{host} (sysfs)"):
            t0 = time.monotonic()
            facts["create"] = g.vport_create(host, wwpn, wwnn)
            states = _watch_vport(wwpn, settle=self.state_settle_seconds, timeout=30)
            facts["states"] = [{"t": round(t - t0, 3), "vport_state": s, "vport_last_state": last,
                                "host_port_state": hs} for t, s, last, hs in states]
        name = g.find_vport(wwpn)
        vports = g.fc_vports()
        vport = vports.get(name or "", {})
        vhost = vport.get("host")
        facts.update(vport_name=name, vport=vport, vports=vports, parent_after=g.fc_host_attrs(host))
        if vhost is not None:
            facts["vport_host"] = {"scsi_host": g.scsi_host_info(vhost), "fc_host": g.fc_host_attrs(vhost),
                                   "transport": g.host_transport(vhost),
                                   "vport_create": (g.FC_HOST / f"host{vhost}" / "vport_create").exists(),
                                   "vport_of_host": g.vport_of_host(vhost)}
        ctx.check("the vport has its own SCSI host", vhost is not None, vport)
        with ctx.step("sanbusd publishes the vport (Vhba) and its host"):
            want = {vhba} | ({sanview.host_path(f"host{vhost}")} if vhost is not None else set())
            client.wait_signals(lambda s: objects_added(s, want), since=mark, timeout=60,
                                what=f"InterfacesAdded for {sorted(want)}")
        if vhost is not None:
            ctx.set_hosts([host, vhost])
        ctx.checkpoint(SYSFS_VPORT)

        with ctx.step("the kernel's refusals (sysfs)"):
            facts["create_again"] = g.vport_create(host, wwpn, wwnn)
            facts["create_same_wwpn_other_wwnn"] = g.vport_create(host, wwpn, "2000000000000013")
            facts["create_parent_wwpn"] = g.vport_create(host, self.initiator_wwpn, "2000000000000014")
            facts["delete_unknown"] = g.vport_delete(host, "2000000000000099", "2000000000000098")
            facts["vports_after_refusals"] = sorted(g.fc_vports())
        mark = client.mark()
        with ctx.step(f"vport_delete {wwpn}:{wwnn} (sysfs): the vport, its host and their objects go"):
            facts["delete"] = g.vport_delete(host, wwpn, wwnn)
            g.wait_for(lambda: g.find_vport(wwpn) is None, timeout=30, what=f"vport {wwpn} to go")
            gone = {vhba} | ({sanview.host_path(f"host{vhost}")} if vhost is not None else set())
            client.wait_signals(lambda s: objects_removed(s, gone), since=mark, timeout=60,
                                what=f"InterfacesRemoved for {sorted(gone)}")
            facts["delete_again"] = g.vport_delete(host, wwpn, wwnn)
            facts["vports_after_delete"] = g.fc_vports()
            facts["host_after_delete"] = vhost is not None and (g.SCSI_HOST / f"host{vhost}").exists()
            facts["parent_inuse_after_delete"] = g.read_attr(g.FC_HOST / f"host{host}" / "npiv_vports_inuse")
        facts["signals"] = client.since(mark)
        ctx.set_hosts([host])
        ctx.record("sysfs", facts)

    def _persistent(self, ctx: Context, host: int, b: DaemonB) -> None:
        """sanbusd "b" with --state-dir: a persistent vHBA survives a restart without its vport."""
        import guestlib as g

        wwpn, wwnn = self.persistent_wwns
        vhba = sanview.vhba_path(wwpn)
        Path(STATE_DIR_B).mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {"state_dir": STATE_DIR_B}
        ctx.record("persistent", out)
        with ctx.step('start sanbusd "b" (its own bus and polkitd, --state-dir)'):
            client = b.start()
        out["timings"] = dict(b.stack.timings)
        with ctx.step(f"Manager.CreateVhba persistent=true {wwpn} (sanbusd b)"):
            reply = _create(client, MGR, MGR_I, wwpn, wwnn, persistent=True, keep_failed=True,
                            parent=(self.initiator_wwnn, self.initiator_wwpn), wait=self.wait)
            out["create"] = reply
            out["vhba"] = _vhba_props(client, vhba)
            out["records_file"] = _read_json(Path(STATE_DIR_B) / "vhbas.json")
            out["persistent_vhbas"] = client.get(MGR, MGR_I, "PersistentVhbas")
        ctx.check_equal("CreateVhba persistent=true answers its Vhba", reply.get("body"), [vhba])
        ctx.check_equal("Vhba.Persistent is true", (out["vhba"] or {}).get("Persistent"), True)
        with ctx.step('stop sanbusd "b"'):
            out["stop_rc"] = b.stack.stop_daemon()
        ctx.check_equal('sanbusd "b" stops cleanly', out["stop_rc"], 0)
        with ctx.step(f"vport_delete {wwpn} behind sanbusd's back (sysfs)"):
            out["deleted_behind"] = g.vport_delete(host, wwpn, wwnn)
            g.wait_for(lambda: g.find_vport(wwpn) is None, timeout=30, what=f"vport {wwpn} to go")
        with ctx.step('start sanbusd "b" again, same --state-dir: it re-creates the vHBA'):
            t0 = time.monotonic()
            b.stack.start_daemon()
            out["restart_seconds"] = round(time.monotonic() - t0, 2)
            out["vport_after_restart"] = g.fc_vports().get(g.find_vport(wwpn) or "")
            out["persistent_vhbas_after_restart"] = client.get(MGR, MGR_I, "PersistentVhbas")
            out["vhba_after_restart"] = _vhba_props(client, vhba)
            out["b_differences"] = _converge(client, 30)
        rows = {r["WWPN"]: r for r in out["persistent_vhbas_after_restart"]}
        ctx.check_equal("PersistentVhbas says re-created", rows.get(wwpn, {}).get("Status"), "re-created")
        ctx.check("the vport is back in sysfs", out["vport_after_restart"] is not None, out["vport_after_restart"])
        ctx.check_equal('sanbusd "b" objects = sysfs after the restart', out["b_differences"], [])
        vport = out["vport_after_restart"] or {}
        ctx.set_hosts([host] + ([vport["host"]] if vport.get("host") is not None else []))
        ctx.checkpoint(RECREATED)
        with ctx.step(f"Vhba.Delete {wwpn} (sanbusd b): the record goes too"):
            out["delete"] = client.call_reply(vhba, VHBA_I, "Delete", "a{sv}", [{}])
            out["persistent_vhbas_after_delete"] = client.get(MGR, MGR_I, "PersistentVhbas")
            out["records_file_after_delete"] = _read_json(Path(STATE_DIR_B) / "vhbas.json")
            out["vport_after_delete"] = g.find_vport(wwpn)
        ctx.set_hosts([host])
        ctx.check("Vhba.Delete succeeds", out["delete"]["ok"], out["delete"])
        ctx.check("the vport is gone", out["vport_after_delete"] is None, out["vport_after_delete"])
        ctx.check_equal("and its record", out["persistent_vhbas_after_delete"], [])

    def _libvirt(self, ctx: Context, host: int, b: DaemonB) -> None:
        """sanbusd "b" with --libvirt-uri: the vHBA is libvirt's node device, and goes with Delete."""
        import guestlib as g

        libvirtd = ctx.libvirtd
        wwpn, wwnn = self.libvirt_wwns
        vhba = sanview.vhba_path(wwpn)
        out: dict[str, Any] = {"uri": libvirtd.URI}
        ctx.record("libvirt", out)
        t0 = time.monotonic()
        ok = libvirtd.ready()
        out.update(libvirtd_error=libvirtd.error, libvirtd_ready_seconds=libvirtd.ready_seconds,
                   libvirtd_waited_seconds=round(time.monotonic() - t0, 2))
        if not ctx.check("libvirtd runs in the guest", ok, libvirtd.error):
            return
        with ctx.step("what libvirt sees before (virsh nodedev-list --cap fc_host)"):
            out["fc_hosts_before"] = libvirtd.fc_hosts()
        with ctx.step('(re)start sanbusd "b" with --libvirt-uri nodedev:///system'):
            out["stop_rc"] = b.stack.stop_daemon()
            client = b.start(args=("--state-dir", STATE_DIR_B, "--libvirt-uri", libvirtd.URI))
        with ctx.step(f"Manager.CreateVhba {wwpn} through libvirt"):
            reply = _create(client, MGR, MGR_I, wwpn, wwnn, keep_failed=True,
                            parent=(self.initiator_wwnn, self.initiator_wwpn), wait=self.wait)
            out["create"] = reply
            out["vhba"] = _vhba_props(client, vhba)
            out["vport"] = g.fc_vports().get(g.find_vport(wwpn) or "")
            out["fc_hosts_after_create"] = libvirtd.fc_hosts()
        vhost = (out["vport"] or {}).get("host")
        ctx.check_equal("CreateVhba through libvirt answers its Vhba", reply.get("body"), [vhba])
        ctx.check(f"virsh nodedev-list --cap fc_host lists scsi_host{vhost}",
                  vhost is not None and f"scsi_host{vhost}" in out["fc_hosts_after_create"],
                  out["fc_hosts_after_create"])
        if vhost is not None:
            out["dumpxml"] = libvirtd.virsh("nodedev-dumpxml", f"scsi_host{vhost}")
            ctx.check("libvirt's node device has the vHBA's WWPN", wwpn in out["dumpxml"]["stdout"],
                      out["dumpxml"])
        with ctx.step(f"Vhba.Delete {wwpn} (libvirt's node-device destroy)"):
            out["delete"] = client.call_reply(vhba, VHBA_I, "Delete", "a{sv}", [{}])
            out["vport_after_delete"] = g.find_vport(wwpn)
            out["fc_hosts_after_delete"] = libvirtd.fc_hosts()
        ctx.check("Vhba.Delete through libvirt succeeds", out["delete"]["ok"], out["delete"])
        ctx.check("the vport is gone from sysfs", out["vport_after_delete"] is None, out["vport_after_delete"])
        ctx.check("libvirt no longer lists it",
                  vhost is not None and f"scsi_host{vhost}" not in out["fc_hosts_after_delete"],
                  out["fc_hosts_after_delete"])

    # -- the story, in either world ------------------------------------------------------------

    def _story(self, w: Any) -> None:
        client = w.client
        objects = client.managed_objects()
        (parent,) = [p for p, o in objects.items() if o.get(FC_I, {}).get("WWPN") == self.initiator_wwpn]
        host = objects[parent][HOST_I]["Number"]
        wwpn, wwnn = self.kept_wwns
        vhba = sanview.vhba_path(wwpn)
        w.record("story", {"host": host, "parent": parent})

        # 1. keep_failed: the vHBA stays, in the state the fabric login ended in.
        with w.step(f"FcHost.CreateVhba {wwpn} keep_failed=true: a Vhba in {self.end_state!r}"):
            reply = _create(client, parent, FC_I, wwpn, wwnn, keep_failed=True, wait=self.wait)
            now = client.managed_objects()  # right after the answer
        props = now.get(vhba, {}).get(VHBA_I, {})
        vhost = props.get("Host", sanview.NO_OBJECT)
        w.record("create_kept", {
            "ok": reply["ok"], "body": reply.get("body"), "error": reply.get("error"),
            "message": reply.get("message"),
            "vhba": {k: v for k, v in props.items() if k != "Host"},
            "has_host": vhost != sanview.NO_OBJECT, "host_on_bus": vhost in now,
            "host_fc_vhba": now.get(vhost, {}).get(FC_I, {}).get("Vhba"),
            "parent_vports_in_use": now[parent][FC_I]["VportsInUse"]})
        w.record("create_kept_seconds", reply["seconds"])
        w.check_equal("CreateVhba keep_failed=true answers the Vhba", reply.get("body"), [vhba])
        w.check_equal("its State is the login's end", props.get("State"), self.end_state)
        w.check("its Host is on the bus when the call returns", vhost != sanview.NO_OBJECT and vhost in now,
                {"Host": vhost})
        if w.world == "kernel":
            import guestlib as g

            name = g.find_vport(wwpn)
            vport = g.fc_vports().get(name or "")
            w.record("create_kept_sysfs", {"vport": vport, "host": g.fc_host_attrs(vport["host"])
                                           if vport and vport.get("host") is not None else None})
            w.set_hosts([host] + ([vport["host"]] if vport and vport.get("host") is not None else []))
        w.checkpoint(KEPT)

        # 2. The same WWPN again.
        with w.step(f"CreateVhba {wwpn} again: refused"):
            reply = _create(client, parent, FC_I, wwpn, wwnn, keep_failed=True, wait=self.wait)
            vhbas = _vhba_paths(client)
        w.record("duplicate", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                               "vhbas": vhbas})
        w.check("the same WWPN again is refused (InvalidArgument or AlreadyExists)",
                reply.get("error") in (ERR + "InvalidArgument", ERR + "AlreadyExists"), reply)
        w.check_equal("and nothing new appears", vhbas, [vhba])

        # 3. Without keep_failed: NotSupported, and the vport is deleted again.
        rp, rn = self.refused_wwns
        with w.step(f"Manager.CreateVhba {rp} without keep_failed: NotSupported, no vport left"):
            reply = _create(client, MGR, MGR_I, rp, rn, parent=(self.initiator_wwnn, self.initiator_wwpn),
                            wait=self.wait)
            vhbas = _vhba_paths(client)
        w.record("not_supported", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                                   "vhbas": vhbas})
        w.check_equal("no fabric support: NotSupported", reply.get("error"), ERR + "NotSupported")
        w.check_equal("no Vhba object is left", vhbas, [vhba])
        if w.world == "kernel":
            import guestlib as g

            left = g.find_vport(rp)
            w.record("not_supported_sysfs", {"vport": left, "vports": g.fc_vports()})
            w.check("no vport is left in /sys/class/fc_vports", left is None, g.fc_vports())

        # 4. Vhba.Delete.
        with w.step(f"Vhba.Delete {wwpn}: the vport, its host and their objects go"):
            reply = client.call_reply(vhba, VHBA_I, "Delete", "a{sv}", [{}])
            now = client.managed_objects()
        w.record("delete", {"ok": reply["ok"], "error": reply.get("error"), "message": reply.get("message"),
                            "vhba_on_bus": vhba in now, "host_on_bus": vhost in now,
                            "parent_vports_in_use": now[parent][FC_I]["VportsInUse"]})
        w.record("delete_seconds", reply["seconds"])
        w.check("Vhba.Delete succeeds", reply["ok"], reply)
        w.check("its Vhba and host objects are gone when it returns", vhba not in now and vhost not in now,
                {"vhba": vhba in now, "host": vhost in now})
        if w.world == "kernel":
            import guestlib as g

            w.record("delete_sysfs", {"vport": g.find_vport(wwpn), "vports": g.fc_vports(),
                                      "host_exists": vhost != sanview.NO_OBJECT
                                      and (g.SCSI_HOST / vhost.rsplit("/", 1)[1]).exists()})
            w.check("no vport is left in sysfs", g.find_vport(wwpn) is None, g.fc_vports())
            w.set_hosts([host])


class DaemonB:
    """A second sanbusd on its own private bus (with polkitd), and a client for it; restarted at
    will without touching the group's daemon and its signal record."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.client: Any = None

    def start(self, args: tuple[str, ...] | None = None) -> Any:
        from guestsan import SanClient

        if self.stack.bus is None:
            self.stack.start()  # bus, polkitd, sanbusd
        else:
            self.stack.start_daemon(args=args)
        if self.client is None:
            self.client = SanClient(self.stack.address)  # calls the name, whoever owns it now
        return self.client

    def close(self) -> dict[str, Any]:
        out: dict[str, Any] = {"signals": [], "stop_rc": None, "log_problems": []}
        if self.client is not None:
            out["signals"] = self.client.signals
            self.client.close()
        if self.stack.bus is not None:
            out["stop_rc"] = self.stack.stop_daemon()
            out["log_problems"] = [line for line in self.stack.log().splitlines()
                                   if any(w in line for w in ("Traceback", "ERROR", "WARNING"))]
            self.stack.stop()
        return out


def _part(ctx: Context, what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - a failed check; the next part still runs
        if not ctx.report.recorded(exc):
            import traceback

            ctx.check(f"{what} ran to completion", False, traceback.format_exc(limit=8))


def _create(client: Any, path: str, iface: str, wwpn: str, wwnn: str, *, keep_failed: bool = False,
            persistent: bool = False, wait: int = 30, parent: tuple[str, str] | None = None) -> dict[str, Any]:
    from dbus_fast import Variant

    options = {"wwpn": Variant("s", wwpn), "wwnn": Variant("s", wwnn), "wait": Variant("u", wait)}
    if keep_failed:
        options["keep_failed"] = Variant("b", True)
    if persistent:
        options["persistent"] = Variant("b", True)
    if parent is not None:
        options["parent_wwnn"], options["parent_wwpn"] = Variant("s", parent[0]), Variant("s", parent[1])
    return client.call_reply(path, iface, "CreateVhba", "a{sv}", [options])


def _vhba_paths(client: Any) -> list[str]:
    return sorted(p for p, o in client.managed_objects().items() if VHBA_I in o)


def _vhba_props(client: Any, path: str) -> dict[str, Any] | None:
    return client.managed_objects().get(path, {}).get(VHBA_I)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def _watch_vport(wwpn: str, *, settle: float, timeout: float) -> list[tuple[float, str, str, str]]:
    """The vport's state, last state and its host's port_state as they change, polled every
    20 ms from when vport_create returned, until they have held still for ``settle`` s (or
    ``timeout``): [(monotonic time, vport_state, vport_last_state, host port_state)]."""
    import guestlib as g

    seen: list[tuple[float, str, str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = g.find_vport(wwpn)
        if name is not None:
            d = g.FC_VPORTS / name
            host = g.vport_host(name)
            now = (g.read_attr(d / "vport_state") or "", g.read_attr(d / "vport_last_state") or "",
                   (g.read_attr(g.FC_HOST / f"host{host}" / "port_state") or "") if host is not None else "")
            if not seen or seen[-1][1:] != now:
                seen.append((time.monotonic(), *now))
            elif time.monotonic() - seen[-1][0] >= settle and now[0] not in ("", "Initializing"):
                break
        time.sleep(0.02)
    return seen


def _converge(client: Any, timeout: float) -> list[str]:
    """Poll until this daemon's objects equal sysfs; the last differences ([] when equal)."""
    import guestlib as g

    deadline = time.monotonic() + timeout
    while True:
        diffs = sanview.sysfs_differences(client.managed_objects(), g.sysfs_snapshot())
        if not diffs or time.monotonic() > deadline:
            return diffs
        time.sleep(0.2)


SCENARIO = Npiv()
