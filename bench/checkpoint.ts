// bench:checkpoint — how long a table checkpoint holds the event loop (and so
// the packet path) with 1,000,000 records: the worst event-loop stall while
// idle, during the incremental writer (writeCheckpointFile, the one the TUN
// plane's timer runs) and during the one-shot writer (snapshotTable + write,
// what the timer used to run). Prints its figures last:
//   checkpoint: 1000000 records, <MB> MB; worst event-loop stall idle <A> ms (p99 ..),
//   incremental <B> ms (p99 ..) over <T> ms, one-shot <C> ms (p99 ..) over <U> ms
// A benchmark, not a test: it never fails on time.

import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { snapshotTable } from '../src/dispatch/checkpoint.js';
import { Dispatcher } from '../src/dispatch/dispatcher.js';
import { writeCheckpointFile } from '../src/dataplane/tun/checkpoint-file.js';
import { ConnState, FLAG_ACTIVE, FLAG_REPLIED } from '../src/dispatch/tcp-state.js';
import { writeFileAtomic } from '../src/net/state-files.js';
import { ipv4ToU32, parseIp } from '../src/wire/address.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const CLUSTER = ipv4ToU32(parseIp('198.18.100.1')!.bytes);
const CLIENT_BASE = ipv4ToU32(parseIp('198.19.0.0')!.bytes);

/** A dispatcher whose table holds `n` established flows, inserted the way restoreTable does. */
function fill(n: number): Dispatcher {
  const d = new Dispatcher({ capacity: Math.max(n + 1024, 1 << 20) });
  d.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080', '198.18.2.4:8080'].map((address) => ({ address })) }] }] });
  const port = d.tree.clusters[0].ports[0];
  const key = new Uint32Array(10);
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const daemon = port.daemons[i % port.daemons.length];
    key.fill(0);
    key[0] = (CLIENT_BASE + (i >>> 14)) >>> 0;
    key[4] = CLUSTER;
    key[8] = ((1024 + (i & 0x3fff)) << 16 | 80) >>> 0;
    key[9] = (6 << 8) | 4;
    const id = d.table.insert(key, d.table.hashKey(key), daemon.addrWords, 0, daemon.port, daemon.id, port.id, ConnState.Established | FLAG_REPLIED | FLAG_ACTIVE, now, now + 900_000);
    if (id < 0) throw new Error(`insert ${i} failed: ${id}`);
  }
  return d;
}

/**
 * Event-loop stalls (ms) while `work` runs: gaps between setImmediate pings
 * (a ping a turn), and monitorEventLoopDelay's maximum (1 ms resolution). Worst
 * of both, and the 99th percentile of the pings.
 */
async function worstStall(work: () => Promise<unknown>): Promise<{ worstMs: number; p99Ms: number; totalMs: number }> {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  const gaps: number[] = [];
  let last = performance.now();
  let pinging = true;
  const ping = (): void => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
    if (pinging) setImmediate(ping);
  };
  histogram.enable();
  setImmediate(ping);
  const started = performance.now();
  await work();
  const totalMs = performance.now() - started;
  // One more turn, so the ping measures a stall that ended with the work.
  await new Promise((resolve) => setImmediate(resolve));
  pinging = false;
  histogram.disable();
  gaps.sort((a, b) => a - b);
  const p99 = gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))] ?? 0;
  return { worstMs: Math.max(gaps[gaps.length - 1] ?? 0, histogram.max / 1e6), p99Ms: p99, totalMs };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-bench-ckpt-'));
  try {
    const d = fill(RECORDS);
    const path = join(dir, 'hlb0.table');
    (globalThis as { gc?: () => void }).gc?.();
    const idle = await worstStall(() => sleep(1000));
    let bytes = 0;
    const incremental = await worstStall(async () => {
      await writeCheckpointFile(path, d);
    });
    (globalThis as { gc?: () => void }).gc?.();
    const oneShot = await worstStall(async () => {
      const snapshot = snapshotTable(d);
      bytes = snapshot.byteLength;
      writeFileAtomic(path, snapshot, { sync: false });
    });
    const f = (n: number): string => n.toFixed(1);
    const show = (s: { worstMs: number; p99Ms: number }): string => `${f(s.worstMs)} ms (p99 ${f(s.p99Ms)})`;
    console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${availableParallelism()} CPUs: the idle figure is this machine's own noise`);
    console.log(`checkpoint: ${d.table.size} records, ${f(bytes / 1e6)} MB; worst event-loop stall idle ${show(idle)}, incremental ${show(incremental)} over ${Math.round(incremental.totalMs)} ms, one-shot ${show(oneShot)} over ${Math.round(oneShot.totalMs)} ms`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
