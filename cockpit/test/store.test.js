/* The store (cockpit/src/store.js): merging cockpit.dbus "notify" data. */

import { test } from "node:test";
import assert from "node:assert/strict";

import { Store, unwrap } from "../src/store.js";

const LUN = "org.example.SanStorage.Lun";
const FC = "org.example.SanStorage.FcHost";

test("unwrap: variants inside aa{sv} and a{sv}, plain values untouched", () => {
    assert.equal(unwrap(5), 5);
    assert.equal(unwrap(null), null);
    assert.deepEqual(unwrap([{ Name: { t: "s", v: "rport-1:0-0" }, Roles: { t: "as", v: ["FCP Target"] },
        ScsiTargetId: { t: "i", v: -1 } }]),
                     [{ Name: "rport-1:0-0", Roles: ["FCP Target"], ScsiTargetId: -1 }]);
    assert.deepEqual(unwrap({ UserFriendlyNames: { t: "b", v: true }, IncludeWwids: { t: "as", v: [] } }),
                     { UserFriendlyNames: true, IncludeWwids: [] });
    assert.deepEqual(unwrap({ t: "v", v: { t: "s", v: "x" } }), "x");
    const plain = ["a", "b"];
    assert.equal(unwrap(plain), plain);
});

test("applyNotify: added, merged, removed", () => {
    const s = new Store();
    const p = "/org/example/SanStorage/luns/1_0_0_1";
    s.applyNotify({ [p]: { [LUN]: { HCTL: "1:0:0:1", State: "running", Size: 10 } } });
    assert.deepEqual(s.get(p, LUN), { HCTL: "1:0:0:1", State: "running", Size: 10 });
    assert.deepEqual([...s.takeDirty()], [LUN]);
    assert.equal(s.takeDirty().size, 0);

    s.applyNotify({ [p]: { [LUN]: { State: "blocked" } } });
    assert.deepEqual(s.get(p, LUN), { HCTL: "1:0:0:1", State: "blocked", Size: 10 });
    assert.deepEqual(s.list(LUN), [{ path: p, HCTL: "1:0:0:1", State: "blocked", Size: 10 }]);
    assert.equal(s.count(LUN), 1);
    assert.equal(s.values(LUN)[0], s.get(p, LUN));

    s.applyNotify({ [p]: { [LUN]: null } });
    assert.equal(s.get(p, LUN), undefined);
    assert.equal(s.objects[p], undefined);
    assert.equal(s.count(LUN), 0);
    assert.deepEqual(s.list(LUN), []);
});

test("applyNotify: the store keeps its own copy (cockpit merges into the object it sent)", () => {
    const s = new Store();
    const sent = { HCTL: "1:0:0:1" };
    s.applyNotify({ "/l": { [LUN]: sent } });
    sent.HCTL = "changed";
    assert.equal(s.get("/l", LUN).HCTL, "1:0:0:1");
});

test("applyNotify: variants are unwrapped on the way in", () => {
    const s = new Store();
    s.applyNotify({ "/h": { [FC]: { WWPN: "1000", RemotePorts: [{ WWPN: { t: "s", v: "500a" } }] } } });
    assert.deepEqual(s.get("/h", FC).RemotePorts, [{ WWPN: "500a" }]);
});

test("reset forgets everything", () => {
    const s = new Store();
    s.applyNotify({ "/l": { [LUN]: { HCTL: "x" } } });
    s.reset();
    assert.equal(s.count(LUN), 0);
    assert.deepEqual(s.objects, {});
});
