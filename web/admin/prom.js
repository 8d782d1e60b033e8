// Parses the Prometheus text format (0.0.4) that /metrics serves: just what the console needs,
// samples with their labels. Comments, HELP and TYPE lines are skipped.

/** One sample: name, labels (an object) and value. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const brace = line.indexOf("{");
    const space = line.lastIndexOf(" ");
    if (space < 0) continue;
    let name, labels = {};
    if (brace >= 0 && brace < space) {
      name = line.slice(0, brace);
      const body = line.slice(brace + 1, line.lastIndexOf("}"));
      for (const m of body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[m[1]] = m[2].replace(/\\(.)/g, "$1");
      }
    } else {
      name = line.slice(0, space);
    }
    const value = Number(line.slice(space + 1));
    if (!Number.isNaN(value)) samples.push({ name, labels, value });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels match `where` (an object of label values). */
export function sum(samples, name, where = {}) {
  let total = 0;
  let found = false;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(where).some(([k, v]) => s.labels[k] !== v)) continue;
    total += s.value;
    found = true;
  }
  return found ? total : null;
}

/** Samples named `name` grouped by the value of `label`: {labelValue: summed value}. */
export function byLabel(samples, name, label) {
  const out = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = s.labels[label] ?? "";
    out[key] = (out[key] ?? 0) + s.value;
  }
  return out;
}

/**
 * The q-quantile of a histogram from the difference of two scrapes' cumulative buckets
 * (`le` → count), like PromQL's histogram_quantile: linear inside the bucket. null when no
 * observation happened in between.
 */
export function quantile(q, before, after) {
  const bounds = Object.keys(after).filter((le) => le !== "+Inf").map(Number).sort((a, b) => a - b);
  const delta = (le) => (after[le] ?? 0) - (before?.[le] ?? 0);
  const total = delta("+Inf");
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const bound of bounds) {
    const count = delta(String(bound)) || delta(bound.toString());
    if (count >= rank) {
      const inBucket = count - prevCount;
      return inBucket > 0 ? prevBound + (bound - prevBound) * ((rank - prevCount) / inBucket) : bound;
    }
    prevBound = bound;
    prevCount = count;
  }
  return prevBound;
}

/** The cumulative buckets (`le` → count) of histogram `name`, summed over other labels. */
export function buckets(samples, name) {
  const out = {};
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    out[s.labels.le] = (out[s.labels.le] ?? 0) + s.value;
  }
  return out;
}
