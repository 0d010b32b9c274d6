/* The page's sections, drawn from the store. Each render function is cheap to call again:
 * rows are keyed and only rebuilt when what they show changed (dom.syncKeyed). */

import { IFACE, MANAGER, formatBytes, groupMatches, newFirst, paginate, jobPercent, stateColor,
    hctlFromPath, compareHctl, compareNames } from "./model.js";
import { h, $, icon, label, progress, syncKeyed } from "./dom.js";
import { alertBox } from "./alerts.js";

const PER_PAGE = 50;
const JOB_DONE_VISIBLE_MS = 5000;
export const TRANSPORTS = { fc: "FC", iscsi: "iSCSI", sas: "SAS", other: "Other" };
const OPERATIONS = { scan: "Scanning for LUNs", "multipath-create": "Creating multipath maps" };

function lastElement(path) {
    return String(path).split("/").pop();
}

/* An object's Name, or the last element of its path while it is not (or no longer) known. */
function nameOf(store, path, iface) {
    if (!path || path === "/")
        return "";
    return store.get(path, iface)?.Name || lastElement(path);
}

export const hostName = (store, path) => nameOf(store, path, IFACE.host);
const mapName = (store, path) => nameOf(store, path, IFACE.map);

/* Flip `key` in one of the page's expanded/collapsed sets, and redraw. */
function toggler(ctx, set, key) {
    return () => {
        set.has(key) ? set.delete(key) : set.add(key);
        ctx.requestRender();
    };
}

function stateLabel(state, cls = "") {
    return state ? label(state, stateColor(state), cls) : "";
}

function toggleCell(expanded, onToggle, what, enabled = true) {
    if (!enabled)
        return h("td", { class: "pf-c-table__toggle" });
    return h("td", { class: "pf-c-table__toggle" },
             h("button", {
                 class: ["pf-c-button", "pf-m-plain", "row-toggle", expanded && "pf-m-expanded"],
                 type: "button",
                 "aria-expanded": expanded ? "true" : "false",
                 "aria-label": (expanded ? "Hide " : "Show ") + what,
                 onclick: onToggle,
             }, h("div", { class: "pf-c-table__toggle-icon" }, icon("fa-angle-down"))));
}

function expandableRow(expanded, colspan, content) {
    return h("tr", {
        class: ["pf-c-table__expandable-row", expanded && "pf-m-expanded"],
        hidden: !expanded,
    }, h("td", { colSpan: colspan },
         h("div", { class: "pf-c-table__expandable-row-content" }, content)));
}

function nestedTable(cls, ariaLabel, headers, rows) {
    return h("table", {
        class: ["pf-c-table", "pf-m-compact", "pf-m-no-border-rows", "san-nested", cls],
        "aria-label": ariaLabel,
    },
    h("thead", null, h("tr", null, headers.map(t => h("th", { class: "pf-m-wrap", scope: "col" }, t)))),
    h("tbody", null, rows));
}

function emptyTbody(table, isEmpty, text) {
    const empty = $("tbody.san-empty", table);
    if (!empty)
        return;
    empty.hidden = !isEmpty;
    if (text !== undefined)
        empty.querySelector("td").textContent = text;
}

function setText(id, text) {
    const el = document.getElementById(id);
    if (el.textContent !== text)
        el.textContent = text;
}

function button(cls, text, onclick) {
    return h("button", { class: `pf-c-button pf-m-secondary pf-m-small ${cls}`, type: "button", onclick },
             text);
}

function actionCell(...buttons) {
    return h("td", { class: "san-actions" }, h("div", { class: "san-actions__buttons" }, buttons));
}

/* Header: the Manager, multipathd, and a summary line. */
export function renderHeader(ctx) {
    const { store } = ctx;
    const m = store.get(MANAGER, IFACE.manager) || {};
    setText("manager-backend", m.Backend || "–");
    setText("manager-version", m.Version || "–");
    const md = $("#multipathd-state");
    const state = m.Multipathd || "";
    if (md.dataset.state !== state) {
        md.dataset.state = state;
        md.replaceChildren(state ? label(state, stateColor(state)) : "–");
    }
    const hosts = store.list(IFACE.host);
    const fc = hosts.filter(x => x.Transport === "fc").length;
    const maps = ctx.maps;
    const degraded = maps.filter(x => x.Health !== "healthy").length;
    const vhbas = store.count(IFACE.vhba);
    const parts = [
        `${hosts.length} host adapter${hosts.length === 1 ? "" : "s"} (${fc} FC)`,
        `${store.count(IFACE.lun)} LUN paths in ${ctx.groups.length} logical units`,
        `${maps.length} multipath map${maps.length === 1 ? "" : "s"}` +
            (degraded ? ` (${degraded} not healthy)` : ""),
        `${vhbas} vHBA${vhbas === 1 ? "" : "s"}`,
    ];
    setText("summary", parts.join(" · "));
}

/* A page-level hint naming the hosts whose storage reported changed LUNs. */
export function renderRescanHint(ctx) {
    const box = $("#rescan-hint");
    const hosts = ctx.store.list(IFACE.host).filter(x => x.RescanSuggested)
            .sort((a, b) => a.Number - b.Number);
    const names = hosts.map(x => x.Name).join(", ");
    const shown = !box.hidden;
    if (box.dataset.hosts === names && shown === (hosts.length > 0))
        return;
    box.dataset.hosts = names;
    box.hidden = hosts.length === 0;
    if (!hosts.length) {
        box.replaceChildren();
        return;
    }
    const alert = alertBox({
        variant: "warning",
        inline: true,
        title: "Rescan suggested",
        lines: [`The storage behind ${names} reports that its LUNs changed. A scan finds the new ones.`],
    });
    alert.append(h("div", { class: "pf-c-alert__action-group" },
                   h("button", {
                       class: "pf-c-button pf-m-link pf-m-inline rescan-scan",
                       type: "button",
                       onclick: () => ctx.actions.openScan(hosts.length === 1 ? hosts[0].path : ""),
                   }, "Scan…")));
    box.replaceChildren(alert);
}

/* Hosts, with each FC port's remote ports in an expandable row. */
export function renderHosts(ctx) {
    const { store, ui } = ctx;
    const table = $("#hosts");
    const hosts = store.list(IFACE.host).sort((a, b) => a.Number - b.Number);
    emptyTbody(table, hosts.length === 0);
    const items = hosts.map(host => {
        const fc = store.get(host.path, IFACE.fc) || null;
        const rports = (fc?.RemotePorts || []).slice().sort((a, b) => compareNames(a.Name, b.Name));
        const expanded = rports.length > 0 && !ui.hostCollapsed.has(host.path);
        return { host, fc, rports, expanded };
    });
    syncKeyed(table, items, it => it.host.path,
              // Luns by count: at scale a host has thousands of paths, and only the count shows
              it => JSON.stringify([{ ...it.host, Luns: (it.host.Luns || []).length }, it.fc, it.expanded]),
              it => buildHost(ctx, it));
}

function buildHost(ctx, { host, fc, rports, expanded }) {
    const toggle = toggler(ctx, ctx.ui.hostCollapsed, host.path);
    const npiv = fc?.NpivCapable ? `${fc.VportsInUse} / ${fc.MaxVports}` : "";
    const name = h("td", { dataset: { label: "Name" } }, h("span", { class: "host-name" }, host.Name));
    if (host.RescanSuggested)
        name.append(" ", label("Rescan suggested", "orange", "rescan-hint"));
    const actions = actionCell(button("scan-host", "Scan…", () => ctx.actions.openScan(host.path)),
                               fc?.NpivCapable &&
                                   button("create-vhba", "Create vHBA…", () => ctx.actions.openVhba(host.path)));
    const row = h("tr", { dataset: { host: host.Name } },
                  toggleCell(expanded, toggle, "remote ports", rports.length > 0),
                  name,
                  h("td", { dataset: { label: "Transport" } }, TRANSPORTS[host.Transport] || host.Transport),
                  h("td", { dataset: { label: "Driver" } }, host.Driver),
                  h("td", { dataset: { label: "State" }, class: "host-state" }, stateLabel(host.State)),
                  h("td", { dataset: { label: "WWPN" }, class: "san-mono" }, fc?.WWPN || ""),
                  h("td", { dataset: { label: "Port state" }, class: "port-state" },
                    fc ? stateLabel(fc.PortState) : ""),
                  h("td", { dataset: { label: "Speed" }, class: "san-nowrap" }, fc?.Speed || ""),
                  h("td", { dataset: { label: "NPIV vports" }, class: "npiv san-nowrap" }, npiv),
                  h("td", { dataset: { label: "LUN paths" } }, String((host.Luns || []).length)),
                  actions);
    const tbody = h("tbody", {
        class: expanded ? "pf-m-expanded" : "",
        dataset: { hostPath: host.path, hostName: host.Name },
    }, row);
    if (rports.length) {
        const rows = rports.map(rp => h("tr", { dataset: { rport: rp.WWPN } },
                                         h("td", null, rp.Name),
                                         h("td", { class: "san-mono" }, rp.WWPN),
                                         h("td", { class: "san-mono" }, rp.WWNN),
                                         h("td", { class: "san-mono" }, rp.PortId),
                                         h("td", null, (rp.Roles || []).join(", ")),
                                         h("td", { class: "port-state" }, stateLabel(rp.PortState)),
                                         h("td", null, rp.ScsiTargetId >= 0 ? String(rp.ScsiTargetId) : "")));
        tbody.append(expandableRow(expanded, 11,
                                   nestedTable("rports", `Remote ports of ${host.Name}`,
                                               ["Remote port", "WWPN", "WWNN", "Port ID", "Roles",
                                                   "Port state", "SCSI target"], rows)));
    }
    return tbody;
}

export function renderVhbas(ctx) {
    const { store } = ctx;
    const vhbas = store.list(IFACE.vhba).sort((a, b) => compareNames(a.Name, b.Name));
    emptyTbody($("#vhbas"), vhbas.length === 0);
    const items = vhbas.map(v => ({ v, parent: hostName(store, v.Parent), own: hostName(store, v.Host) }));
    syncKeyed($("#vhba-rows"), items, it => it.v.path, it => JSON.stringify(it), ({ v, parent, own }) =>
        h("tr", { dataset: { vhba: v.WWPN } },
          h("td", { dataset: { label: "Name" } }, v.Name),
          h("td", { dataset: { label: "WWPN" }, class: "san-mono" }, v.WWPN),
          h("td", { dataset: { label: "WWNN" }, class: "san-mono" }, v.WWNN),
          h("td", { dataset: { label: "Parent" }, class: "vhba-parent" }, parent),
          h("td", { dataset: { label: "Host" } }, own),
          h("td", { dataset: { label: "State" }, class: "vhba-state" }, stateLabel(v.State)),
          h("td", { dataset: { label: "Persistent" }, class: "vhba-persistent" }, v.Persistent ? "Yes" : "No"),
          actionCell(button("delete-vhba", "Delete…", () => ctx.actions.deleteVhba(v.path)))));
}

/* LUN paths grouped by WWID, one page of groups at a time. */
export function renderLuns(ctx) {
    const { store, ui } = ctx;
    const table = $("#luns");
    const groups = ctx.groups;
    const filtered = ui.filter
        ? groups.filter(g => groupMatches(g, ui.filter, mapName(store, g.mapPath)))
        : groups;
    const page = paginate(newFirst(filtered, ui.newHctls), ui.lunPage, PER_PAGE);
    ui.lunPage = page.page;
    setText("lun-count", `${store.count(IFACE.lun)} LUN paths, ${groups.length} logical units`);
    updatePager($("#lun-pager"), page);
    emptyTbody(table, page.total === 0, groups.length ? "No LUNs match the filter" : "No LUNs");
    const items = page.items.map(g => {
        const isNew = ui.newHctls.size > 0 && g.paths.some(p => ui.newHctls.has(p.HCTL));
        const expanded = isNew ? !ui.lunCollapsedNew.has(g.key) : ui.lunExpanded.has(g.key);
        const paths = g.paths.map(p => ({ ...p, hostName: hostName(store, p.Host) }));
        return { g, isNew, expanded, paths, map: mapName(store, g.mapPath) };
    });
    syncKeyed(table, items, it => it.g.key,
              it => JSON.stringify([it.isNew, it.expanded, it.paths, it.map]),
              it => buildLunGroup(ctx, it));
}

function buildLunGroup(ctx, { g, isNew, expanded, paths, map }) {
    const toggle = toggler(ctx, isNew ? ctx.ui.lunCollapsedNew : ctx.ui.lunExpanded, g.key);
    const wwid = h("td", { dataset: { label: "WWID" }, class: "san-mono lun-wwid" },
                   g.wwid || h("span", { class: "san-muted" }, "no WWID"));
    if (isNew)
        wwid.append(" ", label("New", "blue", "lun-new-label"));
    const summary = h("tr", { class: "lun-summary" },
                      toggleCell(expanded, toggle, "paths"),
                      wwid,
                      h("td", { dataset: { label: "Vendor / model" } }, `${g.vendor} ${g.model}`.trim()),
                      h("td", { dataset: { label: "Size" }, class: "lun-size san-nowrap" }, formatBytes(g.size)),
                      h("td", { dataset: { label: "Paths" }, class: "lun-paths" }, String(g.paths.length)),
                      h("td", { dataset: { label: "Multipath map" }, class: "lun-map" }, map),
                      h("td", { dataset: { label: "State" }, class: "lun-state" }, stateLabel(g.state)));
    const rows = paths.map(p => h("tr", { dataset: { hctl: p.HCTL } },
                                  h("td", { class: "san-mono" }, p.HCTL),
                                  h("td", null, p.hostName),
                                  h("td", { class: "san-mono lun-device" }, p.BlockDevice),
                                  h("td", { class: "lun-state" }, stateLabel(p.State)),
                                  h("td", { class: "san-mono" }, p.TargetPortName)));
    return h("tbody", {
        class: [expanded && "pf-m-expanded", isNew && "lun-new"],
        dataset: { wwid: g.wwid, group: g.key },
    }, summary, expandableRow(expanded, 7,
                              nestedTable("lun-path-table", `Paths of ${g.wwid || g.first}`,
                                          ["H:C:T:L", "Host", "Block device", "State", "Target port"],
                                          rows)));
}

function updatePager(pager, page) {
    const info = $(".page-info", pager);
    if (info.textContent !== page.info)
        info.textContent = page.info;
    $(".page-prev", pager).disabled = !page.hasPrev;
    $(".page-next", pager).disabled = !page.hasNext;
    pager.dataset.page = String(page.page);
    pager.dataset.pages = String(page.pages);
}

export function renderMaps(ctx) {
    const { store, ui } = ctx;
    const table = $("#maps");
    const maps = ctx.maps;
    const page = paginate(maps, ui.mapPage, PER_PAGE);
    ui.mapPage = page.page;
    $("#maps-pager-box").hidden = page.pages <= 1;
    updatePager($("#map-pager"), page);
    emptyTbody(table, maps.length === 0);
    const items = page.items.map(m => {
        const paths = (m.Paths || []).map(p => ({
            ...p,
            hctl: p.Lun && p.Lun !== "/" ? (store.get(p.Lun, IFACE.lun)?.HCTL || hctlFromPath(p.Lun)) : "",
        }));
        return { m, paths, expanded: !ui.mapCollapsed.has(m.path) };
    });
    syncKeyed(table, items, it => it.m.path, it => JSON.stringify(it), it => buildMap(ctx, it));
}

function buildMap(ctx, { m, paths, expanded }) {
    const toggle = toggler(ctx, ctx.ui.mapCollapsed, m.path);
    const healthColor = { healthy: "green", degraded: "orange", failed: "red" }[m.Health] || "grey";
    const features = [m.Features, m.HwHandler].filter(Boolean).join(" / ");
    const row = h("tr", { class: "map-summary" },
                  toggleCell(expanded, toggle, "paths", paths.length > 0),
                  h("td", { dataset: { label: "Name" }, class: "map-name" }, m.Name),
                  h("td", { dataset: { label: "WWID" }, class: "san-mono" }, m.WWID),
                  h("td", { dataset: { label: "Device" }, class: "san-mono san-nowrap" }, m.DmDevice),
                  h("td", { dataset: { label: "Size" }, class: "san-nowrap" }, formatBytes(m.Size)),
                  h("td", { dataset: { label: "Health" }, class: "health" },
                    label(m.Health || "unknown", healthColor)),
                  h("td", { dataset: { label: "Paths up" }, class: "map-paths san-nowrap" },
                    `${m.ActivePaths}/${m.TotalPaths}`),
                  h("td", { dataset: { label: "Features / handler" }, class: "san-small" }, features),
                  actionCell(button("flush-map", "Flush…", () => ctx.actions.flushMap(m.path))));
    const rows = paths.slice().sort((a, b) => compareHctl(a.hctl, b.hctl)).map(p =>
        h("tr", { dataset: { pathDevice: p.Device } },
          h("td", { class: "san-mono" }, p.Device),
          h("td", { class: "san-mono" }, p.hctl),
          h("td", { class: "dm-state" }, p.DmState),
          h("td", { class: "device-state" }, p.DeviceState),
          h("td", { class: "checker-state" }, p.CheckerState),
          h("td", { class: "path-state" }, label(p.Up ? "up" : "down", p.Up ? "green" : "red"))));
    const tbody = h("tbody", {
        class: expanded && paths.length ? "pf-m-expanded" : "",
        dataset: { map: m.Name, mapPath: m.path, health: m.Health || "" },
    }, row);
    if (paths.length)
        tbody.append(expandableRow(expanded, 9,
                                   nestedTable("map-path-table", `Paths of ${m.Name}`,
                                               ["Device", "H:C:T:L", "Device-mapper", "Device state",
                                                   "Path checker", "Path"], rows)));
    return tbody;
}

export function renderSessions(ctx) {
    const { store } = ctx;
    const sessions = store.list(IFACE.session).sort((a, b) => compareNames(a.Name, b.Name));
    $("#sessions-card").hidden = sessions.length === 0;
    const items = sessions.map(s => ({ s, host: hostName(store, s.Host) }));
    syncKeyed($("#session-rows"), items, it => it.s.path, it => JSON.stringify(it), ({ s, host }) =>
        h("tr", { dataset: { session: s.Name } },
          h("td", { dataset: { label: "Target" }, class: "san-mono" }, s.TargetName),
          h("td", { dataset: { label: "Portal" }, class: "san-mono" }, s.Portal),
          h("td", { dataset: { label: "State" }, class: "session-state" }, stateLabel(s.State)),
          h("td", { dataset: { label: "Session" } }, s.Name),
          h("td", { dataset: { label: "Host" } }, host)));
}

/* Jobs: running ones with their progress; finished ones for a few seconds, then gone. */
export function renderJobs(ctx) {
    const { store, ui } = ctx;
    const now = performance.now();
    const jobs = store.list(IFACE.job);
    const visible = [];
    let nextExpiry = Infinity;
    for (const job of jobs) {
        if (job.Finished) {
            if (!ui.jobFinishedAt.has(job.path))
                ui.jobFinishedAt.set(job.path, ctx.firstRenderDone ? now : -Infinity);
            const left = ui.jobFinishedAt.get(job.path) + JOB_DONE_VISIBLE_MS - now;
            if (left <= 0)
                continue;
            nextExpiry = Math.min(nextExpiry, left);
        }
        visible.push(job);
    }
    for (const path of ui.jobFinishedAt.keys())
        if (!store.get(path, IFACE.job))
            ui.jobFinishedAt.delete(path);
    if (nextExpiry < Infinity)
        ctx.renderLater(nextExpiry + 20);
    visible.sort((a, b) => (a.StartTime || 0) - (b.StartTime || 0));
    $("#jobs-card").hidden = visible.length === 0;
    syncKeyed($("#jobs"), visible, j => j.path, j => JSON.stringify(j), job => buildJob(ctx, job));
}

export function jobDescription(store, job) {
    const what = OPERATIONS[job.Operation] || job.Operation || "Job";
    const objects = (job.Objects || []).map(p => hostName(store, p));
    const on = objects.length && objects.length <= 4 ? ` (${objects.join(", ")})` : "";
    return what + on;
}

function buildJob(ctx, job) {
    const pct = job.Finished ? 100 : jobPercent(job.Progress);
    const status = job.Finished ? (job.Success ? "success" : "danger") : "";
    let text = jobDescription(ctx.store, job);
    if (job.Finished)
        text += job.Success ? ": done" : `: failed${job.Message ? ": " + job.Message : ""}`;
    const el = h("div", {
        class: "san-job pf-l-stack__item",
        dataset: { job: job.path, operation: job.Operation, finished: job.Finished ? "true" : "false" },
    }, progress(text, pct, status));
    if (job.Cancelable && !job.Finished)
        el.append(h("button", {
            class: "pf-c-button pf-m-link pf-m-inline cancel-job",
            type: "button",
            onclick: () => ctx.actions.cancelJob(job.path),
        }, "Cancel"));
    return el;
}
