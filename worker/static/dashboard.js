// The sentiment-stream dashboard: plain SVG, no library, no build step.
// Counts are polled (they change with every batch); moods come from the SSE stream. The stream is read with
// fetch() rather than EventSource, because EventSource cannot send the Authorization header a token needs.
"use strict";

const LABELS = ["negative", "neutral", "positive"];
const STEP_FOR = { "15m": "1m", "1h": "1m", "6h": "5m", "24h": "15m" };
const POLL_MS = 3000;
const MAX_MOODS = 20;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// A token in the URL fragment (never sent to the server) or typed into the form, kept for this tab only.
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (!fragment.get("token")) return false;
  sessionStorage.setItem("sentiment-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}
takeToken();
window.addEventListener("hashchange", () => { if (takeToken()) refresh(); });
const headers = () => {
  const token = sessionStorage.getItem("sentiment-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
};
const askToken = () => { $("login").hidden = false; };
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("sentiment-token", $("token").value);
  $("login").hidden = true;
  refresh();
});

function query() {
  const window = $("window").value;
  const params = new URLSearchParams({ window });
  if ($("kind").value) params.set("kind", $("kind").value);
  if ($("source").value.trim()) params.set("source", $("source").value.trim());
  return params;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 401) { askToken(); throw new Error("the API wants a token"); }
  const body = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

let refreshing = null;
async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    const params = query();
    params.set("step", STEP_FOR[params.get("window")]);
    try {
      // One call: the series' totals are /api/counts over the same window, so the page asks Redis once.
      const series = await getJSON(`/api/series?${params}`);
      showTotals(series);
      drawChart(series);
      $("error").hidden = true;
    } catch (error) {
      $("error").textContent = String(error.message || error);
      $("error").hidden = false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function showTotals(counts) {
  for (const label of [...LABELS, "total"]) $(`total-${label}`).textContent = counts[label].toLocaleString();
  $("total-share").textContent = counts.total ? `${((100 * counts.negative) / counts.total).toFixed(1)} %` : "–";
  $("total-total").dataset.count = counts.total;
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function drawChart(series) {
  const svg = $("chart");
  const width = svg.clientWidth || 800;
  const height = svg.clientHeight || 320;
  const pad = { left: 48, right: 48, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const points = series.points;
  const max = Math.max(1, ...points.map((p) => p.total));
  const slot = plotW / Math.max(1, points.length);
  const y = (v) => pad.top + plotH - (v / max) * plotH;

  const axis = el("g", { class: "axis" }, svg);
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    el("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }, axis);
    el("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = v;
    el("text", { x: width - pad.right + 6, y: pad.top + plotH - frac * plotH + 4 }, axis).textContent =
      `${frac * 100}%`;
  }
  const every = Math.max(1, Math.ceil(points.length / 8));
  points.forEach((p, i) => {
    if (i % every === 0) {
      el("text", { x: pad.left + i * slot + slot / 2, y: height - 8, "text-anchor": "middle" }, axis)
        .textContent = clock(p.start);
    }
  });

  const bars = el("g", { class: "bars" }, svg);
  const share = [];
  points.forEach((p, i) => {
    let base = 0;
    for (const label of LABELS) {
      if (p[label] > 0) {
        const rect = el("rect", {
          class: `bar ${label}`,
          x: pad.left + i * slot + slot * 0.1,
          width: Math.max(1, slot * 0.8),
          y: y(base + p[label]),
          height: y(base) - y(base + p[label]),
          "data-label": label,
          "data-count": p[label],
          "data-start": p.start,
        }, bars);
        el("title", {}, rect).textContent = `${clock(p.start)} ${label}: ${p[label]}`;
      }
      base += p[label];
    }
    if (p.total) share.push([pad.left + i * slot + slot / 2, pad.top + plotH * (1 - p.negative / p.total)]);
  });
  if (share.length) {
    el("polyline", { class: "share-line", points: share.map((xy) => xy.join(",")).join(" ") }, svg);
  }
  for (const label of [...LABELS, "total"]) svg.dataset[label] = series[label];
  $("chart-caption").textContent = `${points.length} steps of ${series.step_s / 60} min`;
}

// ------------------------------------------------------------------------------------------- moods (SSE)

const moods = new Map();

function showMood(mood) {
  const known = moods.get(mood.conversation_id);
  if (known && known.updated_ms > mood.updated_ms) return; // an older copy (the stream's start may repeat one)
  moods.set(mood.conversation_id, mood);
  const newest = [...moods.values()].sort((a, b) => b.updated_ms - a.updated_ms).slice(0, MAX_MOODS);
  for (const id of moods.keys()) if (!newest.some((m) => m.conversation_id === id)) moods.delete(id);
  const body = $("moods");
  body.replaceChildren(...newest.map((m) => {
    const row = document.createElement("tr");
    row.dataset.conversation = m.conversation_id;
    if (m.conversation_id === mood.conversation_id) row.className = "fresh";
    const cells = [
      m.conversation_id,
      null,
      m.score.toFixed(2),
      m.last_label,
      m.n,
      new Date(m.updated_ms).toLocaleTimeString(),
    ];
    cells.forEach((text, i) => {
      const cell = row.insertCell();
      if (i === 1) {
        const badge = document.createElement("span");
        badge.className = `mood ${m.label}`;
        badge.textContent = m.label;
        cell.appendChild(badge);
      } else {
        cell.textContent = text;
      }
      if (i === 2 || i === 4) cell.className = "num";
    });
    return row;
  }));
}

let countsDue = null;
function onMood(mood) {
  showMood(mood);
  // A mood update means a batch was counted: refresh the chart soon, once per burst.
  if (!countsDue) countsDue = setTimeout(() => { countsDue = null; refresh(); }, 300);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/api/mood/stream", { headers: headers(), cache: "no-store" });
      if (response.status === 401) { askToken(); throw new Error("token"); }
      if (!response.ok) throw new Error(String(response.status));
      $("status").textContent = "live";
      $("status").className = "status live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
          if (data.length) onMood(JSON.parse(data.join("\n")));
        }
      }
    } catch (error) {
      // fall through to the reconnect below; the server sends the current moods again on connect
    }
    $("status").textContent = "reconnecting…";
    $("status").className = "status";
    await sleep(2000);
  }
}

let typing = null;
$("filters").addEventListener("change", refresh);
$("source").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refresh, 400); });
$("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
window.addEventListener("resize", refresh);
refresh();
setInterval(refresh, POLL_MS);
follow();
