// A small line chart drawn as SVG by hand: time on x, one polyline per series, no library.
// Colours and dashes come from classes (admin.css), so the charts follow the page's theme.

const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 140;
const PAD = { left: 34, right: 6, top: 6, bottom: 16 };

function node(tag, attrs = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1). */
function niceCeiling(value) {
  if (!(value > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// Time axis ticks, in seconds back from now: the first that leaves at most four intervals.
const TICK_STEPS_S = [10, 15, 30, 60, 120, 300];

function ago(seconds) {
  if (seconds === 0) return "now";
  return seconds < 60 ? `−${seconds} s` : `−${seconds / 60} min`;
}

function label(value) {
  return value >= 1000 ? `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k` : String(value);
}

/** Draw `lines` ([{cls, points: [[t, y], ...]}]) between times `from` and `to` into `svg`. */
export function drawChart(svg, { lines, from, to }) {
  const top = niceCeiling(Math.max(0, ...lines.flatMap((line) => line.points.map(([, y]) => y))));
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const parts = [];
  for (const value of [0, top / 2, top]) {
    parts.push(node("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value) }));
    parts.push(node("text", { class: "axis", x: PAD.left - 4, y: y(value) + 3, "text-anchor": "end" }, label(value)));
  }
  const step = TICK_STEPS_S.find((candidate) => (to - from) / candidate <= 4) ?? 300;
  for (let back = 0; back <= to - from; back += step) {
    const anchor = back === 0 ? "end" : "middle";
    parts.push(node("text", { class: "axis", x: x(to - back), y: H - 3, "text-anchor": anchor }, ago(back)));
  }
  for (const line of lines) {
    const points = line.points.filter(([t]) => t >= from && t <= to);
    if (points.length === 0) continue;
    const coords = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    // A lone sample is a dot; a line needs two.
    parts.push(points.length === 1
      ? node("circle", { class: `series ${line.cls}`, cx: x(points[0][0]), cy: y(points[0][1]), r: 2 })
      : node("polyline", { class: `series ${line.cls}`, points: coords }));
  }
  svg.replaceChildren(...parts);
  svg.dataset.points = String(lines.reduce((n, line) => n + line.points.length, 0));
}
