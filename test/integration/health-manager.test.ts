// The manager and slow start with real traffic: weights from advisor response
// times move new connections away from a slow daemon, and a daemon let back in
// (weight 0 → 1) ramps up over slowStart instead of taking its full share at
// once. Shares are counted by hostlb's per-daemon new-flow counters
// (GET /v1/clusters) while wrk opens new connections; every test prints them.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNginxDaemons, stopDaemons } from '../support/daemons.js';
import { CLUSTER_V4, type HostlbProcess } from '../support/hostlb-process.js';
import { ALL_DATAPLANES, type Dataplane } from '../support/dataplanes.js';
import { skipUnlessRoot } from '../support/netns.js';
import { AdminClient, cli, describeCli, healthSetup, pct, pollUntil, startFixtureDaemons, startHostlb, startWrk, type HealthView } from './health-harness.js';

const WHY_ROOT = 'network namespaces, a TUN device or netfilter rules, nginx and Node daemons and wrk';
const [D1, D2, D3] = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
// Bound on waiting for something the test needs (the manager to move, the load
// to reach a count): reached only when hostlb is broken, never part of a pass.
const WAIT_MS = 60_000;

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
}

function shares(counts: Record<string, number>): Record<string, number> {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, total === 0 ? 0 : v / total]));
}

function describeHealth(h: HealthView[]): string {
  return h.map((d) => `${d.daemon} response ${d.responseMs} ms factor ${d.factor} effective ${d.effectiveWeight}`).join('; ');
}

async function managerResponseTime(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, ['198.18.2.1', '198.18.2.2', '198.18.2.3']);
  const daemons = await startFixtureDaemons(topo.sandbox, topo.server, [
    { endpoint: D1, name: 'slow', delayMs: 50 },
    { endpoint: D2, name: 'fast2' },
    { endpoint: D3, name: 'fast3' },
  ]);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await startHostlb(topo, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 1 << 18 },
      clusters: [{
        address: CLUSTER_V4,
        ports: [{
          port: 80,
          scheduler: 'wrr',
          // The timeout must not exceed the interval, and its default is 1 s.
          advisor: { type: 'http', interval: '500ms', timeout: '400ms' },
          manager: { proportions: { active: 0, new: 0, response: 1, passive: 0 }, interval: '1s', slowStart: '0s' },
          daemons: [{ address: D1 }, { address: D2 }, { address: D3 }],
        }],
      }],
    });
    const admin = AdminClient.of(hostlb);
    // Warm-up: the advisors measure, the manager (every 1 s, smoothing 0.5) moves the factors.
    const warmAt = Date.now();
    const warm = await pollUntil('the manager favours the fast daemons', () => admin.health(), (h) => {
      const slow = h.find((d) => d.daemon === D1);
      const fast = h.filter((d) => d.daemon !== D1);
      return slow !== undefined && fast.length === 2 && fast.every((d) => d.state === 'up' && slow.factor < 0.5 * d.factor);
    }, WAIT_MS, 250).catch(async (error: Error) => assert.fail(`${error.message}${await admin.evidence(hostlb!)}`));
    console.log(`  after ${Date.now() - warmAt} ms of warm-up: ${describeHealth(warm)}`);

    // A load of NEW_FLOWS new connections, however long this machine takes to make them.
    const NEW_FLOWS = 6_000;
    const before = await admin.newFlows(80);
    const loadAt = Date.now();
    const wrk = startWrk(topo.sandbox, topo.client, ['-t2', '-c20', '-d600s', '--timeout', '5s', '-H', 'Connection: close', `http://${CLUSTER_V4}/`], 660_000);
    await pollUntil(`${NEW_FLOWS} new connections`, async () => Object.values(delta(await admin.newFlows(80), before)).reduce((a, b) => a + b, 0), (n) => n >= NEW_FLOWS, 10 * WAIT_MS, 250)
      .finally(() => wrk.stop());
    const summary = await wrk.done;
    const counts = delta(await admin.newFlows(80), before);
    const share = shares(counts);
    const fastMean = (share[D2] + share[D3]) / 2;
    console.log(`  wrk: ${summary.requests} requests in ${((Date.now() - loadAt) / 1000).toFixed(1)} s; socket errors ${JSON.stringify(summary.socketErrors)}; non-2xx ${summary.non2xx}`);
    console.log(`  new connections: slow ${D1} ${counts[D1]} (${pct(share[D1])}), fast ${D2} ${counts[D2]} (${pct(share[D2])}), fast ${D3} ${counts[D3]} (${pct(share[D3])}); slow/fast-mean = ${(share[D1] / fastMean).toFixed(3)}`);
    console.log(`  after the load: ${describeHealth(await admin.health())}`);
    assert.equal(summary.code, 0, `wrk ran:\n${summary.output}`);
    assert.deepEqual(summary.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors\n${summary.output}`);
    assert.ok(counts[D1] + counts[D2] + counts[D3] >= NEW_FLOWS, `a real load of new connections: ${JSON.stringify(counts)}`);
    assert.ok(share[D1] < 0.8 * fastMean, `the slow daemon's share ${pct(share[D1])} is below 0.8 × the fast ones' mean ${pct(fastMean)}${await admin.evidence(hostlb)}`);
    assert.ok(counts[D1] > 0, 'the slow daemon is still in (slower, not down)');
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] manager on response time alone: a daemon answering 50 ms late gets measurably fewer new connections`, (t) => managerResponseTime(t, dataplane));

async function slowStart(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, ['198.18.2.1', '198.18.2.2', '198.18.2.3']);
  const daemons = await startNginxDaemons(topo.sandbox, topo.server, topo.dir, [D1, D2, D3]);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await startHostlb(topo, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 1 << 19 },
      // Slow start alone: with every proportion 0 the manager's factors stay 1. Left on, they follow the
      // load (active and new connections) and moved D3's final share between 24% and 33% from run to run.
      // A manager tick a second: the ramp reaches the weights a second after it moves, not two.
      clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, scheduler: 'wrr', manager: { slowStart: '6s', interval: '1s', proportions: { active: 0, new: 0, response: 0, passive: 0 } }, daemons: [{ address: D1 }, { address: D2 }, { address: D3 }] }] }],
    });
    const admin = AdminClient.of(hostlb);
    const quiesce = await cli(topo.sandbox, topo.server, hostlb, ['daemon', 'quiesce', CLUSTER_V4, '80', D3]);
    assert.equal(quiesce.code, 0, describeCli(quiesce));
    const quiesced = await admin.newFlows(80);
    // Every daemon ramps after hostlb's own start too: let that ramp end (hostlb says so) before D3 returns.
    await pollUntil('the ramp after hostlb\'s start over for the other two', () => admin.health(), (h) => h.filter((d) => d.daemon !== D3).every((d) => d.ramp >= 1), WAIT_MS, 250);

    const BUCKETS = 8;
    const wrk = startWrk(topo.sandbox, topo.client, ['-t2', '-c10', '-d600s', '--timeout', '5s', '-H', 'Connection: close', `http://${CLUSTER_V4}/`], 660_000);
    // D3 returns once the load is flowing: some hundreds of new connections since it was quiesced.
    const quiet = await pollUntil('the load flowing to the other two', () => admin.newFlows(80), (n) => n[D1] + n[D2] >= quiesced[D1] + quiesced[D2] + 300, WAIT_MS);
    assert.equal(quiet[D3], quiesced[D3], `no new flow reached ${D3} while it was quiesced`);
    const back = await cli(topo.sandbox, topo.server, hostlb, ['daemon', 'set', CLUSTER_V4, '80', D3, '--weight', '1']);
    const t0 = back.returnedAt;
    const samples = [await admin.newFlows(80)];
    const ramps: Array<HealthView | undefined> = [(await admin.health()).find((d) => d.daemon === D3)];
    for (let k = 1; k <= BUCKETS; k++) {
      await sleep(Math.max(0, t0 + k * 1000 - Date.now()));
      samples.push(await admin.newFlows(80));
      ramps.push((await admin.health()).find((d) => d.daemon === D3));
    }
    wrk.stop();
    const summary = await wrk.done;
    assert.equal(back.code, 0, describeCli(back));
    const perSecond = samples.slice(1).map((s, k) => shares(delta(s, samples[k]))[D3]);
    const totals = samples.slice(1).map((s, k) => Object.values(delta(s, samples[k])).reduce((a, b) => a + b, 0));
    const final = (perSecond[BUCKETS - 2] + perSecond[BUCKETS - 1]) / 2;
    console.log(`  wrk: ${summary.requests} requests; socket errors ${JSON.stringify(summary.socketErrors)}; non-2xx ${summary.non2xx}`);
    for (let k = 0; k < BUCKETS; k++) {
      const h = ramps[k + 1];
      console.log(`  second ${k + 1}: ${D3} share ${pct(perSecond[k])} of ${totals[k]} new connections; ramp ${h?.ramp} effective weight ${h?.effectiveWeight} factor ${h?.factor}`);
    }
    console.log(`  first second ${pct(perSecond[0])} vs the last two ${pct(final)} (ratio ${(perSecond[0] / final).toFixed(3)})`);
    const context = `\nper-second shares ${perSecond.map(pct).join(' ')}; health ${JSON.stringify(ramps)}${await admin.evidence(hostlb)}`;
    assert.equal(summary.code, 0, `wrk ran:\n${summary.output}`);
    // Enough new connections in each second for its share to mean something (wrr interleaves the
    // daemons by weight, so even a hundred show the ramp); a fast machine makes thousands.
    assert.ok(totals.every((n) => n >= 100), `a steady stream of new connections every second: ${totals.join(' ')}`);
    assert.ok(final > 0.25, `${D3} reaches about its full third by the end (${pct(final)})${context}`);
    assert.ok(perSecond[0] < 0.5 * final, `first second ${pct(perSecond[0])} well below the final ${pct(final)}${context}`);
    assert.ok(perSecond[0] < perSecond[2] && perSecond[2] < perSecond[4], `the share rises over the ramp: ${perSecond.map(pct).join(' ')}${context}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] slow start: a quiesced daemon set back to weight 1 ramps its share of new connections over slowStart (6 s)`, (t) => slowStart(t, dataplane));
