/**
 * The metrics registry every part of legate counts in: counters, gauges and
 * histograms with labels, and collectors that read state when metrics are
 * scraped. The admin listener only renders what {@linkcode MetricsRegistry.collect}
 * returns.
 *
 * Cheap on the hot path: a labelled child is found with one map lookup, and
 * a histogram observation is a short scan of its bounds.
 * @module
 */

/** One sample of a counter or gauge. */
export interface Sample {
  /** Label names to values. */
  readonly labels: Readonly<Record<string, string>>;
  /** The value. */
  readonly value: number;
}

/** One labelled histogram: cumulative counts per bound, sum and count. */
export interface HistogramSample {
  /** Label names to values (`le` is added when rendering). */
  readonly labels: Readonly<Record<string, string>>;
  /** Observations at or below each bound, in the family's bound order. */
  readonly cumulative: readonly number[];
  /** The sum of the observations. */
  readonly sum: number;
  /** How many observations there were. */
  readonly count: number;
}

/** A metric family, as collected for rendering. */
export type MetricFamily =
  | {
    /** Metric name. */
    readonly name: string;
    /** What it measures. */
    readonly help: string;
    /** Prometheus type. */
    readonly type: "counter" | "gauge";
    /** Its samples. */
    readonly samples: readonly Sample[];
  }
  | {
    /** Metric name. */
    readonly name: string;
    /** What it measures. */
    readonly help: string;
    /** Prometheus type. */
    readonly type: "histogram";
    /** Upper bounds of the buckets, ascending (`+Inf` is implied). */
    readonly bounds: readonly number[];
    /** Its labelled histograms. */
    readonly samples: readonly HistogramSample[];
  };

/**
 * Bucket bounds in seconds for a sidecar on a network: from half a
 * millisecond (loopback, same node) to 30 seconds (a request timeout).
 */
export const LATENCY_BOUNDS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** A counter or gauge value with its labels. */
export interface Value {
  /** Adds `amount` (1 by default); counters only go up. */
  add(amount?: number): void;
  /** Sets the value (gauges). */
  set(value: number): void;
}

/** A histogram with its labels. */
export interface Observer {
  /** Records one observation. */
  observe(value: number): void;
}

/** Label values joined: no label value holds this character. */
const SEPARATOR = "\u0000";

class Family<T> {
  readonly #children = new Map<string, T>();
  readonly #labelNames: readonly string[];
  readonly #make: () => T;

  constructor(labelNames: readonly string[], make: () => T) {
    this.#labelNames = labelNames;
    this.#make = make;
  }

  child(values: readonly string[]): T {
    const key = values.length === 1 ? values[0]! : values.join(SEPARATOR);
    let child = this.#children.get(key);
    if (child === undefined) {
      child = this.#make();
      this.#children.set(key, child);
    }
    return child;
  }

  entries(): [Record<string, string>, T][] {
    return [...this.#children].map(([key, child]) => {
      const values = this.#labelNames.length === 1
        ? [key]
        : key.split(SEPARATOR);
      const labels: Record<string, string> = {};
      this.#labelNames.forEach((name, i) => labels[name] = values[i] ?? "");
      return [labels, child];
    });
  }
}

class ValueCell implements Value {
  value = 0;
  add(amount = 1): void {
    this.value += amount;
  }
  set(value: number): void {
    this.value = value;
  }
}

class HistogramCell implements Observer {
  readonly counts: number[];
  readonly #bounds: readonly number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/** A counter or gauge family: {@linkcode Metric.labels} gives one labelled value. */
export class Metric {
  readonly #family: Family<ValueCell>;

  /** Use {@linkcode MetricsRegistry.counter} or {@linkcode MetricsRegistry.gauge}. */
  constructor(labelNames: readonly string[]) {
    this.#family = new Family(labelNames, () => new ValueCell());
  }

  /** The value with these label values, in the order the labels were named. */
  labels(...values: string[]): Value {
    return this.#family.child(values);
  }

  /** The samples, for collecting. */
  samples(): Sample[] {
    return this.#family.entries().map(([labels, cell]) => ({
      labels,
      value: cell.value,
    }));
  }
}

/** A histogram family: {@linkcode Histogram.labels} gives one labelled histogram. */
export class Histogram {
  /** Upper bounds of the buckets. */
  readonly bounds: readonly number[];
  readonly #family: Family<HistogramCell>;

  /** Use {@linkcode MetricsRegistry.histogram}. */
  constructor(labelNames: readonly string[], bounds: readonly number[]) {
    this.bounds = bounds;
    this.#family = new Family(labelNames, () => new HistogramCell(bounds));
  }

  /** The histogram with these label values. */
  labels(...values: string[]): Observer {
    return this.#family.child(values);
  }

  /** The samples, for collecting: counts made cumulative. */
  samples(): HistogramSample[] {
    return this.#family.entries().map(([labels, cell]) => {
      let total = 0;
      return {
        labels,
        cumulative: cell.counts.map((n) => total += n),
        sum: cell.sum,
        count: cell.count,
      };
    });
  }
}

/**
 * Every metric legate exposes.
 *
 * @example Count, observe, collect
 * ```ts
 * import assert from "node:assert/strict";
 * import { MetricsRegistry } from "./metrics.ts";
 * const metrics = new MetricsRegistry();
 * const requests = metrics.counter("requests_total", "Requests.", ["service"]);
 * const latency = metrics.histogram("seconds", "Latency.", ["service"], [0.1, 1]);
 * requests.labels("users").add();
 * latency.labels("users").observe(0.5);
 * const [counted, observed] = metrics.collect();
 * assert.deepEqual(counted!.samples, [{ labels: { service: "users" }, value: 1 }]);
 * assert.deepEqual(observed!.samples, [
 *   { labels: { service: "users" }, cumulative: [0, 1], sum: 0.5, count: 1 },
 * ]);
 * ```
 */
export class MetricsRegistry {
  readonly #collectors: (() => readonly MetricFamily[])[] = [];

  /** A counter: a value that only goes up. */
  counter(name: string, help: string, labelNames: readonly string[]): Metric {
    return this.#value(name, help, "counter", labelNames);
  }

  /** A gauge: a value that goes up and down. */
  gauge(name: string, help: string, labelNames: readonly string[]): Metric {
    return this.#value(name, help, "gauge", labelNames);
  }

  /** A histogram with `bounds` (ascending upper bounds). */
  histogram(
    name: string,
    help: string,
    labelNames: readonly string[],
    bounds: readonly number[] = LATENCY_BOUNDS,
  ): Histogram {
    const histogram = new Histogram(labelNames, bounds);
    this.#collectors.push(() => [{
      name,
      help,
      type: "histogram",
      bounds,
      samples: histogram.samples(),
    }]);
    return histogram;
  }

  /** Families made when metrics are collected, from state kept elsewhere. */
  collector(collect: () => readonly MetricFamily[]): void {
    this.#collectors.push(collect);
  }

  /** Every family, in the order they were registered. */
  collect(): MetricFamily[] {
    return this.#collectors.flatMap((collect) => collect());
  }

  #value(
    name: string,
    help: string,
    type: "counter" | "gauge",
    labelNames: readonly string[],
  ): Metric {
    const metric = new Metric(labelNames);
    this.#collectors.push(() => [{
      name,
      help,
      type,
      samples: metric.samples(),
    }]);
    return metric;
  }
}
