/* sanbusd's objects as plain data, kept current by ONE cockpit.dbus watch.
 *
 * Why not client.proxies(): at 16,384 LUN paths creating the proxy objects alone costs ~1.8 s
 * of browser CPU; the watch's "notify" events carry the same data as JSON, and merging them
 * into plain objects is cheap. Nothing here touches the DOM or globals at import time, so the
 * merge (applyNotify) is tested in Node. */

/* A D-Bus variant arrives as {t: "signature", v: value} (dbus-json3); inside aa{sv} and a{sv}
 * properties every value is one. Unwrapped recursively, so views see plain values. */
export function unwrap(value) {
    if (value === null || typeof value !== "object")
        return value;
    if (Array.isArray(value)) {
        let out = null;
        for (let i = 0; i < value.length; i++) {
            const v = value[i];
            if (v !== null && typeof v === "object") {
                out = out || value.slice();
                out[i] = unwrap(v);
            }
        }
        return out || value;
    }
    const keys = Object.keys(value);
    if (keys.length === 2 && typeof value.t === "string" && "v" in value)
        return unwrap(value.v);
    const out = {};
    for (const k of keys)
        out[k] = unwrap(value[k]);
    return out;
}

export class Store {
    constructor() {
        this.reset();
    }

    reset() {
        this.objects = {};              // path -> iface -> props
        this.byIface = new Map();       // iface -> Map(path -> props): views iterate one kind
        this.dirty = new Set();         // interfaces changed since takeDirty()
    }

    /* One notify: {path: {iface: {props...} | null}}; null = the interface went away, a dict is
     * the whole interface (added) or the properties that changed (merged). */
    applyNotify(data) {
        for (const path in data) {
            const ifaces = data[path];
            if (!ifaces)
                continue;
            for (const iface in ifaces) {
                const props = ifaces[iface];
                this.dirty.add(iface);
                if (props === null) {
                    this.removeIface(path, iface);
                    continue;
                }
                let obj = this.objects[path];
                if (!obj)
                    obj = this.objects[path] = {};
                let cur = obj[iface];
                if (!cur) {
                    // A copy: cockpit's own cache keeps (and later merges into) the object sent
                    cur = obj[iface] = {};
                    let index = this.byIface.get(iface);
                    if (!index)
                        this.byIface.set(iface, index = new Map());
                    index.set(path, cur);
                }
                for (const k in props) {
                    const v = props[k];
                    cur[k] = v !== null && typeof v === "object" ? unwrap(v) : v;
                }
            }
        }
    }

    removeIface(path, iface) {
        const obj = this.objects[path];
        if (!obj)
            return;
        delete obj[iface];
        this.byIface.get(iface)?.delete(path);
        if (Object.keys(obj).length === 0)
            delete this.objects[path];
    }

    get(path, iface) {
        const obj = this.objects[path];
        return obj ? obj[iface] : undefined;
    }

    /* [{path, ...props}] of every object with `iface`. */
    list(iface) {
        const index = this.byIface.get(iface);
        if (!index)
            return [];
        const out = [];
        for (const [path, props] of index)
            out.push({ path, ...props });
        return out;
    }

    /* The live property dicts of every object with `iface`, without copying (thousands of LUN
     * paths): read them, never change them. */
    values(iface) {
        const index = this.byIface.get(iface);
        return index ? [...index.values()] : [];
    }

    count(iface) {
        return this.byIface.get(iface)?.size ?? 0;
    }

    takeDirty() {
        const d = this.dirty;
        this.dirty = new Set();
        return d;
    }
}

/* The live connection: one watch on the whole tree, notify merged into `store`.
 * `onChange()` runs after every notify; `onClose(ex)` when the channel fails; `onOwner(name)`
 * when sanbusd's unique name changes (null: it left the bus). */
export function connect(cockpit, store, { root, onChange, onClose, onOwner = () => {}, timing = {} }) {
    // superuser "try": with administrative access on, calls come from root (polkit allows);
    // otherwise from the user, and polkit decides.
    const client = cockpit.dbus("org.example.SanStorage", { bus: "system", superuser: "try" });
    let closed = false;
    timing.mergeMs ??= 0;
    client.addEventListener("notify", (ev, data) => {
        const t0 = performance.now();
        store.applyNotify(data);
        timing.mergeMs += performance.now() - t0;
        onChange();
    });
    // The bridge says who owns the name: a unique name, or null while sanbusd is gone (then
    // no signal tells about its objects, and a new sanbusd's objects need a new watch).
    client.addEventListener("owner", (ev, owner) => {
        if (!closed)
            onOwner(owner || null);
    });
    client.addEventListener("close", (ev, options) => {
        if (closed)
            return;
        closed = true;
        onClose(options || {});
    });
    const watch = client.watch({ path_namespace: root });
    return {
        client,
        ready: watch,
        close() {
            closed = true;
            try {
                watch.remove();
            } catch (e) {
                // the channel may be gone already; nothing to undo then
            }
            client.close();
        },
    };
}
