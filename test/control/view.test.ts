// The live views' picture: rates, shares and the chart series from counter
// samples (RateSampler, pure); CPU and memory parsed from /proc; and the
// snapshot of a real instance over a MemoryLink — daemons and their states,
// flows, errors by reason, the share of new connections over the window —
// as GET /v1/view and its event stream serve it.

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { LiveView } from '../../src/control/view/live-view.js';
import { parseCpuSeconds, parseRssBytes, processUse } from '../../src/control/view/process-stats.js';
import { RateSampler, type CounterSample } from '../../src/control/view/sampler.js';
import { startMemoryHostlb, type MemoryHostlb } from '../support/memory-hostlb.js';

function sample(at: number, newFlows: Record<string, number>, events: Record<string, number> = {}, cpu: Record<number, number> = {}): CounterSample {
  return {
    at,
    newFlows: new Map(Object.entries(newFlows)),
    events: new Map(Object.entries(events)),
    cpuSeconds: new Map(Object.entries(cpu).map(([pid, s]) => [Number(pid), s])),
  };
}

describe('RateSampler', () => {
  it('per-second rates come from the last two samples; nothing before two', () => {
    const s = new RateSampler();
    s.add(sample(0, { a: 10 }, { 'drop.no_record': 4 }, { 7: 1.0 }));
    assert.equal(s.newPerSecond('a'), 0);
    assert.deepEqual(s.eventsPerSecond(), {});
    assert.equal(s.cpuPercent(7), null);
    s.add(sample(2000, { a: 30 }, { 'drop.no_record': 10, 'answered.resets': 0 }, { 7: 1.5 }));
    assert.equal(s.newPerSecond('a'), 10);
    assert.deepEqual(s.eventsPerSecond(), { 'drop.no_record': 3 });
    assert.equal(s.cpuPercent(7), 25);
    assert.equal(s.cpuPercent(8), null, 'a process without two samples');
  });

  it('shares are each daemon\'s part of the new flows over the window; a counter that went backwards counts 0', () => {
    const s = new RateSampler();
    s.add(sample(0, { a: 100, b: 100, c: 5 }));
    s.add(sample(1000, { a: 130, b: 110, c: 0 }));
    s.add(sample(2000, { a: 160, b: 140, c: 1 }));
    assert.deepEqual([...s.shares(['a', 'b', 'c']).entries()], [['a', 0.6], ['b', 0.4], ['c', 0]]);
    assert.deepEqual(s.series('a'), [30, 30]);
    assert.deepEqual(s.series('c'), [0, 1]);
    assert.deepEqual([...s.shares(['x']).entries()], [['x', 0]], 'no flows: share 0, not NaN');
  });

  it('keeps one minute: the oldest samples go', () => {
    const s = new RateSampler(61);
    for (let i = 0; i <= 100; i++) s.add(sample(i * 1000, { a: i }));
    assert.equal(s.spanSeconds, 60);
    assert.equal(s.series('a').length, 60);
  });
});

describe('process use from /proc', () => {
  it('reads utime + stime after the command name, whatever the name holds', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    const stat = '1234 (a) b (c d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 1000 200';
    assert.equal(parseCpuSeconds(stat), 3);
    assert.equal(parseCpuSeconds('garbage'), null);
    assert.equal(parseRssBytes('Name:\tnode\nVmRSS:\t   2048 kB\n'), 2 * 1024 * 1024);
    assert.equal(parseRssBytes('Name:\tkthread\n'), null);
  });

  it('reads this process, and null for one that is gone', () => {
    const use = processUse(process.pid);
    assert.ok(use !== null && use.cpuSeconds > 0 && use.rssBytes > 1024 * 1024, JSON.stringify(use));
    assert.equal(processUse(2 ** 22 + 1), null);
  });
});

describe('the live view of a running instance', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ traffic: true }); });
  after(async () => { await s.close(); });

  it('every daemon with its state, weights, flows and share; errors by reason; the plane and its table', async () => {
    const view = new LiveView(s.instance, 'test');
    view.sample();
    // Four more connections to port 80 (rr: two to each daemon).
    for (const clientPort of [41001, 41002, 41003, 41004]) await s.traffic.tcpFlow({ client: '198.18.0.20', clientPort, cluster: '198.18.100.1', port: 80 });
    view.sample();
    const v = view.snapshot();
    assert.equal(v.dataplane.kind, 'tun');
    assert.equal(v.device, 'hlbtest0');
    const port80 = v.ports.find((p) => p.port === '198.18.100.1:80/tcp')!;
    assert.deepEqual(port80.daemons.map((d) => [d.daemon, d.state, d.configuredWeight, d.share, d.series.at(-1)]), [
      ['198.18.2.1:8080', 'up', 1, 0.5, 2],
      ['198.18.2.2:8080', 'up', 1, 0.5, 2],
    ]);
    const clusters = (await s.call('GET', '/v1/clusters')).body as { clusters: Array<{ ports: Array<{ port: number; daemons: Array<{ address: string; activeFlows: number; newFlows: number }> }> }> };
    const listed = clusters.clusters[0].ports.find((p) => p.port === 80)!.daemons;
    assert.deepEqual(port80.daemons.map((d) => [d.activeFlows, d.newFlows]), listed.map((d) => [d.activeFlows, d.newFlows]), 'the same counts as /v1/clusters');
    assert.equal(v.totals.activeFlows, ((await s.call('GET', '/v1/status')).body as { activeFlows: number }).activeFlows);
    assert.ok(v.errors.some((e) => e.reason === 'drop.no_record' && e.total === 1), `the stray ACK of the standard traffic: ${JSON.stringify(v.errors)}`);
    assert.equal(v.dataplane.table.capacity, 1024);
    assert.deepEqual(v.processes, [], 'no supervised port');
  });

  it('a daemon set to weight 0 shows as quiesced, and why', async () => {
    const r = await s.call('POST', `/v1/clusters/198.18.100.1/ports/80/tcp/daemons/${encodeURIComponent('198.18.2.2:8080')}/quiesce`);
    assert.equal(r.status, 200, r.text);
    const v = new LiveView(s.instance, 'test').snapshot();
    const d = v.ports.find((p) => p.port === '198.18.100.1:80/tcp')!.daemons.find((x) => x.daemon === '198.18.2.2:8080')!;
    assert.deepEqual([d.state, d.why], ['quiesced', 'weight 0: no new connections']);
  });

  it('drain then undrain (the views\' d and u): weight 0, then the weight from before the drain; a daemon that does not exist is 404', async () => {
    const daemon = `/v1/clusters/198.18.100.1/ports/80/tcp/daemons/${encodeURIComponent('198.18.2.1:8080')}`;
    assert.equal((await s.call('PUT', daemon, { weight: 3 })).status, 200);
    const drained = await s.call('POST', `${daemon}/drain`);
    assert.equal(drained.status, 200, drained.text);
    const row = (): { configuredWeight: number; state: string } => new LiveView(s.instance, 'test').snapshot().ports[0].daemons.find((d) => d.daemon === '198.18.2.1:8080')!;
    assert.deepEqual([row().configuredWeight, row().state], [0, 'quiesced']);
    const back = await s.call('POST', `${daemon}/undrain`);
    assert.equal(back.status, 200, back.text);
    assert.equal((back.body as { weight: number }).weight, 3);
    assert.deepEqual([row().configuredWeight, row().state], [3, 'up']);
    assert.equal((await s.call('POST', `${daemon}/undrain`, { weight: 0 })).status, 400);
    const missing = await s.call('POST', `/v1/clusters/198.18.100.1/ports/80/tcp/daemons/${encodeURIComponent('198.18.2.9:8080')}/drain`);
    assert.equal(missing.status, 404, missing.text);
  });

  it('GET /v1/view answers the snapshot; with Accept: text/event-stream a view event comes at once', async () => {
    const r = await s.call('GET', '/v1/view');
    assert.equal(r.status, 200, r.text);
    assert.ok(Array.isArray((r.body as { ports: unknown[] }).ports));
    const first = await new Promise<string>((resolve, reject) => {
      const c = connect(s.socket);
      let text = '';
      c.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        const m = /event: view\ndata: (.*)\n\n/.exec(text);
        if (m) {
          c.destroy();
          resolve(m[1]);
        }
      }).on('error', reject);
      c.write('GET /v1/view HTTP/1.1\r\nHost: hostlb\r\nAccept: text/event-stream\r\n\r\n');
    });
    const streamed = JSON.parse(first) as { device: string; ports: Array<{ port: string }> };
    assert.equal(streamed.device, 'hlbtest0');
    assert.ok(streamed.ports.some((p) => p.port === '198.18.100.1:80/tcp'));
  });
});
