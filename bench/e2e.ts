// bench:e2e — HTTP and bulk TCP through seven paths between two network
// namespaces: wrk and iperf3 in a client namespace, two nginx daemons (and an
// iperf3 server on the first daemon's address) in a server namespace, reached
// directly (one daemon), through kernel nftables DNAT, through hostlb's TUN
// data plane, through hostlb's netfilter data plane (NFQUEUE verdicts,
// nftables DNAT by mark, conntrack), through hostlb's socket data plane (an
// sk_lookup program hands each new connection to the daemon's own listening
// socket: no NAT, no conntrack), through SO_REUSEPORT (one nginx, two workers,
// each with its own socket on the cluster address; the kernel picks: the
// baseline of a PM2 or cluster-module set-up) and through HAProxy in TCP mode;
// each with keep-alive, with a new connection per request, and in bulk (one
// iperf3 stream, client to daemon), with the same wrk and iperf3 parameters,
// in the same run and the same namespaces. Needs root. Prints its figures last
// (ratios against nftables DNAT, and for the socket plane against reuseport
// and, in bulk, direct, all measured in the same run):
//   e2e bulk:       netfilter <G> Gbit/s, tun <G> Gbit/s, nftables <G> Gbit/s, haproxy <G> Gbit/s, direct <G> Gbit/s; netfilter/nftables <x.xx>, tun/nftables <x.xx>, haproxy/nftables <x.xx>; socket <G> Gbit/s, reuseport <G> Gbit/s; socket/nftables <x.xx>, socket/reuseport <x.xx>, socket/direct <x.xx>
//   e2e keep-alive: netfilter <R> req/s, tun <R> req/s, nftables <R> req/s, haproxy <R> req/s, direct <R> req/s; netfilter/nftables <x.xx>, tun/nftables <x.xx>, haproxy/nftables <x.xx>; socket <R> req/s, reuseport <R> req/s; socket/nftables <x.xx>, socket/reuseport <x.xx>
//   e2e new-conn:   (the same as keep-alive)
// The keep-alive and new-conn lines open with the five paths' figures and
// ratios as they were before the socket and reuseport paths came, and stay the
// last two lines, so readers of the older output read the new one.
// Bulk goes to one daemon only, behind every balancer: iperf3's control and
// data connections must meet the same server, and a per-connection balancer
// would split them. Reuseport's bulk stream meets one of its listeners either
// way: an iperf3 server on the cluster address stands for it.
// hostlb's HTTP port runs its default scheduler (wlc; BENCH_SCHEDULER names another), as a user's would: with
// the kernel's own counts on the socket plane the 32 keep-alive connections
// split 16/16 over the two daemons, where a hash (rr's buckets, or
// SO_REUSEPORT's pick) may leave one daemon with more.
// A benchmark, not a test: it never fails on speed. It exits 1 when set-up
// fails or a path cannot carry requests, and prints "error" for that path.
// Without haproxy installed the HAProxy path is skipped ("skipped"), with a
// note; without iperf3 every bulk run is. BENCH_SECONDS (default 10) sets each
// wrk and iperf3 run's length; BENCH_PATHS (comma-separated path names,
// default all) measures only some paths, the others show as "skipped";
// BENCH_MODES (keep-alive, new-conn, bulk; default all) likewise for modes;
// BENCH_SCHEDULER runs hostlb's HTTP port on another scheduler;
// BENCH_ROUNDS (default 3) runs every path that many times, every other round
// in reverse order, so a machine that speeds up or slows down during the
// benchmark favours no path: each figure is the median over the rounds, and
// each ratio the median of the ratios within a round. Three, not two: of two
// rounds the median is their mean, which one outlier drags (on this VM one
// round of a path now and then runs half again as fast as the others).
//
// Order (each odd round; even rounds reversed): direct, reuseport,
// hostlb-socket, nftables, hostlb-tun, hostlb-netfilter, haproxy (RUN_ORDER:
// the two paths of each ratio side by side); keep-alive, new-conn, then bulk in each. Each path has
// its own client source address (see CLIENT_SOURCE), and each balancer is gone
// (rules deleted, process stopped, bpffs unmounted) before the next starts.
// hostlb with the socket plane runs under `nsenter --net` instead of `ip netns
// exec`, which would give it a mount namespace of its own: its bpffs is
// mounted where the benchmark can see it and unmount it if hostlb did not.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasRoot, NetnsSandbox, type Namespace } from '../test/support/netns.js';
import { parseMountInfo, unmountBpffs } from '../src/net/apply.js';
import { BPFFS_ROOT } from '../src/net/net-step.js';
import { cpuSecondsBetween, machineIdleSeconds, mainThreadSchedSeconds, netnsInode, otherProcessesCpu, processCpuSeconds, topConsumers } from './support/cpu.js';
import { conntrackDelta, conntrackStats, describeConntrack, parsePrometheus, queueDelta, queueStats, type ConntrackStats, type QueueStats } from './support/netfilter-stats.js';
import { parseIperf, type IperfReport } from './support/iperf.js';
import { SCHEDULER_NAMES } from '../src/dispatch/schedulers/scheduler.js';
import { parseWrk, socketErrorCount, type WrkReport } from './support/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
/** Rounds over every path (BENCH_ROUNDS, default 3), every other one in reverse order; figures are medians over rounds. */
const ROUNDS = Math.max(1, Math.floor(Number(process.env.BENCH_ROUNDS ?? 3)));
/** BENCH_SCHEDULER=rr gives hostlb's HTTP port that scheduler instead of its default (wlc), to measure what the pick costs. */
const SCHEDULER = process.env.BENCH_SCHEDULER;
/** BENCH_TUN_OFFLOADS=false runs the tun plane without offloads (tun.offloads), to measure what they bring. */
const TUN_OFFLOADS = process.env.BENCH_TUN_OFFLOADS !== 'false';
/** BENCH_TUN_IO_URING=false runs the tun plane with one system call per packet (tun.ioUring), to measure what batching brings. */
const TUN_IO_URING = process.env.BENCH_TUN_IO_URING !== 'false';
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
/** iperf3's port, on the first daemon's address and on the cluster address: bulk runs go there. */
const BULK_PORT = 5201;
/** nginx workers of the reuseport path, each with its own listening socket on the cluster address. */
const REUSEPORT_WORKERS = 2;
const DEVICE = 'hlb0';
/** NFQUEUE queue of the netfilter data plane (hostlb's default, written out so the bench can read its counters). */
const NF_QUEUE = 4242;

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const HOSTLB_MAIN = join(REPO, 'dist/src/control/cli/main.js');

/** In the order they are measured. */
const PATHS = ['direct', 'nftables', 'hostlb-tun', 'hostlb-netfilter', 'hostlb-socket', 'reuseport', 'haproxy'] as const;
/**
 * The order paths run in within a round: each ratio's two paths next to each
 * other (socket beside SO_REUSEPORT and nftables, tun beside nftables) or one
 * apart (socket and direct for bulk, netfilter and nftables), so a ratio
 * compares figures taken a minute apart rather than several: on a shared VM
 * the machine's speed drifts over minutes.
 */
const RUN_ORDER: readonly PathName[] = ['direct', 'reuseport', 'hostlb-socket', 'nftables', 'hostlb-tun', 'hostlb-netfilter', 'haproxy'];
/** wrk's modes, then iperf3's, in the order each path runs them. */
const WRK_MODES = ['keep-alive', 'new-conn'] as const;
const MODES = [...WRK_MODES, 'bulk'] as const;
type PathName = (typeof PATHS)[number];
type WrkMode = (typeof WRK_MODES)[number];
type Mode = (typeof MODES)[number];
type Dataplane = 'tun' | 'netfilter' | 'socket';
/** BENCH_PATHS=nftables,hostlb-netfilter measures only those paths (the others show as "skipped"); default all. */
const SELECTED = new Set<string>((process.env.BENCH_PATHS ?? PATHS.join(',')).split(',').map((p) => p.trim()).filter((p) => p !== ''));
/** BENCH_MODES=new-conn measures only those modes (keep-alive, new-conn, bulk; the others show as "skipped"); default all. */
const SELECTED_MODES = new Set<string>((process.env.BENCH_MODES ?? MODES.join(',')).split(',').map((m) => m.trim()).filter((m) => m !== ''));
const HOSTLB_PATH: Record<Dataplane, PathName> = { tun: 'hostlb-tun', netfilter: 'hostlb-netfilter', socket: 'hostlb-socket' };

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
  'hostlb-socket': '198.18.0.16', reuseport: '198.18.0.17',
};

/**
 * One run: wrk's report (keep-alive, new-conn) or iperf3's (bulk), null when
 * there is none, and what was counted around it.
 */
type Measurement = RunFigures & ({ mode: WrkMode; report: WrkReport | null } | { mode: 'bulk'; report: IperfReport | null });

interface RunFigures {
  path: PathName;
  /** Which round (0-based) of BENCH_ROUNDS the run belongs to (set when it is recorded). */
  round?: number;
  /** Why there is no report (path check failed, wrk or iperf3 failed, or the path was skipped). */
  error?: string;
  /** True when the run was left out on purpose (haproxy or iperf3 not installed, not in BENCH_PATHS): no report, and not a failure. */
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
  /** CPU nobody used during the run, in CPUs (/proc/stat): the most more threads could have added. */
  idleCpus?: number;
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
  /** The socket data plane's lookups over the run (GET /metrics), or why they could not be read. */
  socket?: string;
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

// ---- nginx and iperf3 --------------------------------------------------------

/** One nginx: where it listens, how many workers it runs, what it answers in X-Daemon. */
interface NginxSpec {
  /** Its directory under the run's, e.g. "nginx-1". */
  name: string;
  /** The listen directive's parameters, e.g. "198.18.2.1:8080" or "198.18.100.1:80 reuseport". */
  listen: string;
  workers: number;
  /** X-Daemon: the daemon's index, or "$pid" to tell one nginx's workers apart. */
  daemonHeader: string;
}

function nginxConfig(prefix: string, spec: NginxSpec): string {
  // keepalive_requests: nginx closes a keep-alive connection after 1000
  // requests by default, which would mix new connections into keep-alive runs.
  return `daemon off;
worker_processes ${spec.workers};
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
    listen ${spec.listen};
    location / {
      add_header X-Daemon ${spec.daemonHeader};
      return 200 "ok\\n";
    }
  }
}
`;
}

/** A daemon nginx: one worker on its own address, X-Daemon its index (1, 2). */
function daemonNginx(address: string, index: number): NginxSpec {
  return { name: `nginx-${index}`, listen: `${address}:${DAEMON_PORT}`, workers: 1, daemonHeader: String(index) };
}

/**
 * The reuseport path's nginx: REUSEPORT_WORKERS workers on the cluster
 * address. With `reuseport` each worker gets a socket of its own in one
 * SO_REUSEPORT group, and the kernel hashes each new connection to one of
 * them; X-Daemon is the worker's pid, so a check sees that both answered.
 */
const REUSEPORT_NGINX: NginxSpec = { name: 'nginx-reuseport', listen: `${CLUSTER}:${CLUSTER_PORT} reuseport`, workers: REUSEPORT_WORKERS, daemonHeader: '$pid' };

interface NginxDaemon {
  child: ChildProcess;
  stderr: () => string;
}

function startNginx(sandbox: NetnsSandbox, server: Namespace, dir: string, spec: NginxSpec): NginxDaemon {
  const prefix = join(dir, spec.name);
  mkdirSync(prefix, { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig(prefix, spec));
  // -e stderr: nginx would otherwise open its compiled-in error log before reading the config.
  const child = sandbox.spawn(server, ['nginx', '-p', prefix, '-e', 'stderr', '-c', conf]);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return { child, stderr: () => stderr };
}

/** An iperf3 server (`iperf3 -s`), serving one bulk run after another. */
interface IperfServer {
  child: ChildProcess;
  address: string;
  /** Its output so far (a report per run, and its errors). */
  output: () => string;
}

/**
 * Starts `iperf3 -s` on address:BULK_PORT in `server` and waits (at most 10 s)
 * until it listens: a check by connecting would itself count as a run.
 */
async function startIperfServer(sandbox: NetnsSandbox, server: Namespace, address: string): Promise<IperfServer> {
  const child = sandbox.spawn(server, ['iperf3', '-s', '-B', address, '-p', String(BULK_PORT)]);
  let output = '';
  const keep = (chunk: string): void => void (output += chunk);
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (server.exec(['ss', '-Hltn', 'src', `${address}:${BULK_PORT}`]).trim() !== '') return { child, address, output: () => output };
    await sleep(100);
  }
  await stopChild(child);
  throw new Error(`iperf3 -s on ${address}:${BULK_PORT} did not listen within 10 s (${child.exitCode ?? child.signalCode ?? 'still running'}): ${output.trim() || '(no output)'}`);
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
 * At least 6 requests through one path: all must answer "ok", and `responders`
 * different X-Daemon values must have answered (1 without a balancer). The
 * socket plane and reuseport pick by a hash of the client's address and port,
 * not in turn:
 * up to 20 requests, so a check fails by chance once in 2^19.
 * Returns null when fine, else what went wrong.
 */
async function checkPath(sandbox: NetnsSandbox, client: Namespace, url: string, responders: number): Promise<string | null> {
  const seen = new Set<string>();
  let sent = 0;
  while (sent < 6 || (seen.size < responders && sent < 20)) {
    const outcome = await curlOnce(sandbox, client, url);
    if (!outcome.ok) return outcome.detail;
    seen.add(outcome.daemon);
    sent++;
  }
  if (seen.size < responders) return `${sent} requests to ${url} reached only daemon(s) ${[...seen].join(', ')}, not ${responders} different ones`;
  return null;
}

async function waitForDaemon(sandbox: NetnsSandbox, server: Namespace, daemon: NginxDaemon, url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  let last = '';
  while (Date.now() < deadline) {
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) break;
    const outcome = await curlOnce(sandbox, server, url);
    if (outcome.ok) return;
    last = outcome.detail;
    await sleep(100);
  }
  throw new Error(`nginx on ${url} did not answer: ${last}; nginx stderr: ${daemon.stderr().trim() || '(empty)'}`);
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
 * rest of the configuration is the same for all three: the cluster's HTTP
 * port over both daemons, its bulk port over the first daemon's iperf3. Each
 * data plane gets its own state directory (journal, admin socket), so one
 * run's leftovers cannot be adopted by the next. The socket plane runs with
 * the benchmark's mounts (sharedMounts: nsenter --net, not ip netns exec): its
 * bpffs must be visible here, to be checked and, if hostlb left it, unmounted.
 */
async function startHostlb(sandbox: NetnsSandbox, server: Namespace, dir: string, dataplane: Dataplane): Promise<HostlbProcess> {
  const stateDir = join(dir, `hostlb-state-${dataplane}`);
  mkdirSync(stateDir, { recursive: true });
  const configFile = join(dir, `hostlb-${dataplane}.yaml`);
  writeFileSync(configFile, `device: ${DEVICE}
dataplane: ${dataplane}
${dataplane === 'netfilter' ? `netfilter: { queue: ${NF_QUEUE} }\n` : ''}${dataplane === 'tun' ? `tun: { offloads: ${TUN_OFFLOADS}, ioUring: ${TUN_IO_URING} }\n` : ''}stateDir: ${stateDir}
table: { capacity: 262144 }
clusters:
  - address: ${CLUSTER}
    ports:
      - port: ${CLUSTER_PORT}
        protocol: tcp
${SCHEDULER === undefined ? '' : `        scheduler: ${SCHEDULER}\n`}        daemons:
${DAEMONS.map((d) => `          - { address: ${d}:${DAEMON_PORT} }`).join('\n')}
      - port: ${BULK_PORT}
        protocol: tcp
        scheduler: rr
        daemons:
          - { address: ${DAEMONS[0]}:${BULK_PORT} }
`);
  const child = sandbox.spawn(server, [process.execPath, HOSTLB_MAIN, 'start', '--config', configFile], { cwd: REPO, sharedMounts: dataplane === 'socket' });
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
  /** capacity is null with the netfilter data plane (conntrack holds the flows) and the socket plane (the daemons' sockets do). */
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
async function describeHostlbRun(socket: string, dataplane: Dataplane, before: AdminCounters | string, after: AdminCounters | string): Promise<string> {
  if (typeof before === 'string') return before;
  if (typeof after === 'string') return after;
  const drops = Object.entries(after.drops).map(([k, v]) => [k, v - (before.drops[k] ?? 0)] as const).filter(([, v]) => v !== 0);
  const link = after.link && before.link ? `link read ${after.link.read - before.link.read}, written ${after.link.written - before.link.written}, refused ${after.link.refused - before.link.refused}` : 'link -';
  const perDaemon = Object.entries(after.daemons).map(([k, v]) => `${k.split(' ').pop()}=${v.newFlows - (before.daemons[k]?.newFlows ?? 0)}`).join(' ');
  const status = await adminGet<AdminStatus>(socket, '/v1/status').then(
    (st) => st.table.capacity === null
      ? `${st.table.records} flows ${dataplane === 'socket' ? 'held by the daemons\' sockets' : 'in conntrack'}, ${st.activeFlows} active flows`
      : `table ${st.table.records}/${st.table.capacity} records (${st.table.evictions} evictions), ${st.activeFlows} active flows`,
    (e: Error) => `status: ${e.message}`,
  );
  // The netfilter and socket data planes forward no packet themselves: no packet or link counts to show.
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

/** The socket data plane's counters from GET /metrics. */
interface SocketMetrics {
  matched: number;
  unassigned: number;
  taken: number;
}

async function readSocketMetrics(socket: string): Promise<SocketMetrics | string> {
  try {
    const m = parsePrometheus(await adminText(socket, '/metrics'));
    const get = (key: string): number => m.get(key) ?? Number.NaN;
    return {
      matched: get('hostlb_socket_lookups_total{result="matched"}'),
      unassigned: get('hostlb_socket_lookups_total{result="unassigned"}'),
      taken: get('hostlb_socket_daemon_sockets_taken_total'),
    };
  } catch (e) {
    return `metrics: ${(e as Error).message}`;
  }
}

/**
 * One line: the socket lookups of cluster ports the dispatch program saw over
 * a run, those no daemon's socket took (the kernel refused them), and the
 * daemons' listening sockets hostlb took meanwhile (a daemon's new socket).
 */
function describeSocketRun(before: SocketMetrics | string, after: SocketMetrics | string): string {
  if (typeof before === 'string') return before;
  if (typeof after === 'string') return after;
  return `lookups matched ${after.matched - before.matched}, unassigned ${after.unassigned - before.unassigned} (refused by the kernel); daemon sockets taken ${after.taken - before.taken} (${after.taken} since start)`;
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
 * not the client's, and every request crosses two TCP connections. The bulk
 * port goes to the first daemon's iperf3, as through the other balancers.
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

frontend bulk
  bind ${CLUSTER}:${BULK_PORT}
  default_backend bulk

backend bulk
  server d1 ${DAEMONS[0]}:${BULK_PORT}
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

/** The client's command line for one run: wrk on `url`, or for bulk iperf3 to url's host on BULK_PORT. */
function clientArgv(mode: Mode, url: string): string[] {
  if (mode === 'bulk') return ['iperf3', '-c', new URL(url).hostname, '-p', String(BULK_PORT), '-t', String(SECONDS), '-J', '--connect-timeout', '3000'];
  return ['wrk', `-t${THREADS}`, `-c${CONNECTIONS}`, `-d${SECONDS}s`, ...(mode === 'new-conn' ? ['-H', 'Connection: close'] : []), url];
}

/** One run of `mode` through `path` (wrk, or iperf3 for bulk), with the counters read around it. */
async function measure(bench: Bench, path: PathName, mode: Mode, url: string, target: Target): Promise<Measurement> {
  const { sandbox, client, server } = bench;
  const { hostlb } = target;
  const netfilter = hostlb?.dataplane === 'netfilter';
  const socketPlane = hostlb?.dataplane === 'socket';
  const readServer = nsReader(server);
  const argv = clientArgv(mode, url);
  progress(`${path} ${mode}: ${argv.join(' ')}`);
  const clientBefore = tcpCounters(client);
  const serverBefore = tcpCounters(server);
  const tunBefore = hostlb?.dataplane === 'tun' ? tunCounters(server) : null;
  const conntrackBefore = target.conntrack ? conntrackStats(readServer) : null;
  const queueBefore = netfilter ? queueStats(readServer, NF_QUEUE) : null;
  const countersBefore = hostlb ? await readCounters(hostlb.socket) : null;
  const metricsBefore = hostlb && netfilter ? await readNetfilterMetrics(hostlb.socket) : null;
  const socketBefore = hostlb && socketPlane ? await readSocketMetrics(hostlb.socket) : null;
  const pid = target.process?.pid;
  const cpuBefore = pid !== undefined ? processCpuSeconds(pid) : 0;
  const loopBefore = hostlb && pid !== undefined ? mainThreadSchedSeconds(pid) : null;
  const own = new Set([process.pid]);
  const othersBefore = otherProcessesCpu(bench.ownNetns, own);
  const idleBefore = machineIdleSeconds();
  const started = Date.now();
  const r = await sandbox.run(client, argv, { timeoutMs: (SECONDS + 15) * 1000 });
  const wallSeconds = (Date.now() - started) / 1000;
  const idleCpus = (machineIdleSeconds() - idleBefore) / wallSeconds;
  const othersAfter = otherProcessesCpu(bench.ownNetns, own);
  const otherCpus = cpuSecondsBetween(othersBefore, othersAfter) / wallSeconds;
  const otherTop = otherCpus >= NOISY_CPUS
    ? topConsumers(othersBefore, othersAfter, 3).map((p) => `${p.name}(${p.pid}) ${(p.seconds / wallSeconds).toFixed(2)}`).join(', ')
    : undefined;
  const cpuSeconds = pid !== undefined ? processCpuSeconds(pid) - cpuBefore : Number.NaN;
  const loopAfter = hostlb && pid !== undefined ? mainThreadSchedSeconds(pid) : null;
  const hostlbLoop = loopBefore && loopAfter ? { running: (loopAfter.running - loopBefore.running) / wallSeconds, waiting: (loopAfter.waiting - loopBefore.waiting) / wallSeconds } : undefined;
  const tcp = { client: tcpDelta(tcpCounters(client), clientBefore), server: tcpDelta(tcpCounters(server), serverBefore) };
  const figures: RunFigures = { path, tcp, otherCpus, idleCpus, otherTop, hostlbLoop };
  let result: Measurement;
  if (mode === 'bulk') {
    const report = parseIperf(r.stdout);
    result = typeof report === 'string' ? { ...figures, mode, report: null, error: `iperf3 ${r.timedOut ? 'was killed at its time limit' : `exited with ${r.code ?? r.signal}`}: ${report}${r.stderr.trim() ? `; ${r.stderr.trim()}` : ''}` } : { ...figures, mode, report };
  } else {
    const report = parseWrk(r.stdout);
    result = { ...figures, mode, report };
    if (report === null) result.error = `wrk ${r.timedOut ? 'was killed at its time limit' : `exited with ${r.code ?? r.signal}`}: ${(r.stdout + r.stderr).trim() || '(no output)'}`;
  }
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
    result.hostlb = await describeHostlbRun(hostlb.socket, hostlb.dataplane, countersBefore, countersAfter);
    if (metricsBefore !== null) {
      result.netfilter = describeNetfilterRun(metricsBefore, await readNetfilterMetrics(hostlb.socket), result.queue, newFlowTotal(countersBefore, countersAfter), cpuSeconds);
    }
    if (socketBefore !== null) result.socket = describeSocketRun(socketBefore, await readSocketMetrics(hostlb.socket));
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
  /** Output of the iperf3 servers, kept when a bulk run failed. */
  iperfLogs: Array<{ title: string; lines: string[] }>;
  notes: string[];
}

/** Processes and host changes alive now, for the teardown (also on failure and on a signal). */
interface Live {
  nginx: NginxDaemon[];
  /** The reuseport path's nginx, while that path runs. */
  reuseport: NginxDaemon | null;
  /** iperf3 servers: the first daemon's, and the reuseport path's on the cluster address while it runs. */
  iperf: IperfServer[];
  hostlb: HostlbProcess | null;
  haproxy: HaproxyProcess | null;
  /** The server namespace's inode once the socket plane has been started: its bpffs is looked for at the end. */
  socketNetns: number | null;
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

/** Runs argv in `ns`; false when it fails. */
function tryExec(ns: Namespace, argv: string[]): boolean {
  try {
    ns.exec(argv);
    return true;
  } catch {
    return false;
  }
}

/** Deletes the `local` route hostlb adds for the cluster address, if it is still there; says so in `left`. */
function removeClusterRoute(server: Namespace, left: string[]): void {
  if (server.ip('route', 'show', 'table', 'local', `${CLUSTER}/32`).trim() !== '') {
    left.push(`local route for ${CLUSTER}`);
    tryExec(server, ['ip', 'route', 'del', 'local', `${CLUSTER}/32`, 'dev', 'lo', 'table', 'local']);
  }
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
  if (tryExec(server, ['nft', 'list', 'table', 'inet', table])) {
    left.push(`nft table inet ${table}`);
    tryExec(server, ['nft', 'delete', 'table', 'inet', table]);
  }
  const mangle = tryExec(server, ['iptables', '-w', '5', '-t', 'mangle', '-S']) ? server.exec(['iptables', '-w', '5', '-t', 'mangle', '-S']) : '';
  if (mangle.includes(chain)) {
    left.push(`iptables mangle chain ${chain} or jumps to it`);
    for (const hook of ['PREROUTING', 'OUTPUT']) {
      for (let i = 0; i < 8 && tryExec(server, ['iptables', '-w', '5', '-t', 'mangle', '-D', hook, '-j', chain]); i++);
    }
    tryExec(server, ['iptables', '-w', '5', '-t', 'mangle', '-F', chain]);
    tryExec(server, ['iptables', '-w', '5', '-t', 'mangle', '-X', chain]);
  }
  removeClusterRoute(server, left);
  if (left.length > 0) outcome.notes.push(`note: hostlb (dataplane netfilter) left behind after its stop: ${left.join('; ')} (removed by the benchmark)`);
}

/**
 * The socket plane's bpffs directories of the namespace with inode `netns`
 * (BPFFS_ROOT/<inode>-<device>, dataplane/socket/host-plan.ts) that are still
 * mounted or still there: a deliberate stop unmounts and removes its own. Each
 * one left is unmounted and removed with hostlb's own undo (unmountBpffs:
 * bpffs mounts on exactly that directory, nothing else), so no pinned program
 * stays attached and no mount outlives the run. Returns what was left, and
 * what could not be removed; other namespaces' directories are not touched.
 */
function removeBpffsLeftovers(netns: number): string[] {
  let names: string[];
  try {
    names = readdirSync(BPFFS_ROOT).filter((name) => name.startsWith(`${netns}-`));
  } catch {
    names = []; // no BPFFS_ROOT: nothing was left
  }
  const left: string[] = [];
  for (const name of names) {
    const dir = `${BPFFS_ROOT}/${name}`;
    const mounts = parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountPoint === dir);
    left.push(mounts.length > 0 ? `${mounts.map((m) => m.fsType).join(' and ')} mounted on ${dir}` : `the directory ${dir}`);
    try {
      unmountBpffs(dir);
    } catch (e) {
      left.push(`which the benchmark could not remove: ${(e as Error).message}`);
    }
  }
  return left;
}

/** After the socket data plane stopped: its bpffs and the cluster's local route must be gone. Whatever is left is reported and removed. */
function removeSocketLeftovers(server: Namespace, netns: number, outcome: Outcome): void {
  const left = removeBpffsLeftovers(netns);
  removeClusterRoute(server, left);
  if (left.length > 0) outcome.notes.push(`note: hostlb (dataplane socket) left behind after its stop: ${left.join('; ')} (removed by the benchmark)`);
}

/** Stops the reuseport path's nginx and iperf3 server (SIGTERM to nginx's master: it stops its workers). */
async function stopReuseport(live: Live): Promise<void> {
  const nginx = live.reuseport;
  live.reuseport = null;
  const iperf = live.iperf.filter((s) => s.address === CLUSTER);
  live.iperf = live.iperf.filter((s) => s.address !== CLUSTER);
  await Promise.all([stopChild(nginx?.child ?? null), ...iperf.map((s) => stopChild(s.child))]);
}

async function run(sandbox: NetnsSandbox, dir: string, live: Live, tools: { haproxy: boolean; iperf: boolean }): Promise<Outcome> {
  const outcome: Outcome = { measurements: [], hostlbRuns: [], haproxyLog: [], iperfLogs: [], notes: [] };
  const client = sandbox.namespace();
  const server = sandbox.namespace();
  sandbox.veth(client, server, { a: `${CLIENT_ADDR}/24`, b: `${SERVER_ADDR}/24`, aName: 'cli0', bName: 'srv0' });
  for (const source of Object.values(CLIENT_SOURCE)) client.ip('addr', 'add', `${source}/24`, 'dev', 'cli0');
  client.ip('route', 'add', '198.18.2.0/24', 'via', SERVER_ADDR);
  for (const d of DAEMONS) server.ip('addr', 'add', `${d}/32`, 'dev', 'lo');
  const bench: Bench = { sandbox, client, server, ownNetns: new Set([netnsInode(client.name), netnsInode(server.name)]) };

  DAEMONS.forEach((address, i) => live.nginx.push(startNginx(sandbox, server, dir, daemonNginx(address, i + 1))));
  for (const [i, address] of DAEMONS.entries()) await waitForDaemon(sandbox, server, live.nginx[i], `http://${address}:${DAEMON_PORT}/`);
  if (tools.iperf) live.iperf.push(await startIperfServer(sandbox, server, DAEMONS[0]));
  progress(`namespaces ${client.name} (client ${CLIENT_ADDR}; sources ${Object.entries(CLIENT_SOURCE).map(([p, a]) => `${p} ${a}`).join(', ')}) and ${server.name} (server ${SERVER_ADDR}, nginx on ${DAEMONS.join(', ')}:${DAEMON_PORT}${tools.iperf ? `, iperf3 on ${DAEMONS[0]}:${BULK_PORT}` : ''}) ready`);

  const clusterUrl = `http://${CLUSTER}:${CLUSTER_PORT}/`;
  const directUrl = `http://${DAEMONS[0]}:${DAEMON_PORT}/`;
  const failPath = (path: PathName, error: string, skipped = false): void => {
    for (const mode of MODES) outcome.measurements.push({ path, round, mode, report: null, error, skipped, otherCpus: Number.NaN });
  };
  /**
   * Checks the path, then measures keep-alive, new-conn and bulk through it.
   * `responders`: how many different X-Daemon values the check must see (1
   * for a single daemon).
   */
  const measurePath = async (path: PathName, url: string, responders: number, target: Target): Promise<void> => {
    if (!SELECTED.has(path)) {
      failPath(path, 'not in BENCH_PATHS', true);
      return;
    }
    const destination = new URL(url).hostname === CLUSTER ? `${CLUSTER}/32` : '198.18.2.0/24';
    client.ip('route', 'replace', destination, 'via', SERVER_ADDR, 'src', CLIENT_SOURCE[path]);
    const failure = await checkPath(sandbox, client, url, responders);
    if (failure !== null) {
      progress(`${path}: path check failed: ${failure}`);
      failPath(path, `path check failed: ${failure}`);
      return;
    }
    for (const mode of MODES) {
      if (!SELECTED_MODES.has(mode)) {
        outcome.measurements.push({ path, round, mode, report: null, error: 'not in BENCH_MODES', skipped: true, otherCpus: Number.NaN });
        continue;
      }
      if (mode === 'bulk' && !tools.iperf) {
        outcome.measurements.push({ path, round, mode, report: null, error: 'iperf3 not installed', skipped: true, otherCpus: Number.NaN });
        continue;
      }
      const m = await measure(bench, path, mode, url, target);
      outcome.measurements.push({ ...m, round });
      if (m.mode === 'bulk' && m.report === null) {
        for (const s of live.iperf) outcome.iperfLogs.push({ title: `iperf3 -s on ${s.address}:${BULK_PORT} output after ${path} bulk failed`, lines: s.output().split('\n').filter((l) => l.trim() !== '') });
      }
    }
  };

  // Both daemons must answer directly first, so a balanced path that reaches
  // one daemon only is the balancer's fault.
  for (const address of DAEMONS) {
    const failure = await checkPath(sandbox, client, `http://${address}:${DAEMON_PORT}/`, 1);
    if (failure !== null) throw new Error(`the client cannot reach daemon ${address} directly: ${failure}`);
  }
  let round = 0;
  const steps = new Map<PathName, () => Promise<void>>();

  // (a) Direct to one daemon.
  steps.set('direct', () => measurePath('direct', directUrl, 1, NO_TARGET));

  // (b) Kernel nftables DNAT in the server namespace, alternating daemons per
  // connection; the bulk port to the first daemon's iperf3.
  const ruleset = `table ip lb {
  chain pre {
    type nat hook prerouting priority -100;
    ip daddr ${CLUSTER} tcp dport ${CLUSTER_PORT} dnat ip to numgen inc mod 2 map { ${DAEMONS.map((d, i) => `${i} : ${d} . ${DAEMON_PORT}`).join(', ')} }
    ip daddr ${CLUSTER} tcp dport ${BULK_PORT} dnat ip to ${DAEMONS[0]}:${BULK_PORT}
  }
}
`;
  steps.set('nftables', async () => {
    server.exec(['nft', '-f', '-'], { input: ruleset });
    try {
      await measurePath('nftables', clusterUrl, DAEMONS.length, { ...NO_TARGET, conntrack: true });
    } finally {
      server.exec(['nft', 'delete', 'table', 'ip', 'lb']);
    }
  });

  // (c), (d), (e) hostlb in the server namespace: the TUN data plane, the
  // netfilter data plane, then the socket data plane, each started the same
  // way from the same configuration but for `dataplane`, and stopped (SIGTERM:
  // it undoes its host changes) before the next path.
  for (const dataplane of ['tun', 'netfilter', 'socket'] as const) steps.set(HOSTLB_PATH[dataplane], async () => {
    const path = HOSTLB_PATH[dataplane];
    if (!SELECTED.has(path)) {
      failPath(path, 'not in BENCH_PATHS', true);
      return;
    }
    if (dataplane === 'socket') live.socketNetns = netnsInode(server.name);
    try {
      live.hostlb = await startHostlb(sandbox, server, dir, dataplane);
    } catch (e) {
      const message = (e as Error).message;
      progress(message);
      failPath(path, message.split('\n')[0]);
      outcome.notes.push(message);
      if (dataplane === 'socket') removeSocketLeftovers(server, live.socketNetns!, outcome);
      return;
    }
    progress(`hostlb (dataplane ${dataplane}) started (pid ${live.hostlb.child.pid})`);
    try {
      await measurePath(path, clusterUrl, DAEMONS.length, { hostlb: live.hostlb, process: { name: 'hostlb', pid: live.hostlb.child.pid! }, conntrack: dataplane === 'netfilter' });
    } finally {
      await stopHostlb(live, outcome);
    }
    if (dataplane === 'netfilter') removeNetfilterLeftovers(server, outcome);
    if (dataplane === 'socket') removeSocketLeftovers(server, live.socketNetns!, outcome);
  });

  // (f) SO_REUSEPORT: one nginx whose workers each listen on the cluster
  // address, local to the server namespace, and an iperf3 server there for bulk.
  steps.set('reuseport', async () => {
  if (SELECTED.has('reuseport')) {
    server.ip('addr', 'add', `${CLUSTER}/32`, 'dev', 'lo');
    try {
      let started = false;
      try {
        live.reuseport = startNginx(sandbox, server, dir, REUSEPORT_NGINX);
        await waitForDaemon(sandbox, server, live.reuseport, clusterUrl);
        if (tools.iperf) live.iperf.push(await startIperfServer(sandbox, server, CLUSTER));
        started = true;
      } catch (e) {
        const message = (e as Error).message;
        progress(message);
        failPath('reuseport', message.split('\n')[0]);
        outcome.notes.push(message);
      }
      if (started) {
        progress(`nginx with ${REUSEPORT_WORKERS} reuseport workers on ${CLUSTER}:${CLUSTER_PORT} started (pid ${live.reuseport!.child.pid})`);
        await measurePath('reuseport', clusterUrl, REUSEPORT_WORKERS, NO_TARGET);
      }
    } finally {
      await stopReuseport(live);
      server.ip('addr', 'del', `${CLUSTER}/32`, 'dev', 'lo');
    }
  } else {
    failPath('reuseport', 'not in BENCH_PATHS', true);
  }
  });

  // (g) HAProxy in TCP mode on the cluster address in the server namespace,
  // which must own that address for HAProxy to bind it.
  steps.set('haproxy', async () => {
  if (!tools.haproxy || !SELECTED.has('haproxy')) {
    failPath('haproxy', tools.haproxy ? 'not in BENCH_PATHS' : 'haproxy not installed', true);
    return;
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
      await measurePath('haproxy', clusterUrl, DAEMONS.length, { hostlb: null, process: { name: 'haproxy', pid: live.haproxy.child.pid! }, conntrack: false });
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
  });

  // Every path in each round, in RUN_ORDER, reversed every other round: a
  // machine whose speed drifts during the run favours no path.
  const ordered = RUN_ORDER.map((path) => steps.get(path)!);
  for (round = 0; round < ROUNDS; round++) {
    if (ROUNDS > 1) progress(`round ${round + 1} of ${ROUNDS}${round % 2 === 1 ? ' (paths in reverse order)' : ''}`);
    for (const step of round % 2 === 0 ? ordered : [...ordered].reverse()) await step();
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

function idle(m: Measurement): string {
  return m.idleCpus === undefined ? '-' : m.idleCpus.toFixed(2);
}

function printTable(measurements: Measurement[]): void {
  const header = [pad('path', PATH_WIDTH), pad('mode', 11), pad('req/s', 10, true), pad('requests', 10, true), pad('latency avg/max', 18, true), pad('sock err c/r/w/t', 18, true), pad('non-2xx', 8, true), pad('retrans c/s', 12, true), pad('others cpu', 10, true), pad('idle cpu', 8, true)];
  console.log(header.join('  '));
  const legend = `(latency from wrk; retrans = TCP segments retransmitted in the client/server namespace; others cpu = CPUs used meanwhile by processes outside the benchmark, at least, of ${cpus().length}; idle cpu = CPUs nobody used meanwhile)`;
  const noReport = (m: Measurement): string => `${pad(m.path, PATH_WIDTH)}  ${pad(m.mode, 11)}  ${pad(m.skipped ? 'skipped' : 'error', 10, true)}  ${m.error ?? ''}`;
  for (const path of PATHS) {
    for (const mode of WRK_MODES) {
      const m = measurements.find((x) => x.path === path && x.mode === mode);
      if (m === undefined || m.mode === 'bulk') continue;
      const r = m.report;
      if (r === null) {
        console.log(noReport(m));
        continue;
      }
      const e = r.socketErrors;
      console.log([
        pad(path, PATH_WIDTH), pad(mode, 11), pad(r.requestsPerSec.toFixed(0), 10, true), pad(String(r.requests), 10, true),
        pad(Number.isNaN(r.latencyMs) ? '-' : `${r.latencyMs.toFixed(2)}/${r.latencyMaxMs.toFixed(1)} ms`, 18, true),
        pad(`${e.connect}/${e.read}/${e.write}/${e.timeout}`, 18, true), pad(String(r.non2xx), 8, true), pad(m.tcp ? `${m.tcp.client.retransSegs}/${m.tcp.server.retransSegs}` : '-', 12, true), pad(m.otherCpus.toFixed(2), 10, true),
        pad(idle(m), 8, true),
      ].join('  '));
    }
  }
  console.log(legend);
  console.log([pad('path', PATH_WIDTH), pad('mode', 11), pad('Gbit/s', 10, true), pad('GB', 10, true), pad('retrans c/s', 12, true), pad('others cpu', 10, true), pad('idle cpu', 8, true)].join('  '));
  for (const path of PATHS) {
    const m = measurements.find((x) => x.path === path && x.mode === 'bulk');
    if (m === undefined || m.mode !== 'bulk') continue;
    const r = m.report;
    if (r === null) {
      console.log(noReport(m));
      continue;
    }
    console.log([
      pad(path, PATH_WIDTH), pad(m.mode, 11), pad((r.bitsPerSec / 1e9).toFixed(2), 10, true), pad((r.bytes / 1e9).toFixed(1), 10, true),
      pad(m.tcp ? `${m.tcp.client.retransSegs}/${m.tcp.server.retransSegs}` : '-', 12, true), pad(m.otherCpus.toFixed(2), 10, true),
      pad(idle(m), 8, true),
    ].join('  '));
  }
  console.log(`(bulk: one iperf3 stream, client to daemon, ${SECONDS} s, as the server received it; retrans, others cpu and idle cpu as above)`);
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
    if (m.socket !== undefined) console.log(`${m.path} ${m.mode}: socket data plane: ${m.socket}`);
    if (m.conntrack !== undefined) console.log(`${m.path} ${m.mode}: server namespace ${describeConntrack(m.conntrack)}`);
    if (m.tun !== undefined) {
      const t = m.tun;
      console.log(`${m.path} ${m.mode}: ${DEVICE} kernel->hostlb ${t.toHostlb} packets (${t.toHostlbDropped} dropped: queue full), hostlb->kernel ${t.fromHostlb} packets (${t.fromHostlbDropped} dropped)`);
    }
  }
}

/**
 * The figures, in the shape the header of this file promises: the five
 * paths' line as it was before the socket and reuseport paths came, then
 * those two and the socket plane's ratios.
 */
function finalLine(label: string, measurements: Measurement[], mode: Mode): string {
  const find = (path: PathName): Measurement | undefined => measurements.find((m) => m.path === path && m.mode === mode);
  /** The path's figure in each round (null where that round has none). */
  const values = (path: PathName): Array<number | null> => Array.from({ length: ROUNDS }, (_, round) => {
    const m = measurements.find((x) => x.path === path && x.mode === mode && (x.round ?? 0) === round);
    if (m === undefined || m.report === null) return null;
    return m.mode === 'bulk' ? m.report.bitsPerSec / 1e9 : m.report.requestsPerSec;
  });
  const value = (path: PathName): number | null => median(values(path).filter((v): v is number => v !== null));
  const unit = mode === 'bulk' ? 'Gbit/s' : 'req/s';
  const show = (path: PathName): string => {
    const v = value(path);
    if (v !== null) return `${v.toFixed(mode === 'bulk' ? 2 : 0)} ${unit}`;
    return `${find(path)?.skipped ? 'skipped' : 'error'} ${unit}`;
  };
  // The median of the ratios within each round: both figures of a ratio come from one round.
  const ratio = (path: PathName, base: PathName): string => {
    const v = values(path);
    const b = values(base);
    const each = v.flatMap((x, i) => (x !== null && b[i] !== null && b[i]! > 0 ? [x / b[i]!] : []));
    const m = median(each);
    return m === null ? 'n/a' : m.toFixed(2);
  };
  return `${label} netfilter ${show('hostlb-netfilter')}, tun ${show('hostlb-tun')}, nftables ${show('nftables')}, haproxy ${show('haproxy')}, direct ${show('direct')}; `
    + `netfilter/nftables ${ratio('hostlb-netfilter', 'nftables')}, tun/nftables ${ratio('hostlb-tun', 'nftables')}, haproxy/nftables ${ratio('haproxy', 'nftables')}; `
    + `socket ${show('hostlb-socket')}, reuseport ${show('reuseport')}; `
    + `socket/nftables ${ratio('hostlb-socket', 'nftables')}, socket/reuseport ${ratio('hostlb-socket', 'reuseport')}${mode === 'bulk' ? `, socket/direct ${ratio('hostlb-socket', 'direct')}` : ''}`;
}

/** The median of `xs`, null when empty. */
function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
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
  const unknownModes = [...SELECTED_MODES].filter((m) => !(MODES as readonly string[]).includes(m));
  if (unknownModes.length > 0 || SELECTED_MODES.size === 0) {
    console.error(`bench:e2e: BENCH_MODES names no mode or unknown modes (${unknownModes.join(', ')}); known: ${MODES.join(', ')}`);
    return 1;
  }
  if (SCHEDULER !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(SCHEDULER)) {
    console.error(`bench:e2e: BENCH_SCHEDULER must be one of ${SCHEDULER_NAMES.join(', ')}, not ${JSON.stringify(SCHEDULER)}`);
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
  // HAProxy and iperf3 are optional: without them the HAProxy path and the bulk runs are skipped, not failed.
  const haproxyVersion = toolVersion(['haproxy', '-v']);
  const iperfVersion = toolVersion(['iperf3', '--version']);
  const tools = { haproxy: haproxyVersion !== 'missing', iperf: iperfVersion !== 'missing' };
  console.log(`setup: ${cpus().length} CPUs, Linux ${release()}, node ${process.version}; ${versions.nginx}; ${versions.wrk.replace(/ Copyright.*/, '')}; nft ${versions.nft}; ${versions.iptables}; ${tools.haproxy ? haproxyVersion.replace(/ - https?:.*/, '') : 'haproxy missing'}; ${tools.iperf ? iperfVersion.replace(/ \(.*/, '') : 'iperf3 missing'}`);
  if (!tools.haproxy) console.log('note: haproxy not found: the HAProxy path is skipped (Debian: apt-get install haproxy)');
  if (!tools.iperf) console.log('note: iperf3 not found: every bulk run is skipped (Debian: apt-get install iperf3)');
  console.log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} before the run (anything else running shares the same ${cpus().length} CPUs)`);
  console.log(`load: wrk -t${THREADS} -c${CONNECTIONS}, ${SECONDS} s per run (BENCH_SECONDS); new-conn sends "Connection: close"; 2 nginx daemons, 1 worker each (reuseport: 1 nginx, ${REUSEPORT_WORKERS} workers); hostlb's scheduler ${SCHEDULER ?? 'wlc (its default)'}; `
    + `bulk: iperf3 -t${SECONDS}, one stream, client to the first daemon's iperf3 (reuseport: to one on the cluster address); paths in this order: ${RUN_ORDER.join(', ')}`);

  const sandbox = new NetnsSandbox();
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-e2e-'));
  const live: Live = { nginx: [], reuseport: null, iperf: [], hostlb: null, haproxy: null, socketNetns: null };
  const teardown = async (): Promise<void> => {
    // hostlb first, so it undoes its journal; then the socket plane's bpffs if
    // hostlb left it (killed, or it failed to undo): a mount in the host's
    // mount namespace outlives the network namespace. nginx by its master,
    // which stops its workers. Deleting the namespaces then removes whatever
    // rules, routes and devices are left.
    await stopChild(live.hostlb?.child ?? null);
    live.hostlb = null;
    if (live.socketNetns !== null) {
      const left = removeBpffsLeftovers(live.socketNetns);
      if (left.length > 0) progress(`hostlb (dataplane socket) left behind: ${left.join('; ')} (removed)`);
    }
    await stopChild(live.haproxy?.child ?? null);
    live.haproxy = null;
    await Promise.all([...live.nginx, ...(live.reuseport ? [live.reuseport] : [])].map((d) => stopChild(d.child)));
    live.reuseport = null;
    await Promise.all(live.iperf.map((s) => stopChild(s.child)));
    live.iperf = [];
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
    outcome = await run(sandbox, dir, live, tools);
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
  for (const log of outcome.iperfLogs) printLog(log.title, log.lines);
  for (let round = 0; round < ROUNDS; round++) {
    if (ROUNDS > 1) console.log(`round ${round + 1} of ${ROUNDS}${round % 2 === 1 ? ' (paths in reverse order)' : ''}:`);
    printTable(outcome.measurements.filter((m) => (m.round ?? 0) === round));
  }
  const failed = outcome.measurements.some((m) => m.report === null && m.skipped !== true);
  for (const m of outcome.measurements) {
    if (m.mode === 'bulk' || m.report === null || (socketErrorCount(m.report) === 0 && m.report.non2xx === 0)) continue;
    console.log(`note: ${m.path} ${m.mode} had ${socketErrorCount(m.report)} socket errors and ${m.report.non2xx} error responses`);
  }
  // Bulk first: the keep-alive and new-conn lines stay the last two.
  console.log(finalLine('e2e bulk:      ', outcome.measurements, 'bulk'));
  console.log(finalLine('e2e keep-alive:', outcome.measurements, 'keep-alive'));
  console.log(finalLine('e2e new-conn:  ', outcome.measurements, 'new-conn'));
  return failed ? 1 : 0;
}

process.exitCode = await main();
