// Live reconfiguration under load: while wrk drives new connections (and a few
// keep-alive ones) through 198.18.100.1:80, the CLI adds a daemon, changes a
// weight, quiesces a daemon, swaps schedulers, reloads a rewritten config file
// and removes a daemon. No request may fail, no reply may escape translation,
// each daemon's access log must show new connections exactly where the
// configuration of the moment allows them, and keep-alive connections to the
// quiesced and removed daemons must go on until wrk stops. A second test gives
// `reload` (and SIGHUP) a broken file: rejected with the key and line named,
// the running configuration unchanged, traffic unhurt.
//
// The daemons are nginx with their own access-log format (time, nginx's
// connection serial and the request's number on that connection), so a log
// line tells when its connection carried its first request.

import assert from 'node:assert/strict';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { addLoopbackAddress, splitEndpoint, stopDaemons, tempDir } from '../support/daemons.js';
import { CLIENT_V4, CLUSTER_V4, clusterTopology, HOSTLB_MAIN, HostlbProcess, nftCounters, nftLoad } from '../support/hostlb-process.js';
import { ALL_DATAPLANES, assertPlaneGone, type Dataplane, nftDaemons } from '../support/dataplanes.js';
import { type Namespace, NetnsSandbox, type RunResult, skipUnlessRoot } from '../support/netns.js';
import { type RunningWrk, startWrk } from '../support/wrk.js';

const ENDPOINTS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080', '198.18.2.4:8080'];
const [D1, D2, D3, D4] = ENDPOINTS;
const URL_ = `http://${CLUSTER_V4}/`;
/**
 * A connection whose first request reached nginx this long after a command
 * returned was scheduled after the command took effect. It covers the
 * handshake and wrk writing its request (a few ms here), one lost SYN
 * retransmitted at 1 s, and a busy machine. A margin, not a measurement: each
 * phase goes on until PHASE_FLOWS new connections began after it.
 */
const SETTLE_MS = 3_000;
/** New connections that must begin after a change settled before the next change (and before the load stops). */
const PHASE_FLOWS = 300;
/** Requests each keep-alive connection must carry after the last change before the load stops. */
const KEEPALIVE_AFTER = 20;
/** Bound on waiting for a count or a state: reached only when something is broken, never part of a pass. */
const WAIT_MS = 120_000;

/** At the client: TCP that arrives from a daemon's own address escaped translation. */
const ESCAPED = `
table inet hlbt {
  counter fromdaemons {}
  chain in {
    type filter hook input priority 0; policy accept;
    ip saddr 198.18.2.0/24 meta l4proto tcp counter name fromdaemons
  }
}
`;

// ---------------------------------------------------------------- daemons

/** One access-log line: when the request began and which connection carried it. */
interface LoggedRequest {
  /** When nginx read the request's first bytes (ms since the epoch, the test's clock). */
  startMs: number;
  /** nginx's connection serial (unique within one daemon process). */
  connection: number;
  /** The request's number on its connection: 1 for the first. */
  connectionRequest: number;
  clientAddress: string;
  clientPort: number;
  status: number;
}

interface LoggingDaemon {
  readonly name: string;
  readonly endpoint: string;
  readonly child: ReturnType<NetnsSandbox['spawn']>;
  output(): string;
  requests(): LoggedRequest[];
}

function nginxConfig(name: string, home: string, endpoint: string): string {
  return [
    'daemon off;',
    'master_process off;',
    `pid ${join(home, 'nginx.pid')};`,
    `error_log ${join(home, 'error.log')} warn;`,
    `lock_file ${join(home, 'nginx.lock')};`,
    'events { worker_connections 4096; }',
    'http {',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((p) => `  ${p}_temp_path ${join(home, p)};`),
    // Unbuffered: every line is in the file when the request ends.
    '  log_format timed \'$msec $request_time $connection $connection_requests $remote_addr:$remote_port $status\';',
    `  access_log ${join(home, 'access.log')} timed;`,
    '  keepalive_requests 1000000;',
    '  keepalive_timeout 60s;',
    '  server {',
    `    listen ${endpoint};`,
    `    location = / { default_type text/plain; return 200 "${name} $remote_addr:$remote_port\\n"; }`,
    '  }',
    '}',
    '',
  ].join('\n');
}

function parseTimedLog(text: string): LoggedRequest[] {
  return text.split('\n').filter((line) => line !== '').map((line) => {
    const [msec, requestTime, connection, connectionRequest, client, status] = line.split(' ');
    const i = client.lastIndexOf(':');
    return {
      startMs: Math.round((Number(msec) - Number(requestTime)) * 1000),
      connection: Number(connection),
      connectionRequest: Number(connectionRequest),
      clientAddress: client.slice(0, i),
      clientPort: Number(client.slice(i + 1)),
      status: Number(status),
    };
  });
}

/** nginx per endpoint (d1, d2, ...), one process each, logging in the `timed` format; resolves once each has written its pid file. */
async function startLoggingDaemons(sandbox: NetnsSandbox, ns: Namespace, dir: string, endpoints: string[]): Promise<LoggingDaemon[]> {
  const daemons = endpoints.map((endpoint, i): LoggingDaemon => {
    const name = `d${i + 1}`;
    const home = join(dir, `nginx-${name}`);
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, 'nginx.conf'), nginxConfig(name, home, endpoint));
    const child = sandbox.spawn(ns, ['nginx', '-p', `${home}/`, '-c', join(home, 'nginx.conf')]);
    let text = '';
    const add = (chunk: Buffer): void => {
      text = (text + chunk.toString('utf8')).slice(-8_192);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    const read = (file: string): string => (existsSync(join(home, file)) ? readFileSync(join(home, file), 'utf8') : '');
    // The test counts requests while the load runs, so the log is read on from where the last call stopped.
    const log = { offset: 0, requests: [] as LoggedRequest[] };
    const requests = (): LoggedRequest[] => {
      const path = join(home, 'access.log');
      if (!existsSync(path)) return log.requests;
      const fd = openSync(path, 'r');
      try {
        const size = fstatSync(fd).size;
        if (size <= log.offset) return log.requests;
        const chunk = Buffer.alloc(size - log.offset);
        readSync(fd, chunk, 0, chunk.length, log.offset);
        // Only whole lines; a half-written last line is read again next time.
        const end = chunk.lastIndexOf(10) + 1;
        log.offset += end;
        for (const r of parseTimedLog(chunk.subarray(0, end).toString('utf8'))) log.requests.push(r);
        return log.requests;
      } finally {
        closeSync(fd);
      }
    };
    return { name, endpoint, child, output: () => text + read('error.log'), requests };
  });
  const deadline = Date.now() + 60_000;
  try {
    for (const d of daemons) {
      while (!existsSync(join(dir, `nginx-${d.name}`, 'nginx.pid'))) {
        if (d.child.exitCode !== null || d.child.signalCode !== null) throw new Error(`nginx ${d.name} (${d.endpoint}) exited before it was ready: ${d.output()}`);
        if (Date.now() > deadline) throw new Error(`nginx ${d.name} (${d.endpoint}) not ready after 60 s: ${d.output()}`);
        await sleep(20);
      }
    }
  } catch (error) {
    await stopDaemons(daemons);
    throw error;
  }
  return daemons;
}

/** Start time of the first request of each connection: when the daemon's new flows arrived. */
function newConnections(requests: LoggedRequest[]): number[] {
  return requests.filter((r) => r.connectionRequest === 1).map((r) => r.startMs);
}

function countIn(times: number[], from: number, to: number): number {
  return times.filter((t) => t >= from && t < to).length;
}

// ---------------------------------------------------------------- wrk

interface WrkSummary {
  requests: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
}

/** wrk 4 prints "Socket errors" and "Non-2xx or 3xx responses" only when non-zero. Throws when wrk printed no summary. */
function parseWrk(output: string): WrkSummary {
  const requests = /(\d+) requests in /.exec(output);
  if (requests === null) throw new Error(`no "N requests in" line in wrk's output:\n${output}`);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requests: Number(requests[1]),
    socketErrors: errors === null
      ? { connect: 0, read: 0, write: 0, timeout: 0 }
      : { connect: Number(errors[1]), read: Number(errors[2]), write: Number(errors[3]), timeout: Number(errors[4]) },
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
  };
}

/** Polls `read` every `everyMs` until `pred` holds; returns the value, or throws after `timeoutMs` naming `what`. */
async function pollUntil<T>(what: string, read: () => T | Promise<T>, pred: (v: T) => boolean, timeoutMs = WAIT_MS, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not so after ${timeoutMs} ms; last ${JSON.stringify(v)}`);
    await sleep(everyMs);
  }
}

function checkWrk(name: string, run: RunResult, minRequests: number, context: () => string): WrkSummary {
  const output = `${run.stdout}${run.stderr}`;
  assert.equal(run.code, 0, `${name} ran${run.timedOut ? ' (killed at its time limit)' : ''}:\n${output}${context()}`);
  const summary = parseWrk(output);
  assert.deepEqual(summary.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `${name}: no socket errors\n${output}${context()}`);
  assert.equal(summary.non2xx, 0, `${name}: no non-2xx responses\n${output}${context()}`);
  assert.ok(summary.requests >= minRequests, `${name} completed a real load (${summary.requests} requests)\n${output}`);
  return summary;
}

// ---------------------------------------------------------------- hostlb

type Config = Record<string, unknown>;

function configWith(dataplane: Dataplane, daemons: Array<{ address: string; weight: number }>, scheduler: string): Config {
  return {
    device: 'hlb0',
    dataplane,
    // Room for every connection of a 20 s run of new connections, each kept in TIME_WAIT for 120 s.
    table: { capacity: 1 << 19 },
    clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, protocol: 'tcp', scheduler, daemons }] }],
  };
}

/** One CLI invocation: what it printed, its exit status, and when it ran (test clock). */
interface CliRun extends RunResult {
  args: string[];
  startedAt: number;
  returnedAt: number;
}

/** Runs `hostlb --socket <stateDir>/admin.sock ...args` as a child process (inside `ns`; the socket is a file). */
async function cli(sandbox: NetnsSandbox, ns: Namespace, hostlb: HostlbProcess, args: string[]): Promise<CliRun> {
  const startedAt = Date.now();
  const run = await sandbox.run(ns, [process.execPath, HOSTLB_MAIN, '--socket', join(hostlb.stateDir, 'admin.sock'), ...args], { timeoutMs: 60_000 });
  return { ...run, args, startedAt, returnedAt: Date.now() };
}

function describeCli(r: CliRun): string {
  return `hostlb ${r.args.join(' ')} → ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
}

/** The port's scheduler and daemon weights as `status --json` shows them. */
interface PortView {
  scheduler: string;
  daemons: Record<string, number>;
}

function toPortView(json: string): PortView {
  const status = JSON.parse(json) as { clusters: Array<{ address: string; ports: Array<{ port: number; scheduler: string; daemons: Array<{ address: string; weight: number }> }> }> };
  assert.equal(status.clusters.length, 1, json);
  const port = status.clusters[0].ports.find((p) => p.port === 80);
  assert.ok(port !== undefined, `port 80 in ${json}`);
  return { scheduler: port.scheduler, daemons: Object.fromEntries(port.daemons.map((d) => [d.address, d.weight]).sort()) };
}

/** `hostlb status --json`, reduced to port 80's scheduler and weights. */
async function portView(sandbox: NetnsSandbox, ns: Namespace, hostlb: HostlbProcess): Promise<PortView> {
  const r = await cli(sandbox, ns, hostlb, ['status', '--json']);
  assert.equal(r.code, 0, describeCli(r));
  return toPortView(r.stdout);
}

/**
 * The same from GET /v1/clusters through curl: under load a Node CLI takes
 * 1-2 s to start on this 2-core machine, curl a few ms, so the checks between
 * the changes keep to their schedule.
 */
async function apiPortView(sandbox: NetnsSandbox, ns: Namespace, hostlb: HostlbProcess): Promise<PortView> {
  const r = await sandbox.run(ns, ['curl', '-sS', '--fail', '--max-time', '30', '--unix-socket', join(hostlb.stateDir, 'admin.sock'), 'http://hostlb/v1/clusters'], { timeoutMs: 40_000 });
  assert.equal(r.code, 0, `GET /v1/clusters: ${r.stdout}${r.stderr}`);
  return toPortView(r.stdout);
}

/** hostlb's own view for failure messages: stderr, status and counters. */
async function evidence(sandbox: NetnsSandbox, ns: Namespace, hostlb: HostlbProcess): Promise<string> {
  const status = await cli(sandbox, ns, hostlb, ['status']);
  const counters = await sandbox.run(ns, ['curl', '-sS', '--max-time', '30', '--unix-socket', join(hostlb.stateDir, 'admin.sock'), 'http://hostlb/v1/counters'], { timeoutMs: 40_000 });
  return `\n--- hostlb status:\n${status.stdout}${status.stderr}\n--- counters:\n${counters.stdout}${counters.stderr}\n--- hostlb stderr:\n${hostlb.describe().slice(-6_000)}`;
}

interface Topo {
  sandbox: NetnsSandbox;
  client: Namespace;
  server: Namespace;
  dir: string;
}

function topology(t: TestContext): Topo {
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  for (const d of ENDPOINTS) addLoopbackAddress(server, splitEndpoint(d).address);
  return { sandbox, client, server, dir };
}

// ---------------------------------------------------------------- tests

interface Step {
  label: string;
  /** Runs the change; returns the CLI run (its exit status is checked after the load). */
  run(): Promise<CliRun>;
  /** The port as it must look afterwards. */
  expect: PortView;
}

async function reconfiguredUnderLoad(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device or netfilter rules, nginx daemons and wrk')) return;
  const { sandbox, client, server, dir } = topology(t);
  const daemons = await startLoggingDaemons(sandbox, server, dir, ENDPOINTS);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, configWith(dataplane, [D1, D2, D3].map((address) => ({ address, weight: 1 })), 'wlc'), { dir });
    const h = hostlb;
    const ctl = (...args: string[]): Promise<CliRun> => cli(sandbox, server, h, args);
    const reloaded = configWith(dataplane, [{ address: D1, weight: 3 }, { address: D3, weight: 1 }, { address: D4, weight: 2 }], 'wlc');

    const steps: Step[] = [
      { label: 'add d4', run: () => ctl('daemon', 'add', CLUSTER_V4, '80', D4), expect: { scheduler: 'wlc', daemons: { [D1]: 1, [D2]: 1, [D3]: 1, [D4]: 1 } } },
      { label: 'd1 weight 3', run: () => ctl('daemon', 'set', CLUSTER_V4, '80', D1, '--weight', '3'), expect: { scheduler: 'wlc', daemons: { [D1]: 3, [D2]: 1, [D3]: 1, [D4]: 1 } } },
      { label: 'quiesce d2', run: () => ctl('daemon', 'quiesce', CLUSTER_V4, '80', D2), expect: { scheduler: 'wlc', daemons: { [D1]: 3, [D2]: 0, [D3]: 1, [D4]: 1 } } },
      { label: 'scheduler maglev', run: () => ctl('port', 'set', CLUSTER_V4, '80', '--scheduler', 'maglev'), expect: { scheduler: 'maglev', daemons: { [D1]: 3, [D2]: 0, [D3]: 1, [D4]: 1 } } },
      { label: 'scheduler rr', run: () => ctl('port', 'set', CLUSTER_V4, '80', '--scheduler', 'rr'), expect: { scheduler: 'rr', daemons: { [D1]: 3, [D2]: 0, [D3]: 1, [D4]: 1 } } },
      {
        label: 'reload: d1 w3, d3 w1, d4 w2, wlc, d2 gone',
        run: () => {
          writeFileSync(h.configPath, stringify({ ...reloaded, stateDir: h.stateDir }));
          return ctl('reload');
        },
        expect: { scheduler: 'wlc', daemons: { [D1]: 3, [D3]: 1, [D4]: 2 } },
      },
      { label: 'remove d3', run: () => ctl('daemon', 'remove', CLUSTER_V4, '80', D3), expect: { scheduler: 'wlc', daemons: { [D1]: 3, [D4]: 2 } } },
    ];

    nftLoad(client, ESCAPED);
    const allLogs = (): LoggedRequest[][] => daemons.map((d) => d.requests());
    const newSince = (from: number): number => allLogs().reduce((a, l) => a + countIn(newConnections(l), from, Infinity), 0);
    // The keep-alive wrk first, so wlc spreads its 9 connections 3/3/3 over
    // d1-d3: they must outlive d2's quiesce and removal and d3's removal.
    const keepAlive = startWrk(sandbox, client, ['-t1', '-c9', '-d600s', '--timeout', '5s', URL_], 660_000);
    const fresh = { current: undefined as RunningWrk | undefined };
    const runs: Array<{ step: Step; run: CliRun; view: PortView }> = [];
    let loadStart = 0;
    let loadEnd = 0;
    let keepAliveDone = 0;
    let freshRun: RunResult;
    let keepAliveRun: RunResult;
    try {
      await pollUntil('wrk\'s 9 keep-alive connections up', () => allLogs().reduce((a, l) => a + new Set(l.map((r) => r.connection)).size, 0), (n) => n >= 9);
      loadStart = Date.now();
      fresh.current = startWrk(sandbox, client, ['-t2', '-c50', '-d600s', '--timeout', '5s', '-H', 'Connection: close', URL_], 660_000);
      // Every phase (before the first change, and after each) lasts until PHASE_FLOWS new connections began
      // in it once the change settled: counted, so a busy machine only makes the run longer.
      await pollUntil(`${PHASE_FLOWS} new connections before the first change`, () => newSince(loadStart), (n) => n >= PHASE_FLOWS);
      for (const step of steps) {
        const run = await step.run();
        runs.push({ step, run, view: await apiPortView(sandbox, server, h) });
        await pollUntil(`${PHASE_FLOWS} new connections after "${step.label}" settled`, () => newSince(run.returnedAt + SETTLE_MS), (n) => n >= PHASE_FLOWS);
      }
      const settled = runs[runs.length - 1].run.returnedAt + SETTLE_MS;
      await pollUntil(`${KEEPALIVE_AFTER} requests on each keep-alive connection after the last change`, () => {
        const perConnection = new Map<string, number>();
        for (const [i, l] of allLogs().entries()) for (const r of l) if (r.startMs >= settled && r.connectionRequest > 1) perConnection.set(`${i} ${r.connection}`, (perConnection.get(`${i} ${r.connection}`) ?? 0) + 1);
        return [...perConnection.values()];
      }, (counts) => counts.length >= 9 && counts.every((n) => n >= KEEPALIVE_AFTER));
    } finally {
      fresh.current?.stop();
      keepAlive.stop();
      loadEnd = Date.now();
      [freshRun, keepAliveRun] = await Promise.all([
        fresh.current?.done ?? Promise.resolve({ code: null, signal: null, stdout: '', stderr: 'never started', timedOut: false }),
        keepAlive.done.then((r) => {
          keepAliveDone = Date.now();
          return r;
        }),
      ]);
    }
    const lastReturned = runs[runs.length - 1].run.returnedAt;
    const final = await portView(sandbox, server, h);
    const hostlbView = await evidence(sandbox, server, h);
    const context = (): string => `${hostlbView}\n--- CLI:\n${runs.map((r) => describeCli(r.run)).join('\n')}`;

    // Every command succeeded and took effect at once.
    for (const { step, run, view } of runs) {
      assert.equal(run.code, 0, `${step.label}: ${describeCli(run)}${context()}`);
      assert.deepEqual(view, step.expect, `${step.label}: GET /v1/clusters right after the command`);
    }
    assert.deepEqual(final, steps[steps.length - 1].expect, 'hostlb status --json after the last change');
    const timing = runs.map((r) => `${r.step.label}: ran +${r.run.startedAt - loadStart}..+${r.run.returnedAt - loadStart} ms`).join('\n');
    t.diagnostic(`changes (ms after the load began):\n${timing}`);
    const allCreated = allLogs().flatMap(newConnections);
    assert.ok(countIn(allCreated, lastReturned + SETTLE_MS, loadEnd) >= PHASE_FLOWS, `the load went on after the last change settled: ${countIn(allCreated, lastReturned + SETTLE_MS, loadEnd)} new connections\n${timing}`);

    const escaped = nftCounters(client, 'hlbt').fromdaemons;
    assert.equal(escaped, 0, `no TCP packet reached the client from a daemon's own address (a reply that escaped translation): ${escaped}${context()}`);
    const freshSummary = checkWrk('wrk -c50, Connection: close', freshRun, (steps.length + 1) * PHASE_FLOWS, context);
    const keepAliveSummary = checkWrk('wrk -c9, keep-alive', keepAliveRun, 9 * KEEPALIVE_AFTER, context);

    const logs = daemons.map((d) => d.requests());
    // wrk counts a timeout only for a response that comes late: a connection
    // that hangs for good is no error to it. So: each keep-alive connection
    // (more than one request) must have carried requests until wrk stopped.
    const keepAliveConnIds: number[] = [];
    const keepAliveConns = daemons.flatMap((d, i) => {
      const last = new Map<number, LoggedRequest>();
      for (const r of logs[i]) if (r.connectionRequest > 1 || last.has(r.connection)) last.set(r.connection, r);
      return [...last.values()].map((r) => {
        keepAliveConnIds.push(r.connection);
        return { daemon: d.name, clientPort: r.clientPort, requests: r.connectionRequest, lastAt: r.startMs - loadStart };
      });
    });
    const keepAliveTable = keepAliveConns.map((c) => `${c.daemon} client port ${c.clientPort}: ${c.requests} requests, the last at +${c.lastAt} ms`).join('\n');
    t.diagnostic(`keep-alive connections:\n${keepAliveTable}`);
    assert.equal(keepAliveConns.length, 9, `wrk's 9 keep-alive connections in the access logs:\n${keepAliveTable}`);
    // Counted, not timed: each carried KEEPALIVE_AFTER requests after the last change had settled.
    const afterLast = keepAliveConns.map((c, k) => ({ ...c, after: logs[daemons.findIndex((d) => d.name === c.daemon)].filter((r) => r.connection === keepAliveConnIds[k] && r.startMs >= lastReturned + SETTLE_MS).length }));
    const stalled = afterLast.filter((c) => c.after < KEEPALIVE_AFTER);
    assert.deepEqual(stalled, [], `every keep-alive connection carried ${KEEPALIVE_AFTER} requests after the last change (wrk stopped at +${keepAliveDone - loadStart} ms):\n${keepAliveTable}${context()}`);
    const created = logs.map(newConnections);
    const at = (label: string): CliRun => runs.find((r) => r.step.label.startsWith(label))!.run;
    const added = at('add d4');
    const quiesced = at('quiesce d2');
    const reload = at('reload');
    const removed = at('remove d3');
    const phases = runs.map((r, i) => ({ label: r.step.label, from: r.run.returnedAt, to: runs[i + 1]?.run.startedAt ?? loadEnd, expect: r.step.expect }));
    const table = [{ label: 'start', from: loadStart, to: runs[0].run.startedAt }, ...phases]
      .map((p) => `${p.label.padEnd(44)} ${daemons.map((d, i) => `${d.name}=${countIn(created[i], p.from, p.to)}`).join(' ')}`).join('\n');
    t.diagnostic(`wrk: ${freshSummary.requests} requests on new connections, ${keepAliveSummary.requests} keep-alive; new connections per daemon in each phase:\n${table}`);
    const why = `\nnew connections per phase:\n${table}${context()}`;

    for (const [i, d] of daemons.entries()) {
      const bad = logs[i].filter((r) => r.status !== 200 || r.clientAddress !== CLIENT_V4);
      assert.deepEqual(bad.slice(0, 5), [], `${d.name} answered 200 to the client's real address only`);
    }

    // d4: nothing before its addition, new connections after it.
    assert.deepEqual(logs[3].filter((r) => r.startMs < added.startedAt).slice(0, 5), [], `d4 served nothing before "daemon add"${why}`);
    assert.ok(countIn(created[3], added.returnedAt, loadEnd) > 0, `d4 got new connections after "daemon add"${why}`);

    // d2: new connections before the quiesce, none after it (its keep-alive connections go on).
    assert.ok(countIn(created[1], loadStart, quiesced.startedAt) > 0, `d2 got new connections before the quiesce${why}`);
    const lateD2 = created[1].filter((s) => s > quiesced.returnedAt + SETTLE_MS);
    assert.deepEqual(lateD2, [], `d2 got no new connection more than ${SETTLE_MS} ms after "daemon quiesce" returned (${quiesced.returnedAt})${why}`);
    // Existing flows continue until they end (DESIGN.md, quiesce / drain), also
    // once the daemon is out of the configuration: d2's keep-alive connections
    // after the quiesce and after the reload that dropped it.
    const keptD2 = logs[1].filter((r) => r.connectionRequest > 1).map((r) => r.startMs);
    assert.ok(countIn(keptD2, quiesced.returnedAt + SETTLE_MS, reload.startedAt) > 0, `d2's keep-alive connections carried requests after the quiesce${why}`);
    assert.ok(countIn(keptD2, reload.returnedAt + SETTLE_MS, loadEnd) > 0, `d2's keep-alive connections carried requests after the reload removed d2${why}`);

    // d3: new connections while in the reloaded file, none after its removal.
    assert.ok(countIn(created[2], reload.returnedAt, removed.startedAt) > 0, `d3 got new connections between the reload and its removal${why}`);
    const lateD3 = created[2].filter((s) => s > removed.returnedAt + SETTLE_MS);
    assert.deepEqual(lateD3, [], `d3 got no new connection more than ${SETTLE_MS} ms after "daemon remove" returned (${removed.returnedAt})${why}`);
    const keptD3 = logs[2].filter((r) => r.connectionRequest > 1).map((r) => r.startMs);
    assert.ok(countIn(keptD3, removed.returnedAt + SETTLE_MS, loadEnd) > 0, `d3's keep-alive connections carried requests after "daemon remove"${why}`);

    // Each phase: every daemon of weight > 0 got new connections (the swapped-in
    // schedulers serve them all); the others none once the change settled.
    for (const p of phases) {
      for (const [i, d] of daemons.entries()) {
        const weight = p.expect.daemons[ENDPOINTS[i]] ?? 0;
        if (weight > 0) assert.ok(countIn(created[i], p.from, p.to) > 0, `${d.name} (weight ${weight}) got new connections after "${p.label}"${why}`);
        else assert.equal(countIn(created[i], p.from + SETTLE_MS, p.to), 0, `${d.name} (${ENDPOINTS[i] in p.expect.daemons ? 'quiesced' : 'not configured'}) got no new connection after "${p.label}"${why}`);
      }
    }

    // With wrk gone the removed daemons' flows have ended (checked every 2 s):
    // what hostlb keeps for a draining daemon goes, the kept daemons' stays.
    // TUN: the daemons' reply rules (policy routing); netfilter: their mark →
    // address entries in the nft map daemons4 (no reply rules there). The
    // socket plane keeps nothing per daemon on the host.
    if (dataplane !== 'socket') {
      const drained = (): string[] => (dataplane === 'tun'
        ? server.ip('rule', 'show').split('\n').filter((l) => /from 198\.18\.2\.\d+ iif lo ipproto tcp sport 8080/.test(l)).map((l) => /from (\S+)/.exec(l)![1]).sort()
        : nftDaemons(server, 4).map((e) => splitEndpoint(e).address));
      const drainDeadline = Date.now() + WAIT_MS;
      while (drained().length > 2 && Date.now() < drainDeadline) await sleep(200);
      const what = dataplane === 'tun' ? `reply rules:\n${server.ip('rule', 'show')}` : `nft map daemons4: ${nftDaemons(server, 4).join(', ')}`;
      assert.deepEqual(drained(), ['198.18.2.1', '198.18.2.4'], `the removed daemons drained; ${what}\n${hostlb.describe().slice(-3_000)}`);
    }

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(server);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] reconfigured under load through the CLI and a reload: no failed request, new connections only where the configuration allows`, (t) => reconfiguredUnderLoad(t, dataplane));

async function brokenReload(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device or netfilter rules, nginx daemons and wrk')) return;
  const { sandbox, client, server, dir } = topology(t);
  const daemons = await startLoggingDaemons(sandbox, server, dir, [D1, D2, D3]);
  let hostlb: HostlbProcess | undefined;
  try {
    const base = configWith(dataplane, [{ address: D1, weight: 2 }, { address: D2, weight: 1 }, { address: D3, weight: 1 }], 'wlc');
    hostlb = await HostlbProcess.start(sandbox, server, base, { dir });
    const h = hostlb;
    const ctl = (...args: string[]): Promise<CliRun> => cli(sandbox, server, h, args);
    const configShow = async (): Promise<unknown> => {
      const r = await ctl('config', 'show', '--json');
      assert.equal(r.code, 0, describeCli(r));
      return JSON.parse(r.stdout);
    };
    const running = await configShow();
    const view = await portView(sandbox, server, h);
    assert.deepEqual(view, { scheduler: 'wlc', daemons: { [D1]: 2, [D2]: 1, [D3]: 1 } });

    /** Writes YAML text to the config file; returns the 1-based line holding `marker`. */
    const writeBroken = (text: string, marker: string): number => {
      writeFileSync(h.configPath, text);
      const line = text.split('\n').findIndex((l) => l.includes(marker));
      assert.ok(line >= 0, `${marker} in the broken file`);
      return line + 1;
    };
    const good = stringify({ ...base, stateDir: h.stateDir });
    // A misspelt key, and a weight that is no number.
    const misspelt = good.replace(/^(\s+)scheduler: wlc$/m, '$1schedular: wlc');
    const badWeight = good.replace(/^(\s+)weight: 1$/m, '$1weight: heavy');
    assert.notEqual(misspelt, good);
    assert.notEqual(badWeight, good);

    // Keep-alive load through every step; each step waits for LOAD_STEP more requests served, not for a second.
    const LOAD_STEP = 200;
    const served = (): number => daemons.reduce((a, d) => a + d.requests().length, 0);
    const moreServed = async (what: string): Promise<void> => {
      const from = served();
      await pollUntil(`${LOAD_STEP} more requests served ${what}`, served, (n) => n >= from + LOAD_STEP);
    };
    const load = startWrk(sandbox, client, ['-t1', '-c10', '-d600s', '--timeout', '5s', URL_], 660_000);
    const rejected: Array<{ what: string; run: CliRun; key: string; line: number }> = [];
    let afterCli: { config: unknown; view: PortView };
    let hupEvent: (typeof h.events)[number] | undefined;
    let afterHup: { config: unknown; view: PortView; running: boolean };
    let loadRun: RunResult;
    try {
      await pollUntil('every daemon serving the load', () => daemons.map((d) => d.requests().length), (n) => n.every((x) => x > 0));
      await moreServed('before the first reload');
      let line = writeBroken(misspelt, 'schedular');
      rejected.push({ what: 'misspelt key', run: await ctl('reload'), key: 'clusters[0].ports[0].schedular', line });
      await moreServed('after the first rejected reload');
      line = writeBroken(badWeight, 'heavy');
      rejected.push({ what: 'bad weight', run: await ctl('reload'), key: 'clusters[0].ports[0].daemons[1].weight', line });
      afterCli = { config: await configShow(), view: await portView(sandbox, server, h) };

      // SIGHUP with the same broken file: logged, not applied, hostlb keeps running.
      await moreServed('after the second rejected reload');
      const rejectionsBefore = h.events.filter((e) => e.event === 'reload_rejected').length;
      process.kill(h.pid, 'SIGHUP');
      await pollUntil('reload_rejected logged after SIGHUP', () => h.events.filter((e) => e.event === 'reload_rejected').length, (n) => n > rejectionsBefore, WAIT_MS, 50).catch(() => undefined);
      hupEvent = h.events.filter((e) => e.event === 'reload_rejected')[rejectionsBefore];
      afterHup = { config: await configShow(), view: await portView(sandbox, server, h), running: h.running };
      await moreServed('after SIGHUP');
    } finally {
      load.stop();
      loadRun = await load.done;
    }
    const context = (): string => `${rejected.map((r) => describeCli(r.run)).join('\n')}\nhostlb:\n${h.describe().slice(-4_000)}`;

    for (const r of rejected) {
      // 1 = rejected (400 CONFIG_INVALID); 2 would be a usage error. Either says "not applied".
      assert.ok(r.run.code === 1 || r.run.code === 2, `${r.what}: the CLI exits 1 or 2: ${describeCli(r.run)}`);
      assert.ok(r.run.stderr.includes(r.key), `${r.what}: stderr names the key ${r.key}: ${describeCli(r.run)}`);
      assert.ok(r.run.stderr.includes(`${h.configPath}:${r.line}`), `${r.what}: stderr names the file and line ${h.configPath}:${r.line}: ${describeCli(r.run)}`);
    }
    assert.deepEqual(afterCli.config, running, 'config show: the running configuration is unchanged after the rejected reloads');
    assert.deepEqual(afterCli.view, view, 'status: scheduler and weights unchanged after the rejected reloads');
    assert.ok(hupEvent !== undefined, `SIGHUP with a broken file logged reload_rejected:\n${h.describe().slice(-4_000)}`);
    assert.match(JSON.stringify(hupEvent), /daemons\[1\]\.weight/, 'the SIGHUP rejection names the key');
    assert.equal(afterHup.running, true, 'hostlb runs on after SIGHUP with a broken file');
    assert.deepEqual(afterHup.config, running, 'config show: unchanged after SIGHUP');
    assert.deepEqual(afterHup.view, view, 'status: unchanged after SIGHUP');

    checkWrk('wrk -c10, keep-alive', loadRun, 4 * LOAD_STEP, context);
    for (const d of daemons) assert.ok(d.requests().length > 0, `${d.name} served during the load`);

    // The rejections left reload working: a good file applies.
    writeFileSync(h.configPath, good.replace(/^(\s+)weight: 2$/m, '$1weight: 5'));
    const ok = await ctl('reload');
    assert.equal(ok.code, 0, describeCli(ok));
    assert.deepEqual(await portView(sandbox, server, h), { scheduler: 'wlc', daemons: { [D1]: 5, [D2]: 1, [D3]: 1 } }, 'a good reload after the rejected ones applies');

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(server);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] a reload of a broken file (CLI or SIGHUP) is rejected naming key and line; the running configuration and traffic are unchanged`, (t) => brokenReload(t, dataplane));
