/**
 * The admin listener's status page (`GET /`): one self-contained HTML
 * document, styles and script inline, that polls the admin API's JSON
 * documents and `/metrics` every two seconds and shows listeners, services,
 * endpoint state, request and error rates, latency percentiles, the last
 * reload and legate's version and uptime.
 *
 * It is a string in a module, never a file read at run time, so that
 * `deno compile` carries it. The page loads nothing from anywhere: every
 * request it makes is a same-origin GET with a relative URL, so it works
 * behind any admin address and offline. Service names and error messages
 * come from route files: the page treats every value as untrusted text and
 * writes the DOM with `textContent` only, never as markup.
 *
 * The two pure functions the page's script needs, the Prometheus text parser
 * and `histogram_quantile`, are written here in TypeScript, tested as such,
 * and embedded in the page as their own source.
 * @module
 */
import { createHash } from "node:crypto";

/** One sample of the Prometheus text format, as {@linkcode parsePrometheusText} reads it. */
export interface PrometheusSample {
  /** Metric name, with any `_bucket`, `_sum` or `_count` suffix. */
  name: string;
  /** Label names to (unescaped) values. */
  labels: Record<string, string>;
  /** The value; `+Inf`, `-Inf` and `NaN` as numbers. */
  value: number;
}

/**
 * Reads the Prometheus text exposition format (version 0.0.4) into samples.
 * Comments, blank lines and lines it cannot read are skipped, never thrown
 * on: the status page must keep working whatever `/metrics` holds.
 *
 * @example Labels with escapes, and special values
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePrometheusText } from "./status_page.ts";
 * const samples = parsePrometheusText(
 *   "# TYPE legate_http_requests_total counter\n" +
 *     'legate_http_requests_total{service="a \\"b\\"\\n",code="200"} 3\n' +
 *     'legate_http_request_duration_seconds_bucket{service="a",le="+Inf"} 7 1700000000\n' +
 *     "legate_services 2\n" +
 *     "not a sample\n",
 * );
 * assert.deepEqual(samples, [
 *   {
 *     name: "legate_http_requests_total",
 *     labels: { service: 'a "b"\n', code: "200" },
 *     value: 3,
 *   },
 *   {
 *     name: "legate_http_request_duration_seconds_bucket",
 *     labels: { service: "a", le: "+Inf" },
 *     value: 7,
 *   },
 *   { name: "legate_services", labels: {}, value: 2 },
 * ]);
 * ```
 */
export function parsePrometheusText(text: string): PrometheusSample[] {
  const samples: PrometheusSample[] = [];
  const number = (word: string | undefined): number => {
    if (word === "+Inf" || word === "Inf") return Infinity;
    if (word === "-Inf") return -Infinity;
    if (word === "NaN") return NaN;
    // Number("") is 0: an empty word is no value.
    return word === undefined || word === "" ? NaN : Number(word);
  };
  lines: for (const raw of String(text).split("\n")) {
    const line = raw.trim();
    if (line === "" || line[0] === "#") continue;
    const match = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (match === null) continue;
    const name = match[0];
    // Object.create(null): a label named __proto__ is only a label.
    const labels: Record<string, string> = Object.create(null);
    let i = name.length;
    if (line[i] === "{") {
      i++;
      while (true) {
        while (line[i] === " " || line[i] === ",") i++;
        if (line[i] === "}") {
          i++;
          break;
        }
        const label = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
        if (label === null) continue lines;
        i += label[0].length;
        while (line[i] === " ") i++;
        if (line[i] !== "=") continue lines;
        i++;
        while (line[i] === " ") i++;
        if (line[i] !== '"') continue lines;
        i++;
        let value = "";
        while (i < line.length && line[i] !== '"') {
          if (line[i] === "\\" && i + 1 < line.length) {
            const next = line[i + 1];
            value += next === "n" ? "\n" : next;
            i += 2;
          } else {
            value += line[i];
            i++;
          }
        }
        if (i >= line.length) continue lines; // unterminated value
        i++;
        labels[label[0]] = value;
      }
    }
    const words = line.slice(i).trim().split(/\s+/);
    const value = number(words[0]);
    if (Number.isNaN(value) && words[0] !== "NaN") continue;
    samples.push({ name, labels: { ...labels }, value });
  }
  return samples;
}

/** One bucket of a histogram: observations at or below `le`, cumulative. */
export interface HistogramBucket {
  /** The bucket's upper bound; `Infinity` for `+Inf`. */
  le: number;
  /** Observations at or below `le`. */
  count: number;
}

/**
 * The `q`-quantile (0 ≤ q ≤ 1) of a histogram's cumulative buckets, as
 * Prometheus' `histogram_quantile` computes it: find the bucket the rank
 * falls in and interpolate linearly inside it (from 0 for the first
 * bucket); a rank in the `+Inf` bucket gives the highest finite bound.
 * `NaN` when there are no observations or no `+Inf` bucket.
 *
 * @example The median of ten requests
 * ```ts
 * import assert from "node:assert/strict";
 * import { histogramQuantile } from "./status_page.ts";
 * const buckets = [
 *   { le: 0.01, count: 2 },
 *   { le: 0.1, count: 8 },
 *   { le: Infinity, count: 10 },
 *   { le: 0.05, count: 4 },
 * ];
 * // Rank 5 is the first of the four observations in (0.05, 0.1].
 * assert.equal(histogramQuantile(0.5, buckets), 0.0625);
 * // Rank 1 is halfway through the first bucket, which starts at 0.
 * assert.equal(histogramQuantile(0.1, buckets), 0.005);
 * // Rank 9.9 is in +Inf: the highest finite bound is all that is known.
 * assert.equal(histogramQuantile(0.99, buckets), 0.1);
 * assert.ok(Number.isNaN(histogramQuantile(0.5, [{ le: Infinity, count: 0 }])));
 * ```
 */
export function histogramQuantile(
  q: number,
  buckets: readonly HistogramBucket[],
): number {
  if (q < 0) return -Infinity;
  if (q > 1) return Infinity;
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const last = sorted[sorted.length - 1];
  if (sorted.length < 2 || last === undefined || last.le !== Infinity) {
    return NaN;
  }
  // Counts scraped a moment apart may disagree slightly: keep them monotonic.
  let highest = 0;
  const counts = sorted.map((b) => (highest = Math.max(highest, b.count)));
  const total = counts[counts.length - 1]!;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let b = counts.findIndex((count) => count >= rank);
  if (b === -1) b = counts.length - 1;
  if (b === sorted.length - 1) return sorted[sorted.length - 2]!.le;
  const end = sorted[b]!.le;
  if (b === 0 && end <= 0) return end;
  const start = b === 0 ? 0 : sorted[b - 1]!.le;
  const below = b === 0 ? 0 : counts[b - 1]!;
  const inBucket = counts[b]! - below;
  if (inBucket === 0) return end;
  return start + (end - start) * ((rank - below) / inBucket);
}

const STYLE = `
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --card: #ffffff; --fg: #1b1f24; --muted: #5d6670;
  --line: #dde1e6; --ok: #137a3a; --ok-bg: #e3f4e8;
  --warn: #8a5a00; --warn-bg: #fdf1d6; --bad: #b42318; --bad-bg: #fde7e5;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1217; --card: #181c23; --fg: #e6e9ee; --muted: #98a2ad;
    --line: #2b313b; --ok: #5fd38a; --ok-bg: #14321f;
    --warn: #f0c060; --warn-bg: #3a2e12; --bad: #ff8a80; --bad-bg: #3d1714;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header, main { max-width: 1200px; margin: 0 auto; padding: 12px 16px; }
header {
  display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px;
}
h1 { font-size: 20px; margin: 0; letter-spacing: .02em; }
h2 {
  font-size: 13px; margin: 20px 0 8px; color: var(--muted);
  text-transform: uppercase; letter-spacing: .06em;
}
h3 { font-size: 16px; margin: 0; overflow-wrap: anywhere; }
.meta { color: var(--muted); display: flex; flex-wrap: wrap; gap: 4px 14px; }
.meta b { color: var(--fg); font-weight: 600; }
code, .mono {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; overflow-wrap: anywhere;
}
#banner {
  display: none; margin: 0 0 8px; padding: 10px 14px; border-radius: 8px;
  background: var(--bad-bg); color: var(--bad); font-weight: 600;
  border: 1px solid var(--bad);
}
#banner.shown { display: block; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; margin-bottom: 12px; min-width: 0;
}
.services { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(min(100%, 520px), 1fr)); }
.services .card { margin: 0; }
.title { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 10px; }
.tag {
  font-size: 11px; font-weight: 700; padding: 1px 7px; border-radius: 99px;
  border: 1px solid var(--line); color: var(--muted); text-transform: uppercase;
}
.sub { color: var(--muted); margin: 2px 0 8px; overflow-wrap: anywhere; }
.stats {
  display: grid; gap: 6px; margin: 8px 0;
  grid-template-columns: repeat(auto-fill, minmax(88px, 1fr));
}
.stat { border: 1px solid var(--line); border-radius: 8px; padding: 4px 8px; min-width: 0; }
.stat span { display: block; font-size: 11px; color: var(--muted); white-space: nowrap; }
.stat b { display: block; font-size: 15px; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 6px; border-top: 1px solid var(--line); vertical-align: top; }
th { font-size: 11px; color: var(--muted); font-weight: 600; border-top: 0; white-space: nowrap; }
td.n, th.n { text-align: right; }
td { overflow-wrap: anywhere; }
.state {
  display: inline-block; font-size: 12px; font-weight: 600; padding: 0 8px;
  border-radius: 99px; white-space: nowrap;
}
.healthy { color: var(--ok); background: var(--ok-bg); }
.unhealthy, .failed { color: var(--bad); background: var(--bad-bg); }
.ejected { color: var(--warn); background: var(--warn-bg); }
.bad-text { color: var(--bad); }
.muted { color: var(--muted); }
ul.errors { margin: 8px 0 0; padding-left: 18px; }
ul.errors li { margin: 4px 0; overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; padding: 4px 16px 20px; max-width: 1200px; margin: 0 auto; }
@media (max-width: 560px) {
  header, main { padding: 10px; }
  .card { padding: 10px 12px; }
  th, td { padding: 4px 3px; }
  /* Endpoints: the address on one line, state and numbers below. */
  table.endpoints thead { display: none; }
  table.endpoints tr {
    display: flex; flex-wrap: wrap; align-items: baseline; gap: 2px 12px;
    padding: 6px 0; border-top: 1px solid var(--line);
  }
  table.endpoints td { border: 0; padding: 0; }
  table.endpoints td.addr { flex: 1 0 100%; }
  table.endpoints td.n { color: var(--muted); font-size: 12px; }
  table.endpoints td.n::before { content: attr(data-label) " "; }
}
`;

/*
 * The page's script. Plain JavaScript in a string: it runs in the browser,
 * not in Deno. PARSE and QUANTILE are replaced with the functions above.
 */
const SCRIPT = String.raw`
"use strict";
(() => {
  const parseMetrics = PARSE;
  const quantile = QUANTILE;
  const POLL_MS = 2000;
  const WINDOW_MS = 10000;
  // In this order: a restart seen in /status resets the rates before /metrics is read.
  const SOURCES = ["routes", "upstreams", "config/errors", "status", "metrics"];

  const last = {};
  let history = [];
  let lastSuccess = null;
  let reachable = true;

  const arr = (value) => Array.isArray(value) ? value : [];
  const obj = (value) => value !== null && typeof value === "object" ? value : {};
  const str = (value) => typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  const num = (value) => typeof value === "number" && Number.isFinite(value) ? value : null;

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function duration(seconds) {
    if (seconds === null) return "—";
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) return d + "d " + h + "h " + m + "m";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return (s % 60) + "s";
  }

  function latency(seconds) {
    if (seconds === null || !Number.isFinite(seconds)) return "—";
    if (seconds < 0.001) return (seconds * 1000).toFixed(2) + " ms";
    if (seconds < 1) return (seconds * 1000).toPrecision(3).replace(/\.?0+$/, "") + " ms";
    return seconds.toPrecision(3) + " s";
  }

  function rate(value, unit) {
    if (value === null || !Number.isFinite(value)) return "—";
    const digits = value === 0 ? 0 : value < 10 ? 2 : value < 100 ? 1 : 0;
    return value.toFixed(digits) + (unit || "/s");
  }

  function bytes(value) {
    if (value === null || !Number.isFinite(value)) return "—";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return (i === 0 || value >= 100 ? value.toFixed(0) : value.toFixed(1)) + " " + units[i] + "/s";
  }

  function percent(part, whole) {
    if (part === null || whole === null || whole <= 0) return "—";
    const p = 100 * part / whole;
    return (p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + " %";
  }

  function clock(iso) {
    const date = new Date(str(iso));
    if (Number.isNaN(date.getTime())) return "—";
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  // Metrics: one snapshot per poll, series keyed by name and labels.
  function snapshot(text, at) {
    const series = new Map();
    for (const sample of parseMetrics(text)) {
      const key = sample.name + JSON.stringify(Object.entries(sample.labels).sort());
      series.set(key, sample);
    }
    return { at, series };
  }

  function matches(sample, name, labels) {
    if (sample.name !== name) return false;
    for (const [key, want] of Object.entries(labels)) {
      const have = sample.labels[key];
      if (typeof want === "function" ? !want(have) : have !== want) return false;
    }
    return true;
  }

  // The value of a gauge or counter now, summed over matching series.
  function current(name, labels) {
    const newest = history[history.length - 1];
    if (!newest) return null;
    let sum = null;
    for (const sample of newest.series.values()) {
      if (matches(sample, name, labels)) sum = (sum || 0) + sample.value;
    }
    return sum;
  }

  // How much a counter grew over the window; a counter that went down restarted.
  function increase(name, labels, each) {
    if (history.length < 2) return null;
    const oldest = history[0], newest = history[history.length - 1];
    let sum = 0;
    for (const [key, sample] of newest.series) {
      if (!matches(sample, name, labels)) continue;
      const before = oldest.series.get(key);
      const grown = before === undefined ? sample.value : sample.value >= before.value ? sample.value - before.value : sample.value;
      if (each) each(sample, grown);
      sum += grown;
    }
    return sum;
  }

  function perSecond(name, labels) {
    const grown = increase(name, labels);
    if (grown === null) return null;
    const seconds = (history[history.length - 1].at - history[0].at) / 1000;
    return seconds > 0 ? grown / seconds : null;
  }

  function percentiles(service) {
    const name = "legate_http_request_duration_seconds_bucket";
    const buckets = new Map();
    const grown = increase(name, { service }, (sample, delta) => {
      const le = sample.labels.le === "+Inf" ? Infinity : Number(sample.labels.le);
      if (!Number.isNaN(le)) buckets.set(le, (buckets.get(le) || 0) + delta);
    });
    const list = [...buckets].map(([le, count]) => ({ le, count }));
    const q = (p) => {
      const value = grown ? quantile(p, list) : NaN;
      return Number.isFinite(value) ? value : null;
    };
    return { p50: q(0.5), p95: q(0.95), p99: q(0.99) };
  }

  // Rendering.
  function stat(label, value, extraClass) {
    return el("div", "stat" + (extraClass ? " " + extraClass : ""), el("span", "", label), el("b", "", value));
  }

  function endpointState(endpoint) {
    if (endpoint.ejected_until) return ["ejected", "ejected until " + clock(endpoint.ejected_until)];
    if (endpoint.healthy === false) return ["unhealthy", "failing its health checks"];
    return ["healthy", "taking traffic"];
  }

  const ENDPOINT_NUMBERS = [["in flight", "in_flight"], ["requests", "requests"], ["failures", "failures"], ["weight", "weight"]];

  function endpointTable(endpoints) {
    const head = el("tr", "", el("th", "", "endpoint"), el("th", "", "state"),
      ...ENDPOINT_NUMBERS.map(([label]) => el("th", "n", label)));
    const rows = arr(endpoints).map((raw) => {
      const endpoint = obj(raw);
      const [state, title] = endpointState(endpoint);
      const badge = el("span", "state " + state, state);
      badge.title = title;
      const numbers = ENDPOINT_NUMBERS.map(([label, key]) => {
        const cell = el("td", "n", str(num(endpoint[key]) ?? "—"));
        // Narrow screens show the label beside the value (see the CSS).
        cell.dataset.label = label;
        return cell;
      });
      const row = el("tr", "endpoint",
        el("td", "mono addr", str(endpoint.address) || str(endpoint.url) || "—"),
        el("td", "", badge), ...numbers);
      row.dataset.state = state;
      return row;
    });
    if (rows.length === 0) {
      rows.push(el("tr", "", el("td", "muted", "no endpoints resolved")));
    }
    return el("table", "endpoints", el("thead", "", head), el("tbody", "", ...rows));
  }

  function serviceCard(service, route, listenerAddress) {
    const name = str(service.name);
    const protocol = str(route.protocol) || "http";
    const http = protocol === "http";
    const match = obj(route.match);
    const title = el("div", "title",
      el("h3", "service-name", name),
      el("span", "tag", protocol),
      el("span", "mono muted", listenerAddress || str(route.listen)));
    const details = [];
    if (http && (match.host || match.path_prefix)) {
      details.push("host " + (str(match.host) || "*") + ", path " + (str(match.path_prefix) || "/"));
    }
    if (service.balance) details.push(str(service.balance));
    if (route.file) details.push(str(route.file));
    const stats = el("div", "stats");
    const labels = { service: name };
    if (http) {
      const requests = perSecond("legate_http_requests_total", labels);
      const errors = increase("legate_http_requests_total", { service: name, code: (c) => /^5/.test(str(c)) });
      const all = increase("legate_http_requests_total", labels);
      const latencies = percentiles(name);
      stats.append(
        stat("requests", rate(requests)),
        stat("5xx", percent(errors, all), errors ? "bad-text" : ""),
        stat("upstream errors", rate(perSecond("legate_upstream_errors_total", labels))),
        stat("p50", latency(latencies.p50)),
        stat("p95", latency(latencies.p95)),
        stat("p99", latency(latencies.p99)),
        stat("in flight", str(num(service.requests_in_flight) ?? "—")),
        stat("since start", str(current("legate_http_requests_total", labels) ?? 0)));
    } else {
      stats.append(
        stat("connections", rate(perSecond("legate_tcp_connections_total", labels))),
        stat("open", str(current("legate_tcp_connections_open", labels) ?? 0)),
        stat("from clients", bytes(perSecond("legate_tcp_bytes_total", { service: name, direction: "upstream" }))),
        stat("to clients", bytes(perSecond("legate_tcp_bytes_total", { service: name, direction: "downstream" }))),
        stat("upstream errors", rate(perSecond("legate_upstream_errors_total", labels))),
        stat("since start", str(current("legate_tcp_connections_total", labels) ?? 0)));
    }
    const card = el("section", "card service", title, el("div", "sub", details.join(" · ")), stats, endpointTable(service.endpoints));
    card.dataset.service = name;
    return card;
  }

  function renderServices() {
    const routes = new Map();
    const addresses = new Map();
    for (const listener of arr(obj(last.routes).listeners)) {
      for (const service of arr(obj(listener).services)) {
        routes.set(str(obj(service).name), obj(service));
        // The bound address: a route file's port 0 becomes a real one.
        addresses.set(str(obj(service).name), str(obj(listener).address));
      }
    }
    const services = arr(obj(last.upstreams).services).map(obj);
    const container = document.getElementById("services");
    container.replaceChildren(...services.map((service) => serviceCard(service, routes.get(str(service.name)) || {}, addresses.get(str(service.name)))));
    if (services.length === 0) container.append(el("p", "muted", last.upstreams ? "No services." : "Loading…"));
    const unmatched = perSecond("legate_http_requests_total", { service: "none" });
    const note = document.getElementById("unmatched");
    note.textContent = unmatched ? "Requests that matched no route: " + rate(unmatched) : "";
  }

  function renderListeners() {
    const rows = arr(obj(last.routes).listeners).map(obj).map((listener) => el("tr", "",
      el("td", "mono", str(listener.address)),
      el("td", "", str(listener.protocol)),
      el("td", "", arr(listener.services).map((s) => str(obj(s).name)).join(", "))));
    const table = el("table", "",
      el("thead", "", el("tr", "", el("th", "", "address"), el("th", "", "protocol"), el("th", "", "services"))),
      el("tbody", "", ...rows));
    const body = document.getElementById("listeners");
    body.replaceChildren(rows.length ? table : el("p", "muted", last.routes ? "No listeners." : "Loading…"));
    const dir = str(obj(last.routes).routes_dir);
    if (dir) body.append(el("div", "sub", "routes from ", el("code", "", dir)));
  }

  function renderReload() {
    const report = obj(last["config/errors"]);
    const reload = obj(report.last_reload);
    const box = document.getElementById("reload");
    if (!last["config/errors"]) {
      box.replaceChildren(el("p", "muted", "Loading…"));
      return;
    }
    const ok = reload.successful !== false;
    const outcome = el("span", "state " + (ok ? "healthy" : "failed"), ok ? "applied" : "failed: previous routes kept");
    const line = el("div", "meta",
      el("span", "", outcome),
      el("span", "", "at ", el("b", "", clock(reload.at))),
      el("span", "", "trigger ", el("b", "", str(reload.trigger) || "—")));
    const success = current("legate_config_reloads_total", { result: "success" });
    const failure = current("legate_config_reloads_total", { result: "failure" });
    if (success !== null || failure !== null) {
      line.append(el("span", "", "reloads ", el("b", "", str(success ?? 0)), " ok, ", el("b", failure ? "bad-text" : "", str(failure ?? 0)), " failed"));
    }
    const errors = arr(report.errors).map(obj);
    box.replaceChildren(line);
    if (errors.length) {
      box.append(el("ul", "errors", ...errors.map((error) => el("li", "config-error", el("code", "", str(error.message))))));
    }
  }

  function renderHeader() {
    const status = obj(last.status);
    document.getElementById("version").textContent = str(status.version) || "—";
    const fetched = last.statusAt;
    const uptime = num(status.uptime_seconds);
    document.getElementById("uptime").textContent =
      uptime === null ? "—" : duration(uptime + (fetched && reachable ? (performance.now() - fetched) / 1000 : 0));
    document.getElementById("started").textContent = clock(status.started_at);
    document.getElementById("admin").textContent = location.host;
    document.title = "legate " + location.host;
    document.getElementById("updated").textContent = lastSuccess === null ? "never" : clock(new Date(lastSuccess).toISOString());
  }

  function render() {
    for (const part of [renderHeader, renderReload, renderServices, renderListeners]) {
      try {
        part();
      } catch (error) {
        // A section that cannot show what it got must not stop the others.
        console.error(error);
      }
    }
  }

  // failures: [path, reason] pairs; paths that failed alike are named together.
  function showBanner(failures) {
    const banner = document.getElementById("banner");
    reachable = failures.length === 0;
    if (reachable) {
      banner.classList.remove("shown");
      banner.textContent = "";
      return;
    }
    const byReason = new Map();
    for (const [path, reason] of failures) byReason.set(reason, [...(byReason.get(reason) || []), path]);
    const detail = failures.length === SOURCES.length && byReason.size === 1
      ? failures[0][1]
      : [...byReason].map(([reason, paths]) => paths.join(", ") + ": " + reason).join("; ");
    banner.classList.add("shown");
    banner.textContent = "Cannot reach legate at " + location.host + " (" + detail +
      "). Showing the last data it sent; trying again every " + (POLL_MS / 1000) + " s.";
  }

  async function load(source) {
    const response = await fetch(source, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return source === "metrics" ? response.text() : response.json();
  }

  async function poll() {
    try {
      const results = await Promise.allSettled(SOURCES.map(load));
      const failures = [];
      results.forEach((result, i) => {
        const source = SOURCES[i];
        if (result.status === "rejected") {
          failures.push(["/" + source, str(result.reason && result.reason.message || result.reason)]);
          return;
        }
        if (source === "metrics") {
          const at = performance.now();
          history.push(snapshot(result.value, at));
          while (history.length > 2 && at - history[1].at >= WINDOW_MS) history.shift();
        } else {
          last[source] = result.value;
        }
        if (source === "status") {
          const started = str(obj(result.value).started_at);
          // Another process: its counters start over, so do the rates.
          if (last.startedAt !== undefined && last.startedAt !== started) history = [];
          last.startedAt = started;
          last.statusAt = performance.now();
        }
      });
      if (failures.length < SOURCES.length) lastSuccess = Date.now();
      showBanner(failures);
      render();
    } catch (error) {
      showBanner([["/", str(error && error.message || error)]]);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  setInterval(renderHeader, 1000);
  poll();
})();
`;

/** The page's script, with the parser and quantile functions put in. */
const PAGE_SCRIPT = SCRIPT
  .replace("PARSE", () => parsePrometheusText.toString())
  .replace("QUANTILE", () => histogramQuantile.toString());

/**
 * The status page: a complete HTML document of a few tens of kilobytes
 * with no external resources. Serve it with {@linkcode STATUS_PAGE_CSP}.
 *
 * @example Self-contained
 * ```ts
 * import assert from "node:assert/strict";
 * import { STATUS_PAGE } from "./status_page.ts";
 * assert.ok(STATUS_PAGE.startsWith("<!doctype html>"));
 * assert.ok(new TextEncoder().encode(STATUS_PAGE).length < 100 * 1024);
 * assert.doesNotMatch(STATUS_PAGE, /https?:\/\/|@import/);
 * ```
 */
export const STATUS_PAGE: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>legate status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>legate</h1>
<div class="meta">
<span>version <b id="version">—</b></span>
<span>up <b id="uptime">—</b></span>
<span>since <b id="started">—</b></span>
<span>admin <b id="admin" class="mono">—</b></span>
<span>updated <b id="updated">never</b></span>
</div>
</header>
<main>
<div id="banner" role="alert"></div>
<h2>Last reload</h2>
<section class="card" id="reload"><p class="muted">Loading…</p></section>
<h2>Services</h2>
<div class="services" id="services"><p class="muted">Loading…</p></div>
<p class="muted" id="unmatched"></p>
<h2>Listeners</h2>
<section class="card" id="listeners"><p class="muted">Loading…</p></section>
</main>
<footer>Rates and latency percentiles cover the last 10 seconds, from <code>/metrics</code>; endpoint state from <code>/upstreams</code>. Refreshes every 2 seconds.</footer>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;

/**
 * The `Content-Security-Policy` of {@linkcode STATUS_PAGE}: nothing loads
 * from anywhere, the page's own inline script runs by its hash and no other
 * script does, it fetches only from its own origin, and no other page may
 * frame it.
 *
 * @example The inline script is allowed by hash, not by `'unsafe-inline'`
 * ```ts
 * import assert from "node:assert/strict";
 * import { STATUS_PAGE_CSP } from "./status_page.ts";
 * assert.match(STATUS_PAGE_CSP, /script-src 'sha256-[A-Za-z0-9+/]+=*'/);
 * assert.match(STATUS_PAGE_CSP, /connect-src 'self'/);
 * assert.match(STATUS_PAGE_CSP, /frame-ancestors 'none'/);
 * ```
 */
export const STATUS_PAGE_CSP: string = [
  "default-src 'none'",
  `script-src 'sha256-${
    createHash("sha256").update(PAGE_SCRIPT).digest("base64")
  }'`,
  "style-src 'unsafe-inline'",
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");
