import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Legate, VERSION } from "../mod.ts";
import { createAdminHandler } from "../src/admin/admin.ts";
import {
  echoBytes,
  freePort,
  memoryLogger,
  rawHttp,
  startServer,
  startTcpServer,
  waitFor,
  writeRoutes,
} from "./_helpers.ts";

/** Flags that keep Chromium headless, quiet and on loopback. */
const CHROMIUM_FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--disable-default-apps",
  "--no-pings",
  // Background services reach Google by name: no name resolves, so nothing
  // but the IP literals the test gives (all loopback) can be reached.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

/** Runs Chromium; fails with a clear message when it is not installed. */
async function chromium(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("chromium", {
      args: [...CHROMIUM_FLAGS, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw chromiumMissing();
    throw error;
  }
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return {
    code: output.code,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
  };
}

function chromiumMissing(): Error {
  return new Error(
    "chromium is not on PATH: the status page test needs a real browser (apt-get install -y chromium; .ci/run installs it)",
  );
}

/** Width and height of a PNG file, from its IHDR chunk. */
async function pngSize(path: string): Promise<[number, number]> {
  const bytes = await Deno.readFile(path);
  assert.deepEqual([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47], path);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  return [view.getUint32(16), view.getUint32(20)];
}

/** The text of the element with `id` in serialized HTML. */
function textOf(dom: string, id: string): string | undefined {
  return new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom)?.[1];
}

/** The `stat` value labelled `label` inside the card of `service`. */
function statOf(dom: string, service: string, label: string): string {
  const start = dom.indexOf(`data-service="${service}"`);
  assert.ok(start >= 0, `no card for ${service}`);
  const card = dom.slice(start, dom.indexOf("</section>", start));
  const value = new RegExp(`<span>${label}</span><b>([^<]*)</b>`).exec(card);
  assert.ok(value, `no ${label} in the ${service} card`);
  return value[1]!;
}

/** Endpoint address → state, as the page shows them. */
function endpointStates(dom: string): Record<string, string> {
  const states: Record<string, string> = {};
  for (
    const [, state, address] of dom.matchAll(
      /<tr class="endpoint" data-state="([a-z]+)"><td class="mono addr">([^<]+)<\/td>/g,
    )
  ) {
    states[address!] = state!;
  }
  return states;
}

/** A minimal Chrome DevTools Protocol client over a page's WebSocket. */
class DevTools implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #socket: WebSocket;
  readonly #pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();
  #id = 0;

  private constructor(child: Deno.ChildProcess, socket: WebSocket) {
    this.#child = child;
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const pending = this.#pending.get(message.id);
      if (pending === undefined) return; // an event
      this.#pending.delete(message.id);
      if (message.error) {
        pending.reject(new Error(`DevTools: ${message.error.message}`));
      } else pending.resolve(message.result);
    };
  }

  /** Starts Chromium with a DevTools port on loopback and attaches to its page. */
  static async launch(profile: string): Promise<DevTools> {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("chromium", {
        args: [
          ...CHROMIUM_FLAGS,
          `--user-data-dir=${profile}`,
          "--remote-debugging-address=127.0.0.1",
          "--remote-debugging-port=0",
          "about:blank",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw chromiumMissing();
      throw error;
    }
    try {
      // Chromium writes the port it took into the profile directory.
      let port = "";
      await waitFor(async () => {
        try {
          const file = await Deno.readTextFile(
            join(profile, "DevToolsActivePort"),
          );
          port = file.split("\n")[0]!;
          return /^\d+$/.test(port);
        } catch {
          return false;
        }
      }, "Chromium's DevTools port");
      let target: { webSocketDebuggerUrl: string } | undefined;
      await waitFor(async () => {
        const response = await fetch(`http://127.0.0.1:${port}/json/list`);
        const targets = await response.json();
        target = targets.find((t: { type: string }) => t.type === "page");
        return target !== undefined;
      }, "Chromium's page");
      const socket = new WebSocket(target!.webSocketDebuggerUrl);
      await new Promise((resolve, reject) => {
        socket.onopen = resolve;
        socket.onerror = () =>
          reject(new Error("Cannot open Chromium's DevTools WebSocket"));
      });
      return new DevTools(child, socket);
    } catch (error) {
      child.kill();
      await child.status;
      throw error;
    }
  }

  /** Sends a DevTools command and waits for its result. */
  send<T = unknown>(
    method: string,
    params: Record<string, unknown> = {},
  ): Promise<T> {
    const id = ++this.#id;
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    this.#pending.set(id, {
      resolve: (value) => resolve(value as T),
      reject,
    });
    this.#socket.send(JSON.stringify({ id, method, params }));
    return promise;
  }

  /** Evaluates `expression` in the page and returns its value. */
  async evaluate<T>(expression: string): Promise<T> {
    const { result, exceptionDetails } = await this.send<{
      result: { value: T };
      exceptionDetails?: { text: string };
    }>("Runtime.evaluate", {
      expression,
      returnByValue: true,
    });
    if (exceptionDetails) throw new Error(exceptionDetails.text);
    return result.value;
  }

  /** Saves a PNG screenshot of the viewport. */
  async screenshot(path: string): Promise<void> {
    const { data } = await this.send<{ data: string }>(
      "Page.captureScreenshot",
      {
        format: "png",
      },
    );
    await Deno.writeFile(
      path,
      Uint8Array.from(atob(data), (c) => c.charCodeAt(0)),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const closed = new Promise((resolve) => {
      this.#socket.onclose = resolve;
    });
    try {
      await this.send("Browser.close");
    } catch {
      this.#child.kill();
    }
    this.#socket.close();
    await closed;
    await this.#child.status;
  }
}

/** Legate in-process with one HTTP service (two endpoints) and one TCP service. */
async function startDemo() {
  let served = 0;
  const healthy = startServer(async () => {
    // A little latency, and a 500 now and then, as real services have.
    await new Promise((resolve) => setTimeout(resolve, 1 + (served % 7)));
    return new Response(++served % 40 === 0 ? "oops" : "hello", {
      status: served % 40 === 0 ? 500 : 200,
    });
  });
  // 503s are outlier failures: this endpoint is ejected after three.
  const failing = startServer(() =>
    new Response("overloaded", { status: 503 })
  );
  const echo = startTcpServer(echoBytes);
  const routesDir = await writeRoutes({
    "web.yaml": [
      "listen: 127.0.0.1:0",
      `upstreams: [${healthy.url}, ${failing.url}]`,
      "outlier: { consecutive_failures: 3, base_ejection: 300s }",
      "",
    ].join("\n"),
    // Not port 0 too: two files on 127.0.0.1:0 would share one listener.
    "cache.yaml":
      `listen: 127.0.0.1:${freePort()}\nupstreams: [${echo.tcpUrl}]\n`,
  });
  const { log } = memoryLogger();
  const legate = await Legate.start({
    routesDir,
    admin: "127.0.0.1:0",
    log,
    watch: false,
    version: VERSION,
  });
  const addressOf = (service: string) => {
    const open = legate.listeners.find((l) =>
      l.plan.services.some((s) => s.name === service)
    )!;
    return open.listener.addr as Deno.NetAddr;
  };
  const web = `http://127.0.0.1:${addressOf("web").port}`;
  const cache = addressOf("cache");
  // Three requests reach the failing endpoint, in round robin: it is ejected.
  for (let i = 0; i < 6; i++) await (await fetch(`${web}/`)).body?.cancel();
  const admin = `127.0.0.1:${(legate.admin.addr as Deno.NetAddr).port}`;

  // Traffic that keeps flowing while the browser looks.
  const controller = new AbortController();
  const loops: Promise<void>[] = [];
  for (let i = 0; i < 4; i++) {
    loops.push((async () => {
      while (!controller.signal.aborted) {
        await (await fetch(`${web}/orders/${i}`)).body?.cancel();
      }
    })());
  }
  // One connection stays open; others come and go, each echoing 4 KiB.
  const held = await Deno.connect({ hostname: "127.0.0.1", port: cache.port });
  loops.push((async () => {
    const chunk = new Uint8Array(4096).fill(120);
    const back = new Uint8Array(4096);
    while (!controller.signal.aborted) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: cache.port,
      });
      await conn.write(chunk);
      await conn.closeWrite();
      while ((await conn.read(back)) !== null) {
        // Read the echo to its end.
      }
      conn.close();
    }
  })());
  let stopped: Promise<void> | undefined;
  /** Stops the traffic, then legate. */
  const stop = () =>
    stopped ??= (async () => {
      controller.abort();
      await Promise.all(loops);
      held.close();
      await legate.shutdown(1_000);
    })();
  return {
    legate,
    admin,
    healthy,
    failing,
    routesDir,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
      await healthy[Symbol.asyncDispose]();
      await failing[Symbol.asyncDispose]();
      await echo[Symbol.asyncDispose]();
      await Deno.remove(routesDir, { recursive: true });
    },
  };
}

Deno.test("the admin listener serves a self-contained status page with a strict content security policy", async () => {
  const routesDir = await writeRoutes({
    "web.yaml": "listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:9]\n",
  });
  const legate = await Legate.start({
    routesDir,
    admin: "127.0.0.1:0",
    log: memoryLogger().log,
    watch: false,
    version: VERSION,
  });
  try {
    const admin = `http://127.0.0.1:${
      (legate.admin.addr as Deno.NetAddr).port
    }`;
    const response = await fetch(`${admin}/`);
    const page = await response.text();
    assert.equal(response.status, 200);
    assert.equal(
      response.headers.get("content-type"),
      "text/html; charset=utf-8",
    );
    assert.equal(response.headers.get("cache-control"), "no-store");
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.ok(new TextEncoder().encode(page).length < 100 * 1024);

    // Nothing is loaded from anywhere: no URL at all, no @import, and
    // every src or href is a data: URL.
    assert.doesNotMatch(page, /https?:\/\//i);
    assert.doesNotMatch(page, /@import/i);
    for (const [, value] of page.matchAll(/\b(?:src|href)\s*=\s*"([^"]*)"/gi)) {
      assert.match(value!, /^data:/);
    }

    // One inline script, allowed by its hash; no other script may run.
    const csp = response.headers.get("content-security-policy")!;
    const directives = new Map(
      csp.split(";").map((d) => {
        const [name, ...values] = d.trim().split(/\s+/);
        return [name!, values.join(" ")];
      }),
    );
    const scripts = [...page.matchAll(/<script>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1);
    assert.equal((page.match(/<script/g) ?? []).length, 1);
    const hash = createHash("sha256").update(scripts[0]![1]!).digest("base64");
    assert.equal(directives.get("script-src"), `'sha256-${hash}'`);
    assert.equal(directives.get("default-src"), "'none'");
    assert.equal(directives.get("style-src"), "'unsafe-inline'");
    assert.equal(directives.get("connect-src"), "'self'");
    assert.equal(directives.get("img-src"), "data:");
    assert.equal(directives.get("frame-ancestors"), "'none'");
    // The page writes data into the DOM as text only.
    assert.doesNotMatch(
      scripts[0]![1]!,
      /innerHTML|outerHTML|insertAdjacentHTML|document\.write/,
    );

    // A page that rebinds its own DNS name to the admin port reads nothing.
    for (const path of ["/", "/status"]) {
      const answer = await rawHttp(
        new URL(admin).host,
        `GET ${path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
      );
      assert.match(answer, /^HTTP\/1\.1 403 /, path);
      assert.doesNotMatch(answer, /<html|"version"/, path);
    }
    const post = await fetch(`${admin}/`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await legate.shutdown(1_000);
    await Deno.remove(routesDir, { recursive: true });
  }
});

Deno.test("GET /status reports the version, when legate started and its uptime", async () => {
  const routesDir = await writeRoutes({
    "web.yaml": "listen: 127.0.0.1:0\nupstreams: [http://127.0.0.1:9]\n",
  });
  const before = Date.now();
  const legate = await Legate.start({
    routesDir,
    admin: "127.0.0.1:0",
    log: memoryLogger().log,
    watch: false,
    version: VERSION,
  });
  try {
    const { port } = legate.admin.addr as Deno.NetAddr;
    const response = await fetch(`http://127.0.0.1:${port}/status`);
    assert.equal(response.headers.get("content-type"), "application/json");
    const status = await response.json();
    assert.deepEqual(Object.keys(status), [
      "version",
      "started_at",
      "uptime_seconds",
    ]);
    assert.equal(status.version, VERSION);
    const started = Date.parse(status.started_at);
    assert.ok(
      started >= before - 1 && started <= Date.now(),
      status.started_at,
    );
    assert.equal(new Date(started).toISOString(), status.started_at);
    assert.ok(Number.isInteger(status.uptime_seconds));
    assert.ok(
      status.uptime_seconds >= 0 &&
        status.uptime_seconds <= (Date.now() - before) / 1000 + 1,
    );
  } finally {
    await legate.shutdown(1_000);
    await Deno.remove(routesDir, { recursive: true });
  }
});

Deno.test("a real browser shows services, endpoint states, rates, latency, reload errors and the version, on a desktop and on a phone", async (t) => {
  await using demo = await startDemo();
  const { legate, admin } = demo;
  // Some traffic has flowed; the failing endpoint is ejected.
  await waitFor(async () => {
    const report = await (await fetch(`http://${admin}/upstreams`)).json();
    const endpoints = report.services.flatMap((s: { endpoints: unknown[] }) =>
      s.endpoints
    );
    return endpoints.some((e: { ejected_until: string | null }) =>
      e.ejected_until !== null
    );
  }, "the failing endpoint to be ejected");
  // A route file breaks: the page must show its error as text, never as markup.
  const payload = "<img src=x onerror=alert(1)>";
  await Deno.writeTextFile(
    join(demo.routesDir, "broken.yaml"),
    `listen: "${payload}"\nupstreams: [http://127.0.0.1:9]\n`,
  );
  assert.equal((await legate.reload("test")).outcome, "invalid");
  const metrics = await (await fetch(`http://${admin}/metrics`)).text();
  const hasLatency = metrics.includes(
    'legate_http_request_duration_seconds_bucket{service="web"',
  );

  // CI keeps the screenshots as artifacts: it names a directory for them.
  const artifacts = Deno.env.get("LEGATE_ARTIFACTS");
  const shots = artifacts === undefined
    ? await Deno.makeTempDir({ prefix: "legate-status-page-" })
    : join(artifacts, "status-page");
  await Deno.mkdir(shots, { recursive: true });
  console.log(`status page screenshots: ${shots}`);
  const healthyAddress = new URL(demo.healthy.url).host;
  const failingAddress = new URL(demo.failing.url).host;

  await t.step("desktop: rendered DOM and a 1280×900 screenshot", async () => {
    const profile = await Deno.makeTempDir({ prefix: "legate-chromium-" });
    const desktop = join(shots, "desktop.png");
    try {
      const { code, stdout: dom, stderr } = await chromium([
        `--user-data-dir=${profile}`,
        "--virtual-time-budget=5000",
        "--window-size=1280,900",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        `--screenshot=${desktop}`,
        "--dump-dom",
        `http://${admin}/`,
      ]);
      assert.equal(code, 0, stderr);
      // No script error, no CSP violation: the console stayed silent.
      assert.deepEqual(
        stderr.split("\n").filter((l) => l.includes(":CONSOLE")),
        [],
      );
      assert.equal(textOf(dom, "version"), VERSION);
      assert.match(textOf(dom, "uptime") ?? "", /^\d+s$/);
      assert.equal(textOf(dom, "admin"), admin);
      // Every source answered: no banner.
      assert.match(dom, /<div id="banner" role="alert"><\/div>/);
      // Both services, both endpoints of web with their state.
      assert.match(dom, /data-service="web"/);
      assert.match(dom, /data-service="cache"/);
      const states = endpointStates(dom);
      assert.equal(states[healthyAddress], "healthy", JSON.stringify(states));
      assert.equal(states[failingAddress], "ejected", JSON.stringify(states));
      assert.equal(Object.keys(states).length, 3, JSON.stringify(states));
      // Rates from two polls of /metrics: traffic flowed meanwhile.
      const requests = statOf(dom, "web", "requests");
      assert.match(requests, /^\d+(\.\d+)?\/s$/);
      assert.ok(parseFloat(requests) > 0, requests);
      assert.match(statOf(dom, "web", "5xx"), /^(\d+(\.\d+)? %|—)$/);
      for (const p of ["p50", "p95", "p99"]) {
        const value = statOf(dom, "web", p);
        if (hasLatency) assert.match(value, /^\d+(\.\d+)? (ms|s)$/, p);
        else assert.equal(value, "—", p);
      }
      // The held connection, and maybe one of those that come and go.
      assert.ok(Number(statOf(dom, "cache", "open")) >= 1);
      const bytes = statOf(dom, "cache", "from clients");
      assert.match(bytes, /^\d+(\.\d+)? (B|KiB|MiB|GiB)\/s$/);
      assert.ok(parseFloat(bytes) > 0, bytes);
      // Listeners, by their bound addresses.
      for (const listener of legate.listeners) {
        const { port } = listener.listener.addr as Deno.NetAddr;
        assert.match(dom, new RegExp(`>127\\.0\\.0\\.1:${port}<`));
      }
      // The failed reload, its error escaped.
      assert.match(dom, /class="state failed">failed: previous routes kept</);
      assert.ok(dom.includes("&lt;img src=x onerror=alert(1)&gt;"), dom);
      assert.ok(!dom.includes(payload));
      assert.deepEqual(await pngSize(desktop), [1280, 900]);
    } finally {
      await Deno.remove(profile, { recursive: true });
    }
  });

  await t.step(
    "phone: 390 px wide, nothing overflows; dark scheme; banner when legate is gone",
    async () => {
      const profile = await Deno.makeTempDir({ prefix: "legate-chromium-" });
      try {
        await using browser = await DevTools.launch(profile);
        await browser.send("Emulation.setDeviceMetricsOverride", {
          width: 390,
          height: 844,
          deviceScaleFactor: 2,
          mobile: true,
        });
        await browser.send("Page.navigate", { url: `http://${admin}/` });
        // Two polls: the rates are shown.
        await waitFor(
          async () =>
            await browser.evaluate<boolean>(
              `(() => {
              const b = document.querySelector('[data-service="web"] .stat b');
              return b !== null && /\\/s$/.test(b.textContent) && document.querySelectorAll("tr.endpoint").length === 3;
            })()`,
            ),
          "the page to show rates",
        );
        const fit = await browser.evaluate<{ width: number; scroll: number }>(
          `({ width: innerWidth, scroll: document.documentElement.scrollWidth })`,
        );
        assert.equal(fit.width, 390);
        assert.ok(fit.scroll <= fit.width, JSON.stringify(fit));
        await browser.screenshot(join(shots, "phone.png"));

        const background = () =>
          browser.evaluate<string>(
            "getComputedStyle(document.body).backgroundColor",
          );
        const light = await background();
        await browser.send("Emulation.setEmulatedMedia", {
          features: [{ name: "prefers-color-scheme", value: "dark" }],
        });
        const dark = await background();
        assert.notEqual(dark, light);
        const luminance = (rgb: string) =>
          rgb.match(/\d+/g)!.slice(0, 3).reduce((sum, c) => sum + Number(c), 0);
        assert.ok(luminance(dark) < luminance(light), `${dark} ${light}`);
        await browser.screenshot(join(shots, "phone-dark.png"));

        // legate goes away: a banner says so, and the page keeps polling.
        await demo.stop();
        await waitFor(
          async () =>
            await browser.evaluate<boolean>(
              `document.getElementById("banner").classList.contains("shown")`,
            ),
          "the banner",
        );
        const banner = await browser.evaluate<string>(
          `document.getElementById("banner").textContent`,
        );
        assert.match(banner, /^Cannot reach legate at 127\.0\.0\.1:\d+ /);
        // The last data stays on the page.
        assert.equal(
          await browser.evaluate<number>(
            `document.querySelectorAll("tr.endpoint").length`,
          ),
          3,
        );
        await browser.screenshot(join(shots, "phone-unreachable.png"));
        // Back on the same address: the banner goes.
        const { port } = legate.admin.addr as Deno.NetAddr;
        const restarted = await Legate.start({
          routesDir: await writeRoutes({
            "web.yaml":
              `listen: 127.0.0.1:0\nupstreams: [${demo.healthy.url}]\n`,
          }),
          admin: `127.0.0.1:${port}`,
          log: memoryLogger().log,
          watch: false,
          version: VERSION,
        });
        try {
          await waitFor(
            async () =>
              await browser.evaluate<boolean>(
                `!document.getElementById("banner").classList.contains("shown") && document.querySelectorAll("tr.endpoint").length === 1`,
              ),
            "the page to recover",
          );
        } finally {
          await restarted.shutdown(1_000);
          await Deno.remove(restarted.config.routesDir, { recursive: true });
        }
      } finally {
        await Deno.remove(profile, { recursive: true });
      }
    },
  );
});

Deno.test("the status page shows what it can and names what failed when answers are odd or missing", async () => {
  // An admin API whose documents have unexpected shapes and whose /metrics fails.
  const handler = createAdminHandler({
    ready: () => true,
    routes: () => ({ listeners: [{ services: "none" }, null, 7] }),
    upstreams: () => ({
      services: [
        { name: "odd", endpoints: [null, { address: 12 }, "x"] },
        null,
        { name: "<b>bold</b>", endpoints: "none" },
      ],
    }),
    configErrors: () => ({ errors: [{ message: 42 }, null] }),
    reload: () => Promise.resolve({ ok: true, result: {} }),
    metrics: () => {
      throw new Error("metrics are broken");
    },
    status: () => null,
  });
  await using server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      onError: () => new Response("broken", { status: 500 }),
    },
    handler,
  );
  const profile = await Deno.makeTempDir({ prefix: "legate-chromium-" });
  try {
    const { code, stdout: dom, stderr } = await chromium([
      `--user-data-dir=${profile}`,
      "--virtual-time-budget=3000",
      "--enable-logging=stderr",
      "--v=0",
      "--dump-dom",
      `http://127.0.0.1:${server.addr.port}/`,
    ]);
    assert.equal(code, 0, stderr);
    // The page's script threw nothing and logged no error.
    const console = stderr.split("\n").filter((l) => l.includes(":CONSOLE"));
    assert.deepEqual(console, []);
    assert.match(
      textOf(dom, "banner") ?? "",
      /^Cannot reach legate at 127\.0\.0\.1:\d+ \(\/metrics: HTTP 500\)/,
    );
    assert.match(dom, /<div id="banner" role="alert" class="shown">/);
    assert.equal(textOf(dom, "version"), "—");
    assert.match(dom, /data-service="odd"/);
    assert.match(
      dom,
      /<h3 class="service-name">&lt;b&gt;bold&lt;\/b&gt;<\/h3>/,
    );
    assert.deepEqual(
      [...dom.matchAll(/<tr class="endpoint" data-state="([a-z]+)">/g)].map(
        (m) => m[1],
      ),
      ["healthy", "healthy", "healthy"],
    );
    assert.equal(endpointStates(dom)["12"], "healthy");
    assert.match(dom, /<code>42<\/code>/);
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
});
