"""The Fedora spec parses (`rpmspec -P`), uses the guidelines' macros, and installs the same
files in the same places as packaging/install.sh (but the Python package, which Fedora puts in
site-packages): the service in sanbusd, the Cockpit page in the cockpit-sanbusd subpackage."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
SPEC = TOP / "packaging" / "sanbusd.spec"

# Fedora's values of the path macros that Debian's rpm does not define (systemd-rpm-macros).
FEDORA = {"_unitdir": "/usr/lib/systemd/system", "python3_sitelib": "/usr/lib/python3.12/site-packages",
          "pyproject_files": "/dev/null", "python3": "/usr/bin/python3"}


def rpmspec(*extra: str) -> str:
    defines = [a for k, v in FEDORA.items() for a in ("--define", f"{k} {v}")]
    r = subprocess.run(["rpmspec", "-P", *defines, *extra, str(SPEC)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rpmspec_parses():
    r = subprocess.run(["rpmspec", "-P", str(SPEC)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr
    assert re.search(r"^Name:\s+sanbusd$", r.stdout, re.M)


def test_version_is_pyprojects():
    version = re.search(r'^version = "(.*)"', (TOP / "pyproject.toml").read_text(), re.M)[1]
    assert re.search(rf"^Version:\s+{re.escape(version)}$", rpmspec(), re.M)


def test_follows_the_python_and_systemd_guidelines():
    text = SPEC.read_text()
    for macro in ("%generate_buildrequires", "%pyproject_buildrequires", "%pyproject_wheel",
                  "%pyproject_install", "%pyproject_save_files", "%pyproject_check_import",
                  "%systemd_post sanbusd.service", "%systemd_preun sanbusd.service",
                  "%systemd_postun_with_restart sanbusd.service", "%check", "tests/unit",
                  "%config(noreplace) %{_sysconfdir}/sanbusd/sanbusd.conf"):
        assert macro in text, macro


def files_sections() -> dict[str, set[str]]:
    """{package: the paths its %files section lists} ("%files -n NAME" is package NAME)."""
    sections: dict[str, set[str]] = {}
    current = None
    for ln in rpmspec().split("%changelog", 1)[0].splitlines():
        if ln.startswith("%files"):
            words = ln.split()
            current = words[words.index("-n") + 1] if "-n" in words else "sanbusd"
            sections[current] = set()
        elif ln.startswith("%") and not ln.startswith(("%config", "%dir", "%doc", "%license")):
            current = None                  # another section
        elif current and ln.strip().startswith(("/", "%config")) and "%dir" not in ln:
            sections[current].add(ln.split()[-1].rstrip("*").rstrip("/"))
    return sections


def install_sh_list(*args: str) -> set[str]:
    return set(subprocess.run(["bash", str(TOP / "packaging/install.sh"), "--list", "--prefix",
                               "/usr", *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.split())


def uncovered(layout: set[str], listed: set[str]) -> set[str]:
    return {path for path in layout
            if not any(path == f or path.startswith(f + "/") or path.startswith(f)
                       for f in listed)}


def test_files_are_install_shs_layout():
    sections = files_sections()
    assert set(sections) == {"sanbusd", "cockpit-sanbusd"}, sections
    service = {p for p in install_sh_list("--no-cockpit")
               if not p.startswith("/usr/share/sanbusd/")}
    page = install_sh_list("--cockpit-only")
    assert page and all(p.startswith("/usr/share/cockpit/sanbusd/") for p in page), page
    assert install_sh_list() >= service | page
    missing = uncovered(service, sections["sanbusd"])
    assert not missing, f"install.sh installs, the spec's sanbusd does not list: {missing}"
    assert "/usr/share/sanbusd" in sections["sanbusd"]
    missing = uncovered(page, sections["cockpit-sanbusd"])
    assert not missing, f"install.sh installs, the spec's cockpit-sanbusd does not list: {missing}"
    # each part in its own package only
    assert uncovered(page, sections["sanbusd"]) == page
    assert uncovered(service, sections["cockpit-sanbusd"]) == service


def test_the_cockpit_subpackage():
    defines = [a for k, v in FEDORA.items() for a in ("--define", f"{k} {v}")]
    r = subprocess.run(["rpmspec", "-q", *defines, "--qf", "%{name}|%{arch}|[%{requirenevrs};]\n",
                        str(SPEC)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    packages = {name: (arch, set(filter(None, reqs.split(";"))))
                for name, arch, reqs in (ln.split("|") for ln in r.stdout.splitlines())}
    version = re.search(r"^Version:\s+(\S+)$", rpmspec(), re.M)[1]
    arch, requires = packages["cockpit-sanbusd"]
    assert arch == "noarch"
    assert "cockpit-bridge >= 286" in requires, requires
    assert any(re.fullmatch(rf"sanbusd = {re.escape(version)}-1\S*", q) for q in requires), requires
    # the page is installed from the tarball's cockpit/dist by install.sh; nothing fetches it,
    # and %check leaves out the unit test that would run npm
    install = rpmspec().split("%install", 1)[1].split("%check", 1)[0]
    assert "cockpit/dist/manifest.json" in install and "--cockpit-only" in install
    assert not re.search(r"^\s*(\S*/)?(npm|build\.sh)\b|^\s*bash\s+\S*build\.sh", install, re.M)
    check = rpmspec().split("%check", 1)[1].split("%post", 1)[0]
    assert "--ignore=tests/unit/test_cockpit_build.py" in check
