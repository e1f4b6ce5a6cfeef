// Incidents (R15): open incidents with their evidence, resolve (admin); the emergency switch: what is
// suspended, suspend / resume an agency, dataset or grant (admin) after a confirmation.
import { api } from "../api.js";
import { busy, clear, field, h, pill, table, when } from "../ui.js";

function incidentCard(i, isAdmin, reload) {
  const note = h("input", { name: "note", class: "wide", maxlength: 2000, placeholder: "how it was handled" });
  const out = h("div");
  const resolve = async (ev) => {
    if (!note.value.trim()) { note.focus(); return; }
    await busy(ev.target, out, "Resolving…", async () => {
      await api(`/v1/incidents/${i.id}/resolve`, { method: "POST", body: { note: note.value.trim() } });
      reload();
    });
  };
  return h("article", { class: "card incident", dataset: { incident: String(i.id) } },
    h("h3", {}, `#${i.id} ${i.kind} `, pill(i.severity), " ", pill(i.status)),
    h("p", {}, `agency ${i.agency_id || "—"} · dataset ${i.dataset_id || "—"} · grant ${i.grant_id || "—"} · ${i.count} violations, `,
      "first ", when(i.first_at), ", last ", when(i.last_at)),
    h("details", {}, h("summary", {}, "Evidence"), h("pre", {}, JSON.stringify(i.evidence, null, 2))),
    isAdmin && i.status === "open" ? [field("Resolution note", note), h("button", { type: "button", onclick: resolve }, "Resolve")] : null,
    out);
}

function switchForm(reload) {
  const kind = h("select", { name: "kind" }, ["agency", "dataset", "grant"].map((k) => h("option", { value: k }, k)));
  const id = h("input", { name: "id", required: true, maxlength: 64 });
  const reason = h("input", { name: "reason", required: true, maxlength: 2000, class: "wide" });
  const out = h("div", { id: "switch-out" });
  const confirmBox = h("div");
  const ask = (action) => (ev) => {
    ev.preventDefault();
    if (!id.value.trim() || !reason.value.trim()) { (id.value.trim() ? reason : id).focus(); return; }
    const yes = h("button", { type: "button", class: action === "suspend" ? "danger" : "", id: "confirm-switch",
      onclick: async () => {
        await busy(yes, out, `${action === "suspend" ? "Suspending" : "Resuming"}…`, async () => {
          const r = await api(`/v1/emergency/${action}`, { method: "POST",
            body: { kind: kind.value, id: id.value.trim(), reason: reason.value.trim() } });
          confirmBox.replaceChildren();
          clear(out, h("div", { class: "ok", role: "status" }, `${r.kind || kind.value} ${r.id || id.value}: ${action} recorded.`));
          reload();
        });
      } }, `Yes, ${action} ${kind.value} ${id.value.trim()}`);
    clear(confirmBox, h("div", { class: "problem", role: "alertdialog" },
      h("strong", {}, `${action === "suspend" ? "Suspend" : "Resume"} ${kind.value} ${id.value.trim()}?`),
      h("div", {}, action === "suspend" ? "Its data stops flowing at once, and the switch is recorded in the audit log."
        : "Data flows again at once; recorded in the audit log."), yes,
      h("button", { type: "button", class: "secondary", onclick: () => confirmBox.replaceChildren() }, "Cancel")));
    yes.focus();
  };
  return h("form", { class: "filters", onsubmit: ask("suspend") }, field("Kind", kind), field("Id", id), field("Reason", reason),
    h("button", { type: "submit", class: "danger" }, "Suspend…"),
    h("button", { type: "button", class: "secondary", onclick: ask("resume") }, "Resume…"), confirmBox, out);
}

export async function render(view, _arg, me) {
  const isAdmin = me.roles.includes("admin");
  const status = h("select", { name: "status" }, ["open", "resolved", ""].map((s) => h("option", { value: s }, s || "any")));
  const list = h("div", { id: "incidents-out" });
  const suspended = h("div", { id: "suspensions-out" });
  let limit = 25;
  async function load() {
    await busy(null, list, "Loading incidents…", async () => {
      const page = await api("/v1/incidents", { params: { status: status.value, limit } });
      clear(list, h("p", { class: "muted" }, `${page.incidents.length} of ${page.total}`),
        page.incidents.map((i) => incidentCard(i, isAdmin, load)),
        page.total > page.incidents.length ? h("button", { type: "button", class: "secondary",
          onclick: () => { limit += 25; load(); } }, "Show more") : null);
    });
  }
  async function loadSuspensions() {
    const s = await api("/v1/emergency/suspensions");
    const rows = Object.entries(s).filter(([, v]) => Array.isArray(v)).flatMap(([k, v]) => v.map((id) => ({ kind: k, id })));
    clear(suspended, table([["kind", (r) => r.kind.replace(/s$/, "").replace(/ie$/, "y")], ["id", (r) => String(r.id)]], rows));
  }
  clear(view, h("h1", {}, "Incidents and emergency"),
    h("section", { class: "card" }, h("h2", {}, "Suspended now"), suspended,
      isAdmin ? [h("h2", {}, "Emergency switch"), switchForm(loadSuspensions)] : null),
    h("section", { class: "card" }, h("h2", {}, "Incidents"),
      h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); load(); } }, field("Status", status),
        h("button", { type: "submit" }, "Filter")), list));
  await Promise.all([load(), loadSuspensions()]);
}
