// Dataset lineage: an interactive graph (Cytoscape.js, vendored) of publisher -> dataset -> grants ->
// consumers -> connectors and derived datasets, with record and byte counts on the edges, and the same
// graph as a table (keyboard and screen readers).
import { api } from "../api.js";
import { busy, clear, field, fmtBytes, h, idOf, isoOf, table, when } from "../ui.js";

const COLOURS = { publisher: "#0b5cad", dataset: "#1b1f24", grant: "#2da44e", consumer: "#8250df",
  connector: "#bf8700", derived_dataset: "#57606a" };

function label(n) {
  if (n.type === "grant") return `grant ${n.grant}\n${(n.scenario && n.scenario.code) || ""}`;
  if (n.type === "connector") return `${n.direction || ""} ${n.connector}`;
  return `${n.type === "dataset" ? "dataset " : ""}${n.label || n.dataset || n.agency || n.id}`;
}

// Left to right: who publishes, the dataset, its grants (and derived datasets), who consumes, sinks.
const RANK = { publisher: 0, dataset: 1, grant: 2, derived_dataset: 2, consumer: 3 };

function positions(graph) {
  const rank = (n) => (n.type === "connector" ? (n.direction === "sink" ? 4 : 0) : RANK[n.type] ?? 2);
  const columns = {};
  for (const n of graph.nodes) (columns[rank(n)] ||= []).push(n.id);
  const out = {};
  for (const [r, ids] of Object.entries(columns)) {
    ids.forEach((id, i) => { out[id] = { x: Number(r) * 240, y: (i - (ids.length - 1) / 2) * 120 }; });
  }
  return out;
}

function edgeText(e) { return `${e.records} rec · ${fmtBytes(e.bytes)}`; }

function open(n) {
  if (n.type === "grant") location.hash = `#/grants/${encodeURIComponent(n.grant)}`;
  else if (n.type === "dataset" || n.type === "derived_dataset") location.hash = `#/catalogue/${encodeURIComponent(n.dataset)}`;
  else if (n.agency) location.hash = `#/audit?actor=${encodeURIComponent(n.agency)}`;
}

function draw(container, graph) {
  if (!window.cytoscape) {
    container.append(h("p", { class: "muted" }, "The graph library did not load; the table below has the same graph."));
    return null;
  }
  const cy = window.cytoscape({
    container,
    elements: [
      ...graph.nodes.map((n) => ({ data: { id: n.id, label: label(n), type: n.type, colour: COLOURS[n.type] || "#333" } })),
      ...graph.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.from, target: e.to, label: edgeText(e) } })),
    ],
    style: [
      { selector: "node", style: { label: "data(label)", "background-color": "data(colour)", color: "#1b1f24",
        "font-size": 11, "text-wrap": "wrap", "text-valign": "bottom", "text-margin-y": 4, width: 26, height: 26, "text-max-width": 200 } },
      { selector: "node[type = 'dataset']", style: { shape: "round-rectangle", width: 40, height: 30 } },
      { selector: "node[type = 'grant']", style: { shape: "diamond" } },
      { selector: "edge", style: { label: "data(label)", "font-size": 10, "curve-style": "bezier",
        "target-arrow-shape": "triangle", width: 2, "line-color": "#8c959f", "target-arrow-color": "#8c959f",
        "text-background-color": "#fff", "text-background-opacity": 1, "text-background-padding": 2 } },
    ],
    layout: { name: "preset", positions: positions(graph), fit: true, padding: 40 },
    wheelSensitivity: 0.3,
  });
  cy.on("tap", "node", (ev) => open(graph.nodes.find((n) => n.id === ev.target.id())));
  container.dataset.nodes = String(cy.nodes().length);
  container.dataset.grantNodes = String(cy.nodes("[type = 'grant']").length);
  container.dataset.edges = String(cy.edges().length);
  return cy;
}

export async function render(view, arg) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const dataset = h("input", { name: "dataset", value: arg || "", required: true, maxlength: 64 });
  const from = h("input", { name: "from", type: "datetime-local", value: params.get("from") || "" });
  const to = h("input", { name: "to", type: "datetime-local", value: params.get("to") || "" });
  const out = h("div", { id: "lineage-out" });
  const form = h("form", { class: "card filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (from.value) q.set("from", from.value);
    if (to.value) q.set("to", to.value);
    location.hash = `#/lineage/${encodeURIComponent(dataset.value.trim())}${q.toString() ? `?${q}` : ""}`;
  } }, field("Dataset id", dataset), field("From", from), field("To", to), h("button", { type: "submit" }, "Show graph"));
  clear(view, h("h1", {}, "Dataset lineage"), form, out);
  if (!arg) {
    const list = await api("/v1/datasets", { params: { status: "approved", limit: 50 } });
    out.append(h("div", { class: "card" }, h("h2", {}, "Approved datasets"),
      h("ul", {}, list.datasets.map((d) => h("li", {}, h("a", { href: `#/lineage/${encodeURIComponent(d.id)}` }, d.id), ` — ${d.title}`)))));
    return;
  }
  await busy(null, out, "Building the graph…", async () => {
    const graph = await api(`/v1/lineage/datasets/${encodeURIComponent(arg)}`,
      { params: { from: isoOf(from.value), to: isoOf(to.value) } });
    const box = h("div", { id: "graph", role: "img", "aria-label": `Lineage graph of ${arg}` });
    const byId = Object.fromEntries(graph.nodes.map((n) => [n.id, n]));
    const name = (id) => (byId[id] ? label(byId[id]).replace("\n", " ") : id);
    clear(out, h("div", { class: "card" }, h("p", { class: "muted" },
      "Click a node to open it; drag to move, scroll to zoom. Edges show records and bytes in the period."), box),
    h("div", { class: "card" }, h("h2", {}, "Edges"), table([
      ["from", (e) => name(e.from)], ["to", (e) => name(e.to)], ["kind", (e) => e.kind],
      ["records", (e) => h("span", { class: "records" }, String(e.records))], ["bytes", (e) => fmtBytes(e.bytes)],
      ["first", (e) => when(e.first_at)], ["last", (e) => when(e.last_at)],
    ], graph.edges)),
    h("div", { class: "card" }, h("h2", {}, "Grants"), table([
      ["grant", (n) => idOf(n.grant, `#/grants/${encodeURIComponent(n.grant)}`)], ["agency", (n) => n.agency],
      ["scenario", (n) => (n.scenario && n.scenario.code) || "—"], ["status", (n) => n.status],
    ], graph.nodes.filter((n) => n.type === "grant"))));
    draw(box, graph);
  });
}
