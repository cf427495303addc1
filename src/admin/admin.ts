/**
 * The admin listener's routes: `/healthz`, `/readyz`, `/metrics`, `/routes`,
 * `/config/errors` and `POST /reload`. It renders what the lifecycle reports
 * and knows nothing of how that state is kept.
 * @module
 */

/** What the admin API reports on and acts upon. */
export interface AdminState {
  /** Whether legate wants traffic: routes loaded, listeners open, not shutting down. */
  ready(): boolean;
  /** The effective routes, as JSON, secrets masked. */
  routes(): unknown;
  /** The last reload's outcome and its errors, as JSON. */
  configErrors(): unknown;
  /** Reloads the routes; `ok` is false when they were invalid or could not be applied. */
  reload(): Promise<{ ok: boolean; result: unknown }>;
  /** Prometheus text exposition of legate's metrics. */
  metrics(): string;
}

const PATHS =
  "/healthz, /readyz, /metrics, /routes, /config/errors, POST /reload";

/**
 * Makes the admin listener's handler.
 *
 * @example Usage
 * ```ts ignore
 * import { createAdminHandler } from "./admin.ts";
 * Deno.serve({ port: 9901 }, createAdminHandler(state));
 * ```
 */
export function createAdminHandler(
  state: AdminState,
): (request: Request) => Promise<Response> | Response {
  return async (request) => {
    const { pathname } = new URL(request.url);
    const route = `${
      request.method === "HEAD" ? "GET" : request.method
    } ${pathname}`;
    switch (route) {
      case "GET /healthz":
        return text(200, "ok\n");
      case "GET /readyz":
        return state.ready()
          ? text(200, "ready\n")
          : text(503, "not ready: starting or shutting down\n");
      case "GET /metrics":
        return new Response(state.metrics(), {
          headers: {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
          },
        });
      case "GET /routes":
        return json(200, state.routes());
      case "GET /config/errors":
        return json(200, state.configErrors());
      case "POST /reload": {
        const { ok, result } = await state.reload();
        return json(ok ? 200 : 422, result);
      }
    }
    if (
      [
        "/healthz",
        "/readyz",
        "/metrics",
        "/routes",
        "/config/errors",
        "/reload",
      ].includes(pathname)
    ) {
      return text(405, `method not allowed: the admin API has ${PATHS}\n`);
    }
    return text(404, `not found: the admin API has ${PATHS}\n`);
  };
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** One metric for {@linkcode renderMetrics}. */
export interface Metric {
  /** Metric name, e.g. `legate_config_last_reload_successful`. */
  readonly name: string;
  /** What it measures. */
  readonly help: string;
  /** Prometheus type. */
  readonly type: "gauge" | "counter";
  /** Samples: label set → value. */
  readonly samples: readonly {
    labels?: Record<string, string>;
    value: number;
  }[];
}

/** Renders metrics in the Prometheus text exposition format. */
export function renderMetrics(metrics: readonly Metric[]): string {
  let out = "";
  for (const metric of metrics) {
    out +=
      `# HELP ${metric.name} ${metric.help}\n# TYPE ${metric.name} ${metric.type}\n`;
    for (const { labels, value } of metric.samples) {
      const set = labels && Object.keys(labels).length > 0
        ? `{${
          Object.entries(labels).map(([k, v]) =>
            `${k}="${
              v.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`)
            }"`
          )
            .join(",")
        }}`
        : "";
      out += `${metric.name}${set} ${value}\n`;
    }
  }
  return out;
}
