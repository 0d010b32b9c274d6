"""The Cockpit page in a real browser: Debian's cockpit-ws and cockpit-bridge, headless Chromium
driven by Selenium (Debian's python3-selenium and chromium-driver), and a user who logs in with a
password through Cockpit's own login page (PAM, cockpit-session).

How the bridge finds sanbusd's private test bus: cockpit-session builds the bridge's environment
from PAM, not from cockpit-ws, and /etc/pam.d/cockpit reads ~/.pam_environment, so each test user
gets DBUS_SYSTEM_BUS_ADDRESS there. The page itself is unchanged: {bus: "system"}.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from sanbusd.bus.contract import data_dir
from sanbusd.devbus import PrivateBus

TOP = Path(__file__).resolve().parents[2]
PAGE_BUILD = TOP / "cockpit" / "dist"
PKG = "sanbusd"
# The page's manifest shows it only where sanbusd's bus policy is installed.
CONDITION = Path("/usr/share/dbus-1/system.d/org.example.SanStorage.conf")
WS = "/usr/lib/cockpit/cockpit-ws"
WAIT = 20                  # s for anything the browser shows (typical: well under 1 s)
ARTIFACTS = Path(os.environ.get("SANBUSD_ARTIFACTS", TOP / "build" / "artifacts")) / "cockpit"
# The login page probes /cockpit/login once without credentials (401) before the user logs in.
IGNORED = ("/cockpit/login - Failed to load resource",)


@dataclass
class WebUser:
    name: str
    password: str
    home: Path


def ensure_user(name: str, groups: tuple[str, ...] = ()) -> WebUser:
    """A login user (Cockpit refuses root) with a home for ~/.local and ~/.pam_environment and a
    fresh random password; created once, reused by later runs."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    for g in groups:
        subprocess.run(["usermod", "-aG", g, name], check=True)
    password = "pw-" + secrets.token_hex(8)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    home = Path(pwd.getpwnam(name).pw_dir)
    home.mkdir(exist_ok=True)
    shutil.chown(home, name, name)
    return WebUser(name, password, home)


def install_page_for(user: WebUser, bus_socket: str, extra_env: dict[str, str] | None = None
                     ) -> None:
    """The page as a developer installs it (~/.local/share/cockpit/<pkg>), and the bus (plus
    `extra_env` for the user's next Cockpit sessions)."""
    if not (PAGE_BUILD / "manifest.json").exists():
        raise AssertionError(f"{PAGE_BUILD} is not built: run bash cockpit/build.sh")
    dest = user.home / ".local" / "share" / "cockpit" / PKG
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(PAGE_BUILD, dest)
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus_socket}", **(extra_env or {})}
    (user.home / ".pam_environment").write_text(
        "".join(f"{k} DEFAULT={v}\n" for k, v in env.items()))
    subprocess.run(["chown", "-R", f"{user.name}:{user.name}", str(user.home)], check=True)


def kill_sessions(user: WebUser) -> None:
    """A Cockpit session outlives the browser by about 15 s, and its dbus-daemon and ssh-agent
    are sometimes left behind for good: end them by uid."""
    subprocess.run(["pkill", "-KILL", "-U", user.name], check=False)


def remove_page_for(user: WebUser) -> None:
    kill_sessions(user)
    shutil.rmtree(user.home / ".local" / "share" / "cockpit" / PKG, ignore_errors=True)
    (user.home / ".pam_environment").unlink(missing_ok=True)


@contextlib.contextmanager
def page_condition():
    """The manifest's condition (sanbusd's bus policy installed), made while inside when the
    machine has no sanbusd package, and removed again."""
    made = not CONDITION.exists()
    if made:
        CONDITION.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir() / "org.example.SanStorage.conf", CONDITION)
    try:
        yield CONDITION
    finally:
        if made:
            CONDITION.unlink(missing_ok=True)


def socket_path(bus: PrivateBus) -> str:
    """The bus's socket, for ~/.pam_environment (the address without its guid)."""
    return bus.address.split("path=", 1)[1].split(",", 1)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CockpitWs:
    """cockpit-ws without systemd, as the unprivileged cockpit-wsinstance user (which may run
    the setuid cockpit-session), on plain HTTP on loopback."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = logdir / "cockpit-ws.log"
        self.process = subprocess.Popen(
            ["setpriv", "--reuid=cockpit-wsinstance", "--regid=cockpit-wsinstance",
             "--init-groups", WS, "--no-tls", f"--port={self.port}", "--address=127.0.0.1"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"cockpit-ws did not listen: {self.log.read_text()}")
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_chromium(profile: Path) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    # As root Chromium needs --no-sandbox; the network flags stop it calling out (the machine's
    # network is closed and refused connections only add noise).
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-quic",
              f"--user-data-dir={profile}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # chromedriver's path given: Selenium must never try to download a driver.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


@dataclass
class Browser:
    """One Chromium, logged in to one Cockpit; the test reads the page as the user sees it."""
    driver: webdriver.Chrome
    base: str
    shots: Path
    console: list[dict] = field(default_factory=list)

    def wait(self, pred, what: str, timeout: float = WAIT):
        try:
            # The page redraws what changed: an element found a moment ago may be gone.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: pred())
        except WebDriverException as e:
            self.screenshot("timeout-" + "".join(c if c.isalnum() else "-" for c in what)[:60])
            raise AssertionError(f"{what}: not seen within {timeout:g} s ({type(e).__name__})") \
                from None

    def login(self, user: WebUser) -> None:
        d = self.driver
        d.get(self.base + "/")
        self.wait(lambda: d.find_elements(By.ID, "login-user-input"), "the login page")
        d.find_element(By.ID, "login-user-input").send_keys(user.name)
        d.find_element(By.ID, "login-password-input").send_keys(user.password)
        d.find_element(By.ID, "login-button").click()
        self.wait(lambda: d.find_elements(By.CSS_SELECTOR, "#content iframe"), "the shell")

    def open_page(self, options: str = "", from_menu: bool = False) -> float:
        """Open "SAN storage" and switch into its iframe: by its URL (the shell loads afresh),
        or as a user does, by clicking it in the shell's menu. Returns the seconds until the
        page says it is ready."""
        d = self.driver
        d.switch_to.default_content()
        t = time.monotonic()
        if from_menu:
            self.click("xpath://nav//a[normalize-space(.)='SAN storage']")
        else:
            d.get(f"{self.base}/{PKG}" + (f"#/?{options}" if options else ""))
        frame = self.wait(lambda: d.find_elements(
            By.CSS_SELECTOR, f"iframe[name='cockpit1:localhost/{PKG}']"), "the page's iframe")[0]
        d.switch_to.frame(frame)
        self.wait(lambda: d.execute_script("return document.body && document.body.dataset.state")
                  in ("ready", "error"), "the page ready")
        took = time.monotonic() - t
        assert d.execute_script("return document.body.dataset.state") == "ready", self.text("#alerts")
        return took

    def css(self, selector: str) -> list[WebElement]:
        """Elements by CSS selector, or by XPath with an "xpath:" prefix (text matches)."""
        if selector.startswith("xpath:"):
            return self.driver.find_elements(By.XPATH, selector[6:])
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str) -> WebElement:
        return self.wait(lambda: self.css(selector), f"element {selector}")[0]

    def shown(self, selector: str) -> WebElement:
        """Wait until the element is displayed (a dialog's markup is always there, hidden)."""
        return self.wait(lambda: [e for e in self.css(selector) if e.is_displayed()],
                         f"{selector} shown")[0]

    def text(self, selector: str) -> str:
        for _ in range(20):
            try:
                found = self.css(selector)
                return found[0].text if found else ""
            except StaleElementReferenceException:
                continue                        # redrawn between find and read: find again
        raise AssertionError(f"{selector} kept being redrawn")

    def click(self, selector: str) -> None:
        """Click the element as a user would, once it is enabled (found afresh if the page
        redrew it meanwhile)."""
        def clicked() -> bool:
            el = self.one(selector)
            if not el.is_enabled():
                return False
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
            el.click()
            return True
        self.wait(clicked, f"{selector} clicked")

    def type(self, selector: str, text: str) -> None:
        el = self.one(selector)
        el.clear()
        el.send_keys(text)

    def screenshot(self, name: str, show: str | None = None) -> Path:
        """The whole window, shell and page; `show` scrolls that element to the top first."""
        if show is not None:
            self.driver.execute_script(     # its card, heading included
                "(arguments[0].closest('.pf-c-card, section') || arguments[0])"
                ".scrollIntoView({block: 'start'})", self.one(show))
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def drain_console(self) -> list[str]:
        """Every SEVERE entry since the last call, from every frame (uncaught exceptions,
        unhandled rejections, console.error, CSP violations)."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return [e["message"] for e in entries
                if e["level"] == "SEVERE" and not any(i in e["message"] for i in IGNORED)]
