// The socket data plane (dataplane: socket) in a live set-up: hostlb's BPF
// sk_lookup program hands each new TCP connection to a cluster port to one of
// the nginx daemons' own listening sockets; clients (wrk with a new connection
// per request, curl) run in another namespace. Covered:
//
//   1. kill -9 of hostlb under load: the pinned program goes on dispatching,
//      not one request fails or is refused while hostlb is dead; a new start
//      on the same config and stateDir adopts the pins (dispatch_adopted,
//      adopted) with the load still running; a deliberate stop then leaves no
//      bpffs and no attached program behind. An adopting start on a changed
//      configuration (a daemon removed, so the ids shift) gives each slot its
//      daemon's own socket.
//   2. an nginx daemon SIGKILLed under load, no advisor: passive health takes
//      it down (/v1/health, a passive reason); the failed requests are
//      counted and bounded by what was in flight at the kill plus the new
//      connections the program could give no socket (its own `unassigned`
//      count); not one connection started after /v1/health showed it down
//      fails, through its hold-down and after, and none is handed to it; no
//      new connection is refused across the kill either (the program tries 16
//      buckets, so one of another daemon takes it until the next sync rewrites
//      the dead daemon's buckets).
//   3. the daemon restarted on the same address: its socket is taken again
//      (hostlb_socket_daemon_sockets_taken_total rises) and it serves again,
//      with no failed request across its return.
//   4. reconfiguration under load through the CLI (add a daemon, quiesce one,
//      remove one): no failed request; new connections only where the
//      configuration of the moment allows them (access logs).
//   5. an IPv6 cluster [2001:db8::100]:80 in front of IPv6 daemons: every
//      daemon serves, each sees the client's real address and port.
//   6. rr and wrr take turns: one curl after another meets d1, d2, d3, d1, ...
//      (rr), and d1 twice in every four (wrr 2:1:1), as with the other planes.
//
// Nothing here is timed: every phase lasts until a counted number of requests
// was served (so a slow machine makes it longer, never failing it), and each
// wait has a 60 s bound that only a broken hostlb reaches. Every wrk stops by
// itself after LOAD_LIMIT responses per thread or LOAD_SECONDS, whichever is
// first; the tests end it sooner with SIGINT. Namespaces and processes go with
// the sandbox, pass or fail.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNginxDaemons, stopDaemons, type NginxDaemon } from '../support/daemons.js';
import { CLIENT_V4, CLIENT_V6, CLUSTER_V4, curlThrough, HostlbProcess, metricsText, SERVER_V6 } from '../support/hostlb-process.js';
import { assertPlaneGone, assertPlaneSetUp, planeObjects } from '../support/dataplanes.js';
import { skipUnlessRoot, type Namespace } from '../support/netns.js';
import { AdminClient, cli, describeCli, healthSetup, pollUntil, startHostlb, startWrk, type HealthTopo, type HealthView, type RunningWrk, type WrkSummary } from './health-harness.js';

const WHY_ROOT = 'network namespaces, a BPF sk_lookup program in a bpffs, nginx daemons, wrk and curl';
const DEVICE = 'hlb0';
const BPF_ROOT = '/run/hostlb/bpf';
const V4_DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080', '198.18.2.4:8080'];
const URL_V4 = `http://${CLUSTER_V4}/`;
/** The IPv6 cluster: on the veth's own /64, so the client gets a /128 route to it via the server. */
const CLUSTER_6 = '2001:db8::100';
const V6_DAEMONS = ['[2001:db8:2::1]:8080', '[2001:db8:2::2]:8080', '[2001:db8:2::3]:8080'];

/** Bound on waiting for a count or a state: reached only when something is broken, never part of a pass. */
const WAIT_MS = 60_000;
/** wrk's connections: at most this many requests are in flight at any moment. */
const CONNECTIONS = 20;
/** Each wrk thread stops after this many responses (two threads), or after LOAD_SECONDS: a bound on a run, not a goal. */
const LOAD_LIMIT = 500_000;
const LOAD_SECONDS = 600;
/** Requests every daemon must serve in a phase (before a kill, while hostlb is dead, after a restart). */
const PER_DAEMON = 100;
/** Requests the other daemons must serve after a change settled, before the load stops. */
const PHASE = 300;
/**
 * A daemon whose access log stayed put while the others served this many
 * requests is out of the buckets: with a share s of them, staying put by
 * chance has probability (1 - s)^FREEZE, below 1e-20 for any s ≥ 1/5.
 */
const FREEZE = 250;

// ---------------------------------------------------------------- helpers

/** An nginx access log read on from where the last read stopped: lines, and those not 200 or not from `client`. */
class LogTail {
  lines = 0;
  bad = 0;
  readonly badSample: string[] = [];
  private offset = 0;

  constructor(readonly path: string, readonly client: string) {}

  read(): number {
    if (!existsSync(this.path)) return this.lines;
    const fd = openSync(this.path, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return this.lines;
      const chunk = Buffer.alloc(size - this.offset);
      const got = readSync(fd, chunk, 0, chunk.length, this.offset);
      // Whole lines only: a half-written last line is read again next time.
      const end = chunk.subarray(0, got).lastIndexOf(10) + 1;
      this.offset += end;
      for (const line of chunk.subarray(0, end).toString('utf8').split('\n')) {
        if (line === '') continue;
        this.lines++;
        const [client, status] = line.split(' ');
        if (status !== '200' || client.slice(0, client.lastIndexOf(':')) !== this.client) {
          this.bad++;
          if (this.badSample.length < 5) this.badSample.push(line);
        }
      }
      return this.lines;
    } finally {
      closeSync(fd);
    }
  }
}

function tailsOf(daemons: NginxDaemon[], client: string): LogTail[] {
  return daemons.map((d) => new LogTail(d.accessLogPath, client));
}

function readAll(tails: LogTail[]): number[] {
  return tails.map((t) => t.read());
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** The bpffs (and pin directory) of hostlb on DEVICE in `ns`, as the plane names it. */
function pinDirOf(ns: Namespace): string {
  return `${BPF_ROOT}/${statSync(`/run/netns/${ns.name}`).ino}-${DEVICE}`;
}

/** Mount points at or under `dir` (this process shares the host's mount namespace, where hostlb mounts). */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l !== '').map((l) => l.split(' ')[4]).filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** hostlb's pins in `dir` (not the maps.debug / progs.debug iterators a kernel with BPF_PRELOAD puts in every bpffs). */
function pinned(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => !f.endsWith('.debug')).sort() : [];
}

/** The socket plane's counters from GET /metrics. */
interface SocketMetrics {
  taken: number;
  matched: number;
  unassigned: number;
  text: string;
}

async function socketMetrics(admin: AdminClient): Promise<SocketMetrics> {
  const text = await metricsText(admin.socket);
  const value = (pattern: RegExp): number => {
    const m = pattern.exec(text);
    if (m === null) throw new Error(`no ${pattern.source} in GET /metrics:\n${text.split('\n').filter((l) => l.includes('socket')).join('\n')}`);
    return Number(m[1]);
  };
  return {
    taken: value(/^hostlb_socket_daemon_sockets_taken_total (\d+)$/m),
    matched: value(/^hostlb_socket_lookups_total\{result="matched"\} (\d+)$/m),
    unassigned: value(/^hostlb_socket_lookups_total\{result="unassigned"\} (\d+)$/m),
    text: text.split('\n').filter((l) => l.startsWith('hostlb_socket')).join('\n'),
  };
}

/** hostlb's view for a failure message; never throws (hostlb may be dead). */
async function evidence(hostlb: HostlbProcess): Promise<string> {
  if (!hostlb.running) return `\n--- hostlb (exited) stderr (tail):\n${hostlb.describe().slice(-4_000)}`;
  const admin = AdminClient.of(hostlb);
  const metrics = await socketMetrics(admin).then((m) => m.text, (e: Error) => String(e));
  return `${await admin.evidence(hostlb)}\n--- GET /metrics (socket plane):\n${metrics}`;
}

/** Batches of 30 sequential requests after an adopting start before every daemon must have served (a bound, not a wait). */
const ADOPTED_BATCHES = 20;

const WRK_SCRIPT = `-- A bound on the run in requests: each thread stops after ${LOAD_LIMIT} responses (-d bounds its time).
local served = 0
function response(status, headers, body)
  served = served + 1
  if served >= ${LOAD_LIMIT} then wrk.thread:stop() end
end
`;

/** wrk in the client namespace: CONNECTIONS connections, a new one per request, bounded in count and time. */
function startLoad(topo: HealthTopo, url: string): RunningWrk {
  const script = join(topo.dir, 'bounded.lua');
  if (!existsSync(script)) writeFileSync(script, WRK_SCRIPT);
  return startWrk(topo.sandbox, topo.client, ['-t2', `-c${CONNECTIONS}`, `-d${LOAD_SECONDS}s`, '--timeout', '5s', '-s', script, '-H', 'Connection: close', url], (LOAD_SECONDS + 60) * 1000);
}

function failures(s: WrkSummary): number {
  return s.socketErrors.connect + s.socketErrors.read + s.socketErrors.write + s.socketErrors.timeout + s.non2xx;
}

function describeWrk(s: WrkSummary): string {
  return `${s.requests} requests; socket errors ${JSON.stringify(s.socketErrors)}; non-2xx ${s.non2xx}`;
}

/**
 * Stops `wrk` and returns its summary; asserts it ran to its summary (not killed at its bound). wrk 4.1
 * installs its SIGINT handler and then sleeps for -d: a SIGINT that lands between the two only sets its
 * stop flag, and wrk would run on to -d (seen here: 8 s instead of 0.1 s). So the SIGINT is sent again
 * until wrk has exited; a retry interval, not a bound on anything.
 */
async function finish(wrk: RunningWrk, name: string): Promise<WrkSummary> {
  let exited = false;
  const settled = wrk.done.then(() => (exited = true), () => (exited = true));
  while (!exited) {
    wrk.stop();
    await Promise.race([settled, sleep(500)]);
  }
  const s = await wrk.done;
  assert.ok(!s.timedOut, `${name}: wrk was killed at its time bound:\n${s.output}`);
  return s;
}

/** Stops every wrk in `loads` (as finish does), for cleanup: never throws. */
async function stopAll(loads: Array<RunningWrk | undefined>): Promise<void> {
  await Promise.all(loads.map((w) => (w === undefined ? undefined : finish(w, 'cleanup').catch(() => undefined))));
}

async function assertNoFailure(name: string, s: WrkSummary, hostlb: HostlbProcess): Promise<void> {
  if (failures(s) !== 0) assert.fail(`${name}: no failed request, no refused connection; wrk: ${describeWrk(s)}\n${s.output}${await evidence(hostlb)}`);
}

/** Polls the access logs until `pred` holds; fails with hostlb's evidence after WAIT_MS. */
async function untilServed(what: string, tails: LogTail[], pred: (lines: number[]) => boolean, hostlb: HostlbProcess): Promise<number[]> {
  try {
    return await pollUntil(what, async () => readAll(tails), pred, WAIT_MS);
  } catch (error) {
    return assert.fail(`${(error as Error).message}${await evidence(hostlb)}`);
  }
}

async function untilHealth(what: string, admin: AdminClient, pred: (h: HealthView[]) => boolean, hostlb: HostlbProcess, everyMs = 100): Promise<HealthView[]> {
  try {
    return await pollUntil(what, () => admin.health(), pred, WAIT_MS, everyMs);
  } catch (error) {
    return assert.fail(`${(error as Error).message}${await evidence(hostlb)}`);
  }
}

function healthOf(h: HealthView[], endpoint: string): HealthView | undefined {
  return h.find((d) => d.daemon === endpoint);
}

/**
 * Waits until daemon `i`'s access log has stayed put while the others served
 * FREEZE requests (it is out of the buckets: see FREEZE), then until they
 * served PHASE more; returns its line count at the freeze and at the end.
 */
async function frozenThenPhase(what: string, tails: LogTail[], i: number, others: number[], hostlb: HostlbProcess): Promise<{ atFreeze: number; atEnd: number; othersDuring: number }> {
  let last = -1;
  let othersAtLast = 0;
  await untilServed(`${what}: its log stays put while the others serve ${FREEZE}`, tails, (n) => {
    const o = sum(others.map((k) => n[k]));
    if (n[i] !== last) {
      last = n[i];
      othersAtLast = o;
    }
    return o - othersAtLast >= FREEZE;
  }, hostlb);
  const othersFrom = sum(others.map((k) => tails[k].lines));
  const end = await untilServed(`${what}: ${PHASE} more requests served by the others`, tails, (n) => sum(others.map((k) => n[k])) >= othersFrom + PHASE, hostlb);
  return { atFreeze: last, atEnd: end[i], othersDuring: sum(others.map((k) => end[k])) - othersFrom };
}

/** Three nginx daemons, on the first three of V4_DAEMONS, in a topology of their own. */
async function threeDaemons(t: TestContext): Promise<{ endpoints: string[]; topo: HealthTopo; daemons: NginxDaemon[] }> {
  const endpoints = V4_DAEMONS.slice(0, 3);
  const topo = healthSetup(t, endpoints.map(addressOf));
  const daemons = await startNginxDaemons(topo.sandbox, topo.server, topo.dir, endpoints);
  return { endpoints, topo, daemons };
}

/** `n` requests through the cluster, one after another (curl, a connection each): who served each, in order; every one answered 200. */
async function servedInOrder(topo: HealthTopo, n: number): Promise<string[]> {
  const results = await curlThrough(topo.sandbox, topo.client, Array.from({ length: n }, () => URL_V4));
  for (const r of results) assert.equal(r.httpCode, 200, JSON.stringify(r));
  return results.map((r) => r.body.split(' ')[0]);
}

function socketConfig(cluster: string, daemons: Array<{ address: string; weight?: number }>): Record<string, unknown> {
  // No advisor: passive signals (on by default) are the only health input.
  return { device: DEVICE, dataplane: 'socket', clusters: [{ address: cluster, ports: [{ port: 80, protocol: 'tcp', scheduler: 'wlc', daemons }] }] };
}

function addressOf(endpoint: string): string {
  return endpoint.startsWith('[') ? endpoint.slice(1, endpoint.indexOf(']')) : endpoint.split(':')[0];
}

/** SIGTERM: exit 0, no bpffs left, no pin, no mount under this instance's directory. */
async function stopDeliberately(hostlb: HostlbProcess, server: Namespace, pins: string): Promise<void> {
  const exit = await hostlb.stop('SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null }, `hostlb exited 0 on SIGTERM:\n${hostlb.describe()}`);
  assertPlaneGone(server);
  assert.deepEqual(mountsUnder(pins), [], `no mount left at or under ${pins}`);
  assert.deepEqual(pinned(pins), [], `no pin left in ${pins}`);
}

// ---------------------------------------------------------------- 1. kill -9 of hostlb

test('[socket] kill -9 of hostlb under load: dispatch goes on with no failed request; a new start adopts the pins; a deliberate stop leaves nothing', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const endpoints = V4_DAEMONS.slice(0, 3);
  const topo = healthSetup(t, endpoints.map(addressOf));
  const { sandbox, client, server } = topo;
  const daemons = await startNginxDaemons(sandbox, server, topo.dir, endpoints);
  const config = socketConfig(CLUSTER_V4, endpoints.map((address) => ({ address })));
  const started: HostlbProcess[] = [];
  const loads: RunningWrk[] = [];
  try {
    const first = await startHostlb(topo, config);
    started.push(first);
    assertPlaneSetUp(server, 'socket');
    const pins = pinDirOf(server);
    assert.deepEqual(pinned(pins), ['buckets', 'count', 'count-link', 'counters', 'link', 'loads', 'members', 'ports', 'program', 'slots', 'sockets', 'turns'], `the programs, their maps and links are pinned in ${pins}`);
    const tails = tailsOf(daemons, CLIENT_V4);

    const a = startLoad(topo, URL_V4);
    loads.push(a);
    const beforeKill = await untilServed(`every daemon serving ${PER_DAEMON} requests before the kill`, tails, (n) => n.every((x) => x >= PER_DAEMON), first);
    const killed = await first.kill();
    assert.equal(killed.signal, 'SIGKILL');
    const atKill = readAll(tails);
    t.diagnostic(`served before the kill: ${JSON.stringify(beforeKill)}; at the kill: ${JSON.stringify(atKill)}`);
    // What the dead hostlb left: the bpffs with the pinned, attached program.
    assert.equal(planeObjects(server).bpffs, true, 'the bpffs stays mounted after kill -9');
    assert.ok(pinned(pins).includes('link'), `the link stays pinned after kill -9: ${JSON.stringify(pinned(pins))}`);

    // Every daemon keeps serving new connections while no hostlb runs.
    const whileDead = await untilServed(`every daemon serving ${PER_DAEMON} more requests while hostlb is dead`, tails, (n) => n.every((x, i) => x >= atKill[i] + PER_DAEMON), first);
    // A second wrk takes the load over before the first stops: the load goes on through the restart.
    const b = startLoad(topo, URL_V4);
    loads.push(b);
    await untilServed(`${PER_DAEMON} more requests while both wrk run`, tails, (n) => sum(n) >= sum(whileDead) + PER_DAEMON, first);
    const sa = await finish(a, 'wrk across the kill');
    const deadServed = readAll(tails).map((x, i) => x - atKill[i]);
    t.diagnostic(`wrk across the kill and while hostlb was dead: ${describeWrk(sa)}; served while dead: ${JSON.stringify(deadServed)}`);
    assert.ok(!first.running, 'the first hostlb is still dead when the first wrk stops');
    await assertNoFailure('wrk across kill -9 of hostlb and while it was dead', sa, first);

    const second = await startHostlb(topo, config);
    started.push(second);
    const adopted = second.events.filter((e) => e.event === 'adopted');
    const dispatchAdopted = second.events.filter((e) => e.event === 'dispatch_adopted');
    assert.equal(adopted.length, 1, `the new hostlb logged "adopted":\n${second.describe()}`);
    assert.equal(dispatchAdopted.length, 1, `the new hostlb logged "dispatch_adopted":\n${second.describe()}`);
    assert.equal(dispatchAdopted[0].attached, true, `it took over the attached program: ${JSON.stringify(dispatchAdopted[0])}`);
    assert.deepEqual(mountsUnder(pins), [pins], `one bpffs at ${pins}, not a second one stacked on it`);
    const atSecond = readAll(tails);
    await untilServed(`every daemon serving ${PER_DAEMON} more requests after the new start`, tails, (n) => n.every((x, i) => x >= atSecond[i] + PER_DAEMON), second);
    const sb = await finish(b, 'wrk across the restart');
    t.diagnostic(`wrk across the new start: ${describeWrk(sb)}`);
    await assertNoFailure('wrk across the adopting start', sb, second);
    const admin = AdminClient.of(second);
    const metrics = await socketMetrics(admin);
    t.diagnostic(`after the adopting start: ${metrics.text.replace(/\n/g, '; ')}`);

    // New connections after the adoption: every daemon, the client's real address on each. In
    // batches until all three have served, at most ADOPTED_BATCHES: wrk was stopped with handshakes
    // in flight, and a SYN handed to a daemon that never completes counts as its load for up to two
    // windows (about two seconds, load-count.ts), so until then wlc rightly prefers the others.
    const seen = new Set<string>();
    let batches = 0;
    for (; batches < ADOPTED_BATCHES && seen.size < 3; batches++) {
      for (const r of await curlThrough(sandbox, client, Array.from({ length: 30 }, () => URL_V4))) {
        assert.equal(r.httpCode, 200, JSON.stringify(r));
        assert.equal(r.remoteIp, CLUSTER_V4);
        assert.equal(r.body.split(' ')[1], `${CLIENT_V4}:${r.localPort}`, `the daemon saw the client's real address and port: ${r.body}`);
        seen.add(r.body.split(' ')[0]);
      }
    }
    t.diagnostic(`every daemon served within ${batches} batch(es) of 30 requests after the adoption`);
    assert.deepEqual([...seen].sort(), ['d1', 'd2', 'd3'], `every daemon serves after the adoption (${ADOPTED_BATCHES} batches of 30 requests)`);
    for (const tail of tails) {
      tail.read();
      assert.deepEqual(tail.badSample, [], `${tail.path}: every request answered 200 and from the client's real address`);
    }

    await stopDeliberately(second, server, pins);
    // The program is detached, not only unpinned: with the cluster address made local again by
    // hand, a connection meets the kernel's own lookup (nothing listens there: refused).
    server.ip('route', 'add', 'local', `${CLUSTER_V4}/32`, 'dev', 'lo', 'table', 'local');
    try {
      const probe = await sandbox.run(client, ['curl', '-sS', '--max-time', '10', URL_V4], { timeoutMs: 30_000 });
      assert.equal(probe.code, 7, `after the stop no program dispatches: curl is refused (exit 7), not answered (${probe.code}): ${probe.stdout}${probe.stderr}`);
    } finally {
      server.ip('route', 'del', 'local', `${CLUSTER_V4}/32`, 'dev', 'lo', 'table', 'local');
    }
  } finally {
    await stopAll(loads);
    for (const h of started) await h.stop();
    await stopDaemons(daemons);
  }
});

test('[socket] an adopting start on a changed configuration gives each daemon its own socket, not the one its id had before', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { endpoints, topo, daemons } = await threeDaemons(t);
  const { server } = topo;
  const started: HostlbProcess[] = [];
  const servedBy = async (n: number): Promise<string[]> => [...new Set(await servedInOrder(topo, n))].sort();
  try {
    const first = await startHostlb(topo, socketConfig(CLUSTER_V4, endpoints.map((address) => ({ address }))));
    started.push(first);
    assert.deepEqual(await servedBy(30), ['d1', 'd2', 'd3'], 'every daemon serves, so each slot holds its socket');
    assert.equal((await first.kill()).signal, 'SIGKILL');

    // d1 leaves the configuration but runs on: d2 and d3 now have the ids d1 and d2 had, and the
    // pinned slots still hold d1's and d2's sockets.
    const second = await startHostlb(topo, socketConfig(CLUSTER_V4, endpoints.slice(1).map((address) => ({ address }))));
    started.push(second);
    assert.equal(second.events.filter((e) => e.event === 'dispatch_adopted').length, 1, `the new hostlb adopted the pins:\n${second.describe()}`);
    const replaced = second.events.filter((e) => e.event === 'adopted_socket_replaced').map((e) => String(e.daemon)).sort();
    assert.deepEqual(replaced, endpoints.slice(1), `both slots were given their daemon's own socket:\n${second.describe()}`);
    assert.deepEqual(await servedBy(60), ['d2', 'd3'], 'd1, out of the configuration, gets no connection; d2 and d3 both serve');

    await stopDeliberately(second, server, pinDirOf(server));
  } finally {
    for (const h of started) await h.stop();
    await stopDaemons(daemons);
  }
});

// ---------------------------------------------------------------- 2, 3. a daemon killed and restarted

test('[socket] a daemon killed under load with no advisor: passive health takes it down, few requests fail, none after; restarted, it serves again', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const endpoints = V4_DAEMONS.slice(0, 3);
  const topo = healthSetup(t, endpoints.map(addressOf));
  const { sandbox, server } = topo;
  const daemons = await startNginxDaemons(sandbox, server, topo.dir, endpoints);
  const all: NginxDaemon[] = [...daemons];
  let hostlb: HostlbProcess | undefined;
  const loads: RunningWrk[] = [];
  try {
    hostlb = await startHostlb(topo, socketConfig(CLUSTER_V4, endpoints.map((address) => ({ address }))));
    const h = hostlb;
    const admin = AdminClient.of(h);
    await untilHealth('every daemon up', admin, (v) => v.length === 3 && v.every((d) => d.state === 'up'), h);
    const startMetrics = await socketMetrics(admin);
    assert.equal(startMetrics.taken, 3, `hostlb took each daemon's listening socket at start:\n${startMetrics.text}`);
    const victim = daemons[1];
    const tails = tailsOf(daemons, CLIENT_V4);
    const others = [0, 2];
    /** New connections the kernel refused across the kill because the program found no socket for them. */
    let unassignedAcrossKill = -1;
    let failedAcrossKill = -1;

    await t.test('killed: down by passive signals; failures bounded by what was in flight; none for connections started after it was seen down; no new connection handed to it', async () => {
      const a = startLoad(topo, URL_V4);
      loads.push(a);
      await untilServed(`every daemon serving ${PER_DAEMON} requests`, tails, (n) => n.every((x) => x >= PER_DAEMON), h);
      const before = await socketMetrics(admin);
      const exited = once(victim.child, 'exit');
      const killAt = Date.now();
      process.kill(victim.child.pid!, 'SIGKILL');
      await exited;
      const victimAtKill = tails[1].read();
      const health = await untilHealth(`${victim.endpoint} down in /v1/health`, admin, (v) => healthOf(v, victim.endpoint)?.state === 'down', h, 50);
      const seenDownAt = Date.now();
      const down = healthOf(health, victim.endpoint)!;
      // Down comes from counts of a sync after the kill, which had counted every connection handed to the daemon.
      const flowsAtDown = (await admin.newFlows(80))[victim.endpoint];
      const downEvent = (await admin.events()).find((e) => e.type === 'daemon_down' && e.daemon === victim.endpoint);
      const sa = await finish(a, 'wrk across the daemon kill');
      const afterA = await socketMetrics(admin);
      unassignedAcrossKill = afterA.unassigned - before.unassigned;
      failedAcrossKill = failures(sa);
      t.diagnostic(`kill -9 of ${victim.endpoint}: seen down in /v1/health after ${seenDownAt - killAt} ms (daemon_down ${downEvent === undefined ? 'not in /v1/events' : `at +${Date.parse(downEvent.at) - killAt} ms`}): ${JSON.stringify(down)}`);
      t.diagnostic(`wrk across the kill, until it was seen down: ${describeWrk(sa)} → ${failedAcrossKill} failed; lookups no daemon socket took (refused by the kernel): ${unassignedAcrossKill}`);

      // Every connection of this wrk starts after /v1/health showed the daemon down. It runs on through the
      // passive hold-down (no advisor: the daemon is let back in, still without a socket, and is taken out again).
      const b = startLoad(topo, URL_V4);
      loads.push(b);
      const atB = readAll(tails);
      await untilServed(`${PHASE} requests served by the others after the daemon was seen down`, tails, (n) => sum(others.map((k) => n[k] - atB[k])) >= PHASE, h);
      let again: Awaited<ReturnType<AdminClient['events']>>;
      try {
        again = await pollUntil(`${victim.endpoint} let back in after the hold-down and taken out again`, () => admin.events(), (events) => {
          const mine = events.filter((e) => e.daemon === victim.endpoint && (e.type === 'daemon_up' || e.type === 'daemon_down') && e.id > (downEvent?.id ?? 0));
          return mine.some((e) => e.type === 'daemon_up') && mine.at(-1)?.type === 'daemon_down';
        }, WAIT_MS);
      } catch (error) {
        return assert.fail(`${(error as Error).message}${await evidence(h)}`);
      }
      const atAgain = readAll(tails);
      await untilServed(`${PHASE} more requests served after that`, tails, (n) => sum(others.map((k) => n[k] - atAgain[k])) >= PHASE, h);
      const sb = await finish(b, 'wrk after the daemon was seen down');
      const flowsAtEnd = (await admin.newFlows(80))[victim.endpoint];
      const endMetrics = await socketMetrics(admin);
      const cycle = again.filter((e) => e.daemon === victim.endpoint && e.id > (downEvent?.id ?? 0)).map((e) => `${e.type} +${Date.parse(e.at) - killAt} ms (${e.reason})`);
      t.diagnostic(`wrk started after it was seen down: ${describeWrk(sb)}; unassigned lookups during it: ${endMetrics.unassigned - afterA.unassigned}; events of ${victim.endpoint} since: ${cycle.join(', ')}`);
      t.diagnostic(`new connections handed to ${victim.endpoint} (hostlb's count): ${flowsAtDown} when seen down, ${flowsAtEnd} at the end`);

      assert.match(down.reason, /refuses new connections/, `taken down by passive signals: ${JSON.stringify(down)}`);
      assert.equal(down.effectiveWeight, 0, `a down daemon has effective weight 0: ${JSON.stringify(down)}`);
      // In flight at the kill: at most one request per wrk connection. Besides those, a new connection fails
      // only when every bucket the program tried named the dead daemon's empty slot (counted as unassigned).
      assert.ok(failedAcrossKill <= CONNECTIONS + unassignedAcrossKill, `failed requests across the kill: ${failedAcrossKill}, at most ${CONNECTIONS} in flight + ${unassignedAcrossKill} unassigned; wrk: ${describeWrk(sa)}${await evidence(h)}`);
      await assertNoFailure('wrk started after /v1/health showed the daemon down (through its hold-down and after)', sb, h);
      assert.equal(endMetrics.unassigned, afterA.unassigned, `no lookup left without a daemon socket after it was seen down:\n${endMetrics.text}`);
      assert.equal(flowsAtEnd, flowsAtDown, `no new connection handed to ${victim.endpoint} after it was seen down${await evidence(h)}`);
      assert.equal(tails[1].read(), victimAtKill, `${victim.endpoint}'s access log stays put after the kill`);
      const end = readAll(tails);
      for (const k of others) assert.ok(end[k] > atB[k], `${daemons[k].endpoint} served after the kill: ${JSON.stringify(end)}`);
    });

    await t.test('killed: no new connection is refused, only those in flight fail', () => {
      assert.ok(unassignedAcrossKill >= 0, 'the kill subtest ran');
      assert.equal(unassignedAcrossKill, 0, `new connections refused across the kill (unassigned lookups): ${unassignedAcrossKill}; wrk failures ${failedAcrossKill}`);
    });

    await t.test('restarted on the same address: its socket is taken again and it serves, with no failed request', async () => {
      const c = startLoad(topo, URL_V4);
      loads.push(c);
      const atC = readAll(tails);
      await untilServed(`${PER_DAEMON} requests served by the others before the restart`, tails, (n) => others.every((k) => n[k] >= atC[k] + PER_DAEMON / 2), h);
      const takenBefore = (await socketMetrics(admin)).taken;
      const eventsBefore = h.events.length;
      const [again] = await startNginxDaemons(sandbox, server, join(topo.dir, 'again'), [victim.endpoint]);
      all.push(again);
      let taken: SocketMetrics;
      try {
        taken = await pollUntil('hostlb_socket_daemon_sockets_taken_total rises', () => socketMetrics(admin), (m) => m.taken > takenBefore, WAIT_MS);
      } catch (error) {
        return assert.fail(`${(error as Error).message}${await evidence(h)}`);
      }
      const up = await untilHealth(`${victim.endpoint} up`, admin, (v) => healthOf(v, victim.endpoint)?.state === 'up', h);
      const againTail = new LogTail(again.accessLogPath, CLIENT_V4);
      await untilServed(`the restarted ${victim.endpoint} serving ${PER_DAEMON} requests`, [againTail], ([n]) => n >= PER_DAEMON, h);
      const sc = await finish(c, 'wrk across the restart');
      t.diagnostic(`restarted ${victim.endpoint}: sockets taken ${takenBefore} → ${taken.taken}; it served ${againTail.read()}; /v1/health: ${JSON.stringify(healthOf(up, victim.endpoint))}; wrk: ${describeWrk(sc)}`);
      const takenEvents = h.events.slice(eventsBefore).filter((e) => e.event === 'daemon_socket_taken');
      assert.deepEqual(takenEvents.map((e) => e.daemon), [victim.endpoint], `one daemon_socket_taken event, for the restarted daemon: ${JSON.stringify(takenEvents)}`);
      assert.deepEqual(againTail.badSample, [], 'the restarted daemon answers 200 to the client\'s real address');
      await assertNoFailure('wrk across the daemon\'s restart', sc, h);
    });

    await stopDeliberately(h, server, pinDirOf(server));
  } finally {
    await stopAll(loads);
    await hostlb?.stop();
    await stopDaemons(all);
  }
});

// ---------------------------------------------------------------- 4. reconfiguration under load

test('[socket] reconfigured under load through the CLI (add, quiesce, remove): no failed request, new connections only where the configuration allows', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, V4_DAEMONS.map(addressOf));
  const { sandbox, server } = topo;
  // d4 runs from the start but is not in the configuration until it is added.
  const daemons = await startNginxDaemons(sandbox, server, topo.dir, V4_DAEMONS);
  const [D1, D2, D3, D4] = V4_DAEMONS;
  let hostlb: HostlbProcess | undefined;
  let load: RunningWrk | undefined;
  try {
    hostlb = await startHostlb(topo, socketConfig(CLUSTER_V4, [D1, D2, D3].map((address) => ({ address }))));
    const h = hostlb;
    const admin = AdminClient.of(h);
    const tails = tailsOf(daemons, CLIENT_V4);
    const table: string[] = [];
    const note = (label: string): void => {
      table.push(`${label.padEnd(28)} ${readAll(tails).map((n, i) => `${daemons[i].name}=${n}`).join(' ')}`);
    };
    const weights = async (): Promise<Record<string, number>> => Object.fromEntries((await admin.daemonsOf(80)).map((d) => [d.address, d.weight]));
    const ctl = async (...args: string[]): Promise<void> => {
      const run = await cli(sandbox, server, h, args);
      assert.equal(run.code, 0, `${describeCli(run)}${await evidence(h)}`);
    };

    load = startLoad(topo, URL_V4);
    await untilServed(`d1-d3 serving ${PER_DAEMON} requests each`, tails, (n) => n.slice(0, 3).every((x) => x >= PER_DAEMON), h);
    note('start');

    const d4Before = tails[3].read();
    await ctl('daemon', 'add', CLUSTER_V4, '80', D4);
    assert.deepEqual(await weights(), { [D1]: 1, [D2]: 1, [D3]: 1, [D4]: 1 }, 'after daemon add');
    const afterAdd = await untilServed(`d4 serving ${PER_DAEMON} requests after its addition`, tails, (n) => n[3] >= PER_DAEMON, h);
    note('add d4');

    const atQuiesce = readAll(tails);
    await ctl('daemon', 'quiesce', CLUSTER_V4, '80', D2);
    assert.deepEqual(await weights(), { [D1]: 1, [D2]: 0, [D3]: 1, [D4]: 1 }, 'after daemon quiesce');
    const quiesced = await frozenThenPhase('quiesced d2', tails, 1, [0, 2, 3], h);
    note('quiesce d2');
    const phaseAfterQuiesce = readAll(tails);

    await ctl('daemon', 'remove', CLUSTER_V4, '80', D3);
    const left = await weights();
    assert.equal(left[D3], undefined, `d3 is gone from port 80 after daemon remove: ${JSON.stringify(left)}`);
    const removed = await frozenThenPhase('removed d3', tails, 2, [0, 3], h);
    note('remove d3');
    const summary = await finish(load, 'wrk across the changes');
    note('end');
    t.diagnostic(`wrk: ${describeWrk(summary)}\naccess-log lines per daemon after each step:\n${table.join('\n')}`);

    await assertNoFailure('wrk across add, quiesce and remove', summary, h);
    assert.equal(d4Before, 0, 'd4 served nothing before it was added');
    assert.ok(afterAdd[3] > 0, 'd4 served after it was added');
    assert.equal(quiesced.atEnd, quiesced.atFreeze, `quiesced d2 got no new connection once out of the buckets (others served ${quiesced.othersDuring})\n${table.join('\n')}`);
    assert.equal(removed.atEnd, removed.atFreeze, `removed d3 got no new connection once out of the buckets (others served ${removed.othersDuring})\n${table.join('\n')}`);
    const end = readAll(tails);
    assert.equal(end[1], quiesced.atFreeze, `d2 stayed without new connections to the end\n${table.join('\n')}`);
    for (const k of [0, 3]) assert.ok(end[k] > phaseAfterQuiesce[k], `${daemons[k].name} served after d3's removal\n${table.join('\n')}`);
    for (const k of [0, 2, 3]) assert.ok(phaseAfterQuiesce[k] > atQuiesce[k], `${daemons[k].name} served after d2's quiesce\n${table.join('\n')}`);
    for (const tail of tails) assert.deepEqual(tail.badSample, [], `${tail.path}: every request answered 200, from the client's real address`);

    await stopDeliberately(h, server, pinDirOf(server));
  } finally {
    await stopAll([load]);
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});

// ---------------------------------------------------------------- 5. IPv6

test('[socket] HTTP through [2001:db8::100]:80 reaches every IPv6 daemon with the client\'s real address', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, V6_DAEMONS.map(addressOf));
  const { sandbox, client, server } = topo;
  // The cluster address is on the veth's /64: without this route the client would look for it on the link.
  client.ip('-6', 'route', 'add', `${CLUSTER_6}/128`, 'via', SERVER_V6);
  const daemons = await startNginxDaemons(sandbox, server, topo.dir, V6_DAEMONS);
  let hostlb: HostlbProcess | undefined;
  let load: RunningWrk | undefined;
  try {
    hostlb = await startHostlb(topo, socketConfig(CLUSTER_6, V6_DAEMONS.map((address) => ({ address }))));
    assertPlaneSetUp(server, 'socket');
    const url = `http://[${CLUSTER_6}]/`;
    const results = await curlThrough(sandbox, client, Array.from({ length: 60 }, () => url));
    for (const r of results) {
      assert.equal(r.httpCode, 200, JSON.stringify(r));
      assert.equal(r.remoteIp, CLUSTER_6, 'curl talked to the cluster address');
      assert.equal(r.remotePort, 80);
      assert.equal(r.localIp, CLIENT_V6, 'from the client\'s own address');
      // nginx prints IPv6 without brackets: "<daemon> 2001:db8::1:<port>".
      assert.equal(r.body.split(' ')[1], `${CLIENT_V6}:${r.localPort}`, `the daemon saw the client's real address and port: ${r.body}`);
    }
    const served = [...new Set(results.map((r) => r.body.split(' ')[0]))].sort();
    assert.deepEqual(served, ['d1', 'd2', 'd3'], 'every daemon serves');
    const logged = daemons.flatMap((d) => d.accessLog().map((e) => `${e.clientAddress}:${e.clientPort}`)).sort();
    assert.deepEqual(logged, results.map((r) => `${CLIENT_V6}:${r.localPort}`).sort(), 'the access logs hold exactly the client\'s connections, from its real address');

    // And a bounded load over IPv6: no failed request.
    const tails = tailsOf(daemons, CLIENT_V6);
    const before = readAll(tails);
    load = startLoad(topo, url);
    await untilServed(`every IPv6 daemon serving ${PER_DAEMON} requests`, tails, (n) => n.every((x, i) => x >= before[i] + PER_DAEMON), hostlb);
    const s = await finish(load, 'wrk over IPv6');
    t.diagnostic(`wrk over IPv6: ${describeWrk(s)}`);
    await assertNoFailure('wrk over IPv6', s, hostlb);
    for (const tail of tails) assert.deepEqual(tail.badSample, [], `${tail.path}: every request answered 200, from ${CLIENT_V6}`);

    await stopDeliberately(hostlb, server, pinDirOf(server));
  } finally {
    await stopAll([load]);
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});

// ---------------------------------------------------------------- 6. rr and wrr in turn

test('[socket] rr and wrr hand new connections out in turn: one request after another cycles through the daemons, by weight', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { endpoints, topo, daemons } = await threeDaemons(t);
  const { server } = topo;
  const started: HostlbProcess[] = [];
  // The manager's factors held at 1 and no slow start: wrr's weights stay the configured ones.
  const config = (scheduler: string, weights: number[]): Record<string, unknown> => ({
    device: DEVICE, dataplane: 'socket',
    clusters: [{ address: CLUSTER_V4, ports: [{
      port: 80, protocol: 'tcp', scheduler,
      manager: { slowStart: '0s', proportions: { active: 0, new: 0, response: 0, passive: 0 } },
      daemons: endpoints.map((address, i) => ({ address, weight: weights[i] })),
    }] }],
  });
  try {
    const rr = await startHostlb(topo, config('rr', [1, 1, 1]));
    started.push(rr);
    const names = await servedInOrder(topo, 12);
    assert.deepEqual([...names.slice(0, 3)].sort(), ['d1', 'd2', 'd3'], `three requests, three daemons: ${names.join(' ')}`);
    names.forEach((name, i) => assert.equal(name, names[i % 3], `request ${i + 1} meets the daemon request ${(i % 3) + 1} met: ${names.join(' ')}`));
    await stopDeliberately(rr, server, pinDirOf(server));

    const wrr = await startHostlb(topo, config('wrr', [2, 1, 1]));
    started.push(wrr);
    const weighted = await servedInOrder(topo, 12);
    assert.deepEqual(weighted.slice(0, 4), ['d1', 'd2', 'd3', 'd1'], `wrr's smooth order for 2:1:1: ${weighted.join(' ')}`);
    weighted.forEach((name, i) => assert.equal(name, weighted[i % 4], `request ${i + 1} meets the daemon request ${(i % 4) + 1} met: ${weighted.join(' ')}`));
    await stopDeliberately(wrr, server, pinDirOf(server));
  } finally {
    for (const h of started) await h.stop();
    await stopDaemons(daemons);
  }
});
