// Scale-out behind a front tier (issue 16), end to end: a client namespace,
// a front namespace running HAProxy (mode tcp, balance leastconn, an
// agent-check on each server) and two host namespaces, each running hostlb on
// its own address on the front link (port 80, `agent: { port: 9999 }`, the
// data plane hostlb picks itself) in front of three Node daemons the test
// starts and stops itself (not supervised: a stopped one stays down).
//
//   client ──▶ HAProxy ──▶ host A: hostlb 198.18.11.2:80 ─▶ a1 a2 a3
//                      └─▶ host B: hostlb 198.18.12.2:80 ─▶ b1 b2 b3
//                                  (+ port 81, always down, on B's agent listener)
//
// Under a steady load of new connections (wrk, Connection: close) and one
// keep-alive connection that keeps asking (landed on B):
//
//   1. two of A's daemons stop (SIGTERM): hostlb A's agent line says 33%, and
//      HAProxy's `show stat` shows A at weight 33 of 100 within two agent
//      intervals of that (the one time bound the issue states); over the next
//      SHARE_FLOWS new connections A gets clearly fewer than B (both hostlbs'
//      counts).
//   2. `hostlb port drain` on B: HAProxy shows B in DRAIN; over the next
//      DRAIN_FLOWS new connections at A, HAProxy opens no session to B and
//      hostlb B counts no new flow beyond HAProxy's own health checks, while
//      the keep-alive connection on B goes on being served; `hostlb port
//      undrain`: B is UP again and takes new connections.
//   3. hostlb A gets SIGTERM: HAProxy shows A in MAINT while hostlb A still
//      runs (before its "stopped" line), i.e. before its rules go.
//   4. hostlb A starts again: its answers take A out of MAINT (UP at 33, one
//      daemon of three still down) and A takes new connections.
//
// Throughout: not one failed request (wrk: no socket error, no non-2xx; the
// keep-alive connection: every answer 200 from the same daemon; HAProxy: no
// connection or response error, no retry, no redispatch). Also: B's agent
// listener is shared with port 81 (its one daemon never listens, so the port
// is down), and B reads as up at 100 only because HAProxy's
// `agent-send "80/tcp\n"` names port 80; the daemon behind HAProxy sees
// HAProxy's address, not the client's; `hostlb agent-status --exit-code`
// gives keepalived's codes (102 at 100%, 35 at 33%, 2 drained, 1 stopping).
//
// The weight manager is off (static weights, no slow start), so "a third" is
// exact from the first line (the agent's weight leaves the manager's load
// factor out anyway, but slow start would ramp it). Nothing else is timed: every phase lasts until a counted
// number of new connections was served, every wait has a WAIT_MS bound that
// only a broken system reaches. Everything (namespaces, HAProxy, hostlb,
// daemons, wrk) goes at the end, pass or fail.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { addLoopbackAddress, tempDir } from '../support/daemons.js';
import type { HostlbProcess } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';
import { AdminClient, cli, describeCli, startHostlb, startWrk, type CliRun, type RunningWrk, type WrkSummary } from './health-harness.js';

const WHY_ROOT = 'network namespaces, HAProxy, hostlb with a data plane, Node daemons and wrk';

const CLIENT = '198.18.10.1';
/** HAProxy's address for the clients. */
const FRONT = '198.18.10.2';
const HOSTS = {
  A: { front: '198.18.11.1', address: '198.18.11.2', daemons: ['198.18.21.1:8080', '198.18.21.2:8080', '198.18.21.3:8080'] },
  B: { front: '198.18.12.1', address: '198.18.12.2', daemons: ['198.18.22.1:8080', '198.18.22.2:8080', '198.18.22.3:8080'] },
} as const;
type HostName = keyof typeof HOSTS;
/** Port 81's only daemon on B: nothing listens there, so the port is down and its agent line says so. */
const DOWN_DAEMON = '198.18.22.9:8080';

const AGENT_PORT = 9999;
const AGENT_INTER_MS = 1_000;
/** HAProxy's health check of port 80 (`check inter`): each one is a new connection hostlb counts. */
const CHECK_INTER_MS = 2_000;
/** The one time bound the issue states: HAProxy follows the agent line within two agent intervals. */
const FOLLOW_MS = 2 * AGENT_INTER_MS;
const POLL_MS = 100;

/** Bound on every wait: reached only when something is broken, never part of a pass. */
const WAIT_MS = 60_000;
/** New connections (both hosts) before the first step. */
const WARM_FLOWS = 300;
/** New connections (both hosts) over which A's share is compared with B's after A lost two daemons. */
const SHARE_FLOWS = 10_000;
/** New connections at A over which B, drained, must take none. */
const DRAIN_FLOWS = 5_000;
/** Answers on the keep-alive connection B must give while it is drained. */
const HELD_ANSWERS = 20;
/** New connections B must take after undrain, and after A stopped. */
const AFTER_FLOWS = 500;
/**
 * The plane adds the kernel's per-daemon counts to hostlb's every 250 ms
 * (socket plane SYNC_MS): a count read at once after a change may still lack
 * the connections of the moment before it. Snapshots that open a window wait
 * this long first.
 */
const COUNT_SETTLE_MS = 1_000;

// ---------------------------------------------------------------- HAProxy

function haproxyConfig(statsSocket: string): string {
  const server = (name: HostName): string =>
    `  server ${name} ${HOSTS[name].address}:80 check inter ${CHECK_INTER_MS}ms agent-check agent-port ${AGENT_PORT} agent-inter ${AGENT_INTER_MS}ms agent-send "80/tcp\\n" weight 100`;
  return `global
  maxconn 4096
  nbthread 1
  stats socket ${statsSocket} mode 600 level admin

defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s

frontend web
  bind ${FRONT}:80
  default_backend hosts

backend hosts
  balance leastconn
${server('A')}
${server('B')}
`;
}

/** One server's row of `show stat`, by field name. */
type StatRow = Record<string, string>;

/** Sends one command over HAProxy's stats socket, returns what it answered. */
function haproxyCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(socket);
    let text = '';
    c.setTimeout(10_000, () => c.destroy(new Error(`HAProxy's stats socket: no answer to "${command}" in 10 s`)));
    c.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve(text)).on('error', reject);
    c.write(`${command}\n`);
  });
}

/** `show stat` of backend "hosts": the rows of servers A and B. */
async function showStat(socket: string): Promise<Record<HostName, StatRow>> {
  const lines = (await haproxyCommand(socket, 'show stat')).split('\n').filter((l) => l !== '');
  const header = lines[0]?.replace(/^# /, '').split(',') ?? [];
  const rows: Partial<Record<HostName, StatRow>> = {};
  for (const line of lines.slice(1)) {
    const fields = line.split(',');
    const row = Object.fromEntries(header.map((h, i) => [h, fields[i] ?? '']));
    if (row.pxname === 'hosts' && (row.svname === 'A' || row.svname === 'B')) rows[row.svname] = row;
  }
  if (rows.A === undefined || rows.B === undefined) throw new Error(`show stat has no servers A and B:\n${lines.join('\n')}`);
  return rows as Record<HostName, StatRow>;
}

function brief(row: StatRow): string {
  return `${row.status} weight ${row.weight} agent ${row.agent_status}/${row.agent_code} "${row.agent_desc}" stot ${row.stot} eresp ${row.eresp} econ ${row.econ}`;
}

// ---------------------------------------------------------------- the keep-alive client

/**
 * One keep-alive connection to HAProxy, asking again 20 ms after each answer:
 * prints {connected}, then {n, name, client} per answer (client: the peer the daemon saw); {error} and exit 1 on any
 * failure (an error, a close, a status other than 200, another daemon, a
 * daemon asking to close); "stop" on stdin ends it after the next answer
 * ({done, n}, exit 0).
 */
const KEEP_ALIVE_CLIENT = `
import net from 'node:net';
const [host, port] = process.argv.slice(1);
const s = net.connect(Number(port), host);
let n = 0, buf = '', first = null, stopping = false, ended = false;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const fail = (error) => { if (ended) return; ended = true; say({ error, n }); process.exit(1); };
const ask = () => s.write('GET /?n=' + n + ' HTTP/1.1\\r\\nHost: scale-out\\r\\n\\r\\n');
s.setEncoding('utf8');
s.on('connect', () => { say({ connected: s.localPort }); ask(); });
s.on('data', (chunk) => {
  buf += chunk;
  for (;;) {
    const head = buf.indexOf('\\r\\n\\r\\n');
    if (head < 0) return;
    const headers = buf.slice(0, head);
    const length = /\\r\\ncontent-length: *(\\d+)/i.exec(headers);
    if (length === null) return fail('no content-length: ' + headers);
    const end = head + 4 + Number(length[1]);
    if (buf.length < end) return;
    const body = buf.slice(head + 4, end);
    buf = buf.slice(end);
    if (!headers.startsWith('HTTP/1.1 200 ')) return fail('answer ' + headers.split('\\r\\n')[0]);
    if (/\\r\\nconnection: *close/i.test(headers)) return fail('the daemon asked to close the connection');
    const { name, client } = JSON.parse(body);
    n += 1;
    if (first === null) first = name;
    else if (name !== first) return fail('answer ' + n + ' from ' + name + ', the first from ' + first);
    say({ n, name, client });
    if (stopping) { ended = true; s.end(); say({ done: true, n }); return; }
    setTimeout(ask, 20);
  }
});
s.on('error', (e) => fail(String(e)));
s.on('close', () => { if (!ended) fail('connection closed'); else process.exit(0); });
process.stdin.setEncoding('utf8').on('data', (d) => { if (d.includes('stop')) stopping = true; });
`;

class KeepAliveClient {
  answers = 0;
  name: string | null = null;
  /** The client address and port the daemon saw. */
  client: string | null = null;
  error: string | null = null;
  done = false;
  private text = '';

  constructor(readonly child: ChildProcess) {
    let pending = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = JSON.parse(pending.slice(0, nl)) as { n?: number; name?: string; client?: string; error?: string; done?: boolean };
        pending = pending.slice(nl + 1);
        if (line.error !== undefined) this.error = line.error;
        if (line.done === true) this.done = true;
        if (line.n !== undefined && line.name !== undefined) {
          this.answers = line.n;
          this.name = line.name;
          this.client = line.client ?? null;
        }
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.text = (this.text + chunk).slice(-4_000)));
    // The sandbox may kill it first at cleanup: a write then fails with EPIPE, no news.
    child.stdin?.on('error', () => undefined);
  }

  static start(sandbox: NetnsSandbox, ns: Namespace): KeepAliveClient {
    return new KeepAliveClient(sandbox.spawn(ns, [process.execPath, '--input-type=module', '-e', KEEP_ALIVE_CLIENT, FRONT, '80'], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  describe(): string {
    return `keep-alive client: ${this.answers} answers from ${this.name} (seeing ${this.client}), error ${this.error}, exit ${this.child.exitCode ?? this.child.signalCode}${this.text ? `, stderr ${this.text}` : ''}`;
  }

  /** Ends the connection after its next answer; resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.running) {
      this.child.stdin?.write('stop\n');
      const exited = once(this.child, 'exit');
      const bound = sleep(WAIT_MS, 'timeout' as const, { ref: false });
      if (await Promise.race([exited.then(() => 'exited' as const), bound]) === 'timeout') this.child.kill('SIGKILL');
    }
    return this.child.exitCode;
  }
}

// ---------------------------------------------------------------- the daemons

/**
 * Each answer takes this long, as real work does: connections then last about
 * as long at every host, so leastconn's balance of connections in progress
 * (what the weight steers) is also the split of new connections. Answered at
 * once, a host's connections last as long as CPU contention on this shared
 * machine makes them, and A with one daemon left took 0.52 of B's new
 * connections in one run while holding 0.32 of its connections in progress.
 */
const DAEMON_DELAY_MS = 50;

/**
 * The daemons: HTTP on $HOST:$PORT answering every request with JSON naming
 * $NAME (and the peer it saw) after DELAY_MS, and GET /health at once with
 * 200 — until SIGTERM. From then on /health says 503 while everything else is
 * still served (`connection: close`), and the listening socket stays open
 * until no request but /health has come for QUIET_MS: hostlb's advisor has
 * taken the daemon out and nothing new is on its way. Only then does it close,
 * and it exits 0 once its connections ended.
 *
 * Why not fixtures/graceful-http-daemon.mjs, which closes its listener at
 * once: connections the kernel already completed into the accept queue are
 * reset when a listening socket closes, so under this load every such stop
 * failed requests (measured: 3 to 30 wrk read errors, HAProxy eresp at A, in
 * the 100 ms after the SIGTERM) whatever the data plane and the front tier
 * do. A daemon that goes quiet first is what a load-balanced daemon does.
 */
const LAME_DUCK_DAEMON = `
import { createServer } from 'node:http';
const { HOST: host, PORT: port, NAME: name } = process.env;
const DELAY_MS = Number(process.env.DELAY_MS);
const QUIET_MS = 1000;
let stopping = false;
let lastRequest = Date.now();
const server = createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(stopping ? 503 : 200, { 'content-length': 0 });
    return res.end();
  }
  lastRequest = Date.now();
  const body = JSON.stringify({ name, pid: process.pid, client: req.socket.remoteAddress + ':' + req.socket.remotePort });
  setTimeout(() => {
    const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    if (stopping) headers.connection = 'close';
    res.writeHead(200, headers);
    res.end(body);
  }, DELAY_MS);
});
server.keepAliveTimeout = 5000;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  console.log('SIGTERM: failing /health until no request comes');
  const quiet = setInterval(() => {
    if (Date.now() - lastRequest < QUIET_MS) return;
    clearInterval(quiet);
    console.log('quiet: closing');
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  }, 50);
});
process.stdin.on('end', () => process.exit(0)).resume();
server.listen(Number(port), host, () => console.log('listening on ' + host + ':' + port));
`;

interface Daemon {
  name: string;
  child: ChildProcess;
  output(): string;
}

/** One LAME_DUCK_DAEMON per endpoint in `ns` (ended by EOF on stdin, or by the sandbox); resolves when all listen. */
async function startDaemons(sandbox: NetnsSandbox, ns: Namespace, host: HostName): Promise<Daemon[]> {
  const daemons = HOSTS[host].daemons.map((endpoint, i): Daemon => {
    const [address, port] = endpoint.split(':');
    const name = `${host.toLowerCase()}${i + 1}`;
    const child = sandbox.spawn(ns, [process.execPath, '--input-type=module', '-e', LAME_DUCK_DAEMON], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOST: address, PORT: port, NAME: name, DELAY_MS: String(DAEMON_DELAY_MS) } });
    let text = '';
    const add = (chunk: Buffer): void => void (text = (text + chunk.toString('utf8')).slice(-4_000));
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    return { name, child, output: () => text };
  });
  const deadline = Date.now() + WAIT_MS;
  for (const d of daemons) {
    while (!d.output().includes('listening on')) {
      if (d.child.exitCode !== null || d.child.signalCode !== null) throw new Error(`daemon ${d.name} exited: ${d.output()}`);
      if (Date.now() > deadline) throw new Error(`daemon ${d.name} not listening after ${WAIT_MS} ms: ${d.output()}`);
      await sleep(20);
    }
  }
  return daemons;
}

/** The child's exit code once it exited; 'running' when it still runs after WAIT_MS. */
async function exitOf(child: ChildProcess): Promise<number | null | 'running'> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return Promise.race([exited, sleep(WAIT_MS, 'running' as const, { ref: false })]);
}

// ---------------------------------------------------------------- hostlb

function hostConfig(name: HostName): Record<string, unknown> {
  const port = (p: number, daemons: readonly string[], advisor: Record<string, unknown>): Record<string, unknown> => ({
    port: p,
    scheduler: 'wlc',
    advisor,
    // Static weights, no slow start: the agent's percentage is then the share of configured capacity up.
    manager: { enabled: false, slowStart: 0 },
    agent: { port: AGENT_PORT },
    daemons: daemons.map((address) => ({ address })),
  });
  const ports = [port(80, HOSTS[name].daemons, { type: 'http', path: '/health', interval: '500ms', timeout: '500ms', rise: 2, fall: 2 })];
  // B's agent listener is shared with a port that is down: only agent-send's "80/tcp" gets port 80's line.
  if (name === 'B') ports.push(port(81, [DOWN_DAEMON], { type: 'tcp', interval: '500ms', timeout: '500ms', rise: 2, fall: 2 }));
  return { device: 'hlb0', dataplane: 'auto', clusters: [{ address: HOSTS[name].address, ports }] };
}

interface AgentView {
  name: string;
  listener: string | null;
  state: string;
  weightPercent: number;
  line: string;
  drained: boolean;
}

interface Host {
  name: HostName;
  ns: Namespace;
  hostlb: HostlbProcess;
  admin: AdminClient;
  daemons: Daemon[];
}

const agentPath = (h: Host, port = 80): string => `/v1/clusters/${HOSTS[h.name].address}/ports/${port}/tcp/agent`;
const agentOf = (h: Host, port = 80): Promise<AgentView> => h.admin.get<AgentView>(agentPath(h, port));
/** New flows hostlb counted on port 80, all daemons. */
const flowsOf = async (h: Host): Promise<number> => Object.values(await h.admin.newFlows(80)).reduce((a, b) => a + b, 0);

/** `hostlb agent-status CLUSTER 80 --exit-code` on host `h`. */
function agentStatus(sandbox: NetnsSandbox, h: Host): Promise<CliRun> {
  return cli(sandbox, h.ns, h.hostlb, ['agent-status', HOSTS[h.name].address, '80', '--exit-code']);
}

// ---------------------------------------------------------------- the test

test('scale-out behind HAProxy: the agent steers weight, drain and stop; not one request fails', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const client = sandbox.namespace();
  const front = sandbox.namespace();
  sandbox.veth(client, front, { a: `${CLIENT}/24`, b: `${FRONT}/24` });
  // wrk and HAProxy open a new connection per request: reuse TIME_WAIT ports as load generators do.
  client.writeSysctl('net/ipv4/tcp_tw_reuse', '1');
  front.writeSysctl('net/ipv4/tcp_tw_reuse', '1');
  const namespaces = {} as Record<HostName, Namespace>;
  for (const name of ['A', 'B'] as const) {
    const ns = sandbox.namespace();
    sandbox.veth(front, ns, { a: `${HOSTS[name].front}/24`, b: `${HOSTS[name].address}/24` });
    for (const d of HOSTS[name].daemons) addLoopbackAddress(ns, d.split(':')[0]);
    namespaces[name] = ns;
  }
  addLoopbackAddress(namespaces.B, DOWN_DAEMON.split(':')[0]);

  const hosts: Host[] = [];
  let haproxy: ChildProcess | undefined;
  let haproxyOutput = '';
  let wrk: RunningWrk | undefined;
  const held: KeepAliveClient[] = [];
  const statsSocket = join(dir, 'haproxy.sock');
  const trace: string[] = [];
  const t0 = Date.now();
  const at = (): string => `${((Date.now() - t0) / 1000).toFixed(2)} s`;
  const note = (line: string): void => void trace.push(`${at()} ${line}`);
  const evidence = async (): Promise<string> => {
    const parts = [`\n--- trace:\n${trace.slice(-80).join('\n')}`];
    try {
      const stat = await showStat(statsSocket);
      parts.push(`--- HAProxy show stat: A ${brief(stat.A)}; B ${brief(stat.B)}`);
    } catch (error) {
      parts.push(`--- HAProxy show stat: ${String(error)}`);
    }
    parts.push(`--- HAProxy output (tail):\n${haproxyOutput.slice(-3_000)}`);
    for (const k of held) parts.push(`--- ${k.describe()}`);
    for (const h of hosts) parts.push(`--- host ${h.name}: ${await h.admin.evidence(h.hostlb)}`);
    return parts.join('\n');
  };

  try {
    for (const name of ['A', 'B'] as const) {
      const ns = namespaces[name];
      const daemons = await startDaemons(sandbox, ns, name);
      const hostlb = await startHostlb({ sandbox, client, server: ns, dir: join(dir, name) }, hostConfig(name));
      hosts.push({ name, ns, hostlb, admin: AdminClient.of(hostlb), daemons });
    }
    const [A, B] = hosts;
    const planes = hosts.map((h) => `${h.name}: ${String(h.hostlb.events.find((e) => e.event === 'dataplane_chosen')?.dataplane ?? '?')}`);
    console.log(`  data planes (dataplane: auto): ${planes.join(', ')}`);
    for (const h of hosts) {
      const listening = await Promise.race([h.hostlb.waitForEvent('agent_listening'), sleep(WAIT_MS, null, { ref: false })]);
      assert.ok(listening !== null, `hostlb ${h.name} logged agent_listening${await evidence()}`);
    }

    writeFileSync(join(dir, 'haproxy.cfg'), haproxyConfig(statsSocket));
    haproxy = sandbox.spawn(front, ['haproxy', '-f', join(dir, 'haproxy.cfg'), '-db'], { cwd: dir });
    const keep = (chunk: string): void => void (haproxyOutput = (haproxyOutput + chunk).slice(-20_000));
    haproxy.stdout?.setEncoding('utf8').on('data', keep);
    haproxy.stderr?.setEncoding('utf8').on('data', keep);

    /** Polls `read` every POLL_MS until `pred` holds (returns the value), or fails with evidence after WAIT_MS. */
    const until = async <T>(what: string, read: () => Promise<T>, pred: (v: T) => boolean): Promise<T> => {
      const deadline = Date.now() + WAIT_MS;
      let last: unknown;
      for (;;) {
        if (haproxy !== undefined && (haproxy.exitCode !== null || haproxy.signalCode !== null)) assert.fail(`HAProxy exited (${haproxy.exitCode ?? haproxy.signalCode}) while waiting for ${what}${await evidence()}`);
        try {
          const v = await read();
          if (pred(v)) return v;
          last = v;
        } catch (error) {
          last = String(error);
        }
        if (Date.now() > deadline) assert.fail(`${what}: not within ${WAIT_MS} ms; last ${JSON.stringify(last)}${await evidence()}`);
        await sleep(POLL_MS);
      }
    };

    // Both hosts up at full weight in HAProxy, as their agents say. B's up only because agent-send named port 80:
    // the listener's other port is down, and unnamed it would speak for the listener.
    await until('both agents saying "up ready 100%"', () => Promise.all(hosts.map((h) => agentOf(h))), (v) => v.every((a) => a.line === 'up ready 100%'));
    const port81 = await until(`B's port 81 down (nothing listens on ${DOWN_DAEMON})`, () => agentOf(B, 81), (a) => a.state === 'down');
    note(`B's port 81 agent line: ${port81.line} (listener ${port81.listener})`);
    const ready = await until('HAProxy showing A and B UP at weight 100 after an agent check', () => showStat(statsSocket),
      (s) => [s.A, s.B].every((r) => r.status === 'UP' && r.weight === '100' && r.agent_status === 'L7OK'));
    console.log(`  ready: A ${brief(ready.A)}; B ${brief(ready.B)}; B's port 81 (same agent listener) says "${port81.line}"`);
    const full = await agentStatus(sandbox, A);
    assert.equal(full.code, 102, `agent-status --exit-code at 100%: 2 + 100\n${describeCli(full)}`);
    assert.equal(full.stdout.trim(), 'up ready 100%', describeCli(full));

    // The keep-alive connection must be on B. leastconn sends a connection to the server with the fewest:
    // with nothing else open, the second lands on B if the first went to A.
    for (let i = 0; i < 3 && !held.some((k) => k.name?.startsWith('b') === true); i++) {
      const k = KeepAliveClient.start(sandbox, client);
      held.push(k);
      await until(`keep-alive connection ${i + 1} answered`, async () => ({ name: k.name, error: k.error, running: k.running }), (v) => v.name !== null || v.error !== null || !v.running);
      note(`keep-alive connection ${i + 1} on ${k.name}`);
    }
    const onB = held.find((k) => k.name?.startsWith('b') === true);
    assert.ok(onB !== undefined, `a keep-alive connection landed on B: ${held.map((k) => k.describe()).join('; ')}${await evidence()}`);
    for (const k of held.filter((x) => x !== onB)) assert.equal(await k.stop(), 0, `the keep-alive connection on A ended cleanly: ${k.describe()}`);
    // HAProxy ends the client's TCP connection and opens its own: the daemon sees HAProxy, not the client.
    console.log(`  keep-alive connection on ${onB.name}: the daemon sees the client as ${onB.client} (the client is ${CLIENT}, HAProxy on B's link ${HOSTS.B.front})`);
    assert.equal(onB.client?.split(':')[0], HOSTS.B.front, `behind HAProxy the daemon sees HAProxy's address: ${onB.describe()}`);

    wrk = startWrk(sandbox, client, ['-t2', '-c64', '-d600s', '--timeout', '5s', '-H', 'Connection: close', `http://${FRONT}/`], 660_000);
    const start = await Promise.all(hosts.map(flowsOf));
    await until(`${WARM_FLOWS} new connections at each host`, () => Promise.all(hosts.map(flowsOf)), (n) => n.every((x, i) => x >= start[i] + WARM_FLOWS));
    note('load running at both hosts');

    // ---- 1. two of A's three daemons stop: the agent says 33%, HAProxy follows, A's share drops.
    const killAt = Date.now();
    const killed = A.daemons.slice(0, 2);
    for (const d of killed) d.child.kill('SIGTERM');
    let lineAt = 0;
    let weightAt = 0;
    let lastLine = '';
    let lastWeight = '';
    let lastSeen = '';
    await until('A at about a third in its agent line and in HAProxy', async () => {
      const [agent, stat] = await Promise.all([agentOf(A), showStat(statsSocket)]);
      const now = Date.now();
      if (agent.line !== lastLine) note(`A's agent: ${(lastLine = agent.line)}`);
      const seen = `${stat.A.status} ${stat.A.weight} ${stat.A.eresp}`;
      if (seen !== lastSeen) note(`HAProxy: A ${brief(stat.A)}`);
      lastSeen = seen;
      lastWeight = stat.A.weight;
      if (lineAt === 0 && agent.state === 'up' && agent.weightPercent >= 30 && agent.weightPercent <= 36) lineAt = now;
      const w = Number(stat.A.weight);
      if (weightAt === 0 && stat.A.status === 'UP' && w >= 30 && w <= 36) weightAt = now;
      return lineAt !== 0 && weightAt !== 0;
    }, (done) => done);
    const exits = await Promise.all(killed.map((d) => exitOf(d.child)));
    const third = await agentOf(A);
    console.log(`  1. a1, a2 stopped: A's agent said "${third.line}" ${lineAt - killAt} ms after the SIGTERM; HAProxy showed weight ${lastWeight} ${weightAt - lineAt} ms after the line (bound ${FOLLOW_MS} ms)`);
    assert.deepEqual(exits, [0, 0], `a1 and a2 went quiet and exited 0: ${killed.map((d) => d.output()).join(' | ')}${await evidence()}`);
    assert.equal(third.line, 'up ready 33%', `one of three equal daemons left: 33%${await evidence()}`);
    assert.ok(weightAt - lineAt <= FOLLOW_MS, `HAProxy followed A's agent line within two agent intervals (${FOLLOW_MS} ms): ${weightAt - lineAt} ms${await evidence()}`);
    const atThird = await agentStatus(sandbox, A);
    assert.equal(atThird.code, 35, `agent-status --exit-code at 33%: 2 + 33\n${describeCli(atThird)}`);

    await sleep(COUNT_SETTLE_MS);
    const shareFrom = await Promise.all(hosts.map(flowsOf));
    const statFrom = await showStat(statsSocket);
    note(`share window opens: A ${brief(statFrom.A)}`);
    const scur = { A: 0, B: 0, n: 0 };
    const shareTo = await until(`${SHARE_FLOWS} new connections after A's weight fell`, async () => {
      const stat = await showStat(statsSocket);
      scur.A += Number(stat.A.scur);
      scur.B += Number(stat.B.scur);
      scur.n += 1;
      return Promise.all(hosts.map(flowsOf));
    }, (n) => n[0] + n[1] - shareFrom[0] - shareFrom[1] >= SHARE_FLOWS);
    const statTo = await showStat(statsSocket);
    const [shareA, shareB] = [shareTo[0] - shareFrom[0], shareTo[1] - shareFrom[1]];
    const lb = (h: HostName): number => Number(statTo[h].lbtot) - Number(statFrom[h].lbtot);
    console.log(`  1. share of the next ${shareA + shareB} new connections: A ${shareA}, B ${shareB} (A/B ${(shareA / shareB).toFixed(2)}; HAProxy lbtot A ${lb('A')}, B ${lb('B')}; connections in progress, mean of ${scur.n} samples: A ${(scur.A / scur.n).toFixed(1)}, B ${(scur.B / scur.n).toFixed(1)})`);
    assert.ok(shareA < 0.5 * shareB, `A (one daemon of three, weight 33) takes clearly fewer new connections than B: A ${shareA}, B ${shareB}${await evidence()}`);
    assert.ok(shareA > 0, `A, still up, takes some: ${shareA}`);

    // ---- 2. drain B: DRAIN in HAProxy, nothing new to B, its keep-alive connection still served; undrain.
    const drainAt = Date.now();
    const drain = await cli(sandbox, B.ns, B.hostlb, ['port', 'drain', HOSTS.B.address, '80']);
    note(`B drained: ${drain.stdout.trim()}`);
    assert.equal(drain.code, 0, describeCli(drain));
    assert.equal((await agentOf(B)).line, 'up drain 100%', `B's agent line while drained${await evidence()}`);
    await until('HAProxy showing B in DRAIN', () => showStat(statsSocket), (s) => s.B.status.startsWith('DRAIN'));
    const drainSeen = Date.now();
    note(`HAProxy: B in DRAIN; A ${brief((await showStat(statsSocket)).A)}`);
    const whileDrained = await agentStatus(sandbox, B);
    assert.equal(whileDrained.code, 2, `agent-status --exit-code while drained: 2 (weight 0)\n${describeCli(whileDrained)}`);
    await sleep(COUNT_SETTLE_MS);
    const drainFrom = { at: Date.now(), a: await flowsOf(A), b: await flowsOf(B), stat: await showStat(statsSocket), held: onB.answers };
    const drainTo = await until(`${DRAIN_FLOWS} new connections at A and ${HELD_ANSWERS} answers on B's keep-alive connection while B is drained`,
      async () => ({ a: await flowsOf(A), held: onB.answers, error: onB.error }),
      (v) => v.error !== null || (v.a >= drainFrom.a + DRAIN_FLOWS && v.held >= drainFrom.held + HELD_ANSWERS));
    const drainEnd = { at: Date.now(), b: await flowsOf(B), stat: await showStat(statsSocket) };
    const window = drainEnd.at - drainFrom.at;
    const checks = Math.floor(window / CHECK_INTER_MS) + 2;
    const sessionsB = Number(drainEnd.stat.B.stot) - Number(drainFrom.stat.B.stot);
    console.log(`  2. B drained: HAProxy showed DRAIN ${drainSeen - drainAt} ms after the drain call; over ${drainTo.a - drainFrom.a} new connections at A (${window} ms): HAProxy sessions to B ${sessionsB}, hostlb B new flows ${drainEnd.b - drainFrom.b} (HAProxy's health checks: at most ${checks}), keep-alive answers on ${onB.name} ${drainTo.held - drainFrom.held}`);
    assert.equal(onB.error, null, `the keep-alive connection on B is served while B is drained: ${onB.describe()}${await evidence()}`);
    assert.equal(sessionsB, 0, `HAProxy opened no session to B while it was drained${await evidence()}`);
    assert.ok(drainEnd.b - drainFrom.b <= checks, `hostlb B took no new connection but HAProxy's health checks (at most ${checks} in ${window} ms): ${drainEnd.b - drainFrom.b}${await evidence()}`);
    assert.match(drainEnd.stat.B.status, /^DRAIN/, `B still in DRAIN${await evidence()}`);

    const undrainAt = Date.now();
    const undrain = await cli(sandbox, B.ns, B.hostlb, ['port', 'undrain', HOSTS.B.address, '80']);
    note(`B undrained: ${undrain.stdout.trim()}`);
    assert.equal(undrain.code, 0, describeCli(undrain));
    assert.equal((await agentOf(B)).line, 'up ready 100%', `B's agent line after undrain${await evidence()}`);
    await until('HAProxy showing B UP at weight 100 again', () => showStat(statsSocket), (s) => s.B.status === 'UP' && s.B.weight === '100');
    const readyAgain = Date.now();
    const backFrom = await flowsOf(B);
    await until(`${AFTER_FLOWS} new connections at B after undrain`, () => flowsOf(B), (n) => n >= backFrom + AFTER_FLOWS);
    console.log(`  2. B undrained: HAProxy showed it UP at 100 ${readyAgain - undrainAt} ms after the undrain call; it took ${AFTER_FLOWS}+ new connections again`);

    // ---- 3. stop hostlb A: HAProxy shows MAINT while hostlb A still runs, i.e. before its rules go.
    const stopAt = Date.now();
    const stopping = A.hostlb.stop('SIGTERM');
    let maintAt = 0;
    let stoppedBeforeMaint = false;
    let runningAtMaint = false;
    let maintStatus = '';
    await until('HAProxy showing A in MAINT', () => showStat(statsSocket), (s) => {
      if (!s.A.status.startsWith('MAINT')) return false;
      maintAt = Date.now();
      maintStatus = s.A.status;
      stoppedBeforeMaint = A.hostlb.events.some((e) => e.event === 'stopped');
      runningAtMaint = A.hostlb.running;
      return true;
    });
    note(`HAProxy: A ${maintStatus}; hostlb A running ${runningAtMaint}, "stopped" logged ${stoppedBeforeMaint}`);
    // A stopping hostlb's admin API is closed: keepalived's check must read that as down (1), never as a weight.
    const whileStopping = await agentStatus(sandbox, A);
    const exit = await stopping;
    const stoppedAt = Date.now();
    const maintLogged = A.hostlb.events.some((e) => e.event === 'agent_maint');
    console.log(`  3. hostlb A stopping: HAProxy showed ${maintStatus} ${maintAt - stopAt} ms after the SIGTERM, while hostlb A still ran; hostlb A exited ${exit.code ?? exit.signal} ${stoppedAt - stopAt} ms after the SIGTERM`);
    assert.ok(runningAtMaint && !stoppedBeforeMaint, `MAINT was seen before hostlb A stopped (running ${runningAtMaint}, "stopped" logged ${stoppedBeforeMaint})${await evidence()}`);
    assert.ok(maintLogged, `hostlb A logged agent_maint${await evidence()}`);
    assert.equal(exit.code, 0, `hostlb A stopped cleanly${await evidence()}`);
    assert.equal(whileStopping.code, 1, `agent-status --exit-code while hostlb A stops: 1 (down)\n${describeCli(whileStopping)}`);
    const lastFrom = await flowsOf(B);
    await until(`${AFTER_FLOWS} new connections at B after A stopped`, () => flowsOf(B), (n) => n >= lastFrom + AFTER_FLOWS);

    // ---- 4. hostlb A again (the test stopped it): its first answer, "up ready 33%", takes A out of MAINT.
    const againAt = Date.now();
    const againHostlb = await startHostlb({ sandbox, client, server: A.ns, dir: join(dir, 'A') }, hostConfig('A'));
    const again: Host = { ...A, hostlb: againHostlb, admin: AdminClient.of(againHostlb) };
    hosts[0] = again;
    // A new hostlb counts a daemon only once its advisor has answered: a1 and a2 do not listen, so no
    // line may promise more than a3's third, not even in the first second.
    lastSeen = '';
    const weightsAfterStart = new Set<string>();
    await until('HAProxy showing A UP at weight 33 again', () => showStat(statsSocket), (s) => {
      const seen = `${s.A.status} ${s.A.weight}`;
      if (seen !== lastSeen) note(`HAProxy: A ${brief(s.A)}`);
      lastSeen = seen;
      if (s.A.status.startsWith('UP')) weightsAfterStart.add(s.A.weight);
      return s.A.status === 'UP' && s.A.weight === '33';
    });
    const upAgainAt = Date.now();
    const againFrom = await flowsOf(again);
    await until(`${AFTER_FLOWS} new connections at A after its hostlb came back`, () => flowsOf(again), (n) => n >= againFrom + AFTER_FLOWS);
    console.log(`  4. hostlb A started again: HAProxy showed A UP at weight 33 ${upAgainAt - againAt} ms after the start began (weights shown while UP on the way: ${[...weightsAfterStart].join(', ')}); it took ${AFTER_FLOWS}+ new connections again`);
    assert.ok([...weightsAfterStart].every((w) => Number(w) <= 33), `a restarted hostlb never promised more than its one listening daemon: weights while UP ${[...weightsAfterStart].join(', ')}`);

    // ---- not one request failed.
    wrk.stop();
    const summary: WrkSummary = await wrk.done;
    const heldExit = await onB.stop();
    const final = await showStat(statsSocket);
    const errors = (r: StatRow): string => `econ ${r.econ} eresp ${r.eresp} wretr ${r.wretr} wredis ${r.wredis}`;
    console.log(`  wrk: ${summary.requests} requests; socket errors ${JSON.stringify(summary.socketErrors)}; non-2xx ${summary.non2xx}; keep-alive connection: ${onB.answers} answers from ${onB.name}, exit ${heldExit}; HAProxy A ${errors(final.A)}, B ${errors(final.B)}`);
    assert.equal(summary.code, 0, `wrk ran\n${summary.output}`);
    assert.deepEqual(summary.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors\n${summary.output}${await evidence()}`);
    assert.equal(summary.non2xx, 0, `no non-2xx answers\n${summary.output}`);
    assert.ok(onB.error === null && onB.done && heldExit === 0, `the keep-alive connection was served to the end: ${onB.describe()}`);
    for (const h of ['A', 'B'] as const) {
      assert.deepEqual([final[h].econ, final[h].eresp, final[h].wretr, final[h].wredis], ['0', '0', '0', '0'], `HAProxy: no connection or response error, retry or redispatch at ${h}: ${errors(final[h])}`);
    }
  } finally {
    wrk?.stop();
    await wrk?.done.catch(() => undefined);
    for (const k of held) if (k.running) k.child.kill('SIGKILL');
    for (const h of hosts) await h.hostlb.stop().catch((error: unknown) => console.log(`  hostlb ${h.name} did not stop cleanly: ${String(error)}`));
    if (haproxy !== undefined && haproxy.exitCode === null && haproxy.signalCode === null) {
      haproxy.kill('SIGTERM');
      await Promise.race([once(haproxy, 'exit'), sleep(10_000, undefined, { ref: false })]);
    }
    sandbox.cleanup();
  }
});
