// Rolling restart of supervised daemons under load: hostlb runs three Node
// fixture daemons (graceful on SIGTERM) behind 198.18.100.1:80 with an http
// advisor; while wrk opens new connections, `hostlb restart` runs twice, each
// after a counted number of new connections (not after so many seconds: the
// load is what matters, and a busy machine makes it slower). Not one request may fail (no socket error, no non-2xx), every daemon
// must be restarted each time (daemon_restarted, a new PID, the old one gone)
// and stopped gracefully (exit code 0, never SIGKILL). Once more on the
// socket plane with listenFds: hostlb opens each daemon's listening socket,
// passes it as fd 3, and keeps it while the daemon is replaced.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { CLUSTER_V4, type HostlbProcess } from '../support/hostlb-process.js';
import { ALL_DATAPLANES, type Dataplane } from '../support/dataplanes.js';
import { processAlive as alive } from '../support/daemons.js';
import { skipUnlessRoot } from '../support/netns.js';
import { AdminClient, cli, describeCli, EventStream, FIXTURE, healthSetup, pollUntil, startHostlb, startWrk, type CliRun, type StreamedEvent } from './health-harness.js';

const DAEMONS = ['198.18.2.11:8080', '198.18.2.12:8080', '198.18.2.13:8080'];
// New connections before the first restart, between the two, and after the second.
const FLOWS_BETWEEN = 2_000;
// Bound on waiting for a count or a state: reached only when hostlb is broken.
const WAIT_MS = 120_000;

/** PID per daemon from daemon_started events ("pid N") with id above `afterId`; the latest wins. */
function pidsStarted(events: StreamedEvent[], afterId: number): Map<string, number> {
  const pids = new Map<string, number>();
  for (const e of events) {
    const m = /^pid (\d+)$/.exec(e.reason ?? '');
    if (e.type === 'daemon_started' && e.id > afterId && m !== null) pids.set(e.daemon, Number(m[1]));
  }
  return pids;
}

async function rollingRestart(t: TestContext, dataplane: Dataplane, listenFds = false): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device or netfilter rules, supervised Node daemons and wrk')) return;
  const topo = healthSetup(t, DAEMONS.map((d) => d.split(':')[0]));
  let hostlb: HostlbProcess | undefined;
  let events: EventStream | undefined;
  try {
    hostlb = await startHostlb(topo, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 1 << 19 },
      clusters: [{
        address: CLUSTER_V4,
        ports: [{
          port: 80,
          advisor: { type: 'http', interval: '500ms', timeout: '400ms', rise: 1, fall: 2 },
          supervise: { command: process.execPath, args: [FIXTURE], instances: 3, host: '198.18.2.11', port: 8080, stopTimeout: '10s', listenFds, user: 'root' },
        }],
      }],
    });
    const admin = AdminClient.of(hostlb);
    events = await EventStream.open(admin.socket);
    await pollUntil('three supervised daemons up', () => admin.health(), (h) => h.length === 3 && h.every((d) => d.state === 'up'), WAIT_MS);
    const initial = pidsStarted(events.events, 0);
    assert.deepEqual([...initial.keys()].sort(), DAEMONS, `a daemon_started event with a PID for each daemon: ${JSON.stringify(events.events)}`);

    const stream = events;
    const wrkAt = Date.now();
    const wrk = startWrk(topo.sandbox, topo.client, ['-t2', '-c20', '-d600s', '--timeout', '5s', '-H', 'Connection: close', `http://${CLUSTER_V4}/`], 660_000);
    const flows = async (): Promise<number> => Object.values(await admin.newFlows(80)).reduce((a, b) => a + b, 0);
    /** Until FLOWS_BETWEEN more new connections than now have reached the daemons. */
    const moreFlows = async (what: string): Promise<void> => {
      const from = await flows();
      await pollUntil(`${FLOWS_BETWEEN} new connections ${what}`, flows, (n) => n >= from + FLOWS_BETWEEN, WAIT_MS, 200);
    };
    const restarts: Array<{ run: CliRun; markerId: number; before: Map<string, number> }> = [];
    let before = initial;
    let summary;
    try {
      for (const what of ['before the first restart', 'between the restarts']) {
        await moreFlows(what);
        const markerId = stream.events.reduce((m, e) => Math.max(m, e.id), 0);
        const run = await cli(topo.sandbox, topo.server, hostlb, ['restart', CLUSTER_V4, '80'], WAIT_MS);
        restarts.push({ run, markerId, before });
        before = new Map([...before, ...pidsStarted(stream.events, markerId)]);
      }
      await moreFlows('after the second restart');
    } finally {
      wrk.stop();
      summary = await wrk.done;
    }
    const context = async (): Promise<string> => `\nwrk:\n${summary.output}${restarts.map((r) => `\n${describeCli(r.run)}`).join('')}${await admin.evidence(hostlb!)}`;

    console.log(`  wrk: ${summary.requests} requests in ${((Date.now() - wrkAt) / 1000).toFixed(1)} s; socket errors ${JSON.stringify(summary.socketErrors)}; non-2xx ${summary.non2xx}`);
    for (const [i, r] of restarts.entries()) {
      const during = stream.events.filter((e) => e.id > r.markerId && (i + 1 === restarts.length || e.id <= restarts[i + 1].markerId));
      const pids = pidsStarted(during, 0);
      console.log(`  restart ${i + 1}: began ${r.run.startedAt - wrkAt} ms into the run, took ${r.run.returnedAt - r.run.startedAt} ms, exit ${r.run.code}; PIDs ${DAEMONS.map((d) => `${d} ${r.before.get(d)}→${pids.get(d)}`).join(', ')}`);
    }
    for (const r of restarts) assert.equal(r.run.code, 0, `${describeCli(r.run)}${await context()}`);
    assert.equal(summary.code, 0, `wrk ran${await context()}`);
    assert.ok(summary.requests >= 3 * FLOWS_BETWEEN, `wrk completed a real load (${summary.requests} requests)`);
    assert.deepEqual(summary.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors during the rolling restarts${await context()}`);
    assert.equal(summary.non2xx, 0, `no non-2xx responses${await context()}`);

    for (const [i, r] of restarts.entries()) {
      const end = i + 1 === restarts.length ? Infinity : restarts[i + 1].markerId;
      const during: StreamedEvent[] = stream.events.filter((e) => e.id > r.markerId && e.id <= end);
      const restarted = during.filter((e) => e.type === 'daemon_restarted').map((e) => e.daemon).sort();
      assert.deepEqual(restarted, DAEMONS, `restart ${i + 1}: daemon_restarted for each daemon${await context()}`);
      const exits = during.filter((e) => e.type === 'daemon_exited');
      assert.deepEqual(exits.map((e) => e.reason), DAEMONS.map(() => 'exit code 0'), `restart ${i + 1}: each daemon stopped gracefully on SIGTERM (exit 0), none killed${await context()}`);
      const pids = pidsStarted(during, 0);
      for (const d of DAEMONS) {
        const old = r.before.get(d)!;
        const now = pids.get(d);
        assert.ok(now !== undefined && now !== old, `restart ${i + 1}: ${d} has a new PID (${old} → ${now})`);
        assert.ok(!alive(old), `restart ${i + 1}: ${d}'s old process ${old} is gone`);
      }
    }
    const finalPids = [...pidsStarted(stream.events, 0).values()];
    assert.ok(finalPids.every(alive), `the latest daemons are running: ${finalPids.join(', ')}`);
    const health = await admin.health();
    assert.deepEqual(health.map((h) => h.state), ['up', 'up', 'up'], `all up after the restarts: ${JSON.stringify(health)}`);
    if (listenFds) {
      // Each daemon said where it listens (hostlb logs): on the socket hostlb passed it.
      const logs = await cli(topo.sandbox, topo.server, hostlb, ['logs', '--lines', '10000']);
      assert.equal(logs.code, 0, describeCli(logs));
      for (const d of DAEMONS) assert.match(logs.stdout, new RegExp(`\\| listening on ${d.replace(/\./g, '\\.')} pid \\d+ \\(fd 3\\)$`, 'm'), `${d} served on fd 3:\n${logs.stdout.slice(-3_000)}`);
    }
  } finally {
    events?.close();
    await hostlb?.stop();
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] hostlb restart (twice) under a load of new connections: no failed request, every daemon restarted gracefully with a new PID`, (t) => rollingRestart(t, dataplane));
test('[socket] listenFds: hostlb restart (twice) under a load of new connections, the daemons on sockets hostlb passed them: no failed request, every daemon restarted gracefully', (t) => rollingRestart(t, 'socket', true));
