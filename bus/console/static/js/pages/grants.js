// Grants: an owner's pending requests (approve / deny with a reason); the caller's grants with status,
// scenario, fields and the masking of each field; one grant.
import { api } from "../api.js";
import { busy, clear, field, h, idOf, pager, pill, table, when } from "../ui.js";

const LIMIT = 25;

function decisionCard(g, reload) {
  const reason = h("input", { name: "reason", class: "wide", maxlength: 4000, placeholder: "reason (recorded)" });
  const out = h("div");
  const act = (decision) => async (ev) => {
    await busy(ev.target, out, "Recording the decision…", async () => {
      const body = { decision };
      if (reason.value.trim()) body.reason = reason.value.trim();
      const r = await api(`/v1/grants/${encodeURIComponent(g.id)}/decision`, { method: "POST", body });
      clear(out, h("div", { class: "ok", role: "status" }, `Grant ${g.id} is now ${r.status}.`));
      setTimeout(reload, 800);
    });
  };
  return h("article", { class: "card pending-grant", dataset: { grant: g.id } },
    h("h3", {}, `${g.agency} asks for ${g.dataset}`),
    h("p", {}, "Scenario ", h("code", {}, g.scenario.code || "—"), ` — ${g.scenario.description || ""}`),
    h("p", {}, `Legal basis: ${g.legal_basis || "—"} · fields: ${g.fields.join(", ")}`,
      g.unmasked_fields.length ? ` · raw: ${g.unmasked_fields.join(", ")}` : ""),
    field("Reason", reason),
    h("button", { type: "button", onclick: act("approve") }, "Approve"),
    h("button", { type: "button", class: "danger", onclick: act("deny") }, "Deny"), out);
}

async function renderGrant(view, id) {
  const g = await api(`/v1/grants/${encodeURIComponent(id)}`);
  const view_ = await api(`/v1/grants/${encodeURIComponent(id)}/schema`);
  clear(view, h("h1", {}, "Grant ", idOf(g.id), " ", pill(g.status)),
    h("div", { class: "card" }, h("p", {}, `${g.agency} receives `, h("a", { href: `#/catalogue/${encodeURIComponent(g.dataset)}` }, g.dataset),
      " for scenario ", h("code", {}, g.scenario.code || "—"), ` — ${g.scenario.description || ""}`),
    h("p", {}, `Legal basis: ${g.legal_basis || "—"} · valid until `, when(g.valid_until), " · requested ", when(g.requested_at),
      " · decided ", when(g.decided_at), g.decision_reason ? ` — “${g.decision_reason}”` : ""),
    h("p", {}, "Delivered on ", h("code", {}, g.topic || "—"), " · ",
      h("a", { href: `#/lineage/${encodeURIComponent(g.dataset)}` }, "lineage"))),
    h("div", { class: "card" }, h("h2", {}, "Fields and masking"), table([
      ["field", (f) => h("code", {}, f.name)], ["masking", (f) => pill(f.masking)],
      ["sensitivity", (f) => f.sensitivity], ["semantic", (f) => f.semantic || "—"],
    ], (view_.schema && view_.schema.fields) || [])));
}

export async function render(view, arg, me) {
  if (arg) return renderGrant(view, arg);
  const pendingOut = h("div", { id: "pending-out" });
  const listOut = h("div", { id: "grants-out" });
  const status = h("select", { name: "status" }, ["", "active", "pending", "denied", "revoked", "expired", "suspended"]
    .map((s) => h("option", { value: s }, s || "any")));
  const admin = me.roles.includes("admin") || me.roles.includes("auditor");
  async function loadPending() {
    if (!me.roles.includes("agency")) return;
    const page = await api("/v1/grants", { params: { role: "owner", status: "pending", limit: 100 } });
    clear(pendingOut, page.grants.length ? page.grants.map((g) => decisionCard(g, loadPending))
      : h("p", { class: "muted" }, "No request waits for your decision."));
  }
  async function load(offset) {
    await busy(null, listOut, "Loading grants…", async () => {
      const params = { status: status.value, limit: LIMIT, offset };
      if (!admin) params.role = "grantee";
      const page = await api("/v1/grants", { params });
      clear(listOut, table([
        ["grant", (g) => idOf(g.id, `#/grants/${encodeURIComponent(g.id)}`)], ["dataset", (g) => g.dataset],
        ["agency", (g) => g.agency], ["status", (g) => pill(g.status)], ["scenario", (g) => g.scenario.code || "—"],
        ["fields", (g) => g.fields.join(", ")], ["raw fields", (g) => g.unmasked_fields.join(", ") || "—"],
        ["valid until", (g) => when(g.valid_until)],
      ], page.grants), pager({ offset, limit: LIMIT, count: page.grants.length, onPage: load }));
    });
  }
  clear(view, h("h1", {}, "Grants"),
    me.roles.includes("agency") ? h("section", { class: "card" }, h("h2", {}, "Requests waiting for your decision"), pendingOut) : null,
    h("section", { class: "card" }, h("h2", {}, admin ? "Every grant" : "Your grants"),
      h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); load(0); } }, field("Status", status),
        h("button", { type: "submit" }, "Filter")), listOut));
  await Promise.all([loadPending(), load(0)]);
}
