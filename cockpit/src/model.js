/* Pure helpers of the "SAN storage" page: no DOM, no cockpit, so `node --test` covers them. */

export const ROOT = "/org/example/SanStorage";
export const MANAGER = ROOT + "/Manager";
export const IFACE = {
    manager: "org.example.SanStorage.Manager",
    host: "org.example.SanStorage.ScsiHost",
    fc: "org.example.SanStorage.FcHost",
    lun: "org.example.SanStorage.Lun",
    vhba: "org.example.SanStorage.Vhba",
    map: "org.example.SanStorage.MultipathMap",
    session: "org.example.SanStorage.IscsiSession",
    job: "org.example.SanStorage.Job",
};

// The limits of ScanAll's "luns" option (data/org.example.SanStorage.xml).
export const MAX_LUN = 16383;
export const MAX_LUNS_PER_SCAN = 4096;

// find_multipaths values SetMultipathConfig accepts, "strict" (the default) first.
export const FIND_MULTIPATHS = ["strict", "no", "yes", "greedy", "smart"];

/* "27, 28, 30-32" -> {luns: [27, 28, 30, 31, 32]}; "" -> {luns: []} (no restriction).
 * Commas or blanks separate items; duplicates count once, as for the daemon. */
export function parseLunList(text) {
    const items = String(text ?? "").split(/[\s,]+/).filter(s => s !== "");
    const seen = new Set();
    for (const item of items) {
        const m = /^(\d+)(?:-(\d+))?$/.exec(item);
        if (!m) {
            if (/^-\d/.test(item))
                return { error: `"${item}" is negative: LUN numbers are 0 to ${MAX_LUN}` };
            return { error: `"${item}" is not a LUN number or a range like 30-32` };
        }
        const from = Number(m[1]);
        const to = m[2] === undefined ? from : Number(m[2]);
        if (from > MAX_LUN || to > MAX_LUN)
            return { error: `"${item}" is out of range: LUN numbers are 0 to ${MAX_LUN}` };
        if (from > to)
            return { error: `"${item}" is not a range: ${from} is greater than ${to}` };
        // Ranges are bounded by MAX_LUN, so expanding before counting stays small.
        for (let n = from; n <= to; n++)
            seen.add(n);
        if (seen.size > MAX_LUNS_PER_SCAN)
            return { error: `Too many LUNs: at most ${MAX_LUNS_PER_SCAN} in one scan` };
    }
    return { luns: [...seen].sort((a, b) => a - b) };
}

/* The unchecked scan (URL option "unchecked", for tests): the items as typed, split on commas,
 * so that the daemon's own validation is seen refusing them. Numbers go as "at"; anything else
 * as strings ("as"), a type the daemon refuses by name (a NaN could not even be encoded).
 * -> {t, v} */
export function rawLunList(text) {
    const t = String(text ?? "").trim();
    const items = t === "" ? [] : t.split(",").map(s => s.trim());
    return items.every(s => /^\d+$/.test(s))
        ? { t: "at", v: items.map(Number) }
        : { t: "as", v: items };
}

/* A WWN as the daemon accepts it (16 hex digits; 0x, colons, upper case allowed) ->
 * {wwn: "500a0981..."} in libvirt's form, or {error}; "" -> {wwn: ""} (not given). */
export function parseWwn(text) {
    const t = String(text ?? "").trim();
    if (t === "")
        return { wwn: "" };
    const bare = t.toLowerCase().replace(/^0x/, "").replace(/:/g, "");
    if (!/^[0-9a-f]{16}$/.test(bare))
        return { error: "A WWN is 16 hex digits, e.g. 5001a4a0aa000002 (0x and colons allowed)" };
    return { wwn: bare };
}

/* Both WWNs or neither: the daemon generates the pair, or takes both. */
export function checkWwnPair(wwpnText, wwnnText) {
    const wwpn = parseWwn(wwpnText);
    const wwnn = parseWwn(wwnnText);
    const out = { wwpn: wwpn.wwn, wwnn: wwnn.wwn, errors: {} };
    if (wwpn.error)
        out.errors.wwpn = wwpn.error;
    if (wwnn.error)
        out.errors.wwnn = wwnn.error;
    if (!wwpn.error && !wwnn.error && (wwpn.wwn === "") !== (wwnn.wwn === "")) {
        const missing = wwpn.wwn === "" ? "wwpn" : "wwnn";
        out.errors[missing] = "Give both WWPN and WWNN, or neither (then they are generated)";
    }
    out.valid = Object.keys(out.errors).length === 0;
    return out;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/* Bytes in IEC units as Cockpit shows them: 107374182400 -> "100 GiB", 0 -> "". */
export function formatBytes(bytes) {
    let n = Number(bytes);
    if (!Number.isFinite(n) || n <= 0)
        return "";
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) {
        n /= 1024;
        i++;
    }
    const text = n >= 100 || i === 0 ? String(Math.round(n)) : n.toFixed(1).replace(/\.0$/, "");
    return `${text} ${UNITS[i]}`;
}

/* "1:0:0:27" -> [1, 0, 0, 27]; numeric order, so host10 sorts after host9. */
export function hctlKey(hctl) {
    return String(hctl).split(":").map(Number);
}

export function compareHctl(a, b) {
    return compareKeys(hctlKey(a), hctlKey(b)) || (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0);
}

function compareKeys(x, y) {
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
        const d = (x[i] ?? -1) - (y[i] ?? -1);
        if (d !== 0 && !Number.isNaN(d))
            return d;
    }
    return 0;
}

/* Names as people sort them: host2 before host10, mpathb before mpathaa. One collator, as
 * localeCompare with options builds one per call (slow for thousands of maps). */
const collator = new Intl.Collator("en", { numeric: true });
export const compareNames = (a, b) => collator.compare(String(a ?? ""), String(b ?? ""));

/* A LUN object path's last element is H_C_T_L: its HCTL while the object is not (yet) known. */
export function hctlFromPath(path) {
    const last = String(path).split("/").pop();
    return /^\d+(_\d+){3}$/.test(last) ? last.replace(/_/g, ":") : last;
}

/* The kernel's SCSI device states, best first; what is not listed sits between. */
const LUN_STATE_RANK = {
    running: 0,
    created: 1,
    quiesce: 1,
    blocked: 3,
    "transport-offline": 4,
    offline: 4,
    cancel: 4,
    "cancel-offline": 4,
    del: 4,
    deleted: 4,
};

export function stateRank(state) {
    return Object.hasOwn(LUN_STATE_RANK, state) ? LUN_STATE_RANK[state] : 2;
}

/* The worst of a group's path states: a logical unit is only as good as its worst path. */
export function worstState(states) {
    let worst = "";
    let rank = -1;
    for (const s of states) {
        const r = stateRank(s);
        if (r > rank) {
            rank = r;
            worst = s;
        }
    }
    return worst;
}

/* A PF label color for a state, by what the state means. */
export function stateColor(state) {
    const s = String(state || "").toLowerCase();
    if (["running", "online", "active", "healthy", "logged_in", "ready", "up", "present",
        "re-created"].includes(s))
        return "green";
    if (["blocked", "degraded", "initializing", "created", "quiesce", "recovery", "shaky",
        "pending", "ghost", "not-responding"].includes(s))
        return "orange";
    if (["offline", "transport-offline", "failed", "faulty", "linkdown", "down", "free",
        "error", "deleted", "del", "cancel", "not present", "no fabric support",
        "fabric rejected wwn", "vport failed", "absent"].includes(s))
        return "red";
    return "grey";
}

/* LUN paths -> logical units: paths with the same WWID are one unit; a path without a WWID is
 * a unit of its own, keyed by its HCTL. `luns`: [{path, HCTL, WWID, State, ...}].
 * Groups come in the order of their first path's HCTL. */
export function groupLuns(luns) {
    const byKey = new Map();
    const sortKey = new Map();          // HCTL split once per path, not once per comparison
    for (const lun of luns) {
        const key = lun.WWID ? lun.WWID : "hctl:" + lun.HCTL;
        let g = byKey.get(key);
        if (!g) {
            g = { key, wwid: lun.WWID || "", paths: [] };
            byKey.set(key, g);
        }
        g.paths.push(lun);
        sortKey.set(lun, hctlKey(lun.HCTL));
    }
    const groups = [...byKey.values()];
    const byHctl = (a, b) => compareKeys(sortKey.get(a), sortKey.get(b));
    for (const g of groups) {
        if (g.paths.length > 1)
            g.paths.sort(byHctl);
        const first = g.paths[0];
        g.first = first.HCTL;
        g.vendor = first.Vendor || "";
        g.model = first.Model || "";
        g.size = Math.max(...g.paths.map(p => Number(p.Size) || 0));
        g.state = worstState(g.paths.map(p => p.State));
        const maps = g.paths.map(p => p.MultipathMap).filter(m => m && m !== "/");
        g.mapPath = maps.length ? maps[0] : "";
    }
    groups.sort((a, b) => byHctl(a.paths[0], b.paths[0]));
    return groups;
}

/* Case-insensitive match of a group against the filter text: WWID, HCTL, block device,
 * vendor/model, map name. */
export function groupMatches(group, text, mapName = "") {
    const t = String(text || "").trim().toLowerCase();
    if (!t)
        return true;
    const hay = [group.wwid, `${group.vendor} ${group.model}`, mapName];
    for (const p of group.paths)
        hay.push(p.HCTL, p.BlockDevice);
    return hay.some(s => s && String(s).toLowerCase().includes(t));
}

/* Groups holding a new path first (in their own order), then the rest. */
export function newFirst(groups, newHctls) {
    if (!newHctls || newHctls.size === 0)
        return groups;
    const fresh = [];
    const rest = [];
    for (const g of groups)
        (g.paths.some(p => newHctls.has(p.HCTL)) ? fresh : rest).push(g);
    return fresh.concat(rest);
}

/* One page of `items` (1-based page, clamped) with the text of PF's pagination. */
export function paginate(items, page, perPage = 50) {
    const total = items.length;
    const pages = Math.max(1, Math.ceil(total / perPage));
    const p = Math.min(Math.max(1, Math.floor(Number(page) || 1)), pages);
    const start = (p - 1) * perPage;
    const slice = items.slice(start, start + perPage);
    const info = total === 0 ? "0 – 0 of 0" : `${start + 1} – ${start + slice.length} of ${total}`;
    return { items: slice, page: p, pages, total, info, hasPrev: p > 1, hasNext: p < pages };
}

/* A job's progress as a whole percentage, 0..100. */
export function jobPercent(progress) {
    const n = Number(progress);
    if (!Number.isFinite(n))
        return 0;
    return Math.round(Math.min(1, Math.max(0, n)) * 100);
}

/* The scan's result in words: added LUN paths as HCTLs. */
export function scanResultText(hctls) {
    if (!hctls.length)
        return "No new LUNs";
    const sorted = [...hctls].sort(compareHctl);
    return `Found ${sorted.length} new LUN${sorted.length === 1 ? "" : "s"}: ${sorted.join(", ")}`;
}

const HINT_ADMIN = "Turn on administrative access in Cockpit, or ask an administrator to add " +
    "you to the sanadmin group.";

/* Cockpit's channel problems (no D-Bus error name) in words. */
const PROBLEMS = {
    "not-found": "the SAN storage service is not available",
    disconnected: "the connection to Cockpit was lost",
    terminated: "the Cockpit session ended",
    "no-session": "the Cockpit session ended",
    timeout: "the connection timed out",
    "internal-error": "the system bus cannot be reached",
};
const PROBLEM_TEXT = {
    "not-found": "sanbusd (org.example.SanStorage) is not on the system bus. Check that sanbusd is " +
        "installed and that its service can start.",
    disconnected: "Reload the page to connect again.",
    terminated: "Log in again.",
    "no-session": "Log in again.",
    timeout: "Reload the page to connect again.",
};

function capitalize(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
}

/* A failed call in words. `ex`: cockpit's error (name = the D-Bus error name, message = the
 * daemon's text; channel failures have only problem), `what`: the action, e.g. "scanning for
 * LUNs". -> {name, title, message, hint}. */
export function describeError(ex, what) {
    const e = ex || {};
    const name = e.name || e.problem || "error";
    const short = String(name).split(".").pop();
    const action = what || "this action";
    const message = e.message ? String(e.message) : String(name);
    let title;
    let hint = "";
    if (short === "NotAuthorizedDismissed") {
        title = `Cancelled: authentication for ${action} was dismissed`;
    } else if (/^NotAuthorized/.test(short) && e.name) {
        title = `Not permitted: ${action} needs administrative rights`;
        hint = HINT_ADMIN;
    } else if (!e.name && e.problem) {
        if (e.problem === "access-denied") {
            title = `Not permitted: ${action} needs administrative rights`;
            hint = HINT_ADMIN;
        } else {
            title = `${capitalize(action)} failed: ${PROBLEMS[e.problem] || "the connection failed"}`;
        }
        if (!e.message || e.message === e.problem)
            return { name: String(name), title, message: PROBLEM_TEXT[e.problem] || e.problem, hint };
    } else {
        const titles = {
            TimedOut: `Timed out: ${action} did not finish in time`,
            Busy: `Busy: ${action} cannot be done now, the device is in use`,
            NotFound: `Not found: ${action} refers to something that is gone`,
            NoSpace: `Limit reached: no room for ${action}`,
            AlreadyExists: `Already exists: ${action} would make a duplicate`,
            InvalidArgs: `Invalid input: ${action} was refused`,
            InvalidArgument: `Invalid input: ${action} was refused`,
            NotSupported: `Not supported: ${action} is not possible here`,
            Cancelled: `Cancelled: ${action} was stopped`,
            ServiceUnknown: `${capitalize(action)} failed: the SAN storage service is not running`,
            NameHasNoOwner: `${capitalize(action)} failed: the SAN storage service is not running`,
        };
        title = titles[short] || `${capitalize(action)} failed`;
    }
    return { name: String(name), title, message, hint };
}
