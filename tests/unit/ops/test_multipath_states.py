"""What sanbusd asks multipathd while it re-reads maps, and how it notices a checker's verdict:
few maps one by one, many in one answer; a multipathd that does not answer is left alone for a
while (kernel events must keep flowing); the poller's compact path states against a record."""


from sanbusd.backend.multipathd import MultipathdAbsent, MultipathdTimeout
from sanbusd.model.multipath import (UNKNOWN, MapStatus, PathStatus, parse_path_states)
from sanbusd.model.records import MultipathMap
from sanbusd.ops.multipath import MultipathdStates, _states_match


class FakeClient:
    timeout = 30.0

    def __init__(self, fail=None):
        self.asked: list[str] = []
        self.fail = fail

    def map(self, dm, timeout=None):
        self.asked.append(f"map {dm}")
        if self.fail:
            raise self.fail
        return MapStatus(name="m" + dm, wwid="w" + dm, dm=dm)

    def maps(self, timeout=None):
        self.asked.append("maps")
        if self.fail:
            raise self.fail
        return {f"dm-{i}": MapStatus(name=f"m{i}", wwid=f"w{i}", dm=f"dm-{i}") for i in range(300)}


def test_few_maps_are_asked_one_by_one_many_in_one_answer():
    c = FakeClient()
    reports = []
    s = MultipathdStates(c, reports.append)
    s.prefetch({"dm-1", "dm-2"})
    assert c.asked == ["map dm-1", "map dm-2"] and s.get("dm-2").name == "mdm-2"
    c.asked.clear()
    s.prefetch({f"dm-{i}" for i in range(300)}, 300)
    assert c.asked == ["maps"] and s.get("dm-299").wwid == "w299"
    c.asked.clear()
    s.prefetch({f"dm-{i}" for i in range(300)}, 8192)      # a burst of new maps among many
    assert len(c.asked) == 300 and "maps" not in c.asked
    assert reports[-1] == "running"


def test_a_hung_multipathd_is_left_alone_for_a_while_an_absent_one_is_asked_again():
    c = FakeClient(fail=MultipathdTimeout("no answer"))
    reports = []
    s = MultipathdStates(c, reports.append, backoff=10.0)
    s.prefetch({"dm-1"})
    s.prefetch({"dm-1"})
    assert c.asked == ["map dm-1"], "a hung multipathd must cost one wait, not one per re-read"
    assert reports == ["not-responding", ] and s.get("dm-1") is None
    s.answered()                    # the poller heard it again
    c.fail = None
    s.prefetch({"dm-1"})
    assert s.get("dm-1") is not None

    c = FakeClient(fail=MultipathdAbsent("not running"))
    s = MultipathdStates(c, reports.append)
    s.prefetch({"dm-1"})
    s.prefetch({"dm-1"})
    assert len(c.asked) == 2 and reports[-1] == "absent"


def _map(*states):
    return MultipathMap("dm-0", "mpatha", "36001", 1, tuple(d for d, *_ in states),
                        path_states=tuple(PathStatus(d, dm, chk, dev) for d, dm, chk, dev in states),
                        known=True)


def test_the_poller_notices_a_path_state_multipathd_changed():
    m = _map(("sdb", "active", "ready", "running"), ("sdc", "active", "ready", "running"))
    same = parse_path_states("sdb active ready running\nsdc active ready running\n"
                             "sdz undef undef running\n")
    assert same["sdz"] == (UNKNOWN, UNKNOWN, "running")
    assert _states_match(m, same)
    failed = parse_path_states("sdb failed faulty offline\nsdc active ready running\n")
    assert not _states_match(m, failed)
    assert not _states_match(MultipathMap("dm-0", slaves=("sdb",)), same), \
        "a map read while multipathd was away must be read again once it answers"
