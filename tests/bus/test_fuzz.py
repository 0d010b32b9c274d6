"""Fuzzing the boundary: thousands of malformed calls over every method.

Every call is invalid by construction (wrong signature, wrong variant type, unknown option key,
out-of-range or huge values, hostile strings, malformed or unknown WWIDs, invalid multipath
settings, objects/members/interfaces that do not exist, paths that only look like a real object's:
host01, host1_2, luns/1_0_0_00, jobs/01, LUNS/..., multipath/mpathb...), so nothing may change:
the simulated SAN records no sysfs write, no multipath map is made or flushed, and sanbusd's
multipath drop-in is not written; every answer must be a declared error; the daemon must stay up
and answer. Valid privileged calls are also sent as an unauthorized user: denied, nothing
written. Each run draws a new seed, printed (and in every failure message); replay a run with
SANBUSD_FUZZ_SEED=N (the calls depend on the seed alone: tested below).
"""

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

from sanbus_testing import ROOT, run, wait_until

from sanbusd.errors import ALL_ERRORS, ERROR_PREFIX
from sanbusd.bus.contract import load_api

HERE = Path(__file__).parent
CALLS = int(os.environ.get("SANBUSD_FUZZ_CALLS", "12000"))
REPLY_TIMEOUT = 60          # s for one answer; a call left unanswered is a failure, not a hang
DECLARED = {ERROR_PREFIX + e.name for e in ALL_ERRORS} | {
    f"org.freedesktop.DBus.Error.{n}" for n in (
        "InvalidArgs", "UnknownMethod", "UnknownObject", "UnknownInterface", "UnknownProperty",
        "PropertyReadOnly")}
# The demo array's LUN 1 (two paths): the fuzzed daemon has a map for it, made by the SAN admin
# before fuzzing (as `multipath WWID` would), so MultipathMap.Flush has a real target.
LUN1_WWID = "naa.60014050000000000000000000000001"
MAP = f"{ROOT}/multipath/3{LUN1_WWID[4:]}"
OBJECTS = [f"{ROOT}/Manager", f"{ROOT}/hosts/host1", f"{ROOT}/hosts/host3",
           f"{ROOT}/luns/1_0_0_0", f"{ROOT}/luns/2_0_0_2", f"{ROOT}/jobs/1", MAP]
HOSTILE = ["../../../../etc/passwd", "/dev/../../etc/shadow", "- - -", "0 0 0", "\x01\x02\x1b[31m",
           "x" * 100_000, "é\u202e\u0000".replace("\u0000", ""), "host1; rm -rf /", "$(reboot)",
           "", " ", "\n", "2000000000000011:2000000000000012", "0x" + "f" * 40, "-1", "1e9"]
WRONG_VALUES = {"at": [("as", ["27"]), ("u", 27), ("ai", [27]), ("s", "27,28")],
                "as": [("s", LUN1_WWID), ("ao", [f"{ROOT}/luns/1_0_0_1"]), ("ay", b"3600"),
                       ("at", [1])],
                "ao": [("as", ["host1"]), ("o", f"{ROOT}/hosts/host1"), ("s", "host1")],
                "u": [("s", "5"), ("i", -1), ("t", 5), ("d", 1.5), ("b", True)],
                "b": [("s", "true"), ("u", 1), ("i", 1)],
                "s": [("u", 5), ("as", ["5001a4a000000011"]), ("o", "/x"), ("ay", b"5001")],
                "o": [("s", f"{ROOT}/hosts/host1"), ("ao", [f"{ROOT}/hosts/host1"]),
                      ("u", 1)]}


def junk_string(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(HOSTILE)
    n = rng.choice([1, 5, 50, 5000])
    return "".join(chr(rng.choice([rng.randrange(1, 32), rng.randrange(32, 127),
                                   rng.randrange(0x80, 0x2FFF)])) for _ in range(n))


def bad_wwid(rng: random.Random) -> str:
    """A WWID in neither form sanbusd takes (naa.<hex>, eui.<hex>, t10.<text>, or multipath's one
    word of letters, digits and _.:-, up to 128 characters)."""
    if rng.random() < 0.3:
        # a character no WWID has, between two that a WWID may have (strip() would take a
        # blank away at either end)
        return ("x" + junk_string(rng)[:60] + rng.choice([" ", "\t", '"', "'", "\n", "*", "/"])
                + "x")
    return rng.choice(["", " ", "naa.", "naa.6001405g", "naa.6001405 0", "eui.xyz", "3600 1",
                       '36001"', "3" * 129, "-36001405", ".36001405", "36001405$", "naa.6001*",
                       "^36001405$", "3600140[0-9]", "t10.", "../etc", "36001405\x01"])


# WWIDs well formed but of no LUN here (CreateAllMultipathMaps: NotFound).
UNKNOWN_WWIDS = ["naa.600140500000000000000000000000ff", "36001405ffffffffffffffffffffffff0",
                 "eui.0011223344556677", "1Linux_scsi_debug_nowhere"]


def bad_config(rng: random.Random) -> dict:
    """SetMultipathConfig settings that must be refused (InvalidArgs or InvalidArgument)."""
    wwid = rng.choice([LUN1_WWID, "3" + LUN1_WWID[4:]])
    other = "3" + LUN1_WWID[4:] if wwid == LUN1_WWID else LUN1_WWID     # the same, other form
    return rng.choice([
        {"find_multipaths": Variant("s", rng.choice(["bogus", "stricter", "yes no", "NOPE",
                                                      junk_string(rng)[:50] + "!"]))},
        {"include_wwids": Variant("as", [bad_wwid(rng)])},
        {"exclude_wwids": Variant("as", [wwid, bad_wwid(rng)])},
        {"exclude_wwids": Variant("as", [wwid, other])},                # duplicate
        {"include_wwids": Variant("as", [wwid, wwid])},
        {"include_wwids": Variant("as", [wwid]), "exclude_wwids": Variant("as", [other])},
        {"include_wwids": Variant("as", [f"36001405{n:025x}" for n in range(4097)])},
        {"user_friendly_names": Variant(*rng.choice([("s", "no"), ("u", 0), ("i", 1)]))},
        {"find_multipaths": Variant(*rng.choice([("b", False), ("as", ["strict"])]))},
        {"include_wwids": Variant(*rng.choice([("s", wwid), ("ao", [MAP])]))},
        {rng.choice(["friendly_names", "UserFriendlyNames", "blacklist", "",
                     junk_string(rng)[:200] or "k"]): Variant("b", False)},
        {"user_friendly_names": Variant("b", False), "polling_interval": Variant("u", 5)},
        {}])


def junk_path(rng: random.Random) -> str:
    elems = ["".join(rng.choice("abcXYZ019_") for _ in range(rng.randrange(1, 12)))
             for _ in range(rng.randrange(1, 5))]
    return rng.choice([ROOT + "/", ROOT + "/hosts/", ROOT + "/luns/", "/"]) + "/".join(elems)


def near_miss(rng: random.Random, kind: str) -> str:
    """A path one edit away from a real object's (the demo's host1, LUN 1:0:0:0, a job, LUN 1's
    multipath map), which strict parsing must not take for it: leading zeros, an extra _N, wrong
    case, a missing or extra element, a map's name or dm-N instead of its WWID."""
    if kind == "host":
        elem = rng.choice(["host01", "host001", "host1_2", "host0_2", "host1_0", "Host1",
                           "HOST1", "host", "host_1", "host1a", "hosts1"])
        coll = rng.choice(["hosts"] * 4 + ["Hosts", "HOSTS", "host"])
    elif kind == "lun":
        elem = rng.choice(["1_0_0_00", "01_0_0_0", "1_00_0_0", "1_0_00_0", "1_0_0_0_0",
                           "1_0_0", "1_0_0_0_", "_1_0_0_0", "1__0_0_0", "2_0_0_02"])
        coll = rng.choice(["luns"] * 4 + ["Luns", "LUNS", "lun"])
    elif kind == "map":
        w = MAP.rsplit("/", 1)[1]                    # 360014050000000000000000000000001
        elem = rng.choice([w + "1", "0" + w, w[:-1], w + "_", w[:-1] + "0", "_" + w, w + "_0",
                           "mpathb", "MPATHB", "dm_2d1", "dm1", "naa_2e6" + w[2:], "3", "_33"])
        coll = rng.choice(["multipath"] * 4 + ["Multipath", "multipaths", "mpath"])
    elif kind == "vhba":
        elem = rng.choice(["5001A4A0AA000001", "05001a4a0aa000001", "0x5001a4a0aa000001",
                           "5001a4a0aa00000", "5001a4a0aa000001_", "5001a4a0aa0000011"])
        coll = rng.choice(["vhbas"] * 4 + ["Vhbas", "vhba"])
    else:
        elem = rng.choice(["01", "001", "1_0", "1_1", "0x1", "one", "_31"])
        coll = rng.choice(["jobs"] * 4 + ["Jobs", "JOBS", "job"])
    return f"{ROOT}/{coll}/{elem}"


def methods():
    api = load_api()
    for iface in api.interfaces.values():
        for m in iface.methods.values():
            yield iface.name, m


def fuzz_targets() -> list:
    """(interface, method, a real object of that interface) for every method."""
    paths = {"org.example.SanStorage.Manager": f"{ROOT}/Manager",
             "org.example.SanStorage.ScsiHost": f"{ROOT}/hosts/host1",
             "org.example.SanStorage.Lun": f"{ROOT}/luns/1_0_0_0",
             "org.example.SanStorage.Job": f"{ROOT}/jobs/1",
             "org.example.SanStorage.FcHost": f"{ROOT}/hosts/host1",
             "org.example.SanStorage.Vhba": f"{ROOT}/vhbas/5001a4a0aa000001",
             "org.example.SanStorage.MultipathMap": MAP}
    return [(i, m, paths[i]) for i, m in methods()]


def options_of(member: str) -> dict[str, str]:
    from sanbusd.authz.registry import declared
    from sanbusd.daemon import API_CLASSES
    for (i, m), (_name, spec) in declared(*API_CLASSES).items():
        if m == member:
            return {"auth.no_user_interaction": "b", **spec.options}
    return {"auth.no_user_interaction": "b"}


def invalid_call(rng: random.Random, targets: list) -> tuple[str, Message]:
    """One call that must be refused; returns (kind, message)."""
    iface, m, path = rng.choice(targets)
    kind = rng.choice(["signature", "unknown-key", "wrong-type", "range", "object", "member",
                       "interface", "devspec", "properties", "near-miss"])
    opts = options_of(m.name)
    body: list = []
    sig = m.in_signature
    if kind == "signature":
        sig, body = rng.choice([("s", [junk_string(rng)]), ("", []), ("u", [7]),
                                ("a{sv}a{sv}a{sv}", [{}, {}, {}]), ("as", [["a"] * 10]),
                                ("a{ss}", [{"luns": "27"}]), ("v", [Variant("s", "x")])])
        if sig == m.in_signature:
            sig, body = "u", [1]
    elif kind == "unknown-key":
        key = junk_string(rng)[:300] or "?"
        while key in opts:
            key += "!"
        body = [{key: Variant("s", junk_string(rng))}]
    elif kind == "wrong-type":
        key = rng.choice(sorted(opts))
        vsig, value = rng.choice(WRONG_VALUES[opts[key]])
        body = [{key: Variant(vsig, value)}]
    elif kind == "range":
        choices = []
        if "luns" in opts:
            choices += [{"luns": Variant("at", [rng.randrange(16384, 2**64)])},
                        {"luns": Variant("at", [])},
                        {"luns": Variant("at", list(range(rng.choice([4097, 50_000]))))}]
        if "timeout" in opts:
            choices += [{"timeout": Variant("u", rng.choice([0, 3601, 2**32 - 1]))}]
        if "channel" in opts:
            choices += [{"channel": Variant("u", rng.randrange(256, 2**32))}]
        if "target" in opts:
            choices += [{"target": Variant("u", rng.randrange(65536, 2**32))}]
        for key in ("wwpn", "wwnn", "parent_wwnn", "parent_wwpn", "fabric_wwn"):
            if key in opts:
                choices += [{key: Variant("s", junk_string(rng)[:40] or "x")},
                            {key: Variant("s", "0x" + "f" * rng.choice([15, 17]))}]
        if "wwids" in opts:
            choices += [{"wwids": Variant("as", [bad_wwid(rng)])},
                        {"wwids": Variant("as", [LUN1_WWID, bad_wwid(rng)])},
                        {"wwids": Variant("as", [])},
                        {"wwids": Variant("as", [rng.choice(UNKNOWN_WWIDS)])},
                        {"wwids": Variant("as", [LUN1_WWID, rng.choice(UNKNOWN_WWIDS)])},
                        {"wwids": Variant("as", [LUN1_WWID]), "all_eligible": Variant("b", True)},
                        {"timeout": Variant("u", rng.choice([0, 601])),
                         "all_eligible": Variant("b", rng.random() < 0.5)}]
        if m.name == "SetMultipathConfig":
            return kind, Message(destination="org.example.SanStorage", path=path,
                                 interface=iface, member=m.name, signature=sig,
                                 body=[bad_config(rng), rng.choice([{}, {
                                     "auth.no_user_interaction": Variant("b", True)}])])
        if "wait" in opts:
            choices += [{"wait": Variant("u", rng.choice([0, 601, 2**32 - 1]))}]
        if "parent" in opts:
            choices += [{"parent": Variant("o", junk_path(rng))},
                        {"parent": Variant("o", f"{ROOT}/hosts/host0")},      # SAS: no NPIV
                        {"parent": Variant("o", f"{ROOT}/hosts/host01")}]
        if "hosts" in opts:
            choices += [{"hosts": Variant("ao", [])},
                        {"hosts": Variant("ao", [junk_path(rng), f"{ROOT}/hosts/host1"])},
                        {"hosts": Variant("ao", [f"{ROOT}/luns/1_0_0_0"])}]
        if not choices:                      # a method without range options: unknown key
            choices = [{"x" * rng.randrange(1, 2000): Variant("b", True)}]
        body = [rng.choice(choices)]
    elif kind == "object":
        path = junk_path(rng)
        body = {"a{sv}": [{}], "ba{sv}": [True, {}]}.get(sig, [{"hctl": Variant("s", "1:0:0:0")}, {}])
    elif kind == "near-miss":
        if iface.endswith(".Manager") or rng.random() < 0.3:
            # ScanAll naming a host that is not there (alone, or next to a real one)
            hosts = [near_miss(rng, "host")]
            if rng.random() < 0.5:
                hosts.insert(rng.randrange(2), f"{ROOT}/hosts/host1")
            return kind, Message(destination="org.example.SanStorage", path=f"{ROOT}/Manager",
                                 interface="org.example.SanStorage.Manager", member="ScanAll",
                                 signature="a{sv}", body=[{"hosts": Variant("ao", hosts)}])
        path = near_miss(rng, {"org.example.SanStorage.ScsiHost": "host",
                               "org.example.SanStorage.FcHost": "host",
                               "org.example.SanStorage.Vhba": "vhba",
                               "org.example.SanStorage.MultipathMap": "map",
                               "org.example.SanStorage.Lun": "lun"}.get(iface, "job"))
        body = [True, {}] if sig == "ba{sv}" else [{}]
    elif kind == "member":
        member = "".join(rng.choice("AbcScanDelete_") for _ in range(rng.randrange(1, 30)))
        if member not in ("Scan", "Delete", "Rescan"):
            return kind, Message(destination="org.example.SanStorage", path=path, interface=iface,
                                 member=member, signature="a{sv}", body=[{}])
        return kind, Message(destination="org.example.SanStorage", path=path, interface=iface,
                             member=m.name, signature="s", body=["x"])
    elif kind == "interface":
        return kind, Message(destination="org.example.SanStorage", path=path,
                             interface="org.example.SanStorage.Nope" + str(rng.randrange(99)),
                             member=m.name, signature="a{sv}", body=[{}])
    elif kind == "devspec":
        mgr_path = f"{ROOT}/Manager"
        spec = rng.choice([
            {junk_string(rng)[:200] or "k": Variant("s", "x")},
            {"path": Variant("s", rng.choice(["/etc/passwd", "relative", "/dev/" + "a" * 5000]))},
            {"wwpn": Variant("s", junk_string(rng))},
            {"hctl": Variant("s", junk_string(rng))},
            {"path": Variant("u", 5)}, {}])
        opts2 = rng.choice([{}, {"force": Variant("b", True)}])
        if not opts2 and spec and list(spec.values())[0].signature == "s" and \
                list(spec)[0] in ("path", "wwpn", "hctl") and rng.random() < 0.5:
            opts2 = {"luns": Variant("at", [1])}     # a ResolveDevice option that does not exist
        return kind, Message(destination="org.example.SanStorage", path=mgr_path,
                             interface="org.example.SanStorage.Manager", member="ResolveDevice",
                             signature="a{sv}a{sv}", body=[spec, opts2])
    else:  # properties
        member, psig, pbody = rng.choice([
            ("Set", "ssv", ["org.example.SanStorage.Lun", "Size", Variant("t", 1)]),
            ("Get", "ss", [junk_string(rng)[:100], junk_string(rng)[:100]]),
            ("Get", "s", ["org.example.SanStorage.Lun"]),
            ("GetAll", "ss", ["a", "b"]),
            ("Frobnicate", "", [])])
        return kind, Message(destination="org.example.SanStorage", path=rng.choice(OBJECTS),
                             interface="org.freedesktop.DBus.Properties", member=member,
                             signature=psig, body=pbody)
    if sig == m.in_signature and sig == "a{sv}a{sv}":        # options last
        # ResolveDevice: a valid device spec; SetMultipathConfig: valid settings (only the
        # options are wrong, and they must be refused before anything is written)
        first = ({"user_friendly_names": Variant("b", False)} if m.name == "SetMultipathConfig"
                 else {"hctl": Variant("s", "1:0:0:0")})
        body = [first, *body]
    if sig == m.in_signature and sig == "ba{sv}" and len(body) == 1:   # SetPersistent
        body = [rng.random() < 0.5, *body]
    return kind, Message(destination="org.example.SanStorage", path=path, interface=iface,
                         member=m.name, signature=sig, body=body)


def dropin(d) -> Path:
    return d.sim_dir / "etc" / "multipath" / "conf.d" / "sanbusd.conf"


def multipath_state(d) -> tuple:
    """The maps as the simulated device-mapper has them (a map made, flushed or reloaded
    shows), and the map objects on the bus."""
    maps = sorted((m["dm"], m["name"], m["wwid"], tuple(m["slaves"]), m["map_loads"])
                  for m in d.sim({"command": "status"})["maps"])
    out = run("busctl", f"--address={d.bus.address}", "--json=short", "call",
              "org.example.SanStorage", ROOT, "org.freedesktop.DBus.ObjectManager",
              "GetManagedObjects", env=d.env).stdout
    return maps, sorted(p for p in json.loads(out)["data"][0] if "/multipath/" in p)


def make_lun1_map(d) -> tuple:
    run(sys.executable, "-m", "sanbusd.cli.sim", "--dir", str(d.sim_dir), "mpath-create",
        "--wwid", LUN1_WWID)
    state = wait_until(lambda: (s := multipath_state(d))[1] == [MAP] and s,
                       what="LUN 1's map on the bus")
    assert not dropin(d).exists()
    return state


def test_fuzz_malformed_calls_get_declared_errors_and_write_nothing(daemon):
    mp_before = make_lun1_map(daemon)
    seed = int(os.environ.get("SANBUSD_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"fuzz seed {seed} (replay: SANBUSD_FUZZ_SEED={seed})")
    targets = fuzz_targets()
    covered: set[str] = set()
    kinds: dict[str, int] = {}

    async def go():
        bus = await connect(daemon.bus.address)
        sem = asyncio.Semaphore(64)
        failures = []

        async def one(n, kind, msg):
            async with sem:
                try:
                    reply = await asyncio.wait_for(bus.call(msg), REPLY_TIMEOUT)
                except asyncio.TimeoutError:
                    failures.append((n, kind, msg.path, msg.interface, msg.member,
                                     msg.signature, repr(msg.body)[:300], "no answer", ""))
                    return
            ok = reply.message_type == MessageType.ERROR and reply.error_name in DECLARED
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if ok and ("internal error" in text or "Traceback" in text):
                ok = False
            if kind == "devspec" and reply.message_type == MessageType.METHOD_RETURN:
                ok = True                        # a well-formed search may just find nothing
            if not ok:
                failures.append((n, kind, msg.path, msg.interface, msg.member, msg.signature,
                                 repr(msg.body)[:300], reply.error_name, repr(reply.body)[:300]))
        batch = []
        for n in range(CALLS):
            kind, msg = invalid_call(rng, targets)
            kinds[kind] = kinds.get(kind, 0) + 1
            covered.add(f"{msg.interface}.{msg.member}")
            batch.append(one(n, kind, msg))
            if len(batch) == 500:
                await asyncio.gather(*batch)
                batch = []
                assert daemon.process.poll() is None, f"daemon died (seed {seed}, call {n})"
        await asyncio.gather(*batch)
        ping = await asyncio.wait_for(bus.call(Message(
            destination="org.example.SanStorage", path=f"{ROOT}/Manager",
            interface="org.freedesktop.DBus.Properties", member="Get", signature="ss",
            body=["org.example.SanStorage.Manager", "Version"])), REPLY_TIMEOUT)
        bus.disconnect()
        return failures, ping
    failures, ping = asyncio.run(go())
    assert not failures, f"seed {seed}: {len(failures)} bad answers, first: {failures[:3]}"
    assert ping.message_type == MessageType.METHOD_RETURN
    assert daemon.writes() == [], f"seed {seed}: malformed input reached the simulated sysfs"
    assert not dropin(daemon).exists(), f"seed {seed}: malformed input wrote the drop-in"
    assert multipath_state(daemon) == mp_before, f"seed {seed}: a map was made or flushed"
    every_method = {f"{i}.{m.name}" for i, m in methods()}
    assert every_method <= covered, f"seed {seed}: {every_method - covered} not called"
    assert kinds.get("near-miss", 0) >= CALLS // 20, f"seed {seed}: {kinds}"
    print(f"fuzzed {CALLS} calls over {len(every_method)} methods: {sorted(kinds.items())}")
    assert CALLS >= 10_000 or "SANBUSD_FUZZ_CALLS" in os.environ


def test_valid_privileged_calls_from_an_unauthorized_user_write_nothing(daemon):
    mp_before = make_lun1_map(daemon)
    rng = random.Random(1)
    calls = []
    for _ in range(300):
        calls.append(rng.choice([
            [f"{ROOT}/Manager", "org.example.SanStorage.Manager", "ScanAll", "a{sv}", [{}]],
            [f"{ROOT}/hosts/host1", "org.example.SanStorage.ScsiHost", "Scan", "a{sv}",
             [{"luns": {"$v": ["at", [rng.randrange(100)]]}}]],
            [f"{ROOT}/luns/1_0_0_0", "org.example.SanStorage.Lun", "Delete", "a{sv}",
             [{"force": {"$v": ["b", True]}}]],
            [f"{ROOT}/luns/1_0_0_1", "org.example.SanStorage.Lun", "Rescan", "a{sv}", [{}]],
            [f"{ROOT}/Manager", "org.example.SanStorage.Manager", "CreateVhba", "a{sv}", [{}]],
            [f"{ROOT}/hosts/host1", "org.example.SanStorage.FcHost", "CreateVhba", "a{sv}",
             [{"wwpn": {"$v": ["s", "5001a4a000000abc"]}}]],
            [f"{ROOT}/vhbas/5001a4a0aa000001", "org.example.SanStorage.Vhba", "Delete",
             "a{sv}", [{"force": {"$v": ["b", True]}}]],
            [f"{ROOT}/vhbas/5001a4a0aa000001", "org.example.SanStorage.Vhba", "SetPersistent",
             "ba{sv}", [True, {}]],
            [f"{ROOT}/Manager", "org.example.SanStorage.Manager", "CreateAllMultipathMaps",
             "a{sv}", [rng.choice([{}, {"all_eligible": {"$v": ["b", True]}}])]],
            [f"{ROOT}/Manager", "org.example.SanStorage.Manager", "SetMultipathConfig",
             "a{sv}a{sv}", [{"user_friendly_names": {"$v": ["b", False]}}, {}]],
            [MAP, "org.example.SanStorage.MultipathMap", "Flush", "a{sv}",
             [rng.choice([{}, {"remove_paths": {"$v": ["b", True]}}])]]]))
    r = run(sys.executable, str(HERE / "client_calls.py"), daemon.bus.address,
            json.dumps(calls), "32", user="sanbob", env=daemon.env)
    results = json.loads(r.stdout)
    assert {res["error"] for res in results} == {
        "org.example.SanStorage.Error.NotAuthorizedCanObtain"}
    assert daemon.writes() == []
    assert not dropin(daemon).exists()
    assert multipath_state(daemon) == mp_before


def calls_digest(seed: int, n: int) -> str:
    """What the fuzzer sends for `seed`, as one hash (no bus needed)."""
    rng = random.Random(seed)
    targets = fuzz_targets()
    h = hashlib.sha256()
    for _ in range(n):
        kind, msg = invalid_call(rng, targets)
        h.update(repr((kind, msg.path, msg.interface, msg.member, msg.signature,
                       msg.body)).encode())
    return h.hexdigest()


def test_a_seed_replays_the_same_calls_in_another_process():
    """SANBUSD_FUZZ_SEED=N must send exactly the calls of the run that printed N, also in a new
    interpreter (whose str hashes, and so set order, differ)."""
    code = ("import sys; sys.path[:0] = [%r, %r]; import test_fuzz; "
            "print(test_fuzz.calls_digest(12345, 1500))" % (str(HERE), str(HERE.parent)))
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout.strip()
               for h in (1, 2)}
    assert digests == {calls_digest(12345, 1500)}
    assert calls_digest(12346, 1500) not in digests
