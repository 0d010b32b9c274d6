"""Object paths: built from kernel-unique IDs (host number, H:C:T:L, WWPN, WWID), escaped to
legal path elements, and parsed back. The one place that knows the path layout.

Parsing is strict: a path names an object only if building the path from what was parsed gives
the same path back, so near misses (`host01`, `host0_2`, `luns/1_0_0_027`) name nothing."""

from __future__ import annotations

from ..model.ids import HCTL, session_number

ROOT = "/org/example/SanStorage"
MANAGER = ROOT + "/Manager"
NO_OBJECT = "/"

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def escape(text: str) -> str:
    """Any string -> one legal object path element (as udisks_safe_append_to_object_path does:
    [A-Za-z0-9] stay, every other byte becomes _XX)."""
    if not text:
        return "_"
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append(c if c in _SAFE else f"_{b:02x}")
    return "".join(out)


def unescape(element: str) -> str:
    if element == "_":
        return ""
    raw = bytearray()
    i = 0
    while i < len(element):
        if element[i] == "_" and i + 3 <= len(element):
            raw.append(int(element[i + 1:i + 3], 16))
            i += 3
        else:
            raw.append(ord(element[i]))
            i += 1
    return raw.decode("utf-8", "replace")


def host(number: int) -> str:
    return f"{ROOT}/hosts/host{number}"


def lun(hctl: HCTL) -> str:
    return f"{ROOT}/luns/{hctl.host}_{hctl.channel}_{hctl.target}_{hctl.lun}"


def vhba(wwpn: str) -> str:
    return f"{ROOT}/vhbas/{wwpn}"


def multipath(wwid: str) -> str:
    return f"{ROOT}/multipath/{escape(wwid)}"


def session(name: str) -> str:
    return f"{ROOT}/iscsi/{name}"


def job(number: int) -> str:
    return f"{ROOT}/jobs/{number}"


def parse(path: str) -> tuple[str, object] | None:
    """An object path -> (kind, key): ("host", 5), ("lun", HCTL), ("vhba", wwpn),
    ("multipath", wwid), ("session", "sessionN"), ("job", n), ("manager", None); None for anything else, including
    paths that would name an object only after normalizing (leading zeros, wrong case)."""
    parsed = _parse_loose(path)
    if parsed is None or parsed[0] == "manager":
        return parsed
    kind, key = parsed
    return parsed if _BUILD[kind](key) == path else None  # type: ignore[operator]


def _parse_loose(path: str) -> tuple[str, object] | None:
    if path == MANAGER:
        return ("manager", None)
    if not path.startswith(ROOT + "/"):
        return None
    parts = path[len(ROOT) + 1:].split("/")
    if len(parts) != 2:
        return None
    coll, elem = parts
    try:
        if coll == "hosts" and elem.startswith("host") and elem[4:].isdigit():
            return ("host", int(elem[4:]))
        if coll == "luns":
            parts4 = elem.split("_")
            if len(parts4) != 4 or not all(x.isdigit() for x in parts4):
                return None
            h, c, t, l = (int(x) for x in parts4)
            return ("lun", HCTL(h, c, t, l))
        if coll == "vhbas":
            return ("vhba", elem)
        if coll == "multipath":
            return ("multipath", unescape(elem))
        if coll == "iscsi" and session_number(elem) is not None:
            return ("session", elem)
        if coll == "jobs" and elem.isdigit():
            return ("job", int(elem))
    except ValueError:
        return None
    return None


_BUILD = {"host": host, "lun": lun, "vhba": vhba, "multipath": multipath, "session": session,
          "job": job}
