"""The Cockpit page's JavaScript unit tests (cockpit/test/*.test.js, run by `node --test`): the
pure model (LUN list parsing, WWN checks, grouping LUN paths by WWID, paging, errors in words)
and the store that merges cockpit.dbus notifications. Node is a test dependency: nothing here
is skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
COCKPIT = TOP / "cockpit"


def node_command() -> list[str]:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is missing: packaging/setup-dev.sh installs it"
    cmd = [node]
    package = json.loads((COCKPIT / "package.json").read_text())
    if package.get("type") != "module":
        # The page's files are ES modules (Cockpit loads them with <script type="module">)
        cmd.append("--experimental-default-type=module")
    return cmd


def test_node_unit_tests_pass():
    files = sorted(str(p) for p in (COCKPIT / "test").glob("*.test.js"))
    assert files, "cockpit/test has no *.test.js"
    r = subprocess.run([*node_command(), "--test", *files], cwd=TOP, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]
    assert "# fail 0" in r.stdout, r.stdout[-20000:]
