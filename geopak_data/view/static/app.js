/* geopak viewer: Leaflet map + one canvas layer for every sample.
 *
 * The samples arrive once as columns (/api/samples); filtering, colouring and hit-testing
 * happen here on typed arrays, so 100,000+ points stay smooth without more requests.
 */
"use strict";

const CATS = ["split", "province", "source", "license"];
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];
const state = { data: null, visible: null, filters: {}, colourBy: "split", selected: -1, meta: null };

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/* ---------------------------------------------------------------- canvas layer */
const PointsLayer = L.Layer.extend({
  onAdd(map) {
    this._map = map;
    this._canvas = L.DomUtil.create("canvas", "gp-points");
    map.getPane("overlayPane").appendChild(this._canvas);
    map.on("moveend zoomend resize viewreset", this.redraw, this);
    map.on("zoomstart", this._hide, this);
    this.redraw();
  },
  onRemove(map) {
    L.DomUtil.remove(this._canvas);
    map.off("moveend zoomend resize viewreset", this.redraw, this);
    map.off("zoomstart", this._hide, this);
  },
  _hide() { this._canvas.style.visibility = "hidden"; },
  /* container pixel of sample i at the current view */
  toPixel(i, origin, scale) {
    const d = state.data;
    return [d.mx[i] * scale - origin.x, d.my[i] * scale - origin.y];
  },
  frame() {
    const map = this._map;
    const scale = 256 * Math.pow(2, map.getZoom());
    const origin = map.project(map.containerPointToLatLng([0, 0]), map.getZoom());
    return { origin, scale };
  },
  redraw() {
    if (!this._map || !state.data || !state.visible) return;
    const map = this._map, size = map.getSize(), ratio = window.devicePixelRatio || 1;
    const c = this._canvas;
    L.DomUtil.setPosition(c, map.containerPointToLayerPoint([0, 0]));
    c.width = size.x * ratio; c.height = size.y * ratio;
    c.style.width = size.x + "px"; c.style.height = size.y + "px";
    c.style.visibility = "visible";
    const ctx = c.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const { origin, scale } = this.frame();
    const codes = state.data.categories[state.colourBy].codes;
    const r = map.getZoom() >= 9 ? 3 : 2;
    const vis = state.visible;
    ctx.globalAlpha = 0.8;
    for (let k = 0; k < vis.length; k++) {
      const i = vis[k];
      const x = state.data.mx[i] * scale - origin.x, y = state.data.my[i] * scale - origin.y;
      if (x < -r || y < -r || x > size.x + r || y > size.y + r) continue;
      ctx.fillStyle = PALETTE[codes[i] % PALETTE.length];
      ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
    }
    if (state.selected >= 0) {
      const [x, y] = this.toPixel(state.selected, origin, scale);
      ctx.globalAlpha = 1; ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
    }
  },
  /* the visible sample nearest to a container point, within 8 px */
  nearest(pt) {
    const { origin, scale } = this.frame();
    let best = -1, bestD = 64;
    for (const i of state.visible) {
      const dx = state.data.mx[i] * scale - origin.x - pt.x, dy = state.data.my[i] * scale - origin.y - pt.y;
      const d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  },
});

/* ---------------------------------------------------------------- data */
function mercator(data) {
  const n = data.lat.length;
  data.mx = new Float64Array(n); data.my = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const lat = Math.max(-85, Math.min(85, data.lat[i])) * Math.PI / 180;
    data.mx[i] = (data.lon[i] + 180) / 360;
    data.my[i] = (1 - Math.log(Math.tan(lat) + 1 / Math.cos(lat)) / Math.PI) / 2;
  }
}

function applyFilters() {
  const d = state.data, n = d.key.length, out = [];
  const active = CATS.filter((c) => state.filters[c] !== undefined && state.filters[c] !== "")
    .map((c) => [d.categories[c].codes, d.categories[c].labels.indexOf(state.filters[c])]);
  for (let i = 0; i < n; i++) {
    let ok = true;
    for (const [codes, want] of active) if (codes[i] !== want) { ok = false; break; }
    if (ok) out.push(i);
  }
  state.visible = Int32Array.from(out);
  document.getElementById("sample-count").textContent = String(out.length);
  legend();
  points.redraw();
}

function legend() {
  const box = document.getElementById("legend");
  box.replaceChildren();
  const cat = state.data.categories[state.colourBy];
  const counts = new Array(cat.labels.length).fill(0);
  for (const i of state.visible) counts[cat.codes[i]]++;
  cat.labels.forEach((label, code) => {
    const row = el("div", { "data-label": label });
    const dot = el("i"); dot.style.background = PALETTE[code % PALETTE.length];
    row.append(dot, el("span", {}, label), el("span", { class: "n" }, String(counts[code])));
    box.append(row);
  });
}

function filterControls() {
  const box = document.getElementById("filter-controls");
  const names = { split: "split", province: "region", source: "source", license: "licence" };
  for (const c of CATS) {
    const label = el("label", {}, names[c]);
    const select = el("select", { "data-testid": `filter-${c}`, id: `filter-${c}` });
    select.append(el("option", { value: "" }, "all"));
    for (const v of state.data.categories[c].labels) select.append(el("option", { value: v }, v));
    select.addEventListener("change", () => { state.filters[c] = select.value; applyFilters(); });
    label.append(select);
    box.append(label);
  }
  document.getElementById("colour-by").addEventListener("change", (e) => {
    state.colourBy = e.target.value; legend(); points.redraw();
  });
}

/* ---------------------------------------------------------------- detail */
const DETAIL = ["key", "split", "province", "cell_id", "lat", "lon", "source", "source_id",
  "owner", "license", "license_url", "attribution", "title", "date_taken", "width", "height", "url"];

async function showSample(i) {
  state.selected = i;
  points.redraw();
  const key = state.data.key[i];
  const s = await getJSON(`/api/sample/${encodeURIComponent(key)}`);
  const panel = document.getElementById("detail");
  const dl = document.getElementById("detail-fields");
  dl.replaceChildren();
  for (const f of DETAIL) {
    if (s[f] === undefined || s[f] === null || s[f] === "") continue;
    const dd = el("dd", { "data-field": f });
    if ((f === "url" || f === "license_url") && /^https?:\/\//.test(String(s[f]))) {
      const a = el("a", { href: String(s[f]), target: "_blank", rel: "noopener noreferrer" }, String(s[f]));
      dd.append(a);
    } else dd.textContent = String(s[f]);
    dl.append(el("dt", {}, f === "license" ? "licence" : f), dd);
  }
  document.getElementById("thumb").src = `/api/image/${encodeURIComponent(key)}`;
  panel.hidden = false;
  const ask = document.getElementById("ask-sample");
  ask.hidden = !state.meta.model;
  ask.onclick = () => predict(`/api/predict?key=${encodeURIComponent(key)}`, { method: "GET" });
}

/* ---------------------------------------------------------------- model */
let answerLayer = null;

async function predict(url, options) {
  const err = document.getElementById("predict-error");
  err.hidden = true;
  try {
    const r = await getJSON(url, options);
    showPrediction(r);
  } catch (e) {
    err.textContent = e.message; err.hidden = false;
  }
}

function showPrediction(r) {
  const panel = document.getElementById("prediction");
  const fmt = { lat: (v) => v.toFixed(5), lon: (v) => v.toFixed(5),
    confidence: (v) => (100 * v).toFixed(1) + " %", distance_km: (v) => v.toFixed(1) + " km" };
  for (const dd of panel.querySelectorAll("dd[data-field]")) {
    const f = dd.dataset.field, v = r[f];
    dd.textContent = v === undefined || v === null ? "—" : (fmt[f] ? fmt[f](v) : String(v));
  }
  const body = panel.querySelector("#hypotheses tbody");
  body.replaceChildren();
  if (answerLayer) answerLayer.remove();
  answerLayer = L.layerGroup().addTo(map);
  for (const h of r.hypotheses || []) {
    const tr = el("tr");
    tr.append(el("td", {}, h.province), el("td", {}, String(h.cell)),
      el("td", {}, (100 * h.probability).toFixed(1) + " %"));
    body.append(tr);
    L.circleMarker([h.lat, h.lon], { radius: 4 + 20 * Math.sqrt(h.probability), color: "#6f42c1",
      weight: 1, fillOpacity: 0.35 }).bindTooltip(`${h.province} · cell ${h.cell} · ${(100 * h.probability).toFixed(1)} %`)
      .addTo(answerLayer);
  }
  L.circleMarker([r.lat, r.lon], { radius: 8, color: "#cf222e", weight: 3, fillOpacity: 0.9 })
    .bindTooltip(`answer: ${r.province}`).addTo(answerLayer);
  if (r.truth) {
    L.circleMarker([r.truth.lat, r.truth.lon], { radius: 7, color: "#1a7f37", weight: 3, fillOpacity: 0.9 })
      .bindTooltip("true location").addTo(answerLayer);
    L.polyline([[r.lat, r.lon], [r.truth.lat, r.truth.lon]], { color: "#1a7f37", dashArray: "4 4" }).addTo(answerLayer);
  }
  const pts = (r.hypotheses || []).map((h) => [h.lat, h.lon]).concat([[r.lat, r.lon]]);
  if (r.truth) pts.push([r.truth.lat, r.truth.lon]);
  map.fitBounds(L.latLngBounds(pts), { padding: [40, 40], maxZoom: 9 });
  panel.hidden = false;
}

function uploadFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  predict("/api/predict", { method: "POST", body: form });
}

function uploadControls() {
  const input = document.getElementById("upload");
  input.addEventListener("change", () => uploadFile(input.files[0]));
  const drop = document.getElementById("drop");
  for (const target of [drop, document.getElementById("map")]) {
    target.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    target.addEventListener("dragleave", () => drop.classList.remove("over"));
    target.addEventListener("drop", (e) => {
      e.preventDefault(); drop.classList.remove("over");
      uploadFile(e.dataTransfer.files[0]);
    });
  }
}

/* ---------------------------------------------------------------- rejects */
async function showRejects() {
  const r = await getJSON("/api/rejects");
  if (!r.n) return;
  const box = document.getElementById("reject-list");
  for (const reason of r.reasons) {
    const d = el("details", { class: "reason", "data-reason": reason.reason });
    d.append(el("summary", {}, `${reason.stage}: ${reason.reason} (${reason.count})`));
    const ul = el("ul");
    for (const s of reason.samples) ul.append(el("li", {}, `${s.key || s.source_id}: ${s.detail || ""}`));
    d.append(ul);
    box.append(d);
  }
  document.getElementById("rejects").hidden = false;
}

/* ---------------------------------------------------------------- start */
const map = L.map("map", { preferCanvas: true, worldCopyJump: false }).setView([30, 70], 5);
const points = new PointsLayer();
let cellsLayer = null;

async function start() {
  const [meta, regions, data] = await Promise.all([
    getJSON("/api/meta"), getJSON("/api/regions"), getJSON("/api/samples")]);
  state.meta = meta;
  document.getElementById("source-folder").textContent = `${meta.kind}: ${meta.root}`;
  document.getElementById("sample-total").textContent = String(meta.n_samples);
  if (meta.tiles) L.tileLayer(meta.tiles, { attribution: meta.tiles_attribution || "" }).addTo(map);
  const outline = L.geoJSON(regions, { style: { color: "#57606a", weight: 1, fillColor: "#ffffff", fillOpacity: 0.5 },
    interactive: false }).addTo(map);
  mercator(data);
  state.data = data;
  points.addTo(map);
  filterControls();
  applyFilters();
  if (regions.features.length) map.fitBounds(outline.getBounds());
  else if (data.lat.length) map.fitBounds(L.latLngBounds(data.lat.map((la, i) => [la, data.lon[i]])));
  map.on("click", (e) => { const i = points.nearest(e.containerPoint); if (i >= 0) showSample(i); });
  document.getElementById("show-cells").addEventListener("change", (e) => toggleCells(e.target.checked));
  if (meta.model) { document.getElementById("ask").hidden = false; uploadControls(); }
  if (meta.kind === "work") showRejects();
  document.body.dataset.ready = "1";
}

async function toggleCells(on) {
  if (!on) { if (cellsLayer) cellsLayer.remove(); return; }
  if (!cellsLayer) {
    const cells = await getJSON("/api/cells");
    cellsLayer = L.layerGroup(cells.map((c) => L.circle([c.center_lat, c.center_lon], {
      radius: 1000 * Math.max(c.radius_km, 0.05), color: "#0969da", weight: 1, fillOpacity: 0.05,
    }).bindTooltip(`cell ${c.cell_id} · ${c.province} · ${c.n_samples} photos · ${c.radius_km.toFixed(1)} km`)));
  }
  cellsLayer.addTo(map);
}

start().catch((e) => {
  document.body.dataset.ready = "error";
  const err = el("div", { class: "error", role: "alert" }, `could not load the data: ${e.message}`);
  document.getElementById("side").prepend(err);
});
