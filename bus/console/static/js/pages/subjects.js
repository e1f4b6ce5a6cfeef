// Who received data about this person or enterprise (GET /v1/lineage/subjects): the value is sent once,
// in the query of an audited call with its reason; it is never put in the page's URL.
import { api } from "../api.js";
import { busy, clear, field, h, idOf, table, when } from "../ui.js";

const SEMANTICS = ["person.id_number", "enterprise.credit_code", "licence.number"];

export async function render(view) {
  const semantic = h("input", { name: "semantic", list: "semantics", value: SEMANTICS[0], required: true, maxlength: 128 });
  const value = h("input", { name: "value", type: "password", required: true, maxlength: 256, autocomplete: "off" });
  const reason = h("input", { name: "reason", required: true, minlength: 3, maxlength: 2000, class: "wide" });
  const out = h("div", { id: "subjects-out" });
  const button = h("button", { type: "submit" }, "Ask");
  const form = h("form", { class: "card filters", autocomplete: "off", onsubmit: async (ev) => {
    ev.preventDefault();
    await busy(button, out, "Looking up the keyed index…", async () => {
      const r = await api("/v1/lineage/subjects", { params: { semantic: semantic.value.trim(), value: value.value.trim(),
        reason: reason.value.trim() } });
      clear(out, h("div", { class: "card" }, h("h2", {}, `${r.records} records carried this ${r.semantic}`),
        r.truncated ? h("p", { class: "problem" }, "Only the newest records are shown.") : null,
        h("h3", {}, "Datasets"), table([["dataset", (d) => h("a", { href: `#/lineage/${encodeURIComponent(d.dataset)}` }, d.dataset)],
          ["records", (d) => String(d.records)], ["first", (d) => when(d.first_at)], ["last", (d) => when(d.last_at)]], r.datasets),
        h("h3", {}, "Received by"), table([["grant", (x) => idOf(x.grant, `#/grants/${encodeURIComponent(x.grant)}`)],
          ["agency", (x) => x.agency], ["scenario", (x) => x.scenario.code || "—"], ["dataset", (x) => x.dataset],
          ["records", (x) => String(x.records)], ["first", (x) => when(x.first_at)], ["last", (x) => when(x.last_at)]], r.recipients),
        h("h3", {}, "Records"), table([["record", (x) => idOf(x.record_id, `#/record/${x.record_id}`)], ["dataset", (x) => x.dataset],
          ["published", (x) => when(x.published_at)], ["deliveries", (x) => String(x.deliveries.length)]], r.items)));
    });
  } }, field("Semantic", semantic), field("Value", value), field("Reason (recorded in the audit log)", reason), button,
  h("datalist", { id: "semantics" }, SEMANTICS.map((s) => h("option", { value: s }))));
  clear(view, h("h1", {}, "Who received data about…"), h("p", { class: "muted" },
    "The bus keeps only keyed values (HMAC under its master secret) of identifier fields, never the values. "
    + "Every question is itself audited with its reason."), form, out);
}
