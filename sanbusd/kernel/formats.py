"""Pure functions for the kernel's sysfs formats (no I/O).

The facts behind each one are in the kernel sources cited in shared/reference/kernel-san.md:
fc_host/rport names are printed "0x%llx" (not zero-padded), `scan` is parsed with sscanf + base-0
simple_strtoull, `vport_create` takes exactly "<16 hex>:<16 hex>".
"""

from __future__ import annotations

import errno
import re
from typing import NamedTuple

from ..errors import InvalidArgument


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
_TARGET_RE = re.compile(r"^target(\d+):(\d+):(\d+)$")
_HEX16_RE = re.compile(r"^[0-9a-f]{16}$")


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


def parse_target_name(name: str) -> tuple[int, int, int] | None:
    m = _TARGET_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


# --- WWNs -------------------------------------------------------------------------------------

def normalize_wwn(text: str, what: str = "WWN") -> str:
    """Caller input -> libvirt's form (16 lower-case hex digits). Accepts 0x, colons, upper case."""
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be a string of 16 hex digits")
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    s = s.replace(":", "")
    if not _HEX16_RE.match(s):
        raise InvalidArgument(
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


# --- Kernel write formats (the simulated SAN parses exactly as the kernel does) ---------------

SCAN_WILD_CARD = -1


def _kernel_oserror(code: int, what: str) -> OSError:
    return OSError(code, f"{what}: {errno.errorcode[code]}")


def _strtoull_base0(token: str) -> int | None:
    """simple_strtoull(tok, &last, 0) and the kernel's "no junk after the number" check."""
    t = token
    try:
        if t.startswith(("0x", "0X")) and len(t) > 2:
            return int(t[2:], 16)
        if t.startswith("0") and len(t) > 1:
            return int(t[1:], 8)
        return int(t, 10)
    except ValueError:
        return None


def parse_scan_write(data: str, max_channel: int, max_id: int, max_lun: int,
                     fc: bool = False) -> tuple[int, int, int] | None:
    """Parse a write to scsi_host/hostN/scan as scsi_sysfs.c scsi_scan() does.

    Returns (channel, id, lun) with SCAN_WILD_CARD for "-", or None for the empty write (which
    the kernel accepts and does nothing with). Raises OSError(EINVAL) exactly where it does."""
    tokens = data.split()
    if not tokens:
        return None
    if len(tokens) != 3:
        raise _kernel_oserror(errno.EINVAL, "scan needs exactly 3 tokens")
    values = []
    for tok in tokens:
        if tok == "-":
            values.append(SCAN_WILD_CARD)
            continue
        v = _strtoull_base0(tok)
        if v is None or v < 0:
            raise _kernel_oserror(errno.EINVAL, f"bad scan token {tok!r}")
        values.append(v)
    c, t, lun = values
    if c != SCAN_WILD_CARD and c > max_channel:
        raise _kernel_oserror(errno.EINVAL, "channel out of range")
    if t != SCAN_WILD_CARD and t >= max_id:
        raise _kernel_oserror(errno.EINVAL, "id out of range")
    if lun != SCAN_WILD_CARD and (lun > max_lun if fc else lun >= max_lun):
        raise _kernel_oserror(errno.EINVAL, "lun out of range")
    return c, t, lun


def parse_vport_write(data: str) -> tuple[str, str]:
    """Parse "<wwpn>:<wwnn>" as fc_parse_wwn/store_fc_host_vport_create do: length 33 (+\\n)."""
    s = data[:-1] if data.endswith("\n") else data
    if len(s) != 33 or s[16] != ":":
        raise _kernel_oserror(errno.EINVAL, "vport string must be <16 hex>:<16 hex>")
    wwpn, wwnn = s[:16].lower(), s[17:].lower()
    if not (_HEX16_RE.match(wwpn) and _HEX16_RE.match(wwnn)):
        raise _kernel_oserror(errno.EINVAL, "vport WWN is not 16 hex digits")
    return wwpn, wwnn


def block_device_name(index: int) -> str:
    """sd_format_disk_name(): 0 -> sda, 25 -> sdz, 26 -> sdaa, 701 -> sdzz, 702 -> sdaaa."""
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            break
    return "sd" + letters


def parse_roles(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def parse_size(text: str | int) -> int:
    """"10G", "512M", "2T", "4096" -> bytes (powers of 1024), for fabric files."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:] if s else "", 1)
    if mult != 1:
        s = s[:-1]
    return int(float(s) * mult)
