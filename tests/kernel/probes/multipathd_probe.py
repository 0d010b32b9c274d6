"""Probe multipathd (multipath-tools 0.9.4) on the lab kernel; capture its verbatim replies.

Not a test: run it by hand when the adapter needs fresh samples or facts (README.md, "multipath").

    .venv/bin/python tests/kernel/probes/multipathd_probe.py scsi_debug OUTDIR
    .venv/bin/python tests/kernel/probes/multipathd_probe.py iscsi OUTDIR

boots the lab kernel (lab.boot) and runs the same file in the guest with ``--guest PART``. The guest
writes every reply it talks to multipathd about (over the socket, guestlib.multipathd_command) to
OUTDIR/samples/NAME.txt, byte for byte, and a timeline with guest times to OUTDIR/timeline.txt;
dm uevents go to OUTDIR/uevents-dm.txt. tests/unit/backend/samples/multipathd/ holds a selection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OUT = Path("/run/kl-out")
SAMPLES = OUT / "samples"
T0 = time.monotonic()


def t() -> float:
    return round(time.monotonic() - T0, 2)


def note(text: str) -> None:
    line = f"[{t():8.2f}] {text}"
    print(line, flush=True)
    with open(OUT / "timeline.txt", "a") as fh:
        fh.write(line + "\n")


def save(name: str, text: str) -> None:
    (SAMPLES / name).write_text(text)


def mpd(command: str, name: str | None = None, *, timeout: float = 30) -> str:
    """One command over the socket; saved verbatim as samples/NAME.txt; timed in the timeline."""
    import guestlib as g

    start = time.monotonic()
    try:
        reply = g.multipathd_command(command, timeout=timeout)
    except OSError as exc:
        reply = f"<{type(exc).__name__}: {exc}>"
    took = time.monotonic() - start
    if name:
        save(f"{name}.txt", reply)
    first = reply.strip().splitlines()[0] if reply.strip() else repr(reply)
    note(f"multipathd {command!r} -> {first[:100]!r} ({len(reply)} bytes, {took:.3f} s)")
    return reply


def sh(argv: list[str], name: str | None = None, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    text = f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}rc={proc.returncode}\n"
    if name:
        save(f"{name}.txt", text)
    note(f"{' '.join(argv)} -> rc={proc.returncode} ({took:.2f} s) {(proc.stdout + proc.stderr).strip()[:200]!r}")
    return proc


def maps() -> list[dict]:
    import guestlib as g

    try:
        return json.loads(g.multipathd_command("show maps json", timeout=30)).get("maps", [])
    except (OSError, ValueError) as exc:
        note(f"show maps json failed: {exc}")
        return []


def map_names() -> list[str]:
    return [m["name"] for m in maps()]


def states(wwid: str | None = None) -> dict[str, tuple]:
    import guestlib as g

    out = {}
    for m in maps():
        if wwid is None or m.get("uuid") == wwid:
            out.update({f"{m['name']}/{k}": v for k, v in g.Multipathd.path_states(m).items()})
    return out


def dmsetup_names() -> list[str]:
    out = subprocess.run(["dmsetup", "ls", "--target", "multipath"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip() and "No devices" not in line)


def wait(predicate, timeout: float, what: str, interval: float = 0.1):
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            note(f"  {what}: after {time.monotonic() - start:.2f} s")
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            note(f"  {what}: NOT within {timeout:.0f} s")
            return None
        time.sleep(interval)


def step(name: str, body) -> None:
    note(f"=== {name}")
    try:
        body()
    except Exception:  # noqa: BLE001 - a probe goes on
        note(f"!!! {name} failed:\n{traceback.format_exc()}")


class KernelMonitor:
    """``udevadm monitor --kernel --property --subsystem-match=block`` into uevents-dm.txt."""

    def __init__(self) -> None:
        self.path = OUT / "uevents-dm.txt"
        self.proc = subprocess.Popen(["udevadm", "monitor", "--kernel", "--udev", "--property",
                                      "--subsystem-match=block"], stdout=open(self.path, "wb"),
                                     stderr=subprocess.STDOUT)
        time.sleep(0.5)

    def mark(self, text: str) -> None:
        note(f"(uevent mark) {text}")
        with open(OUT / "uevent-marks.txt", "a") as fh:
            fh.write(f"{time.monotonic():.6f} {text}\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def hold(node: str):
    """A child process (sleep) holding ``node`` open, as a VM would; .kill() releases it."""
    fd = os.open(node, os.O_RDONLY)
    try:
        return subprocess.Popen(["sleep", "3600"], pass_fds=(fd,))
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------


def guest_scsi_debug() -> None:
    import guestlib as g

    g.start_udevd()
    hosts = g.load_scsi_debug(add_host=2, num_tgts=1, max_luns=2, vpd_use_hostno=0, dev_size_mb=8)
    g.settle(120)
    note(f"scsi_debug hosts {hosts}: {g.scsi_devices()}")
    blocks = {h: g.wait_for_block(h) for h in g.scsi_devices()}
    wwids = {h: g.udev_property(b, "ID_SERIAL") for h, b in blocks.items()}
    note(f"blocks {blocks} wwids {wwids}")
    w1, w2 = sorted(set(wwids.values()))
    mon = KernelMonitor()
    mp = g.Multipathd(verbosity=3)
    (g.MULTIPATH_DIR / "conf.d").mkdir(parents=True, exist_ok=True)
    g.MULTIPATH_CONF.write_text(mp.conf)  # as Multipathd.start does, but every answer recorded
    for name in ("wwids", "bindings"):
        (g.MULTIPATH_DIR / name).write_text("")
    save("multipath.conf", mp.conf)
    start = time.monotonic()
    mp.process = subprocess.Popen(["multipathd", "-d", "-s", "-v3"], stdout=open(mp.log_path, "ab"),
                                  stderr=subprocess.STDOUT)
    replies = []
    while time.monotonic() - start < 60:
        r = mpd("show daemon")
        replies.append((round(time.monotonic() - start, 2), r))
        if r.startswith("pid ") and ("idle" in r or "running" in r):
            break
        time.sleep(0.1)
    save("show-daemon-startup.txt", "".join(f"{s} {r!r}\n" for s, r in replies))
    note(f"multipathd answered after {replies[0][0] if replies else None} s, idle after {replies[-1][0]} s")
    g.settle(60)

    step("first replies, no maps (find_multipaths strict)", lambda: (
        mpd("show daemon", "show-daemon"), mpd("show status", "show-status"),
        mpd("show maps json", "show-maps-json.empty"), mpd("show maps", "show-maps.empty"),
        mpd("show paths", "show-paths.strict"),
        mpd('show paths raw format "%d %w %i %D %t %T %o %m"', "show-paths-raw.strict"),
        mpd("show map nosuch json", "show-map-json.nosuch"), mpd("frobnicate", "unknown-command"),
        mpd("show", "show-incomplete"), mpd("show maps jsonx", "show-maps-jsonx"),
        mpd("show config local", "show-config-local"), mpd("show blacklist", "show-blacklist"),
        sh(["cat", "/etc/multipath/wwids"], "wwids.initial")))

    def add_map_strict():
        r = mpd(f"add map {w1}", "add-map.strict-not-in-wwids")
        time.sleep(3)
        note(f"after add map (strict, not in wwids): maps={map_names()} dm={dmsetup_names()} reply={r!r}")
        sh(["cat", "/etc/multipath/wwids"], "wwids.after-add-map-strict")
        if not map_names():
            sh(["multipath", "-a", w1], "multipath-a")
            sh(["cat", "/etc/multipath/wwids"], "wwids.after-multipath-a")
            start = time.monotonic()
            r = mpd(f"add map {w1}", "add-map.ok")
            wait(lambda: w1 in [m["uuid"] for m in maps()], 30, f"map for {w1} after multipath -a + add map ({r!r})")
            note(f"add map took {time.monotonic() - start:.2f} s incl. wait; maps={map_names()}")
        mpd("show maps json", "show-maps-json.one")
    step("add map under find_multipaths strict", add_map_strict)

    def add_path_way():
        # the second WWID: multipath -a, then add path for each of its paths
        sh(["multipath", "-a", w2])
        devs = sorted(b for h, b in blocks.items() if wwids[h] == w2)
        for d in devs:
            mpd(f"add path {d}", f"add-path.{'first' if d == devs[0] else 'second'}")
        wait(lambda: w2 in [m["uuid"] for m in maps()] and len(states(w2)) == 2, 30,
             f"map for {w2} with 2 paths after add path")
        mpd("show maps json", "show-maps-json.scsi_debug")
    step("multipath -a + add path", add_path_way)

    def show_variants():
        ms = maps()
        if not ms:
            return
        m = ms[0]
        mpd(f"show map {m['name']} json", "show-map-json")
        mpd(f"show map {m['uuid']} json", "show-map-json.by-wwid")
        mpd(f"show map {m['sysfs']} json", "show-map-json.by-dm")
        mpd("show map nosuch json", "show-map-json.nosuch")
        mpd(f"show map {m['name']}", "show-map.plain")
        mpd("show maps", "show-maps")
        mpd("show maps status", "show-maps-status")
        mpd("show maps topology", "show-maps-topology")
        mpd("show paths", "show-paths")
        mpd('show maps raw format "%n %w %d %N %t %S %Q %x"', "show-maps-raw")
        mpd('show paths raw format "%d %w %i %D %t %T %o %C %m %s %a %P"', "show-paths-raw")
        mpd("show status", "show-status.maps")
        mpd("show daemon", "show-daemon.maps")
        mpd("list maps json", "list-maps-json")
        sh(["dmsetup", "table"], "dmsetup-table")
        sh(["dmsetup", "status"], "dmsetup-status")
        sh(["dmsetup", "info", m["name"]], "dmsetup-info")
        save("dm-sysfs.json", json.dumps(g.dm_devices(), indent=1))
    step("show variants", show_variants)

    def offline(label: str, budget: float):
        ms = maps()
        m = ms[0]
        paths = g.Multipathd.path_states(m)
        dev = sorted(paths)[0]
        hctl = next(h for h, b in blocks.items() if b == dev)
        mon.mark(f"offline {dev} ({label})")
        start = time.monotonic()
        g.set_device_state(hctl, "offline")
        seen = []

        def failed():
            st = g.Multipathd.path_states(next(x for x in maps() if x["name"] == m["name"]))
            if not seen or seen[-1][1] != st.get(dev):
                seen.append((round(time.monotonic() - start, 2), st.get(dev)))
            return st.get(dev, ("",))[0] == "failed"
        wait(failed, budget, f"{dev} failed in show maps json ({label})", interval=0.2)
        save(f"path-offline.{label}.transitions.txt", "".join(f"{s} {v}\n" for s, v in seen))
        mpd("show maps json", f"show-maps-json.offline.{label}")
        mpd(f"show map {m['name']} json", f"show-map-json.offline.{label}")
        mpd('show paths raw format "%d %t %T %o %C"', f"show-paths-raw.offline.{label}")
        mon.mark(f"running {dev} ({label})")
        start = time.monotonic()
        g.set_device_state(hctl, "running")
        seen.clear()

        def back():
            st = g.Multipathd.path_states(next(x for x in maps() if x["name"] == m["name"]))
            if not seen or seen[-1][1] != st.get(dev):
                seen.append((round(time.monotonic() - start, 2), st.get(dev)))
            return st.get(dev, ("",))[:2] == ("active", "ready")
        wait(back, budget, f"{dev} active/ready again ({label})", interval=0.2)
        save(f"path-running.{label}.transitions.txt", "".join(f"{s} {v}\n" for s, v in seen))

    step("offline with the default polling interval", lambda: offline("default", 60))

    def polling_dropin():
        g.write_dropin("klab-polling.conf", "defaults {\n    polling_interval 1\n}\n")
        time_reconfigure("reconfigure.polling")
        mpd("show config local", "show-config-local.polling")
    replies_during: list = []

    def time_reconfigure(name: str):
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                s = time.monotonic()
                try:
                    r = g.multipathd_command("show maps json", timeout=30)
                except OSError as exc:
                    r = f"<{type(exc).__name__}: {exc}>"
                replies_during.append((name, round(s - start, 3), round(time.monotonic() - s, 3), r[:60]))
        g.settle(60)  # a map waiting for its udev event delays a reconfigure ("delaying reconfigure()")
        start = time.monotonic()
        th = threading.Thread(target=poll)
        th.start()
        r = mpd("reconfigure", name)
        took = time.monotonic() - start
        st = None
        while time.monotonic() - start < 60:
            st = mp.state()
            if st in ("idle", "running"):
                break
            time.sleep(0.05)
        stop.set()
        th.join(40)
        note(f"reconfigure answered {r!r} in {took:.2f} s; idle again after {time.monotonic() - start:.2f} s "
             f"({st}); maps={map_names()}")
        save(f"{name}.during.txt", "".join(f"{n} t={a} took={b} {c!r}\n" for n, a, b, c in replies_during
                                           if n == name))

    step("polling_interval 1 drop-in + reconfigure", polling_dropin)
    step("offline with polling_interval 1", lambda: offline("polling1", 30))

    def del_maps():
        ms = maps()
        a, b = ms[0], ms[1]
        node_b = f"/dev/mapper/{b['name']}"
        holder = hold(node_b)
        time.sleep(0.5)
        r = mpd(f"del map {b['name']}", "del-map.open")
        note(f"del map (open): {r!r}; dm={dmsetup_names()} maps={map_names()}")
        sh(["dmsetup", "info", b["name"]], "dmsetup-info.open")
        holder.kill()
        holder.wait()
        time.sleep(0.5)
        start = time.monotonic()
        r = mpd(f"del map {b['name']}", "del-map.ok")
        note(f"del map (closed) {r!r} took {time.monotonic() - start:.2f} s; dm={dmsetup_names()} maps={map_names()}")
        sh(["cat", "/etc/multipath/wwids"], "wwids.after-del-map")
        r = mpd(f"add map {b['uuid']}", "add-map.after-del")
        time.sleep(2)
        note(f"add map right after del map: {r!r}; maps={map_names()}")
        if b["name"] not in map_names():
            for dev in sorted(g.Multipathd.path_states(b)):
                mpd(f"add path {dev}", "add-path.after-del")
            wait(lambda: b["uuid"] in [m["uuid"] for m in maps()], 20, "map back after add path")
        if b["uuid"] not in [m["uuid"] for m in maps()]:
            time_reconfigure("reconfigure.after-del")
        r = mpd(f"add map {a['uuid']}", "add-map.existing")
        note(f"add map of an existing map: {r!r}")
        mpd("del map nosuch", "del-map.nosuch")
        mpd(f"del map {a['uuid']}x", "del-map.nosuch-wwid")
    step("del map: open, closed; add map after del", del_maps)

    def deferred():
        ms = maps()
        a = ms[0]
        node = f"/dev/mapper/{a['name']}"
        holder = hold(node)
        time.sleep(0.5)
        mon.mark(f"dmsetup remove --deferred {a['name']}")
        sh(["dmsetup", "remove", "--deferred", a["name"]], "dmsetup-remove-deferred")
        sh(["dmsetup", "info", a["name"]], "dmsetup-info.deferred")
        mpd("show maps json", "show-maps-json.deferred")
        note(f"deferred, still open: dm={dmsetup_names()} maps={map_names()} dm-sysfs={g.dm_devices()}")
        mon.mark(f"close {a['name']}")
        start = time.monotonic()
        holder.kill()
        holder.wait()
        wait(lambda: a["name"] not in dmsetup_names(), 30, "dm device gone after close")
        wait(lambda: a["name"] not in map_names(), 30, "multipathd dropped it")
        note(f"after close: {time.monotonic() - start:.2f} s dm={dmsetup_names()} maps={map_names()}")
        mpd("show maps json", "show-maps-json.after-deferred")
        time.sleep(3)
        note(f"3 s later: dm={dmsetup_names()} maps={map_names()}")
        r = mpd(f"add map {a['uuid']}", "add-map.after-deferred")
        time.sleep(2)
        note(f"add map after deferred remove: {r!r} maps={map_names()}")
        if a["uuid"] not in [m["uuid"] for m in maps()]:
            time_reconfigure("reconfigure.after-deferred")
    step("deferred remove", deferred)

    def blacklist():
        ms = maps()
        if len(ms) < 2:
            time_reconfigure("reconfigure.refill")
            ms = maps()
        a, b = ms[0], ms[1]
        g.write_dropin("klab-blacklist.conf", f'blacklist {{\n    wwid "^{a["uuid"]}$"\n}}\n')
        time_reconfigure("reconfigure.blacklist-unused")
        note(f"blacklist of an unused map: maps={map_names()} dm={dmsetup_names()}")
        mpd("show maps json", "show-maps-json.blacklisted")
        holder = hold(f"/dev/mapper/{b['name']}")
        time.sleep(0.5)
        g.write_dropin("klab-blacklist.conf",
                       f'blacklist {{\n    wwid "^{a["uuid"]}$"\n    wwid "^{b["uuid"]}$"\n}}\n')
        time_reconfigure("reconfigure.blacklist-open")
        note(f"blacklist of an open map: maps={map_names()} dm={dmsetup_names()}")
        mpd("show maps json", "show-maps-json.blacklisted-open")
        holder.kill()
        holder.wait()
        time.sleep(1)
        note(f"after close: maps={map_names()} dm={dmsetup_names()}")
        (g.MULTIPATH_DIR / "conf.d" / "klab-blacklist.conf").unlink()
        time_reconfigure("reconfigure.unblacklist")
        note(f"blacklist gone: maps={map_names()} dm={dmsetup_names()}")
    step("blacklist drop-in", blacklist)

    def friendly():
        ms = maps()
        holder = hold(f"/dev/mapper/{ms[0]['name']}") if ms else None
        time.sleep(0.5)
        g.write_dropin("klab-names.conf", "defaults {\n    user_friendly_names no\n}\n")
        time_reconfigure("reconfigure.friendly-no")
        wait(lambda: not any(n.startswith("mpath") for n in map_names()), 20, "every map renamed to its WWID")
        note(f"user_friendly_names no (first open): maps={map_names()} dm={dmsetup_names()}")
        mpd("show maps json", "show-maps-json.friendly-no")
        save("dm-sysfs.friendly-no.json", json.dumps(g.dm_devices(), indent=1))
        if holder:
            holder.kill()
            holder.wait()
        (g.MULTIPATH_DIR / "conf.d" / "klab-names.conf").unlink()
        time_reconfigure("reconfigure.friendly-yes")
        wait(lambda: all(n.startswith("mpath") for n in map_names()), 20, "every map renamed to mpathN")
        note(f"user_friendly_names yes again: maps={map_names()} dm={dmsetup_names()}")
        sh(["cat", "/etc/multipath/bindings"], "bindings")
    step("user_friendly_names no drop-in", friendly)

    def deferred_config():
        g.write_dropin("klab-deferred.conf", "defaults {\n    deferred_remove yes\n}\n")
        time_reconfigure("reconfigure.deferred-yes")
        ms = maps()
        a = ms[0]
        holder = hold(f"/dev/mapper/{a['name']}")
        time.sleep(0.5)
        r = mpd(f"del map {a['name']}", "del-map.open.deferred_remove-yes")
        sh(["dmsetup", "info", a["name"]], "dmsetup-info.del-map-deferred")
        note(f"del map of an open map with deferred_remove yes: {r!r} maps={map_names()} dm={dmsetup_names()}")
        mpd("show maps json", "show-maps-json.del-map-deferred")
        start = time.monotonic()
        holder.kill()
        holder.wait()
        wait(lambda: a["name"] not in dmsetup_names(), 20, "dm device gone after close")
        wait(lambda: a["name"] not in map_names(), 20, "multipathd dropped it")
        note(f"after close: {time.monotonic() - start:.2f} s maps={map_names()} dm={dmsetup_names()}")
    step("deferred_remove yes + del map of an open map", deferred_config)

    step("shutdown", lambda: (mpd("shutdown", "shutdown"), time.sleep(2),
                              note(f"multipathd exit: {mp.process.poll()}"),
                              mpd("show daemon", "show-daemon.not-running")))
    mon.stop()
    save("reconfigure-concurrent.txt", "".join(f"{n} t={a} took={b} {c!r}\n" for n, a, b, c in replies_during))


def guest_iscsi() -> None:
    import guestlib as g

    g.start_udevd()
    start = time.monotonic()
    target = g.setup_iscsi_target(luns=(0, 1), exported=(2,))
    note(f"target up in {time.monotonic() - start:.2f} s")
    start = time.monotonic()
    g.start_iscsid()
    note(f"iscsid up in {time.monotonic() - start:.2f} s")
    start = time.monotonic()
    hosts = g.iscsi_login(target)
    note(f"login: hosts {hosts} in {time.monotonic() - start:.2f} s; sessions {g.iscsi_sessions()}")
    g.settle(120)
    devs = g.scsi_devices()
    blocks = {h: g.wait_for_block(h) for h in devs}
    wwids = {h: g.udev_property(b, "ID_SERIAL") for h, b in blocks.items()}
    note(f"devices {blocks} wwids {wwids}; expected {[target.wwid(n) for n in (0, 1)]}")
    mon = KernelMonitor()
    mp = g.Multipathd(dropins={"klab-polling.conf": "defaults {\n    polling_interval 1\n}\n"}, verbosity=3)
    mp.start()
    note(f"multipathd ready in {mp.ready_seconds} s")
    for w in sorted(set(wwids.values())):
        sh(["multipath", "-a", w])
        mpd(f"add map {w}")
    wait(lambda: len(maps()) == 2 and all(len(g.Multipathd.path_states(m)) == 2 for m in maps()), 60,
         "2 maps with 2 paths")
    mpd("show maps json", "show-maps-json.iscsi")
    note(f"sessions: {g.iscsi_sessions()}")

    def new_lun():
        target.map_lun(2)
        before = set(g.scsi_devices())
        start = time.monotonic()
        for h in hosts:
            g.scan_host(h, "0", "0", "2")
        new = sorted(set(g.scsi_devices()) - before)
        note(f"targeted scans of LUN 2 on {hosts}: {new} in {time.monotonic() - start:.2f} s")
        for h in new:
            g.wait_for_block(h)
        g.settle(60)
        time.sleep(3)
        note(f"maps after the new LUN (strict: none expected): {map_names()}")
        w = target.wwid(2)
        sh(["multipath", "-a", w])
        mpd(f"add map {w}")
        wait(lambda: w in [m["uuid"] for m in maps()] and len(states(w)) == 2, 30, "map of LUN 2 with 2 paths")
    step("new LUN", new_lun)

    def cut():
        w = target.wwid(0)
        portal = target.portals[1]
        host = g.iscsi_host_of_portal(portal)
        mon.mark(f"cut {portal}")
        start = time.monotonic()
        g.cut_portal(portal)
        seen = []

        def watch(want):
            def f():
                st = states(w)
                sess = {k: (v["state"], v["conn_state"], v["recovery_tmo"]) for k, v in g.iscsi_sessions().items()}
                devst = {h: g.read_attr(f"/sys/class/scsi_device/{h}/device/state") for h in g.scsi_devices(host)}
                snap = (st, sess, devst)
                if not seen or seen[-1][1] != snap:
                    seen.append((round(time.monotonic() - start, 2), snap))
                return want(st)
            return f
        wait(watch(lambda st: any(v[0] == "failed" for v in st.values())), 90, "a path of LUN 0 failed", 0.3)
        save("iscsi-cut.transitions.txt", "".join(f"{s} {v}\n" for s, v in seen))
        mpd("show maps json", "show-maps-json.iscsi-cut")
        mon.mark(f"restore {portal}")
        seen.clear()
        start = time.monotonic()
        g.restore_portals()
        wait(watch(lambda st: st and all(v[:2] == ("active", "ready") for v in st.values())), 90,
             "every path of LUN 0 active/ready", 0.3)
        save("iscsi-restore.transitions.txt", "".join(f"{s} {v}\n" for s, v in seen))
        mpd("show maps json", "show-maps-json.iscsi-restored")
        note(f"sessions: {g.iscsi_sessions()}")
    step("cut one portal, restore", cut)
    mp.stop()
    mon.stop()


def guest_scale() -> None:
    """Many paths: does a command sent during a long reconfigure answer "timeout"?"""
    import guestlib as g

    g.start_udevd()
    start = time.monotonic()
    g.load_scsi_debug(add_host=2, num_tgts=1, max_luns=100, vpd_use_hostno=0, dev_size_mb=1, timeout=300)
    note(f"scsi_debug 2 x 100 LUNs in {time.monotonic() - start:.2f} s")
    g.settle(300)
    note(f"settled at {time.monotonic() - start:.2f} s")
    mp = g.Multipathd("defaults {\n    user_friendly_names yes\n    find_multipaths no\n}\n", verbosity=2)
    start = time.monotonic()
    mp.start(timeout=300)
    note(f"multipathd ready in {mp.ready_seconds} s")
    wait(lambda: len(maps()) == 100, 300, "100 maps (find_multipaths no)", interval=1)
    g.settle(300)
    mpd("show maps json", "show-maps-json.100-maps")
    for attempt in range(3):
        replies = []
        stop = threading.Event()

        def poll(cli: bool) -> None:
            while not stop.is_set():
                s0 = time.monotonic()
                if cli:
                    proc = subprocess.run(["multipathd", "show", "maps", "json"], capture_output=True, text=True)
                    r = f"rc={proc.returncode} " + (proc.stdout + proc.stderr)[:80]
                else:
                    try:
                        r = g.multipathd_command("show maps json", timeout=60)[:80]
                    except OSError as exc:
                        r = f"<{type(exc).__name__}: {exc}>"
                replies.append(("cli" if cli else "socket", round(s0 - t0, 3), round(time.monotonic() - s0, 3), r))
        t0 = time.monotonic()
        threads = [threading.Thread(target=poll, args=(c,)) for c in (False, True)]
        for th in threads:
            th.start()
        time.sleep(0.5)
        r = mpd("reconfigure", f"reconfigure.100-maps.{attempt}")
        states_seen = []
        while time.monotonic() - t0 < 120:
            st = mp.state()
            if not states_seen or states_seen[-1][1] != st:
                states_seen.append((round(time.monotonic() - t0, 2), st))
            if st == "idle" and time.monotonic() - t0 > 3:
                break
            time.sleep(0.1)
        stop.set()
        for th in threads:
            th.join(120)
        save(f"reconfigure.100-maps.{attempt}.during.txt",
             f"reconfigure sent at t=0.5: {r!r}; daemon states {states_seen}\n"
             + "".join(f"{k} t={a} took={b} {c!r}\n" for k, a, b, c in replies))
        note(f"reconfigure #{attempt} with 100 maps: states {states_seen}; "
             f"replies {sorted(set(c[:12] for _, _, _, c in replies))}")
    g.write_dropin("klab-uxsock.conf", "defaults {\n    uxsock_timeout 100\n}\n")
    mpd("reconfigure")
    time.sleep(5)
    g.settle(120)
    replies = []
    t0 = time.monotonic()
    stop = threading.Event()

    def poll2() -> None:
        while not stop.is_set():
            s0 = time.monotonic()
            try:
                r = g.multipathd_command("show maps json", timeout=60)[:80]
            except OSError as exc:
                r = f"<{type(exc).__name__}: {exc}>"
            replies.append((round(s0 - t0, 3), round(time.monotonic() - s0, 3), r))
    th = threading.Thread(target=poll2)
    th.start()
    time.sleep(0.3)
    mpd("reconfigure", "reconfigure.uxsock-100ms")
    time.sleep(8)
    stop.set()
    th.join(120)
    save("reconfigure.uxsock-100ms.during.txt", "".join(f"t={a} took={b} {c!r}\n" for a, b, c in replies))
    note(f"uxsock_timeout 100: replies {sorted(set(c[:12] for _, _, c in replies))}")
    mp.stop()


def host(part: str, outdir: str) -> int:
    import lab

    image = lab.prepare()
    out = Path(outdir).resolve()
    command = lab.shlex.join(["env", f"PYTHONPATH={lab.REPO_ROOT}:{lab.HERE}", lab.guest_python(),
                              str(Path(__file__).resolve()), "--guest", part])
    result = lab.boot(command, image=image, outdir=out, timeout=900, label=f"probe {part}")
    print(result.timing_line())
    print(result.console_tail(30))
    return 0 if result.exit_code == 0 else 1


def main() -> int:
    if sys.argv[1] == "--guest":
        SAMPLES.mkdir(parents=True, exist_ok=True)
        try:
            {"scsi_debug": guest_scsi_debug, "iscsi": guest_iscsi, "scale": guest_scale}[sys.argv[2]]()
        except Exception:  # noqa: BLE001
            note(f"!!! probe failed:\n{traceback.format_exc()}")
        subprocess.run(["sh", "-c", f"dmesg > {OUT}/dmesg.txt"])
        return 0
    return host(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
