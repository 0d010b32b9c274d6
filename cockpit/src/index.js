/* The "SAN storage" page: sanbusd's objects, live. */

import { ROOT, IFACE, groupLuns, hctlFromPath, scanResultText, compareNames } from "./model.js";
import { Store, connect } from "./store.js";
import { $ } from "./dom.js";
import { alertBox, showPageError } from "./alerts.js";
import { renderHeader, renderRescanHint, renderHosts, renderVhbas, renderLuns, renderMaps,
    renderSessions, renderJobs } from "./views.js";
import { createDialogs } from "./dialogs.js";

/* global cockpit */

const store = new Store();
const ui = {
    filter: "",
    lunPage: 1,
    mapPage: 1,
    hostCollapsed: new Set(),         // hosts are expanded (remote ports shown) unless collapsed
    lunExpanded: new Set(),           // groups are collapsed unless expanded...
    lunCollapsedNew: new Set(),       // ...except new ones, expanded unless collapsed
    mapCollapsed: new Set(),
    newHctls: new Set(),              // paths the last scan added
    jobFinishedAt: new Map(),
};

// For tests and the curious: how long the first full picture took, and where the time went
// (ms since navigation start).
const page = window.sanPage = { renders: 0, firstRenderMs: null, timing: {}, store };

const ctx = {
    store,
    ui,
    groups: [],                       // LUN paths by WWID, and the maps by name: derived from the
    maps: [],                         // store only when their interface changed
    client: null,
    firstRenderDone: false,
    requestRender: () => schedule(),
    renderLater,
};

let ready = false;
let derivedStale = true;

/* Notifies come in bursts (a scan adds thousands of paths): coalesce them into at most one
 * render per frame. rAF alone is not enough, a hidden or headless frame may never get one. */
let scheduled = false;
function schedule() {
    if (scheduled)
        return;
    scheduled = true;
    const run = () => {
        if (!scheduled)
            return;
        scheduled = false;
        render();
    };
    window.requestAnimationFrame(run);
    window.setTimeout(run, 30);
}

let laterTimer = null;
let laterAt = Infinity;
function renderLater(ms) {
    const at = performance.now() + ms;
    if (at >= laterAt)
        return;
    window.clearTimeout(laterTimer);
    laterAt = at;
    laterTimer = window.setTimeout(() => {
        laterAt = Infinity;
        schedule();
    }, ms);
}

const SECTIONS = [
    ["header", renderHeader],
    ["rescanHint", renderRescanHint],
    ["hosts", renderHosts],
    ["vhbas", renderVhbas],
    ["luns", renderLuns],
    ["maps", renderMaps],
    ["sessions", renderSessions],
    ["jobs", renderJobs],
    ["dialogs", () => dialogs.update()],
];

function render() {
    if (!ready)
        return;
    const t0 = performance.now();
    const dirty = store.takeDirty();
    if (derivedStale || dirty.has(IFACE.lun))
        ctx.groups = groupLuns(store.values(IFACE.lun));
    if (derivedStale || dirty.has(IFACE.map))
        ctx.maps = store.list(IFACE.map).sort((a, b) => compareNames(a.Name, b.Name));
    derivedStale = false;
    // Per section, so a slow render at scale says where its time went
    const ms = page.sectionMs = { derive: performance.now() - t0 };
    for (const [name, draw] of SECTIONS) {
        const a = performance.now();
        draw(ctx);
        ms[name] = performance.now() - a;
    }
    page.renders++;
    page.lastRenderMs = performance.now() - t0;
    page.maxRenderMs = Math.max(page.maxRenderMs || 0, page.lastRenderMs);
}

/* Scan finished: say what it found and put the new paths' units on top of page 1, expanded. */
ctx.onScanDone = added => {
    const hctls = added.map(p => store.get(p, IFACE.lun)?.HCTL || hctlFromPath(p));
    ui.newHctls = new Set(hctls);
    ui.lunCollapsedNew.clear();
    ui.lunPage = 1;
    showResult($("#scan-result-box"), "scan-result", hctls.length ? "success" : "info",
               scanResultText(hctls));
    schedule();
};

ctx.onMapsCreated = maps => {
    const names = maps.map(p => store.get(p, IFACE.map)?.Name || p.split("/").pop());
    const text = names.length
        ? `${names.length} multipath map${names.length === 1 ? "" : "s"}: ${names.join(", ")}`
        : "No LUN needs a multipath map";
    showResult($("#mpath-result-box"), "mpath-result", "success", text);
};

ctx.onVhbaCreated = () => schedule();

function showResult(box, id, variant, text) {
    const alert = alertBox({ variant, inline: true, title: text, onClose: () => { box.hidden = true } });
    // The title's text is exactly the result: the screen-reader prefix goes before the id'd span
    const title = alert.querySelector(".pf-c-alert__title");
    const span = document.createElement("span");
    span.id = id;
    span.textContent = text;
    title.lastChild.replaceWith(span);
    box.replaceChildren(alert);
    box.hidden = false;
}

const dialogs = createDialogs(ctx);
ctx.actions = {
    openScan: path => dialogs.openScan(path),
    openVhba: path => dialogs.openVhba(path),
    deleteVhba: path => dialogs.deleteVhba(path),
    flushMap: path => dialogs.flushMap(path),
    cancelJob: path => dialogs.cancelJob(path),
};

/* Toolbar and pager wiring */
$("#scan-open").addEventListener("click", () => dialogs.openScan(""));
$("#vhba-open").addEventListener("click", () => dialogs.openVhba(""));
$("#mpath-create-all").addEventListener("click", () => dialogs.createAllMaps());
$("#mpath-settings-open").addEventListener("click", () => dialogs.openMpathSettings());
$("#lun-filter").addEventListener("input", ev => {
    ui.filter = ev.target.value;
    ui.lunPage = 1;
    schedule();
});
function pager(id, key) {
    const el = $(id);
    $(".page-prev", el).addEventListener("click", () => { ui[key]--; schedule() });
    $(".page-next", el).addEventListener("click", () => { ui[key]++; schedule() });
}
pager("#lun-pager", "lunPage");
pager("#map-pager", "mapPage");

/* The connection */
let conn = null;
let failed = false;
let ownerGone = false;

function reconnect() {
    conn.close();
    ready = false;
    store.reset();
    start();
}

/* sanbusd left the bus (restart, upgrade, crash): say so, keep the last picture, and read
 * everything again when it is back. */
function serviceGone(gone) {
    const old = document.getElementById("service-gone");
    if (old)
        old.remove();
    document.body.dataset.service = gone ? "gone" : "running";
    if (!gone)
        return;
    const item = document.createElement("li");
    item.className = "pf-c-alert-group__item";
    item.id = "service-gone";
    item.append(alertBox({
        variant: "warning",
        inline: true,
        title: "The SAN storage service stopped",
        lines: ["This page shows what it knew last, and updates again when sanbusd is back."],
    }));
    $("#alerts").append(item);
}

function fail(ex) {
    if (!ctx.firstRenderDone) {
        document.body.dataset.state = "error";
        $("#summary").textContent = "Not connected to the SAN storage service";
    }
    if (!failed) {
        failed = true;
        showPageError(ex, "reading the SAN storage service");
    }
}

function start() {
    failed = false;
    const timing = page.timing;
    timing.connect ??= performance.now();
    const mine = conn = connect(cockpit, store, {
        root: ROOT,
        onChange: () => {
            timing.firstNotify ??= performance.now();
            schedule();
        },
        timing,
        onClose: ex => {
            if (mine === conn)
                fail(ex);
        },
        onOwner: owner => {
            if (mine !== conn)
                return;
            if (!owner) {
                ownerGone = true;
                serviceGone(true);
            } else if (ownerGone) {
                ownerGone = false;
                serviceGone(false);
                reconnect();
            }
        },
    });
    ctx.client = mine.client;
    mine.ready.then(() => {
        if (mine !== conn)
            return;
        ready = true;
        derivedStale = true;
        scheduled = false;
        timing.watched ??= performance.now();
        render();
        if (!ctx.firstRenderDone) {
            ctx.firstRenderDone = true;
            page.firstRenderMs = performance.now();
            document.body.dataset.state = "ready";
        }
    }, ex => {
        if (mine === conn)
            fail(ex);
    });
}

/* Administrative access turned on or off in the shell: a "try" channel keeps the privileges
 * it was opened with, so open a new one and read everything again. */
function followSuperuser() {
    const su = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
    let last = null;
    su.addEventListener("changed", () => {
        const cur = su.Current;
        if (!cur || cur === "init")
            return;
        if (last !== null && cur !== last)
            reconnect();
        last = cur;
    });
}

start();
followSuperuser();
