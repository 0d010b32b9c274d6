"""cockpit/build.sh: the Cockpit page it builds ships every file of cockpit/src as it is, and its
CSS never names a file that is not shipped (the page's browser test fails on any console error,
and a 404 for a font is one); of PatternFly's fonts only those a browser loads are shipped.

It builds into a temporary directory (never the checkout's cockpit/dist). npm runs only when
cockpit/node_modules is missing or stale (packaging/setup-dev.sh builds the page once, so here it
normally does not); the Fedora spec's %check leaves this test out (no npm, no network there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sanbus_testing import CSS_URL as URL, css_references

TOP = Path(__file__).resolve().parents[2]
COCKPIT = TOP / "cockpit"
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".otf", ".eot")

if shutil.which("npm") is None and not (COCKPIT / "node_modules").is_dir():
    pytest.skip("no npm and no cockpit/node_modules: packaging/setup-dev.sh installs npm",
                allow_module_level=True)


def build(out: Path) -> str:
    r = subprocess.run(["bash", str(COCKPIT / "build.sh"), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cockpit") / "dist"
    build(out)
    return out


def test_every_file_of_src_is_shipped_as_it_is(dist):
    built = files(dist)
    src = files(COCKPIT / "src")
    assert src, "cockpit/src is empty"
    missing = [name for name in src if name not in built]
    assert not missing, f"in cockpit/src, not in the build: {missing}"
    changed = [name for name, data in src.items() if built[name] != data]
    assert not changed, f"changed on the way: {changed}"
    json.loads(built["manifest.json"])


def test_every_url_in_the_css_is_a_shipped_file(dist):
    refs = css_references(dist)
    assert "patternfly/patternfly.min.css" in refs
    assert refs["patternfly/patternfly.min.css"], "PatternFly's CSS names no asset at all?"
    shipped = set(files(dist))
    broken = {css: sorted(r - shipped) for css, r in refs.items() if r - shipped}
    assert not broken, f"url()s naming files that are not shipped: {broken}"
    assert "sourceMappingURL" not in (dist / "patternfly/patternfly.min.css").read_text()


def test_only_the_fonts_a_browser_loads_are_shipped(dist):
    css = (dist / "patternfly/patternfly.min.css").read_text(encoding="utf-8")
    faces = re.findall(r"@font-face\s*\{[^}]*\}", css)
    assert len(faces) > 10
    for face in faces:
        # one source per face: the woff2 a browser picks first, no fallback it never fetches
        assert len(URL.findall(face)) == 1 and ".woff2" in face, face
    referenced = set().union(*css_references(dist).values())
    fonts = {name for name in files(dist) if name.endswith(FONT_SUFFIXES)}
    assert fonts and all(f.endswith(".woff2") for f in fonts), sorted(fonts)
    assert fonts <= referenced, f"fonts shipped but never named: {sorted(fonts - referenced)}"
    # nothing else from PatternFly's package rides along: every asset is named by its CSS
    assets = {name for name in files(dist) if name.startswith("patternfly/assets/")}
    assert assets <= referenced, f"shipped, never named: {sorted(assets - referenced)}"


def test_building_again_gives_the_same_tree(dist, tmp_path):
    again = tmp_path / "dist"
    out = build(again)
    assert "files" in out and re.search(r"\d", out)          # it says what it built, and how big
    assert files(again) == files(dist)
    build(again)                                              # over an earlier build: replaced
    assert files(again) == files(dist)


def test_refuses_to_replace_a_directory_that_is_not_a_build(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = subprocess.run(["bash", str(COCKPIT / "build.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "not an earlier build" in r.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
