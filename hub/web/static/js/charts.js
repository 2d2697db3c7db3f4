// Small SVG charts for the dashboard: a stacked bar per turn and a sparkline. Plain SVG built
// with createElementNS (no library, nothing fetched); every label reaches the DOM as text.

const NS = "http://www.w3.org/2000/svg";

/** An SVG element; attributes are numbers or fixed strings, never markup. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

/** Nearest-rank percentile of numbers (p in 0..100); null for none. */
export function pct(values, p) {
  if (!values.length) return null;
  const s = values.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/**
 * Stacked bars: ``bars`` = [{key, label, segments: [ms per stage]}], ``stages`` = [[name, colour class]],
 * ``lines`` = [{value, label, cls}] drawn across (p50 / p95).
 */
export function stackedBars(bars, stages, lines = [], { width = 720, height = 220, caption = "ms, one bar per turn (oldest left)" } = {}) {
  const pad = { l: 48, r: 8, t: 10, b: 22 };
  const totals = bars.map((b) => b.segments.reduce((a, v) => a + v, 0));
  const top = Math.max(1, ...totals, ...lines.map((l) => l.value || 0)) * 1.08;
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const y = (v) => pad.t + plotH - (v / top) * plotH;
  const slot = plotW / Math.max(bars.length, 1);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "bars", role: "img", "aria-label": "latency per turn" });
  for (const frac of [0, 0.5, 1]) {
    const v = (top / 1.08) * frac;
    root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: pad.l - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, `${Math.round(v)}`));
  }
  bars.forEach((b, i) => {
    const x = pad.l + i * slot + (slot - barW) / 2;
    const g = svg("g", { class: "bar", "data-turn": b.key });
    let acc = 0;
    b.segments.forEach((v, s) => {
      if (v <= 0) return;
      g.append(svg("rect", { x, y: y(acc + v), width: barW, height: Math.max(0.5, y(acc) - y(acc + v)), class: stages[s][1] },
        svg("title", {}, `${stages[s][0]}: ${Math.round(v)} ms`)));
      acc += v;
    });
    g.append(svg("title", {}, `${b.label}: ${Math.round(acc)} ms`));
    root.append(g);
  });
  lines.forEach((l, i) => {
    if (typeof l.value !== "number") return;
    root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y(l.value), y2: y(l.value), class: `mark ${l.cls}` }));
    // The first line's label under it, the others' over theirs: close p50 and p95 stay apart.
    const ty = i === 0 ? Math.min(height - pad.b - 2, y(l.value) + 13) : y(l.value) - 4;
    root.append(svg("text", { x: width - pad.r - 2, y: ty, class: `axis ${l.cls}`, "text-anchor": "end" }, l.label));
  });
  root.append(svg("text", { x: pad.l, y: height - 6, class: "axis" }, caption));
  return root;
}

/** A sparkline of values between lo and hi. */
export function sparkline(values, lo, hi, { width = 80, height = 20 } = {}) {
  const n = values.length;
  const pts = values
    .map((v, i) => {
      const x = n > 1 ? (i / (n - 1)) * width : width;
      const f = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
      return `${x.toFixed(1)},${(height - f * (height - 2) - 1).toFixed(1)}`;
    })
    .join(" ");
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "spark", "data-points": n }, svg("polyline", { points: pts }));
}
