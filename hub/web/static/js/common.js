// Shared helpers for the hub's pages. Plain ES modules, no build step, nothing from a CDN.
//
// Safety rule for every page: device data (ids, rooms, transcripts, replies, firmware strings)
// only ever reaches the DOM as text (textContent / text nodes), never as HTML.

/** Build an element: h("td", {class: "x"}, "text", childNode). Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    // Event handlers and URLs are never built from data here: refuse them outright.
    if (/^on/i.test(name) || name === "href" || name === "src" || name === "style") {
      throw new Error(`h(): attribute ${name} is not allowed`);
    }
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace all children of `node` with `children`. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

export function $(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing`);
  return node;
}

/** fetch() that sends the login cookie and goes to the login page when it has expired. */
export async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: "same-origin", ...options });
  if (resp.status === 401 && path.startsWith("/api/")) {
    toLogin();
    throw new Error("not logged in");
  }
  return resp;
}

export function toLogin() {
  const next = location.pathname === "/dashboard" ? "/dashboard" : "/";
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

/**
 * A live event stream. EventSource reconnects by itself after network errors (a hub restart);
 * it gives up only when the hub answers with an error status, which after a login is a 401.
 */
export function openEvents(url, handlers, onState = () => {}) {
  let source = null;
  let retry = null;
  const connect = () => {
    source = new EventSource(url);
    source.onopen = () => onState(true);
    source.onerror = async () => {
      onState(false);
      if (source.readyState !== EventSource.CLOSED) return; // EventSource retries on its own
      try {
        const me = await fetch("/api/me", { credentials: "same-origin" });
        if (me.status === 401) return toLogin();
      } catch (_) {
        // hub unreachable: try again below
      }
      clearTimeout(retry);
      retry = setTimeout(connect, 2000);
    };
    for (const [event, handler] of Object.entries(handlers)) {
      source.addEventListener(event, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        handler(data);
      });
    }
  };
  connect();
  return { close: () => { clearTimeout(retry); source?.close(); } };
}

export function fmtMs(v) {
  return typeof v === "number" && v > 0 ? `${Math.round(v)}` : "–";
}

/** "12 s ago" style age of an ISO time. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "?";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 2) return "now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(t).toLocaleString();
}

export function clock(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? "" : new Date(t).toLocaleTimeString();
}

/** The latency stages of a turn, in pipeline order, with labels people understand. */
export const STAGES = [
  ["stt_ms", "speech to text"],
  ["llm_first_token_ms", "LLM first token"],
  ["first_sentence_ms", "first sentence"],
  ["tts_first_audio_ms", "first speech synthesised"],
  ["first_frame_sent_ms", "first audio sent"],
  ["total_ms", "reply complete"],
  ["hub_end_to_transcript_ms", "hub: end of speech to transcript"],
  ["hub_end_to_first_audio_ms", "hub: end of speech to first reply audio"],
  ["hub_end_to_playout_ms", "hub: end of speech to playout"],
];

/** A <dl> of the stages that have a value. */
export function latencyList(timing) {
  const items = [];
  for (const [key, label] of STAGES) {
    const v = timing?.[key];
    if (typeof v === "number" && v > 0) items.push(h("dt", {}, label), h("dd", { "data-stage": key }, `${v} ms`));
  }
  return h("dl", { class: "latency" }, items);
}

/** dBFS of a Float32 time-domain buffer. */
export function dbfs(buf) {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
  const rms = Math.sqrt(sum / buf.length);
  return rms > 1e-6 ? 20 * Math.log10(rms) : -120;
}
