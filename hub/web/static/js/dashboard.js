// The dashboard: devices, alerts, recent turns and health, all pushed by the hub over
// server-sent events (/api/events); plus a box to ask a question about a picture.
import { $, ago, api, clock, fill, fmtMs, h, openEvents } from "./common.js";

const MAX_TURN_ROWS = 50;
const KEY_ID = "naila.device_id";

const ui = {
  live: $("live"),
  hub: $("hub-health"),
  ai: $("ai-health"),
  devices: $("devices"),
  devicesEmpty: $("devices-empty"),
  alerts: $("alerts"),
  alertsEmpty: $("alerts-empty"),
  zone: $("alert-zone"),
  type: $("alert-type"),
  turns: $("turn-rows"),
  turnsEmpty: $("turns-empty"),
  form: $("upload-form"),
  file: $("upload-file"),
  question: $("upload-question"),
  submit: $("upload-submit"),
  preview: $("upload-preview"),
  uploadStatus: $("upload-status"),
  answer: $("upload-answer"),
};

const st = { devices: [], levels: {}, alerts: [], turns: [], health: null };

// ----- devices -----

function renderDevices() {
  const rows = st.devices.map((d) => {
    const level = st.levels[d.device_id];
    const status = d.online ? "online" : "offline";
    const via = [d.connected ? "audio" : null, d.mqtt_online ? "MQTT" : null].filter(Boolean).join(" + ");
    return h(
      "tr",
      { "data-device": d.device_id, "data-online": String(d.online) },
      h(
        "td",
        {},
        h("span", { class: "id" }, d.device_id),
        d.kind === "browser" ? h("span", { class: "tag" }, "browser") : null,
        // The privacy switches (issue 22): shown only when off.
        d.camera_enabled === false ? h("span", { class: "tag privacy", "data-privacy": "camera" }, "camera off") : null,
        d.microphone_enabled === false ? h("span", { class: "tag privacy", "data-privacy": "microphone" }, "mic off") : null,
      ),
      h("td", { class: "room" }, d.room || "–"),
      h("td", { class: "listening-mode", "data-mode": d.listening_mode || "" }, (d.listening_mode || "–").replace(/_/g, " ")),
      h("td", {}, h("span", { class: `badge ${d.online ? "on" : "off"}`, "data-status": status }, status), via ? ` ${via}` : ""),
      h("td", { class: "last-seen", "data-iso": d.last_seen || "", title: d.last_seen || "" }, ago(d.last_seen)),
      h(
        "td",
        {},
        typeof level === "number"
          ? h("meter", { min: -90, max: 0, low: -50, high: -10, value: level, title: `${level} dBFS`, "data-level": level })
          : "–",
      ),
      h("td", { class: "fw" }, d.firmware_version || "–"),
    );
  });
  fill(ui.devices, rows);
  ui.devicesEmpty.hidden = rows.length > 0;
}

function renderLevels() {
  for (const row of ui.devices.children) {
    const meter = row.querySelector("meter");
    const level = st.levels[row.dataset.device];
    if (meter && typeof level === "number") {
      meter.value = level;
      meter.dataset.level = String(level);
      meter.title = `${level} dBFS`;
    } else if (!meter && typeof level === "number") {
      return renderDevices(); // a device just connected: rebuild once
    }
  }
}

function tickAges() {
  for (const cell of document.querySelectorAll("td.last-seen")) cell.textContent = ago(cell.dataset.iso);
}

// ----- alerts -----

function syncOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of [...values].sort()) if (!have.has(v)) select.append(h("option", { value: v }, v));
}

function renderAlerts() {
  syncOptions(ui.zone, new Set(st.alerts.map((a) => a.zone)));
  syncOptions(ui.type, new Set(st.alerts.map((a) => a.alert_type)));
  const zone = ui.zone.value;
  const type = ui.type.value;
  const shown = st.alerts.filter((a) => (!zone || a.zone === zone) && (!type || a.alert_type === type));
  const rows = shown
    .slice()
    .reverse()
    .map((a) =>
      h(
        "tr",
        { "data-zone": a.zone, "data-type": a.alert_type },
        h("td", { title: a.timestamp }, clock(a.timestamp)),
        h("td", {}, a.zone),
        h("td", {}, a.alert_type),
        h("td", {}, `${Math.round(a.confidence * 100)} %`),
        h("td", {}, a.source_device),
        // The hub keeps no alert images: say where the snapshot is rather than show a broken image.
        h("td", { class: "muted" }, a.snapshot_available ? "snapshot stored on the AI server" : "none"),
      ),
    );
  fill(ui.alerts, rows);
  ui.alertsEmpty.hidden = rows.length > 0;
}

// ----- turns -----

function turnRow(t) {
  const timing = t.timing || {};
  const flags = [t.interrupted ? "interrupted" : null, t.error_code && t.error_code !== "NONE" ? t.error_code : null]
    .filter(Boolean)
    .join(" · ");
  const parts = [
    ["STT", timing.stt_ms],
    ["LLM", timing.llm_first_token_ms],
    ["1st sentence", timing.first_sentence_ms],
    ["TTS", timing.tts_first_audio_ms],
    ["total", timing.total_ms],
    ["playout", timing.hub_end_to_playout_ms],
  ].map(([label, v]) => h("span", { class: "stage" }, `${label} ${fmtMs(v)}`));
  return h(
    "tr",
    { "data-device": t.device_id },
    h("td", { title: t.finished_at }, clock(t.finished_at)),
    h("td", {}, t.device_id),
    h("td", { class: "text" }, t.transcript || "–"),
    h("td", { class: "text" }, t.reply_text || "–", flags ? h("div", { class: "flags small" }, flags) : null),
    h("td", { class: "stages" }, parts),
  );
}

function renderTurns() {
  fill(ui.turns, st.turns.slice().reverse().map(turnRow));
  ui.turnsEmpty.hidden = st.turns.length > 0;
}

// ----- health -----

function dl(node, pairs) {
  fill(
    node,
    pairs.flatMap(([k, v, attrs]) => [h("dt", {}, k), h("dd", attrs || {}, v === null || v === undefined ? "–" : String(v))]),
  );
}

function renderHealth() {
  const hh = st.health;
  if (!hh) return;
  const hub = hh.hub || {};
  dl(ui.hub, [
    ["status", hub.status, { "data-field": "hub-status" }],
    ["uptime", `${hub.uptime_secs} s`],
    ["active devices", hub.active_devices, { "data-field": "active-devices" }],
    ["AI stream", hub.grpc_connected ? "connected" : "down"],
    ["frames forwarded", hub.frames_forwarded],
    ["speech onsets / ends", `${hub.vad_onsets} / ${hub.vad_ends}`],
    ["reply audio routed", hub.tts_frames_routed],
    ["AI reconnects", hub.grpc_reconnects],
    ["MQTT", hh.mqtt_connected === null ? "not configured" : hh.mqtt_connected ? "connected" : "down"],
  ]);
  const ai = hh.ai_server || {};
  const pairs = [["reachable", ai.reachable === null || ai.reachable === undefined ? "checking" : ai.reachable ? "yes" : `no (${ai.error || "?"})`]];
  if (ai.reachable) {
    pairs.push(["status", ai.status], ["uptime", `${ai.uptime_secs} s`], ["STT", ai.stt], ["LLM", ai.llm], ["TTS", ai.tts]);
    pairs.push(["conversations", ai.active_conversations]);
    for (const s of ai.latencies || []) pairs.push([`${s.stage} p50 / p95`, `${s.p50_ms} / ${s.p95_ms} ms (${s.count})`]);
  }
  const m = hh.ai_server_mqtt;
  if (m) pairs.push(["MQTT status", `${m.online ? "online" : "offline"} ${m.version || ""}`.trim()]);
  dl(ui.ai, pairs);
}

// ----- events -----

const handlers = {
  hello: () => {},
  snapshot: (s) => {
    st.devices = s.devices || [];
    st.levels = s.levels || {};
    st.alerts = s.alerts || [];
    st.turns = s.turns || [];
    st.health = s.health || null;
    renderDevices();
    renderAlerts();
    renderTurns();
    renderHealth();
  },
  devices: (list) => {
    st.devices = list;
    renderDevices();
  },
  levels: (levels) => {
    st.levels = levels;
    renderLevels();
  },
  alert: (a) => {
    st.alerts.push(a);
    if (st.alerts.length > 200) st.alerts.shift();
    renderAlerts();
  },
  turn: (t) => {
    st.turns.push(t);
    if (st.turns.length > MAX_TURN_ROWS) st.turns.shift();
    renderTurns();
  },
  health: (hh) => {
    st.health = hh;
    renderHealth();
  },
};

function setLive(on) {
  ui.live.textContent = on ? "live" : "reconnecting";
  ui.live.className = `badge ${on ? "on" : "off"}`;
  ui.live.dataset.live = String(on);
}

// ----- image question -----

async function ask(ev) {
  ev.preventDefault();
  const file = ui.file.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("question", ui.question.value.trim() || "What is in this picture?");
  const id = localStorage.getItem(KEY_ID);
  if (id) form.append("session_id", id);
  ui.submit.disabled = true;
  ui.answer.textContent = "";
  ui.uploadStatus.textContent = "Asking…";
  try {
    const resp = await api("/api/upload", { method: "POST", body: form });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
    ui.uploadStatus.textContent = `Answered in ${data.elapsed_ms} ms${data.error ? ` (error: ${data.error})` : ""}`;
    ui.answer.textContent = data.answer || "(no answer)";
  } catch (err) {
    ui.uploadStatus.textContent = `Failed: ${err?.message || err}`;
  } finally {
    ui.submit.disabled = false;
  }
}

function showPreview() {
  const file = ui.file.files[0];
  if (ui.preview.dataset.url) URL.revokeObjectURL(ui.preview.dataset.url);
  if (!file) {
    ui.preview.hidden = true;
    return;
  }
  const url = URL.createObjectURL(file); // a blob: URL of the user's own file (CSP img-src allows blob:)
  ui.preview.dataset.url = url;
  ui.preview.src = url;
  ui.preview.hidden = false;
}

function main() {
  setLive(false);
  ui.zone.addEventListener("change", renderAlerts);
  ui.type.addEventListener("change", renderAlerts);
  ui.form.addEventListener("submit", ask);
  ui.file.addEventListener("change", showPreview);
  setInterval(tickAges, 1000);
  openEvents("/api/events", handlers, setLive);
}

main();
