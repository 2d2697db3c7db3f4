// The dashboard's household panels (issue 24): alerts with their snapshots and boxes, the event
// timeline per camera and zone, and the running timers and reminders (live countdown, Cancel).
//
// Data comes from the hub's /api/alerts, /api/history, /api/timers (hub/web/household.py, behind
// the login); live changes from the dashboard's event stream ("alert", "timers"). Everything from
// a device or the AI server reaches the DOM as text, and the boxes as SVG attributes: no innerHTML.

import { $, api, clock, fill, h, openEvents } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const MAX_ALERT_CARDS = 12;

// ----- alerts with snapshots -----

const alertCards = h("div", { id: "alert-cards", class: "alert-cards" });

function snapshotUrl(id, what) {
  return `/api/alerts/${encodeURIComponent(id)}/${what}`;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** The snapshot with its boxes drawn over it (an SVG in the frame's own pixel coordinates). */
function snapshotView(id) {
  const frame = h("div", { class: "snap" });
  frame.style.position = "relative";
  const img = h("img", { class: "snapshot", alt: "alert snapshot" });
  img.style.display = "block";
  img.style.width = "100%";
  img.src = snapshotUrl(id, "snapshot");
  frame.append(img);
  api(snapshotUrl(id, "boxes"))
    .then((r) => (r.ok ? r.json() : null))
    .then((meta) => {
      if (!meta || !meta.width || !meta.height) return;
      const over = svg("svg", { viewBox: `0 0 ${meta.width} ${meta.height}`, class: "boxes", preserveAspectRatio: "none" });
      over.style.position = "absolute";
      over.style.inset = "0";
      over.style.width = "100%";
      over.style.height = "100%";
      over.style.pointerEvents = "none";
      const stroke = Math.max(2, meta.width / 200);
      for (const b of meta.boxes) {
        over.append(svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, fill: "none", stroke: "#ff3b30", "stroke-width": stroke }));
        const label = svg("text", { x: b.x + stroke, y: Math.max(meta.height / 20, b.y - stroke), fill: "#ff3b30",
          "font-size": Math.max(10, meta.height / 18), "font-family": "sans-serif" });
        label.textContent = `${b.label} ${Math.round(b.confidence * 100)}%`;
        over.append(label);
      }
      frame.append(over);
    })
    .catch(() => {});
  return frame;
}

function alertCard(a) {
  const card = h("figure", { class: "alert-card", "data-snapshot-id": a.snapshot_id || "" });
  card.append(a.snapshot_id ? snapshotView(a.snapshot_id) : h("p", { class: "muted" }, "no snapshot"));
  card.append(h("figcaption", {},
    h("strong", {}, (a.alert_type || "").replace(/_/g, " ")), " in ", a.zone || "?",
    h("br"), `${a.source_device || "?"} · ${clock(a.timestamp)} · ${Math.round((a.confidence || 0) * 100)}%`));
  return card;
}

function addAlert(a) {
  alertCards.prepend(alertCard(a));
  while (alertCards.children.length > MAX_ALERT_CARDS) alertCards.lastElementChild.remove();
}

async function loadAlerts() {
  const r = await api("/api/alerts");
  if (!r.ok) return;
  fill(alertCards);
  for (const a of (await r.json()).slice(-MAX_ALERT_CARDS)) addAlert(a);
}

// ----- the event timeline -----

const tl = {
  camera: h("select", { id: "timeline-camera" }, h("option", { value: "" }, "all cameras")),
  zone: h("select", { id: "timeline-zone" }, h("option", { value: "" }, "all zones")),
  since: h("input", { id: "timeline-since", type: "datetime-local" }),
  until: h("input", { id: "timeline-until", type: "datetime-local" }),
  show: h("button", { id: "timeline-show", type: "button" }, "Show"),
  rows: h("tbody", { id: "timeline-rows" }),
  status: h("p", { id: "timeline-status", class: "muted" }),
};

function addOptions(select, values) {
  const have = new Set(Array.from(select.options).map((o) => o.value));
  for (const v of values) if (v && !have.has(v)) select.append(h("option", { value: v }, v));
}

function isoOf(input) {
  return input.value ? new Date(input.value).toISOString() : "";
}

async function loadTimeline() {
  const q = new URLSearchParams();
  for (const [k, v] of [["camera", tl.camera.value], ["zone", tl.zone.value], ["since", isoOf(tl.since)], ["until", isoOf(tl.until)]]) {
    if (v) q.set(k, v);
  }
  tl.status.textContent = "Loading…";
  const r = await api(`/api/history?${q}`);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    tl.status.textContent = body.error || `error ${r.status}`;
    return;
  }
  const events = body.events || [];
  addOptions(tl.camera, events.map((e) => e.camera));
  addOptions(tl.zone, events.map((e) => e.zone));
  fill(tl.rows, events.map((e) => {
    const snap = h("td", {});
    if (e.snapshot_id) {
      const thumb = h("img", { class: "thumb", alt: "snapshot" });
      thumb.style.maxHeight = "48px";
      thumb.loading = "lazy";
      thumb.src = snapshotUrl(e.snapshot_id, "snapshot");
      snap.append(thumb);
    }
    return h("tr", { "data-event-id": e.id },
      h("td", {}, new Date(e.timestamp).toLocaleString()), h("td", {}, e.camera), h("td", {}, e.zone),
      h("td", {}, e.label), h("td", {}, `${Math.round(e.confidence * 100)}%`), h("td", {}, e.outcome), snap);
  }));
  tl.status.textContent = events.length ? `${events.length} event${events.length > 1 ? "s" : ""}` : "No events in this time.";
}

// ----- timers and reminders -----

// Set a timer from the page: the same timer as a voice request, ringing on the chosen device.
const setForm = {
  form: h("form", { id: "timer-form", class: "timer-form small" }),
  minutes: h("input", { id: "timer-minutes", type: "number", min: "0", max: "1440", step: "1", value: "5", "aria-label": "minutes" }),
  seconds: h("input", { id: "timer-seconds", type: "number", min: "0", max: "59", step: "1", value: "0", "aria-label": "seconds" }),
  label: h("input", { id: "timer-label", type: "text", maxlength: "60", placeholder: "name (optional)", "aria-label": "timer name" }),
  device: h("select", { id: "timer-device", "aria-label": "device to ring on", required: true }),
  submit: h("button", { id: "timer-set", type: "submit" }, "Set timer"),
  status: h("span", { id: "timer-form-status", class: "muted", "aria-live": "polite" }),
};

function showDevices(devices) {
  const current = setForm.device.value;
  const usable = (devices || []).filter((d) => d.online);
  fill(setForm.device, usable.map((d) => h("option", { value: d.device_id, selected: d.device_id === current },
    d.room ? `${d.device_id} (${d.room})` : d.device_id)));
  setForm.submit.disabled = usable.length === 0;
  if (!usable.length) setForm.status.textContent = "No device online to ring on.";
  else if (setForm.status.textContent === "No device online to ring on.") setForm.status.textContent = "";
}

async function setTimer(ev) {
  ev.preventDefault();
  const whole = (input) => (input.value === "" ? 0 : Number(input.value));
  setForm.submit.disabled = true;
  setForm.status.textContent = "Setting…";
  try {
    const r = await api("/api/timers", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ minutes: whole(setForm.minutes), seconds: whole(setForm.seconds),
        label: setForm.label.value.trim(), device_id: setForm.device.value }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    setForm.status.textContent = `Set: ${body.label}.`; // the list itself arrives over the event stream
    setForm.label.value = "";
  } catch (err) {
    setForm.status.textContent = `Not set: ${err?.message || err}`;
  } finally {
    setForm.submit.disabled = setForm.device.options.length === 0;
  }
}

const timerList = h("ul", { id: "timer-list", class: "timers" });
const timersEmpty = h("p", { id: "timers-empty", class: "muted" }, "No timers or reminders.");
let skewMs = 0; // the AI server's clock minus ours, from the list's server_time_ms

function left(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

function tick() {
  const now = Date.now() + skewMs;
  for (const node of timerList.querySelectorAll("[data-ends]")) {
    node.textContent = left(Number(node.dataset.ends) - now);
  }
}

async function cancel(t, button) {
  button.disabled = true;
  const r = await api(`/api/timers/${encodeURIComponent(t.id)}/cancel`, { method: "POST" });
  if (r.ok || r.status === 404) {
    timerList.querySelector(`[data-timer-id="${CSS.escape(t.id)}"]`)?.remove();
    timersEmpty.hidden = timerList.children.length > 0;
  } else {
    button.disabled = false;
    button.textContent = "Retry cancel";
  }
}

function showTimers(data) {
  if (data.server_time_ms) skewMs = data.server_time_ms - Date.now();
  const timers = data.timers || [];
  fill(timerList, timers.map((t) => {
    const when = t.ringing ? h("span", { class: "countdown ringing" }, "ringing")
      : t.paused ? h("span", { class: "countdown" }, `${left(t.left_ms)} (paused)`)
      : h("span", { class: "countdown", "data-ends": t.ends_at_ms }, "");
    if (t.kind === "reminder" && !t.ringing && t.ends_at_ms) when.title = new Date(t.ends_at_ms).toLocaleString();
    const button = h("button", { type: "button", class: "cancel" }, t.ringing ? "Stop" : "Cancel");
    button.addEventListener("click", () => cancel(t, button));
    return h("li", { "data-timer-id": t.id, "data-kind": t.kind },
      h("span", { class: "tag" }, t.kind), " ", h("span", { class: "label" }, t.label), " ",
      h("span", { class: "muted" }, t.room || t.device_id), " ", when, " ", button);
  }));
  timersEmpty.hidden = timers.length > 0;
  timersEmpty.textContent = data.reachable === false ? "The AI server is unreachable." : "No timers or reminders.";
  tick();
}

async function loadTimers() {
  const r = await api("/api/timers");
  if (r.ok) showTimers(await r.json());
  else showTimers({ timers: [], reachable: false });
}

// ----- the panels -----

function mount() {
  // The cards go above the panel's alert table (dashboard.js keeps the table and its filters).
  const alertsPanel = $("alerts-panel");
  const heading = alertsPanel.querySelector("h2");
  if (heading) heading.after(alertCards);
  else alertsPanel.prepend(alertCards);
  fill($("timeline-panel"), h("h2", {}, "Event timeline"),
    h("div", { class: "row small" },
      h("label", {}, "Camera ", tl.camera), h("label", {}, "Zone ", tl.zone),
      h("label", {}, "From ", tl.since), h("label", {}, "To ", tl.until), tl.show),
    h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ["Time", "Camera", "Zone", "What", "Confidence", "Outcome", "Snapshot"].map((c) => h("th", {}, c)))),
      tl.rows),
    tl.status);
  fill(setForm.form,
    h("label", {}, setForm.minutes, " min "), h("label", {}, setForm.seconds, " s "),
    setForm.label, setForm.device, setForm.submit, setForm.status);
  setForm.form.addEventListener("submit", setTimer);
  fill($("timers-panel"), h("h2", {}, "Timers and reminders"), timerList, timersEmpty, setForm.form);
  tl.show.addEventListener("click", () => loadTimeline());
  const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
  tl.since.value = new Date(dayAgo.getTime() - dayAgo.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  setInterval(tick, 1000);
  openEvents("/api/events", {
    // A (re)connected stream: what changed while it was away is fetched again.
    hello: () => { loadTimers(); loadAlerts(); },
    alert: (a) => addAlert(a),
    timers: (data) => showTimers(data),
    snapshot: (s) => showDevices(s.devices),
    devices: (list) => showDevices(list),
  });
  loadTimeline();
}

mount();
