// bench:e2e — HTTP through three paths between two network namespaces: wrk in
// a client namespace, two nginx daemons in a server namespace, reached directly,
// through kernel nftables DNAT, and through hostlb's TUN data plane; each with
// keep-alive and with a new connection per request. Needs root. Prints its
// figures last:
//   e2e keep-alive: hostlb <R1> req/s, nftables <R2> req/s, direct <R3> req/s, hostlb/nftables <ratio>
//   e2e new-conn:   hostlb <R1> req/s, nftables <R2> req/s, direct <R3> req/s, hostlb/nftables <ratio>
// A benchmark, not a test: it never fails on speed. It exits 1 when set-up
// fails or a path cannot carry requests, and prints "error" for that path.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasRoot, NetnsSandbox, type Namespace } from '../test/support/netns.js';
import { cpuSecondsBetween, mainThreadSchedSeconds, netnsInode, otherProcessesCpu, processCpuSeconds } from './support/cpu.js';
import { parseWrk, socketErrorCount, type WrkReport } from './support/wrk.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const THREADS = 2;
const CONNECTIONS = 32;
const PAUSE_MS = 1_000; // between runs, so one run's closing connections do not land in the next

const CLIENT_ADDR = '198.18.0.1';
const SERVER_ADDR = '198.18.0.2';
const CLUSTER = '198.18.100.1';
const CLUSTER_PORT = 80;
const DAEMONS = ['198.18.2.1', '198.18.2.2'];
const DAEMON_PORT = 8080;
const DEVICE = 'hlb0';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const HOSTLB_MAIN = join(REPO, 'dist/src/control/cli/main.js');

const PATHS = ['hostlb', 'nftables', 'direct'] as const;
const MODES = ['keep-alive', 'new-conn'] as const;
type PathName = (typeof PATHS)[number];
type Mode = (typeof MODES)[number];

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
const CLIENT_SOURCE: Record<PathName, string> = { direct: '198.18.0.11', nftables: '198.18.0.12', hostlb: '198.18.0.13' };

interface Measurement {
  path: PathName;
  mode: Mode;
  report: WrkReport | null;
  /** Why there is no report (path check failed, wrk failed). */
  error?: string;
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
  /** CPU time hostlb used during the run, all its threads, in CPUs (1 = one core all the time). */
  hostlbCpus?: number;
  /** Share of the run hostlb's event-loop thread spent running, and runnable but waiting for a CPU. */
  hostlbLoop?: { running: number; waiting: number };
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

async function startHostlb(sandbox: NetnsSandbox, server: Namespace, dir: string): Promise<HostlbProcess> {
  const stateDir = join(dir, 'hostlb-state');
  mkdirSync(stateDir, { recursive: true });
  const configFile = join(dir, 'hostlb.yaml');
  writeFileSync(configFile, `device: ${DEVICE}
stateDir: ${stateDir}
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
    throw new Error(`hostlb did not start (${outcome === 'exited' ? `exited with ${child.exitCode ?? child.signalCode}` : 'no "started" line within 15 s'}); stderr:\n${[...lines, partial].join('\n')}`);
  }
  return { child, socket: join(stateDir, 'admin.sock'), lines };
}

interface AdminCounters {
  packets: { in: number; out: number };
  drops: Record<string, number>;
  link: { read: number; written: number; refused: number } | null;
  daemons: Record<string, { newFlows: number; activeFlows: number }>;
}

interface AdminStatus {
  table: { records: number; capacity: number; evictions: number };
  activeFlows: number;
}

/** GET `path` from hostlb's admin API on its unix socket; rejects on any failure. */
function adminGet<T>(socket: string, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body}`));
        else {
          try {
            resolve(JSON.parse(body) as T);
          } catch (e) {
            reject(e);
          }
        }
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
    (st) => `table ${st.table.records}/${st.table.capacity} records (${st.table.evictions} evictions), ${st.activeFlows} active flows`,
    (e: Error) => `status: ${e.message}`,
  );
  return `packets in ${after.packets.in - before.packets.in} out ${after.packets.out - before.packets.out}; ${link}; drops ${drops.length === 0 ? 'none' : drops.map(([k, v]) => `${k}=${v}`).join(' ')}; new flows per daemon ${perDaemon}; at the end ${status}`;
}

// ---- wrk ----------------------------------------------------------------------

/** The namespaces of one benchmark run and what counts as its own CPU use. */
interface Bench {
  sandbox: NetnsSandbox;
  client: Namespace;
  server: Namespace;
  ownNetns: Set<number>;
}

async function measure(bench: Bench, path: PathName, mode: Mode, url: string, hostlb: HostlbProcess | null): Promise<Measurement> {
  const { sandbox, client, server } = bench;
  progress(`${path} ${mode}: wrk -t${THREADS} -c${CONNECTIONS} -d${SECONDS}s ${url}`);
  const clientBefore = tcpCounters(client);
  const serverBefore = tcpCounters(server);
  const tunBefore = hostlb ? tunCounters(server) : null;
  const countersBefore = hostlb ? await readCounters(hostlb.socket) : null;
  const hostlbPid = hostlb?.child.pid;
  const hostlbCpuBefore = hostlbPid !== undefined ? processCpuSeconds(hostlbPid) : 0;
  const loopBefore = hostlbPid !== undefined ? mainThreadSchedSeconds(hostlbPid) : null;
  const own = new Set([process.pid]);
  const othersBefore = otherProcessesCpu(bench.ownNetns, own);
  const started = Date.now();
  const argv = ['wrk', `-t${THREADS}`, `-c${CONNECTIONS}`, `-d${SECONDS}s`, ...(mode === 'new-conn' ? ['-H', 'Connection: close'] : []), url];
  const r = await sandbox.run(client, argv, { timeoutMs: (SECONDS + 15) * 1000 });
  const wallSeconds = (Date.now() - started) / 1000;
  const otherCpus = cpuSecondsBetween(othersBefore, otherProcessesCpu(bench.ownNetns, own)) / wallSeconds;
  const hostlbCpus = hostlbPid !== undefined ? (processCpuSeconds(hostlbPid) - hostlbCpuBefore) / wallSeconds : undefined;
  const loopAfter = hostlbPid !== undefined ? mainThreadSchedSeconds(hostlbPid) : null;
  const hostlbLoop = loopBefore && loopAfter ? { running: (loopAfter.running - loopBefore.running) / wallSeconds, waiting: (loopAfter.waiting - loopBefore.waiting) / wallSeconds } : undefined;
  const tcp = { client: tcpDelta(tcpCounters(client), clientBefore), server: tcpDelta(tcpCounters(server), serverBefore) };
  const result: Measurement = { path, mode, report: parseWrk(r.stdout), tcp, otherCpus, hostlbCpus, hostlbLoop };
  if (tunBefore !== null) result.tun = tunDelta(tunCounters(server), tunBefore);
  if (hostlb !== null && countersBefore !== null) result.hostlb = await describeHostlbRun(hostlb.socket, countersBefore, await readCounters(hostlb.socket));
  if (result.report === null) {
    result.error = `wrk ${r.timedOut ? 'was killed at its time limit' : `exited with ${r.code ?? r.signal}`}: ${(r.stdout + r.stderr).trim() || '(no output)'}`;
  }
  await sleep(PAUSE_MS);
  return result;
}

// ---- the run ------------------------------------------------------------------

interface Outcome {
  measurements: Measurement[];
  hostlbLog: string[];
  hostlbExit: string;
  notes: string[];
}

interface Live {
  nginx: NginxDaemon[];
  hostlb: HostlbProcess | null;
}

async function run(sandbox: NetnsSandbox, dir: string, live: Live): Promise<Outcome> {
  const outcome: Outcome = { measurements: [], hostlbLog: [], hostlbExit: 'not started', notes: [] };
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
  const measurePath = async (path: PathName, url: string, balanced: boolean, hostlb: HostlbProcess | null): Promise<void> => {
    const destination = balanced ? `${CLUSTER}/32` : '198.18.2.0/24';
    client.ip('route', 'replace', destination, 'via', SERVER_ADDR, 'src', CLIENT_SOURCE[path]);
    const failure = await checkPath(sandbox, client, url, balanced);
    if (failure !== null) {
      progress(`${path}: path check failed: ${failure}`);
      for (const mode of MODES) outcome.measurements.push({ path, mode, report: null, error: `path check failed: ${failure}`, otherCpus: Number.NaN });
      return;
    }
    for (const mode of MODES) outcome.measurements.push(await measure(bench, path, mode, url, hostlb));
  };

  // (a) Direct to one daemon. Both daemons must answer directly first, so a
  // balanced path that reaches one daemon only is the balancer's fault.
  for (const address of DAEMONS) {
    const failure = await checkPath(sandbox, client, `http://${address}:${DAEMON_PORT}/`, false);
    if (failure !== null) throw new Error(`the client cannot reach daemon ${address} directly: ${failure}`);
  }
  await measurePath('direct', directUrl, false, null);

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
    await measurePath('nftables', clusterUrl, true, null);
  } finally {
    server.exec(['nft', 'delete', 'table', 'ip', 'lb']);
  }

  // (c) hostlb in the server namespace.
  try {
    live.hostlb = await startHostlb(sandbox, server, dir);
  } catch (e) {
    const message = (e as Error).message;
    progress(message);
    for (const mode of MODES) outcome.measurements.push({ path: 'hostlb', mode, report: null, error: message.split('\n')[0], otherCpus: Number.NaN });
    outcome.notes.push(message);
    return outcome;
  }
  progress(`hostlb started (pid ${live.hostlb.child.pid})`);
  await measurePath('hostlb', clusterUrl, true, live.hostlb);
  const hostlb = live.hostlb;
  const exitedEarly = hostlb.child.exitCode !== null || hostlb.child.signalCode !== null;
  await stopChild(hostlb.child);
  live.hostlb = null;
  outcome.hostlbLog = hostlb.lines;
  const exit = hostlb.child.exitCode !== null ? `exit code ${hostlb.child.exitCode}` : `signal ${hostlb.child.signalCode}`;
  outcome.hostlbExit = exitedEarly ? `hostlb EXITED BY ITSELF before the benchmark stopped it, ${exit}` : `stopped with SIGTERM, ${exit}`;
  return outcome;
}

// ---- report -------------------------------------------------------------------

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

function printHostlbLog(outcome: Outcome): void {
  if (outcome.hostlbLog.length === 0) return;
  console.log(`hostlb stderr (${outcome.hostlbLog.length} lines; ${outcome.hostlbExit}):`);
  const lines = outcome.hostlbLog;
  const shown = lines.length <= 60 ? lines : [...lines.slice(0, 20), `... ${lines.length - 60} lines left out ...`, ...lines.slice(-40)];
  for (const line of shown) console.log(`  ${line}`);
}

function printTable(measurements: Measurement[]): void {
  const header = [pad('path', 9), pad('mode', 11), pad('req/s', 10, true), pad('requests', 10, true), pad('latency avg/max', 18, true), pad('sock err c/r/w/t', 18, true), pad('non-2xx', 8, true), pad('retrans c/s', 12, true), pad('others cpu', 10, true)];
  console.log(header.join('  '));
  const legend = `(latency from wrk; retrans = TCP segments retransmitted in the client/server namespace; others cpu = CPUs used meanwhile by processes outside the benchmark, at least, of ${cpus().length})`;
  for (const path of PATHS) {
    for (const mode of MODES) {
      const m = measurements.find((x) => x.path === path && x.mode === mode);
      if (m === undefined) continue;
      const r = m.report;
      if (r === null) {
        console.log(`${pad(path, 9)}  ${pad(mode, 11)}  ${pad('error', 10, true)}  ${m.error ?? ''}`);
        continue;
      }
      const e = r.socketErrors;
      console.log([
        pad(path, 9), pad(mode, 11), pad(r.requestsPerSec.toFixed(0), 10, true), pad(String(r.requests), 10, true),
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
  for (const m of measurements) {
    if (m.tun === undefined) continue;
    const t = m.tun;
    if (m.hostlbCpus !== undefined) {
      const loop = m.hostlbLoop ? `; its event-loop thread ran ${(m.hostlbLoop.running * 100).toFixed(0)}% of the time and waited for a CPU ${(m.hostlbLoop.waiting * 100).toFixed(0)}%` : '';
      console.log(`${m.path} ${m.mode}: hostlb used ${(m.hostlbCpus * 100).toFixed(0)}% of one CPU (all threads)${loop}`);
    }
    if (m.hostlb !== undefined) console.log(`${m.path} ${m.mode}: hostlb counters: ${m.hostlb}`);
    console.log(`${m.path} ${m.mode}: ${DEVICE} kernel->hostlb ${t.toHostlb} packets (${t.toHostlbDropped} dropped: queue full), hostlb->kernel ${t.fromHostlb} packets (${t.fromHostlbDropped} dropped)`);
  }
}

function finalLine(label: string, measurements: Measurement[], mode: Mode): string {
  const rate = (path: PathName): number | null => measurements.find((m) => m.path === path && m.mode === mode)?.report?.requestsPerSec ?? null;
  const show = (v: number | null): string => (v === null ? 'error' : v.toFixed(0));
  const h = rate('hostlb');
  const n = rate('nftables');
  const ratio = h !== null && n !== null && n > 0 ? (h / n).toFixed(2) : 'n/a';
  return `${label} hostlb ${show(h)} req/s, nftables ${show(n)} req/s, direct ${show(rate('direct'))} req/s, hostlb/nftables ${ratio}`;
}

// ---- main ---------------------------------------------------------------------

async function main(): Promise<number> {
  if (!hasRoot()) {
    console.error('bench:e2e needs root: it creates network namespaces, a TUN device and nftables rules (run it with sudo or as root).');
    return 1;
  }
  if (!Number.isInteger(SECONDS) || SECONDS < 1) {
    console.error(`bench:e2e: BENCH_SECONDS must be a whole number of seconds >= 1, not ${JSON.stringify(process.env.BENCH_SECONDS)}`);
    return 1;
  }
  const versions = { nginx: toolVersion(['nginx', '-v']), wrk: toolVersion(['wrk', '--version']), curl: toolVersion(['curl', '--version']), nft: toolVersion(['nft', '--version']) };
  const missing = Object.entries(versions).filter(([, v]) => v === 'missing').map(([k]) => k);
  if (missing.length > 0) {
    console.error(`bench:e2e: ${missing.join(', ')} not found: install ${missing.join(' and ')} (Debian: nginx-light, wrk, curl, nftables)`);
    return 1;
  }
  console.log(`setup: ${cpus().length} CPUs, Linux ${release()}, node ${process.version}; ${versions.nginx}; ${versions.wrk.replace(/ Copyright.*/, '')}; nft ${versions.nft}`);
  console.log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} before the run (anything else running shares the same ${cpus().length} CPUs)`);
  console.log(`load: wrk -t${THREADS} -c${CONNECTIONS}, ${SECONDS} s per run (BENCH_SECONDS); new-conn sends "Connection: close"; 2 nginx daemons, 1 worker each`);

  const sandbox = new NetnsSandbox();
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-e2e-'));
  const live: Live = { nginx: [], hostlb: null };
  const teardown = async (): Promise<void> => {
    // hostlb first, so it undoes its journal; nginx by its master, which stops its worker.
    await stopChild(live.hostlb?.child ?? null);
    live.hostlb = null;
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
    outcome = await run(sandbox, dir, live);
  } catch (e) {
    await teardown();
    console.error(`bench:e2e: ${(e as Error).message}`);
    return 1;
  }
  await teardown();

  console.log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} after the run`);
  for (const note of outcome.notes) console.log(note);
  printHostlbLog(outcome);
  printTable(outcome.measurements);
  const failed = outcome.measurements.some((m) => m.report === null);
  const troubled = outcome.measurements.filter((m) => m.report !== null && (socketErrorCount(m.report) > 0 || m.report.non2xx > 0));
  for (const m of troubled) console.log(`note: ${m.path} ${m.mode} had ${socketErrorCount(m.report!)} socket errors and ${m.report!.non2xx} error responses`);
  console.log(finalLine('e2e keep-alive:', outcome.measurements, 'keep-alive'));
  console.log(finalLine('e2e new-conn:  ', outcome.measurements, 'new-conn'));
  return failed ? 1 : 0;
}

process.exitCode = await main();
