"""pytest wiring for the real-kernel lane (tests/kernel).

tests/ has no __init__.py, so make lab.py (and the scenario modules) importable explicitly; this
also works with ``--import-mode=importlib``, which does not put test directories on sys.path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402
import scenarios  # noqa: E402
from sanscenario import ScenarioRun, completed_report  # noqa: E402
from simstory import SimContext, replay  # noqa: E402

GROUP_TIMEOUT = 600  # a group boot takes 25-40 s here; anything near this is a hang

_prepared: list[lab.KernelImage] = []
_groups: dict[str, lab.GuestResult] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kernel_lab: boots Debian's kernel under QEMU (slow; deselect with -m 'not kernel_lab')"
    )


@pytest.fixture(scope="session")
def kernel_image() -> lab.KernelImage:
    """Kernel + initramfs for the lane; installs/downloads on first use, cached afterwards.

    A failure here (no apt mirror, broken package) errors every kernel test: nothing is skipped.
    """
    image = lab.prepare(lab.default_cache_dir())
    _prepared.append(image)
    return image


@pytest.fixture(scope="session")
def group_boot(kernel_image: lab.KernelImage,
               tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], lab.GuestResult]:
    """``group_boot(group)``: the one boot of a scenario group (scenarios.GROUPS), shared by all tests."""
    def boot(group: str) -> lab.GuestResult:
        if group not in _groups:
            _groups[group] = lab.run_group(
                group, scenarios.GROUPS[group], image=kernel_image,
                outdir=tmp_path_factory.mktemp(f"group_{group}"), nics=scenarios.group_nics(group),
                timeout=GROUP_TIMEOUT)
        return _groups[group]
    return boot


@pytest.fixture(scope="session")
def story_replay(system_bus, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], SimContext]:
    """``story_replay(name)``: that scenario's story (Scenario.simulate), run once on the simulated
    SAN (simstory.replay; system_bus is tests/conftest.py's private bus with polkitd)."""
    done: dict[str, SimContext] = {}

    def get(name: str) -> SimContext:
        if name not in done:
            done[name] = replay(scenarios.ALL[name], system_bus, tmp_path_factory.mktemp(f"story_{name}"))
        return done[name]
    return get


@pytest.fixture(scope="session")
def scenario_run(group_boot: Callable[[str], lab.GuestResult]) -> Callable[[str], ScenarioRun]:
    """``scenario_run(name)``: that scenario's part of its group's boot."""
    def get(name: str) -> ScenarioRun:
        result = group_boot(scenarios.group_of(name))
        return ScenarioRun(name, completed_report(result), result)
    return get


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print prepare/boot/scenario timings so CI logs show where the lane's time goes."""
    if not (_prepared or lab.BOOT_HISTORY):
        return
    terminalreporter.section("kernel lab timings")
    for image in _prepared:
        terminalreporter.write_line(f"prepare {image.package}: {image.timings}")
    for label, result in lab.BOOT_HISTORY:
        terminalreporter.write_line(f"{label}: exit={result.exit_code} {result.timing_line()}")
        data = (result.report or {}).get("data", {})
        if data.get("timings"):
            terminalreporter.write_line(f"  shared: {data['timings']}")
        for name, info in data.get("scenarios", {}).items():
            terminalreporter.write_line(f"  {name}: {info.get('timings')}")
