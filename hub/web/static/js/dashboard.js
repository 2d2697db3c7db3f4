// The dashboard: cameras, devices (with their privacy controls), alerts, latency, recent turns
// and health, all pushed by the hub over server-sent events (/api/events); plus a box to ask a
// question about a picture. A camera event says only that a view changed: the page then fetches
// the image (with the login) from /api/cameras/{id}/view.
import { stackedBars, sparkline, svg } from "./charts.js";
import { $, ago, api, clock, fill, fmtMs, h, openEvents } from "./common.js";

const MAX_TURN_ROWS = 50;
const KEY_ID = "naila.device_id";

const LEVEL_POINTS = 60; // mic level sparkline: the last 12 s at the hub's 5 updates a second
const MIN_BAR_PX = 14; // a narrow chart (a phone) shows fewer, wider bars: the newest that fit
const CONTROL_WAIT_MS = 10000; // a control waits this long for the device's status to confirm it

const ui = {
  live: $("live"),
  cameras: $("cameras"),
  camerasEmpty: $("cameras-empty"),
  dialog: $("camera-dialog"),
  dialogTitle: $("camera-dialog-title"),
  dialogImg: $("camera-dialog-img"),
  dialogBoxes: $("camera-dialog-boxes"),
  dialogInfo: $("camera-dialog-info"),
  latencyChart: $("latency-chart"),
  latencySummary: $("latency-summary"),
  latencyLegend: $("latency-legend"),
  latencyEmpty: $("latency-empty"),
  controlsStatus: $("controls-status"),
  hub: $("hub-health"),
  ai: $("ai-health"),
  devices: $("devices"),
  devicesEmpty: $("devices-empty"),
  // The alerts table may be replaced by the alerts panel's own script (household.js): optional here.
  alerts: document.getElementById("alerts"),
  alertsEmpty: document.getElementById("alerts-empty"),
  zone: document.getElementById("alert-zone"),
  type: document.getElementById("alert-type"),
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

const st = { devices: [], levels: {}, levelHistory: {}, alerts: [], turns: [], latency: null, health: null, cameras: [], pending: {} };

// ----- cameras -----

function viewUrl(cam) {
  return `/api/cameras/${encodeURIComponent(cam.device_id)}/view?v=${cam.version}`;
}

/** The detections as SVG boxes over an image of ``size`` (boxes are fractions of the frame). */
function drawBoxes(node, cam) {
  const [w, hgt] = cam.size || [640, 480];
  node.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  const font = Math.max(10, Math.round(w / 18)); // readable on a small tile
  fill(
    node,
    (cam.detections || []).map((d) => {
      const [x, y, bw, bh] = d.box;
      const label = `${d.label} ${Math.round(d.confidence * 100)}%`;
      return svg(
        "g",
        { class: "det", "data-label": d.label },
        svg("rect", { x: x * w, y: y * hgt, width: bw * w, height: bh * hgt }),
        svg("text", { x: x * w + 3, y: Math.max(font, y * hgt - 4), "font-size": font }, label),
      );
    }),
  );
}

/** What the AI server last saw, with its age: never "nothing" for a view it has not analysed. */
function detectionsInfo(cam) {
  if (!cam.analysed_at) return "not analysed yet";
  const labels = [...new Set((cam.detections || []).map((d) => d.label))];
  const what = labels.length ? `sees ${labels.join(", ")}` : "nothing detected";
  const newer = cam.view_at && Date.parse(cam.view_at) > Date.parse(cam.analysed_at);
  return `${what} ${ago(cam.analysed_at)}${newer ? " (this view not analysed yet)" : ""}`;
}

function camInfo(cam) {
  return [
    cam.zone ? `zone ${cam.zone}` : null,
    cam.room ? `room ${cam.room}` : null,
    `motion ${cam.last_motion ? ago(cam.last_motion) : "none seen"}`,
    detectionsInfo(cam),
  ]
    .filter(Boolean)
    .join(" · ");
}

function cameraTile(cam) {
  const img = h("img", { alt: `latest view of ${cam.device_id}` });
  const boxes = svg("svg", { class: "boxes", preserveAspectRatio: "xMidYMid meet" });
  const tile = h(
    "figure",
    { class: "tile", tabindex: "0", "data-camera": cam.device_id },
    h("div", { class: "view" }, img, boxes),
    h("figcaption", {}, h("span", { class: "id" }, cam.device_id), h("span", { class: "info small muted" }, "")),
  );
  tile.addEventListener("click", () => openCamera(cam.device_id));
  tile.addEventListener("keydown", (ev) => (ev.key === "Enter" || ev.key === " ") && openCamera(cam.device_id));
  return tile;
}

function renderCameras() {
  const have = new Map([...ui.cameras.children].map((t) => [t.dataset.camera, t]));
  const tiles = st.cameras.map((cam) => {
    const tile = have.get(cam.device_id) || cameraTile(cam);
    const img = tile.querySelector("img");
    // Only a new version costs a fetch (and the hub encodes each chosen frame at most once).
    if (cam.version > 0 && tile.dataset.version !== String(cam.version)) {
      img.src = viewUrl(cam);
      tile.dataset.version = String(cam.version);
    }
    drawBoxes(tile.querySelector("svg.boxes"), cam);
    tile.querySelector(".info").textContent = camInfo(cam);
    return tile;
  });
  fill(ui.cameras, tiles);
  ui.camerasEmpty.hidden = tiles.length > 0;
  if (ui.dialog.open) renderDialog();
}

function openCamera(id) {
  ui.dialog.dataset.camera = id;
  ui.dialog.dataset.version = "";
  renderDialog();
  if (!ui.dialog.open) ui.dialog.showModal();
}

function renderDialog() {
  const cam = st.cameras.find((c) => c.device_id === ui.dialog.dataset.camera);
  if (!cam) {
    ui.dialog.close();
    return;
  }
  ui.dialogTitle.textContent = cam.device_id;
  if (cam.version > 0 && ui.dialog.dataset.version !== String(cam.version)) {
    ui.dialogImg.src = viewUrl(cam);
    ui.dialog.dataset.version = String(cam.version);
  }
  drawBoxes(ui.dialogBoxes, cam);
  ui.dialogInfo.textContent = `${camInfo(cam)} · view from ${cam.view_at ? clock(cam.view_at) : "–"}`;
}

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
      h("td", { class: "listening-mode", "data-mode": d.listening_mode || "" }, listeningMode(d)),
      h("td", {}, h("span", { class: `badge ${d.online ? "on" : "off"}`, "data-status": status }, status), via ? ` ${via}` : ""),
      h("td", { class: "last-seen", "data-iso": d.last_seen || "", title: d.last_seen || "" }, ago(d.last_seen)),
      h(
        "td",
        { class: "level" },
        typeof level === "number"
          ? h("meter", { min: -90, max: 0, low: -50, high: -10, value: level, title: `${level} dBFS`, "data-level": level })
          : "–",
        st.levelHistory[d.device_id]?.length > 1 ? sparkline(st.levelHistory[d.device_id], -90, 0) : null,
      ),
      h("td", { class: "controls" }, controls(d)),
      h("td", { class: "fw" }, d.firmware_version || "–"),
    );
  });
  fill(ui.devices, rows);
  ui.devicesEmpty.hidden = rows.length > 0;
}

// ----- device controls: the same MQTT commands as voice; the state shown is the device's status -----

function controls(d) {
  if (d.kind === "browser" || !d.mqtt_online) return "–";
  const out = [];
  for (const [command, field, name] of [
    ["camera", "camera_enabled", "camera"],
    ["microphone", "microphone_enabled", "microphone"],
  ]) {
    const on = d[field];
    if (on !== true && on !== false) continue; // the device has no such switch (or did not say)
    const key = `${d.device_id}/${command}`;
    const pending = st.pending[key];
    if (pending && (pending.want === on || Date.now() > pending.until)) delete st.pending[key];
    const waiting = Boolean(st.pending[key]);
    const btn = h(
      "button",
      {
        type: "button",
        class: `toggle ${on ? "on" : "off"}`,
        "data-control": command,
        "aria-pressed": String(on),
        disabled: waiting,
        title: on ? `turn the ${name} off` : `turn the ${name} on`,
      },
      waiting ? `${name}…` : `${name} ${on ? "on" : "off"}`,
    );
    btn.addEventListener("click", () => sendControl(d.device_id, command, !on));
    out.push(btn);
  }
  return out.length ? out : "–";
}

// The listening mode: a select sending the listening_mode command; its value is the device's status.
const MODES = ["wake_word", "always", "push_to_talk"];

function listeningMode(d) {
  const shown = (d.listening_mode || "–").replace(/_/g, " ");
  if (d.kind === "browser" || !d.mqtt_online) return shown;
  const key = `${d.device_id}/listening_mode`;
  const pending = st.pending[key];
  if (pending && (pending.want === d.listening_mode || Date.now() > pending.until)) delete st.pending[key];
  const waiting = Boolean(st.pending[key]);
  const options = MODES.map((m) => h("option", { value: m, selected: m === d.listening_mode }, m.replace(/_/g, " ")));
  if (!MODES.includes(d.listening_mode)) options.unshift(h("option", { value: "", selected: true, disabled: true }, shown));
  const select = h(
    "select",
    { "data-control": "listening_mode", "aria-label": `listening mode of ${d.device_id}`, disabled: waiting },
    ...options,
  );
  select.addEventListener("change", () => sendControl(d.device_id, "listening_mode", select.value, { mode: select.value }));
  return waiting ? [select, h("span", { class: "muted" }, " …")] : select;
}

async function sendControl(deviceId, command, want, params = { enabled: want }) {
  st.pending[`${deviceId}/${command}`] = { want, until: Date.now() + CONTROL_WAIT_MS };
  renderDevices();
  setTimeout(renderDevices, CONTROL_WAIT_MS + 100); // give up waiting if no status came
  try {
    const resp = await api(`/api/devices/${encodeURIComponent(deviceId)}/control`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ command, ...params }),
    });
    if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).error || `HTTP ${resp.status}`);
  } catch (err) {
    delete st.pending[`${deviceId}/${command}`];
    renderDevices();
    ui.controlsStatus.textContent = `Could not send ${command} to ${deviceId}: ${err?.message || err}`;
  }
}

function recordLevels(levels) {
  for (const [id, v] of Object.entries(levels)) {
    const hist = (st.levelHistory[id] ||= []);
    hist.push(v);
    if (hist.length > LEVEL_POINTS) hist.shift();
  }
}

function renderLevels() {
  for (const row of ui.devices.children) {
    const meter = row.querySelector("meter");
    const level = st.levels[row.dataset.device];
    if (meter && typeof level === "number") {
      meter.value = level;
      meter.dataset.level = String(level);
      meter.title = `${level} dBFS`;
      const hist = st.levelHistory[row.dataset.device];
      const old = row.querySelector("svg.spark");
      if (hist?.length > 1) {
        const line = sparkline(hist, -90, 0);
        if (old) old.replaceWith(line);
        else meter.after(line);
      }
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

/** The alert's snapshot as a thumbnail linking to the full image (both through the hub, with the login). */
function snapshotLink(a) {
  if (!a.snapshot_id) return h("span", { class: "muted" }, a.snapshot_available ? "no snapshot id" : "none");
  const url = `/api/alerts/${encodeURIComponent(a.snapshot_id)}/snapshot`;
  const thumb = h("img", { class: "thumb", alt: `snapshot of the ${(a.alert_type || "").replace(/_/g, " ")} alert`, loading: "lazy" });
  thumb.src = url;
  const link = h("a", { target: "_blank", rel: "noopener", title: "open the snapshot" }, thumb);
  link.href = url; // a URL the page builds from an encoded id (h() refuses href by design)
  return link;
}

function renderAlerts() {
  if (!ui.alerts || !ui.zone || !ui.type || !ui.alertsEmpty) return;
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
        h("td", { class: "snapshot-cell" }, snapshotLink(a)),
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
  renderLatency();
}

// ----- latency chart -----

// The AI server's and the hub's timings are ms from the end of speech, so each stage is the
// step from the previous milestone; a milestone a turn lacks adds nothing (its step is 0). The
// p50/p95 of the last hour come from the hub (hub/turns.py keeps the hour's turns), the bars are
// the newest turns.
const MILESTONES = [
  ["stt_ms", "speech to text", "s-stt", "stt"],
  ["llm_first_token_ms", "LLM first token", "s-llm", "llm"],
  ["first_sentence_ms", "first sentence", "s-sentence", "sentence"],
  ["tts_first_audio_ms", "speech synthesis", "s-tts", "tts"],
  ["hub_end_to_playout_ms", "to the speaker", "s-playout", "playout"],
];

function stagesOf(timing) {
  let prev = 0;
  return MILESTONES.map(([key]) => {
    const v = timing?.[key];
    if (typeof v !== "number" || v <= 0) return 0;
    const step = Math.max(0, v - prev);
    prev = Math.max(prev, v);
    return step;
  });
}

function renderLatency() {
  const turns = st.turns.filter((t) => t.timing && stagesOf(t.timing).some((v) => v > 0));
  ui.latencyEmpty.hidden = turns.length > 0;
  // Drawn at the container's own pixel width, so axis labels keep their size on a phone; as many
  // of the newest turns as fit at MIN_BAR_PX each.
  const width = Math.max(280, Math.round(ui.latencyChart.clientWidth || 720));
  const narrow = width < 560;
  const shown = turns.slice(-Math.max(1, Math.floor((width - 56) / MIN_BAR_PX)));
  const stages = st.latency?.stages || {};
  const total = stages.total || {};
  const bars = shown.map((t) => ({ key: t.conversation_id, label: `${t.device_id} ${clock(t.finished_at)}`, segments: stagesOf(t.timing) }));
  fill(
    ui.latencyChart,
    shown.length
      ? stackedBars(
          bars,
          MILESTONES.map(([, label, cls]) => [label, cls]),
          [
            { value: total.p50 ?? null, label: `p50 ${fmtMs(total.p50)}`, cls: "p50" },
            { value: total.p95 ?? null, label: `p95 ${fmtMs(total.p95)}`, cls: "p95" },
          ],
          { width, height: narrow ? 240 : 220, caption: `ms, the newest ${shown.length} turn${shown.length > 1 ? "s" : ""}; lines: the hour's p50 / p95` },
        )
      : null,
  );
  ui.latencySummary.textContent = total.count
    ? `End of speech to reply audio over the last hour (${total.count} turns): p50 ${fmtMs(total.p50)} ms, p95 ${fmtMs(total.p95)} ms. ` +
      MILESTONES.map(([, label, , name]) => {
        const v = stages[name];
        return v?.count ? `${label} p50 ${fmtMs(v.p50)} / p95 ${fmtMs(v.p95)}` : null;
      })
        .filter(Boolean)
        .join(" · ")
    : "";
  if (!ui.latencyLegend.children.length) {
    fill(ui.latencyLegend, MILESTONES.map(([, label, cls]) => h("li", {}, h("span", { class: `swatch ${cls}` }), label)));
  }
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
    st.latency = s.latency || null;
    st.health = s.health || null;
    st.cameras = s.cameras || [];
    recordLevels(st.levels);
    renderCameras();
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
    recordLevels(levels);
    renderLevels();
  },
  cameras: (list) => {
    st.cameras = list;
    renderCameras();
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
  latency: (l) => {
    st.latency = l;
    renderLatency();
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
  ui.zone?.addEventListener("change", renderAlerts);
  ui.type?.addEventListener("change", renderAlerts);
  ui.form.addEventListener("submit", ask);
  ui.file.addEventListener("change", showPreview);
  setInterval(tickAges, 1000);
  setInterval(() => st.cameras.length && renderCameras(), 5000); // "motion 12 s ago" keeps ageing
  let drawnWidth = ui.latencyChart.clientWidth;
  new ResizeObserver(() => {
    if (ui.latencyChart.clientWidth !== drawnWidth) {
      drawnWidth = ui.latencyChart.clientWidth;
      renderLatency();
    }
  }).observe(ui.latencyChart);
  openEvents("/api/events", handlers, setLive);
}

main();
