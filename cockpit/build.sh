#!/bin/bash
# Build the Cockpit page "SAN storage" into OUTDIR (default: cockpit/dist, gitignored), the tree
# that packaging/install.sh installs as $PREFIX/share/cockpit/sanbusd/:
#
#   cockpit/build.sh [OUTDIR]
#
#   OUTDIR/                           every file of cockpit/src, as it is (manifest.json,
#                                     index.html, *.js, *.css)
#   OUTDIR/patternfly/patternfly.min.css      PatternFly 4 (@patternfly/patternfly, pinned in
#   OUTDIR/patternfly/patternfly-addons.css   package.json and package-lock.json), the
#                                     PatternFly of Cockpit 287's shell; Cockpit's base1 ships
#                                     none, so the page brings its own. -addons is the pf-u-*
#                                     utility classes.
#   OUTDIR/patternfly/assets/...      only the files those two CSS files make a browser load,
#                                     at the same relative paths, so their url()s keep working
#
# What is trimmed, and why (the page's browser test fails on any console error, and a 404 for a
# font or an image is one; anything shipped but never loaded is dead weight):
# - Fonts: each @font-face `src` list is cut after its first url(). A browser loads the first
#   source whose format it supports and PatternFly lists woff2 first, so the woff fallbacks are
#   never fetched: they are neither referenced nor shipped.
# - The background photos (assets/images/pfbg_*.jpg, 2.1 MB: pf-c-background-image and the about
#   modal's hero, login-page decoration a Cockpit page does not have) become `none`.
# - The sourceMappingURL comment goes: the .map (several MB) is not shipped.
# Every other relative url() must name a file of the PatternFly package, which is copied; an
# absolute URL fails the build (Cockpit's Content-Security-Policy would block it).
#
# npm runs only when node_modules is missing or older than package-lock.json, and offline when
# npm's cache already has the package, so a machine that fetched once builds without a network.
# The result is the same for the same inputs (idempotent): OUTDIR is built beside itself and
# swapped in whole, never merged with an older build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-$HERE/dist}")
PF=$HERE/node_modules/@patternfly/patternfly

# OUTDIR is replaced whole: refuse a directory that is not an earlier build of this page.
case "$OUT" in
  /|"$HERE"|"$HERE/src"|"$HERE/src/"*|"$HERE/node_modules"*)
    echo "build.sh: refusing OUTDIR $OUT" >&2; exit 2 ;;
esac
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/manifest.json" ]; then
  echo "build.sh: $OUT exists and is not an earlier build (no manifest.json): not replacing it" >&2
  exit 2
fi

# npm ci writes node_modules/.package-lock.json: its age says whether node_modules matches the
# committed lock. --ignore-scripts: nothing from the registry runs here.
if [ ! -f "$PF/package.json" ] || [ ! -f "$HERE/node_modules/.package-lock.json" ] \
   || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  if ! command -v npm >/dev/null; then
    echo "build.sh: npm is missing (packaging/setup-dev.sh installs it)" >&2
    exit 1
  fi
  # --offline first (no network at all once npm's cache has the package); --prefer-offline
  # reaches the registry only for what the cache lacks.
  (cd "$HERE" && { npm ci --ignore-scripts --no-audit --no-fund --offline >/dev/null 2>&1 \
                   || npm ci --ignore-scripts --no-audit --no-fund --prefer-offline; })
fi

mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").XXXXXX")
trap 'rm -rf "$TMP"' EXIT

python3 - "$HERE" "$TMP" <<'EOF'
import json
import posixpath
import re
import shutil
import sys
from pathlib import Path

here, out = Path(sys.argv[1]), Path(sys.argv[2])
src = here / "src"
pf = here / "node_modules" / "@patternfly" / "patternfly"
CSS = ["patternfly.min.css", "patternfly-addons.css"]
DROPPED = re.compile(r"assets/images/pfbg_[^/]*\.jpg")
URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^'")\s]*))\s*\)""")
FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}")
SRC_DECL = re.compile(r"(\bsrc\s*:\s*)([^;}]*)")
SOURCE_MAP = re.compile(r"/\*#\s*sourceMappingURL=[^*]*\*/\s*")


def fail(msg: str) -> None:
    sys.exit(f"build.sh: {msg}")


pinned = json.loads((here / "package.json").read_text())["devDependencies"][
    "@patternfly/patternfly"]
have = json.loads((pf / "package.json").read_text())["version"]
if have != pinned:
    fail(f"node_modules has @patternfly/patternfly {have}, package.json pins {pinned}: "
         "remove cockpit/node_modules and build again")
if not (src / "manifest.json").is_file():
    fail(f"{src}/manifest.json is missing")
if (src / "patternfly").exists():
    fail("cockpit/src/patternfly would be overwritten by PatternFly's files")


def split_list(value: str) -> list[str]:
    """A CSS comma-separated list, split at top-level commas (not inside quotes or parens)."""
    items, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(value):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    return items + [value[start:]]


def first_source_only(face: re.Match) -> str:
    def cut(decl: re.Match) -> str:
        kept = []
        for item in split_list(decl.group(2)):
            kept.append(item)           # local() sources before it are never fetched
            if item.strip().startswith("url("):
                break
        return decl.group(1) + ",".join(kept)
    return SRC_DECL.sub(cut, face.group(0))


page = [f for f in sorted(src.rglob("*")) if f.is_file()]
for f in page:
    dest = out / f.relative_to(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f, dest)

assets: set[str] = set()
css_bytes = 0
for name in CSS:
    css = (pf / name).read_text(encoding="utf-8")
    css = SOURCE_MAP.sub("", css)
    css = FONT_FACE.sub(first_source_only, css)
    base = posixpath.dirname(name)

    def resolve(m: re.Match) -> str:
        url = next(g for g in m.groups() if g is not None)
        if url.startswith(("data:", "#")):   # inline data; an SVG filter in the document
            return m.group(0)
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:|/", url):
            fail(f"{name}: absolute url({url}) would not load from the page's own files")
        path = posixpath.normpath(posixpath.join(base, re.split(r"[?#]", url)[0]))
        if DROPPED.fullmatch(path):
            return "none"
        if path.startswith("../") or not (pf / path).is_file():
            fail(f"{name}: url({url}) names no file of the PatternFly package")
        assets.add(path)
        return m.group(0)

    css = URL.sub(resolve, css)
    (out / "patternfly").mkdir(exist_ok=True)
    (out / "patternfly" / name).write_text(css, encoding="utf-8")
    css_bytes += len(css.encode())

asset_bytes = 0
for path in sorted(assets):
    dest = out / "patternfly" / path
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pf / path, dest)
    asset_bytes += dest.stat().st_size
fonts = [a for a in assets if a.endswith((".woff2", ".woff", ".ttf", ".otf"))]
kib = lambda n: f"{n / 1024:.0f} KiB"
print(f"build.sh: {len(page)} page files ({kib(sum(f.stat().st_size for f in page))}), "
      f"PatternFly {have} CSS ({kib(css_bytes)}), {len(fonts)} fonts and "
      f"{len(assets) - len(fonts)} other assets ({kib(asset_bytes)})")
EOF

# Swap the new build in whole; the files are world-readable whatever the umask (install.sh and
# the packages set their own modes too).
chmod -R u=rwX,go=rX "$TMP"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
echo "build.sh: built $OUT: $(find "$OUT" -type f | wc -l) files," \
  "$(du -sh --apparent-size "$OUT" | cut -f1)"
