/* DOM building without innerHTML: names, WWIDs and messages come from the kernel and the
 * daemon, so they only ever become text nodes. */

/* h("td", {class: "x", dataset: {hctl: "1:0:0:1"}, colSpan: 3}, "text", node, [more]) */
export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
        for (const k in attrs) {
            const v = attrs[k];
            if (v === undefined || v === null || v === false)
                continue;
            if (k === "class")
                el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
            else if (k === "dataset")
                Object.assign(el.dataset, v);
            else if (k === "style")
                Object.assign(el.style, v);           // CSSOM: allowed by Cockpit's CSP
            else if (k.startsWith("on"))
                el.addEventListener(k.slice(2), v);
            else if (k.startsWith("aria-") || k === "role" || k === "for" || k === "form")
                el.setAttribute(k, v === true ? "true" : v);
            else
                el[k] = v;
        }
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children) {
        if (c === null || c === undefined || c === false)
            continue;
        if (Array.isArray(c))
            append(el, c);
        else
            el.append(c instanceof Node ? c : String(c));
    }
}

export function $(sel, root = document) {
    return root.querySelector(sel);
}

/* A Font Awesome icon (PatternFly ships fa-solid). */
export function icon(name, extra = "") {
    return h("i", { class: `fas ${name} ${extra}`.trim(), "aria-hidden": "true" });
}

/* A PatternFly label. */
export function label(text, color = "grey", cls = "") {
    const mod = color && color !== "grey" ? `pf-m-${color}` : "";
    return h("span", { class: ["pf-c-label", mod, cls] },
             h("span", { class: "pf-c-label__content" }, text));
}

/* PatternFly's spinner, as in a button in progress. */
export function spinner(size = "md") {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", `pf-c-spinner pf-m-${size}`);
    svg.setAttribute("role", "progressbar");
    svg.setAttribute("viewBox", "0 0 100 100");
    svg.setAttribute("aria-label", "Working");
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("class", "pf-c-spinner__path");
    c.setAttribute("cx", "50");
    c.setAttribute("cy", "50");
    c.setAttribute("r", "45");
    c.setAttribute("fill", "none");
    svg.append(c);
    return svg;
}

/* A PatternFly progress bar at `percent`, with its description. */
export function progress(description, percent, status = "") {
    const mod = status === "success" ? "pf-m-success" : status === "danger" ? "pf-m-danger" : "";
    return h("div", { class: ["pf-c-progress", "pf-m-sm", mod] },
             h("div", { class: "pf-c-progress__description" }, description),
             h("div", { class: "pf-c-progress__status", "aria-hidden": "true" },
               h("span", { class: "pf-c-progress__measure" }, `${percent}%`)),
             h("div", {
                 class: "pf-c-progress__bar",
                 role: "progressbar",
                 "aria-valuemin": "0",
                 "aria-valuemax": "100",
                 "aria-valuenow": String(percent),
                 "aria-label": description,
             }, h("div", { class: "pf-c-progress__indicator", style: { width: `${percent}%` } })));
}

/* Keep `parent`'s keyed children (those made by this function) in the order of `items`,
 * rebuilding only those whose signature changed: unchanged rows stay the same elements, so
 * focus, and a test's element references, survive unrelated updates. Children without a key
 * (a thead, an empty-state row) stay first. */
export function syncKeyed(parent, items, keyOf, sigOf, build) {
    const old = new Map();
    for (const c of parent.children)
        if (c._sanKey !== undefined)
            old.set(c._sanKey, c);
    const want = [];
    for (const item of items) {
        const key = keyOf(item);
        const sig = sigOf(item);
        let el = old.get(key);
        if (!el || el._sanSig !== sig) {
            el = build(item);
            el._sanKey = key;
            el._sanSig = sig;
        }
        want.push(el);
    }
    const keep = new Set(want);
    for (const el of old.values())
        if (!keep.has(el))
            el.remove();
    let cursor = null;
    for (const c of parent.children)
        if (c._sanKey !== undefined) {
            cursor = c;
            break;
        }
    for (const el of want) {
        if (el === cursor)
            cursor = cursor.nextElementSibling;
        else
            parent.insertBefore(el, cursor);
    }
}
