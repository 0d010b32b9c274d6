"""The configuration file: the shipped default is valid and says the defaults; a bad file names
the file, the key and what is allowed; the environment and the command line override it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sanbusd import config

TOP = Path(__file__).resolve().parents[2]
DEFAULT = TOP / "data" / "sanbusd.conf"


def test_the_shipped_file_is_valid_and_uncommented_it_gives_the_defaults(tmp_path):
    assert config.from_sources({}, {}, str(DEFAULT)) == config.Settings()
    live = tmp_path / "all.conf"
    live.write_text("\n".join(line[1:] if re.match(r"#\w+ = ", line) else line
                              for line in DEFAULT.read_text().splitlines()))
    assert config.read_file(str(live)), "the default file should name every key"
    assert config.from_sources({}, {}, str(live)) == config.Settings()
    keys = {k for keys in config.FILE_KEYS.values() for k in keys}
    assert all(f"#{k} = " in DEFAULT.read_text() for k in keys)


def test_file_environment_and_command_line_in_that_order(tmp_path):
    f = tmp_path / "s.conf"
    f.write_text('[scan]\nparallel_hosts = 4\n[service]\npolkit_timeout = 10\n'
                 '[multipath]\npoll = 1.5\n[npiv]\nlibvirt_refresh_pools = true\n')
    s = config.from_sources({}, {}, str(f))
    assert (s.scan_parallel_hosts, s.polkit_timeout, s.multipathd_poll,
            s.libvirt_refresh_pools) == (4, 10.0, 1.5, True)
    s = config.from_sources({"scan_parallel_hosts": 8}, {"SANBUSD_POLKIT_TIMEOUT": "20"}, str(f))
    assert (s.scan_parallel_hosts, s.polkit_timeout) == (8, 20.0)


@pytest.mark.parametrize("text,says", [
    ("[scan]\nparalel_hosts = 3\n", "unknown key 'paralel_hosts' in [scan]"),
    ("[scans]\nparallel_hosts = 3\n", "unknown section [scans]"),
    ("[scan]\nparallel_hosts = \"many\"\n", "[scan] parallel_hosts must be a number"),
    ("[scan]\nparallel_hosts = 2.5\n", "must be a whole number"),
    ("[scan]\nparallel_hosts = 0\n", "[scan] parallel_hosts: scan_parallel_hosts = 0 is out of range"),
    ("[npiv]\noui = 5\n", "[npiv] oui must be a string"),
    ("[npiv]\noui = \"XYZ\"\n", "[npiv] oui"),
    ("[npiv]\nlibvirt_refresh_pools = 1\n", "must be true or false"),
    ("[scan\n", "not valid TOML"),
])
def test_a_bad_file_is_refused_naming_file_key_and_what_is_allowed(tmp_path, text, says):
    f = tmp_path / "bad.conf"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        config.from_sources({}, {}, str(f))
    assert str(e.value).startswith(str(f)) and says in str(e.value), str(e.value)


def test_a_missing_named_file_is_an_error_the_default_may_be_absent(tmp_path):
    with pytest.raises(ValueError, match="no such configuration file"):
        config.from_sources({}, {}, str(tmp_path / "none.conf"))
    assert config.from_sources({}, {}) is not None      # /etc/sanbusd/sanbusd.conf absent here


def test_check_config_prints_the_settings_or_what_is_wrong(tmp_path):
    good = tmp_path / "g.conf"
    good.write_text("[scan]\ntimeout = 90\n")
    r = subprocess.run([sys.executable, "-m", "sanbusd", "--check-config", "--config", str(good)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "timeout = 90" in r.stdout, r
    bad = tmp_path / "b.conf"
    bad.write_text("[scan]\ntimeout = -1\n")
    r = subprocess.run([sys.executable, "-m", "sanbusd", "--check-config", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr, r
    r = subprocess.run([sys.executable, "-m", "sanbusd", "--config", str(bad), "--simulate",
                        str(TOP / "data/fabrics/demo.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot start" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
