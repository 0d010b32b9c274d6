"""Identifiers and the kernel's read formats, as pure functions (no I/O, no D-Bus).

HCTL addresses, device names (hostN, rport-H:C-N, vport-H:C-N, targetH:C:T), WWNs and WWIDs. The
kernel prints fc_host/rport names as "0x%llx" (not zero-padded); callers may write WWNs with 0x,
colons or upper case. Parsers of caller input raise ValueError with a message that says what to
give instead; the D-Bus boundary turns it into InvalidArgument.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class HCTL(NamedTuple):
    host: int
    channel: int
    target: int
    lun: int

    def __str__(self) -> str:
        return f"{self.host}:{self.channel}:{self.target}:{self.lun}"


_HCTL_RE = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_HOST_RE = re.compile(r"^host(\d+)$")
_RPORT_RE = re.compile(r"^rport-(\d+):(\d+)-(\d+)$")
_VPORT_RE = re.compile(r"^vport-(\d+):(\d+)-(\d+)$")
_SESSION_RE = re.compile(r"^session([1-9]\d*)$")
_TARGET_RE = re.compile(r"^target(\d+):(\d+):(\d+)$")
HEX16_RE = re.compile(r"^[0-9a-f]{16}$")


def parse_hctl(text: str) -> HCTL | None:
    m = _HCTL_RE.match(text)
    return HCTL(*map(int, m.groups())) if m else None


def host_number(name: str) -> int | None:
    m = _HOST_RE.match(name)
    return int(m.group(1)) if m else None


def parse_rport_name(name: str) -> tuple[int, int, int] | None:
    m = _RPORT_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def parse_vport_name(name: str) -> tuple[int, int, int] | None:
    m = _VPORT_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def session_number(name: str) -> int | None:
    """sessionN (iSCSI session numbers start at 1) -> N."""
    m = _SESSION_RE.match(name)
    return int(m.group(1)) if m else None


def parse_target_name(name: str) -> tuple[int, int, int] | None:
    m = _TARGET_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


# --- WWNs -------------------------------------------------------------------------------------

def normalize_wwn(text: str, what: str = "WWN") -> str:
    """Caller input -> libvirt's form (16 lower-case hex digits). Accepts 0x, colons, upper case."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string of 16 hex digits")
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    s = s.replace(":", "")
    if not HEX16_RE.match(s):
        raise ValueError(
            f"{what} {text[:40]!r} is not a WWN: give 16 hex digits, e.g. 10000000c9a1b2c3 "
            "(0x prefix and colons are accepted)")
    return s


def sysfs_wwn(text: str) -> str:
    """A sysfs "0x%llx" value -> 16 hex digits; "" when absent or unparsable."""
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    if not s or len(s) > 16 or any(c not in "0123456789abcdef" for c in s):
        return ""
    return s.rjust(16, "0")


def sysfs_wwn_text(wwn: str) -> str:
    """16 hex digits -> what the kernel prints ("0x%llx")."""
    return f"0x{int(wwn, 16):x}"


def fabric_known(fabric_wwn: str) -> bool:
    return fabric_wwn not in ("", "0000000000000000", "ffffffffffffffff")


# --- WWIDs ------------------------------------------------------------------------------------

_WWID_TYPE_DIGIT = {"t10.": "1", "eui.": "2", "naa.": "3"}


def multipath_wwid(sysfs_wwid: str) -> str:
    """The `device/wwid` form (naa.600a...) -> the udev/multipath form (3600a...).

    As os-brick's get_sysfs_wwid does (prefix -> designator type digit). Note: multipath may
    use udev's ID_SERIAL instead, so maps are linked to paths through holders/, never by this."""
    w = sysfs_wwid.strip()
    for prefix, digit in _WWID_TYPE_DIGIT.items():
        if w.startswith(prefix):
            return digit + w[len(prefix):]
    return ("8" + w) if w else ""


def parse_roles(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def parse_size(text: str | int) -> int:
    """"10G", "512M", "2T", "4096" -> bytes (powers of 1024), more than 0; ValueError
    otherwise, saying what to give."""
    try:
        if isinstance(text, bool) or not isinstance(text, (str, int)):
            raise ValueError
        if isinstance(text, int):
            size = text
        else:
            s = text.strip().upper().removesuffix("B").removesuffix("I")
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
            if mult != 1:
                s = s[:-1]
            size = int(float(s) * mult)
    except (ValueError, OverflowError):
        raise ValueError(f"size {text!r} is not a size: give bytes or a number with K, M, G "
                         "or T, e.g. 10G") from None
    if size <= 0:
        raise ValueError(f"size {text!r} must be more than 0")
    return size


def letters(index: int) -> str:
    """The kernel's and multipath's bijective base-26 names: 0 -> a, 25 -> z, 26 -> aa."""
    out = ""
    n = index
    while True:
        out = chr(ord("a") + n % 26) + out
        n = n // 26 - 1
        if n < 0:
            return out


def block_device_name(index: int) -> str:
    """sd_format_disk_name(): 0 -> sda, 25 -> sdz, 26 -> sdaa, 701 -> sdzz, 702 -> sdaaa."""
    return "sd" + letters(index)
