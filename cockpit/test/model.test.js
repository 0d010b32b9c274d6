/* The page's pure helpers (cockpit/src/model.js): node --test cockpit/test/ */

import { test } from "node:test";
import assert from "node:assert/strict";

import {
    parseLunList, rawLunList, parseWwn, checkWwnPair, formatBytes, compareHctl, hctlFromPath,
    worstState, stateColor, groupLuns, groupMatches, newFirst, paginate, jobPercent,
    scanResultText, describeError, MAX_LUN, MAX_LUNS_PER_SCAN, FIND_MULTIPATHS,
} from "../src/model.js";

test("parseLunList: numbers, ranges, blanks and commas", () => {
    assert.deepEqual(parseLunList("27, 28, 30-32"), { luns: [27, 28, 30, 31, 32] });
    assert.deepEqual(parseLunList("  "), { luns: [] });
    assert.deepEqual(parseLunList(""), { luns: [] });
    assert.deepEqual(parseLunList(undefined), { luns: [] });
    assert.deepEqual(parseLunList("5 3,,1"), { luns: [1, 3, 5] });
    assert.deepEqual(parseLunList("0"), { luns: [0] });
    assert.deepEqual(parseLunList("7-7"), { luns: [7] });
});

test("parseLunList: duplicates count once, as for the daemon", () => {
    assert.deepEqual(parseLunList("1, 1, 0-2"), { luns: [0, 1, 2] });
});

test("parseLunList: what it refuses, with a message that names the item", () => {
    for (const bad of ["27,x", "x", "1.5", "-1", "1-", "-", "3-1", "0x10", "1e3", "27;28"]) {
        const r = parseLunList(bad);
        assert.ok(r.error, `${bad} should be refused`);
        assert.equal(r.luns, undefined);
    }
    assert.match(parseLunList("27,x").error, /"x"/);
    assert.match(parseLunList("-1").error, /negative/);
    assert.match(parseLunList("3-1").error, /greater/);
});

test("parseLunList: the daemon's range 0..16383 and at most 4096 per scan", () => {
    assert.deepEqual(parseLunList(String(MAX_LUN)), { luns: [MAX_LUN] });
    assert.match(parseLunList(String(MAX_LUN + 1)).error, /out of range/);
    assert.match(parseLunList("99999999999999999999").error, /out of range/);
    assert.equal(parseLunList(`0-${MAX_LUNS_PER_SCAN - 1}`).luns.length, MAX_LUNS_PER_SCAN);
    assert.match(parseLunList(`0-${MAX_LUNS_PER_SCAN}`).error, /Too many/);
    assert.match(parseLunList(`0-${MAX_LUN}`).error, /Too many/);
    // overlapping ranges are not "too many"
    assert.equal(parseLunList(`0-4095, 100-200`).luns.length, MAX_LUNS_PER_SCAN);
    assert.equal(parseLunList(`0-4000, 3000-4095`).luns.length, MAX_LUNS_PER_SCAN);
});

test("rawLunList: what the unchecked scan sends: numbers as at, anything else as strings", () => {
    assert.deepEqual(rawLunList("27, 28"), { t: "at", v: [27, 28] });
    assert.deepEqual(rawLunList(""), { t: "at", v: [] });
    assert.deepEqual(rawLunList("27,x"), { t: "as", v: ["27", "x"] });
});

test("parseWwn: 16 hex digits, 0x, colons and upper case accepted", () => {
    assert.deepEqual(parseWwn("5001A4A0AA000002"), { wwn: "5001a4a0aa000002" });
    assert.deepEqual(parseWwn("0x5001a4a0aa000002"), { wwn: "5001a4a0aa000002" });
    assert.deepEqual(parseWwn("50:01:a4:a0:aa:00:00:02"), { wwn: "5001a4a0aa000002" });
    assert.deepEqual(parseWwn(" "), { wwn: "" });
    for (const bad of ["5001a4a0aa00000", "5001a4a0aa0000022", "5001a4a0aa00000g", "0x", "x"])
        assert.ok(parseWwn(bad).error, bad);
});

test("checkWwnPair: both or neither", () => {
    assert.equal(checkWwnPair("", "").valid, true);
    const both = checkWwnPair("5001a4a0aa000002", "0x5001A4A0BB000002");
    assert.equal(both.valid, true);
    assert.equal(both.wwnn, "5001a4a0bb000002");
    const one = checkWwnPair("5001a4a0aa000002", "");
    assert.equal(one.valid, false);
    assert.ok(one.errors.wwnn);
    assert.ok(!one.errors.wwpn);
    const bad = checkWwnPair("zz", "5001a4a0bb000002");
    assert.equal(bad.valid, false);
    assert.ok(bad.errors.wwpn);
});

test("formatBytes: IEC units", () => {
    assert.equal(formatBytes(0), "");
    assert.equal(formatBytes(512), "512 B");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(100 * 2 ** 30), "100 GiB");
    assert.equal(formatBytes(558 * 2 ** 30), "558 GiB");
    assert.equal(formatBytes(2 ** 40), "1 TiB");
    assert.equal(formatBytes(10 * 2 ** 30), "10 GiB");
});

test("compareHctl: numeric, so host10 sorts after host9", () => {
    const list = ["10:0:0:1", "9:0:0:10", "9:0:0:2", "1:0:1:0"];
    assert.deepEqual(list.sort(compareHctl), ["1:0:1:0", "9:0:0:2", "9:0:0:10", "10:0:0:1"]);
});

test("hctlFromPath: a LUN path's last element", () => {
    assert.equal(hctlFromPath("/org/example/SanStorage/luns/1_0_0_27"), "1:0:0:27");
    assert.equal(hctlFromPath("/org/example/SanStorage/luns/odd"), "odd");
});

test("worstState and stateColor", () => {
    assert.equal(worstState(["running", "running"]), "running");
    assert.equal(worstState(["running", "blocked"]), "blocked");
    assert.equal(worstState(["blocked", "transport-offline", "running"]), "transport-offline");
    assert.equal(worstState(["running", "something-new"]), "something-new");
    assert.equal(worstState([]), "");
    assert.equal(stateColor("running"), "green");
    assert.equal(stateColor("Online"), "green");
    assert.equal(stateColor("degraded"), "orange");
    assert.equal(stateColor("failed"), "red");
    assert.equal(stateColor("Linkdown"), "red");
    assert.equal(stateColor("whatever"), "grey");
});

function lun(hctl, wwid, extra = {}) {
    return {
        path: "/org/example/SanStorage/luns/" + hctl.replace(/:/g, "_"),
        HCTL: hctl,
        WWID: wwid,
        Vendor: "NETAPP",
        Model: "LUN C-Mode",
        Size: 100,
        State: "running",
        BlockDevice: "/dev/sd" + hctl.split(":")[3],
        MultipathMap: "/",
        ...extra,
    };
}

test("groupLuns: one group per WWID, paths without a WWID alone", () => {
    const groups = groupLuns([
        lun("2:0:0:1", "naa.b"),
        lun("1:0:0:1", "naa.b", { State: "blocked" }),
        lun("1:0:0:0", "naa.a", { Size: 0 }),
        lun("2:0:0:0", "naa.a", { MultipathMap: "/org/example/SanStorage/multipath/3a" }),
        lun("0:0:0:0", ""),
        lun("0:0:0:1", ""),
    ]);
    assert.deepEqual(groups.map(g => g.key), ["hctl:0:0:0:0", "hctl:0:0:0:1", "naa.a", "naa.b"]);
    const b = groups.find(g => g.key === "naa.b");
    assert.deepEqual(b.paths.map(p => p.HCTL), ["1:0:0:1", "2:0:0:1"]);
    assert.equal(b.state, "blocked");
    const a = groups.find(g => g.key === "naa.a");
    assert.equal(a.size, 100);
    assert.equal(a.mapPath, "/org/example/SanStorage/multipath/3a");
    assert.equal(groups[0].wwid, "");
});

test("groupMatches: WWID, HCTL, device, vendor/model, map name; case-insensitive", () => {
    const [g] = groupLuns([lun("1:0:0:27", "naa.600a0981")]);
    assert.ok(groupMatches(g, ""));
    assert.ok(groupMatches(g, "600A"));
    assert.ok(groupMatches(g, "1:0:0:27"));
    assert.ok(groupMatches(g, "/dev/sd27"));
    assert.ok(groupMatches(g, "netapp lun"));
    assert.ok(groupMatches(g, "mpathc", "mpathc"));
    assert.ok(!groupMatches(g, "hitachi"));
});

test("newFirst: groups with a new path go to the top, order kept", () => {
    const groups = groupLuns([lun("1:0:0:1", "a"), lun("1:0:0:2", "b"), lun("1:0:0:3", "c")]);
    assert.deepEqual(newFirst(groups, new Set(["1:0:0:3", "1:0:0:2"])).map(g => g.key), ["b", "c", "a"]);
    assert.equal(newFirst(groups, new Set()), groups);
});

test("paginate: PF's text, clamped pages", () => {
    const items = Array.from({ length: 4096 }, (_, i) => i);
    const p1 = paginate(items, 1);
    assert.equal(p1.info, "1 – 50 of 4096");
    assert.equal(p1.items.length, 50);
    assert.equal(p1.hasPrev, false);
    assert.equal(p1.hasNext, true);
    const last = paginate(items, 999);
    assert.equal(last.page, 82);
    assert.equal(last.info, "4051 – 4096 of 4096");
    assert.equal(last.hasNext, false);
    assert.equal(paginate([], 3).info, "0 – 0 of 0");
    assert.equal(paginate(items, 0).page, 1);
});

test("jobPercent", () => {
    assert.equal(jobPercent(0.5), 50);
    assert.equal(jobPercent(1.2), 100);
    assert.equal(jobPercent(undefined), 0);
});

test("scanResultText", () => {
    assert.equal(scanResultText([]), "No new LUNs");
    assert.equal(scanResultText(["2:0:0:27", "1:0:0:27"]), "Found 2 new LUNs: 1:0:0:27, 2:0:0:27");
    assert.equal(scanResultText(["1:0:0:5"]), "Found 1 new LUN: 1:0:0:5");
});

test("describeError: D-Bus errors in words", () => {
    const na = describeError({ name: "org.example.SanStorage.Error.NotAuthorizedCanObtain", message: "m" },
                             "scanning for LUNs");
    assert.equal(na.name, "org.example.SanStorage.Error.NotAuthorizedCanObtain");
    assert.equal(na.title, "Not permitted: scanning for LUNs needs administrative rights");
    assert.match(na.hint, /administrative access/);
    assert.match(na.hint, /sanadmin/);
    assert.equal(na.message, "m");
    for (const [short, word] of [["TimedOut", /Timed out/], ["Busy", /Busy/], ["NotFound", /Not found/],
        ["NoSpace", /Limit/], ["AlreadyExists", /Already exists/], ["InvalidArgument", /Invalid/],
        ["NotSupported", /Not supported/]]) {
        const d = describeError({ name: "org.example.SanStorage.Error." + short, message: "x" }, "doing it");
        assert.match(d.title, word, short);
        assert.equal(d.hint, "");
    }
    const ia = describeError({ name: "org.freedesktop.DBus.Error.InvalidArgs", message: "bad" }, "scanning");
    assert.match(ia.title, /Invalid input/);
    assert.equal(describeError({ name: "org.example.SanStorage.Error.Failed", message: "x" }, "doing it").title,
                 "Doing it failed");
});

test("describeError: a dismissed authentication is not a missing right", () => {
    const d = describeError({ name: "org.example.SanStorage.Error.NotAuthorizedDismissed", message: "m" },
                            "scanning for LUNs");
    assert.match(d.title, /^Cancelled/);
    assert.equal(d.hint, "");
});

test("describeError: channel failures have only a problem", () => {
    const d = describeError({ problem: "not-found" }, "reading");
    assert.equal(d.name, "not-found");
    assert.match(d.title, /^Reading failed: the SAN storage service is not available/);
    assert.match(d.message, /sanbusd/);
    const lost = describeError({ problem: "internal-error", message: "Could not connect: No such file" }, "reading");
    assert.equal(lost.message, "Could not connect: No such file");
    assert.match(lost.title, /system bus/);
    const denied = describeError({ problem: "access-denied", name: null, message: "Not permitted" }, "scanning");
    assert.match(denied.title, /Not permitted/);
    assert.equal(describeError(null, "x").name, "error");
});

test("FIND_MULTIPATHS: the values the daemon documents", () => {
    assert.deepEqual([...FIND_MULTIPATHS].sort(), ["greedy", "no", "smart", "strict", "yes"]);
});
