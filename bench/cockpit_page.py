#!/usr/bin/env python3
"""The Cockpit page at scale, in the real browser: sanbusd on a generated fabric (default 8 FC
hosts, 4,096 WWIDs x 4 paths = 16,384 LUN paths), Debian's cockpit-ws and bridge, headless
Chromium, a user logged in through Cockpit's login page.

Prints, over --runs page loads: the page's first full render (navigation to every section drawn,
all data in; target <= 2 s), and, as the peer in the same browser, the same objects fetched through
Cockpit's bridge with one GetManagedObjects call and nothing drawn (what any page needs at least).
Also: the next page and a filter, to show it stays responsive.

Run as root after `bash packaging/setup-dev.sh --tests` (it uses the test users' mechanism):
    .venv/bin/python bench/cockpit_page.py [--wwids 4096] [--runs 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TOP / "tests"), str(TOP / "tests" / "browser")]

from cockpit_web import (CONDITION, Browser, CockpitWs, ensure_user,  # noqa: E402
                         install_page_for, remove_page_for, start_chromium)
from sanbus_testing import start_daemon  # noqa: E402

from sanbusd.bus.contract import data_dir  # noqa: E402
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
    made_condition = not CONDITION.exists()
    bus = daemon = ws = drv = user = None
    results: dict[str, float | int] = {}
    try:
        if made_condition:
            shutil.copy(data_dir() / "org.example.SanStorage.conf", CONDITION)
        fabric = work / "fabric.toml"
        fabric.write_text(generate(args.hosts, args.paths, 1, args.wwids, 0))
        bus = PrivateBus(str(work / "bus")).start()
        bus.start_polkitd()
        daemon = start_daemon(bus, work / "daemon", fabric=fabric)
        user = ensure_user("sanweb", ("sanadmin",))
        install_page_for(user, str(work / "bus" / "system_bus_socket"))
        ws = CockpitWs(work)
        drv = start_chromium(work / "profile")
        b = Browser(drv, ws.base, work / "shots")
        b.login(user)
        first, wall, peer = [], [], []
        for _ in range(args.runs):
            # As a user does: the shell's Overview, then "SAN storage" in its menu.
            drv.switch_to.default_content()
            drv.get(ws.base + "/system")
            b.wait(lambda: b.css("iframe[name='cockpit1:localhost/system']"), "the Overview")
            wall.append(b.open_page(from_menu=True))
            first.append(drv.execute_script("return window.sanPage.firstRenderMs") / 1000)
            ms, objects = drv.execute_async_script(PEER_JS)
            if ms < 0:
                raise SystemExit(f"the peer call failed: {objects}")
            peer.append(ms / 1000)
        results["lun_paths"] = args.wwids * args.paths
        results["objects"] = objects
        results["first_render_median_s"] = statistics.median(first)
        results["first_render_max_s"] = max(first)
        results["shell_and_page_ready_median_s"] = statistics.median(wall)
        results["peer_bridge_gmo_median_s"] = statistics.median(peer)
        results["ratio_first_render_to_peer"] = (results["first_render_median_s"]
                                                 / results["peer_bridge_gmo_median_s"])
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
        if made_condition:
            CONDITION.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    print(f"Cockpit page, {results['lun_paths']} LUN paths ({results['objects']} objects), "
          f"{args.runs} loads:")
    print(f"  first full render       median {results['first_render_median_s']:.2f} s, "
          f"max {results['first_render_max_s']:.2f} s   (target <= 2 s)")
    print("  each load, in order:   " + ", ".join(f"{x:.2f}" for x in first) + " s")
    print(f"  peer: the same objects through the bridge, nothing drawn: median "
          f"{results['peer_bridge_gmo_median_s']:.2f} s   (ratio "
          f"{results['ratio_first_render_to_peer']:.2f})")
    print(f"  shell + page ready      median {results['shell_and_page_ready_median_s']:.2f} s")
    print(f"  next page {results['next_page_s'] * 1000:.0f} ms, filter "
          f"{results['filter_s'] * 1000:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
