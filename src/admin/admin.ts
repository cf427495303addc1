/**
 * The admin listener's routes: `/healthz` (the process is alive) and
 * `/readyz` (config loaded, listeners open, not shutting down).
 * @module
 */

/** What the admin API reports on. */
export interface AdminState {
  /** Whether legate should receive traffic. */
  ready(): boolean;
}

/**
 * Makes the admin listener's handler.
 *
 * @example Usage
 * ```ts
 * import { createAdminHandler } from "./admin.ts";
 * const handler = createAdminHandler({ ready: () => true });
 * ```
 */
export function createAdminHandler(
  state: AdminState,
): (request: Request) => Response {
  return (request) => {
    const { pathname } = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text(405, "method not allowed: the admin API answers GET\n");
    }
    switch (pathname) {
      case "/healthz":
        return text(200, "ok\n");
      case "/readyz":
        return state.ready()
          ? text(200, "ready\n")
          : text(503, "not ready: shutting down\n");
      default:
        return text(404, "not found: the admin API has /healthz and /readyz\n");
    }
  };
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}
