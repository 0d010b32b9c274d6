#!/bin/bash
# Build sanbusd's Debian packages with dpkg-buildpackage, in a scratch copy of the tree (never in
# the work tree: dpkg-buildpackage writes ../*.deb and debian/ build files), and put the .debs and
# the source package in OUTDIR (default: build/deb). Two binary packages: sanbusd (the service)
# and cockpit-sanbusd (the Cockpit page). It prints their paths, sanbusd's last (the tests read
# the last line).
#
#   packaging/build-deb.sh [OUTDIR]
#
# Needs the Build-Depends of packaging/debian/control (apt-get build-dep cannot read them from
# here: `dpkg-checkbuilddeps packaging/debian/control` says what is missing), and npm with the
# network once, for cockpit/build.sh: the page is built here, in the work tree, and its result
# cockpit/dist goes into the source package, so dpkg-buildpackage itself needs neither npm nor
# the network (as Cockpit's own release tarballs carry their built pages).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$TOP/build/deb}" && cd "${1:-$TOP/build/deb}" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$TOP/pyproject.toml")
CHANGELOG=$(dpkg-parsechangelog -l "$TOP/packaging/debian/changelog" -S Version)
if [ "$VERSION" != "$CHANGELOG" ]; then
  echo "build-deb.sh: pyproject.toml says $VERSION, packaging/debian/changelog $CHANGELOG" >&2
  exit 1
fi
# Always rebuilt: cheap once node_modules is there, and the package never gets a stale page.
bash "$TOP/cockpit/build.sh" "$TOP/cockpit/dist" >/dev/null
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
SRC=$SCRATCH/sanbusd-$VERSION
mkdir "$SRC"
# The tracked files and the new ones not yet committed (not .venv, caches or build output).
(cd "$TOP" && git ls-files -z -co --exclude-standard) \
  | (cd "$TOP" && xargs -0 cp --parents -t "$SRC" 2>/dev/null || true)
rm -rf "$SRC/debian" "$SRC/dist"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
# The built page is gitignored, so git ls-files left it out: debian/rules installs from it.
cp -r "$TOP/cockpit/dist" "$SRC/cockpit/dist"
cp -a "$TOP/packaging/debian" "$SRC/debian"
(cd "$SRC" && dpkg-buildpackage -us -uc --no-sign >"$SCRATCH/build.log" 2>&1) || {
  tail -40 "$SCRATCH/build.log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed" >&2
  exit 1
}
cp "$SCRATCH"/sanbusd_"$VERSION"* "$SCRATCH"/cockpit-sanbusd_"$VERSION"_all.deb "$OUT"/
echo "$OUT/cockpit-sanbusd_${VERSION}_all.deb"
echo "$OUT/sanbusd_${VERSION}_all.deb"
