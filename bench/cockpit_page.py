#!/usr/bin/env python3
"""The Cockpit page at scale, in the real browser: sanbusd on a generated fabric (default 8 FC
hosts, 4,096 WWIDs x 4 paths = 16,384 LUN paths), Debian's cockpit-ws and bridge, headless
Chromium, a user logged in through Cockpit's login page.

Prints, over --runs page loads in one Cockpit session (a user coming back to the page): the
page's first full render (navigation to every section drawn, all data in; target <= 2 s), load by
load, and, as the peer, the same objects fetched through the same bridge with one
GetManagedObjects call and nothing drawn (what any page needs at least). Two series: the bridge
as installed, and with G_SLICE=always-malloc (GLib 2.74's slice allocator makes Debian 12's
long-lived bridge slower load after load). Also: the next page and a filter.

Run as root after `bash packaging/setup-dev.sh --tests` (it uses the test users' mechanism):
    .venv/bin/python bench/cockpit_page.py [--wwids 4096] [--runs 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TOP / "tests"), str(TOP / "tests" / "browser")]

from cockpit_web import (Browser, CockpitWs, ensure_user, install_page_for,  # noqa: E402
                         kill_sessions, page_condition, remove_page_for, socket_path,
                         start_chromium)
from sanbus_testing import start_daemon  # noqa: E402

from sanbusd.devbus import PrivateBus  # noqa: E402
from sanbusd.sim.generate import generate  # noqa: E402

PEER_JS = """
const done = arguments[arguments.length - 1];
const t = performance.now();
cockpit.dbus("org.example.SanStorage", {bus: "system"})
    .call("/org/example/SanStorage", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", [])
    .then(([objs]) => done([performance.now() - t, Object.keys(objs).length]))
    .catch(ex => done([-1, String(ex)]));
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--wwids", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sanbusd-bench-cockpit."))
    work.chmod(0o755)
    cleanup = contextlib.ExitStack()
    bus = daemon = ws = drv = user = None
    results: dict = {}
    try:
        cleanup.enter_context(page_condition())
        fabric = work / "fabric.toml"
        fabric.write_text(generate(args.hosts, args.paths, 1, args.wwids, 0))
        bus = PrivateBus(str(work / "bus")).start()
        bus.start_polkitd()
        daemon = start_daemon(bus, work / "daemon", fabric=fabric)
        user = ensure_user("sanweb", ("sanadmin",))
        ws = CockpitWs(work)
        # Two series, each in one Cockpit session (one bridge) as a user who keeps the page
        # open and comes back to it: the bridge as Debian 12 runs it, then with GLib's slice
        # allocator off (G_SLICE=always-malloc; GLib >= 2.76 has no slice allocator), which is
        # what makes the same bridge slower load after load.
        for mode, env in (("default", {}), ("g_slice_malloc", {"G_SLICE": "always-malloc"})):
            install_page_for(user, socket_path(bus), env)
            drv = start_chromium(work / f"profile-{mode}")
            b = Browser(drv, ws.base, work / "shots")
            b.login(user)
            first, wall = [], []
            for _ in range(args.runs):
                # As a user does: the shell's Overview, then "SAN storage" in its menu.
                drv.switch_to.default_content()
                drv.get(ws.base + "/system")
                b.wait(lambda: b.css("iframe[name='cockpit1:localhost/system']"), "the Overview")
                wall.append(b.open_page(from_menu=True))
                first.append(drv.execute_script("return window.sanPage.firstRenderMs") / 1000)
            # The peer, once the series is done: the same objects through the same bridge, one
            # GetManagedObjects call, nothing drawn.
            ms, objects = drv.execute_async_script(PEER_JS)
            if ms < 0:
                raise SystemExit(f"the peer call failed: {objects}")
            results[f"{mode}_first_render_each_s"] = first
            results[f"{mode}_first_render_first_s"] = first[0]
            results[f"{mode}_first_render_median_s"] = statistics.median(first)
            results[f"{mode}_first_render_max_s"] = max(first)
            results[f"{mode}_shell_and_page_ready_median_s"] = statistics.median(wall)
            results[f"{mode}_peer_bridge_gmo_s"] = ms / 1000
            if mode == "default":
                info = b.text("#lun-pager .page-info")
                t = time.monotonic()
                b.click("#lun-pager button.page-next")
                b.wait(lambda: b.text("#lun-pager .page-info") != info, "the next page")
                results["next_page_s"] = time.monotonic() - t
                wwid = b.css("#luns tbody[data-wwid]")[0].get_attribute("data-wwid")
                t = time.monotonic()
                b.type("#lun-filter", wwid)
                b.wait(lambda: len(b.css("#luns tbody[data-wwid]")) < 50, "the filtered units")
                results["filter_s"] = time.monotonic() - t
            drv.quit()
            drv = None
            kill_sessions(user)             # the next series gets a new bridge
        results["lun_paths"] = args.wwids * args.paths
        results["objects"] = objects
    finally:
        if drv is not None:
            drv.quit()
        if ws is not None:
            ws.stop()
        if user is not None:
            remove_page_for(user)
        if daemon is not None:
            daemon.stop()
        if bus is not None:
            bus.stop()
        cleanup.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"Cockpit page, {results['lun_paths']} LUN paths ({results['objects']} objects), "
          f"{args.runs} loads in one Cockpit session per series (target: first full render "
          "<= 2 s):")
    for mode, label in (("default", "cockpit-bridge as installed"),
                        ("g_slice_malloc", "cockpit-bridge with G_SLICE=always-malloc")):
        each = ", ".join(f"{x:.2f}" for x in results[f"{mode}_first_render_each_s"])
        peer = results[f"{mode}_peer_bridge_gmo_s"]
        median = results[f"{mode}_first_render_median_s"]
        print(f"  {label}:")
        print(f"    first full render, load by load: {each} s (median {median:.2f} s)")
        print(f"    shell + page ready, median {results[f'{mode}_shell_and_page_ready_median_s']:.2f} s")
        print(f"    peer: the same objects through that bridge, nothing drawn: {peer:.2f} s "
              f"(ratio median/peer {median / peer:.2f})")
    print(f"  next page {results['next_page_s'] * 1000:.0f} ms, filter "
          f"{results['filter_s'] * 1000:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
