"""In-guest entry point: run a group of scenarios in one boot (``group.py NAME...``).

See sanscenario.GroupRunner: udevd, every scenario's setup, a private system bus with polkitd and
sanbusd on the real /sys, a D-Bus client, every scenario's exercise. Writes /run/kl-out/report.json
(plus sanbusd.log, bus.log, polkitd.log, dmesg.txt) and exits non-zero if any check failed.
Host side: lab.run_group() and the test_<scenario>.py modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # guestlib, when run by hand

import guestlib as g  # noqa: E402
import scenarios  # noqa: E402
from sanscenario import GroupRunner  # noqa: E402


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in scenarios.ALL]
    if unknown or not names:
        raise SystemExit(f"usage: group.py SCENARIO...; known: {sorted(scenarios.ALL)}; unknown: {unknown}")
    g.run_scenario("group " + " ".join(names),
                   lambda report: GroupRunner([scenarios.ALL[n] for n in names], report).run())


if __name__ == "__main__":
    main(sys.argv[1:])
