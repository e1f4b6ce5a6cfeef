// Record trace: one record's life as a timeline (GET /v1/lineage/records/{id}).
import { api } from "../api.js";
import { config } from "../config.js";
import { busy, clear, fmtBytes, h, idOf, pill, when } from "../ui.js";

function traceLink(traceId) {
  if (!traceId) return h("span", { class: "muted" }, "—");
  const href = config.jaeger_url ? `${config.jaeger_url.replace(/\/$/, "")}/trace/${traceId}` : null;
  return idOf(traceId, href);
}

// How it was published, read from its trace: HTTP publishing leaves the gateway's server span
// (POST .../records); the SDK and source connectors share the signed SDK path.
function via(spans) {
  const names = (spans || []).map((s) => s.name);
  if (names.some((n) => n.startsWith("POST") && n.includes("/records"))) return "HTTP";
  return names.length ? "the SDK (or a source connector)" : "—";
}

export function timeline(rec) {
  const accepted = rec.validation.outcome === "accepted";
  const items = [
    h("li", { class: "published" }, h("div", { class: "step" }, "Published"),
      h("div", {}, "by ", idOf(rec.publisher), " at ", when(rec.published_at), " via ", via(rec.spans)),
      h("div", { class: "muted" }, `dataset ${rec.dataset}, schema v${rec.schema_version}, ${fmtBytes(rec.size)}`)),
    h("li", { class: accepted ? "accepted" : "refused" }, h("div", { class: "step" }, "Validated"),
      h("div", {}, pill(rec.validation.outcome), rec.validation.code ? [" ", h("code", {}, rec.validation.code)] : null,
        rec.position.partition !== null ? ` · data partition ${rec.position.partition}, offset ${rec.position.offset}` : "")),
  ];
  for (const d of rec.deliveries) {
    items.push(h("li", { class: "delivery", dataset: { grant: d.grant } },
      h("div", { class: "step" }, "Delivered under grant ", idOf(d.grant, `#/grants/${encodeURIComponent(d.grant)}`)),
      h("div", {}, "to ", h("strong", { class: "agency" }, d.agency), " for scenario ",
        h("code", {}, d.scenario.code || "—"), d.scenario.description ? ` (${d.scenario.description})` : "",
        " at ", when(d.at)),
      h("div", { class: "muted" }, `partition ${d.partition ?? "—"}, offset ${d.offset ?? "—"}, ${fmtBytes(d.size)}`,
        d.grant_status ? [" · grant ", pill(d.grant_status)] : null),
      d.consumed.length ? h("ul", {}, d.consumed.map((c) => h("li", { class: "consumption" },
        "consumed by ", h("strong", {}, c.agency), ` via ${c.via} at `, when(c.at))))
        : h("div", { class: "muted" }, "not acknowledged yet")));
  }
  if (!rec.deliveries.length && accepted) items.push(h("li", {}, h("div", { class: "step" }, "No delivery yet")));
  return h("ol", { class: "timeline", "aria-label": "Record timeline" }, items);
}

export async function render(view, arg) {
  const input = h("input", { id: "record-id", name: "record", class: "wide", value: arg || "",
    placeholder: "record id (32 hex characters)", maxlength: 40, required: true });
  const out = h("div", { id: "record-out" });
  const form = h("form", { class: "card filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    if (`#/record/${id}` !== location.hash) location.hash = `#/record/${encodeURIComponent(id)}`;
  } }, h("div", { class: "grow" }, h("label", { for: "record-id" }, "Record id"), input),
  h("button", { type: "submit" }, "Trace"));
  clear(view, h("h1", {}, "Record trace"), form, out);
  if (!arg) return;
  await busy(null, out, "Reading the record's lineage…", async () => {
    const rec = await api(`/v1/lineage/records/${encodeURIComponent(arg)}`);
    clear(out, h("div", { class: "card" },
      h("h2", {}, "Record ", idOf(rec.record_id)),
      h("p", {}, "Dataset ", h("a", { href: `#/lineage/${encodeURIComponent(rec.dataset)}` }, rec.dataset),
        " · trace ", traceLink(rec.trace_id), ` · ${rec.deliveries.length} deliveries, ${rec.consumptions.length} consumptions`),
      timeline(rec)));
  });
}
