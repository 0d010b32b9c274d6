/* The page's dialogs. A dialog is never left half done: while its call runs it shows progress;
 * on failure it stays open with the error inline (.dialog-error); on success it closes. If the
 * user closed it meanwhile, a failure goes to the page's alerts instead. */

import { IFACE, MANAGER, FIND_MULTIPATHS, parseLunList, rawLunList, checkWwnPair, jobPercent }
    from "./model.js";
import { h, $, spinner, progress } from "./dom.js";
import { errorAlert, showPageError } from "./alerts.js";
import { TRANSPORTS, hostName, jobDescription } from "./views.js";

const A_SV = "a{sv}";

class Modal {
    constructor(id) {
        this.box = document.getElementById(id);
        this.backdrop = this.box.closest(".pf-c-backdrop");
        this.form = $("form", this.box);
        this.submit = $("footer .pf-m-primary", this.box);
        this.submitText = this.submit.textContent;
        this.errorBox = $(".dialog-error-box", this.box);
        this.progressBox = $(".dialog-progress", this.box);
        this.seq = 0;                  // bumped on open and close: a late answer knows it is late
        this.busy = false;
        this.opener = null;
        this.jobOperation = "";
        this.jobsBefore = new Set();
        // While its call runs a dialog stays: closed, it could be opened and submitted again
        // with the first call still running (two vHBAs for one click).
        this.closers = [...this.box.querySelectorAll(".dialog-close, footer .pf-m-link")];
        for (const b of this.closers)
            b.addEventListener("click", () => this.busy || this.close());
        this.backdrop.addEventListener("keydown", ev => {
            if (ev.key === "Escape") {
                ev.preventDefault();
                if (!this.busy)
                    this.close();
            }
        });
        this.form.addEventListener("submit", ev => {
            ev.preventDefault();
            if (!this.busy && !this.submit.disabled)
                this.onSubmit();
        });
    }

    get isOpen() {
        return !this.backdrop.hidden;
    }

    open() {
        this.seq++;
        this.opener = document.activeElement;
        this.clearError();
        this.setBusy(false);
        this.backdrop.hidden = false;
        document.body.classList.add("pf-c-backdrop__open");
        const first = this.box.querySelector("select:not(:disabled), input:not(:disabled)") || this.submit;
        first.focus();
    }

    close() {
        if (!this.isOpen)
            return;
        this.seq++;
        this.setBusy(false);
        this.backdrop.hidden = true;
        if (![...document.querySelectorAll(".pf-c-backdrop")].some(b => !b.hidden))
            document.body.classList.remove("pf-c-backdrop__open");
        if (this.opener && document.contains(this.opener))
            this.opener.focus();
    }

    setBusy(busy) {
        this.busy = busy;
        this.submit.classList.toggle("pf-m-progress", busy);
        this.submit.classList.toggle("pf-m-in-progress", busy);
        this.submit.replaceChildren(...(busy ? [h("span", { class: "pf-c-button__progress" }, spinner("md"))] : []),
                                    this.submitText);
        this.submit.setAttribute("aria-busy", busy ? "true" : "false");
        for (const el of [...this.form.querySelectorAll("input, select"), ...this.closers])
            el.disabled = busy;
        if (busy)
            this.submit.disabled = true;
        else
            this.validate();
        if (this.progressBox) {
            this.progressBox.hidden = !busy;
            if (!busy)
                this.progressBox.replaceChildren();
        }
    }

    validate() {
        this.submit.disabled = false;
    }

    clearError() {
        this.errorBox.replaceChildren();
    }

    showError(ex, what) {
        this.errorBox.replaceChildren(errorAlert(ex, what, { inline: true, cls: "dialog-error" }));
    }

    /* Run `call` (returning cockpit's promise) as this dialog's action. */
    async run(ctx, what, call, onSuccess, jobOperation = "") {
        const seq = this.seq;
        this.clearError();
        this.jobOperation = jobOperation;
        this.jobsBefore = new Set(ctx.store.list(IFACE.job).map(j => j.path));
        this.setBusy(true);
        this.update(ctx);
        let result;
        try {
            result = await call();
        } catch (ex) {
            if (seq === this.seq) {
                this.setBusy(false);
                this.showError(ex, what);
            } else {
                showPageError(ex, what);
            }
            return;
        }
        if (seq === this.seq)
            this.close();
        try {
            onSuccess(result);
        } catch (ex) {                 // the call worked; only showing its result failed
            showPageError(ex, what);
        }
    }

    /* The progress of this dialog's call, from its Job object if it has one. */
    update(ctx) {
        if (!this.busy || !this.progressBox)
            return;
        if (!this.jobOperation) {
            if (!this.progressBox.firstChild)
                this.progressBox.append(h("p", { class: "san-waiting" }, spinner("sm"), " ", this.waitText || "Working…"));
            return;
        }
        const running = ctx.store.list(IFACE.job).filter(j => j.Operation === this.jobOperation);
        // Only a job that appeared after the call began: another user's job of the same kind
        // is not this dialog's progress.
        const job = running.find(j => !this.jobsBefore.has(j.path) && !j.Finished) ||
                    running.find(j => !this.jobsBefore.has(j.path));
        const pct = job ? (job.Finished ? 100 : jobPercent(job.Progress)) : 0;
        const text = jobDescription(ctx.store, job || { Operation: this.jobOperation });
        this.progressBox.replaceChildren(progress(text, pct));
        if (job)
            this.progressBox.dataset.job = job.path;
    }
}

function setFieldError(input, errorEl, message) {
    errorEl.textContent = message || "";
    errorEl.hidden = !message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
}

function hostOption(store, host, selected) {
    const fc = store.get(host.path, IFACE.fc);
    const extra = fc?.WWPN ? ` – ${fc.WWPN}` : "";
    const kind = TRANSPORTS[host.Transport] || host.Transport;
    return h("option", { value: host.path, selected: host.path === selected },
             `${host.Name} (${kind}${extra})`);
}

/* All dialogs of the page; `ctx` gives the store, the client and the page's callbacks. */
export function createDialogs(ctx) {
    const scan = new Modal("scan-dialog");
    const vhba = new Modal("vhba-dialog");
    const mpath = new Modal("mpath-dialog");
    const confirm = new Modal("confirm-dialog");

    const call = (path, iface, method, args, type) =>
        ctx.client.call(path, iface, method, args, { type });

    /* Scan */
    const scanHost = $("#scan-host");
    const scanLuns = $("#scan-luns");
    const scanError = $("#scan-luns-error");
    const unchecked = () => Boolean(window.cockpit?.location?.options?.unchecked);

    scan.validate = function () {
        if (unchecked()) {
            setFieldError(scanLuns, scanError, "");
            this.submit.disabled = false;
            return;
        }
        const parsed = parseLunList(scanLuns.value);
        setFieldError(scanLuns, scanError, parsed.error);
        this.submit.disabled = Boolean(parsed.error);
    };
    scanLuns.addEventListener("input", () => scan.validate());

    scan.onSubmit = function () {
        const hostPath = scanHost.value;
        const options = {};
        const luns = unchecked() ? rawLunList(scanLuns.value)
            : { t: "at", v: parseLunList(scanLuns.value).luns };
        if (luns.v && luns.v.length)
            options.luns = luns;
        const target = hostPath
            ? () => call(hostPath, IFACE.host, "Scan", [options], A_SV)
            : () => call(MANAGER, IFACE.manager, "ScanAll", [options], A_SV);
        const what = hostPath ? `scanning ${hostName(ctx.store, hostPath)} for LUNs` : "scanning for LUNs";
        this.run(ctx, what, target, ([added]) => ctx.onScanDone(added || []), "scan");
    };

    function openScan(hostPath = "") {
        const hosts = ctx.store.list(IFACE.host).sort((a, b) => a.Number - b.Number);
        scanHost.replaceChildren(h("option", { value: "", selected: !hostPath }, "All hosts"),
                                 ...hosts.map(x => hostOption(ctx.store, x, hostPath)));
        scanLuns.value = "";
        scan.open();
        scan.validate();
    }

    /* Create vHBA */
    const vParent = $("#vhba-parent");
    const vWwpn = $("#vhba-wwpn");
    const vWwnn = $("#vhba-wwnn");
    const vPersistent = $("#vhba-persistent");
    vhba.waitText = "Waiting for the new port to log in to the fabric…";

    vhba.validate = function () {
        const pair = checkWwnPair(vWwpn.value, vWwnn.value);
        setFieldError(vWwpn, $("#vhba-wwpn-error"), pair.errors.wwpn);
        setFieldError(vWwnn, $("#vhba-wwnn-error"), pair.errors.wwnn);
        const noParent = !vParent.value;
        setFieldError(vParent, $("#vhba-parent-error"), noParent ? "No FC port here can create vHBAs (NPIV)" : "");
        this.submit.disabled = !pair.valid || noParent;
    };
    for (const el of [vWwpn, vWwnn, vParent])
        el.addEventListener("input", () => vhba.validate());

    vhba.onSubmit = function () {
        const parent = vParent.value;
        const pair = checkWwnPair(vWwpn.value, vWwnn.value);
        const options = { persistent: { t: "b", v: vPersistent.checked } };
        if (pair.wwpn) {
            options.wwpn = { t: "s", v: pair.wwpn };
            options.wwnn = { t: "s", v: pair.wwnn };
        }
        this.run(ctx, `creating a vHBA on ${hostName(ctx.store, parent)}`,
                 () => call(parent, IFACE.fc, "CreateVhba", [options], A_SV),
                 ([path]) => ctx.onVhbaCreated(path));
    };

    function openVhba(parentPath = "") {
        const parents = ctx.store.list(IFACE.host)
                .filter(x => ctx.store.get(x.path, IFACE.fc)?.NpivCapable)
                .sort((a, b) => a.Number - b.Number);
        const selected = parentPath || parents.find(x => {
            const fc = ctx.store.get(x.path, IFACE.fc);
            return fc.PortState === "Online" && fc.VportsInUse < fc.MaxVports;
        })?.path || parents[0]?.path || "";
        vParent.replaceChildren(...parents.map(x => {
            const fc = ctx.store.get(x.path, IFACE.fc);
            return h("option", { value: x.path, selected: x.path === selected },
                     `${x.Name} – ${fc.WWPN} (${fc.PortState}, ${fc.VportsInUse}/${fc.MaxVports} vports)`);
        }));
        vWwpn.value = "";
        vWwnn.value = "";
        vPersistent.checked = false;
        vhba.open();
        vhba.validate();
    }

    /* Multipath settings */
    const mFriendly = $("#mpath-friendly");
    const mFind = $("#mpath-find");
    mpath.waitText = "multipathd is reloading its configuration…";
    let mpathShown = {};
    mpath.onSubmit = function () {
        // Only what the user changed: the dialog shows the values in force, which may come from
        // the admin's multipath.conf; writing them back into sanbusd's drop-in would pin them.
        const config = {};
        if (mFriendly.checked !== mpathShown.friendly)
            config.user_friendly_names = { t: "b", v: mFriendly.checked };
        if (mFind.value !== mpathShown.find)
            config.find_multipaths = { t: "s", v: mFind.value };
        if (Object.keys(config).length === 0) {
            this.close();
            return;
        }
        this.run(ctx, "changing the multipath settings",
                 () => call(MANAGER, IFACE.manager, "SetMultipathConfig", [config, {}], "a{sv}a{sv}"),
                 () => {});
    };

    function openMpathSettings() {
        const conf = ctx.store.get(MANAGER, IFACE.manager)?.MultipathConfig || {};
        mFriendly.checked = Boolean(conf.UserFriendlyNames);
        const find = FIND_MULTIPATHS.includes(conf.FindMultipaths) ? conf.FindMultipaths : "strict";
        mFind.value = find;
        mpathShown = { friendly: mFriendly.checked, find: mFind.value };
        $("#mpath-dropin").textContent = conf.DropIn
            ? `Written to ${conf.DropIn}; /etc/multipath.conf is left as it is.` : "";
        mpath.open();
        mpath.validate();
    }

    /* Confirmations: delete vHBA, flush map, create all maps */
    confirm.onSubmit = function () {
        const c = this.current;
        this.run(ctx, c.what, c.action, c.onSuccess || (() => {}), c.jobOperation || "");
    };

    function openConfirm(c) {
        confirm.current = c;
        $("#confirm-title").textContent = c.title;
        $("#confirm-body").replaceChildren(...c.body);
        confirm.submitText = c.submitLabel;
        confirm.submit.classList.toggle("pf-m-danger", Boolean(c.danger));
        confirm.submit.classList.toggle("pf-m-primary", !c.danger);
        confirm.waitText = c.waitText || "Working…";
        confirm.open();
    }

    function deleteVhba(path) {
        const v = ctx.store.get(path, IFACE.vhba);
        if (!v)
            return;
        const lines = [h("p", null, `The virtual HBA ${v.WWPN} on ${hostName(ctx.store, v.Parent)} is removed, ` +
                         "and with it its SCSI host and its LUN paths.")];
        if (v.Persistent)
            lines.push(h("p", null, "Its persistent record is removed too."));
        openConfirm({
            title: `Delete vHBA ${v.Name}?`,
            body: lines,
            submitLabel: "Delete",
            danger: true,
            what: `deleting the vHBA ${v.Name}`,
            waitText: "Deleting…",
            action: () => call(path, IFACE.vhba, "Delete", [{}], A_SV),
        });
    }

    function flushMap(path) {
        const m = ctx.store.get(path, IFACE.map);
        if (!m)
            return;
        const deferred = h("input", { class: "pf-c-check__input", type: "checkbox", id: "flush-deferred" });
        openConfirm({
            title: `Flush multipath map ${m.Name}?`,
            body: [
                h("p", null, `The map ${m.DmDevice || m.Name} is removed through multipathd; its paths stay as plain LUNs. ` +
                  "A map that is in use is not removed."),
                h("div", { class: "pf-c-form__group san-gap" },
                  h("div", { class: "pf-c-check" }, deferred,
                    h("label", { class: "pf-c-check__label", for: "flush-deferred" },
                      "Remove when no longer in use"))),
            ],
            submitLabel: "Flush",
            danger: true,
            what: `flushing the multipath map ${m.Name}`,
            waitText: "Flushing…",
            action: () => call(path, IFACE.map, "Flush", [{ deferred: { t: "b", v: deferred.checked } }], A_SV),
        });
    }

    function createAllMaps() {
        const all = h("input", { class: "pf-c-check__input", type: "checkbox", id: "mpath-all-eligible" });
        openConfirm({
            title: "Create multipath maps",
            body: [
                h("p", null, "Make a multipath map for every WWID with two or more paths. Maps that " +
                  "exist are kept as they are."),
                h("div", { class: "pf-c-form__group san-gap" },
                  h("div", { class: "pf-c-check" }, all,
                    h("label", { class: "pf-c-check__label", for: "mpath-all-eligible" },
                      "Also LUNs with a single path"))),
            ],
            submitLabel: "Create maps",
            danger: false,
            what: "creating multipath maps",
            jobOperation: "multipath-create",
            action: () => call(MANAGER, IFACE.manager, "CreateAllMultipathMaps",
                               [all.checked ? { all_eligible: { t: "b", v: true } } : {}], A_SV),
            onSuccess: ([maps]) => ctx.onMapsCreated(maps || []),
        });
    }

    async function cancelJob(path) {
        try {
            await call(path, IFACE.job, "Cancel", [{}], A_SV);
        } catch (ex) {
            showPageError(ex, "cancelling the job");
        }
    }

    return {
        openScan,
        openVhba,
        openMpathSettings,
        deleteVhba,
        flushMap,
        createAllMaps,
        cancelJob,
        update() {
            for (const m of [scan, vhba, mpath, confirm])
                m.update(ctx);
        },
    };
}
