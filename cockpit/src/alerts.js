/* Failures in words, as PatternFly danger alerts: on the page (#alerts) or inline in a dialog. */

import { describeError } from "./model.js";
import { h, icon } from "./dom.js";

const ICONS = {
    danger: "fa-exclamation-circle",
    warning: "fa-exclamation-triangle",
    info: "fa-info-circle",
    success: "fa-check-circle",
};

/* A PF alert. `onClose`: show a close button that calls it. */
export function alertBox({ variant = "danger", title, lines = [], inline = false, onClose, cls }) {
    const box = h("div", {
        class: ["pf-c-alert", `pf-m-${variant}`, inline && "pf-m-inline", cls],
        "aria-label": `${variant} alert`,
    },
    h("div", { class: "pf-c-alert__icon" }, icon(`fa-fw ${ICONS[variant]}`)),
    h("p", { class: "pf-c-alert__title" },
      h("span", { class: "pf-screen-reader" }, `${variant} alert: `), title));
    if (onClose) {
        box.append(h("div", { class: "pf-c-alert__action" },
                     h("button", {
                         class: "pf-c-button pf-m-plain alert-close",
                         type: "button",
                         "aria-label": "Close",
                         onclick: onClose,
                     }, icon("fa-times"))));
    }
    const text = lines.filter(Boolean);
    if (text.length)
        box.append(h("div", { class: "pf-c-alert__description" }, text.map(t => h("p", null, t))));
    return box;
}

/* The alert for a failed call; data-error-name carries the D-Bus error name (or the channel's
 * problem), so a test and a curious admin can tell failures apart. */
export function errorAlert(ex, what, { inline = false, onClose, cls } = {}) {
    const info = describeError(ex, what);
    const box = alertBox({
        variant: "danger",
        title: info.title,
        lines: [info.message, info.hint],
        inline,
        onClose,
        cls,
    });
    box.dataset.errorName = info.name;
    return box;
}

/* A failure on the page: closable, newest last. */
export function showPageError(ex, what) {
    const list = document.getElementById("alerts");
    const item = h("li", { class: "pf-c-alert-group__item" });
    item.append(errorAlert(ex, what, { inline: true, onClose: () => item.remove() }));
    list.append(item);
    return item;
}
