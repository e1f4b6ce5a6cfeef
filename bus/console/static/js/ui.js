// DOM helpers: every datum goes in as text (never innerHTML), so a value can never become markup.
import { Problem } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A time in the viewer's zone, with UTC on hover.
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", {}, iso);
  return h("time", { datetime: d.toISOString(), title: `${d.toISOString().replace(".000", "")} (UTC)` },
    d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }));
}

// An id in monospace with a copy button.
export function idOf(value, href) {
  if (value === undefined || value === null || value === "") return h("span", { class: "muted" }, "—");
  const text = String(value);
  const label = href ? h("a", { href, class: "id" }, text) : h("span", { class: "id" }, text);
  const copy = h("button", { type: "button", class: "copy", title: "Copy", "aria-label": `Copy ${text}`,
    onclick: () => navigator.clipboard && navigator.clipboard.writeText(text) }, "copy");
  return h("span", { class: "copyable" }, label, copy);
}

export function pill(text) { return h("span", { class: `pill ${text || ""}` }, text || "—"); }

// The problem+json of a refused call: title, detail and code, linking to the code's page.
export function problem(err) {
  if (!(err instanceof Problem)) return h("div", { class: "problem", role: "alert" }, String(err));
  return h("div", { class: "problem", role: "alert", dataset: { code: err.code } },
    h("strong", {}, err.title), err.detail ? h("div", {}, err.detail) : null,
    h("div", {}, "code: ", err.type ? h("a", { href: new URL(err.type, location.href).pathname }, h("code", {}, err.code))
      : h("code", {}, err.code)));
}

export function table(columns, rows, { rowClass } = {}) {
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", { class: rowClass ? rowClass(r) : null },
      columns.map(([, cell]) => h("td", {}, cell(r)))))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing to show")))));
}

// Runs a long action: disables the button, shows progress, shows the problem on failure.
export async function busy(button, out, what, fn) {
  if (button) button.disabled = true;
  const note = h("div", { class: "progress", role: "status" }, what);
  out.replaceChildren(note);
  try {
    return await fn();
  } catch (err) {
    out.replaceChildren(problem(err));
    return undefined;
  } finally {
    note.remove();
    if (button) button.disabled = false;
  }
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", {}, h("label", { for: id }, label), input);
}

export function formValues(form) {
  return Object.fromEntries([...new FormData(form).entries()].map(([k, v]) => [k, String(v).trim()]));
}

// datetime-local value (viewer's zone) -> ISO 8601 UTC, or "".
export function isoOf(local) { return local ? new Date(local).toISOString() : ""; }

export function fmtBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "kB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log10(n) / 3));
  return `${(n / 10 ** (3 * i)).toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Offset pagination over a list endpoint: prev/next buttons and "n–m of total".
export function pager({ offset, limit, count, total, onPage }) {
  const end = offset + count;
  return h("div", { class: "pager" },
    h("button", { type: "button", class: "secondary", disabled: offset <= 0,
      onclick: () => onPage(Math.max(0, offset - limit)) }, "‹ Previous"),
    h("span", { class: "muted" }, count ? `${offset + 1}–${end}${total !== undefined ? ` of ${total}` : ""}` : "none"),
    h("button", { type: "button", class: "secondary",
      disabled: total !== undefined ? end >= total : count < limit,
      onclick: () => onPage(offset + limit) }, "Next ›"));
}
