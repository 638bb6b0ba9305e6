// bench:e2e — HTTP through five paths between two network namespaces: wrk in
// a client namespace, two nginx daemons in a server namespace, reached directly
// (one daemon), through kernel nftables DNAT, through hostlb's TUN data plane,
// through hostlb's netfilter data plane (NFQUEUE verdicts, nftables DNAT by
// mark, conntrack) and through HAProxy in TCP mode; each with keep-alive and
// with a new connection per request, with the same wrk parameters, in the same
// run and the same namespaces. Needs root. Prints its figures last (ratios
// against nftables DNAT measured in the same run):
//   e2e keep-alive: netfilter <R> req/s, tun <R> req/s, nftables <R> req/s, haproxy <R> req/s, direct <R> req/s; netfilter/nftables <x.xx>, tun/nftables <x.xx>, haproxy/nftables <x.xx>
//   e2e new-conn:   (the same)
// A benchmark, not a test: it never fails on speed. It exits 1 when set-up
// fails or a path cannot carry requests, and prints "error" for that path.
// Without haproxy installed the HAProxy path is skipped ("skipped"), with a note.
// BENCH_SECONDS (default 10) sets each wrk run's length; BENCH_PATHS (comma-
// separated path names, default all) measures only some paths, the others show
// as "skipped".
//
// Order: direct, nftables, hostlb-tun, hostlb-netfilter, haproxy; each path has
// its own client source address (see CLIENT_SOURCE), and each balancer is gone
// (rules deleted, process stopped) before the next starts.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasRoot, NetnsSandbox, type Namespace } from '../test/support/netns.js';
import { cpuSecondsBetween, mainThreadSchedSeconds, netnsInode, otherProcessesCpu, processCpuSeconds, topConsumers } from './support/cpu.js';
import { conntrackDelta, conntrackStats, describeConntrack, parsePrometheus, queueDelta, queueStats, type ConntrackStats, type QueueStats } from './support/netfilter-stats.js';
import { parseWrk, socketErrorCount, type WrkReport } from './support/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const THREADS = 2;
const CONNECTIONS = 32;
const PAUSE_MS = 1_000; // between runs, so one run's closing connections do not land in the next
/** CPUs used by other work during a run above which the run is flagged as shared (its figure is less trustworthy). */
const NOISY_CPUS = 0.05;

const CLIENT_ADDR = '198.18.0.1';
const SERVER_ADDR = '198.18.0.2';
const CLUSTER = '198.18.100.1';
const CLUSTER_PORT = 80;
const DAEMONS = ['198.18.2.1', '198.18.2.2'];
const DAEMON_PORT = 8080;
const DEVICE = 'hlb0';
/** NFQUEUE queue of the netfilter data plane (hostlb's default, written out so the bench can read its counters). */
const NF_QUEUE = 4242;

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const HOSTLB_MAIN = join(REPO, 'dist/src/control/cli/main.js');

/** In the order they are measured. */
const PATHS = ['direct', 'nftables', 'hostlb-tun', 'hostlb-netfilter', 'haproxy'] as const;
const MODES = ['keep-alive', 'new-conn'] as const;
type PathName = (typeof PATHS)[number];
type Mode = (typeof MODES)[number];
type Dataplane = 'tun' | 'netfilter';
/** BENCH_PATHS=nftables,hostlb-netfilter measures only those paths (the others show as "skipped"); default all. */
const SELECTED = new Set<string>((process.env.BENCH_PATHS ?? PATHS.join(',')).split(',').map((p) => p.trim()).filter((p) => p !== ''));
const HOSTLB_PATH: Record<Dataplane, PathName> = { tun: 'hostlb-tun', netfilter: 'hostlb-netfilter' };

/**
 * The client's source address for each path. With "Connection: close" nginx
 * closes first, so the server namespace keeps a TIME_WAIT socket (60 s, fixed
 * in Linux) per client port. A later path's SYN that reuses such a 4-tuple
 * carries an ISN and timestamp derived from a different tuple (client->cluster
 * instead of client->daemon), so the TIME_WAIT socket often answers with an ACK
 * instead of a SYN-ACK and the client waits out a 1 s SYN timeout: measured
 * here as hundreds of SYN retransmissions per run when all paths shared one
 * source. One source per path keeps each path's connections apart.
 */
const CLIENT_SOURCE: Record<PathName, string> = {
  direct: '198.18.0.11', nftables: '198.18.0.12', 'hostlb-tun': '198.18.0.13', 'hostlb-netfilter': '198.18.0.14', haproxy: '198.18.0.15',
};

interface Measurement {
  path: PathName;
  mode: Mode;
  report: WrkReport | null;
  /** Why there is no report (path check failed, wrk failed, or the path was skipped). */
  error?: string;
  /** True when the path was left out on purpose (haproxy not installed): no report, and not a failure. */
  skipped?: boolean;
  /** Kernel TCP counters over the run, in the client and the server namespace. */
  tcp?: { client: TcpCounters; server: TcpCounters };
  /** Extra figures for hostlb runs: TUN device counters over the run. */
  tun?: TunCounters;
  /** hostlb's own counters over the run (admin API), or why they could not be read. */
  hostlb?: string;
  /**
   * CPU used during the run by processes outside the benchmark's namespaces
   * (other work on the machine), in CPUs: 1 = one core all the time.
   */
  otherCpus: number;
  /** The other processes that used the most CPU during the run, in CPUs, when otherCpus is noticeable. */
  otherTop?: string;
  /** CPU time the balancer process (hostlb or HAProxy) used during the run, all its threads, in CPUs (1 = one core all the time). */
  balancerCpus?: number;
  /** Which process balancerCpus is about. */
  balancerName?: string;
  /** Share of the run hostlb's event-loop thread spent running, and runnable but waiting for a CPU. */
  hostlbLoop?: { running: number; waiting: number };
  /** Conntrack counters of the server namespace over the run (paths that use conntrack: nftables, hostlb-netfilter). */
  conntrack?: ConntrackStats;
  /** The netfilter data plane's NFQUEUE counters over the run (kernel side). */
  queue?: QueueStats;
  /** The netfilter data plane's own figures over the run (GET /metrics), or why they could not be read. */
  netfilter?: string;
}

interface TunCounters {
  /** Packets the kernel queued to hostlb, and those it dropped because the queue was full. */
  toHostlb: number;
  toHostlbDropped: number;
  /** Packets hostlb wrote back. */
  fromHostlb: number;
  fromHostlbDropped: number;
}

const progress = (message: string): void => {
  process.stderr.write(`bench:e2e: ${message}\n`);
};

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function toolVersion(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 5_000 });
  if (r.error) return 'missing';
  return `${r.stdout}${r.stderr}`.split('\n')[0].trim();
}

/** Sends SIGTERM by PID and waits up to `ms` for the exit; SIGKILL after that. */
async function stopChild(child: ChildProcess | null, ms = 5_000): Promise<void> {
  if (child === null || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const timedOut = await Promise.race([exited.then(() => false), sleep(ms).then(() => true)]);
  if (timedOut && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Exited between the check and the kill.
    }
  }
}

// ---- nginx ------------------------------------------------------------------

function nginxConfig(prefix: string, address: string, index: number): string {
  // keepalive_requests: nginx closes a keep-alive connection after 1000
  // requests by default, which would mix new connections into keep-alive runs.
  return `daemon off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server {
    listen ${address}:${DAEMON_PORT};
    location / {
      add_header X-Daemon ${index};
      return 200 "ok\\n";
    }
  }
}
`;
}

interface NginxDaemon {
  child: ChildProcess;
  stderr: () => string;
}

function startNginx(sandbox: NetnsSandbox, server: Namespace, dir: string, address: string, index: number): NginxDaemon {
  const prefix = join(dir, `nginx-${index}`);
  mkdirSync(prefix, { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig(prefix, address, index));
  // -e stderr: nginx would otherwise open its compiled-in error log before reading the config.
  const child = sandbox.spawn(server, ['nginx', '-p', prefix, '-e', 'stderr', '-c', conf]);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return { child, stderr: () => stderr };
}

// ---- checks with curl ---------------------------------------------------------

interface CurlOutcome {
  ok: boolean;
  daemon: string;
  detail: string;
}

async function curlOnce(sandbox: NetnsSandbox, ns: Namespace, url: string): Promise<CurlOutcome> {
  const r = await sandbox.run(ns, ['curl', '-sS', '--max-time', '3', '-w', '|%{http_code}|%header{x-daemon}', url], { timeoutMs: 5_000 });
  const m = /^ok\n\|200\|(\d+)$/.exec(r.stdout);
  if (r.code === 0 && m !== null) return { ok: true, daemon: m[1], detail: '' };
  return { ok: false, daemon: '', detail: `curl ${url}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr.trim())}` };
}

/**
 * A few requests through one path: all must answer "ok"; through a balancer
 * both daemons must have answered. Returns null when fine, else what went wrong.
 */
async function checkPath(sandbox: NetnsSandbox, client: Namespace, url: string, balanced: boolean): Promise<string | null> {
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const outcome = await curlOnce(sandbox, client, url);
    if (!outcome.ok) return outcome.detail;
    seen.add(outcome.daemon);
  }
  if (balanced && seen.size !== DAEMONS.length) return `6 requests to ${url} reached only daemon(s) ${[...seen].join(', ')}`;
  return null;
}

async function waitForDaemon(sandbox: NetnsSandbox, server: Namespace, daemon: NginxDaemon, address: string): Promise<void> {
  const url = `http://${address}:${DAEMON_PORT}/`;
  const deadline = Date.now() + 10_000;
  let last = '';
  while (Date.now() < deadline) {
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) break;
    const outcome = await curlOnce(sandbox, server, url);
    if (outcome.ok) return;
    last = outcome.detail;
    await sleep(100);
  }
  throw new Error(`nginx on ${address}:${DAEMON_PORT} did not answer: ${last}; nginx stderr: ${daemon.stderr().trim() || '(empty)'}`);
}

// ---- counters -----------------------------------------------------------------

/** Kernel TCP counters that show loss, as seen inside one namespace. */
interface TcpCounters {
  /** RetransSegs (/proc/net/snmp): every retransmitted segment, tail loss probes included. */
  retransSegs: number;
  /** TcpExt (/proc/net/netstat): SYN and SYN-ACK retransmissions, RTO expiries, tail loss probes, full accept queues. */
  synRetrans: number;
  timeouts: number;
  lossProbes: number;
  listenOverflows: number;
}

function procTable(text: string, prefix: string): Map<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith(prefix));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  return new Map(names.map((name, i) => [name, Number(values[i])]));
}

function tcpCounters(ns: Namespace): TcpCounters {
  const snmp = procTable(ns.exec(['cat', '/proc/net/snmp']), 'Tcp:');
  const ext = procTable(ns.exec(['cat', '/proc/net/netstat']), 'TcpExt:');
  return {
    retransSegs: snmp.get('RetransSegs') ?? 0,
    synRetrans: ext.get('TCPSynRetrans') ?? 0,
    timeouts: ext.get('TCPTimeouts') ?? 0,
    lossProbes: ext.get('TCPLossProbes') ?? 0,
    listenOverflows: ext.get('ListenOverflows') ?? 0,
  };
}

function tcpDelta(after: TcpCounters, before: TcpCounters): TcpCounters {
  return {
    retransSegs: after.retransSegs - before.retransSegs,
    synRetrans: after.synRetrans - before.synRetrans,
    timeouts: after.timeouts - before.timeouts,
    lossProbes: after.lossProbes - before.lossProbes,
    listenOverflows: after.listenOverflows - before.listenOverflows,
  };
}

function describeTcp(c: TcpCounters): string {
  return `${c.retransSegs} retransmitted (${c.synRetrans} SYN/SYN-ACK, ${c.timeouts} RTO expiries, ${c.lossProbes} tail loss probes), ${c.listenOverflows} accept-queue overflows`;
}

function tunCounters(server: Namespace): TunCounters {
  const [link] = server.ipJson<Array<{ stats64: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } } }>>('-s', 'link', 'show', 'dev', DEVICE);
  // The device's tx is what the kernel hands to the reader (hostlb); its rx is what hostlb writes.
  return { toHostlb: link.stats64.tx.packets, toHostlbDropped: link.stats64.tx.dropped, fromHostlb: link.stats64.rx.packets, fromHostlbDropped: link.stats64.rx.dropped };
}

function tunDelta(after: TunCounters, before: TunCounters): TunCounters {
  return {
    toHostlb: after.toHostlb - before.toHostlb,
    toHostlbDropped: after.toHostlbDropped - before.toHostlbDropped,
    fromHostlb: after.fromHostlb - before.fromHostlb,
    fromHostlbDropped: after.fromHostlbDropped - before.fromHostlbDropped,
  };
}

// ---- hostlb -------------------------------------------------------------------

interface HostlbProcess {
  child: ChildProcess;
  dataplane: Dataplane;
  /** The admin API's unix socket (the default, <stateDir>/admin.sock). */
  socket: string;
  /** Every stderr line so far. */
  lines: string[];
}

function isStartedEvent(line: string): boolean {
  try {
    return (JSON.parse(line) as { event?: unknown }).event === 'started';
  } catch {
    return false;
  }
}

/**
 * Starts hostlb in the server namespace with the data plane `dataplane`; the
 * rest of the configuration is the same for both. Each data plane gets its own
 * state directory (journal, admin socket), so one run's leftovers cannot be
 * adopted by the next.
 */
async function startHostlb(sandbox: NetnsSandbox, server: Namespace, dir: string, dataplane: Dataplane): Promise<HostlbProcess> {
  const stateDir = join(dir, `hostlb-state-${dataplane}`);
  mkdirSync(stateDir, { recursive: true });
  const configFile = join(dir, `hostlb-${dataplane}.yaml`);
  writeFileSync(configFile, `device: ${DEVICE}
dataplane: ${dataplane}
${dataplane === 'netfilter' ? `netfilter: { queue: ${NF_QUEUE} }\n` : ''}stateDir: ${stateDir}
table: { capacity: 262144 }
clusters:
  - address: ${CLUSTER}
    ports:
      - port: ${CLUSTER_PORT}
        protocol: tcp
        scheduler: rr
        daemons:
${DAEMONS.map((d) => `          - { address: ${d}:${DAEMON_PORT} }`).join('\n')}
`);
  const child = sandbox.spawn(server, [process.execPath, HOSTLB_MAIN, 'start', '--config', configFile], { cwd: REPO });
  const lines: string[] = [];
  let partial = '';
  let started = false;
  let notify: () => void = () => {};
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      if (isStartedEvent(line)) {
        started = true;
        notify();
      }
    }
  });
  // stdout is not part of hostlb's protocol, but keep it so nothing is lost.
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => lines.push(...chunk.split('\n').filter((l) => l !== '').map((l) => `stdout: ${l}`)));
  const ready = new Promise<void>((resolve) => (notify = resolve));
  const exited = once(child, 'exit').then(() => 'exited' as const);
  const outcome = await Promise.race([ready.then(() => 'started' as const), exited, sleep(15_000).then(() => 'timeout' as const)]);
  if (!started) {
    await stopChild(child);
    throw new Error(`hostlb (dataplane ${dataplane}) did not start (${outcome === 'exited' ? `exited with ${child.exitCode ?? child.signalCode}` : 'no "started" line within 15 s'}); stderr:\n${[...lines, partial].join('\n')}`);
  }
  return { child, dataplane, socket: join(stateDir, 'admin.sock'), lines };
}

interface AdminCounters {
  packets: { in: number; out: number };
  drops: Record<string, number>;
  link: { read: number; written: number; refused: number } | null;
  daemons: Record<string, { newFlows: number; activeFlows: number }>;
}

interface AdminStatus {
  /** capacity is null with the netfilter data plane (conntrack holds the flows). */
  table: { records: number; capacity: number | null; evictions: number };
  activeFlows: number;
}

/** GET `path` from hostlb's admin API on its unix socket; rejects on any failure. */
async function adminGet<T>(socket: string, path: string): Promise<T> {
  return JSON.parse(await adminText(socket, path)) as T;
}

/** GET `path` from hostlb's admin API, the body as text; rejects on any failure. */
function adminText(socket: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body}`));
        else resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 3 s`)));
    req.on('error', reject);
    req.end();
  });
}

async function readCounters(socket: string): Promise<AdminCounters | string> {
  return adminGet<AdminCounters>(socket, '/v1/counters').catch((e: Error) => `admin API: ${e.message}`);
}

/** One line: what hostlb counted between two snapshots, and its table at the end. */
async function describeHostlbRun(socket: string, before: AdminCounters | string, after: AdminCounters | string): Promise<string> {
  if (typeof before === 'string') return before;
  if (typeof after === 'string') return after;
  const drops = Object.entries(after.drops).map(([k, v]) => [k, v - (before.drops[k] ?? 0)] as const).filter(([, v]) => v !== 0);
  const link = after.link && before.link ? `link read ${after.link.read - before.link.read}, written ${after.link.written - before.link.written}, refused ${after.link.refused - before.link.refused}` : 'link -';
  const perDaemon = Object.entries(after.daemons).map(([k, v]) => `${k.split(' ').pop()}=${v.newFlows - (before.daemons[k]?.newFlows ?? 0)}`).join(' ');
  const status = await adminGet<AdminStatus>(socket, '/v1/status').then(
    (st) => st.table.capacity === null
      ? `${st.table.records} flows in conntrack, ${st.activeFlows} active flows`
      : `table ${st.table.records}/${st.table.capacity} records (${st.table.evictions} evictions), ${st.activeFlows} active flows`,
    (e: Error) => `status: ${e.message}`,
  );
  // The netfilter data plane forwards no packet itself: no packet or link counts to show.
  const packets = after.link === null && before.link === null ? '' : `packets in ${after.packets.in - before.packets.in} out ${after.packets.out - before.packets.out}; ${link}; `;
  return `${packets}drops ${drops.length === 0 ? 'none' : drops.map(([k, v]) => `${k}=${v}`).join(' ')}; new flows per daemon ${perDaemon}; at the end ${status}`;
}

/** The netfilter data plane's counters from GET /metrics. */
interface NetfilterMetrics {
  verdicts: { daemon: number; rejected: number; unparsed: number };
  events: number;
  overruns: number;
}

async function readNetfilterMetrics(socket: string): Promise<NetfilterMetrics | string> {
  try {
    const m = parsePrometheus(await adminText(socket, '/metrics'));
    const get = (key: string): number => m.get(key) ?? Number.NaN;
    return {
      verdicts: {
        daemon: get('hostlb_queue_verdicts_total{outcome="daemon"}'),
        rejected: get('hostlb_queue_verdicts_total{outcome="rejected"}'),
        unparsed: get('hostlb_queue_verdicts_total{outcome="unparsed"}'),
      },
      events: get('hostlb_conntrack_events_total'),
      overruns: get('hostlb_conntrack_event_overruns_total'),
    };
  } catch (e) {
    return `metrics: ${(e as Error).message}`;
  }
}

/**
 * One line: hostlb's verdicts and conntrack events over a run, set against the
 * kernel's count of queued packets and the new flows hostlb heard of. Flows
 * beyond the verdicts were not decided by hostlb: the queue was full or
 * unbound (fail-open, --queue-bypass) and the kernel-side hash picked.
 */
function describeNetfilterRun(before: NetfilterMetrics | string, after: NetfilterMetrics | string, queue: QueueStats | undefined, newFlows: number, cpuSeconds: number): string {
  if (typeof before === 'string') return before;
  if (typeof after === 'string') return after;
  const daemon = after.verdicts.daemon - before.verdicts.daemon;
  const rejected = after.verdicts.rejected - before.verdicts.rejected;
  const unparsed = after.verdicts.unparsed - before.verdicts.unparsed;
  const events = after.events - before.events;
  const decided = daemon + rejected + unparsed;
  // Per new flow only when new flows dominate hostlb's work (new-conn); with a handful of flows its timers would.
  const perFlow = newFlows >= 1000 ? `, ${(events / newFlows).toFixed(1)} events and ${((cpuSeconds * 1e6) / newFlows).toFixed(0)} µs of hostlb CPU per new flow` : '';
  const kernel = queue
    ? `; kernel queued ${queue.queued} packets (${queue.queueDropped} dropped: queue full, ${queue.userDropped} dropped: socket full, ${queue.waiting} waiting at the end)`
    : '; queue counters: -';
  const undecided = newFlows > decided ? `; ${newFlows - decided} new flows NOT decided by hostlb (fail-open or bypass: the kernel-side hash picked)` : '';
  return `verdicts daemon ${daemon}, rejected ${rejected}, unparsed ${unparsed}${kernel}; conntrack events ${events}, overruns ${after.overruns - before.overruns}; new flows ${newFlows}${perFlow}${undecided}`;
}

function newFlowTotal(before: AdminCounters | string, after: AdminCounters | string): number {
  if (typeof before === 'string' || typeof after === 'string') return Number.NaN;
  return Object.entries(after.daemons).reduce((sum, [k, v]) => sum + v.newFlows - (before.daemons[k]?.newFlows ?? 0), 0);
}

// ---- HAProxy --------------------------------------------------------------------

/**
 * HAProxy in TCP mode, round robin over the same nginx daemons, listening on
 * the cluster address and port in the server namespace. Unlike hostlb and
 * DNAT it is a proxy: it ends the client's TCP connection and opens its own to
 * the daemon, so the daemons see HAProxy's address (the server namespace's),
 * not the client's, and every request crosses two TCP connections.
 * nbthread: one thread per CPU, HAProxy's own default, written out.
 */
function haproxyConfig(): string {
  return `global
  maxconn 4096
  nbthread ${cpus().length}

defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s

frontend cluster
  bind ${CLUSTER}:${CLUSTER_PORT}
  default_backend daemons

backend daemons
  balance roundrobin
${DAEMONS.map((d, i) => `  server d${i + 1} ${d}:${DAEMON_PORT}`).join('\n')}
`;
}

interface HaproxyProcess {
  child: ChildProcess;
  /** Every stderr and stdout line so far. */
  lines: string[];
}

/** Starts `haproxy -f <cfg> -db` in the server namespace and waits (at most 10 s) until it answers on the cluster address. */
async function startHaproxy(sandbox: NetnsSandbox, server: Namespace, dir: string): Promise<HaproxyProcess> {
  const prefix = join(dir, 'haproxy');
  mkdirSync(prefix, { recursive: true });
  const configFile = join(prefix, 'haproxy.cfg');
  writeFileSync(configFile, haproxyConfig());
  const child = sandbox.spawn(server, ['haproxy', '-f', configFile, '-db'], { cwd: prefix });
  const lines: string[] = [];
  const keep = (chunk: string): void => void lines.push(...chunk.split('\n').filter((l) => l !== ''));
  child.stderr?.setEncoding('utf8').on('data', keep);
  child.stdout?.setEncoding('utf8').on('data', keep);
  const process_: HaproxyProcess = { child, lines };
  const url = `http://${CLUSTER}:${CLUSTER_PORT}/`;
  const deadline = Date.now() + 10_000;
  let last = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    const outcome = await curlOnce(sandbox, server, url);
    if (outcome.ok) return process_;
    last = outcome.detail;
    await sleep(100);
  }
  await stopChild(child);
  throw new Error(`haproxy did not answer on ${url} (${child.exitCode !== null || child.signalCode !== null ? `exited with ${child.exitCode ?? child.signalCode}` : 'within 10 s'}): ${last}; haproxy output:\n${lines.join('\n') || '(empty)'}`);
}

// ---- wrk ----------------------------------------------------------------------

/** The namespaces of one benchmark run and what counts as its own CPU use. */
interface Bench {
  sandbox: NetnsSandbox;
  client: Namespace;
  server: Namespace;
  ownNetns: Set<number>;
}

/** What a path goes through besides the kernel, and so what to read around each run. */
interface Target {
  /** hostlb, when the path goes through it. */
  hostlb: HostlbProcess | null;
  /** The balancer's process (hostlb or HAProxy), for its CPU use. */
  process: { name: string; pid: number } | null;
  /** The path relies on conntrack in the server namespace (nftables DNAT, the netfilter data plane). */
  conntrack: boolean;
}

const NO_TARGET: Target = { hostlb: null, process: null, conntrack: false };

/** A reader of files inside `ns` (its /proc/net and /proc/sys); null when the file cannot be read. */
function nsReader(ns: Namespace): (path: string) => string | null {
  return (path) => {
    try {
      return ns.exec(['cat', path]);
    } catch {
      return null;
    }
  };
}

async function measure(bench: Bench, path: PathName, mode: Mode, url: string, target: Target): Promise<Measurement> {
  const { sandbox, client, server } = bench;
  const { hostlb } = target;
  const netfilter = hostlb?.dataplane === 'netfilter';
  const readServer = nsReader(server);
  progress(`${path} ${mode}: wrk -t${THREADS} -c${CONNECTIONS} -d${SECONDS}s ${url}`);
  const clientBefore = tcpCounters(client);
  const serverBefore = tcpCounters(server);
  const tunBefore = hostlb?.dataplane === 'tun' ? tunCounters(server) : null;
  const conntrackBefore = target.conntrack ? conntrackStats(readServer) : null;
  const queueBefore = netfilter ? queueStats(readServer, NF_QUEUE) : null;
  const countersBefore = hostlb ? await readCounters(hostlb.socket) : null;
  const metricsBefore = hostlb && netfilter ? await readNetfilterMetrics(hostlb.socket) : null;
  const pid = target.process?.pid;
  const cpuBefore = pid !== undefined ? processCpuSeconds(pid) : 0;
  const loopBefore = hostlb && pid !== undefined ? mainThreadSchedSeconds(pid) : null;
  const own = new Set([process.pid]);
  const othersBefore = otherProcessesCpu(bench.ownNetns, own);
  const started = Date.now();
  const argv = ['wrk', `-t${THREADS}`, `-c${CONNECTIONS}`, `-d${SECONDS}s`, ...(mode === 'new-conn' ? ['-H', 'Connection: close'] : []), url];
  const r = await sandbox.run(client, argv, { timeoutMs: (SECONDS + 15) * 1000 });
  const wallSeconds = (Date.now() - started) / 1000;
  const othersAfter = otherProcessesCpu(bench.ownNetns, own);
  const otherCpus = cpuSecondsBetween(othersBefore, othersAfter) / wallSeconds;
  const otherTop = otherCpus >= NOISY_CPUS
    ? topConsumers(othersBefore, othersAfter, 3).map((p) => `${p.name}(${p.pid}) ${(p.seconds / wallSeconds).toFixed(2)}`).join(', ')
    : undefined;
  const cpuSeconds = pid !== undefined ? processCpuSeconds(pid) - cpuBefore : Number.NaN;
  const loopAfter = hostlb && pid !== undefined ? mainThreadSchedSeconds(pid) : null;
  const hostlbLoop = loopBefore && loopAfter ? { running: (loopAfter.running - loopBefore.running) / wallSeconds, waiting: (loopAfter.waiting - loopBefore.waiting) / wallSeconds } : undefined;
  const tcp = { client: tcpDelta(tcpCounters(client), clientBefore), server: tcpDelta(tcpCounters(server), serverBefore) };
  const result: Measurement = { path, mode, report: parseWrk(r.stdout), tcp, otherCpus, otherTop, hostlbLoop };
  if (target.process !== null) {
    result.balancerName = target.process.name;
    result.balancerCpus = cpuSeconds / wallSeconds;
  }
  if (tunBefore !== null) result.tun = tunDelta(tunCounters(server), tunBefore);
  if (conntrackBefore !== null) {
    const after = conntrackStats(readServer);
    if (after !== null) result.conntrack = conntrackDelta(after, conntrackBefore);
  }
  if (queueBefore !== null) {
    const after = queueStats(readServer, NF_QUEUE);
    if (after !== null) result.queue = queueDelta(after, queueBefore);
  }
  if (hostlb !== null && countersBefore !== null) {
    const countersAfter = await readCounters(hostlb.socket);
    result.hostlb = await describeHostlbRun(hostlb.socket, countersBefore, countersAfter);
    if (metricsBefore !== null) {
      result.netfilter = describeNetfilterRun(metricsBefore, await readNetfilterMetrics(hostlb.socket), result.queue, newFlowTotal(countersBefore, countersAfter), cpuSeconds);
    }
  }
  if (result.report === null) {
    result.error = `wrk ${r.timedOut ? 'was killed at its time limit' : `exited with ${r.code ?? r.signal}`}: ${(r.stdout + r.stderr).trim() || '(no output)'}`;
  }
  await sleep(PAUSE_MS);
  return result;
}

// ---- the run ------------------------------------------------------------------

/** One hostlb process's log and how it ended. */
interface HostlbRun {
  dataplane: Dataplane;
  lines: string[];
  exit: string;
}

interface Outcome {
  measurements: Measurement[];
  hostlbRuns: HostlbRun[];
  haproxyLog: string[];
  notes: string[];
}

/** Processes and host changes alive now, for the teardown (also on failure and on a signal). */
interface Live {
  nginx: NginxDaemon[];
  hostlb: HostlbProcess | null;
  haproxy: HaproxyProcess | null;
}

/** Stops hostlb by its PID (SIGTERM: it undoes its host changes) and keeps its log. */
async function stopHostlb(live: Live, outcome: Outcome): Promise<void> {
  const hostlb = live.hostlb;
  if (hostlb === null) return;
  const exitedEarly = hostlb.child.exitCode !== null || hostlb.child.signalCode !== null;
  await stopChild(hostlb.child);
  live.hostlb = null;
  const exit = hostlb.child.exitCode !== null ? `exit code ${hostlb.child.exitCode}` : `signal ${hostlb.child.signalCode}`;
  outcome.hostlbRuns.push({ dataplane: hostlb.dataplane, lines: hostlb.lines, exit: exitedEarly ? `hostlb EXITED BY ITSELF before the benchmark stopped it, ${exit}` : `stopped with SIGTERM, ${exit}` });
}

/**
 * After the netfilter data plane stopped: its iptables chain, nft table and
 * the cluster's local route must be gone. Whatever is left is reported and
 * removed, so it cannot steer the next path's packets (the fallback hash
 * would DNAT HAProxy's connections straight to the daemons).
 */
function removeNetfilterLeftovers(server: Namespace, outcome: Outcome): void {
  const left: string[] = [];
  const table = `hostlb_${DEVICE}`;
  const chain = `HOSTLB-${DEVICE}`;
  const tryExec = (argv: string[]): boolean => {
    try {
      server.exec(argv);
      return true;
    } catch {
      return false;
    }
  };
  if (tryExec(['nft', 'list', 'table', 'inet', table])) {
    left.push(`nft table inet ${table}`);
    tryExec(['nft', 'delete', 'table', 'inet', table]);
  }
  const mangle = tryExec(['iptables', '-w', '5', '-t', 'mangle', '-S']) ? server.exec(['iptables', '-w', '5', '-t', 'mangle', '-S']) : '';
  if (mangle.includes(chain)) {
    left.push(`iptables mangle chain ${chain} or jumps to it`);
    for (const hook of ['PREROUTING', 'OUTPUT']) {
      for (let i = 0; i < 8 && tryExec(['iptables', '-w', '5', '-t', 'mangle', '-D', hook, '-j', chain]); i++);
    }
    tryExec(['iptables', '-w', '5', '-t', 'mangle', '-F', chain]);
    tryExec(['iptables', '-w', '5', '-t', 'mangle', '-X', chain]);
  }
  if (server.ip('route', 'show', 'table', 'local', `${CLUSTER}/32`).trim() !== '') {
    left.push(`local route for ${CLUSTER}`);
    tryExec(['ip', 'route', 'del', 'local', `${CLUSTER}/32`, 'dev', 'lo', 'table', 'local']);
  }
  if (left.length > 0) outcome.notes.push(`note: hostlb (dataplane netfilter) left behind after its stop: ${left.join('; ')} (removed by the benchmark)`);
}

async function run(sandbox: NetnsSandbox, dir: string, live: Live, haproxyInstalled: boolean): Promise<Outcome> {
  const outcome: Outcome = { measurements: [], hostlbRuns: [], haproxyLog: [], notes: [] };
  const client = sandbox.namespace();
  const server = sandbox.namespace();
  sandbox.veth(client, server, { a: `${CLIENT_ADDR}/24`, b: `${SERVER_ADDR}/24`, aName: 'cli0', bName: 'srv0' });
  for (const source of Object.values(CLIENT_SOURCE)) client.ip('addr', 'add', `${source}/24`, 'dev', 'cli0');
  client.ip('route', 'add', '198.18.2.0/24', 'via', SERVER_ADDR);
  for (const d of DAEMONS) server.ip('addr', 'add', `${d}/32`, 'dev', 'lo');
  const bench: Bench = { sandbox, client, server, ownNetns: new Set([netnsInode(client.name), netnsInode(server.name)]) };

  DAEMONS.forEach((address, i) => live.nginx.push(startNginx(sandbox, server, dir, address, i + 1)));
  for (const [i, address] of DAEMONS.entries()) await waitForDaemon(sandbox, server, live.nginx[i], address);
  progress(`namespaces ${client.name} (client ${CLIENT_ADDR}; sources ${Object.entries(CLIENT_SOURCE).map(([p, a]) => `${p} ${a}`).join(', ')}) and ${server.name} (server ${SERVER_ADDR}, nginx on ${DAEMONS.join(', ')}:${DAEMON_PORT}) ready`);

  const clusterUrl = `http://${CLUSTER}:${CLUSTER_PORT}/`;
  const directUrl = `http://${DAEMONS[0]}:${DAEMON_PORT}/`;
  const failPath = (path: PathName, error: string, skipped = false): void => {
    for (const mode of MODES) outcome.measurements.push({ path, mode, report: null, error, skipped, otherCpus: Number.NaN });
  };
  const measurePath = async (path: PathName, url: string, balanced: boolean, target: Target): Promise<void> => {
    if (!SELECTED.has(path)) {
      failPath(path, 'not in BENCH_PATHS', true);
      return;
    }
    const destination = balanced ? `${CLUSTER}/32` : '198.18.2.0/24';
    client.ip('route', 'replace', destination, 'via', SERVER_ADDR, 'src', CLIENT_SOURCE[path]);
    const failure = await checkPath(sandbox, client, url, balanced);
    if (failure !== null) {
      progress(`${path}: path check failed: ${failure}`);
      failPath(path, `path check failed: ${failure}`);
      return;
    }
    for (const mode of MODES) outcome.measurements.push(await measure(bench, path, mode, url, target));
  };

  // (a) Direct to one daemon. Both daemons must answer directly first, so a
  // balanced path that reaches one daemon only is the balancer's fault.
  for (const address of DAEMONS) {
    const failure = await checkPath(sandbox, client, `http://${address}:${DAEMON_PORT}/`, false);
    if (failure !== null) throw new Error(`the client cannot reach daemon ${address} directly: ${failure}`);
  }
  await measurePath('direct', directUrl, false, NO_TARGET);

  // (b) Kernel nftables DNAT in the server namespace, alternating daemons per connection.
  const ruleset = `table ip lb {
  chain pre {
    type nat hook prerouting priority -100;
    ip daddr ${CLUSTER} tcp dport ${CLUSTER_PORT} dnat ip to numgen inc mod 2 map { ${DAEMONS.map((d, i) => `${i} : ${d} . ${DAEMON_PORT}`).join(', ')} }
  }
}
`;
  server.exec(['nft', '-f', '-'], { input: ruleset });
  try {
    await measurePath('nftables', clusterUrl, true, { ...NO_TARGET, conntrack: true });
  } finally {
    server.exec(['nft', 'delete', 'table', 'ip', 'lb']);
  }

  // (c), (d) hostlb in the server namespace: the TUN data plane, then the
  // netfilter data plane, each started the same way from the same configuration
  // but for `dataplane`, and stopped (SIGTERM: it undoes its host changes)
  // before the next path.
  for (const dataplane of ['tun', 'netfilter'] as const) {
    const path = HOSTLB_PATH[dataplane];
    if (!SELECTED.has(path)) {
      failPath(path, 'not in BENCH_PATHS', true);
      continue;
    }
    try {
      live.hostlb = await startHostlb(sandbox, server, dir, dataplane);
    } catch (e) {
      const message = (e as Error).message;
      progress(message);
      failPath(path, message.split('\n')[0]);
      outcome.notes.push(message);
      continue;
    }
    progress(`hostlb (dataplane ${dataplane}) started (pid ${live.hostlb.child.pid})`);
    try {
      await measurePath(path, clusterUrl, true, { hostlb: live.hostlb, process: { name: 'hostlb', pid: live.hostlb.child.pid! }, conntrack: dataplane === 'netfilter' });
    } finally {
      await stopHostlb(live, outcome);
    }
    if (dataplane === 'netfilter') removeNetfilterLeftovers(server, outcome);
  }

  // (e) HAProxy in TCP mode on the cluster address in the server namespace,
  // which must own that address for HAProxy to bind it.
  if (!haproxyInstalled || !SELECTED.has('haproxy')) {
    failPath('haproxy', haproxyInstalled ? 'not in BENCH_PATHS' : 'haproxy not installed', true);
    return outcome;
  }
  server.ip('addr', 'add', `${CLUSTER}/32`, 'dev', 'lo');
  try {
    try {
      live.haproxy = await startHaproxy(sandbox, server, dir);
    } catch (e) {
      const message = (e as Error).message;
      progress(message);
      failPath('haproxy', message.split('\n')[0]);
      outcome.notes.push(message);
    }
    if (live.haproxy !== null) {
      progress(`haproxy started (pid ${live.haproxy.child.pid})`);
      await measurePath('haproxy', clusterUrl, true, { hostlb: null, process: { name: 'haproxy', pid: live.haproxy.child.pid! }, conntrack: false });
    }
  } finally {
    const haproxy = live.haproxy;
    live.haproxy = null;
    if (haproxy !== null) {
      const exitedEarly = haproxy.child.exitCode !== null || haproxy.child.signalCode !== null;
      await stopChild(haproxy.child);
      if (exitedEarly) outcome.notes.push(`note: haproxy EXITED BY ITSELF before the benchmark stopped it (${haproxy.child.exitCode ?? haproxy.child.signalCode})`);
      outcome.haproxyLog = haproxy.lines;
    }
    server.ip('addr', 'del', `${CLUSTER}/32`, 'dev', 'lo');
  }
  return outcome;
}

// ---- report -------------------------------------------------------------------

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

function printLog(title: string, lines: string[]): void {
  if (lines.length === 0) return;
  console.log(`${title} (${lines.length} lines):`);
  const shown = lines.length <= 60 ? lines : [...lines.slice(0, 20), `... ${lines.length - 60} lines left out ...`, ...lines.slice(-40)];
  for (const line of shown) console.log(`  ${line}`);
}

const PATH_WIDTH = Math.max(...PATHS.map((p) => p.length));

function printTable(measurements: Measurement[]): void {
  const header = [pad('path', PATH_WIDTH), pad('mode', 11), pad('req/s', 10, true), pad('requests', 10, true), pad('latency avg/max', 18, true), pad('sock err c/r/w/t', 18, true), pad('non-2xx', 8, true), pad('retrans c/s', 12, true), pad('others cpu', 10, true)];
  console.log(header.join('  '));
  const legend = `(latency from wrk; retrans = TCP segments retransmitted in the client/server namespace; others cpu = CPUs used meanwhile by processes outside the benchmark, at least, of ${cpus().length})`;
  for (const path of PATHS) {
    for (const mode of MODES) {
      const m = measurements.find((x) => x.path === path && x.mode === mode);
      if (m === undefined) continue;
      const r = m.report;
      if (r === null) {
        console.log(`${pad(path, PATH_WIDTH)}  ${pad(mode, 11)}  ${pad(m.skipped ? 'skipped' : 'error', 10, true)}  ${m.error ?? ''}`);
        continue;
      }
      const e = r.socketErrors;
      console.log([
        pad(path, PATH_WIDTH), pad(mode, 11), pad(r.requestsPerSec.toFixed(0), 10, true), pad(String(r.requests), 10, true),
        pad(Number.isNaN(r.latencyMs) ? '-' : `${r.latencyMs.toFixed(2)}/${r.latencyMaxMs.toFixed(1)} ms`, 18, true),
        pad(`${e.connect}/${e.read}/${e.write}/${e.timeout}`, 18, true), pad(String(r.non2xx), 8, true), pad(m.tcp ? `${m.tcp.client.retransSegs}/${m.tcp.server.retransSegs}` : '-', 12, true), pad(m.otherCpus.toFixed(2), 10, true),
      ].join('  '));
    }
  }
  console.log(legend);
  for (const m of measurements) {
    if (m.tcp === undefined || (m.tcp.client.retransSegs === 0 && m.tcp.server.retransSegs === 0 && m.tcp.server.listenOverflows === 0)) continue;
    console.log(`${m.path} ${m.mode}: client ${describeTcp(m.tcp.client)}; server ${describeTcp(m.tcp.server)}`);
  }
  const noisy = measurements.filter((m) => m.otherTop !== undefined);
  if (noisy.length > 0) {
    console.log(`note: ${noisy.length} of ${measurements.length} runs shared the ${cpus().length} CPUs with other work (others cpu >= ${NOISY_CPUS}); their figures are low by up to that share:`);
    for (const m of noisy) console.log(`  ${m.path} ${m.mode}: others ${m.otherCpus.toFixed(2)} CPUs, most: ${m.otherTop}`);
  }
  for (const m of measurements) {
    if (m.report === null) continue;
    if (m.balancerCpus !== undefined) {
      const loop = m.hostlbLoop ? `; its event-loop thread ran ${(m.hostlbLoop.running * 100).toFixed(0)}% of the time and waited for a CPU ${(m.hostlbLoop.waiting * 100).toFixed(0)}%` : '';
      console.log(`${m.path} ${m.mode}: ${m.balancerName} used ${(m.balancerCpus * 100).toFixed(0)}% of one CPU (all threads)${loop}`);
    }
    if (m.hostlb !== undefined) console.log(`${m.path} ${m.mode}: hostlb counters: ${m.hostlb}`);
    if (m.netfilter !== undefined) console.log(`${m.path} ${m.mode}: netfilter data plane: ${m.netfilter}`);
    if (m.conntrack !== undefined) console.log(`${m.path} ${m.mode}: server namespace ${describeConntrack(m.conntrack)}`);
    if (m.tun !== undefined) {
      const t = m.tun;
      console.log(`${m.path} ${m.mode}: ${DEVICE} kernel->hostlb ${t.toHostlb} packets (${t.toHostlbDropped} dropped: queue full), hostlb->kernel ${t.fromHostlb} packets (${t.fromHostlbDropped} dropped)`);
    }
  }
}

/** The figures, in the shape the header of this file promises. */
function finalLine(label: string, measurements: Measurement[], mode: Mode): string {
  const find = (path: PathName): Measurement | undefined => measurements.find((m) => m.path === path && m.mode === mode);
  const rate = (path: PathName): number | null => find(path)?.report?.requestsPerSec ?? null;
  const show = (path: PathName): string => {
    const v = rate(path);
    if (v !== null) return v.toFixed(0);
    return find(path)?.skipped ? 'skipped' : 'error';
  };
  const n = rate('nftables');
  const ratio = (path: PathName): string => {
    const v = rate(path);
    return v !== null && n !== null && n > 0 ? (v / n).toFixed(2) : 'n/a';
  };
  return `${label} netfilter ${show('hostlb-netfilter')} req/s, tun ${show('hostlb-tun')} req/s, nftables ${show('nftables')} req/s, haproxy ${show('haproxy')} req/s, direct ${show('direct')} req/s; `
    + `netfilter/nftables ${ratio('hostlb-netfilter')}, tun/nftables ${ratio('hostlb-tun')}, haproxy/nftables ${ratio('haproxy')}`;
}

// ---- main ---------------------------------------------------------------------

async function main(): Promise<number> {
  if (!hasRoot()) {
    console.error('bench:e2e needs root: it creates network namespaces, a TUN device, nftables and iptables rules (run it with sudo or as root).');
    return 1;
  }
  const unknown = [...SELECTED].filter((p) => !(PATHS as readonly string[]).includes(p));
  if (unknown.length > 0 || SELECTED.size === 0) {
    console.error(`bench:e2e: BENCH_PATHS names no path or unknown paths (${unknown.join(', ')}); known: ${PATHS.join(', ')}`);
    return 1;
  }
  if (!Number.isInteger(SECONDS) || SECONDS < 1) {
    console.error(`bench:e2e: BENCH_SECONDS must be a whole number of seconds >= 1, not ${JSON.stringify(process.env.BENCH_SECONDS)}`);
    return 1;
  }
  const versions = {
    nginx: toolVersion(['nginx', '-v']), wrk: toolVersion(['wrk', '--version']), curl: toolVersion(['curl', '--version']), nft: toolVersion(['nft', '--version']),
    iptables: toolVersion(['iptables', '--version']),
  };
  const missing = Object.entries(versions).filter(([, v]) => v === 'missing').map(([k]) => k);
  if (missing.length > 0) {
    console.error(`bench:e2e: ${missing.join(', ')} not found: install ${missing.join(' and ')} (Debian: nginx-light, wrk, curl, nftables, iptables)`);
    return 1;
  }
  // HAProxy is optional: without it its path is skipped, not failed.
  const haproxyVersion = toolVersion(['haproxy', '-v']);
  const haproxyInstalled = haproxyVersion !== 'missing';
  console.log(`setup: ${cpus().length} CPUs, Linux ${release()}, node ${process.version}; ${versions.nginx}; ${versions.wrk.replace(/ Copyright.*/, '')}; nft ${versions.nft}; ${versions.iptables}; ${haproxyInstalled ? haproxyVersion.replace(/ - https?:.*/, '') : 'haproxy missing'}`);
  if (!haproxyInstalled) console.log('note: haproxy not found: the HAProxy path is skipped (Debian: apt-get install haproxy)');
  console.log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} before the run (anything else running shares the same ${cpus().length} CPUs)`);
  console.log(`load: wrk -t${THREADS} -c${CONNECTIONS}, ${SECONDS} s per run (BENCH_SECONDS); new-conn sends "Connection: close"; 2 nginx daemons, 1 worker each; paths in this order: ${PATHS.join(', ')}`);

  const sandbox = new NetnsSandbox();
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-e2e-'));
  const live: Live = { nginx: [], hostlb: null, haproxy: null };
  const teardown = async (): Promise<void> => {
    // hostlb first, so it undoes its journal; nginx by its master, which stops its worker.
    // Deleting the namespaces then removes whatever rules, routes and devices are left.
    await stopChild(live.hostlb?.child ?? null);
    live.hostlb = null;
    await stopChild(live.haproxy?.child ?? null);
    live.haproxy = null;
    await Promise.all(live.nginx.map((d) => stopChild(d.child)));
    sandbox.cleanup();
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: cleaning up`);
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let outcome: Outcome;
  try {
    outcome = await run(sandbox, dir, live, haproxyInstalled);
  } catch (e) {
    await teardown();
    console.error(`bench:e2e: ${(e as Error).message}`);
    return 1;
  }
  await teardown();

  console.log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} after the run`);
  for (const note of outcome.notes) console.log(note);
  for (const r of outcome.hostlbRuns) printLog(`hostlb (dataplane ${r.dataplane}) stderr; ${r.exit}`, r.lines);
  printLog('haproxy output', outcome.haproxyLog);
  printTable(outcome.measurements);
  const failed = outcome.measurements.some((m) => m.report === null && m.skipped !== true);
  const troubled = outcome.measurements.filter((m) => m.report !== null && (socketErrorCount(m.report) > 0 || m.report.non2xx > 0));
  for (const m of troubled) console.log(`note: ${m.path} ${m.mode} had ${socketErrorCount(m.report!)} socket errors and ${m.report!.non2xx} error responses`);
  console.log(finalLine('e2e keep-alive:', outcome.measurements, 'keep-alive'));
  console.log(finalLine('e2e new-conn:  ', outcome.measurements, 'new-conn'));
  return failed ? 1 : 0;
}

process.exitCode = await main();
