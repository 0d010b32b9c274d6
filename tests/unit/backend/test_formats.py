"""Kernel formats, held to what a real kernel did (its errno for each refused write)."""

import errno

import pytest

from sanbusd.backend.writes import (SCAN_WILD_CARD, format_scan, parse_scan_write,
                                    parse_vport_write)
from sanbusd.model.ids import (HCTL, block_device_name, multipath_wwid, normalize_wwn,
                               parse_hctl, parse_size, sysfs_wwn, sysfs_wwn_text)

W = SCAN_WILD_CARD


@pytest.mark.parametrize("text", ["10000090FA1B2C01", "0x10000090fa1b2c01",
                                  "10:00:00:90:fa:1b:2c:01", " 10000090fa1b2c01 "])
def test_wwn_input_forms_normalize_to_libvirts_form(text):
    assert normalize_wwn(text) == "10000090fa1b2c01"


@pytest.mark.parametrize("text", ["", "1000", "10000090fa1b2c0g", "10000090fa1b2c011",
                                  "../../etc/passwd", "0x"])
def test_bad_wwns_are_refused_with_a_hint(text):
    with pytest.raises(ValueError, match="16 hex digits"):
        normalize_wwn(text)


def test_sysfs_wwn_pads_the_kernels_unpadded_hex():
    assert sysfs_wwn("0x100052540000000a\n") == "100052540000000a"
    assert sysfs_wwn("0x0") == "0000000000000000"
    assert sysfs_wwn("garbage") == ""
    assert sysfs_wwn_text("000052540000000a") == "0x52540000000a"


# (write, result) pairs observed on Debian's 6.1 kernel (fcoe host, max_lun < 99999)
KERNEL_SCAN = [
    ("- - -", (W, W, W)), ("- - -\n", (W, W, W)), ("0 0 0", (0, 0, 0)), ("0 0 5", (0, 0, 5)),
    ("0 0 010", (0, 0, 8)), ("0 0 0x1b", (0, 0, 27)), ("0 5 0", (0, 5, 0)), ("", None),
]
KERNEL_SCAN_EINVAL = ["1 2", "0 0 0 0", "x - -", "0 0 99999", "5 0 0", "0 0 -1", "0 0 08"]


@pytest.mark.parametrize("data,expected", KERNEL_SCAN)
def test_scan_parses_like_the_kernel(data, expected):
    assert parse_scan_write(data, max_channel=0, max_id=256, max_lun=65535, fc=True) == expected


@pytest.mark.parametrize("data", KERNEL_SCAN_EINVAL)
def test_scan_rejects_what_the_kernel_rejects(data):
    with pytest.raises(OSError) as e:
        parse_scan_write(data, max_channel=0, max_id=256, max_lun=65535, fc=True)
    assert e.value.errno == errno.EINVAL


def test_vport_create_format():
    assert parse_vport_write("2000000000000011:2000000000000012\n") == (
        "2000000000000011", "2000000000000012")
    for bad in ("bad", "0x2000000000000021:0x2000000000000022", "2000000000000021",
                "2000000000000021:200000000000002", "200000000000002g:2000000000000012"):
        with pytest.raises(OSError) as e:
            parse_vport_write(bad)
        assert e.value.errno == errno.EINVAL


def test_block_device_names_follow_sd_format_disk_name():
    assert [block_device_name(i) for i in (0, 25, 26, 701, 702)] == [
        "sda", "sdz", "sdaa", "sdzz", "sdaaa"]


def test_multipath_wwid_from_sysfs_wwid():
    assert multipath_wwid("naa.600a098038303053") == "3600a098038303053"
    assert multipath_wwid("eui.0025388b9100abcd") == "20025388b9100abcd"
    assert multipath_wwid("t10.ATA     disk") == "1ATA     disk"
    assert multipath_wwid("") == ""


def test_hctl_and_sizes():
    assert parse_hctl("1:0:2:53") == HCTL(1, 0, 2, 53)
    assert str(HCTL(1, 0, 2, 53)) == "1:0:2:53"
    assert parse_hctl("1:0:2") is None and parse_hctl("a:b:c:d") is None
    assert parse_size("10G") == 10 << 30 and parse_size("512M") == 512 << 20
    assert parse_size(4096) == 4096


def test_scan_strings_are_plain_decimal_and_parse_back():
    assert format_scan(0, 3, 27) == "0 3 27"
    assert format_scan(None, None, None) == "- - -"
    assert format_scan(0, None, 8) == "0 - 8"
    for ctl in ((0, 3, 27), (0, 10, 8), (None, 1, None)):
        parsed = parse_scan_write(format_scan(*ctl), 0, 256, 65535, fc=True)
        assert parsed == tuple(W if v is None else v for v in ctl)
