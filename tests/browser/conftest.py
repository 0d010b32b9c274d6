"""Fixtures for the browser tests: cockpit-ws, test users who log in with a password, Chromium.

The private system bus with the real polkitd (tests/conftest.py's `system_bus`) is the bus the
page talks to; sanbusd runs on the simulated SAN as in the bus tests. Module-scoped where it is
expensive; nothing is left behind (users' page copies, ~/.pam_environment, their processes, the
condition file when the tests made it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cockpit_web import (  # noqa: E402
    ARTIFACTS, Browser, CockpitWs, ensure_user, install_page_for, kill_sessions, page_condition,
    remove_page_for, socket_path, start_chromium)

SUDOERS_DROPIN = Path("/etc/sudoers.d/zz-sanbusd-browser-tests")


@pytest.fixture(scope="module")
def condition():
    with page_condition() as path:
        yield path


@pytest.fixture(scope="module")
def web_users(system_bus, condition):
    """sanweb may manage SAN storage (group sanadmin's polkit rule); sanguest may only look."""
    users = {"admin": ensure_user("sanweb", ("sanadmin",)), "guest": ensure_user("sanguest")}
    for u in users.values():
        install_page_for(u, socket_path(system_bus))
    yield users
    for u in users.values():
        remove_page_for(u)


@pytest.fixture(scope="module")
def sudo_user(system_bus, condition):
    """A sudo-group user without the sanadmin rule: with Cockpit's administrative access on,
    the page's superuser:"try" channel runs through a root bridge (sudo), and polkitd grants
    uid 0. sudo's env_reset would drop the private bus's address (a real system bus needs
    none of this), so this test-only drop-in keeps it."""
    user = ensure_user("sanwebsudo", ("sudo",))
    install_page_for(user, socket_path(system_bus))
    SUDOERS_DROPIN.write_text('Defaults env_keep += "DBUS_SYSTEM_BUS_ADDRESS"\n')
    SUDOERS_DROPIN.chmod(0o440)
    yield user
    SUDOERS_DROPIN.unlink(missing_ok=True)
    remove_page_for(user)


@pytest.fixture(scope="module")
def cockpit_ws(web_users, tmp_path_factory):
    ws = CockpitWs(tmp_path_factory.mktemp("cockpit-ws"))
    yield ws
    ws.stop()
    for u in web_users.values():
        kill_sessions(u)


@pytest.fixture
def browser(cockpit_ws, request, tmp_path):
    driver = start_chromium(tmp_path / "profile")
    b = Browser(driver, cockpit_ws.base, ARTIFACTS / request.node.name)
    try:
        yield b
        errors = b.drain_console()
    finally:
        driver.quit()
    assert not errors, "JavaScript errors in the browser:\n" + "\n".join(errors)
