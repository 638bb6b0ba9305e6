// Daemons for integration tests, run inside a test's server namespace: nginx
// instances (each on its own address, with its own prefix, pid file and access
// log in a temp dir) and small Node UDP echo daemons. Namespaces, addresses on
// lo and cleanup of the namespace itself are netns.ts's; this file owns the
// daemon processes and reading what they recorded.
//
// API
//   tempDir(t, prefix?): string            a mkdtemp dir under os.tmpdir(), removed in t.after
//   addLoopbackAddress(ns, address)        `ip addr add <a>/32 dev lo` (/128 nodad for IPv6)
//   startNginxDaemons(sandbox, ns, dir, endpoints, options?): Promise<NginxDaemon[]>
//       one nginx per "addr:port" / "[v6]:port"; names d1, d2, ...; resolves once every
//       daemon's pid file exists (nginx writes it after its listening socket is open)
//   daemon.accessLog(): AccessLogEntry[]  what the daemon logged, one entry per request
//   startUdpEchoDaemons(sandbox, ns, dir, endpoints): Promise<UdpEchoDaemon[]>
//       one Node process per endpoint; each answers a datagram with "<name> <client addr>:<port>"
//   stopDaemons(daemons): Promise<void>   SIGTERM by PID, SIGKILL after 5 s; waits for exit
//
// nginx runs with `daemon off; master_process off;`: one process per daemon,
// so killing that PID leaves no orphaned worker behind in the namespace.

import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Namespace, NetnsSandbox } from './netns.js';

// A bound on a daemon that never gets ready; nginx and Node start in well
// under a second here, seconds on a busy machine.
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;

/** A mkdtemp directory (mode 0700) removed when the test ends, pass or fail. */
/** True while process `pid` exists (signal 0). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function tempDir(t: TestContext, prefix = 'hlbt-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Adds `address` to the namespace's lo (/32, or /128 without duplicate address detection). */
export function addLoopbackAddress(ns: Namespace, address: string): void {
  if (address.includes(':')) ns.ip('-6', 'addr', 'add', `${address}/128`, 'dev', 'lo', 'nodad');
  else ns.ip('addr', 'add', `${address}/32`, 'dev', 'lo');
}

/** "198.18.2.1:8080" or "[2001:db8:2::1]:8080" → address and port. */
export function splitEndpoint(endpoint: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(endpoint) ?? /^([^:]+):(\d+)$/.exec(endpoint);
  if (m === null) throw new Error(`"${endpoint}" is not address:port (IPv6 in brackets)`);
  return { address: m[1], port: Number(m[2]) };
}

/** "2001:db8::1:443" (as nginx logs `$remote_addr:$remote_port`) → address and port. */
function splitLogged(text: string): { address: string; port: number } {
  const i = text.lastIndexOf(':');
  return { address: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

interface DaemonProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** What the process wrote to stdout and stderr, for failure messages. */
  output(): string;
}

/** One line of a daemon's access log: the client as the daemon saw it. */
export interface AccessLogEntry {
  clientAddress: string;
  clientPort: number;
  status: number;
  uri: string;
  bytes: number;
}

export interface NginxDaemon extends DaemonProcess {
  readonly address: string;
  readonly port: number;
  /** "addr:port" or "[v6]:port", as in hostlb's config. */
  readonly endpoint: string;
  readonly dir: string;
  readonly accessLogPath: string;
  accessLog(): AccessLogEntry[];
}

export interface NginxOptions {
  /** Served under /files/ by every daemon (e.g. a large file for a transfer test). */
  filesDir?: string;
}

function collectOutput(child: ChildProcess): () => string {
  let text = '';
  const add = (chunk: Buffer): void => {
    // Keep the tail only: a daemon that floods its stderr must not eat the test's memory.
    text = (text + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => text;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function waitFor(what: string, child: ChildProcess, output: () => string, ready: () => boolean): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!ready()) {
    if (exited(child)) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready: ${output().trim()}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${READY_TIMEOUT_MS} ms: ${output().trim()}`);
    await sleep(20);
  }
}

function nginxConfig(name: string, dir: string, address: string, port: number, options: NginxOptions): string {
  const listen = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  return [
    'daemon off;',
    // One process: nothing outlives a kill of the PID the sandbox knows.
    'master_process off;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} warn;`,
    `lock_file ${join(dir, 'nginx.lock')};`,
    'events { worker_connections 1024; }',
    'http {',
    `  client_body_temp_path ${join(dir, 'body')};`,
    `  proxy_temp_path ${join(dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(dir, 'scgi')};`,
    '  log_format hostlb \'$remote_addr:$remote_port $status $body_bytes_sent $request_uri\';',
    `  access_log ${join(dir, 'access.log')} hostlb;`,
    '  keepalive_requests 1000000;',
    '  server {',
    `    listen ${listen};`,
    `    location = / { default_type text/plain; return 200 "${name} $remote_addr:$remote_port\\n"; }`,
    ...(options.filesDir === undefined ? [] : [`    location /files/ { alias ${options.filesDir}/; }`]),
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Starts one nginx per endpoint in `ns`, named d1, d2, ... in order, each in its
 * own subdirectory of `dir`. The endpoints' addresses must already be on the
 * namespace (addLoopbackAddress). Every response to `/` is
 * "<name> <client addr>:<client port>\n"; the access log has one
 * "<client addr>:<client port> <status> <bytes> <uri>" line per request.
 * Throws, naming the daemon and quoting its stderr, when one fails to start.
 */
export async function startNginxDaemons(sandbox: NetnsSandbox, ns: Namespace, dir: string, endpoints: string[], options: NginxOptions = {}): Promise<NginxDaemon[]> {
  const daemons = endpoints.map((endpoint, i): NginxDaemon => {
    const name = `d${i + 1}`;
    const { address, port } = splitEndpoint(endpoint);
    const home = join(dir, `nginx-${name}`);
    mkdirSync(home, { recursive: true });
    const confPath = join(home, 'nginx.conf');
    writeFileSync(confPath, nginxConfig(name, home, address, port, options));
    const child = sandbox.spawn(ns, ['nginx', '-p', `${home}/`, '-c', confPath]);
    const output = collectOutput(child);
    const accessLogPath = join(home, 'access.log');
    return {
      name, address, port, endpoint, dir: home, accessLogPath, child,
      output: () => `${output()}${readIfExists(join(home, 'error.log'))}`,
      accessLog: () => parseAccessLog(readIfExists(accessLogPath)),
    };
  });
  try {
    await Promise.all(daemons.map((d) => waitFor(`nginx ${d.name} (${d.endpoint})`, d.child, d.output, () => existsSync(join(d.dir, 'nginx.pid')))));
  } catch (error) {
    await stopDaemons(daemons);
    throw error;
  }
  return daemons;
}

function readIfExists(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

function parseAccessLog(text: string): AccessLogEntry[] {
  return text.split('\n').filter((line) => line !== '').map((line) => {
    const [client, status, bytes, uri] = line.split(' ');
    const { address, port } = splitLogged(client);
    return { clientAddress: address, clientPort: port, status: Number(status), bytes: Number(bytes), uri };
  });
}

export interface UdpEchoDaemon extends DaemonProcess {
  readonly address: string;
  readonly port: number;
  readonly endpoint: string;
}

// Answers every datagram with "<name> <client addr>:<client port>", the client
// as this daemon saw it; prints "ready" once bound; exits on SIGTERM or when
// its stdin closes.
const UDP_ECHO_SCRIPT = `
import dgram from 'node:dgram';
const [name, address, port] = process.argv.slice(2);
const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
socket.on('message', (msg, rinfo) => socket.send(name + ' ' + rinfo.address + ':' + rinfo.port, rinfo.port, rinfo.address));
socket.on('error', (error) => { console.error(String(error)); process.exit(1); });
socket.bind(Number(port), address, () => console.log('ready'));
process.on('SIGTERM', () => socket.close(() => process.exit(0)));
// The test holds the other end of stdin: if the test process dies without
// stopping this daemon, EOF ends it instead of leaving it in the namespace.
process.stdin.on('end', () => process.exit(0)).resume();
`;

/**
 * Starts one Node UDP echo daemon per endpoint in `ns`, named d1, d2, ...;
 * resolves when all are bound. The addresses must already be on the namespace.
 */
export async function startUdpEchoDaemons(sandbox: NetnsSandbox, ns: Namespace, dir: string, endpoints: string[]): Promise<UdpEchoDaemon[]> {
  const script = join(dir, 'udp-echo.mjs');
  writeFileSync(script, UDP_ECHO_SCRIPT);
  const daemons = endpoints.map((endpoint, i): UdpEchoDaemon => {
    const name = `d${i + 1}`;
    const { address, port } = splitEndpoint(endpoint);
    const child = sandbox.spawn(ns, [process.execPath, script, name, address, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const output = collectOutput(child);
    return { name, address, port, endpoint, child, output };
  });
  try {
    await Promise.all(daemons.map((d) => waitFor(`UDP echo daemon ${d.name} (${d.endpoint})`, d.child, d.output, () => d.output().includes('ready'))));
  } catch (error) {
    await stopDaemons(daemons);
    throw error;
  }
  return daemons;
}

/** SIGTERM to each daemon's PID, SIGKILL to those still there after 5 s; waits until all have exited. */
export async function stopDaemons(daemons: readonly DaemonProcess[]): Promise<void> {
  await Promise.all(daemons.map(async ({ child }) => {
    if (exited(child) || child.pid === undefined) return;
    const gone = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!exited(child)) child.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    await gone;
    clearTimeout(timer);
  }));
}
