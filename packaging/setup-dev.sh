#!/bin/bash
# Set up a Debian 12 machine (as root) to run sanbusd from this checkout: Debian packages, a
# virtualenv in .venv with the project installed, sanbusd's polkit actions, the Cockpit page
# built (cockpit/dist), and (with --tests) the test users, the sanadmin rules.d rule the tests
# check against and what the page's browser test runs. Safe to run again: it only does what is
# missing.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
WITH_TESTS=0
[ "${1:-}" = "--tests" ] && WITH_TESTS=1

export DEBIAN_FRONTEND=noninteractive
# dbus-daemon + busctl (systemd) + gdbus (libglib2.0-bin): the bus and real clients;
# polkitd: authorization; python3-gi: GDBus clients in tests; python3-systemd/-libvirt/-dbus:
# bindings built for Debian's Python 3.11 (no compiler needed); lsscsi: the benchmark's peer;
# libvirt-daemon + libvirt-clients: libvirtd and virsh for vHBAs through libvirt's node-device
# API (the kernel lane's npiv scenario; libvirt-daemon-system is not needed); dpkg-dev ...
# man-db: tests/installed builds the .deb (packaging/debian's Build-Depends: python3-dbus-fast
# and python3-pyudev go to /usr/lib/python3, below the venv's own), checks the Fedora spec with
# rpmspec and renders the man pages.
PKGS="dbus-daemon dbus-bin libglib2.0-bin gir1.2-glib-2.0 polkitd systemd python3 python3-venv
      python3-gi python3-systemd python3-libvirt python3-dbus lsscsi umockdev gir1.2-umockdev-1.0
      procps libvirt-daemon libvirt-clients
      dpkg-dev build-essential debhelper dh-python python3-dbus-fast python3-pyudev rpm groff-base man-db
      python3-pytest python3-pytest-timeout"
# npm: cockpit/build.sh fetches PatternFly with it. Debian's npm only where no npm is on PATH
# already (nodesource's nodejs, for one, brings its own, and Debian's npm would conflict with it).
command -v npm >/dev/null || PKGS="$PKGS npm"
# The Cockpit page's browser test: cockpit-ws serves the page (cockpit-bridge loads it,
# cockpit-system is the shell around it), chromium + chromium-driver run it under
# python3-selenium, sudo lets the logged-in user's bridge gain root as Cockpit's admin mode does.
if [ "$WITH_TESTS" = 1 ]; then
  PKGS="$PKGS cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver python3-selenium
        sudo"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends $missing >/dev/null
fi

# The Cockpit page: built when missing, or older than its sources or the PatternFly version that
# package-lock.json pins (the deb and the tests install cockpit/dist as it is).
if [ ! -f "$TOP/cockpit/dist/manifest.json" ] || [ -n "$(find "$TOP/cockpit/src" \
     "$TOP/cockpit/package-lock.json" -newer "$TOP/cockpit/dist" -print -quit)" ]; then
  bash "$TOP/cockpit/build.sh"
fi

# Debian's python3 (3.11), so that Debian's compiled bindings (gi, systemd, libvirt, dbus) load.
if [ ! -x "$TOP/.venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$TOP/.venv"
fi
if ! "$TOP/.venv/bin/python" -c "import dbus_fast, pyudev, sanbusd" 2>/dev/null \
   || [ "$TOP/pyproject.toml" -nt "$TOP/.venv/.installed" ]; then
  "$TOP/.venv/bin/pip" install -q --disable-pip-version-check -e "$TOP" 2>&1 | grep -v "^WARNING: Location" || true
  touch "$TOP/.venv/.installed"
fi

# polkitd reads actions only from /usr/share/polkit-1/actions (even root's calls fail with "not
# registered" without it): install ours as a package would, for the demo as for the tests.
if ! cmp -s "$TOP/data/org.example.sanstorage.policy" /usr/share/polkit-1/actions/org.example.sanstorage.policy; then
  install -m644 "$TOP/data/org.example.sanstorage.policy" /usr/share/polkit-1/actions/
fi

if [ "$WITH_TESTS" = 1 ]; then
  # pytest-timeout: pyproject's per-test `timeout` ends a hung test instead of the whole run.
  "$TOP/.venv/bin/python" -c "import pytest, pytest_timeout, dbusmock" 2>/dev/null \
    || "$TOP/.venv/bin/pip" install -q --disable-pip-version-check "pytest>=7" "pytest-timeout>=2.1" \
         "python-dbusmock>=0.28" 2>&1 | grep -v "^WARNING: Location" || true
  # Test users: sanalice may manage SAN storage through group sanadmin's polkit rule; sanbob not.
  getent group sanadmin >/dev/null || groupadd sanadmin
  id sanalice >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin -G sanadmin sanalice
  id sanbob >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin sanbob
  if [ -f "$TOP/data/polkit/50-sanbusd-sanadmin.rules" ]; then
    install -d -m750 /etc/polkit-1/rules.d
    install -m644 "$TOP/data/polkit/50-sanbusd-sanadmin.rules" /etc/polkit-1/rules.d/
  fi
fi
echo "setup: ready ($TOP/.venv)"
