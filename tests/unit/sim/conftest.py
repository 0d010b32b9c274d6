"""The simulated SAN of the demo fabric, without a daemon: scans instant, events collected."""

from __future__ import annotations

import pytest

from sanbus_testing import DEMO_FABRIC

from sanbusd.sim.fabric import load_fabric
from sanbusd.sim.san import SimulatedSan


@pytest.fixture
def sim(tmp_path):
    s = SimulatedSan(load_fabric(DEMO_FABRIC), tmp_path / "sys")
    s.fabric.scan_delay = 0
    s.build()
    s.events = []                   # every uevent it sent, in order
    s.set_event_sink(s.events.extend)
    yield s
    s.close()
