// Usage (R18): records and bytes per dataset, grant and agency over time (GET /v1/usage), as charts.
import { api } from "../api.js";
import { busy, clear, field, fmtBytes, h, isoOf, table } from "../ui.js";

const DIRECTIONS = ["published", "delivered", "consumed", "refused"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// Grouped bars per hour, one colour per direction; the values are also in the table below it.
export function chart(rows, measure) {
  const hours = [...new Set(rows.map((r) => r.hour))].sort();
  const value = {};
  for (const r of rows) value[`${r.hour}|${r.direction}`] = (value[`${r.hour}|${r.direction}`] || 0) + r[measure];
  const max = Math.max(1, ...Object.values(value));
  const W = 900; const H = 200; const left = 56; const bottom = 24;
  const slot = (W - left) / Math.max(1, hours.length);
  const bar = Math.max(2, (slot * 0.8) / DIRECTIONS.length);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H + bottom}`, role: "img", "aria-label": `${measure} per hour` });
  g.append(svg("text", { x: 4, y: 12, "font-size": 11 }, measure === "bytes" ? fmtBytes(max) : String(max)));
  g.append(svg("line", { x1: left, y1: H, x2: W, y2: H, stroke: "#8c959f" }));
  hours.forEach((hour, i) => {
    DIRECTIONS.forEach((d, j) => {
      const v = value[`${hour}|${d}`] || 0;
      if (!v) return;
      const height = (v / max) * (H - 16);
      const rect = svg("rect", { class: `bar ${d}`, x: left + i * slot + j * bar, y: H - height, width: bar - 1, height });
      rect.append(svg("title", {}, `${new Date(hour).toLocaleString()} ${d}: ${measure === "bytes" ? fmtBytes(v) : v}`));
      g.append(rect);
    });
    if (hours.length <= 24 || i % Math.ceil(hours.length / 12) === 0) {
      g.append(svg("text", { x: left + i * slot, y: H + 16, "font-size": 10 },
        new Date(hour).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })));
    }
  });
  return h("div", { class: "chart" }, h("div", { class: "legend" },
    DIRECTIONS.map((d) => h("span", {}, h("span", { class: `sw ${d}` }), d))), g);
}

export async function render(view) {
  const inputs = {
    dataset: h("input", { name: "dataset", maxlength: 64 }), grant: h("input", { name: "grant", maxlength: 64 }),
    agency: h("input", { name: "agency", maxlength: 64 }),
    from: h("input", { name: "from", type: "datetime-local" }), to: h("input", { name: "to", type: "datetime-local" }),
  };
  const out = h("div", { id: "usage-out" });
  async function load() {
    await busy(null, out, "Reading the usage counters…", async () => {
      const params = { dataset: inputs.dataset.value.trim(), grant: inputs.grant.value.trim(),
        agency: inputs.agency.value.trim(), from: isoOf(inputs.from.value), to: isoOf(inputs.to.value) };
      const hourly = await api("/v1/usage", { params: { ...params, by: "hour" } });
      const total = await api("/v1/usage", { params: { ...params, by: "total" } });
      clear(out, h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h2", {}, "Records per hour"), chart(hourly.rows, "records")),
        h("div", { class: "card" }, h("h2", {}, "Bytes per hour"), chart(hourly.rows, "bytes"))),
      h("div", { class: "card" }, h("h2", {}, "Totals per dataset, grant and agency"), table([
        ["direction", (r) => r.direction], ["dataset", (r) => r.dataset], ["grant", (r) => r.grant || "—"],
        ["agency", (r) => r.agency], ["records", (r) => String(r.records)], ["bytes", (r) => fmtBytes(r.bytes)],
      ], total.rows)));
    });
  }
  clear(view, h("h1", {}, "Usage"), h("form", { class: "card filters", onsubmit: (ev) => { ev.preventDefault(); load(); } },
    field("Dataset", inputs.dataset), field("Grant", inputs.grant), field("Agency", inputs.agency),
    field("From", inputs.from), field("To", inputs.to), h("button", { type: "submit" }, "Show")), out);
  await load();
}
