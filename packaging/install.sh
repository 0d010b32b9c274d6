#!/bin/bash
# Install sanbusd from this checkout: the one install command, used by hand, by the Debian package
# (packaging/debian/rules) and by the installed-mode tests.
#
#   packaging/install.sh [--destdir DIR] [--prefix /usr] [--python /usr/bin/python3]
#                        [--unitdir DIR] [--man-python PYTHON] [--no-compile]
#                        [--no-cockpit | --cockpit-only] [--list]
#
# DESTDIR (default: none, i.e. /) is prepended to every path; PREFIX (default /usr) places the
# program. Two parts, packaged apart (Debian's sanbusd and cockpit-sanbusd, the spec's sanbusd
# and cockpit-sanbusd): the service, and the Cockpit page. --no-cockpit installs the service
# alone, --cockpit-only the page alone. What goes where, with PREFIX=/usr:
#
# The service:
#   /usr/libexec/sanbusd/sanbusd        the daemon. Not in /usr/bin or /usr/sbin: nobody runs it by
#                                       hand; D-Bus activation and systemd start it (as udisksd,
#                                       polkitd, ...). Users run sanctl.
#   /usr/libexec/sanbusd/sanbusd-sim    the simulated SAN's admin tool (demos and tests only), kept
#                                       off PATH on production hosts.
#   /usr/bin/sanctl                     the user command.
#   /usr/share/sanbusd/sanbusd/         the Python package, private to these programs (Debian's
#                                       rule for an application's modules), so an installed
#                                       sanbusd never shadows or is shadowed by a development
#                                       checkout or venv: only the three launchers put it on
#                                       sys.path.
#   /usr/share/sanbusd/                 org.example.SanStorage.xml (the API, served as
#                                       introspection) and fabrics/ (simulated SANs).
#   /usr/share/dbus-1/system-services/org.example.SanStorage.service   activation file
#   /usr/share/dbus-1/system.d/org.example.SanStorage.conf             bus policy (*)
#   /usr/lib/systemd/system/sanbusd.service                            the unit (--unitdir;
#                                       Debian 12's package uses /lib/systemd/system, as its
#                                       dh_installsystemd and the usrmerge moratorium want)
#   /usr/share/polkit-1/actions/org.example.sanstorage.policy          polkit actions (*)
#   /etc/sanbusd/sanbusd.conf           the commented default configuration (an existing file is
#                                       kept; the daemon reads only this path)
#   /usr/share/man/man1/sanctl.1, man5/sanbusd.conf.5, man8/sanbusd.8   generated from the
#                                       parsers and data/sanbusd.conf (sanbusd/cli/man.py)
# The Cockpit page:
#   /usr/share/cockpit/sanbusd/         the "SAN storage" page: cockpit/dist, as cockpit/build.sh
#                                       builds it (cockpit/src's files and the PatternFly CSS and
#                                       fonts it loads), files 644, directories 755, replacing
#                                       what an earlier install put there. Built first if
#                                       cockpit/dist is missing (that needs npm, and the network
#                                       once); after changing cockpit/src, run cockpit/build.sh
#                                       (setup-dev.sh does). cockpit-bridge reads it from any
#                                       $XDG_DATA_DIRS/cockpit, so /usr/local works too.
#
# The man pages are made by running the programs' own parsers, which import dbus_fast and pyudev:
# --man-python names a Python that has them (default: --python, e.g. .venv/bin/python in a
# checkout whose system Python lacks them).
#
# (*) dbus-daemon and polkitd read these only under /usr/share (or /etc): they go there whatever
# the PREFIX. --list prints the installed paths (relative to DESTDIR) and installs nothing (nor
# builds: without cockpit/dist it lists cockpit/src's files and the directory patternfly/).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
PYTHON=${PYTHON:-/usr/bin/python3}
MANPYTHON=
UNITDIR=
COMPILE=1
LIST=0
PARTS=all        # all | service | cockpit
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR=$2; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --python) PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --man-python) MANPYTHON=$2; shift 2 ;;
    --man-python=*) MANPYTHON=${1#*=}; shift ;;
    --unitdir) UNITDIR=$2; shift 2 ;;
    --unitdir=*) UNITDIR=${1#*=}; shift ;;
    --no-compile) COMPILE=0; shift ;;
    --no-cockpit) PARTS=service; shift ;;
    --cockpit-only) PARTS=cockpit; shift ;;
    --list) LIST=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
PREFIX=${PREFIX%/}
MANPYTHON=${MANPYTHON:-$PYTHON}
DESTDIR=${DESTDIR%/}

LIBEXEC=$PREFIX/libexec/sanbusd
BINDIR=$PREFIX/bin
DATADIR=$PREFIX/share/sanbusd
PYDIR=$DATADIR
SERVICEDIR=$PREFIX/share/dbus-1/system-services
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
MANDIR=$PREFIX/share/man
POLICYDIR=/usr/share/dbus-1/system.d
POLKITDIR=/usr/share/polkit-1/actions
CONFDIR=/etc/sanbusd
COCKPITDIR=$PREFIX/share/cockpit/sanbusd
PAGE=$TOP/cockpit/dist

if [ "$LIST" = 1 ]; then
  if [ "$PARTS" != service ]; then
    if [ -f "$PAGE/manifest.json" ]; then
      (cd "$PAGE" && find . -type f | sort | sed "s|^\./|$COCKPITDIR/|")
    else
      (cd "$TOP/cockpit/src" && find . -type f | sort | sed "s|^\./|$COCKPITDIR/|")
      echo "$COCKPITDIR/patternfly/"
    fi
  fi
  [ "$PARTS" = cockpit ] && exit 0
  (cd "$TOP" && find sanbusd -name '*.py' | sort | sed "s|^|$PYDIR/|")
  (cd "$TOP/data" && ls fabrics/*.toml | sed "s|^|$DATADIR/|")
  printf '%s\n' "$LIBEXEC/sanbusd" "$LIBEXEC/sanbusd-sim" "$BINDIR/sanctl" \
    "$DATADIR/org.example.SanStorage.xml" "$SERVICEDIR/org.example.SanStorage.service" \
    "$POLICYDIR/org.example.SanStorage.conf" "$UNITDIR/sanbusd.service" \
    "$POLKITDIR/org.example.sanstorage.policy" "$CONFDIR/sanbusd.conf" \
    "$MANDIR/man1/sanctl.1" "$MANDIR/man5/sanbusd.conf.5" "$MANDIR/man8/sanbusd.8"
  exit 0
fi

D=$DESTDIR

# The Cockpit page first: when it cannot be built (no npm), fail before installing anything.
if [ "$PARTS" != service ]; then
  if [ ! -f "$PAGE/manifest.json" ]; then
    echo "install.sh: cockpit/dist is missing: building it with cockpit/build.sh" \
      "(--no-cockpit skips the page)"
    bash "$TOP/cockpit/build.sh" "$PAGE"
  fi
  # The directory is the page's alone: replaced whole, so no file of an older build stays
  # served.
  rm -rf "$D$COCKPITDIR"
  (cd "$PAGE" && find . -type d) | while read -r d; do install -d -m755 "$D$COCKPITDIR/$d"; done
  (cd "$PAGE" && find . -type f) | while read -r f; do
    install -m644 "$PAGE/$f" "$D$COCKPITDIR/$f"
  done
  echo "install.sh: installed the Cockpit page in ${DESTDIR:-}$COCKPITDIR"
  [ "$PARTS" = cockpit ] && exit 0
fi

install -d "$D$LIBEXEC" "$D$BINDIR" "$D$DATADIR/fabrics" "$D$SERVICEDIR" "$D$UNITDIR" \
  "$D$POLICYDIR" "$D$POLKITDIR" "$D$CONFDIR" "$D$MANDIR/man1" "$D$MANDIR/man5" "$D$MANDIR/man8"

# The Python package: a plain copy of the sources (pure Python, nothing to build).
(cd "$TOP" && find sanbusd -name '*.py') | while read -r f; do
  install -D -m644 "$TOP/$f" "$D$PYDIR/$f"
done
if [ "$COMPILE" = 1 ]; then
  "$PYTHON" -m compileall -q -d "$PYDIR/sanbusd" "$D$PYDIR/sanbusd" >/dev/null
fi

# Launchers: the private module directory first on sys.path; the data directory for
# bus/contract.py's data_dir() (whatever the PREFIX).
launcher() {  # name module
  cat > "$1" <<EOF
#!$PYTHON -s
# Installed by sanbusd's packaging/install.sh. sanbusd's modules are private to its programs.
import os
import sys

sys.path.insert(0, "$PYDIR")
os.environ.setdefault("SANBUSD_DATA_DIR", "$DATADIR")
from $2 import main

sys.exit(main())
EOF
  chmod 755 "$1"
}
launcher "$D$LIBEXEC/sanbusd" sanbusd.daemon
launcher "$D$LIBEXEC/sanbusd-sim" sanbusd.cli.sim
launcher "$D$BINDIR/sanctl" sanbusd.cli.sanctl

install -m644 "$TOP/data/org.example.SanStorage.xml" "$D$DATADIR/"
install -m644 "$TOP"/data/fabrics/*.toml "$D$DATADIR/fabrics/"

# D-Bus, systemd, polkit: with the installed daemon's path written in.
sed "s|^Exec=.*|Exec=$LIBEXEC/sanbusd|" "$TOP/data/org.example.SanStorage.service" \
  > "$D$SERVICEDIR/org.example.SanStorage.service"
sed -E "s|^ExecStart=[^ ]*sanbusd( \|$)|ExecStart=$LIBEXEC/sanbusd\1|" "$TOP/data/sanbusd.service" \
  > "$D$UNITDIR/sanbusd.service"
chmod 644 "$D$SERVICEDIR/org.example.SanStorage.service" "$D$UNITDIR/sanbusd.service"
install -m644 "$TOP/data/org.example.SanStorage.conf" "$D$POLICYDIR/"
install -m644 "$TOP/data/org.example.sanstorage.policy" "$D$POLKITDIR/"

# The configuration: an administrator's file is never overwritten.
if [ -e "$D$CONFDIR/sanbusd.conf" ] && ! cmp -s "$TOP/data/sanbusd.conf" "$D$CONFDIR/sanbusd.conf"; then
  echo "install.sh: keeping $D$CONFDIR/sanbusd.conf (the default is in $TOP/data/sanbusd.conf)"
else
  install -m644 "$TOP/data/sanbusd.conf" "$D$CONFDIR/"
fi

# Man pages, generated from the parsers and the commented default configuration.
MANTMP=$(mktemp -d)
trap 'rm -rf "$MANTMP"' EXIT
(cd "$TOP" && PYTHONPATH="$TOP" SANBUSD_DATA_DIR="$TOP/data" "$MANPYTHON" -B -m sanbusd.cli.man \
   --outdir "$MANTMP" --conf "$TOP/data/sanbusd.conf")
install -m644 "$MANTMP/sanctl.1" "$D$MANDIR/man1/"
install -m644 "$MANTMP/sanbusd.conf.5" "$D$MANDIR/man5/"
install -m644 "$MANTMP/sanbusd.8" "$D$MANDIR/man8/"
echo "install.sh: installed sanbusd in ${DESTDIR:-/} (prefix $PREFIX)"
