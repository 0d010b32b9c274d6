"""Shared fixtures: a private system bus with real polkitd, and sanbusd running on a simulated SAN.

The bus loads the project's own policy file (data/org.example.SanStorage.conf) and the daemon is
started the way an admin would start it (python -m sanbusd), as root, on that bus. Helpers live in
sanbus_testing.py (a module name no other conftest shadows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sanbus_testing import start_daemon  # noqa: E402

from sanbusd.devbus import PrivateBus  # noqa: E402

# pyproject.toml's `timeout` (pytest-timeout) bounds every test; a kernel-lab test may first have
# to fetch a kernel and boot a QEMU group (tests/kernel/conftest.py allows 600 s for a boot).
KERNEL_LAB_TIMEOUT = 1800


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("kernel_lab") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(KERNEL_LAB_TIMEOUT))


@pytest.fixture(scope="session")
def system_bus():
    """A private 'system' bus with the real polkitd on it."""
    bus = PrivateBus().start()
    bus.start_polkitd()
    yield bus
    bus.stop()


@pytest.fixture
def daemon(system_bus, tmp_path):
    d = start_daemon(system_bus, tmp_path)
    yield d
    rc = d.stop()
    log = d.log()
    assert rc == 0, f"sanbusd exited with {rc}:\n{log}"
    assert "Traceback" not in log, log
