#!/bin/bash
# The README's demo command: set up what is missing, then run the demo (packaging/demo.py).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
bash "$TOP/packaging/setup-dev.sh"
exec "$TOP/.venv/bin/python" "$TOP/packaging/demo.py"
