// The browser device: the same POST /connect contract as the Pi agent, from a phone or laptop.
//
// Audio goes over WebRTC (the browser's own echo cancellation and noise suppression on the mic);
// the hub's control data channel ("naila-control") brings the transcript, the reply text as it
// plays, the turn's timing and barge-in flushes; the event stream (/api/events) brings the hub's
// record of each finished turn and tells the page when the hub restarted, so it reconnects at once.
import { $, api, dbfs, fill, h, latencyList, openEvents } from "./common.js";

const KEY_ID = "naila.device_id";
const KEY_TOKEN = "naila.device_token";
const KEY_ROOM = "naila.room";
const KEY_MODE = "naila.mode";
const CONTROL_LABEL = "naila-control";
const LOUD_DBFS = -45; // above this the mic (or the speaker) counts as "someone is talking"
// The reply timing ("heard N ms after you stopped speaking") is read from the analysers' sample
// buffers on the audio clock, not from when a timer tick happened to fire: each tick reads the last
// TIMING_SAMPLES (85 ms at 48 kHz) of each side, so ticks METER_MS apart overlap and a tick up to
// ~35 ms late leaves no gap, and every SUB_MS piece of it is judged loud or quiet with its own time.
// (Judging a 21 ms window per 50 ms tick, as before, put the end of speech up to 29 ms early and
// the reply up to 50 ms late: +29 ms on average, up to +79.) Ticking faster buys no precision and
// costs the renderer CPU: the meters repaint on each tick, and 20 ms ticks took headless Chromium
// from 8.5 to 13.2 CPU-seconds over a five-question conversation here.
const METER_MS = 50;
const TIMING_SAMPLES = 4096;
const SUB_MS = 10;
const MAX_TURNS = 30;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
// After a barge-in "flush" the browser still holds up to ~0.5 s of reply audio in its jitter
// buffer, which a page cannot drop: mute the speaker for that long instead.
const FLUSH_MUTE_MS = 600;

const ui = {
  state: $("conn-state"),
  detail: $("conn-detail"),
  deviceId: $("device-id"),
  room: $("room"),
  roomSave: $("room-save"),
  start: $("start"),
  talk: $("talk"),
  micLevel: $("mic-level"),
  spkLevel: $("spk-level"),
  turns: $("turns"),
  audio: $("remote-audio"),
  modes: [$("mode-ptt"), $("mode-wakeword"), $("mode-handsfree")],
  listening: $("listening"),
};
// The page's modes and the hub's listening modes (issue 19): the hub decides which speech is a
// turn; the page tells it the mode and the push-to-talk button over the control channel.
const HUB_MODE = { ptt: "push_to_talk", wakeword: "wake_word", handsfree: "always" };
const PAGE_MODES = Object.keys(HUB_MODE);

const st = {
  mode: PAGE_MODES.includes(localStorage.getItem(KEY_MODE)) ? localStorage.getItem(KEY_MODE) : "ptt",
  control: null, // the open control channel, for the mode and the button
  mic: null, // MediaStream from getUserMedia
  pc: null,
  generation: 0, // bumped on every connect attempt: callbacks of an older peer are ignored
  want: false, // the user pressed Start: stay connected, reconnect when needed
  attempt: 0,
  timer: null,
  connectStarted: 0,
  pttDown: false,
  handsFreeOn: true,
  hubInstance: null,
  ctx: null,
  micAnalyser: null,
  spkAnalyser: null,
  lastMicLoudAt: 0, // audio-clock ms: the end of the last loud 10 ms of the mic (the end of speech)
  micScanned: 0, // audio-clock ms up to which the mic's buffer has been judged
  spkScanned: 0,
  spkLoud: false, // the speaker's last judged 10 ms was loud
  spkOnsetAt: 0, // audio-clock ms: the start of the speaker's latest loud run (a reply began)
  awaitingReply: null, // {card, speechEnd}: measuring the time until the reply is heard
  current: null, // the turn card being filled by control messages
};

// ----- identity: a device id and token per browser, kept in localStorage -----

async function ensureToken({ fresh = false } = {}) {
  const body = {
    device_id: fresh ? "" : localStorage.getItem(KEY_ID) || "",
    room: localStorage.getItem(KEY_ROOM) || "",
  };
  const resp = await api("/api/device-token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || `device token: HTTP ${resp.status}`);
  localStorage.setItem(KEY_ID, data.device_id);
  localStorage.setItem(KEY_TOKEN, data.token);
  ui.deviceId.textContent = data.device_id;
  return data;
}

// ----- connection state -----

function setState(state, detail = "") {
  const labels = {
    idle: "not started",
    connecting: "connecting",
    connected: "connected",
    reconnecting: "reconnecting",
    error: "error",
  };
  ui.state.textContent = labels[state] || state;
  ui.state.dataset.state = state;
  ui.state.className = `badge ${state === "connected" ? "on" : state === "error" ? "bad" : "off"}`;
  ui.detail.textContent = detail;
}

function closePeer() {
  const pc = st.pc;
  st.pc = null;
  if (pc) {
    pc.onconnectionstatechange = null;
    pc.ontrack = null;
    pc.close();
  }
}

function scheduleReconnect(reason) {
  if (!st.want) return;
  closePeer();
  clearTimeout(st.timer);
  // Exponential backoff with jitter (0.5 s .. 10 s): a restarting hub is not hammered by every browser at once.
  const delay = Math.min(10000, 500 * 2 ** st.attempt) * (0.5 + Math.random() / 2);
  st.attempt += 1;
  setState("reconnecting", `${reason}; retrying in ${(delay / 1000).toFixed(1)} s`);
  st.timer = setTimeout(connect, delay);
}

function waitIceGathering(pc, timeoutMs) {
  // The hub takes one complete offer (no trickle over HTTP), as the Pi agent sends it.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

async function connect() {
  if (!st.want) return;
  clearTimeout(st.timer);
  closePeer();
  const gen = ++st.generation;
  st.connectStarted = performance.now();
  setState("connecting", st.attempt ? `attempt ${st.attempt + 1}` : "");
  try {
    if (!localStorage.getItem(KEY_ID) || !localStorage.getItem(KEY_TOKEN)) await ensureToken();
    const deviceId = localStorage.getItem(KEY_ID);
    const token = localStorage.getItem(KEY_TOKEN);
    const pc = new RTCPeerConnection({ iceServers: [] });
    st.pc = pc;
    const channel = pc.createDataChannel(CONTROL_LABEL, { ordered: true });
    channel.onmessage = (ev) => onControl(ev.data);
    channel.onopen = () => {
      if (gen !== st.generation) return;
      st.control = channel;
      sendControl({ type: "listening", mode: HUB_MODE[st.mode] });
      if (st.mode === "ptt") sendControl({ type: "ptt", pressed: st.pttDown });
    };
    for (const track of st.mic.getAudioTracks()) pc.addTrack(track, st.mic);
    pc.ontrack = (ev) => {
      // Issue 20: play the reply as soon as it arrives. 0 asks for the smallest jitter buffer the
      // browser allows (Chromium adapts it upwards on a lossy link); browsers without it ignore it.
      if (ev.track.kind === "audio" && "jitterBufferTarget" in ev.receiver) ev.receiver.jitterBufferTarget = 0;
      attachRemote(ev.streams[0] || new MediaStream([ev.track]));
    };
    pc.onconnectionstatechange = () => onPeerState(pc, gen);
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc, 3000);
    const resp = await fetch("/connect", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ device_id: deviceId, sdp: pc.localDescription.sdp }),
    });
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401) {
      // The token expired (it lives as long as a login) or the hub's web token changed: ask for a new one.
      localStorage.removeItem(KEY_TOKEN);
      throw new Error("device token refused");
    }
    if (!resp.ok) throw new Error(body.error || `hub answered HTTP ${resp.status}`);
    if (gen !== st.generation) return;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
  } catch (err) {
    if (gen === st.generation) scheduleReconnect(err?.message || String(err));
  }
}

function onPeerState(pc, gen) {
  if (gen !== st.generation || pc !== st.pc) return;
  const state = pc.connectionState;
  if (state === "connected") {
    const ms = Math.round(performance.now() - st.connectStarted);
    st.attempt = 0;
    ui.state.dataset.connectMs = String(ms);
    setState("connected", `in ${ms} ms`);
  } else if (state === "failed" || state === "closed") {
    scheduleReconnect(`connection ${state}`);
  } else if (state === "disconnected") {
    // Often recovers by itself within a second or two (Wi-Fi roaming); give it that long.
    setTimeout(() => {
      if (gen === st.generation && pc.connectionState === "disconnected") scheduleReconnect("connection lost");
    }, 2500);
  }
}

// ----- audio -----

function attachRemote(stream) {
  // Chromium only feeds a remote WebRTC stream to WebAudio once a media element plays it.
  ui.audio.srcObject = stream;
  ui.audio.play().catch(() => {});
  if (st.ctx) {
    st.spkAnalyser = st.ctx.createAnalyser();
    st.spkAnalyser.fftSize = TIMING_SAMPLES;
    st.ctx.createMediaStreamSource(stream).connect(st.spkAnalyser);
  }
}

function sendControl(msg) {
  const ch = st.control;
  if (ch && ch.readyState === "open") ch.send(JSON.stringify(msg));
}

function showListening(on) {
  // The hub heard the wake word (it also plays an earcon) and listens for the question.
  ui.listening.hidden = !on;
}

function applyMicGate() {
  const on = st.mode === "ptt" ? st.pttDown : st.handsFreeOn;
  for (const t of st.mic?.getAudioTracks() || []) t.enabled = on;
  ui.talk.classList.toggle("active", on);
  ui.talk.setAttribute("aria-pressed", on ? "true" : "false");
  if (st.mode === "ptt") ui.talk.textContent = on ? "Listening… release to send" : "Hold to talk";
  else if (st.mode === "wakeword") ui.talk.textContent = on ? "Say “Okay Nabu” (tap to mute)" : "Muted (tap to listen)";
  else ui.talk.textContent = on ? "Listening (tap to mute)" : "Muted (tap to listen)";
}

/** Audio-clock ms (the AudioContext's, which both analysers' buffers follow). */
function audioNow() {
  return st.ctx ? st.ctx.currentTime * 1000 : performance.now();
}

/**
 * The 10 ms pieces of ``buf`` (ending at ``endMs`` on the audio clock) not judged before
 * ``scannedMs``, oldest first: [startMs, loud] each; pieces are counted back from the end.
 */
function loudPieces(buf, rate, endMs, scannedMs) {
  const n = Math.max(1, Math.round((rate * SUB_MS) / 1000));
  const pieces = [];
  for (let e = buf.length; e - n >= 0; e -= n) {
    const startMs = endMs - ((buf.length - e + n) * 1000) / rate;
    if (startMs < scannedMs) break;
    pieces.push([startMs, dbfs(buf.subarray(e - n, e)) > LOUD_DBFS]);
  }
  return pieces.reverse();
}

function meter() {
  const buf = new Float32Array(TIMING_SAMPLES);
  const rate = st.ctx ? st.ctx.sampleRate : 48000;
  const now = audioNow();
  const read = (analyser) => {
    if (!analyser) return false;
    analyser.getFloatTimeDomainData(buf);
    return true;
  };
  if (read(st.micAnalyser)) {
    ui.micLevel.value = Math.max(-90, dbfs(buf.subarray(TIMING_SAMPLES / 2)));
    const micLive = st.mic?.getAudioTracks().some((t) => t.enabled);
    for (const [at, loud] of loudPieces(buf, rate, now, st.micScanned)) {
      if (micLive && loud) st.lastMicLoudAt = at + SUB_MS;
      st.micScanned = at + SUB_MS;
    }
  }
  if (read(st.spkAnalyser)) {
    ui.spkLevel.value = Math.max(-90, dbfs(buf.subarray(TIMING_SAMPLES / 2)));
    for (const [at, loud] of loudPieces(buf, rate, now, st.spkScanned)) {
      if (loud && !st.spkLoud) st.spkOnsetAt = at;
      st.spkLoud = loud;
      st.spkScanned = at + SUB_MS;
    }
  } else {
    ui.spkLevel.value = -90;
  }
  settleReplyTiming();
}

/** The reply is heard once the speaker's sound starts after the end of speech (its onset may come
 * before or after the transcript message that opened the card). */
function settleReplyTiming() {
  const waiting = st.awaitingReply;
  if (!waiting || st.spkOnsetAt <= waiting.speechEnd) return;
  st.awaitingReply = null;
  const ms = Math.round(st.spkOnsetAt - waiting.speechEnd);
  waiting.card.dataset.heardAfterMs = String(ms);
  waiting.card.querySelector(".heard").textContent = `Reply heard ${ms} ms after you stopped speaking (measured in this browser).`;
}

async function start() {
  ui.start.disabled = true;
  try {
    st.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    ui.start.disabled = false;
    const insecure = !window.isSecureContext ? " (the page must be opened over HTTPS or on localhost)" : "";
    setState("error", `no microphone: ${err?.message || err}${insecure}`);
    return;
  }
  st.ctx = new AudioContext();
  st.micAnalyser = st.ctx.createAnalyser();
  st.micAnalyser.fftSize = TIMING_SAMPLES;
  st.ctx.createMediaStreamSource(st.mic).connect(st.micAnalyser);
  setInterval(meter, METER_MS);
  ui.start.hidden = true;
  ui.talk.hidden = false;
  applyMicGate();
  st.want = true;
  st.attempt = 0;
  connect();
}

// ----- conversation -----

function newCard(transcript) {
  const card = h(
    "li",
    { class: "turn" },
    h("p", { class: "you" }, h("span", { class: "who" }, "You"), h("span", { class: "text" }, transcript)),
    h("p", { class: "naila" }, h("span", { class: "who" }, "NAILA"), h("span", { class: "text" }, "…")),
    h("p", { class: "heard muted small" }),
    h("p", { class: "flags small" }),
    h("div", { class: "timing" }),
  );
  card.dataset.transcript = transcript;
  ui.turns.prepend(card);
  while (ui.turns.children.length > MAX_TURNS) ui.turns.lastElementChild.remove();
  return card;
}

function setReply(card, text) {
  card.querySelector(".naila .text").textContent = text || "…";
}

function setTiming(card, timing, flags) {
  fill(card.querySelector(".timing"), latencyList(timing));
  const notes = [];
  if (flags.interrupted) notes.push("interrupted");
  if (flags.error && flags.error !== "NONE") notes.push(`error: ${flags.error}`);
  card.querySelector(".flags").textContent = notes.join(" · ");
  card.classList.toggle("interrupted", Boolean(flags.interrupted));
}

function onControl(raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch (_) {
    return;
  }
  if (!msg || typeof msg.type !== "string") return;
  if (msg.type === "listening") {
    showListening(msg.state === "listening");
    return;
  }
  if (msg.type === "transcript") {
    showListening(false);
    const card = newCard(String(msg.text || ""));
    st.current = card;
    card.dataset.reply = "";
    st.awaitingReply = { card, speechEnd: st.lastMicLoudAt || audioNow() };
    settleReplyTiming();
  } else if (msg.type === "reply" && st.current) {
    const text = `${st.current.dataset.reply} ${String(msg.text || "")}`.trim();
    st.current.dataset.reply = text;
    setReply(st.current, text);
  } else if (msg.type === "turn_end" && st.current) {
    setTiming(st.current, msg.timing || {}, { interrupted: msg.interrupted, error: msg.error });
    st.current = null;
  } else if (msg.type === "flush") {
    if (st.current) st.current.classList.add("interrupted");
    ui.audio.muted = true;
    setTimeout(() => {
      ui.audio.muted = false;
    }, FLUSH_MUTE_MS);
  }
}

/** The hub's record of a finished turn (event stream): the final reply and every timing. */
function onRecordedTurn(turn) {
  const cards = [...ui.turns.children];
  let card = cards.find((c) => !c.dataset.recorded && c.dataset.transcript === turn.transcript);
  if (!card) card = newCard(turn.transcript || "");
  card.dataset.recorded = "1";
  card.dataset.reply = turn.reply_text || "";
  setReply(card, turn.reply_text);
  setTiming(card, turn.timing, { interrupted: turn.interrupted, error: turn.error_code });
  if (st.current === card) st.current = null;
}

function onHello(hello) {
  const restarted = st.hubInstance !== null && hello.hub_instance !== st.hubInstance;
  st.hubInstance = hello.hub_instance;
  if (restarted) {
    // The hub restarted: our session there is gone even if ICE has not noticed yet.
    ensureToken().catch(() => {});
    if (st.want) {
      st.attempt = 0;
      connect();
    }
  }
}

// ----- controls -----

function setupControls() {
  for (const radio of ui.modes) {
    radio.checked = radio.value === st.mode;
    radio.addEventListener("change", () => {
      st.mode = radio.value;
      localStorage.setItem(KEY_MODE, st.mode);
      st.pttDown = false;
      sendControl({ type: "listening", mode: HUB_MODE[st.mode] });
      applyMicGate();
    });
  }
  ui.start.addEventListener("click", start);
  const press = (down) => {
    if (st.mode !== "ptt" || st.pttDown === down) return;
    st.pttDown = down;
    sendControl({ type: "ptt", pressed: down }); // the hub ends the turn on release
    applyMicGate();
  };
  ui.talk.addEventListener("pointerdown", (ev) => {
    if (st.mode !== "ptt") {
      st.handsFreeOn = !st.handsFreeOn;
      applyMicGate();
      return;
    }
    ui.talk.setPointerCapture(ev.pointerId);
    press(true);
  });
  ui.talk.addEventListener("pointerup", () => press(false));
  ui.talk.addEventListener("pointercancel", () => press(false));
  ui.talk.addEventListener("contextmenu", (ev) => ev.preventDefault()); // long press on phones
  document.addEventListener("keydown", (ev) => {
    if (ev.code === "Space" && !ev.repeat && ev.target === document.body && !ui.talk.hidden) {
      ev.preventDefault();
      press(true);
    }
  });
  document.addEventListener("keyup", (ev) => {
    if (ev.code === "Space" && ev.target === document.body) press(false);
  });
  ui.room.value = localStorage.getItem(KEY_ROOM) || "";
  ui.roomSave.addEventListener("click", async () => {
    const room = ui.room.value.trim();
    if (room && !ROOM_RE.test(room)) {
      ui.room.setCustomValidity("1-64 of letters, digits, _ . -");
      ui.room.reportValidity();
      return;
    }
    ui.room.setCustomValidity("");
    localStorage.setItem(KEY_ROOM, room);
    await ensureToken().catch((err) => setState(ui.state.dataset.state, String(err.message || err)));
  });
}

async function main() {
  setupControls();
  setState("idle", "press Start and allow the microphone");
  ui.deviceId.textContent = localStorage.getItem(KEY_ID) || "–";
  try {
    await ensureToken();
  } catch (err) {
    // Hub unreachable right now: a stored identity still works once it is back.
    if (!localStorage.getItem(KEY_ID)) {
      setState("error", `cannot reach the hub: ${err?.message || err}`);
      return;
    }
  }
  const id = encodeURIComponent(localStorage.getItem(KEY_ID));
  openEvents(`/api/events?device_id=${id}`, { hello: onHello, turn: onRecordedTurn });
}

main();
