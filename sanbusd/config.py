"""Settings: one validated object, built from the configuration file, the environment and the
command line (each over the one before).

Every tunable lives here with its bounds, so operations get numbers that are already checked and a
wrong value stops the daemon at start with a message that names the file, the key and what is
allowed. Unknown keys are errors: a misspelt setting must not be silently ignored.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    bus: str = "system"                 # system | session | a D-Bus address
    simulate: str | None = None         # fabric file: run on the simulated SAN
    sim_dir: str = ""                   # where the simulated SAN lives ("" = default_sim_dir())
    sim_fresh: bool = False             # lay the simulated SAN out afresh even if one exists
    sysfs_root: str = "/sys"
    verbose: bool = False
    # scans
    scan_parallel_hosts: int = 16       # hosts scanned at once (sysfs writes mostly wait)
    scan_timeout: int = 60              # default per-call wait for a scan (s)
    scan_max_timeout: int = 3600        # largest `timeout` option a caller may give (s)
    settle_timeout: float = 20.0        # wait for new objects and udev after a kernel write (s)
    # jobs and authorization
    job_retention: float = 60.0         # a finished job stays readable this long (s)
    polkit_timeout: float = 120.0       # a polkit check that takes longer answers TimedOut (s)
    # life cycle
    idle_exit: float = 0.0              # exit after this long idle (s); 0 = never (see
                                        # lifecycle.py for what counts as idle)
    # NPIV
    state_dir: str = ""                 # persistent vHBA records ("" = /var/lib/sanbusd, or
                                        # DIR/state on the simulated SAN)
    vhba_oui: str = "001a4a"            # OUI of generated WWNs ("5" + OUI + 9 random hex
                                        # digits, libvirt's scheme)
    vhba_wait: int = 30                 # default wait for a vHBA's fabric login (s)
    libvirt_uri: str = ""               # create vHBAs through libvirt (e.g. qemu:///system)
    libvirt_refresh_pools: bool = False  # refresh libvirt pools after scans and vHBA logins
    # multipath
    multipathd_socket: str = ""         # "" = the backend's (@/org/kernel/linux/storage/multipathd)
    multipathd_timeout: float = 30.0    # one command to multipathd, retries included (s)
    multipathd_poll: float = 5.0        # re-read path states this often while maps exist (s)
    multipath_conf_dir: str = ""        # "" = the backend's (/etc/multipath/conf.d)

    def __post_init__(self) -> None:
        for name, low, high in (("scan_parallel_hosts", 1, 256), ("scan_timeout", 1, 3600),
                                ("scan_max_timeout", 1, 86400), ("settle_timeout", 0.1, 3600),
                                ("job_retention", 0, 86400), ("polkit_timeout", 0.1, 3600),
                                ("idle_exit", 0, 86400),
                                ("multipathd_timeout", 0.1, 600), ("multipathd_poll", 0.2, 3600)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} = {value} is out of range ({low}-{high})")
        if not 1 <= self.vhba_wait <= VHBA_MAX_WAIT:
            raise ValueError(f"vhba_wait = {self.vhba_wait} is out of range (1-{VHBA_MAX_WAIT})")
        if len(self.vhba_oui) != 6 or any(c not in "0123456789abcdef" for c in self.vhba_oui):
            raise ValueError(f"vhba_oui = {self.vhba_oui!r} must be 6 lower-case hex digits "
                             "(an IEEE OUI such as 001a4a)")
        if self.scan_timeout > self.scan_max_timeout:
            raise ValueError(f"scan_timeout ({self.scan_timeout}) exceeds scan_max_timeout "
                             f"({self.scan_max_timeout})")

    @property
    def sim_directory(self) -> str:
        return self.sim_dir or default_sim_dir()

    @property
    def state_directory(self) -> str:
        if self.state_dir:
            return self.state_dir
        # The simulated SAN's vHBAs are not the host's: keep their records beside it.
        return os.path.join(self.sim_directory, "state") if self.simulate else "/var/lib/sanbusd"

    @property
    def runtime_directory(self) -> str:
        """Where state that only has to outlive an idle exit (not a reboot) is kept: /run/sanbusd
        (the unit's RuntimeDirectory=, $RUNTIME_DIRECTORY when systemd says so); on the simulated
        SAN, SIM_DIR/run beside the SAN it describes."""
        if self.simulate:
            return os.path.join(self.sim_directory, "run")
        return os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or RUNTIME_DIR


VHBA_MAX_WAIT = 600
RUNTIME_DIR = "/run/sanbusd"
# idle_exit when no file, variable or option sets it and systemd started this very process (it
# sets $SYSTEMD_EXEC_PID to the pid it started; a process merely descended from a unit, such as a
# test run by a CI service, inherits a pid that is not its own): a service goes away when idle and
# is activated again by the next call; by hand (a shell, a test) the daemon stays until stopped.
SERVICE_IDLE_EXIT = 300.0


# Environment variables that set a setting (for tests and the private-bus demo).
ENVIRONMENT = {"SANBUSD_POLKIT_TIMEOUT": "polkit_timeout", "SANBUSD_SIM_DIR": "sim_dir",
               "SANBUSD_JOB_RETENTION": "job_retention", "SANBUSD_STATE_DIR": "state_dir",
               "SANBUSD_LIBVIRT_URI": "libvirt_uri",
               "SANBUSD_MULTIPATHD_TIMEOUT": "multipathd_timeout",
               "SANBUSD_MULTIPATHD_POLL": "multipathd_poll",
               "SANBUSD_IDLE_EXIT": "idle_exit",
               # the simulated SAN for an activated daemon, which has no command line (tests
               # and demos only): as [simulation] in the configuration file
               "SANBUSD_SIMULATE": "simulate", "SANBUSD_SIM_FRESH": "sim_fresh"}


def default_sim_dir() -> str:
    env = os.environ.get("SANBUSD_SIM_DIR")
    if env:
        return env
    if os.access("/run", os.W_OK):
        return "/run/sanbusd-sim"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR", tempfile.gettempdir()), "sanbusd-sim")


CONFIG_FILE = "/etc/sanbusd/sanbusd.conf"

# The configuration file's keys: [section] key -> the setting it sets.
FILE_KEYS: dict[str, dict[str, str]] = {
    "scan": {"parallel_hosts": "scan_parallel_hosts", "timeout": "scan_timeout",
             "max_timeout": "scan_max_timeout", "settle_timeout": "settle_timeout"},
    "service": {"polkit_timeout": "polkit_timeout", "job_retention": "job_retention",
                "state_dir": "state_dir", "idle_exit": "idle_exit"},
    "npiv": {"oui": "vhba_oui", "wait": "vhba_wait", "libvirt_uri": "libvirt_uri",
             "libvirt_refresh_pools": "libvirt_refresh_pools"},
    "multipath": {"multipathd_timeout": "multipathd_timeout", "poll": "multipathd_poll",
                  "multipathd_socket": "multipathd_socket", "conf_dir": "multipath_conf_dir"},
    # Tests and demos only: the installed daemon, started by D-Bus activation (no command line),
    # on the simulated SAN instead of the kernel (--simulate, --sim-dir, --sim-fresh).
    "simulation": {"fabric": "simulate", "dir": "sim_dir", "fresh": "sim_fresh"},
}
# The simulated SAN's paths must be absolute in the file: an activated daemon's working directory
# is /, so a relative one would not mean what its writer intended.
_ABSOLUTE = {"simulate", "sim_dir"}
_TOML_TYPES = {"int": (int, float), "float": (int, float), "str": (str,), "bool": (bool,)}


def read_file(path: str) -> dict[str, object]:
    """The settings a configuration file sets. ValueError names the file, the key and what is
    wrong: a syntax error, an unknown section or key, a value of the wrong type."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    types = {f.name: f.type for f in fields(Settings)}
    out: dict[str, object] = {}
    for section, table in doc.items():
        keys = FILE_KEYS.get(section)
        if keys is None or not isinstance(table, dict):
            raise ValueError(f"{path}: unknown section [{section}]; the sections are "
                             + ", ".join(f"[{s}]" for s in FILE_KEYS))
        for key, value in table.items():
            name = keys.get(key)
            if name is None:
                raise ValueError(f"{path}: unknown key {key!r} in [{section}]; it has "
                                 + ", ".join(keys))
            typ = str(types[name]).split(" ")[0].replace("'", "")
            allowed = _TOML_TYPES.get(typ, (str,))
            if not isinstance(value, allowed) or (typ != "bool" and isinstance(value, bool)):
                raise ValueError(f"{path}: [{section}] {key} must be "
                                 f"{'a number' if typ in ('int', 'float') else 'true or false' if typ == 'bool' else 'a string'}"
                                 f", not {value!r}")
            if typ == "int" and isinstance(value, float):
                raise ValueError(f"{path}: [{section}] {key} must be a whole number, not {value}")
            if name in _ABSOLUTE and value and not os.path.isabs(value):
                raise ValueError(f"{path}: [{section}] {key} must be an absolute path, "
                                 f"not {value!r}")
            if name == "simulate" and value == "":
                value = None                    # "" = the kernel, as when the key is absent
            out[name] = float(value) if typ == "float" else value
    return out


def describe(s: Settings, config_file: str | None) -> str:
    """The settings in force, as the configuration file would write them."""
    path = config_file or CONFIG_FILE
    source = path if config_file is not None or os.path.exists(path) else f"{path} (absent)"
    out = [f"# settings in force: defaults, {source}, environment, command line"]
    for section, keys in FILE_KEYS.items():
        out.append(f"[{section}]")
        for key, name in keys.items():
            v = getattr(s, name)
            out.append(f"{key} = " + ('""' if v is None else "true" if v is True
                                      else "false" if v is False
                                      else f'"{v}"' if isinstance(v, str) else f"{v:g}"
                                      if isinstance(v, float) else str(v)))
    return "\n".join(out)


def file_key(name: str) -> str:
    """A setting's name in the configuration file: "[scan] parallel_hosts"."""
    for section, keys in FILE_KEYS.items():
        for key, setting in keys.items():
            if setting == name:
                return f"[{section}] {key}"
    return name


def from_sources(cli: dict[str, object], environ: dict[str, str] | None = None,
                 config_file: str | None = None) -> Settings:
    """Command-line values (None: not given) over environment variables over the configuration
    file over defaults. `config_file` None: the default file if it exists. Raises ValueError
    naming the file or the variable, the setting, and what is allowed."""
    environ = os.environ if environ is None else environ
    types = {f.name: f.type for f in fields(Settings)}
    values: dict[str, object] = {}
    path = config_file or CONFIG_FILE
    if config_file is not None or os.path.exists(path):
        try:
            values.update(read_file(path))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such configuration file") from None
        except PermissionError:
            raise ValueError(f"{path}: cannot be read (permission denied)") from None
        except IsADirectoryError:
            raise ValueError(f"{path}: is a directory, not a configuration file") from None
        try:
            Settings(**values)  # type: ignore[arg-type]
        except ValueError as e:
            setting = str(e).split(" ", 1)[0]
            raise ValueError(f"{path}: {file_key(setting)}: {e}") from None
    for var, name in ENVIRONMENT.items():
        if var in environ:
            values[name] = _convert(name, environ[var], types[name], f"${var}")
            if name == "simulate" and not values[name]:
                values[name] = None
    for name, value in cli.items():
        if value is not None:
            values[name] = value
    if "idle_exit" not in values and environ.get("SYSTEMD_EXEC_PID") == str(os.getpid()):
        values["idle_exit"] = SERVICE_IDLE_EXIT
    unknown = set(values) - set(types)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    return Settings(**values)  # type: ignore[arg-type]


def _convert(name: str, text: str, typ: object, where: str) -> object:
    if typ in ("bool", bool):
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{where} ({name}) must be 1 or 0 (true or false), not {text!r}")
    try:
        if typ in ("float", float):
            return float(text)
        if typ in ("int", int):
            return int(text)
    except ValueError:
        raise ValueError(f"{where} ({name}) must be a number, not {text!r}") from None
    return text
