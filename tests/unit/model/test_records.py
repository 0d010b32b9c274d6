from sanbusd.model.records import Inventory, Lun, ScsiHost, diff
from sanbusd.model.ids import HCTL


def inv(*luns, hosts=(1,)):
    i = Inventory()
    for n in hosts:
        i.hosts[n] = ScsiHost(number=n, driver="lpfc")
    for lun in luns:
        i.luns[lun.hctl] = lun
    return i


def test_diff_names_added_removed_and_changed_records():
    a = inv(Lun(HCTL(1, 0, 0, 0), size=1), Lun(HCTL(1, 0, 0, 1)))
    b = inv(Lun(HCTL(1, 0, 0, 0), size=2), Lun(HCTL(1, 0, 0, 2)), hosts=(1, 2))
    d = diff(a, b)
    assert d.added["luns"] == {HCTL(1, 0, 0, 2)} and d.added["hosts"] == {2}
    assert d.removed["luns"] == {HCTL(1, 0, 0, 1)}
    assert d.changed["luns"] == {HCTL(1, 0, 0, 0)}
    assert not diff(a, a)


def test_diff_limited_to_touched_keys():
    a = inv(Lun(HCTL(1, 0, 0, 0)))
    b = inv(Lun(HCTL(1, 0, 0, 0), state="offline"), Lun(HCTL(1, 0, 0, 5)))
    d = diff(a, b, {"luns": {HCTL(1, 0, 0, 5)}})
    assert d.added["luns"] == {HCTL(1, 0, 0, 5)} and not d.changed["luns"]
