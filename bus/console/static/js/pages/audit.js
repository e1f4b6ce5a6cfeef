// Audit: verify the hash chain (first bad event highlighted with its neighbours), list events filtered
// by actor, action, dataset and time (cursor pages), export them as CSV.
import { api } from "../api.js";
import { busy, clear, field, h, isoOf, problem, table, when } from "../ui.js";

const PAGE = 50;
const CSV_MAX = 20000;

function eventsTable(events, bad) {
  return table([
    ["seq", (e) => h("span", { class: "seq" }, String(e.seq))], ["at", (e) => when(e.at)], ["actor", (e) => e.actor],
    ["action", (e) => h("code", {}, e.action)], ["subject", (e) => `${e.subject_type} ${e.subject_id}`],
    ["data", (e) => h("code", { class: "data" }, JSON.stringify(e.data).slice(0, 160))],
  ], events, { rowClass: (e) => (e.seq === bad ? "bad" : null) });
}

async function verify(button, out) {
  await busy(button, out, "Recomputing the hash chain and the lineage digests…", async () => {
    const result = await api("/v1/audit/verify");
    if (result.ok) {
      clear(out, h("div", { class: "ok", role: "status", id: "verify-result" },
        `The chain holds: ${result.events} events verified, lineage digests match.`));
      return;
    }
    const bad = result.first_bad;
    const around = await api("/v1/audit/events", { params: { after: Math.max(0, bad - 3), limit: 5 } });
    clear(out, h("div", { class: "problem", role: "alert", id: "verify-result", dataset: { firstBad: String(bad) } },
      h("strong", {}, `The chain is broken: the first bad event is #${bad}`),
      h("div", {}, `${result.events} events verified before it. Events from #${bad} on cannot be trusted; `
        + "the row was edited, removed or inserted outside the bus.")),
    h("h2", {}, "The first bad event and its neighbours"), eventsTable(around.events, bad));
  });
}

function toCsv(events) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const cols = ["seq", "at", "actor", "action", "subject_type", "subject_id", "data", "prev_hash", "hash"];
  return [cols.join(","), ...events.map((e) => cols.map((c) => cell(e[c])).join(","))].join("\r\n") + "\r\n";
}

async function exportCsv(button, out, filters) {
  await busy(button, out, "Reading events for the export…", async () => {
    const all = [];
    let after = 0;
    while (all.length < CSV_MAX) {
      const page = await api("/v1/audit/events", { params: { ...filters, after, limit: 1000 } });
      all.push(...page.events);
      out.replaceChildren(h("div", { class: "progress", role: "status" }, `${all.length} events read…`));
      if (page.next === null) break;
      after = page.next;
    }
    const url = URL.createObjectURL(new Blob([toCsv(all)], { type: "text/csv" }));
    const a = h("a", { href: url, download: "audit-events.csv", id: "csv-link" }, `Download ${all.length} events (CSV)`);
    clear(out, h("div", { class: "ok" }, a));
    a.click();
  });
}

export async function render(view) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const inputs = {
    actor: h("input", { name: "actor", value: params.get("actor") || "", maxlength: 64 }),
    action: h("input", { name: "action", value: params.get("action") || "", placeholder: "dataset.*", maxlength: 64 }),
    subject: h("input", { name: "subject", value: params.get("subject") || "", placeholder: "dataset, grant, agency id", maxlength: 128 }),
    since: h("input", { name: "since", type: "datetime-local", value: params.get("since") || "" }),
    until: h("input", { name: "until", type: "datetime-local", value: params.get("until") || "" }),
  };
  const filters = () => ({ actor: inputs.actor.value.trim(), action: inputs.action.value.trim(),
    subject: inputs.subject.value.trim(), since: isoOf(inputs.since.value), until: isoOf(inputs.until.value) });
  const verifyOut = h("div", { id: "verify-out" });
  const verifyBtn = h("button", { type: "button", id: "verify", onclick: () => verify(verifyBtn, verifyOut) }, "Verify the chain");
  const listOut = h("div", { id: "events-out" });
  const csvOut = h("div");
  const cursors = [0];
  async function load(after) {
    await busy(null, listOut, "Loading events…", async () => {
      const page = await api("/v1/audit/events", { params: { ...filters(), after, limit: PAGE } });
      const idx = cursors.indexOf(after);
      const prev = idx > 0 ? cursors[idx - 1] : null;
      clear(listOut, eventsTable(page.events, null), h("div", { class: "pager" },
        h("button", { type: "button", class: "secondary", disabled: prev === null, onclick: () => load(prev) }, "‹ Previous"),
        h("button", { type: "button", class: "secondary", disabled: page.next === null, onclick: () => {
          if (!cursors.includes(page.next)) cursors.push(page.next);
          load(page.next);
        } }, "Next ›")));
    });
  }
  const csvBtn = h("button", { type: "button", class: "secondary", id: "csv", onclick: () => exportCsv(csvBtn, csvOut, filters()) }, "Export CSV");
  const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); cursors.splice(1); load(0); } },
    field("Actor", inputs.actor), field("Action", inputs.action), field("Dataset / subject", inputs.subject),
    field("From", inputs.since), field("To", inputs.until), h("button", { type: "submit" }, "Filter"), csvBtn);
  clear(view, h("h1", {}, "Audit log"),
    h("section", { class: "card" }, h("h2", {}, "Hash chain"), h("p", { class: "muted" },
      "Every change is an event linked to the previous one by SHA-256; verifying recomputes every link and "
      + "every lineage digest."), verifyBtn, verifyOut),
    h("section", { class: "card" }, h("h2", {}, "Events"), form, csvOut, listOut));
  try { await load(0); } catch (err) { listOut.append(problem(err)); }
}
