#!/bin/bash
# The README's test command: set up what is missing (Debian packages, .venv, test users, polkit
# files), then run every test layer: unit, bus (private dbus-daemon + real polkitd) and the real
# kernel in QEMU (tests/kernel).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
bash "$TOP/packaging/setup-dev.sh" --tests
cd "$TOP"
exec .venv/bin/python -m pytest -v -p no:cacheprovider "$@" tests
