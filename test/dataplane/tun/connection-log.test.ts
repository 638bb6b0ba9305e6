// Sampled connection logs (control/connection-log.ts): a record leaving the
// table produces one line with client, cluster, daemon, duration, bytes and
// how it ended, for the sampled fraction only.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Dispatcher } from '../../../src/dispatch/dispatcher.js';
import { installConnectionLog } from '../../../src/dataplane/tun/connection-log.js';
import { LogBudget } from '../../../src/log-budget.js';
import { buildTcp } from '../../support/packet-builder.js';

function capture(): { log: ReturnType<typeof pino>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString())); done(); } });
  return { log: pino({ level: 'info' }, sink), lines };
}

function run(d: Dispatcher, p: Uint8Array, now: number): void {
  d.processPacket(p, 0, p.length, 0, now);
}

function closeOne(d: Dispatcher, port: number, t: number): void {
  run(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), t);
  run(d, buildTcp({ src: '198.18.2.1', dst: '198.18.0.1', srcPort: 8080, dstPort: port, flags: 'SA', seq: 10, ack: 2 }), t + 1);
  run(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'A', seq: 2, ack: 11, payload: 'hello' }), t + 2);
  run(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'FA', seq: 7, ack: 11 }), t + 3);
  run(d, buildTcp({ src: '198.18.2.1', dst: '198.18.0.1', srcPort: 8080, dstPort: port, flags: 'FA', seq: 11, ack: 8 }), t + 4);
  run(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'A', seq: 8, ack: 12 }), t + 5);
}

describe('connection log', () => {
  it('logs an ended connection with its endpoints, duration, bytes and how it ended', async () => {
    const d = new Dispatcher({ capacity: 16 });
    d.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }] });
    const { log, lines } = capture();
    installConnectionLog(d, 1, log);
    closeOne(d, 40000, 1000);
    d.collect(1000 + 5 + 121_000, 100); // past TIME_WAIT
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    const line = lines[0];
    assert.equal(line.event, 'connection');
    assert.equal(line.client, '198.18.0.1:40000');
    assert.equal(line.cluster, '198.18.100.1:80');
    assert.equal(line.daemon, '198.18.2.1:8080');
    assert.equal(line.ended, 'closed');
    assert.equal(line.durationMs, 5);
    assert.equal(line.packetsIn, 4);
    assert.equal(line.packetsOut, 2);
    assert.ok((line.bytesIn as number) > 0 && (line.bytesOut as number) > 0);
  });

  it('samples: rate 0 logs nothing, a rate of 0.5 logs the draws below it', async () => {
    const d = new Dispatcher({ capacity: 16 });
    d.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }] });
    const { log, lines } = capture();
    installConnectionLog(d, 0, log);
    assert.equal(d.connectionEnded, null);
    const draws = [0.1, 0.9, 0.4, 0.6];
    installConnectionLog(d, 0.5, log, () => draws.shift()!);
    for (let i = 0; i < 4; i++) closeOne(d, 41000 + i, 1000);
    d.collect(1_000_000, 100);
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 2);
  });

  it('a flood of ended connections logs at most the budget per second, and the next line says how many were left out', async () => {
    const d = new Dispatcher({ capacity: 64 });
    d.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }] });
    const { log, lines } = capture();
    let now = 0;
    installConnectionLog(d, 1, log, () => 0, new LogBudget(3, 1_000, () => now));
    for (let i = 0; i < 10; i++) closeOne(d, 41000 + i, 1000);
    d.collect(1000 + 5 + 121_000, 100);
    now = 500; // the same second: all ten ended, three logged
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 3);
    assert.ok(lines.every((l) => l.suppressed === undefined));
    now = 1_500; // the next second: one more ends, logged with the seven left out
    closeOne(d, 42000, 200_000);
    d.collect(200_000 + 5 + 121_000, 100);
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 4);
    assert.equal(lines[3].suppressed, 7);
  });
});
