// Load through the cluster: wrk with 50 keep-alive connections from another
// namespace, through hostlb to three nginx daemons, until the daemons have
// served a counted number of requests (however long that takes on this
// machine). Every request must succeed (no socket errors, no non-2xx) and
// every daemon must serve, each seeing the client's real address.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLIENT_V4, CLUSTER_V4, clusterTopology, curlThrough, HostlbProcess } from '../support/hostlb-process.js';
import { assertPlaneGone, assertPlaneSetUp, ALL_DATAPLANES, type Dataplane } from '../support/dataplanes.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';
import { startWrk } from '../support/wrk.js';

const DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
/** Requests the daemons must have logged before the load stops. */
const REQUESTS = 20_000;
/** Bound on a load that never reaches REQUESTS: only a broken run gets there. */
const WAIT_MS = 300_000;

/** What wrk printed that this test judges. */
interface WrkSummary {
  requests: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
}

/**
 * Parses wrk 4's summary. "Socket errors: connect N, read N, write N, timeout N"
 * and "Non-2xx or 3xx responses: N" are printed only when non-zero: absent
 * means 0. Throws when the request count line is missing (wrk did not run).
 */
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

async function wrkThroughCluster(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device or netfilter rules, nginx daemons and wrk')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  for (const d of DAEMONS) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, DAEMONS);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 65536 },
      clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, protocol: 'tcp', scheduler: 'wlc', daemons: DAEMONS.map((address) => ({ address })) }] }],
    }, { dir });
    // The TUN plane's device, or the netfilter plane's nft table and iptables chain.
    assertPlaneSetUp(server, dataplane);

    // Until the daemons have logged REQUESTS requests, then SIGINT (wrk prints its summary); bounded twice.
    const startedAt = Date.now();
    const wrk = startWrk(sandbox, client, ['-t2', '-c50', '-d600s', '--timeout', '5s', `http://${CLUSTER_V4}/`], WAIT_MS + 60_000);
    const loggedNow = (): number => daemons.reduce((n, d) => n + d.accessLog().length, 0);
    for (const deadline = Date.now() + WAIT_MS; loggedNow() < REQUESTS && Date.now() < deadline;) await sleep(250);
    wrk.stop();
    const run = await wrk.done;
    const seconds = (Date.now() - startedAt) / 1000;
    const output = `${run.stdout}${run.stderr}`;
    assert.equal(run.code, 0, `wrk ran${run.timedOut ? ' (killed at its time limit)' : ''}:\n${output}`);
    const summary = parseWrk(output);
    const context = `\nwrk:\n${output}\nhostlb:\n${hostlb.describe()}`;
    assert.ok(summary.requests >= REQUESTS - 50, `wrk completed a real load (${summary.requests} requests)${context}`);
    assert.deepEqual(summary.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors${context}`);
    assert.equal(summary.non2xx, 0, `no non-2xx responses${context}`);

    const logs = daemons.map((d) => d.accessLog());
    const perDaemon = daemons.map((d, i) => `${d.name}=${logs[i].length}`).join(' ');
    t.diagnostic(`wrk: ${summary.requests} requests in ${seconds.toFixed(1)} s; requests per daemon: ${perDaemon}`);
    for (const [i, d] of daemons.entries()) {
      assert.ok(logs[i].length > 0, `${d.name} served requests (${perDaemon})`);
      const strangers = logs[i].filter((e) => e.clientAddress !== CLIENT_V4 || e.status !== 200);
      assert.deepEqual(strangers.slice(0, 5), [], `${d.name} saw only the client's real address and answered 200`);
    }
    // wrk counts responses it read; a request in flight when it stopped is
    // logged by nginx but not counted by wrk (one per connection at most).
    const logged = logs.reduce((n, l) => n + l.length, 0);
    assert.ok(logged >= summary.requests && logged <= summary.requests + 50, `daemons logged ${logged} requests, wrk counted ${summary.requests} (${perDaemon})`);
    // wrk used 50 connections: each is one flow, pinned to one daemon.
    const daemonOf = new Map<number, Set<string>>();
    for (const [i, d] of daemons.entries()) for (const e of logs[i]) daemonOf.set(e.clientPort, (daemonOf.get(e.clientPort) ?? new Set()).add(d.name));
    assert.equal(daemonOf.size, 50, `wrk's 50 connections each reached a daemon (${daemonOf.size} client ports logged)`);
    const split = [...daemonOf].filter(([, names]) => names.size > 1).map(([port, names]) => `${port}: ${[...names].join(',')}`);
    assert.deepEqual(split, [], 'every connection stayed with one daemon');

    // hostlb still answers after the load.
    const after = await curlThrough(sandbox, client, [`http://${CLUSTER_V4}/`]);
    assert.equal(after[0].httpCode, 200);

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(server);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] wrk -t2 -c50 through the cluster for ${REQUESTS} requests: no socket errors, only 2xx, every daemon serves`, (t) => wrkThroughCluster(t, dataplane));
