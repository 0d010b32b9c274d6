"""Conformance: the simulated SAN gives the same object tree as the real kernel, scenario by scenario.

For every scenario and checkpoint, the guest recorded sanbusd's tree on the real kernel; here
sanbusd runs on the simulated SAN built from the same scenario description (``Scenario.fabric``),
on a private system bus with polkitd (tests/conftest.py's system_bus, sanbus_testing.start_daemon),
and the two trees are compared after sanview.normalize, which drops only what legitimately differs
(host numbering, sdX names, UniqueId, the Manager object; see there). A difference means the
simulation is wrong about the kernel: fix sanbusd/kernel/sim.py or fabric.py, not this test.

Scenarios with a story (``Scenario.simulate``, e.g. fc_discover) are also *replayed*: sanbusd starts
on ``fabric(INITIAL)``, the SAN admin's steps go through the simulated SAN's control socket (what
``sanbusd-sim provision`` does), the VM admin's calls and ``sanctl`` go to sanbusd, and the trees at
the story's checkpoints and its records (ScanAll answers, errors, sanctl output) must equal the
kernel's, after sanview.normalize / normalize_refs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sanbus_testing import start_daemon  # tests/conftest.py puts tests/ on sys.path

import sanview
import scenarios
from sanscenario import INITIAL, ScenarioRun, to_toml
from simstory import SimContext

pytestmark = pytest.mark.kernel_lab

CASES = [(name, cp) for name, s in scenarios.ALL.items() for cp in s.laid_out_checkpoints()]
STORIES = [name for name, s in scenarios.ALL.items() if s.has_story()]


def simulated_tree(bus, tmp_path: Path, fabric: dict) -> sanview.Tree:
    path = tmp_path / "fabric.toml"
    path.write_text(to_toml(fabric))
    daemon = start_daemon(bus, tmp_path, path)
    try:
        out = subprocess.run(
            ["busctl", f"--address={bus.address}", "--json=short", "call", "org.example.SanStorage",
             sanview.ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"],
            capture_output=True, text=True, check=True, timeout=60).stdout
    finally:
        rc = daemon.stop()
    log = daemon.log()
    assert rc == 0 and "Traceback" not in log, log
    return sanview.plain_busctl(json.loads(out))


@pytest.mark.parametrize(("scenario", "checkpoint"), CASES, ids=[f"{n}-{cp}" for n, cp in CASES])
def test_kernel_and_simulated_san_give_the_same_tree(
        scenario: str, checkpoint: str, scenario_run: Callable[[str], ScenarioRun], system_bus,
        tmp_path: Path) -> None:
    run = scenario_run(scenario)
    hosts = run.hosts(checkpoint)
    assert hosts, run.describe()
    kernel = sanview.normalize(run.snapshot(checkpoint)["objects"], hosts)

    simulated_raw = simulated_tree(system_bus, tmp_path, scenarios.ALL[scenario].fabric(checkpoint))
    sim_hosts = [o[sanview.HOST_I]["Number"] for p, o in simulated_raw.items() if "/hosts/" in p]
    simulated = sanview.normalize(simulated_raw, sim_hosts)

    assert sanview.tree_differences(kernel, simulated) == []
    # not vacuous: every host of the scenario and all its LUNs were compared
    assert len([p for p in kernel if "/hosts/" in p]) == len(hosts)
    assert len([p for p in kernel if "/luns/" in p]) == len(
        [p for p, o in run.snapshot(checkpoint)["objects"].items()
         if "/luns/" in p and int(o[sanview.LUN_I]["HCTL"].split(":")[0]) in hosts]) > 0


# --------------------------------------------------------------------------------------------
# Stories, replayed on the simulated SAN


STORY_CHECKPOINTS = [(name, cp) for name in STORIES for cp in scenarios.ALL[name].replayed_checkpoints()]


def test_every_story_check_holds_on_the_simulated_san_too(story_replay: Callable[[str], SimContext]) -> None:
    for name in STORIES:
        assert story_replay(name).failed == [], name


@pytest.mark.parametrize(("scenario", "checkpoint"), STORY_CHECKPOINTS,
                         ids=[f"{n}-{cp}" for n, cp in STORY_CHECKPOINTS])
def test_the_story_gives_the_same_tree_on_the_simulated_san(
        scenario: str, checkpoint: str, scenario_run: Callable[[str], ScenarioRun],
        story_replay: Callable[[str], SimContext]) -> None:
    run = scenario_run(scenario)
    sim = story_replay(scenario)
    kernel = sanview.normalize(run.snapshot(checkpoint)["objects"], run.hosts(checkpoint))
    simulated = sanview.normalize(sim.trees[checkpoint], sim.hosts(checkpoint))
    assert sanview.tree_differences(kernel, simulated) == []
    assert [p for p in kernel if "/luns/" in p]  # not vacuous
    assert len([p for p in kernel if "/hosts/" in p]) == len(run.hosts(checkpoint))


@pytest.mark.parametrize("scenario", STORIES)
def test_the_story_records_the_same_answers_on_the_simulated_san(
        scenario: str, scenario_run: Callable[[str], ScenarioRun], story_replay: Callable[[str], SimContext]) -> None:
    """ScanAll's answers, the errors for bad input, what Delete did, sanctl's output: the same."""
    run = scenario_run(scenario)
    sim = story_replay(scenario)
    sim_hosts = sim.hosts(scenarios.ALL[scenario].replayed_checkpoints()[-1])
    records = scenarios.ALL[scenario].story_records
    assert records
    for key in records:
        kernel = sanview.normalize_refs(run.data[key], run.hosts(INITIAL))
        simulated = sanview.normalize_refs(sim.data[key], sim_hosts)
        assert kernel == simulated, key
