// The socket data plane with keep-alive connections held open across changes
// (fixtures/held-connections.mjs in the client namespace, one GET per
// connection on each ask; a connection never reconnects, so a reset or a move
// shows on it):
//
//   1. lc under uneven load: six connections held on d1 alone, then d2 and d3
//      join; the next six go to d2 and d3 three each, none to d1 — the
//      kernel's own per-daemon counts decide each pick (bpf/load-count.ts) —
//      and short connections after them avoid d1 too.
//   2. start --takeover: the old hostlb hands over and exits 0 without undoing
//      anything; the held connections go on, the new hostlb adopts the pinned
//      program and serves new connections, and the counts held in the kernel
//      went over with it (lc still avoids the loaded daemon).
//   3. onDaemonRemoved: reset — removing d2 aborts its connections (SOCK_DESTROY:
//      the client's next request fails with a reset, not a hang); the other
//      daemons' connections go on.
//   4. a cluster on 0.0.0.0 (any local address), port 8080 — the daemons' own
//      port: it answers on the server's own address from the client namespace
//      and on 127.0.0.1 from the server itself, served by every daemon, while
//      a daemon's own address and port still reach that daemon (its health
//      checks must); the connection listing finds the held connections; the
//      TUN plane refuses such a cluster naming the key.
//
// Nothing is timed: every wait is on an event or a count, bounded by a hang
// guard a working hostlb never reaches.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { startNginxDaemons, stopDaemons } from '../support/daemons.js';
import { assertPlaneGone, assertPlaneSetUp } from '../support/dataplanes.js';
import { assertSameDaemons, HeldConnections, names, type Held } from '../support/held-connections.js';
import { CLUSTER_V4, curlThrough, HostlbProcess, SERVER_V4 } from '../support/hostlb-process.js';
import { skipUnlessRoot } from '../support/netns.js';
import { AdminClient, cli, describeCli, healthSetup, pollUntil, startHostlb, type HealthTopo } from './health-harness.js';

const WHY_ROOT = 'network namespaces, a BPF sk_lookup program in a bpffs, nginx daemons and curl';
const ENDPOINTS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
const [D1, D2, D3] = ENDPOINTS;

function config(daemons: Array<{ address: string; weight?: number }>, extra: Record<string, unknown> = {}, cluster = CLUSTER_V4, port = 80): Record<string, unknown> {
  return {
    device: 'hlb0',
    dataplane: 'socket',
    ...extra,
    clusters: [{ address: cluster, ports: [{ port, protocol: 'tcp', scheduler: 'lc', daemons }] }],
  };
}

async function heldSetup(t: TestContext): Promise<{ topo: HealthTopo; held: HeldConnections }> {
  const topo = healthSetup(t, ENDPOINTS.map((e) => e.split(':')[0]));
  const daemons = await startNginxDaemons(topo.sandbox, topo.server, topo.dir, ENDPOINTS);
  t.after(() => stopDaemons(daemons));
  const held = new HeldConnections(topo.sandbox, topo.client);
  t.after(() => held.quit());
  return { topo, held };
}

/** Connections per daemon name, in the order d1, d2, d3. */
function perDaemon(hs: Array<{ body?: string }>): number[] {
  const n = names(hs);
  return ['d1', 'd2', 'd3'].map((d) => n.filter((x) => x === d).length);
}

function allAnswered(hs: Held[], what: string): void {
  assert.deepEqual(hs.map((h) => h.status), hs.map(() => 200), `${what}: ${JSON.stringify(hs)}`);
}

test('[socket] lc under uneven load: new connections go to the less loaded daemons, counted in the kernel per connection', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { topo, held } = await heldSetup(t);
  let hostlb: HostlbProcess | undefined;
  try {
    // d2 and d3 quiesced at first: d1 takes every connection.
    hostlb = await startHostlb(topo, config([{ address: D1 }, { address: D2, weight: 0 }, { address: D3, weight: 0 }]));
    const first = await held.open(6);
    allAnswered(first, 'six connections on d1');
    assert.deepEqual(perDaemon(first), [6, 0, 0], names(first).join(' '));

    for (const d of [D2, D3]) {
      const set = await cli(topo.sandbox, topo.server, hostlb, ['daemon', 'set', CLUSTER_V4, '80', d, '--weight', '1']);
      assert.equal(set.code, 0, describeCli(set));
    }
    // d1 holds six: lc gives the next six to d2 and d3, alternately as their counts rise.
    const added = await held.open(6);
    allAnswered(added, 'six more connections');
    assert.deepEqual(perDaemon(added), [0, 3, 3], `lc sent the new connections to the idle daemons: ${names(added).join(' ')}\n${hostlb.describe().slice(-2_000)}`);
    // Short connections (each closed at once) meet d1 at 6 and the others at 3: never d1.
    const short = await curlThrough(topo.sandbox, topo.client, Array.from({ length: 12 }, () => `http://${CLUSTER_V4}/`));
    assert.deepEqual(short.map((r) => r.httpCode), short.map(() => 200), 'short connections answered');
    assert.equal(perDaemon(short)[0], 0, `no short connection went to the loaded d1: ${names(short).join(' ')}`);

    // Closed connections leave the kernel's counts (every daemon back to 0, as hostlb reads them);
    // then three new held connections go one to each daemon, d1 included.
    await held.close();
    const admin = AdminClient.of(hostlb);
    await pollUntil('every daemon\'s active connections back to 0', async () => (await admin.daemonsOf(80)).map((d) => d.activeFlows), (a) => a.every((n) => n === 0), 60_000);
    const again = await held.open(3);
    allAnswered(again, 'three connections after the close');
    assert.deepEqual(perDaemon(again), [1, 1, 1], `one to each, d1 included: ${names(again).join(' ')}`);
    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
  }
});

test('[socket] start --takeover: the old hostlb hands over and exits 0, held connections go on, the new one adopts the program and serves', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { topo, held } = await heldSetup(t);
  let first: HostlbProcess | undefined;
  let second: HostlbProcess | undefined;
  try {
    const cfg = config([{ address: D1 }, { address: D2 }]);
    first = await startHostlb(topo, cfg);
    const opened = await held.open(4);
    allAnswered(opened, 'four connections opened');
    assert.deepEqual(perDaemon(opened), [2, 2, 0], `lc spread them: ${names(opened).join(' ')}`);

    second = await HostlbProcess.start(topo.sandbox, topo.server, { ...cfg, stateDir: first.stateDir }, { dir: topo.dir, args: ['--takeover'] });
    const exit = await first.stop('SIGTERM'); // only waits: it has handed over and exited already
    assert.deepEqual(exit, { code: 0, signal: null }, `the first hostlb exited 0 by itself:\n${first.describe()}`);
    assert.ok(first.events.some((e) => e.event === 'handed_over'), `the first hostlb handed over:\n${first.describe()}`);
    assert.ok(!first.events.some((e) => e.event === 'stopped'), `the first hostlb did not undo its set-up:\n${first.describe()}`);
    const adopted = second.events.find((e) => e.event === 'dispatch_adopted');
    assert.equal(adopted?.attached, true, `the new hostlb took over the attached program:\n${second.describe()}`);
    assertPlaneSetUp(topo.server, 'socket');
    assertSameDaemons(await held.ask(), opened, 'after the takeover');

    // The counts stayed in the kernel: with d1 and d2 at 2, two new held connections go one to each.
    const more = await held.open(2);
    allAnswered(more, 'two more connections');
    assert.deepEqual(perDaemon(more), [1, 1, 0], `lc after the takeover: ${names(more).join(' ')}`);
    const fresh = await curlThrough(topo.sandbox, topo.client, Array.from({ length: 6 }, () => `http://${CLUSTER_V4}/`));
    assert.deepEqual(fresh.map((r) => r.httpCode), fresh.map(() => 200), 'new connections after the takeover');
    await held.close();
    const stopped = await second.stop();
    assert.deepEqual(stopped, { code: 0, signal: null }, `hostlb stopped cleanly:\n${second.describe()}`);
    assertPlaneGone(topo.server);
  } finally {
    await second?.stop();
    await first?.stop();
  }
});

test('[socket] onDaemonRemoved: reset — removing a daemon aborts its connections (SOCK_DESTROY); the other daemons\' go on', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { topo, held } = await heldSetup(t);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await startHostlb(topo, config(ENDPOINTS.map((address) => ({ address })), { onDaemonRemoved: 'reset' }));
    const opened = await held.open(6);
    allAnswered(opened, 'six connections opened');
    assert.deepEqual(perDaemon(opened), [2, 2, 2], `lc spread them: ${names(opened).join(' ')}`);
    const onD2 = opened.filter((x) => names([x])[0] === 'd2');
    const others = opened.filter((x) => names([x])[0] !== 'd2');

    const remove = await cli(topo.sandbox, topo.server, hostlb, ['daemon', 'remove', CLUSTER_V4, '80', D2]);
    assert.equal(remove.code, 0, describeCli(remove));
    const reset = await pollUntil('daemon_flows_reset logged', () => Promise.resolve(hostlb!.events.find((e) => e.event === 'daemon_flows_reset')), (e) => e !== undefined, 60_000);
    assert.equal(reset!.flows, onD2.length, `hostlb reset d2's connections: ${JSON.stringify(reset)}\n${hostlb.describe().slice(-3_000)}`);

    const after = await held.ask();
    const byId = new Map(after.map((x) => [x.id, x]));
    const context = `\n${after.map((x) => `#${x.id} ${x.body ?? x.error}`).join('; ')}\n${hostlb.describe().slice(-3_000)}`;
    for (const c of onD2) {
      const now = byId.get(c.id)!;
      assert.ok(now.error !== undefined, `connection #${c.id} to the removed d2 ended, got ${JSON.stringify(now)}${context}`);
      assert.notEqual(now.error, 'timeout', `connection #${c.id} was reset, not left hanging${context}`);
    }
    assertSameDaemons(others.map((c) => byId.get(c.id)!), others, 'the other daemons\' connections after d2\'s removal', context);
    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
  }
});

test('[socket] a cluster on 0.0.0.0 serves its port on every local address of the host, from outside and from the host itself', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { topo, held } = await heldSetup(t);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await startHostlb(topo, config(ENDPOINTS.map((address) => ({ address })), {}, '0.0.0.0', 8080));
    const fromClient = await curlThrough(topo.sandbox, topo.client, Array.from({ length: 6 }, () => `http://${SERVER_V4}:8080/`));
    assert.deepEqual(fromClient.map((r) => r.httpCode), fromClient.map(() => 200), `port 8080 on the server's own address: ${JSON.stringify(fromClient)}`);
    const onHost = await curlThrough(topo.sandbox, topo.server, Array.from({ length: 3 }, () => 'http://127.0.0.1:8080/'));
    assert.deepEqual(onHost.map((r) => r.httpCode), onHost.map(() => 200), `port 8080 on 127.0.0.1 from the host: ${JSON.stringify(onHost)}`);
    // A daemon's own address and port is not dispatched: d2 answers there, every time.
    const own = await curlThrough(topo.sandbox, topo.server, Array.from({ length: 6 }, () => `http://${D2}/`));
    assert.deepEqual(names(own), own.map(() => 'd2'), `d2's own address reached d2 only: ${JSON.stringify(own)}`);
    // Nothing was added for the address: no local route for 0.0.0.0.
    assert.doesNotMatch(topo.server.ip('route', 'show', 'table', 'local'), /0\.0\.0\.0/);

    const direct = new HeldConnections(topo.sandbox, topo.client, SERVER_V4, 8080);
    t.after(() => direct.quit());
    const opened = await direct.open(6);
    allAnswered(opened, 'six held connections to the server\'s address');
    assert.deepEqual(perDaemon(opened), [2, 2, 2], `lc spread them over every daemon: ${names(opened).join(' ')}`);
    const listed = await cli(topo.sandbox, topo.server, hostlb, ['conns']);
    assert.equal(listed.code, 0, describeCli(listed));
    const ports = opened.map((h) => h.localPort);
    for (const p of ports) assert.match(listed.stdout, new RegExp(`198\\.18\\.0\\.1:${p}`), `hostlb conns lists the held connection from port ${p}: ${listed.stdout.slice(0, 2_000)}`);
    await direct.close();
    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(topo.server);
  } finally {
    await hostlb?.stop();
  }
  void held;
});

test('[tun] a cluster on 0.0.0.0 is refused at start, naming the key and the plane that serves it', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, []);
  const started = HostlbProcess.start(topo.sandbox, topo.server, { ...config([{ address: D1 }], {}, '0.0.0.0'), dataplane: 'tun' }, { dir: topo.dir });
  await assert.rejects(started, (e: Error) => /clusters\[0\]\.address: 0\.0\.0\.0 \(any local address\) is served by dataplane: socket only/.test(e.message));
  assertPlaneGone(topo.server);
});
