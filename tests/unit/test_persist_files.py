"""persist.write_json: a crash at any moment leaves the old file or the new one, never a torn one.

A child process rewrites the file in a loop between two versions and is killed with SIGKILL at
random moments; every time, what is on disk must parse and be one of the two versions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from sanbusd import persist

WRITER = """
import sys
from sanbusd import persist
path = sys.argv[1]
a = {"vhbas": [{"wwpn": "5001a4a0%08x" % i, "wwnn": "x" * 200} for i in range(300)]}
b = {"vhbas": [{"wwpn": "5001a4a1%08x" % i, "wwnn": "y" * 200} for i in range(301)]}
persist.write_json(path, a)
print("ready", flush=True)
while True:
    persist.write_json(path, b)
    persist.write_json(path, a)
"""


def test_killing_the_writer_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "state" / "vhbas.json"
    rng = random.Random(os.getpid())
    seen_versions = set()
    for _ in range(25):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        data = json.loads(path.read_text())          # never torn
        assert len(data["vhbas"]) in (300, 301)
        seen_versions.add(len(data["vhbas"]))
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    leftovers = [f for f in os.listdir(path.parent) if f != "vhbas.json"]
    # a kill between mkstemp and rename may leave a temporary file; it is never read
    assert all(f.startswith(".vhbas.json.") for f in leftovers)


def test_read_json_says_which_file_is_corrupt(tmp_path):
    f = tmp_path / "x.json"
    assert persist.read_json(f) is None
    f.write_text("{")
    try:
        persist.read_json(f)
    except ValueError as e:
        assert str(f) in str(e) and "corrupt" in str(e)
    else:
        raise AssertionError("corrupt JSON was accepted")
