// Shared by the health integration tests (health*.test.ts): the admin API over
// hostlb's unix socket (JSON reads and the server-sent event stream), the CLI
// as a child, Node HTTP fixture daemons (a configurable delay, a hung mode,
// graceful stop), wrk's summary, and the topology every health test starts
// from. Namespaces, hostlb and nginx daemons are test/support's.
//
// API
//   FIXTURE                                   path of fixtures/graceful-http-daemon.mjs
//   AdminClient(socket): get(path)            GET over the unix socket, parsed JSON; throws on non-2xx
//   admin.newFlows(port) / admin.daemonsOf(port)   /v1/clusters, one port's daemons
//   admin.health()                            /v1/health's daemons
//   EventStream.open(socket)                  GET /v1/events as text/event-stream; events with their arrival time
//   stream.waitFor(pred, timeoutMs)           the first event (kept or future) matching, or null at the timeout
//   cli(sandbox, ns, hostlb, args)            `hostlb --socket <state>/admin.sock ...args` inside ns
//   startFixtureDaemons(sandbox, ns, specs)   one fixture process per spec; resolves when all listen
//   runWrk(sandbox, ns, args, timeoutMs)      wrk to completion, summary parsed
//   startWrk(sandbox, ns, args, timeoutMs)    wrk until the test calls stop() (SIGINT); done: its summary
//   healthSetup(t, addresses)                 sandbox, client/server namespaces (client reuses TIME_WAIT ports),
//                                             addresses on the server's lo, temp dir
//   startHostlb(topo, config)                 HostlbProcess.start, then waits for "admin_listening"

import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addLoopbackAddress, splitEndpoint, tempDir } from '../support/daemons.js';
import { CLUSTER_V4, clusterTopology, HOSTLB_MAIN, HostlbProcess } from '../support/hostlb-process.js';
import { type Namespace, NetnsSandbox, type RunResult } from '../support/netns.js';
import { startWrk as startRawWrk } from '../support/wrk.js';

/** Compiled to dist/test/integration/: three levels up is the repo root, where the .mjs fixtures stay. */
export const FIXTURE = fileURLToPath(new URL('../../../test/integration/fixtures/graceful-http-daemon.mjs', import.meta.url));

// ---------------------------------------------------------------- admin API

/** One daemon of a port as GET /v1/clusters shows it. */
export interface ClusterDaemonView {
  address: string;
  weight: number;
  state: string;
  effectiveWeight: number;
  reason: string;
  advisor: string;
  responseMs: number | null;
  newFlows: number;
  activeFlows: number;
}

/** One daemon as GET /v1/health shows it. */
export interface HealthView {
  daemon: string;
  port: string;
  state: string;
  reason: string;
  advisor: string;
  responseMs: number | null;
  configuredWeight: number;
  effectiveWeight: number;
  factor: number;
  ramp: number;
}

export interface DaemonEventView {
  id: number;
  type: string;
  at: string;
  port: string;
  daemon: string;
  reason?: string;
  weight?: number;
  previousWeight?: number;
}

/** The admin API through its unix socket, from the test process (the socket is a file: no namespace needed). */
export class AdminClient {
  constructor(readonly socket: string) {}

  static of(hostlb: HostlbProcess): AdminClient {
    return new AdminClient(join(hostlb.stateDir, 'admin.sock'));
  }

  /** GET `path`, parsed JSON. Throws on a status other than 2xx, or after 30 s (a bound on a hang, not a speed). */
  get<T = unknown>(path: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socket, path, method: 'GET', headers: { accept: 'application/json' }, timeout: 30_000 }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`GET ${path}: ${res.statusCode} ${text}`));
          try {
            resolve(JSON.parse(text) as T);
          } catch (error) {
            reject(new Error(`GET ${path}: not JSON: ${text.slice(0, 500)}`, { cause: error }));
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 30 s`)));
      req.on('error', reject);
      req.end();
    });
  }

  /** The daemons of cluster port `port` (tcp unless `protocol` says otherwise). */
  async daemonsOf(port: number, protocol = 'tcp'): Promise<ClusterDaemonView[]> {
    const { clusters } = await this.get<{ clusters: Array<{ ports: Array<{ port: number; protocol: string; daemons: ClusterDaemonView[] }> }> }>('/v1/clusters');
    const p = clusters.flatMap((c) => c.ports).find((x) => x.port === port && x.protocol === protocol);
    if (p === undefined) throw new Error(`no port ${port}/${protocol} in /v1/clusters`);
    return p.daemons;
  }

  /** New flows so far per daemon address of cluster port `port`. */
  async newFlows(port: number): Promise<Record<string, number>> {
    return Object.fromEntries((await this.daemonsOf(port)).map((d) => [d.address, d.newFlows]));
  }

  async health(): Promise<HealthView[]> {
    return (await this.get<{ daemons: HealthView[] }>('/v1/health')).daemons;
  }

  async events(): Promise<DaemonEventView[]> {
    return (await this.get<{ events: DaemonEventView[] }>('/v1/events')).events;
  }

  /** hostlb's own view, for assertion messages. Never throws. */
  async evidence(hostlb: HostlbProcess): Promise<string> {
    const part = async (path: string): Promise<string> => {
      try {
        return JSON.stringify(await this.get(path));
      } catch (error) {
        return String(error);
      }
    };
    return [
      `\n--- GET /v1/health: ${await part('/v1/health')}`,
      `--- GET /v1/events: ${(await part('/v1/events')).slice(-6_000)}`,
      `--- GET /v1/clusters: ${await part('/v1/clusters')}`,
      `--- hostlb stderr (tail):\n${hostlb.describe().slice(-4_000)}`,
    ].join('\n');
  }
}

/** An event from the stream, with the test clock's time of arrival. */
export interface StreamedEvent extends DaemonEventView {
  receivedAt: number;
}

/** GET /v1/events with Accept: text/event-stream, kept open; close() when done. */
export class EventStream {
  readonly events: StreamedEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private closed = false;

  private constructor(private readonly req: ReturnType<typeof request>) {}

  /** Opens the stream; resolves once hostlb has sent the response head. */
  static open(socket: string): Promise<EventStream> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/v1/events', method: 'GET', headers: { accept: 'text/event-stream' } });
      const stream = new EventStream(req);
      req.on('response', (res) => {
        if (res.statusCode !== 200 || !String(res.headers['content-type']).includes('text/event-stream')) {
          reject(new Error(`GET /v1/events (SSE): ${res.statusCode} ${String(res.headers['content-type'])}`));
          res.resume();
          return;
        }
        let pending = '';
        res.setEncoding('utf8').on('data', (chunk: string) => {
          pending += chunk;
          let end: number;
          // One event per blank-line-terminated block; only its data line matters here.
          while ((end = pending.indexOf('\n\n')) >= 0) {
            const block = pending.slice(0, end);
            pending = pending.slice(end + 2);
            const data = block.split('\n').find((l) => l.startsWith('data: '));
            if (data === undefined) continue;
            stream.events.push({ ...(JSON.parse(data.slice(6)) as DaemonEventView), receivedAt: Date.now() });
            for (const w of stream.waiters) w();
          }
        });
        resolve(stream);
      });
      req.on('error', (error) => {
        if (!stream.closed) reject(error);
      });
      req.end();
    });
  }

  /** The first event, kept or future, for which `pred` holds; null after `timeoutMs`. */
  waitFor(pred: (e: StreamedEvent) => boolean, timeoutMs: number): Promise<StreamedEvent | null> {
    const found = this.events.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => {
      const check = (): void => {
        const hit = this.events.find(pred);
        if (hit === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(hit);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(null);
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  close(): void {
    this.closed = true;
    this.req.destroy();
  }
}

// ---------------------------------------------------------------- CLI

/** One CLI invocation: what it printed, its exit status, when it ran (test clock). */
export interface CliRun extends RunResult {
  args: string[];
  startedAt: number;
  returnedAt: number;
}

/** Runs `hostlb --socket <stateDir>/admin.sock ...args` inside `ns`; killed after `timeoutMs`. */
export async function cli(sandbox: NetnsSandbox, ns: Namespace, hostlb: HostlbProcess, args: string[], timeoutMs = 30_000): Promise<CliRun> {
  const startedAt = Date.now();
  const run = await sandbox.run(ns, [process.execPath, HOSTLB_MAIN, '--socket', join(hostlb.stateDir, 'admin.sock'), ...args], { timeoutMs });
  return { ...run, args, startedAt, returnedAt: Date.now() };
}

export function describeCli(r: CliRun): string {
  return `hostlb ${r.args.join(' ')} → ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''} after ${r.returnedAt - r.startedAt} ms\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
}

// ---------------------------------------------------------------- fixture daemons

export interface FixtureSpec {
  /** "198.18.2.1:8080"; the address must already be on the namespace. */
  endpoint: string;
  name?: string;
  /** Every answer waits this long. */
  delayMs?: number;
  /** Accept, never answer. */
  silent?: boolean;
}

export interface FixtureDaemon {
  readonly name: string;
  readonly endpoint: string;
  readonly child: ChildProcess;
  output(): string;
}

/** One fixture daemon per spec inside `ns` (killed with the sandbox, or by EOF on stdin); resolves when all listen. */
export async function startFixtureDaemons(sandbox: NetnsSandbox, ns: Namespace, specs: FixtureSpec[]): Promise<FixtureDaemon[]> {
  const daemons = specs.map((spec, i): FixtureDaemon => {
    const { address, port } = splitEndpoint(spec.endpoint);
    const name = spec.name ?? `f${i + 1}`;
    const args = [process.execPath, FIXTURE, '--exit-on-stdin-eof', ...(spec.silent ? ['--silent'] : [])];
    const env = { ...process.env, HOST: address, PORT: String(port), NAME: name, DELAY_MS: String(spec.delayMs ?? 0) };
    const child = sandbox.spawn(ns, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    let text = '';
    const add = (chunk: Buffer): void => {
      text = (text + chunk.toString('utf8')).slice(-8_192);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    return { name, endpoint: spec.endpoint, child, output: () => text };
  });
  // A bound on a fixture that never listens; several Node processes starting at once take seconds on a busy machine.
  const deadline = Date.now() + 60_000;
  for (const d of daemons) {
    while (!d.output().includes('listening on')) {
      if (d.child.exitCode !== null || d.child.signalCode !== null) throw new Error(`fixture ${d.name} (${d.endpoint}) exited: ${d.output()}`);
      if (Date.now() > deadline) throw new Error(`fixture ${d.name} (${d.endpoint}) not listening after 60 s: ${d.output()}`);
      await sleep(20);
    }
  }
  return daemons;
}

// ---------------------------------------------------------------- wrk

export interface WrkSummary {
  requests: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
  output: string;
  code: number | null;
  timedOut: boolean;
}

/** wrk 4 prints "Socket errors" and "Non-2xx or 3xx responses" only when non-zero. Throws when wrk printed no summary. */
export function parseWrk(run: RunResult): WrkSummary {
  const output = `${run.stdout}${run.stderr}`;
  const requests = /(\d+) requests in /.exec(output);
  if (requests === null) throw new Error(`wrk exited ${run.code ?? run.signal}${run.timedOut ? ' (killed at its time limit)' : ''} without a summary:\n${output}`);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requests: Number(requests[1]),
    socketErrors: errors === null
      ? { connect: 0, read: 0, write: 0, timeout: 0 }
      : { connect: Number(errors[1]), read: Number(errors[2]), write: Number(errors[3]), timeout: Number(errors[4]) },
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
    output,
    code: run.code,
    timedOut: run.timedOut,
  };
}

/** Runs wrk inside `ns` (args after `wrk`); the sandbox kills it at `timeoutMs` whatever its -d says. */
export async function runWrk(sandbox: NetnsSandbox, ns: Namespace, args: string[], timeoutMs: number): Promise<WrkSummary> {
  return parseWrk(await sandbox.run(ns, ['wrk', ...args], { timeoutMs }));
}

/** A wrk the test ends when it has seen what it needs (see startWrk). */
export interface RunningWrk {
  /** SIGINT: wrk stops at once and still prints its summary. */
  stop(): void;
  readonly done: Promise<WrkSummary>;
}

/** support/wrk.ts's startWrk with the summary parsed (give a -d longer than any run needs). */
export function startWrk(sandbox: NetnsSandbox, ns: Namespace, args: string[], timeoutMs: number): RunningWrk {
  const wrk = startRawWrk(sandbox, ns, args, timeoutMs);
  return { stop: wrk.stop, done: wrk.done.then(parseWrk) };
}

// ---------------------------------------------------------------- set-up

export interface HealthTopo {
  sandbox: NetnsSandbox;
  client: Namespace;
  server: Namespace;
  dir: string;
}

/** Client and server namespaces (removed with the test), `addresses` on the server's lo, a temp dir. */
export function healthSetup(t: TestContext, addresses: string[]): HealthTopo {
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  // Through hostlb the daemon's FIN trails its response by a moment, so wrk often closes first and its
  // ports sit in TIME_WAIT; once the even half of the port range is used up, connect() slows to a few
  // hundred a second (measured here: 7k new connections/s falling to 300/s after ~6 s). Reusing
  // TIME_WAIT ports, as load generators do, keeps the stream of new connections steady.
  client.writeSysctl('net/ipv4/tcp_tw_reuse', '1');
  for (const a of addresses) addLoopbackAddress(server, a);
  return { sandbox, client, server, dir };
}

/**
 * Starts hostlb in the server namespace and waits until its admin API
 * listens: "started" is logged when the data plane runs, a moment before the
 * admin socket exists ("admin_listening").
 */
export async function startHostlb(topo: HealthTopo, config: Record<string, unknown>): Promise<HostlbProcess> {
  const hostlb = await HostlbProcess.start(topo.sandbox, topo.server, config, { dir: topo.dir });
  const listening = await Promise.race([
    hostlb.waitForEvent('admin_listening').then(() => true),
    sleep(60_000, undefined, { ref: false }).then(() => false),
  ]);
  if (!listening) {
    await hostlb.stop();
    throw new Error(`hostlb logged no "admin_listening" within 60 s of "started":\n${hostlb.describe()}`);
  }
  return hostlb;
}

/** Three supervised fixture daemons on 198.18.2.11-13:8080 behind CLUSTER_V4:80 with an http advisor: the live views' stage. */
export const THREE_SUPERVISED = {
  device: 'hlb0',
  clusters: [{
    address: CLUSTER_V4,
    ports: [{
      port: 80,
      advisor: { type: 'http', interval: '500ms', timeout: '400ms', rise: 1, fall: 2 },
      supervise: { command: process.execPath, args: [FIXTURE], instances: 3, host: '198.18.2.11', port: 8080, user: 'root' },
    }],
  }],
};

/** Polls `read` every `everyMs` until `pred` holds; returns the value, or throws after `timeoutMs` naming `what`. */
export async function pollUntil<T>(what: string, read: () => Promise<T>, pred: (v: T) => boolean, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms; last value ${JSON.stringify(v)}`);
    await sleep(everyMs);
  }
}

/** A share as a percentage with one decimal. */
export function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

/**
 * A TCP connect from the client namespace: prints how it ended. It gives up
 * after 8 s (callers give the child 10 s): an answer (SYN-ACK or RST) comes
 * at once, a dropped SYN never.
 */
export const TCP_CLIENT = `
import net from 'node:net';
const [address, port] = process.argv.slice(1);
const started = Date.now();
const s = net.connect(Number(port), address);
const done = (what) => { console.log(JSON.stringify({ ...what, ms: Date.now() - started })); s.destroy(); };
const timer = setTimeout(() => done({ result: 'timeout' }), 8000);
s.on('connect', () => { clearTimeout(timer); done({ result: 'connected' }); });
s.on('error', (e) => { clearTimeout(timer); done({ result: 'error', code: e.code }); });
`;
