"""The "SAN storage" Cockpit page, as a user walks it: log in through Cockpit's login page, open
the page, and do the three jobs (scan for named LUNs, vHBAs, multipath maps) against sanbusd on
the simulated SAN, on a private system bus with the real polkitd. Screenshots go to
build/artifacts/cockpit/<test>/ (SANBUSD_ARTIFACTS moves them); any JavaScript error in any
frame fails the test (the `browser` fixture)."""

from __future__ import annotations

import pytest

from sanbus_testing import sanctl

pytestmark = pytest.mark.timeout(300)

FABRIC_A_HBA, FABRIC_B_HBA = "10000090fa1b2c01", "10000090fa1b2c02"
ARRAY_PORT_A = "500a098101a1b2c3"


def hctls(b, selector: str) -> set[str]:
    return {e.get_attribute("data-hctl") for e in b.css(selector)}


def healths(b) -> list[str]:
    return [e.text.lower() for e in b.css("#maps tbody[data-map] .health")]


def test_admin_scans_for_named_luns_and_sees_exactly_those(browser, web_users, daemon):
    b = browser
    b.login(web_users["admin"])
    b.open_page()
    # The demo SAN: a local disk and three LUNs on two paths each, one vHBA.
    b.wait(lambda: len(b.css("#luns tbody[data-wwid]")) == 4, "4 logical units listed")
    assert "7 LUN paths" in b.text("#lun-count")
    assert b.css("#vhbas tr[data-vhba='5001a4a0aa000001']")
    assert not b.css("#hosts .rescan-hint")
    b.screenshot("01-opened")

    # The SAN admin maps 27 and 28 for this host, and 29 (a decoy: nobody asked for it).
    daemon.sim({"command": "provision", "array": "netapp1", "luns": [27, 28, 29],
                "size": "20G", "initiators": [FABRIC_A_HBA, FABRIC_B_HBA]})
    b.wait(lambda: len(b.css("#hosts .rescan-hint")) >= 2, "'Rescan suggested' on both FC ports")

    b.click("#scan-open")
    b.shown("#scan-dialog")
    b.type("#scan-luns", "27,x")
    b.wait(lambda: b.text("#scan-luns-error"), "the page refusing '27,x'")
    assert not b.one("#scan-submit").is_enabled()
    b.screenshot("02-scan-refuses-bad-list")
    b.type("#scan-luns", "27, 28")
    b.wait(lambda: not b.text("#scan-luns-error"), "'27, 28' accepted")
    b.click("#scan-submit")
    b.wait(lambda: b.text("#scan-result"), "the scan's result")
    want = {"1:0:0:27", "2:0:0:27", "1:0:0:28", "2:0:0:28"}
    b.wait(lambda: hctls(b, "tbody.lun-new tr[data-hctl]") == want, "exactly 27 and 28, new")
    assert len(b.css("#luns tbody.lun-new")) == 2            # two logical units, two paths each
    assert not [h for h in hctls(b, "#luns tr[data-hctl]") if h.endswith(":29")]
    for h in want:
        assert h in b.text("#scan-result")
    b.wait(lambda: not b.css("#hosts .rescan-hint"), "the hint gone after the scan")
    b.screenshot("03-scan-found-27-28")
    # What the page shows is what the daemon has: nothing made for 29.
    scans = [w["data"] for w in daemon.writes() if w["path"].endswith("/scan")]
    assert scans and not [s for s in scans if s.split()[-1] in ("29", "-")], scans


def test_port_down_shows_live_and_multipath_maps_are_made_and_flushed(browser, web_users, daemon):
    b = browser
    b.login(web_users["admin"])
    b.open_page()
    b.wait(lambda: len(b.css("#luns tbody[data-wwid]")) == 4, "4 logical units listed")

    b.click("#mpath-create-all")
    b.shown("#confirm-dialog")
    b.click("#confirm-submit")
    b.wait(lambda: len(b.css("#maps tbody[data-map]")) == 3, "three maps (LUN 0, 1, 2)")
    b.wait(lambda: healths(b) == ["healthy"] * 3, "every map healthy")
    b.screenshot("04-maps-created", show="#maps")

    # Fabric A's array port leaves the fabric: its remote port and the maps change, no reload.
    daemon.sim({"command": "port-down", "wwpn": ARRAY_PORT_A})
    rport = f"#hosts [data-rport='{ARRAY_PORT_A}'] .port-state"
    b.wait(lambda: b.css(rport) and all(e.text in ("Blocked", "Not Present") for e in b.css(rport)),
           "the remote port Blocked")
    b.wait(lambda: healths(b) == ["degraded"] * 3, "every map degraded")
    b.screenshot("05-port-down", show="#maps")
    daemon.sim({"command": "port-up", "wwpn": ARRAY_PORT_A})
    b.wait(lambda: healths(b) == ["healthy"] * 3, "every map healthy again", timeout=30)

    # Flush one map: it goes, the others stay.
    first = b.css("#maps tbody[data-map]")[0].get_attribute("data-map")
    b.click(f"#maps tbody[data-map='{first}'] button.flush-map")
    b.shown("#confirm-dialog")
    b.click("#confirm-submit")
    b.wait(lambda: not b.css(f"#maps tbody[data-map='{first}']"), f"map {first} gone")
    assert len(b.css("#maps tbody[data-map]")) == 2
    b.screenshot("06-map-flushed", show="#maps")
    names = {m["name"] for m in daemon.sim({"command": "status"})["maps"]}
    assert first not in names and len(names) == 2


def test_admin_creates_and_deletes_a_vhba(browser, web_users, daemon):
    b = browser
    b.login(web_users["admin"])
    b.open_page()
    b.click("#hosts tr[data-host='host2'] button.create-vhba")
    b.shown("#vhba-dialog")
    b.type("#vhba-wwpn", "5001a4a0aa0000f2")
    b.type("#vhba-wwnn", "5001a4a0bb0000f2")
    b.click("#vhba-submit")
    row = "#vhbas tr[data-vhba='5001a4a0aa0000f2']"
    b.wait(lambda: b.css(row), "the new vHBA listed")
    b.wait(lambda: "host2" in b.text(row), "its parent host2")
    b.wait(lambda: not b.css("#vhba-dialog .dialog-error") and not b.one("#vhba-dialog").is_displayed(),
           "the dialog closed, no error")
    assert "5001a4a0aa0000f2" in sanctl(daemon, "vhba", "list").stdout
    b.screenshot("07-vhba-created", show="#vhbas")

    b.click(f"{row} button.delete-vhba")
    b.shown("#confirm-dialog")
    b.click("#confirm-submit")
    b.wait(lambda: not b.css(row), "the vHBA gone")
    assert "5001a4a0aa0000f2" not in sanctl(daemon, "vhba", "list").stdout
    assert b.css("#vhbas tr[data-vhba='5001a4a0aa000001']")       # the other one stays
    b.screenshot("08-vhba-deleted")


def test_unprivileged_user_sees_a_readable_refusal_and_nothing_happens(browser, web_users,
                                                                       daemon):
    b = browser
    daemon.sim({"command": "provision", "array": "netapp1", "luns": [27], "size": "20G",
                "initiators": [FABRIC_A_HBA, FABRIC_B_HBA]})
    before = len(daemon.writes())
    b.login(web_users["guest"])
    b.open_page()
    b.wait(lambda: len(b.css("#luns tbody[data-wwid]")) == 4, "4 logical units listed")
    b.click("#scan-open")
    b.type("#scan-luns", "27")
    b.click("#scan-submit")
    refusal = "[data-error-name$='NotAuthorizedCanObtain']"
    b.wait(lambda: b.css(refusal), "the polkit refusal")
    words = b.text(refusal)
    assert "Not permitted" in words and "sanadmin" in words, words
    b.screenshot("09-guest-refused")
    assert len(b.css("#luns tbody[data-wwid]")) == 4
    assert len(daemon.writes()) == before                      # nothing was written to sysfs


def test_a_bad_lun_list_sent_anyway_gets_the_daemons_error(browser, web_users, daemon):
    b = browser
    b.login(web_users["admin"])
    b.open_page("unchecked=1")            # the page's own check off: the daemon must refuse
    before = len(daemon.writes())
    b.click("#scan-open")
    b.type("#scan-luns", "27,x")
    b.click("#scan-submit")
    # Sent as strings (the page's check is off): the daemon names the option and its type.
    refusal = "[data-error-name='org.freedesktop.DBus.Error.InvalidArgs']"
    b.wait(lambda: "'luns' must have type at" in b.text(refusal), "the daemon's InvalidArgs")
    b.screenshot("10-daemon-refuses-bad-list")
    assert len(daemon.writes()) == before
    assert sanctl(daemon, "status").returncode == 0           # the daemon still answers


def test_administrative_access_lets_a_sudo_user_scan(browser, sudo_user, cockpit_ws, daemon):
    b = browser
    daemon.sim({"command": "provision", "array": "netapp1", "luns": [27], "size": "20G",
                "initiators": [FABRIC_A_HBA, FABRIC_B_HBA]})
    b.login(sudo_user)
    b.open_page()
    b.click("#scan-open")
    b.type("#scan-luns", "27")
    b.click("#scan-submit")
    b.wait(lambda: b.css("[data-error-name$='NotAuthorizedCanObtain']"),
           "a refusal while access is limited")

    # Cockpit's shell: "Limited access" -> the user's password -> "Administrative access".
    d = b.driver
    d.switch_to.default_content()
    b.click("xpath://button[contains(., 'Limited access')]")
    b.type(".pf-c-modal-box input[type=password]", sudo_user.password)
    b.click(".pf-c-modal-box button.pf-m-primary")
    b.wait(lambda: b.css("xpath://button[contains(., 'Administrative access')]"),
           "administrative access on")
    b.open_page()
    b.click("#scan-open")
    b.type("#scan-luns", "27")
    b.click("#scan-submit")
    b.wait(lambda: b.text("#scan-result"), "the scan's result")
    assert {"1:0:0:27", "2:0:0:27"} <= hctls(b, "tbody.lun-new tr[data-hctl]")
    b.screenshot("11-admin-access-scan")
