/**
 * Reading a socket option of a TCP connection that another part of the
 * program (or another process) holds, for tests that must check how legate
 * set up its sockets: Deno can set TCP_NODELAY but cannot read it back.
 *
 * A python3 child copies the socket into itself with `pidfd_getfd` (Linux
 * 5.6 or later, as root) and calls `getsockopt`. It finds the socket by its
 * ports: `/proc/PID/net/tcp{,6}` maps addresses to socket inodes and
 * `/proc/PID/fd/*` maps inodes to descriptors. Anything it cannot do throws:
 * a probe that cannot look must never pass a test.
 * @module
 */
import assert from "node:assert/strict";

/** One end of a TCP connection, as the process holding it sees it. */
export interface TcpEnd {
  /** The port of the socket itself. */
  readonly localPort: number;
  /** The port of its peer. */
  readonly remotePort: number;
}

/** Run by python3 with the pid, the local port and the remote port. */
const PROBE = String.raw`
import ctypes, os, platform, socket, sys

# pidfd_getfd has number 438 on both: the generic syscall table.
if platform.machine() not in ("x86_64", "aarch64"):
    sys.exit(f"pidfd_getfd: no syscall number known for {platform.machine()}")
pid, local, remote = (int(arg) for arg in sys.argv[1:4])

inodes = {}
for table in ("tcp", "tcp6"):
    with open(f"/proc/{pid}/net/{table}") as lines:
        next(lines)
        for line in lines:
            columns = line.split()
            inode = int(columns[9])
            if inode == 0:
                continue  # TIME_WAIT: no socket left to read
            ports = tuple(int(a.rsplit(":", 1)[1], 16) for a in columns[1:3])
            inodes.setdefault(ports, []).append(inode)

descriptors = {}
for name in os.listdir(f"/proc/{pid}/fd"):
    try:
        link = os.readlink(f"/proc/{pid}/fd/{name}")
    except OSError:
        continue  # closed while listing
    if link.startswith("socket:["):
        descriptors[int(link[8:-1])] = int(name)

held = [i for i in inodes.get((local, remote), []) if i in descriptors]
if len(held) != 1:
    sys.exit(f"process {pid} holds {len(held)} TCP sockets from port {local} to port {remote}, not 1")
pidfd = os.pidfd_open(pid)
syscall = ctypes.CDLL(None, use_errno=True).syscall
fd = syscall(438, pidfd, descriptors[held[0]], 0)
if fd < 0:
    sys.exit(f"pidfd_getfd on process {pid}: {os.strerror(ctypes.get_errno())}")
# The descriptor number may have been reused since /proc was read.
if os.fstat(fd).st_ino != held[0]:
    sys.exit(f"the socket from port {local} to port {remote} closed while being read")
with socket.socket(fileno=fd) as copy:
    print(copy.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
`;

/**
 * Whether TCP_NODELAY (Nagle's algorithm off) is set on the socket that
 * process `pid` holds for one end of a connection. `Deno.pid` reads the test
 * process itself, where in-process legate keeps its sockets.
 *
 * @throws {Error} When the option cannot be read: not Linux, not root, no
 * python3, or not exactly one such socket in the process.
 *
 * @example Deno leaves Nagle's algorithm on until asked
 * ```ts
 * import assert from "node:assert/strict";
 * import { tcpNoDelay } from "./_socket_options.ts";
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr;
 * using client = await Deno.connect({ hostname: "127.0.0.1", port });
 * using accepted = await listener.accept();
 * accepted.setNoDelay(true);
 * const ports = { localPort: client.localAddr.port, remotePort: port };
 * assert.equal(await tcpNoDelay(Deno.pid, ports), false);
 * assert.equal(
 *   await tcpNoDelay(Deno.pid, {
 *     localPort: ports.remotePort,
 *     remotePort: ports.localPort,
 *   }),
 *   true,
 * );
 * ```
 */
export async function tcpNoDelay(pid: number, end: TcpEnd): Promise<boolean> {
  if (Deno.build.os !== "linux") {
    throw new Error(
      `Cannot read socket options on ${Deno.build.os}: needs Linux`,
    );
  }
  const output = await new Deno.Command("python3", {
    args: [
      "-c",
      PROBE,
      String(pid),
      String(end.localPort),
      String(end.remotePort),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(
      `Cannot read TCP_NODELAY: ${decoder.decode(output.stderr).trim()}`,
    );
  }
  const option = decoder.decode(output.stdout).trim();
  if (option !== "0" && option !== "1") {
    throw new Error(`Cannot read TCP_NODELAY: python3 printed "${option}"`);
  }
  return option === "1";
}

/**
 * Asserts that both sockets legate holds for one proxied connection have
 * Nagle's algorithm off: the one it accepted from `client` and the one it
 * opened from `upstreamPort` (its local port) to `upstream`. The test's own
 * socket, left as Deno made it, is read too and must be on: the probe tells
 * the two states apart.
 */
export async function assertNoDelayOnBothSides(
  client: Deno.TcpConn,
  upstreamPort: number,
  upstream: number,
): Promise<void> {
  const own = client.localAddr.port;
  const listener = client.remoteAddr.port;
  const [accepted, opened, untouched] = await Promise.all([
    tcpNoDelay(Deno.pid, { localPort: listener, remotePort: own }),
    tcpNoDelay(Deno.pid, { localPort: upstreamPort, remotePort: upstream }),
    tcpNoDelay(Deno.pid, { localPort: own, remotePort: listener }),
  ]);
  assert.equal(accepted, true, "the connection legate accepted");
  assert.equal(opened, true, "the connection legate opened to the upstream");
  assert.equal(untouched, false, "the client's socket");
}
