"""The Fedora spec parses (`rpmspec -P`), uses the guidelines' macros, and installs the same
files in the same places as packaging/install.sh (but the Python package, which Fedora puts in
site-packages)."""

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


def test_files_are_install_shs_layout():
    files_section = rpmspec().split("%files", 1)[1].split("%changelog", 1)[0]
    listed = {ln.split()[-1].rstrip("*").rstrip("/") for ln in files_section.splitlines()
              if ln.strip().startswith(("/", "%config")) and "%dir" not in ln}
    layout = subprocess.run(["bash", str(TOP / "packaging/install.sh"), "--list", "--prefix",
                             "/usr"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.split()
    layout = {p for p in layout if not p.startswith("/usr/share/sanbusd/")}
    covered = set()
    for path in layout:
        for f in listed:
            if path == f or path.startswith(f + "/") or path.startswith(f):
                covered.add(path)
    assert covered == layout, f"install.sh installs, the spec does not list: {layout - covered}"
    assert "/usr/share/sanbusd" in listed
