"""multipathd's view of its maps, read from its JSON, and a map's health from its paths. Pure.

multipathd knows what sysfs cannot say: device-mapper's state of each path (active or failed)
and its path checker's verdict. Its JSON differs across multipath-tools versions (fields are
added, a few renamed), so the parser takes what it finds and leaves the rest "unknown"; only
a reply that is not JSON, or not shaped like a map list at all, is an error (ValueError).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .ids import multipath_wwid

UNKNOWN = "unknown"

# A multipath WWID as multipath-tools writes it: udev's ID_SERIAL (3600a…, 2…, 1Linux_scsi…,
# 8…). It reaches multipathd's command line and a config file, so nothing else is allowed: no
# blanks (multipathd splits its commands on them), no quotes, no regex characters.
_MPATH_WWID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_SYSFS_PREFIXES = ("naa.", "eui.", "t10.")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")


def mpath_wwid(text: str) -> str:
    """A WWID in either form (naa.600a… as sysfs shows it, or 3600a… as multipath does) -> the
    multipath form; ValueError (saying what to give) for anything else."""
    w = text.strip()
    if w.lower().startswith(_SYSFS_PREFIXES):
        prefix, rest = w[:4].lower(), w[4:]
        if prefix != "t10.":            # naa./eui.: hex digits (t10. is text: keep its case)
            rest = rest.lower() if _HEX_RE.fullmatch(rest) else ""
        w = multipath_wwid(prefix + rest) if rest else ""
    if not _MPATH_WWID_RE.fullmatch(w):
        raise ValueError(f"{text[:80]!r} is not a WWID; give it as sysfs shows it (naa.6001405…) "
                         "or as multipath does (36001405…)")
    return w


@dataclass(frozen=True, slots=True)
class PathStatus:
    dev: str                        # sdX
    dm_state: str = UNKNOWN         # active | failed
    checker_state: str = UNKNOWN    # ready | faulty | shaky | ghost | pending | …
    dev_state: str = UNKNOWN        # the device state multipathd last read (running, offline…)


@dataclass(frozen=True, slots=True)
class MapStatus:
    name: str
    wwid: str
    dm: str = ""                    # dm-N
    features: str = ""
    hwhandler: str = ""
    paths: tuple[PathStatus, ...] = ()

    def path(self, dev: str) -> PathStatus | None:
        return next((p for p in self.paths if p.dev == dev), None)


def _text(d: dict, *keys: str) -> str:
    for k in keys:
        v = d.get(k)
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return str(v).strip()
    return ""


def _state(d: dict, *keys: str) -> str:
    v = _text(d, *keys)
    return v if v and v not in ("undef", "[undef]") else UNKNOWN


def _map(d: object) -> MapStatus:
    if not isinstance(d, dict):
        raise ValueError("a map in multipathd's JSON is not an object")
    paths = []
    groups = d.get("path_groups")
    for g in groups if isinstance(groups, list) else ():
        ps = g.get("paths") if isinstance(g, dict) else None
        for p in ps if isinstance(ps, list) else ():
            if isinstance(p, dict) and _text(p, "dev"):
                paths.append(PathStatus(_text(p, "dev"), _state(p, "dm_st"),
                                        _state(p, "chk_st", "checker_state"),
                                        _state(p, "dev_st")))
    return MapStatus(name=_text(d, "name", "alias"), wwid=_text(d, "uuid", "wwid"),
                     dm=_text(d, "sysfs"), features=_text(d, "features"),
                     hwhandler=_text(d, "hwhandler"), paths=tuple(paths))


def _json(text: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError(f"multipathd answered something that is not JSON: "
                         f"{text.strip()[:80]!r}") from None
    if not isinstance(doc, dict):
        raise ValueError("multipathd's JSON is not an object")
    return doc


def parse_maps_json(text: str) -> dict[str, MapStatus]:
    """`show maps json` -> {dm-N: status} (maps multipathd has not bound to a dm device yet are
    left out: sanbusd shows maps that exist)."""
    maps = _json(text).get("maps")
    if not isinstance(maps, list):
        raise ValueError("multipathd's JSON has no \"maps\" list")
    return {m.dm: m for m in map(_map, maps) if m.dm}


def parse_map_json(text: str) -> MapStatus:
    """`show map NAME json` -> its status."""
    doc = _json(text)
    if "map" not in doc:
        raise ValueError("multipathd's JSON has no \"map\"")
    return _map(doc["map"])


PATHS_COMMAND = 'show paths raw format "%d %w"'


def parse_paths_raw(text: str) -> dict[str, str]:
    """`show paths raw format "%d %w"` -> {sdX: WWID as multipath groups it}. Paths whose WWID
    multipathd does not know yet are left out."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _MPATH_WWID_RE.fullmatch(parts[1]) and parts[1] != "undef":
            out[parts[0]] = parts[1]
    if text.strip() and not out and any(len(l.split()) > 3 for l in text.splitlines()):
        raise ValueError(f"multipathd did not list paths: {text.strip()[:80]!r}")
    return out


STATES_COMMAND = 'show paths raw format "%d %t %T %o"'


def parse_path_states(text: str) -> dict[str, tuple[str, str, str]]:
    """`show paths raw format "%d %t %T %o"` -> {sdX: (dm state, checker state, device
    state)}, "unknown" for what multipathd leaves undefined: the compact way to notice a
    checker's verdict without reading every map's JSON."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            dev, *states = parts
            out[dev] = tuple(UNKNOWN if s in ("undef", "[undef]") else s
                             for s in states)  # type: ignore[assignment]
    if text.strip() and not out and text.strip() != "ok":
        raise ValueError(f"multipathd did not list path states: {text.strip()[:80]!r}")
    return out


# -- a map's health from its paths ------------------------------------------------------------

UP_CHECKER = ("ready", "ghost")
# multipathd prints PATH_PENDING as "i/o pending" (still checking: not down) and PATH_TIMEOUT
# as "i/o timeout" (libmultipath/print.c, snprint_chk_state).
DOWN_CHECKER = ("faulty", "shaky", "down", "timeout", "i/o timeout", "disconnected")
PENDING_CHECKER = ("pending", "i/o pending")


@dataclass(frozen=True, slots=True)
class PathView:
    dev: str
    device_state: str               # the kernel's device state (sysfs), "unknown" if no LUN
    dm_state: str
    checker_state: str

    @property
    def down(self) -> bool:
        return (self.device_state not in ("running", UNKNOWN) or self.dm_state == "failed"
                or self.checker_state in DOWN_CHECKER)

    @property
    def known(self) -> bool:
        return UNKNOWN not in (self.device_state, self.dm_state, self.checker_state)

    @property
    def up(self) -> bool:
        """Can carry I/O; an unknown state does not count against a path."""
        return not self.down and self.checker_state in UP_CHECKER + (UNKNOWN,) + PENDING_CHECKER


def health(paths: list[PathView]) -> str:
    up = sum(p.up for p in paths)
    if up == 0:
        return "failed"
    if up < len(paths):
        return "degraded"
    return "healthy" if all(p.known for p in paths) else UNKNOWN


# -- the drop-in sanbusd manages ---------------------------------------------------------------

FIND_MULTIPATHS = ("strict", "no", "yes", "greedy", "smart")
_FIND_ALIASES = {"off": "no", "on": "yes"}
DEFAULT_FRIENDLY = False            # multipath-tools' defaults, shown when the drop-in is silent
DEFAULT_FIND = "strict"
HEADER = ("# Written by sanbusd (org.example.SanStorage.Manager.SetMultipathConfig).\n"
          "# Change it through sanbusd (sanctl multipath config); edits here are overwritten.\n")


@dataclass(frozen=True, slots=True)
class MultipathSettings:
    user_friendly_names: bool | None = None     # None: not set by sanbusd (multipath's default)
    find_multipaths: str | None = None
    include_wwids: tuple[str, ...] = ()
    exclude_wwids: tuple[str, ...] = ()

    def validated(self) -> "MultipathSettings":
        """The same settings checked and normalized; ValueError says what is wrong."""
        find = self.find_multipaths
        if find is not None:
            find = _FIND_ALIASES.get(find.strip().lower(), find.strip().lower())
            if find not in FIND_MULTIPATHS:
                raise ValueError(f"find_multipaths {self.find_multipaths[:40]!r} is not one of "
                                 + ", ".join(FIND_MULTIPATHS))
        inc = _wwid_list(self.include_wwids, "include_wwids")
        exc = _wwid_list(self.exclude_wwids, "exclude_wwids")
        both = sorted(set(inc) & set(exc))
        if both:
            raise ValueError(f"WWID {both[0]} is both included and excluded; give it in one "
                             "list only")
        return MultipathSettings(self.user_friendly_names, find, inc, exc)


def _wwid_list(values, what: str) -> tuple[str, ...]:
    if len(values) > 4096:
        raise ValueError(f"{what}: at most 4096 WWIDs")
    out: list[str] = []
    for v in values:
        try:
            w = mpath_wwid(v)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        if w in out:
            raise ValueError(f"{what}: WWID {w} is given twice")
        out.append(w)
    return tuple(out)


def render_dropin(s: MultipathSettings) -> str:
    """The drop-in in multipath.conf syntax. Including some WWIDs only is multipath's idiom:
    blacklist every WWID, except these."""
    out = [HEADER]
    defaults = []
    if s.user_friendly_names is not None:
        defaults.append(f"\tuser_friendly_names {'yes' if s.user_friendly_names else 'no'}\n")
    if s.find_multipaths is not None:
        defaults.append(f"\tfind_multipaths {s.find_multipaths}\n")
    if defaults:
        out += ["defaults {\n", *defaults, "}\n"]
    black = [f'\twwid "^{_rx(w)}$"\n' for w in s.exclude_wwids]
    if s.include_wwids:
        black.append('\twwid ".*"\n')
    if black:
        out += ["blacklist {\n", *black, "}\n"]
    if s.include_wwids:
        out += ["blacklist_exceptions {\n", *(f'\twwid "^{_rx(w)}$"\n' for w in s.include_wwids),
                "}\n"]
    return "".join(out)


def _rx(wwid: str) -> str:
    """A WWID as a regular expression matching only itself ("." is the one special character
    a WWID may hold)."""
    return wwid.replace(".", "\\.")


_LINE_RE = re.compile(r'^\s*(\w+)\s+"?([^"#]*?)"?\s*(?:#.*)?$')


def parse_dropin(text: str) -> MultipathSettings:
    """Read back a drop-in render_dropin wrote (tolerant: unknown lines are ignored)."""
    section = ""
    friendly: bool | None = None
    find: str | None = None
    black: list[str] = []
    exc: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            section = line[:-1].strip()
            continue
        if line == "}":
            section = ""
            continue
        m = _LINE_RE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        if section == "defaults" and key == "user_friendly_names":
            friendly = value.lower() in ("yes", "1", "on")
        elif section == "defaults" and key == "find_multipaths":
            find = _FIND_ALIASES.get(value.lower(), value.lower())
        elif section in ("blacklist", "blacklist_exceptions") and key == "wwid":
            w = value.removeprefix("^").removesuffix("$").replace("\\.", ".")
            (black if section == "blacklist" else exc).append(w)
    include = tuple(exc) if ".*" in black else ()
    exclude = tuple(w for w in black if w != ".*")
    return MultipathSettings(friendly, find, include, exclude)
