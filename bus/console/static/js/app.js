// The console shell: sign-in, role-aware navigation and hash routing (#/page/arg). Only ids and filters
// go in the fragment, never the key.
import { api, key, Problem, whoami } from "./api.js";
import { config } from "./config.js";
import { clear, h, problem } from "./ui.js";
import * as audit from "./pages/audit.js";
import * as catalogue from "./pages/catalogue.js";
import * as grants from "./pages/grants.js";
import * as incidents from "./pages/incidents.js";
import * as lineage from "./pages/lineage.js";
import * as record from "./pages/record.js";
import * as subjects from "./pages/subjects.js";
import * as usage from "./pages/usage.js";

const PAGES = {
  record: [record.render, ["auditor"]],
  lineage: [lineage.render, ["auditor"]],
  subjects: [subjects.render, ["auditor"]],
  audit: [audit.render, ["auditor"]],
  catalogue: [catalogue.render, ["agency", "reviewer", "auditor"]],
  review: [catalogue.renderQueue, ["reviewer"]],
  grants: [grants.render, ["agency", "auditor"]],
  incidents: [incidents.render, ["auditor"]],
  usage: [usage.render, ["auditor"]],
};

const view = document.getElementById("view");
const loginForm = document.getElementById("login");
const nav = document.getElementById("nav");
let me = null;

function may(roles) {
  return me && (me.roles.includes("admin") || roles.some((r) => me.roles.includes(r)));
}

function showNav() {
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a")) a.hidden = !may(a.dataset.roles.split(" "));
  const who = document.getElementById("who");
  who.textContent = me.id;
  who.title = `roles: ${me.roles.join(", ")}`;
  document.getElementById("logout").hidden = false;
}

function firstPage() {
  const a = [...nav.querySelectorAll("a")].find((x) => !x.hidden);
  return a ? a.getAttribute("href") : "#/catalogue";
}

async function route() {
  if (!me) return;
  const raw = location.hash.replace(/^#\/?/, "");
  const [path] = raw.split("?");
  const [name, ...rest] = path.split("/");
  const arg = rest.map(decodeURIComponent).join("/");
  const entry = PAGES[name];
  if (!entry) { location.replace(firstPage()); return; }
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const [render, roles] = entry;
  if (!may(roles)) {
    clear(view, h("div", { class: "card" }, h("h1", {}, "Not available"),
      h("p", {}, `This page needs one of the roles: ${roles.join(", ")}. Your key has: ${me.roles.join(", ")}.`)));
    view.dataset.ready = name;
    return;
  }
  clear(view);
  delete view.dataset.ready;
  try {
    await render(view, arg, me);
  } catch (err) {
    view.append(problem(err));
  }
  view.dataset.ready = name; // the page has its data (tests and screenshots wait for this)
  view.focus({ preventScroll: true });
}

async function signIn(value) {
  key.set(value);
  try {
    me = await whoami();
  } catch (err) {
    key.clear();
    me = null;
    throw err;
  }
  loginForm.remove();
  showNav();
  if (!location.hash || location.hash === "#") location.replace(firstPage());
  await route();
}

loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("key");
  const out = document.getElementById("login-error");
  out.replaceChildren();
  try {
    await signIn(input.value.trim());
    input.value = "";
  } catch (err) {
    out.replaceChildren(problem(err));
  }
});

document.getElementById("logout").addEventListener("click", () => {
  key.clear();
  location.hash = "";
  location.reload();
});

window.addEventListener("hashchange", route);

(async () => {
  try {
    Object.assign(config, await api("/console/config.json"));
    document.getElementById("version").textContent = `databus ${config.version}`;
  } catch (err) { /* the console works without it */ }
  const saved = key.get();
  if (saved) {
    try { await signIn(saved); } catch (err) {
      if (err instanceof Problem) document.getElementById("login-error").replaceChildren(problem(err));
    }
  }
})();
