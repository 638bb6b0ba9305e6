// hostlb as a real process for integration tests: writes a config file to a
// temp dir, runs `hostlb start` inside a test namespace, waits for its
// "started" event, stops it with a signal and waits for it to exit, keeping its
// stderr for failure messages. Also the two-namespace topology every
// integration test uses, and nftables counters to see what crossed a link.
//
// API
//   HostlbProcess.start(sandbox, ns, config, { dir, startTimeoutMs? }): Promise<HostlbProcess>
//       config is the YAML document as an object; stateDir defaults to <dir>/state (pass the
//       same dir again to find a crashed run's journal). Rejects, quoting stderr, when hostlb
//       exits or does not log "started" in time. options.args: more arguments after
//       `start --config FILE` (e.g. ['--takeover']).
//   hostlb.stop(signal = 'SIGTERM'): Promise<HostlbExit>   signal by PID, wait for exit (SIGKILL at 30 s)
//   hostlb.kill(): Promise<HostlbExit>                     SIGKILL, the crash case
//   hostlb.events / hostlb.stderr / hostlb.describe()      its JSON log lines, raw stderr, a summary
//   clusterTopology(sandbox): Topology                     client and server namespaces (see below)
//   waitForIpv6Settled(ns, dev): Promise<void>             until dev's link-local address is past DAD (before snapshots)
//   CLIENT_V4/V6, SERVER_V4/V6, CLUSTER_V4/V6              the topology's addresses
//   nftLoad(ns, ruleset)                                   `nft -f -` inside ns
//   nftCounters(ns, table): Record<string, number>         packets per named counter of `inet <table>`
//   curlThrough(sandbox, ns, urls, options?): Promise<CurlResult[]>
//       one curl (--globoff: IPv6 brackets are literal), one new connection per URL, each answer with its peer and local endpoint
//   metricValue(hostlb, sample): Promise<number>           one sample of GET /metrics over the admin socket, 0 when absent

import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { Namespace, NetnsSandbox } from './netns.js';

/** dist/test/support/ → dist/src/control/cli/main.js (the compiled CLI). */
export const HOSTLB_MAIN = fileURLToPath(new URL('../../src/control/cli/main.js', import.meta.url));

// Bounds, not expectations: hostlb starts and stops in well under a second
// here, but several seconds on a busy machine; only a hang reaches these.
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const METRICS_TIMEOUT_MS = 30_000;
let configCounter = 0;

/** One JSON line hostlb logged; `event` is its `event` field, or its `msg` when it has none. */
export interface HostlbEvent {
  event: string;
  [field: string]: unknown;
}

export interface HostlbExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class HostlbProcess {
  /** Everything hostlb wrote to stderr so far. */
  stderr = '';
  /** Its JSON log lines, parsed, in order. */
  readonly events: HostlbEvent[] = [];
  private readonly exit: Promise<HostlbExit>;
  private pending = '';

  private constructor(readonly child: ChildProcess, readonly configPath: string, readonly stateDir: string) {
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => {
        this.stderr += `\n(spawn failed: ${String(error)})`;
        resolve({ code: null, signal: null });
      });
    });
    child.stdout?.resume();
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      this.pending += chunk;
      let nl: number;
      while ((nl = this.pending.indexOf('\n')) >= 0) {
        const line = this.pending.slice(0, nl);
        this.pending = this.pending.slice(nl + 1);
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          // Lines name their event in `event`; pino lines without one are named by `msg`.
          const name = typeof parsed?.event === 'string' ? parsed.event : typeof parsed?.msg === 'string' ? parsed.msg : undefined;
          if (name !== undefined) this.events.push({ ...parsed, event: name });
        } catch {
          // Not a log line (a usage error, a stack trace): it stays in stderr.
        }
      }
    });
  }

  /**
   * Writes `config` (with stateDir defaulted to `<dir>/state`) as YAML into
   * `dir`, starts `node main.js start --config FILE` inside `ns` and waits for
   * the "started" event (`options.args` follow `--config FILE`). Rejects with hostlb's stderr when it exits first or
   * stays silent past the timeout (it is killed then).
   */
  static async start(sandbox: NetnsSandbox, ns: Namespace, config: Record<string, unknown>, options: { dir: string; startTimeoutMs?: number; args?: string[]; env?: NodeJS.ProcessEnv }): Promise<HostlbProcess> {
    const stateDir = typeof config.stateDir === 'string' ? config.stateDir : join(options.dir, 'state');
    mkdirSync(options.dir, { recursive: true });
    const configPath = join(options.dir, `hostlb-${++configCounter}.yaml`);
    // A test that names no data plane was written for the TUN plane (the tests
    // shared by both planes pass theirs from DATAPLANES); the config default is netfilter.
    writeFileSync(configPath, stringify({ dataplane: 'tun', ...config, stateDir }));
    // The socket plane's bpffs must live in the host's mount namespace, as it would outside a test:
    // it holds the dispatch a crashed hostlb leaves running.
    const child = sandbox.spawn(ns, [process.execPath, HOSTLB_MAIN, 'start', '--config', configPath, ...(options.args ?? [])], { sharedMounts: config.dataplane === 'socket', env: options.env === undefined ? undefined : { ...process.env, ...options.env } });
    const hostlb = new HostlbProcess(child, configPath, stateDir);
    const timeoutMs = options.startTimeoutMs ?? START_TIMEOUT_MS;
    const outcome = await Promise.race([
      hostlb.waitForEvent('started').then(() => 'started' as const),
      hostlb.exit.then(() => 'exited' as const),
      new Promise<'timeout'>((resolve) => setTimeout(resolve, timeoutMs, 'timeout').unref()),
    ]);
    if (outcome === 'started') return hostlb;
    if (outcome === 'timeout') await hostlb.kill();
    const exit = await hostlb.exit;
    throw new Error(`hostlb did not start (${outcome === 'timeout' ? `no "started" event in ${timeoutMs} ms` : `exited with ${exit.code ?? exit.signal}`}); config ${configPath}; stderr:\n${hostlb.stderr.trim()}`);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first event named `name`, logged already or later. Never rejects. */
  waitForEvent(name: string): Promise<HostlbEvent> {
    const seen = this.events.find((e) => e.event === name);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const check = (): void => {
        const found = this.events.find((e) => e.event === name);
        if (found === undefined) return;
        this.child.stderr?.off('data', check);
        resolve(found);
      };
      // Listeners run in order, so the parser above has already seen the chunk.
      this.child.stderr?.on('data', check);
    });
  }

  /**
   * Sends `signal` to hostlb's PID and waits for it to exit. After 30 s it is
   * SIGKILLed and this throws, quoting stderr (a stop that hangs is a bug).
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<HostlbExit> {
    if (!this.running) return this.exit;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const exit = await this.exit;
    clearTimeout(timer);
    if (exit.signal === 'SIGKILL' && signal !== 'SIGKILL') {
      throw new Error(`hostlb did not exit within ${STOP_TIMEOUT_MS} ms of ${signal}; killed. stderr:\n${this.describe()}`);
    }
    return exit;
  }

  /** SIGKILL: hostlb gets no chance to undo anything (its journal and persistent device stay). */
  async kill(): Promise<HostlbExit> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exit;
  }

  /** hostlb's stderr without the periodic counters lines, for assertion messages. */
  describe(): string {
    return this.stderr.split('\n').filter((line) => !line.includes('"event":"counters"')).join('\n').trim();
  }
}

/** The namespaces and addresses every integration test shares. */
export interface Topology {
  /** Where curl, wrk and the UDP client run. */
  client: Namespace;
  /** Where hostlb and the daemons run. */
  server: Namespace;
  clientDev: string;
  serverDev: string;
}

export const CLIENT_V4 = '198.18.0.1';
export const SERVER_V4 = '198.18.0.2';
export const CLIENT_V6 = '2001:db8::1';
export const SERVER_V6 = '2001:db8::2';
export const CLUSTER_V4 = '198.18.100.1';
export const CLUSTER_V6 = '2001:db8:100::1';

/**
 * A client namespace and a server namespace joined by a veth pair
 * (198.18.0.1/24 and 2001:db8::1/64 on the client side, .2 and ::2 on the
 * server side). The client routes both cluster addresses via the server.
 * Removed with the sandbox.
 */
export function clusterTopology(sandbox: NetnsSandbox): Topology {
  const client = sandbox.namespace();
  const server = sandbox.namespace();
  const pair = sandbox.veth(client, server, { a: [`${CLIENT_V4}/24`, `${CLIENT_V6}/64`], b: [`${SERVER_V4}/24`, `${SERVER_V6}/64`] });
  client.ip('route', 'add', `${CLUSTER_V4}/32`, 'via', SERVER_V4);
  client.ip('-6', 'route', 'add', `${CLUSTER_V6}/128`, 'via', SERVER_V6);
  return { client, server, clientDev: pair.a.dev, serverDev: pair.b.dev };
}

/**
 * Waits until `dev` in `ns` has a link-local IPv6 address that has finished
 * duplicate address detection. The kernel adds it (and its `local`, fe80::/64
 * and ff00::/8 routes) a moment after the link gets carrier, then keeps it
 * tentative for about a second; a snapshot of the routing tables taken before
 * then differs from later ones for no fault of hostlb. Throws after `timeoutMs`.
 */
export async function waitForIpv6Settled(ns: Namespace, dev: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const links = ns.ipJson<Array<{ addr_info?: Array<{ tentative?: boolean }> }>>('-6', 'addr', 'show', 'dev', dev, 'scope', 'link');
    const addresses = links.flatMap((l) => l.addr_info ?? []);
    if (addresses.length > 0 && addresses.every((a) => a.tentative !== true)) return;
    if (Date.now() > deadline) throw new Error(`${dev} in ${ns.name} has no settled link-local IPv6 address after ${timeoutMs} ms: ${JSON.stringify(links)}`);
    await sleep(50);
  }
}

/** Loads an nftables ruleset (nft -f -) inside `ns`. */
export function nftLoad(ns: Namespace, ruleset: string): void {
  ns.exec(['nft', '-f', '-'], { input: ruleset });
}

/** Packets counted by each named counter of table `inet <table>` in `ns`. */
export function nftCounters(ns: Namespace, table: string): Record<string, number> {
  const out = JSON.parse(ns.exec(['nft', '-j', 'list', 'counters', 'table', 'inet', table])) as { nftables: Array<{ counter?: { name: string; packets: number } }> };
  const counters: Record<string, number> = {};
  for (const item of out.nftables) if (item.counter !== undefined) counters[item.counter.name] = item.counter.packets;
  return counters;
}

/** One transfer as curl saw it. */
export interface CurlResult {
  /** The response body (for "/" on a test daemon: "<daemon> <client addr>:<port>"). */
  body: string;
  httpCode: number;
  remoteIp: string;
  remotePort: number;
  localIp: string;
  localPort: number;
}

const CURL_MARK = '\n@@hlbt@@';

/**
 * Runs one curl in `ns` fetching every URL in `urls`, each over a new
 * connection (`Connection: close`), and returns what each transfer saw. Throws,
 * quoting curl's stderr, when curl fails or returns fewer transfers than URLs.
 */
export async function curlThrough(sandbox: NetnsSandbox, ns: Namespace, urls: string[], options: { timeoutMs?: number } = {}): Promise<CurlResult[]> {
  const format = `${CURL_MARK} %{http_code} %{remote_ip} %{remote_port} %{local_ip} %{local_port}\n`;
  // Per transfer: long enough for a busy machine, short enough that a lost connection fails the run.
  const argv = ['curl', '-sS', '--globoff', '--max-time', '15', '--connect-timeout', '10', '-H', 'Connection: close', '-w', format, ...urls];
  const result = await sandbox.run(ns, argv, { timeoutMs: options.timeoutMs ?? 30_000 + 15_000 * urls.length });
  if (result.code !== 0) throw new Error(`curl exited ${result.code ?? result.signal}${result.timedOut ? ' (timed out)' : ''}: ${result.stderr.trim()}`);
  const results: CurlResult[] = [];
  let rest = result.stdout;
  for (;;) {
    const i = rest.indexOf(CURL_MARK);
    if (i < 0) break;
    const body = rest.slice(0, i);
    const nl = rest.indexOf('\n', i + CURL_MARK.length);
    const [code, remoteIp, remotePort, localIp, localPort] = rest.slice(i + CURL_MARK.length, nl).trim().split(' ');
    results.push({ body: body.trim(), httpCode: Number(code), remoteIp, remotePort: Number(remotePort), localIp, localPort: Number(localPort) });
    rest = rest.slice(nl + 1);
  }
  if (results.length !== urls.length) throw new Error(`curl returned ${results.length} transfers for ${urls.length} URLs: ${result.stdout.slice(0, 2000)} ${result.stderr}`);
  return results;
}

/**
 * GET /metrics over the admin socket at `socketPath` (hostlb's
 * `<stateDir>/admin.sock`), as text. Rejects on a non-2xx answer, a socket
 * error or no answer within 30 s.
 */
export function metricsText(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/metrics', timeout: METRICS_TIMEOUT_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('end', () => ((res.statusCode ?? 0) >= 300 ? reject(new Error(`GET /metrics: ${res.statusCode} ${text}`)) : resolve(text)));
    });
    req.on('timeout', () => req.destroy(new Error(`GET /metrics: no answer in ${METRICS_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * The value of hostlb's /metrics line starting with `sample` and a space (a
 * name, with its labels as hostlb prints them: `name{label="x"}`), 0 when
 * there is none. Rejects as metricsText does.
 */
export async function metricValue(hostlb: HostlbProcess, sample: string): Promise<number> {
  const text = await metricsText(join(hostlb.stateDir, 'admin.sock'));
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.slice(sample.length + 1));
}
