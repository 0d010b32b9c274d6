#!/bin/bash
# Build sanbusd's Debian package with dpkg-buildpackage, in a scratch copy of the tree (never in
# the work tree: dpkg-buildpackage writes ../*.deb and debian/ build files), and put the .deb and
# the source package in OUTDIR (default: build/deb).
#
#   packaging/build-deb.sh [OUTDIR]
#
# Needs the Build-Depends of packaging/debian/control (apt-get build-dep cannot read them from
# here: `dpkg-checkbuilddeps packaging/debian/control` says what is missing).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$TOP/build/deb}" && cd "${1:-$TOP/build/deb}" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$TOP/pyproject.toml")
CHANGELOG=$(dpkg-parsechangelog -l "$TOP/packaging/debian/changelog" -S Version)
if [ "$VERSION" != "$CHANGELOG" ]; then
  echo "build-deb.sh: pyproject.toml says $VERSION, packaging/debian/changelog $CHANGELOG" >&2
  exit 1
fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
SRC=$SCRATCH/sanbusd-$VERSION
mkdir "$SRC"
# The tracked files and the new ones not yet committed (not .venv, caches or build output).
(cd "$TOP" && git ls-files -z -co --exclude-standard) \
  | (cd "$TOP" && xargs -0 cp --parents -t "$SRC" 2>/dev/null || true)
rm -rf "$SRC/debian" "$SRC/dist"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
cp -a "$TOP/packaging/debian" "$SRC/debian"
(cd "$SRC" && dpkg-buildpackage -us -uc --no-sign >"$SCRATCH/build.log" 2>&1) || {
  tail -40 "$SCRATCH/build.log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed" >&2
  exit 1
}
cp "$SCRATCH"/sanbusd_"$VERSION"* "$OUT"/
echo "$OUT/sanbusd_${VERSION}_all.deb"
