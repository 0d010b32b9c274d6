"""pytest wiring for the real-kernel lane (tests/kernel).

tests/ has no __init__.py, so make lab.py importable explicitly; this also works with
``--import-mode=importlib``, which does not put test directories on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402

_prepared: list[lab.KernelImage] = []


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print prepare/boot timings so CI logs show where the lane's time goes."""
    if not (_prepared or lab.BOOT_HISTORY):
        return
    terminalreporter.section("kernel lab timings")
    for image in _prepared:
        terminalreporter.write_line(f"prepare {image.package}: {image.timings}")
    for label, result in lab.BOOT_HISTORY:
        terminalreporter.write_line(f"{label}: exit={result.exit_code} {result.timing_line()}")
