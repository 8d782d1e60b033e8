// A small line chart on a canvas: several named series over the same time axis, the newest
// point on the right, an automatic y scale from zero. Written for the console (no library).

const PALETTE = ["--series-1", "--series-2", "--series-3", "--series-4", "--series-5"];

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{capacity?: number, format?: (v: number) => string}} options
   */
  constructor(canvas, { capacity = 900, format = (v) => formatNumber(v) } = {}) {
    this.canvas = canvas;
    this.capacity = capacity;
    this.format = format;
    this.times = [];
    this.series = new Map(); // name -> array of numbers (or null), aligned with times
    new ResizeObserver(() => this.draw()).observe(canvas);
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.draw());
  }

  /** Appends one point per series at time `t` (ms); series missing from `values` get null. */
  push(t, values) {
    this.times.push(t);
    for (const name of Object.keys(values)) {
      if (!this.series.has(name)) this.series.set(name, new Array(this.times.length - 1).fill(null));
    }
    for (const [name, points] of this.series) points.push(values[name] ?? null);
    if (this.times.length > this.capacity) {
      this.times.shift();
      for (const points of this.series.values()) points.shift();
    }
    // For tests and curious operators: how many points, and the latest values.
    this.canvas.dataset.points = String(this.times.length);
    this.canvas.dataset.last = JSON.stringify(values);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    const style = getComputedStyle(document.documentElement);
    const color = (v) => style.getPropertyValue(v).trim();
    g.clearRect(0, 0, width, height);
    g.font = "11px system-ui, sans-serif";

    let max = 0;
    for (const points of this.series.values()) for (const v of points) if (v != null && v > max) max = v;
    const top = niceCeiling(max || 1);
    const left = 44, right = 6, topPad = 18, bottom = 16;
    const plotW = Math.max(1, width - left - right);
    const plotH = Math.max(1, height - topPad - bottom);

    // Grid and y labels.
    g.strokeStyle = color("--line");
    g.fillStyle = color("--dim");
    g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = topPad + plotH - (plotH * i) / 2;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(left + plotW, y + 0.5); g.stroke();
      g.fillText(this.format((top * i) / 2), 2, y + 4);
    }
    const span = this.times.length > 1 ? this.times.at(-1) - this.times[0] : 0;
    g.fillText(span ? `last ${formatSpan(span)}` : "waiting for data", left, height - 3);

    // The x axis covers what the chart holds (at least a minute, at most its capacity): the
    // first minute fills from the right, then the window widens up to 15 minutes.
    const n = Math.max(Math.min(this.capacity, 60), this.times.length);
    const offset = n - this.times.length;
    const x = (i) => left + (plotW * (offset + i)) / (n - 1);
    const y = (v) => topPad + plotH - (plotH * v) / top;
    let legendX = left;
    let k = 0;
    for (const [name, points] of this.series) {
      const stroke = color(PALETTE[k++ % PALETTE.length]);
      g.strokeStyle = stroke;
      g.lineWidth = 1.6;
      g.beginPath();
      let pen = false;
      points.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        if (pen) g.lineTo(x(i), y(v)); else { g.moveTo(x(i), y(v)); pen = true; }
      });
      g.stroke();
      const last = points.at(-1);
      const label = `${name} ${last == null ? "–" : this.format(last)}`;
      g.fillStyle = stroke;
      g.fillRect(legendX, 5, 8, 8);
      g.fillStyle = color("--text");
      g.fillText(label, legendX + 11, 13);
      legendX += g.measureText(label).width + 22;
    }
  }
}

export function formatNumber(v) {
  if (v == null) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(a >= 10 ? 1 : 2);
}

function niceCeiling(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatSpan(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}
