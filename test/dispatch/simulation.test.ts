// The dispatcher in a simulated network: 1200 clients (IPv4 and IPv6 clusters,
// TCP and UDP) over three daemons per port, end to end through real packets.
// Checks what a user would: clients see one address, daemons see real clients,
// flows stick, counters add up, records go when they should, and a lossy,
// reordering network leaves the table consistent.

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import type { DispatchSpec } from '../../src/dispatch/config-tree.js';
import { REC_WORDS, R_STATE } from '../../src/dispatch/conn-table.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { CONN_STATE_NAMES, DEFAULT_TIMEOUTS, STATE_MASK } from '../../src/dispatch/tcp-state.js';
import { Sim, TcpClient, checkTableConsistency, type CloseMode } from '../support/sim.js';

const V4_CLUSTER = '198.18.100.1';
const V6_CLUSTER = '2001:db8::100';

const SPEC: DispatchSpec = {
  clusters: [
    {
      address: V4_CLUSTER,
      ports: [
        {
          port: 80, protocol: 'tcp', scheduler: 'wlc',
          // 40080: a daemon port above 32767 (its reverse key has the top bit set).
          daemons: [{ address: '198.18.2.1:8080' }, { address: '198.18.2.2:8080', weight: 2 }, { address: '198.18.2.3:40080' }],
        },
        {
          port: 53, protocol: 'udp', scheduler: 'maglev',
          daemons: [{ address: '198.18.3.1:5353' }, { address: '198.18.3.2:5353' }, { address: '198.18.3.3:53' }],
        },
      ],
    },
    {
      address: V6_CLUSTER,
      ports: [
        {
          port: 443, protocol: 'any', scheduler: 'rr',
          daemons: [{ address: '[2001:db8:2::1]:8443' }, { address: '[2001:db8:2::2]:8443' }, { address: '[2001:db8:2::3]:443' }],
        },
      ],
    },
  ],
};

const CLOSE_MODES: readonly CloseMode[] = ['client-fin', 'daemon-fin', 'client-rst', 'daemon-rst'];

/** Client i: kind i % 4 (v4 TCP, v6 TCP, v4 UDP, v6 UDP); addresses shared by several clients, ports unique. */
function addClients(sim: Sim, count: number): void {
  for (let i = 0; i < count; i++) {
    const kind = i % 4;
    const v6 = kind === 1 || kind === 3;
    const host = i % 300;
    const address = v6 ? `2001:db8:1:${(host >> 8) + 1}::${(host & 0xff) + 1}` : `198.18.${16 + (host >> 8)}.${(host & 0xff) + 1}`;
    // 41 is coprime to 64000: ports are distinct, and they span 1024..65023 (both halves of the 16-bit range).
    const port = 1024 + ((i * 41) % 64000);
    const cluster = v6 ? `[${V6_CLUSTER}]:443` : kind === 0 ? `${V4_CLUSTER}:80` : `${V4_CLUSTER}:53`;
    if (kind < 2) {
      sim.tcpClient({
        address, port, cluster,
        requests: 1 + (i % 3),
        close: CLOSE_MODES[(i >> 2) % CLOSE_MODES.length],
        requestBytes: 40 + (i % 200),
        responseBytes: 100 + ((i * 13) % 1000),
      });
    } else {
      sim.udpClient({ address, port, cluster, datagrams: 1 + (i % 3), bytes: 20 + (i % 300) });
    }
  }
}

function stateCounts(d: Dispatcher): Record<string, number> {
  const counts: Record<string, number> = {};
  d.table.forEach((id) => {
    const name = CONN_STATE_NAMES[d.table.u32[id * REC_WORDS + R_STATE] & STATE_MASK];
    counts[name] = (counts[name] ?? 0) + 1;
  });
  return counts;
}

function nonZeroDrops(d: Dispatcher): Record<string, number> {
  const out: Record<string, number> = {};
  d.balancer.stats.drops.forEach((n, i) => { if (n !== 0) out[DROP_REASON_NAMES[i]] = n; });
  return out;
}

describe('simulation: 1200 clients, clean network', () => {
  const CLIENTS = 1200;
  const d = new Dispatcher({ capacity: 4096, seed: 7 });
  d.configure(SPEC);
  const sim = new Sim(d, { seed: 11, batchSize: 64, collectBudget: 32 });
  addClients(sim, CLIENTS);
  const tcpClients = sim.clients.filter((c): c is TcpClient => c instanceof TcpClient);
  const udpClients = sim.clients.filter((c) => c.protocol === 'udp');
  let runEnd = 0;

  before(() => {
    // Clients arrive in waves of 100, one wave per 5 ms, so flows overlap in every state.
    for (let wave = 0; wave * 100 < CLIENTS; wave++) {
      for (const c of sim.clients.slice(wave * 100, wave * 100 + 100)) c.start();
      for (let s = 0; s < 5; s++) sim.step();
    }
    sim.run(10_000);
    runEnd = sim.now;
  });

  it('every client finished its conversation, with no drop, loss, retransmission or surprise', () => {
    assert.equal(sim.clients.length, CLIENTS);
    assert.deepEqual(sim.clients.filter((c) => !c.done || c.failed).map((c) => c.endpoint), []);
    assert.deepEqual(sim.anomalies, []);
    assert.deepEqual(nonZeroDrops(d), {});
    assert.equal(sim.stats.dropped, 0);
    assert.equal(sim.stats.retransmits, 0);
    assert.equal(sim.stats.reordered, 0);
    assert.equal(sim.stats.forwarded, sim.stats.sent);
    assert.equal(sim.stats.delivered, sim.stats.sent);
    assert.equal(sim.collected, 0, 'collect() removed a record of a live flow');
    assert.ok(runEnd < 1000, `the run took ${runEnd} ms of simulated time`);
  });

  it('every client saw packets from its cluster address:port only', () => {
    for (const c of sim.clients) {
      assert.deepEqual([...c.seenFrom], [c.cluster.text], c.endpoint);
      assert.deepEqual([...c.seenAddresses], [c.cluster.address], c.endpoint);
      assert.equal(c.rejected, 0);
    }
  });

  it('every daemon saw each of its clients by real address and port, and nothing else', () => {
    const clientEndpoints = new Set(sim.clients.map((c) => c.endpoint));
    let flows = 0;
    for (const vd of sim.daemons.values()) {
      for (const seen of vd.seenClients) assert.ok(clientEndpoints.has(seen), `${vd.endpoint} saw ${seen}, which is no client`);
      flows += vd.flows.size;
    }
    assert.equal(flows, CLIENTS, 'each flow reached exactly one daemon');
    for (const c of sim.clients) {
      const vd = sim.flowDaemon(`${c.protocol} ${c.endpoint}`);
      assert.ok(vd, `no daemon saw ${c.endpoint}`);
      assert.ok(vd.seenClients.has(c.endpoint));
      assert.deepEqual([...c.servedBy], [vd.name], `${c.endpoint} was answered by ${[...c.servedBy].join(', ')}`);
    }
  });

  it('each connection stayed on one daemon for its whole life, and every daemon got flows', () => {
    assert.deepEqual(sim.flowMoves, []);
    for (const vd of sim.daemons.values()) assert.ok(vd.flows.size > 0, `${vd.endpoint} got no flow`);
    // The v6 `any` port spreads TCP and UDP over the same three daemons.
    const v6 = [...sim.daemons.values()].filter((vd) => vd.address.includes(':'));
    for (const vd of v6) {
      const protocols = new Set([...vd.flows].map((f) => f.split(' ')[0]));
      assert.deepEqual([...protocols].sort(), ['tcp', 'udp'], vd.endpoint);
    }
  });

  it('per-daemon counters match what the harness sent and delivered', () => {
    let packetsIn = 0;
    let packetsOut = 0;
    for (const vd of sim.daemons.values()) {
      assert.equal(vd.ids.size, 1);
      const [id] = vd.ids;
      const c = d.balancer.stats.daemonCounters(id);
      assert.deepEqual(
        { newFlows: c.newFlows, packetsIn: c.packetsIn, bytesIn: c.bytesIn, packetsOut: c.packetsOut, bytesOut: c.bytesOut },
        {
          newFlows: vd.flows.size, packetsIn: vd.received.packets, bytesIn: vd.received.bytes,
          packetsOut: vd.forwarded.packets, bytesOut: vd.forwarded.bytes,
        },
        vd.endpoint,
      );
      assert.deepEqual(vd.forwarded, vd.sent, `${vd.endpoint}: every packet it sent was forwarded`);
      packetsIn += c.packetsIn;
      packetsOut += c.packetsOut;
    }
    const clientPackets = sim.clients.reduce((n, c) => n + c.sent.packets, 0);
    const clientBytes = sim.clients.reduce((n, c) => n + c.sent.bytes, 0);
    const daemonBytes = [...sim.daemons.values()].reduce((n, vd) => n + vd.received.bytes, 0);
    assert.equal(packetsIn, clientPackets);
    assert.equal(daemonBytes, clientBytes);
    assert.equal(d.balancer.stats.forwardedIn, clientPackets);
    assert.equal(d.balancer.stats.forwardedOut, packetsOut);
    assert.equal(sim.clients.reduce((n, c) => n + c.received.packets, 0), packetsOut);
  });

  it('ended TCP flows wait in TIME_WAIT or CLOSE; UDP flows stay active until they idle out', () => {
    const fin = tcpClients.filter((c) => c.close === 'client-fin' || c.close === 'daemon-fin').length;
    const rst = tcpClients.length - fin;
    assert.deepEqual(stateCounts(d), { TIME_WAIT: fin, CLOSE: rst, UDP: udpClients.length });
    checkTableConsistency(d);
    for (const vd of sim.daemons.values()) {
      const [id] = vd.ids;
      const udpFlows = [...vd.flows].filter((f) => f.startsWith('udp ')).length;
      assert.equal(d.balancer.activeFlows(id), udpFlows, `${vd.endpoint} active flows`);
    }
  });

  it('records leave after their state timeout, and the table returns to empty', () => {
    const fin = tcpClients.filter((c) => c.close === 'client-fin' || c.close === 'daemon-fin').length;
    const rst = tcpClients.length - fin;
    // Every record's last packet came at or before runEnd (and at or after 0).
    sim.now = runEnd + DEFAULT_TIMEOUTS.close * 1000;
    assert.equal(sim.collectAll(16), rst);
    assert.deepEqual(stateCounts(d), { TIME_WAIT: fin, UDP: udpClients.length });
    sim.now = runEnd + DEFAULT_TIMEOUTS.timeWait * 1000;
    assert.equal(sim.collectAll(16), fin);
    assert.deepEqual(stateCounts(d), { UDP: udpClients.length });
    sim.now = runEnd + DEFAULT_TIMEOUTS.udp * 1000;
    assert.equal(sim.collectAll(16), udpClients.length);
    assert.equal(d.table.size, 0);
    for (const vd of sim.daemons.values()) assert.equal(d.balancer.activeFlows([...vd.ids][0]), 0, vd.endpoint);
    checkTableConsistency(d);
  });
});

describe('simulation: lossy, reordering network', () => {
  it('never throws, keeps the table consistent, and most conversations still complete', () => {
    // maxBatch 16 below the harness's 64-packet batches: process() works in chunks.
    const d = new Dispatcher({ capacity: 1024, seed: 3, maxBatch: 16 });
    d.configure(SPEC);
    const sim = new Sim(d, { seed: 99, loss: 0.05, reorderMs: 20, retransmitMs: 60, maxRetries: 8, collectBudget: 8 });
    addClients(sim, 400);
    sim.startAll();
    let steps = 0;
    while (sim.nextEventAt() !== Infinity) {
      assert.ok(steps < 50_000, 'the lossy run did not settle');
      sim.step();
      steps++;
      if (steps % 25 === 0) checkTableConsistency(d);
      assert.ok(d.table.size <= d.table.capacity);
    }
    checkTableConsistency(d);
    // The run did exercise loss and retransmission (and with 20 ms of jitter, reordering).
    assert.ok(sim.stats.lost > 20, `lost ${sim.stats.lost}`);
    assert.ok(sim.stats.retransmits > 20, `retransmits ${sim.stats.retransmits}`);
    assert.ok(sim.stats.reordered > 20, `reordered ${sim.stats.reordered}`);
    const done = sim.clients.filter((c) => c.done && !c.failed).length;
    assert.ok(done >= 0.9 * sim.clients.length, `only ${done} of ${sim.clients.length} conversations completed`);
    for (const c of sim.clients) assert.deepEqual([...c.seenFrom].filter((s) => s !== c.cluster.text), [], c.endpoint);
    // Only the drops a lossy network explains: late packets of flows whose record is gone or never made.
    const drops = nonZeroDrops(d);
    for (const name of Object.keys(drops)) assert.ok(['no_record', 'no_record_out'].includes(name), `unexpected drop ${name}: ${JSON.stringify(drops)}`);

    // Whatever state the network left flows in, every record ends and the counts return to zero.
    sim.advance(DEFAULT_TIMEOUTS.established * 1000);
    sim.collectAll(32);
    assert.equal(d.table.size, 0, `left: ${JSON.stringify(stateCounts(d))}`);
    for (const daemon of d.tree.daemons()) assert.equal(d.balancer.activeFlows(daemon.id), 0, daemon.name);
    checkTableConsistency(d);
  });
});
