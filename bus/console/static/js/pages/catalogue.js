// Catalogue: browse and search entries, one entry with its schema versions and their differences and
// its overlap report (R9), and the reviewer's queue of submitted entries (approve / reject + comment).
import { api } from "../api.js";
import { busy, clear, field, h, idOf, pager, pill, table, when } from "../ui.js";

const LIMIT = 25;
const OPTIONS = {
  attribute: ["", "unconditional", "conditional", "none"],
  grade: ["", "general", "important", "core"],
  category: ["", "basic", "industry", "application"],
  status: ["", "draft", "submitted", "approved", "rejected", "retired"],
};

function select(name, value) {
  return h("select", { name }, OPTIONS[name].map((o) => h("option", { value: o, selected: o === value },
    o === "none" ? "not shared" : o || "any")));
}

export async function render(view, arg) {
  if (arg) return renderEntry(view, arg);
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const search = h("input", { name: "q", type: "search", value: params.get("q") || "", placeholder: "id, title, description" });
  const owner = h("input", { name: "owner", value: params.get("owner") || "", maxlength: 64 });
  const sel = Object.fromEntries(Object.keys(OPTIONS).map((k) => [k, select(k, params.get(k) || "")]));
  const out = h("div", { id: "catalogue-out" });
  async function load(offset) {
    await busy(null, out, "Loading the catalogue…", async () => {
      const query = { owner: owner.value.trim(), limit: LIMIT, offset };
      for (const [k, s] of Object.entries(sel)) query[k] = s.value;
      const page = await api("/v1/datasets", { params: query });
      const q = search.value.trim().toLowerCase();
      const rows = page.datasets.filter((d) => !q
        || [d.id, d.title, d.description].some((t) => (t || "").toLowerCase().includes(q)));
      clear(out, table([
        ["id", (d) => h("a", { href: `#/catalogue/${encodeURIComponent(d.id)}` }, d.id)], ["title", (d) => d.title],
        ["owner", (d) => d.owner], ["sharing", (d) => d.sharing.attribute], ["grade", (d) => d.grade],
        ["category", (d) => d.category], ["status", (d) => pill(d.status)],
      ], rows), pager({ offset, limit: LIMIT, count: page.datasets.length, total: page.total, onPage: load }));
    });
  }
  const form = h("form", { class: "card filters", role: "search", onsubmit: (ev) => { ev.preventDefault(); load(0); } },
    field("Search", search), field("Owner", owner), field("Sharing", sel.attribute), field("Grade", sel.grade),
    field("Category", sel.category), field("Status", sel.status), h("button", { type: "submit" }, "Search"));
  clear(view, h("h1", {}, "Catalogue"), form, out);
  await load(0);
}

function fieldMap(schema) {
  return Object.fromEntries(((schema && schema.fields) || []).map((f) => [f.name, f]));
}

function describe(f) {
  const t = typeof f.type === "string" ? f.type : JSON.stringify(f.type);
  return `${t}${f.sensitivity ? `, ${f.sensitivity}` : ""}${f.semantic ? `, ${f.semantic}` : ""}`;
}

export function schemaDiff(older, newer) {
  const a = fieldMap(older);
  const b = fieldMap(newer);
  const out = [];
  for (const [name, f] of Object.entries(b)) {
    if (!a[name]) out.push(["added", name, describe(f)]);
    else if (describe(a[name]) !== describe(f)) out.push(["changed", name, `${describe(a[name])} → ${describe(f)}`]);
  }
  for (const name of Object.keys(a)) if (!b[name]) out.push(["removed", name, describe(a[name])]);
  return out;
}

async function renderEntry(view, id) {
  const d = await api(`/v1/datasets/${encodeURIComponent(id)}`);
  const versions = await api(`/v1/datasets/${encodeURIComponent(id)}/schemas`);
  const schemas = [];
  for (const v of versions.versions) {
    const got = await api(`/v1/datasets/${encodeURIComponent(id)}/schema`, { params: { version: v.version } });
    schemas.push({ ...v, schema: got.schema });
  }
  const diffs = schemas.slice(1).map((s, i) => h("div", {}, h("h3", {}, `v${schemas[i].version} → v${s.version}`),
    table([["change", (r) => r[0]], ["field", (r) => r[1]], ["detail", (r) => r[2]]], schemaDiff(schemas[i].schema, s.schema))));
  const fields = (d.schema && d.schema.fields) || [];
  clear(view, h("h1", {}, d.title, " ", pill(d.status)),
    h("div", { class: "card" }, h("p", {}, idOf(d.id), ` owned by ${d.owner} · ${d.category} · grade ${d.grade} · `,
      `sharing ${d.sharing.attribute}`, d.domestic_only ? " · domestic only" : ""), h("p", {}, d.description),
    d.sharing.reason ? h("p", {}, "Reason: ", d.sharing.reason, " · legal basis: ", d.sharing.legal_basis) : null,
    h("p", {}, "Submitted ", when(d.submitted_at), " · reviewed ", when(d.reviewed_at), d.reviewed_by ? ` by ${d.reviewed_by}` : "",
      d.review_comment ? ` — “${d.review_comment}”` : ""),
    h("p", {}, h("a", { href: `#/lineage/${encodeURIComponent(d.id)}` }, "Lineage graph"))),
    h("div", { class: "card" }, h("h2", {}, `Fields (schema v${d.schema_version})`), table([
      ["name", (f) => h("code", {}, f.name)], ["type", (f) => (typeof f.type === "string" ? f.type : JSON.stringify(f.type))],
      ["sensitivity", (f) => f.sensitivity || "internal"], ["semantic", (f) => f.semantic || "—"], ["doc", (f) => f.doc || ""],
    ], fields)),
    h("div", { class: "card" }, h("h2", {}, "Schema versions"), table([
      ["version", (v) => `v${v.version}`], ["created", (v) => when(v.created_at)]], versions.versions),
    diffs.length ? diffs : h("p", { class: "muted" }, "One version only.")),
    d.overlap ? h("div", { class: "card", id: "overlap" }, h("h2", {}, "Overlap report (R9)"),
      overlapView(d.overlap)) : null);
}

// The R9 overlap report: which fields another agency already shares, and what to request instead.
export function overlapView(o) {
  const covered = o.covered_fields || [];
  const from = (f) => (f.available_from || []).map((a) => `${a.dataset} (${a.owner}) ${a.field}`).join("; ");
  return h("div", { class: "overlap" },
    h("p", {}, `Overlap: ${o.kind || "—"}. ${covered.length} fields can already be obtained by sharing`,
      o.new_fields && o.new_fields.length ? `; new: ${o.new_fields.join(", ")}` : "", "."),
    covered.length ? table([["field", (f) => h("code", {}, f.field)], ["semantic", (f) => f.semantic || "—"],
      ["available from", from]], covered) : null,
    (o.request_instead || []).length ? h("p", {}, "Request instead: ",
      o.request_instead.map((r) => `${r.dataset} (${r.owner}, ${r.attribute}): ${(r.fields || []).join(", ")}`).join("; ")) : null);
}

export async function renderQueue(view) {
  const out = h("div", { id: "queue-out" });
  clear(view, h("h1", {}, "Review queue"), h("p", { class: "muted" },
    "Entries submitted to the data management department. You cannot review your own agency's entries."), out);
  async function load(offset) {
    const page = await api("/v1/datasets", { params: { status: "submitted", limit: LIMIT, offset } });
    clear(out, page.datasets.length ? page.datasets.map((d) => reviewCard(d, () => load(offset)))
      : h("p", { class: "card muted" }, "Nothing waits for review."),
    pager({ offset, limit: LIMIT, count: page.datasets.length, total: page.total, onPage: load }));
  }
  await load(0);
}

function reviewCard(d, reload) {
  const comment = h("textarea", { name: "comment", rows: 2, maxlength: 4000, placeholder: "comment (required to reject)" });
  const out = h("div");
  const act = (decision) => async (ev) => {
    await busy(ev.target, out, `${decision === "approve" ? "Approving" : "Rejecting"}…`, async () => {
      const body = { decision };
      if (comment.value.trim()) body.comment = comment.value.trim();
      const r = await api(`/v1/datasets/${encodeURIComponent(d.id)}/review`, { method: "POST", body });
      clear(out, h("div", { class: "ok", role: "status" }, `${d.id} is now ${r.status}.`));
      setTimeout(reload, 800);
    });
  };
  const overlap = d.overlap && Object.keys(d.overlap).length
    ? h("details", {}, h("summary", {}, "Overlap report (R9)"), overlapView(d.overlap)) : null;
  return h("article", { class: "card review", dataset: { dataset: d.id } },
    h("h2", {}, h("a", { href: `#/catalogue/${encodeURIComponent(d.id)}` }, d.title), " ", h("span", { class: "muted" }, `(${d.id})`)),
    h("p", {}, `${d.owner} · ${d.category} · grade ${d.grade} · sharing ${d.sharing.attribute} · submitted `, when(d.submitted_at)),
    h("p", {}, d.description), overlap, field("Comment", comment),
    h("button", { type: "button", class: "approve", onclick: act("approve") }, "Approve"),
    h("button", { type: "button", class: "danger reject", onclick: act("reject") }, "Reject"), out);
}
