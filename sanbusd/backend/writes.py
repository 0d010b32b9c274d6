"""The strings sanbusd writes to sysfs, both ways: formatted by the kernel adapter, parsed back
exactly as the kernel parses them by the simulated SAN (so the simulation refuses what the kernel
refuses, with the same errno).

`scan` is parsed with sscanf and base-0 simple_strtoull ("010" is 8, so sanbusd always writes plain
decimal); `vport_create`/`vport_delete` take exactly "<16 hex wwpn>:<16 hex wwnn>".
"""

from __future__ import annotations

import errno

from ..model.ids import HEX16_RE


def format_scan(channel: int | None, target: int | None, lun: int | None) -> str:
    """A `scan` write: "C T L", each a plain decimal number or "-" for all."""
    return " ".join("-" if v is None else str(int(v)) for v in (channel, target, lun))


def format_vport(wwpn: str, wwnn: str) -> str:
    return f"{wwpn}:{wwnn}"


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
    if not (HEX16_RE.match(wwpn) and HEX16_RE.match(wwnn)):
        raise _kernel_oserror(errno.EINVAL, "vport WWN is not 16 hex digits")
    return wwpn, wwnn
