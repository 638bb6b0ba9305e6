// A running hostlb keeps its host set-up against others: a second start for
// the same device (another stateDir) is refused before it touches the host and
// leaves the first one serving; host objects that vanish underneath it (an
// `nft flush ruleset`, a deleted route and rule) are put back, logged and
// counted (hostlb_repairs_total) while a client keeps making requests.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNginxDaemons, stopDaemons } from '../support/daemons.js';
import { CLUSTER_V4, HostlbProcess, metricsText } from '../support/hostlb-process.js';
import { nftTable, type Dataplane } from '../support/dataplanes.js';
import { skipUnlessRoot } from '../support/netns.js';
import { healthSetup, startHostlb, type HealthTopo } from './health-harness.js';

const WHY_ROOT = 'network namespaces, a TUN device or netfilter rules, nginx daemons and curl';
const DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080'];

function config(dataplane: Dataplane, stateDir?: string): Record<string, unknown> {
  return {
    device: 'hlb0', dataplane, table: { capacity: 1 << 14 }, ...(stateDir ? { stateDir } : {}),
    clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }],
  };
}

/** One request over a new connection; true when a daemon answered 200. */
async function served(topo: HealthTopo): Promise<boolean> {
  const r = await topo.sandbox.run(topo.client, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${CLUSTER_V4}/`], { timeoutMs: 10_000 });
  return r.stdout.trim() === '200';
}

/** Requests one after another until one is answered; the time it took, or null after `limitMs` (the test's own bound, not hostlb's). */
async function untilServed(topo: HealthTopo, limitMs: number): Promise<number | null> {
  const started = Date.now();
  while (Date.now() - started < limitMs) {
    if (await served(topo)) return Date.now() - started;
    await sleep(100);
  }
  return null;
}

async function repairsTotal(hostlb: HostlbProcess): Promise<Record<string, number>> {
  const text = await metricsText(join(hostlb.stateDir, 'admin.sock'));
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^hostlb_repairs_total\{kind="([^"]+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

test('[netfilter] a second hostlb for the same device (another stateDir) is refused naming the first one\'s pid, and the first keeps its set-up and serving', async (t: TestContext) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, ['198.18.2.1', '198.18.2.2']);
  const daemons = await startNginxDaemons(topo.sandbox, topo.server, topo.dir, DAEMONS);
  let first: HostlbProcess | undefined;
  try {
    first = await startHostlb(topo, config('netfilter'));
    const tableBefore = nftTable(topo.server);
    assert.ok(tableBefore !== null, 'the first hostlb set up its nft table');
    let refusal = '';
    await assert.rejects(
      HostlbProcess.start(topo.sandbox, topo.server, config('netfilter', join(topo.dir, 'other-state')), { dir: join(topo.dir, 'second') }),
      (e: Error) => {
        refusal = e.message;
        return true;
      },
    );
    console.log(`  second start: ${refusal.split('\n').find((l) => l.includes('DEVICE_IN_USE') || l.includes('in use')) ?? refusal.slice(0, 300)}`);
    assert.match(refusal, /device hlb0 is in use by/, 'refused with a sentence naming the device');
    assert.match(refusal, new RegExp(`hostlb pid ${first.pid}\\b`), 'the refusal names the running hostlb\'s pid');
    assert.ok(first.running, 'the first hostlb still runs');
    assert.equal(nftTable(topo.server), tableBefore, 'the first one\'s nft table is untouched');
    assert.ok(await served(topo), 'the first hostlb still serves');
  } finally {
    await first?.stop();
    await stopDaemons(daemons);
  }
});

async function vanish(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const topo = healthSetup(t, ['198.18.2.1', '198.18.2.2']);
  const daemons = await startNginxDaemons(topo.sandbox, topo.server, topo.dir, DAEMONS);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await startHostlb(topo, config(dataplane));
    assert.ok(await served(topo), 'served before');
    const before = await repairsTotal(hostlb);
    // A client keeps making requests while the set-up vanishes.
    let stop = false;
    const results: boolean[] = [];
    const loop = (async () => {
      while (!stop) results.push(await served(topo));
    })();
    await sleep(300);
    const brokenAt = Date.now();
    if (dataplane === 'netfilter') {
      // What `systemctl restart nftables` does first; iptables-nft's mangle table goes with it.
      topo.server.exec(['nft', 'flush', 'ruleset']);
    } else {
      topo.server.ip('route', 'del', `${CLUSTER_V4}/32`);
      topo.server.ip('rule', 'del', 'pref', '100', 'from', '198.18.2.1', 'iif', 'lo', 'ipproto', 'tcp', 'sport', '8080', 'lookup', '100');
    }
    const repaired = await Promise.race([hostlb.waitForEvent('host_repaired'), sleep(60_000, undefined, { ref: false }).then(() => null)]);
    const backIn = await untilServed(topo, 30_000);
    stop = true;
    await loop;
    const after = await repairsTotal(hostlb);
    console.log(`  [${dataplane}] repaired ${repaired === null ? 'never' : `${Date.parse(String(repaired.time)) - brokenAt} ms after the break`}: ${JSON.stringify(repaired?.repaired)}; served again ${backIn} ms after the repair event; metrics ${JSON.stringify(before)} → ${JSON.stringify(after)}; the client's ${results.length} requests: ${results.filter((r) => !r).length} failed`);
    assert.ok(repaired !== null, `hostlb logged host_repaired:\n${hostlb.describe().slice(-3000)}`);
    assert.ok(backIn !== null, 'served again after the repair');
    const total = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
    assert.ok(total(after) > total(before), `hostlb_repairs_total grew: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    if (dataplane === 'netfilter') assert.ok(nftTable(topo.server) !== null, 'the nft table is back');
    assert.ok(results.at(-1) === true, 'the client loop\'s last request was served');
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
  // A deliberate stop still undoes all of it, repaired objects included.
  if (dataplane === 'netfilter') assert.equal(nftTable(topo.server), null, 'the nft table is gone after stop');
}

test('[netfilter] nft flush ruleset under a client loop: the set-up is put back, logged and counted, and service comes back', (t) => vanish(t, 'netfilter'));
test('[tun] a deleted cluster route and reply rule under a client loop: put back, logged and counted, and service comes back', (t) => vanish(t, 'tun'));
