import assert from "node:assert/strict";
import { loadConfig, type ReferenceSource } from "../mod.ts";
import { writeRoutes } from "./_helpers.ts";

/** Secret values the tests look for in every message. */
const SECRETS: Record<string, string> = {
  API_TOKEN: "tok-hunter2-api",
  DB_PASS: "db-pass-7781",
  MYSQL_PWD: "mysql-pwd-1192",
  GITHUB_CRED: "gh-cred-5521",
  SESSION_ID: "sess-0c7a41",
  AUTH_COOKIE: "cookie-9f2e",
  WEBHOOK_SIGNATURE: "sig-44b1e0",
  CLIENT_CERT: "cert-pem-19ab",
};

const FILES: Record<string, string> = {
  "/run/secrets/listen": "listen-s3cret\n",
  "/run/secrets/port": "70000\n",
  "/run/secrets/host": "host-s3cret\n",
  "/run/secrets/quote": 'quote"s3cret\n',
};

const references: ReferenceSource = {
  env: (name) => SECRETS[name],
  readFile: (path) => {
    const text = FILES[path];
    if (text === undefined) throw new Deno.errors.NotFound(path);
    return text;
  },
};

async function messagesOf(files: Record<string, string>): Promise<string[]> {
  const dir = await writeRoutes(files);
  try {
    const result = await loadConfig(dir, references);
    return (result.errors ?? []).map((e) => e.message.replace(`${dir}/`, ""));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertNoSecret(messages: string[]): void {
  const values = [
    ...Object.values(SECRETS),
    ...Object.values(FILES).map((text) => text.trim()),
    "literal-pw",
  ];
  for (const message of messages) {
    for (const value of values) {
      assert.ok(!message.includes(value), `"${value}" is in: ${message}`);
    }
  }
}

Deno.test("an upstream URL with user info is refused without echoing it", async () => {
  const messages = await messagesOf({
    "a.yaml":
      "listen: :1\nupstreams: ['http://user:${API_TOKEN}@users:8080']\n",
    "b.yaml":
      "listen: :2\nupstreams: [{ url: 'https://admin:literal-pw@b' }]\n",
  });
  const detail =
    "user info (user:password@) in an upstream URL is not supported: credentials belong in request headers, a later feature (write the URL as scheme://host:port)";
  assert.deepEqual(messages, [
    `a.yaml:2:13: upstreams[0]: ${detail}`,
    `b.yaml:2:20: upstreams[0].url: ${detail}`,
  ]);
  assertNoSecret(messages);
});

Deno.test("errors show ${file:...} and secret-named references as written, never their values", async () => {
  const messages = await messagesOf({
    "a.yaml":
      "listen: '127.0.0.1:${file:/run/secrets/listen}'\nupstreams: [http://a]\n",
    "b.yaml": "listen: :2\nupstreams: ['http://b:${file:/run/secrets/port}']\n",
    "b2.yaml":
      "listen: :5\nupstreams: [http://b]\nmatch: { host: 'db_${DB_PASS}!' }\n",
    "c.yaml":
      "listen: :3\nupstreams: ['tcp://${file:/run/secrets/host}:1']\nprotocol: http\n",
    "d.yaml":
      "listen: :4\nupstreams: [http://d]\nmatch: { path_prefix: 'x${file:/run/secrets/quote}' }\n",
  });
  assert.deepEqual(messages, [
    'a.yaml:1:9: listen: "127.0.0.1:${file:/run/secrets/listen}" is not a listen address (use host:port, :port or unix:/path, e.g. 127.0.0.1:15001)',
    'b.yaml:2:13: upstreams[0]: "http://b:${file:/run/secrets/port}": the port must be 1 to 65535',
    'b2.yaml:3:16: match.host: "db_${DB_PASS}!" is not a host to match (use an exact name or *.suffix)',
    'c.yaml:2:13: upstreams[0]: "tcp://${file:/run/secrets/host}:1" is not an HTTP upstream (use http:// or https://, their +srv forms, or http+unix:)',
    'd.yaml:3:23: match.path_prefix: "x${file:/run/secrets/quote}" is not a path prefix (it must start with /)',
  ]);
  assertNoSecret(messages);
});

Deno.test("variables named like passwords, credentials, sessions, cookies, signatures and certificates are masked", async () => {
  const names = Object.keys(SECRETS);
  const files = Object.fromEntries(names.map((name, i) => [
    `s${i}.yaml`,
    `listen: :${
      i + 1
    }\nupstreams: [http://a]\nmatch: { host: 'x_\${${name}}!' }\n`,
  ]));
  const messages = await messagesOf(files);
  assert.deepEqual(
    messages,
    names.map((name, i) =>
      `s${i}.yaml:3:16: match.host: "x_\${${name}}!" is not a host to match (use an exact name or *.suffix)`
    ),
  );
  assertNoSecret(messages);
});

Deno.test("conflicts between files show secret references as written", async () => {
  const messages = await messagesOf({
    "a.yaml":
      "name: sess-0c7a41\nlisten: 127.0.0.1:7001\nupstreams: [http://a]\n",
    "b.yaml":
      "name: '${SESSION_ID}'\nlisten: 127.0.0.1:7002\nupstreams: [http://b]\n",
  });
  assert.equal(messages.length, 1);
  assert.match(
    messages[0]!,
    /^b\.yaml:1:7: service name "\$\{SESSION_ID\}" is already used by \S*\/a\.yaml$/,
  );
  assertNoSecret(messages);
});
