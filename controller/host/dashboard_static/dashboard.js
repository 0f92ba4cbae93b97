// The live view of a chip: reads /api/events (server-sent events: status, ledger, reset) and
// draws the status, the drift per tile and layer, energy by kind, and the event ledger.
"use strict";

const KIND_COLOURS = {
  program: "#4c72b0", calibration: "#8172b2", evaluation: "#937860", inference: "#64b5cd",
  probe: "#dd8452", correction: "#c44e52", policy: "#8c8c8c", policy_error: "#000000",
  error: "#000000",
};
const TILE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const MAX_ROWS = 200;
const LAYOUT = { margin: { l: 60, r: 16, t: 10, b: 50 }, font: { size: 11 } };
const CONFIG = { displaylogo: false, responsive: true };

let tileLayers = {};
let driftTraces = {};   // tile -> trace index in the drift-over-time plot
let pending = [];       // probe points not drawn yet
let rows = [];          // newest first
let rowsChanged = false;

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  const units = [["y", 365 * 86400], ["d", 86400], ["h", 3600], ["min", 60], ["s", 1], ["ms", 1e-3]];
  for (const [u, v] of units) {
    if (Math.abs(s) >= v) return (s / v).toPrecision(3).replace(/\.?0+$/, "") + " " + u;
  }
  return s === 0 ? "0 s" : (s * 1e6).toPrecision(3) + " µs";
}

function energy(pj) {
  if (pj === null || pj === undefined || !isFinite(pj)) return "–";
  const units = [["J", 1e12], ["mJ", 1e9], ["µJ", 1e6], ["nJ", 1e3]];
  for (const [u, v] of units) if (Math.abs(pj) >= v) return (pj / v).toPrecision(3) + " " + u;
  return pj === 0 ? "0" : pj.toPrecision(3) + " pJ";
}

function count(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toPrecision(3) + " M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toPrecision(3) + " k";
  return String(Math.round(n));
}

function tileName(tile) {
  const layer = tileLayers[String(tile)];
  return layer ? "tile " + tile + " · " + layer : "tile " + tile;
}

function card(label, value) {
  const div = document.createElement("div");
  div.className = "card";
  const l = document.createElement("div"); l.className = "label"; l.textContent = label;
  const v = document.createElement("div"); v.className = "value"; v.textContent = value;
  div.append(l, v);
  return div;
}

function onStatus(s) {
  tileLayers = s.tile_layers || {};
  document.getElementById("network").textContent = s.loaded ? "· " + s.network : "· no network loaded";
  document.getElementById("sim-time").textContent = duration(s.sim_time_s);
  document.getElementById("policy").textContent = s.policy || "–";
  document.getElementById("error").textContent = s.error ? "stopped: " + s.error : "";
  const down = s.availability === undefined ? null : (1 - s.availability) * (s.sim_time_s || 0);
  const cards = document.getElementById("cards");
  cards.replaceChildren(
    card("corrections", count(s.corrections)),
    card("devices corrected", count(s.devices_corrected)),
    card("failed devices", count(s.failed_devices)),
    card("correction pulses", count(s.correction_pulses)),
    card("monitor wake-ups", count(s.monitor_wakeups)),
    card("upkeep energy", energy(s.upkeep_energy_pj)),
    card("tile downtime", duration(down)),
    card("inferences", count(s.inferences)),
    card("events", count(s.last_event_seq)),
  );
  const drift = s.drift || {};
  const tiles = Object.keys(drift).sort((a, b) => a - b);
  const names = tiles.map(tileName);
  Plotly.react("drift-now", [
    { type: "bar", name: "drift metric", x: names, y: tiles.map((t) => drift[t].drift_metric),
      marker: { color: "#1f77b4" } },
    { type: "bar", name: "largest distance", x: names, y: tiles.map((t) => drift[t].max_distance),
      marker: { color: "#ff7f0e" } },
  ], { ...LAYOUT, barmode: "group", yaxis: { title: { text: "weight units" }, rangemode: "tozero" },
       legend: { orientation: "h", y: 1.12 },
       annotations: tiles.length ? [] : [{ text: "no probe yet", showarrow: false,
         xref: "paper", yref: "paper", x: 0.5, y: 0.5 }] }, CONFIG);
  const byKind = s.energy_by_kind_pj || {};
  const kinds = Object.keys(byKind).filter((k) => byKind[k] > 0);
  Plotly.react("energy", [{
    type: "bar", x: kinds, y: kinds.map((k) => byKind[k]),
    marker: { color: kinds.map((k) => KIND_COLOURS[k] || "#b0b0b0") },
    text: kinds.map((k) => energy(byKind[k])), textposition: "outside", cliponaxis: false,
    hovertemplate: "%{x}: %{text}<extra></extra>",
  }], { ...LAYOUT, yaxis: { type: "log", title: { text: "energy (pJ)" } } }, CONFIG);
}

function onLedger(ev) {
  rows.unshift(ev);
  if (rows.length > MAX_ROWS) rows.length = MAX_ROWS;
  rowsChanged = true;
  if (ev.kind === "probe" && ev.detail && ev.detail.drift_metric !== undefined) {
    pending.push(ev);
  }
}

function detailText(d) {
  return Object.entries(d || {}).map(([k, v]) =>
    k + "=" + (typeof v === "number" ? +v.toPrecision(4) : v)).join(" ");
}

function drawRows() {
  if (!rowsChanged) return;
  rowsChanged = false;
  const body = document.querySelector("#events tbody");
  const frag = document.createDocumentFragment();
  for (const ev of rows) {
    const tr = document.createElement("tr");
    tr.className = "kind-" + ev.kind;
    for (const value of [ev.seq, duration(ev.end_s), ev.kind, ev.tile < 0 ? "all" : ev.tile,
      count(ev.devices), count(ev.pulses), energy(ev.energy_pj + ev.controller_energy_pj),
      detailText(ev.detail)]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    frag.append(tr);
  }
  body.replaceChildren(frag);
}

function drawDrift() {
  if (!pending.length) return;
  const byTile = {};
  for (const ev of pending) (byTile[ev.tile] = byTile[ev.tile] || []).push(ev);
  pending = [];
  for (const tile of Object.keys(byTile)) {
    const xs = byTile[tile].map((ev) => ev.start_s / 3600);
    const ys = byTile[tile].map((ev) => ev.detail.drift_metric);
    const plot = document.getElementById("drift-time");
    if (driftTraces[tile] === undefined) {
      driftTraces[tile] = (plot.data || []).length;
      Plotly.addTraces(plot, { type: "scatter", mode: "lines+markers", name: tileName(tile), x: xs,
        y: ys, marker: { size: 4 }, line: { width: 1.5,
          color: TILE_COLOURS[driftTraces[tile] % TILE_COLOURS.length] } });
    } else {
      Plotly.extendTraces(plot, { x: [xs], y: [ys] }, [driftTraces[tile]], 20000);
    }
  }
}

function newDriftPlot() {
  driftTraces = {};
  Plotly.newPlot("drift-time", [], { ...LAYOUT,
    xaxis: { title: { text: "device time (h)" } },
    yaxis: { title: { text: "drift metric (weight units)" }, rangemode: "tozero" } }, CONFIG);
}

function connect() {
  const state = document.getElementById("connection");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { state.textContent = "live"; state.className = "state live"; });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; state.className = "state down"; });
  source.addEventListener("status", (m) => onStatus(JSON.parse(m.data)));
  source.addEventListener("ledger", (m) => onLedger(JSON.parse(m.data)));
  source.addEventListener("reset", () => {
    rows = []; rowsChanged = true; pending = []; newDriftPlot();
  });
}

newDriftPlot();
connect();
setInterval(() => { drawDrift(); drawRows(); }, 300);
