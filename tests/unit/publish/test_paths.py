from sanbusd.publish import paths
from sanbusd.model.ids import HCTL


def test_paths_are_built_from_kernel_ids_and_parse_back():
    assert paths.host(5) == "/org/example/SanStorage/hosts/host5"
    assert paths.lun(HCTL(1, 0, 2, 53)) == "/org/example/SanStorage/luns/1_0_2_53"
    assert paths.parse(paths.lun(HCTL(1, 0, 2, 53))) == ("lun", HCTL(1, 0, 2, 53))
    assert paths.parse(paths.host(7)) == ("host", 7)
    assert paths.parse(paths.vhba("2000000000000011")) == ("vhba", "2000000000000011")
    assert paths.parse(paths.MANAGER) == ("manager", None)
    assert paths.parse("/org/example/SanStorage/luns/x") is None
    assert paths.parse("/elsewhere") is None


def test_escaping_makes_any_wwid_a_legal_element_and_round_trips():
    for wwid in ("3600a098038303053453f463045727a31", "1Linux_scsi_debug_2000",
                 "t10.ATA     QEMU HARDDISK", "naa.5000c500a1b2c3d4", "", "é/../x"):
        element = paths.escape(wwid)
        assert element and all(c.isalnum() or c == "_" for c in element)
        assert paths.unescape(element) == wwid
        assert paths.parse(paths.multipath(wwid)) == ("multipath", wwid)
