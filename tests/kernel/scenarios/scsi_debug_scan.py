"""scsi_debug: targeted and wildcard scans, Lun.Rescan after a capacity change, Lun.Delete, bad input.

Kernel side: ``scsi_debug`` 2 hosts x 2 targets x LUNs 0-3 (as scenarios/scsi_debug.py, in its own
boot). With sanbusd up, ``max_luns`` is raised to 8: LUNs 4-7 now exist on every target, but the
kernel does not attach them by itself. scsi_debug (SPC-4) queues the unit attention REPORTED LUNS
DATA HAS CHANGED on every LUN it has; a TEST UNIT READY to LUN 0 of each target delivers it (as
multipathd's path checker would), and every host's RescanSuggested turns true. Then, through sanbusd, as root:

* bad input (a LUN out of range) and a scan string the kernel refuses (channel 3: EINVAL) give
  their named errors and attach nothing; the refused host still suggests a rescan;
* ``ScanAll({"luns": [5]})`` attaches exactly LUN 5 on every target of every scsi_debug host (one
  "0 T 5" per known target) and clears RescanSuggested;
* ``ScsiHost.Scan({})`` of the second host attaches its LUNs 4, 6 and 7, and nothing on the first;
* ``Lun.Delete`` of one path removes its object and its /sys entry;
* ``virtual_gb`` makes every LUN 1 GiB in the target; the kernel re-reads a capacity only on a
  rescan: ``Lun.Rescan`` of one LUN updates its Size before the call returns, the others keep theirs
  (checkpoint ``final``);
* *the story* (also replayed on the simulated SAN, ``simulate``): a process (``sleep``) holds two
  disks of the first host open; ``Lun.Delete`` of one answers Busy naming it ("sleep (pid N)")
  and removes nothing; ``Lun.Delete force=true`` of the other removes it although it is held;
  the process is killed, and a plain ``Lun.Delete`` of the first works (checkpoint ``held``).

Simulated side: "other" hosts (driver scsi_debug) with the disks of each checkpoint. The simulated
SAN has no admin command that adds disks behind a non-FC host, so only the story is replayed: it
starts on ``fabric("final")`` (``story_start``), the holder is the control socket's ``hold-open``
/ ``release``. Host-side assertions: test_scsi_debug_scan.py.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import sanview
from sanscenario import INITIAL, Context

from .scsi_debug import ScsiDebug

TARGETED = "targeted"  # after ScanAll luns=[5]
FINAL = "final"  # after the host's wildcard scan, a Delete and a Rescan
HELD = "held"  # the story: Deletes while a process holds the disks open

MGR = f"{sanview.ROOT}/Manager"
MGR_I = "org.example.SanStorage.Manager"
ERR = "org.example.SanStorage.Error."
SIM_HOLDER = "sleep (pid 4242)"  # the simulated SAN's holder (hold-open --by)


@dataclass(frozen=True)
class ScsiDebugScan(ScsiDebug):
    name: ClassVar[str] = "scsi_debug_scan"
    checkpoints: ClassVar[tuple[str, ...]] = (INITIAL, TARGETED, FINAL, HELD)
    # The story (the Deletes while held open) starts where the exercise has got to: "final".
    story_start: ClassVar[str] = FINAL
    story_checkpoints: ClassVar[tuple[str, ...]] = (HELD,)
    # Compared with the same story on the simulated SAN (after sanview.normalize_refs; pids as "N").
    story_records: ClassVar[tuple[str, ...]] = ("held_busy", "held_force", "held_release")

    added_hosts: int = 0  # (ScsiDebug's add_host step is not part of this scenario)
    max_luns: int = 8  # echo 8 > /sys/bus/pseudo/drivers/scsi_debug/max_luns
    asked: int = 5  # ScanAll luns=[5]
    wildcard_host: int = 1  # index of the host scanned with ScsiHost.Scan({})
    deleted: tuple[int, int, int] = (1, 1, 7)  # (host index, target, LUN): Lun.Delete
    resized: tuple[int, int, int] = (1, 0, 2)  # (host index, target, LUN): Lun.Rescan
    virtual_gb: int = 1  # echo 1 > .../virtual_gb: every LUN reports 1 GiB
    held: tuple[int, int, int] = (0, 0, 3)  # held open: Delete is Busy; once released, Delete works
    forced: tuple[int, int, int] = (0, 1, 3)  # held open too: Delete force=true removes it anyway

    def disks(self, checkpoint: str) -> dict[int, dict[tuple[int, int], int]]:
        """host index -> {(target, LUN): size in bytes} attached at a checkpoint."""
        small = self.dev_size_mb << 20
        reached = self.checkpoints[:self.checkpoints.index(checkpoint) + 1]  # and every one before
        out = {}
        for i in range(self.hosts):
            luns = set(range(self.luns))
            if TARGETED in reached:
                luns.add(self.asked)
            if FINAL in reached and i == self.wildcard_host:
                luns |= set(range(self.max_luns))
            disks = {(t, n): small for t in range(self.targets) for n in luns}
            if FINAL in reached:
                if i == self.deleted[0]:
                    del disks[self.deleted[1:]]
                if i == self.resized[0]:
                    disks[self.resized[1:]] = self.virtual_gb << 30
            if HELD in reached:
                for gone in (self.held, self.forced):
                    if i == gone[0]:
                        del disks[gone[1:]]
            out[i] = disks
        return out

    # -- the simulated SAN -------------------------------------------------------------------

    def fabric(self, checkpoint: str) -> dict[str, Any]:
        return {"host": [
            {"type": "other", "driver": "scsi_debug", "disk": [
                {"target": t, "lun": n, "vendor": self.vendor, "model": self.model, "rev": self.rev,
                 "size": f"{size}", "wwid": self.wwid(t, n)}
                for (t, n), size in sorted(disks.items())]}
            for i, disks in sorted(self.disks(checkpoint).items())]}

    def simulate(self, sim: Any) -> None:
        blocks: list[str] = []

        def hold(nodes: list[str]) -> str:
            for node in nodes:
                sim.admin({"command": "hold-open", "block": node.removeprefix("/dev/"), "by": SIM_HOLDER})
                blocks.append(node.removeprefix("/dev/"))
            return SIM_HOLDER

        def release() -> None:
            for block in blocks:
                sim.admin({"command": "release", "block": block})

        self._held_story(sim, hold, release)

    # -- the real kernel -----------------------------------------------------------------------

    def exercise(self, ctx: Context) -> None:
        import guestlib as g
        from dbus_fast import Variant
        from guestsan import property_changes

        client = ctx.client
        hosts = list(ctx.hosts)
        host_paths = [sanview.host_path(f"host{h}") for h in hosts]

        def attached() -> list[str]:
            return sorted((d for h in hosts for d in ctx.scsi_devices(h)), key=sanview.hctl_key)

        def suggested() -> list[bool]:
            return [client.get(p, sanview.HOST_I, "RescanSuggested") for p in host_paths]

        def scan_all(**options: Any) -> dict[str, Any]:
            return client.call_reply(MGR, MGR_I, "ScanAll", "a{sv}", [options])

        def changes(mark: int) -> dict[str, list[bool]]:
            signals = client.since(mark)
            return {p: property_changes(signals, p, "RescanSuggested") for p in host_paths}

        # 1. More LUNs behind every target; the kernel attaches none by itself. A TEST UNIT READY
        #    to LUN 0 of each target delivers scsi_debug's unit attention: RescanSuggested on every
        #    host. (Not a read: with vpd_use_hostno=0 scsi_debug puts the ports of host N in ALUA
        #    state N % 3, and scsi_dh_alua fails reads on a standby path with EIO.)
        before = attached()
        mark = client.mark()
        with ctx.step(f"max_luns {self.luns} -> {self.max_luns}, then TEST UNIT READY to LUN 0 of every target"):
            g.write_attr(g.SCSI_DEBUG / "max_luns", str(self.max_luns))
            time.sleep(1)
            quiet = {"attached": attached(), "suggested": suggested()}
            for h in hosts:
                for t in range(self.targets):
                    g.send_tur(f"{h}:0:{t}:0")
            try:
                client.wait_signals(lambda s: all(True in property_changes(s, p, "RescanSuggested")
                                                  for p in host_paths),
                                    since=mark, timeout=30, what="RescanSuggested on every host")
            except TimeoutError:
                pass  # recorded: test_scsi_debug_scan.py says what was expected
        ctx.record("raise", {"before": before, "without_io": quiet, "suggested": suggested(),
                             "changes": changes(mark)})

        # 2. Bad input, and a scan string the kernel refuses: named errors, nothing attached.
        first = sanview.host_path(f"host{hosts[0]}")
        answers = {}
        with ctx.step("bad input and a refused scan attach nothing"):
            answers["lun out of range"] = scan_all(luns=Variant("at", [self.asked, 70000]))
            answers["unknown option"] = scan_all(lun=Variant("at", [self.asked]))
            answers["channel the kernel refuses"] = scan_all(channel=Variant("u", 3),
                                                             hosts=Variant("ao", [first]))
        ctx.record("bad_input", {"answers": answers, "attached": attached(), "suggested": suggested()})

        # 3. Exactly LUN 5 on every target of every host.
        mark = client.mark()
        with ctx.step(f"ScanAll luns=[{self.asked}]: LUN {self.asked} on every target of every host"):
            reply = scan_all(luns=Variant("at", [self.asked]))
            now = client.managed_objects()
        ctx.record("targeted", {
            "reply": reply, "attached": attached(), "suggested": suggested(), "changes": changes(mark),
            "ready": {p: now[p][sanview.LUN_I]["BlockDevice"] for p in reply.get("body", [[]])[0] if p in now}})
        ctx.checkpoint(TARGETED)

        # 4. A wildcard scan of one host: the rest of its LUNs, nothing elsewhere.
        host = hosts[self.wildcard_host]
        with ctx.step(f"ScsiHost.Scan of host{host}: its other LUNs"):
            reply = client.call_reply(sanview.host_path(f"host{host}"), sanview.HOST_I, "Scan", "a{sv}", [{}])
            now = client.managed_objects()
            # udev has finished every new disk when the answer comes (sanbusd waits for it)
            udev = {p: g.udev_done(now[p][sanview.LUN_I]["BlockDevice"])
                    for p in reply.get("body", [[]])[0] if p in now}
        ctx.record("host_scan", {"host": host, "reply": reply, "attached": attached(), "udev_done": udev})

        # 5. Lun.Delete of one path. It was attached by the scan just now, and udev goes on
        #    working on a new disk after the scan's answer (a synthesized "change" of the block
        #    device, 1-2 s after its "add" under TCG): while a udev worker has it open, Delete
        #    answers Busy naming "(udev-worker) (pid N)". Wait (bounded) until nobody has it open.
        i, t, n = self.deleted
        victim = f"{hosts[i]}:0:{t}:{n}"
        node = client.get(sanview.lun_path(victim), sanview.LUN_I, "BlockDevice")
        with ctx.step(f"wait until nobody holds {node} open (udev's work on the new disk)"):
            released = _wait_unheld([node], timeout=30)
        with ctx.step(f"Lun.Delete of {victim}"):
            reply = client.call_reply(sanview.lun_path(victim), sanview.LUN_I, "Delete", "a{sv}", [{}])
            objects = client.managed_objects()
        ctx.record("delete", {"hctl": victim, "reply": reply, "on_bus": sanview.lun_path(victim) in objects,
                              "in_sysfs": victim in ctx.scsi_devices(hosts[i]), "attached": attached(),
                              "released": released})

        # 6. The LUNs grow; Lun.Rescan of one re-reads its capacity.
        i, t, n = self.resized
        grown = f"{hosts[i]}:0:{t}:{n}"
        path = sanview.lun_path(grown)
        mark = client.mark()
        with ctx.step(f"virtual_gb={self.virtual_gb}, then Lun.Rescan of {grown}"):
            g.write_attr(g.SCSI_DEBUG / "virtual_gb", str(self.virtual_gb))
            size_before = client.get(path, sanview.LUN_I, "Size")
            reply = client.call_reply(path, sanview.LUN_I, "Rescan", "a{sv}", [{}])
            size_after = client.get(path, sanview.LUN_I, "Size")  # "updated before the call returns"
        sizes = {o[sanview.LUN_I]["HCTL"]: o[sanview.LUN_I]["Size"] for p, o in client.managed_objects().items()
                 if "/luns/" in p and int(o[sanview.LUN_I]["HCTL"].split(":")[0]) in hosts}
        ctx.record("rescan", {"hctl": grown, "reply": reply, "size_before": size_before, "size_after": size_after,
                              "sysfs_size": g.scsi_device_info(grown).size_bytes, "sizes": sizes,
                              "size_changes": property_changes(client.since(mark), path, "Size")})
        ctx.checkpoint(FINAL)

        # 7. The story: Lun.Delete while a process holds the disk open.
        holder: dict[str, Any] = {}

        def hold(nodes: list[str]) -> str:
            import subprocess

            holder["before"] = _wait_unheld(nodes, timeout=30, quiet=0.2)  # then only sleep holds them
            fds = [os.open(node, os.O_RDONLY | os.O_CLOEXEC) for node in nodes]
            try:  # only sleep holds them: ours are closed right after the fork
                proc = subprocess.Popen(["sleep", "600"], pass_fds=fds, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                for fd in fds:
                    os.close(fd)
            holder["proc"] = proc
            comm = g.read_attr(f"/proc/{proc.pid}/comm")
            holder["record"] = {"pid": proc.pid, "comm": comm, "nodes": nodes, "fds": _fd_targets(proc.pid),
                                "openers": {node: _openers(node) for node in nodes}}
            return f"{comm} (pid {proc.pid})"

        def release() -> None:
            proc = holder.get("proc")
            if proc is None:
                return
            holder["record"]["alive_at_release"] = proc.poll() is None
            proc.kill()
            proc.wait(timeout=10)
            holder["record"]["openers_after"] = {node: _openers(node) for node in holder["record"]["nodes"]}

        try:
            self._held_story(ctx, hold, release)
        finally:
            ctx.record("held_kernel", {**holder.get("record", {}), "before": holder.get("before")})

    # -- the story, in either world ------------------------------------------------------------

    def _held_story(self, w: Any, hold: Any, release: Any) -> None:
        """Two disks of the first host held open by one process (``hold(nodes)`` answers its
        name, "sleep (pid N)"): Delete of one is Busy and names it, removing nothing; Delete
        force=true of the other removes it anyway; the process goes (``release()``), and a plain
        Delete of the first works. ``w`` is the guest's Context or simstory's SimContext."""
        from dbus_fast import Variant

        client = w.client
        objects = client.managed_objects()
        hosts = sorted(o[sanview.HOST_I]["Number"] for o in objects.values()
                       if o.get(sanview.HOST_I, {}).get("Driver") == "scsi_debug")
        kept, forced = (f"{hosts[i]}:0:{t}:{n}" for i, t, n in (self.held, self.forced))
        path = {h: sanview.lun_path(h) for h in (kept, forced)}
        node = {h: objects[path[h]][sanview.LUN_I]["BlockDevice"] for h in (kept, forced)}
        if w.world == "kernel":
            w.check_equal("the story's scsi_debug hosts are the scenario's", hosts, w.hosts)

        def delete(hctl: str, **options: Any) -> dict[str, Any]:
            mark = client.mark()
            reply = client.call_reply(path[hctl], sanview.LUN_I, "Delete", "a{sv}", [options])
            host = int(hctl.split(":")[0])
            return {"hctl": hctl, "ok": reply["ok"], "error": reply.get("error"),
                    "message": reply.get("message"), "on_bus": path[hctl] in client.managed_objects(),
                    "in_sysfs": hctl in w.scsi_devices(host),
                    "removed": [s["object"] for s in client.since(mark, "InterfacesRemoved")]}

        def same_pids(record: dict[str, Any]) -> dict[str, Any]:
            """The record as compared with the other world: a pid is the one thing that differs."""
            if record.get("message"):
                record = {**record, "message": re.sub(r"\(pid \d+\)", "(pid N)", record["message"])}
            return record

        with w.step(f"a process holds {node[kept]} and {node[forced]} open"):
            name = hold([node[kept], node[forced]])
        try:
            with w.step(f"Lun.Delete of {kept} while {name} holds it: Busy, nothing removed"):
                busy = delete(kept)
            w.record("held_busy", same_pids(busy))
            w.record("held_busy_message", busy["message"])  # with the pid
            w.check_equal("Lun.Delete of a disk held open answers Busy", busy["error"], ERR + "Busy")
            w.check("its message names the process and only it",
                    f"{kept} ({node[kept]}) is in use by {name};" in (busy["message"] or ""), busy["message"])
            w.check("and removes nothing", busy["on_bus"] and busy["in_sysfs"] and busy["removed"] == [], busy)

            with w.step(f"Lun.Delete force=true of {forced} while {name} holds it: removed anyway"):
                force = delete(forced, force=Variant("b", True))
            w.record("held_force", same_pids(force))
            w.check("force=true removes a disk held open", force["ok"], force)
            w.check("its object and sysfs entry are gone when it returns",
                    not force["on_bus"] and not force["in_sysfs"] and force["removed"] == [path[forced]], force)
        finally:
            with w.step(f"{name} closes them"):
                release()

        with w.step(f"Lun.Delete of {kept} once nobody holds it"):
            plain = delete(kept)
        w.record("held_release", same_pids(plain))
        w.check("a plain Delete works once the process has closed the disk", plain["ok"], plain)
        w.check("its object and sysfs entry are gone when it returns",
                not plain["on_bus"] and not plain["in_sysfs"] and plain["removed"] == [path[kept]], plain)
        w.checkpoint(HELD)


# -- who holds a block device open (in the guest; as fuser does, as the daemon's block_users) ----


def _openers(node: str) -> list[str]:
    """ "comm (pid N)" of every process with ``node`` (/dev/sdX) open."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == node for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/comm") as f:
                    out.append(f"{f.read().strip()} (pid {pid})")
        except OSError:
            continue  # gone meanwhile
    return out


def _run_by_udev(opener: str) -> bool | None:
    """Is this opener ("comm (pid N)") a udev worker, or a program its rules run (multipath -u)?
    None if it is gone before we could tell."""
    pid = opener.rsplit("(pid ", 1)[1].rstrip(")")
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return None  # gone: cannot tell
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm in ("(udev-worker)", "systemd-udevd"):
            return True
        pid = rest[1]  # ppid
        if pid in ("0", "1"):
            return False
    return False


def _fd_targets(pid: int) -> list[str]:
    try:
        return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return []


def _wait_unheld(nodes: list[str], timeout: float, quiet: float = 1.0) -> dict[str, Any]:
    """Until nobody has had any of ``nodes`` open for ``quiet`` seconds (at most ``timeout``): who
    had one open meanwhile (and whether udev ran it), how long until they were free, who still
    has one (on a timeout)."""
    start = time.monotonic()
    seen: list[dict[str, Any]] = []
    free_since = None
    while True:
        now = time.monotonic()
        openers = [o for node in nodes for o in _openers(node)]
        seen += [{"who": o, "udev": _run_by_udev(o)} for o in openers if o not in [e["who"] for e in seen]]
        if openers:
            free_since = None
        elif free_since is None:
            free_since = now
        if free_since is not None and now - free_since >= quiet:
            return {"held_by": seen, "seconds": round(free_since - start, 2), "still": []}
        if now - start > timeout:
            return {"held_by": seen, "seconds": round(now - start, 2), "still": openers}
        time.sleep(0.05)


SCENARIO = ScsiDebugScan()
