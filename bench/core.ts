// bench:core — packets through the dispatch core in one process, on one core,
// with 1,000,000 flows in the table. Prints its figures last:
//   core: established <X> Mpps, new <Y> Mconn/s, table 1000000 flows, heap <Z> MB, gc <N> collections
// A benchmark, not a test: it never fails on time.

import { PerformanceObserver, performance } from 'node:perf_hooks';
import { createBatch, createSiblingBatch, type PacketBatch } from '../src/link/link.js';
import { Dispatcher } from '../src/dispatch/dispatcher.js';
import { hugePageAllocator } from '../src/native/addon.js';
import { REC_WORDS, R_DAEMON_ADDR } from '../src/dispatch/conn-table.js';
import { emitIpv4, IP_PROTO_TCP } from '../src/wire/ipv4.js';
import { emitTcp, TCP_ACK_FLAG, TCP_SYN, TcpPacket } from '../src/wire/tcp.js';
import { pseudoSumV4 } from '../src/wire/checksum.js';
import { parseIp, ipv4ToU32 } from '../src/wire/address.js';
import type { SchedulerName } from '../src/dispatch/schedulers/scheduler.js';

const FLOWS = Number(process.env.BENCH_FLOWS ?? 1_000_000);
const EST_PACKETS = Number(process.env.BENCH_PACKETS ?? 20_000_000);
const BATCH = 256;
const PKT = 64; // slot per packet: 40 bytes of headers + 24 bytes of payload
const SCHEDULER = (process.env.BENCH_SCHEDULER ?? 'wlc') as SchedulerName;

const CLUSTER = ipv4ToU32(parseIp('198.18.100.1')!.bytes);
const CLIENT_BASE = ipv4ToU32(parseIp('198.19.0.0')!.bytes);
const DAEMONS = ['198.18.2.1', '198.18.2.2', '198.18.2.3', '198.18.2.4'];

function clientOf(flow: number): { addr: number; port: number } {
  return { addr: (CLIENT_BASE + (flow >>> 14)) >>> 0, port: 1024 + (flow & 0x3fff) };
}

const tcpView = new TcpPacket();
function writePacket(buf: Uint8Array, off: number, src: number, dst: number, sport: number, dport: number, flags: number): void {
  const payload = flags === TCP_SYN ? 0 : PKT - 40;
  emitIpv4({ srcAddr: src, dstAddr: dst, protocol: IP_PROTO_TCP, payloadLen: 20 + payload }, buf, off);
  emitTcp({ srcPort: sport, dstPort: dport, flags, seqNumber: 1, ackNumber: 1 }, buf, off + 20);
  tcpView.wrap(buf, off + 20, 20 + payload);
  tcpView.fillChecksum(pseudoSumV4(src, dst, IP_PROTO_TCP, 20 + payload));
}

/**
 * Runs `count` packets of `pristine` through the dispatcher in batches,
 * restoring the bytes of each batch first (the dispatcher rewrites in place).
 * Batch views are made up front so the loop itself allocates nothing.
 */
function pump(d: Dispatcher, pristine: Uint8Array, count: number, now: number, input: PacketBatch, output: PacketBatch): number {
  const views: Uint8Array[] = [];
  for (let start = 0; start < pristine.length; start += BATCH * PKT) views.push(pristine.subarray(start, Math.min(pristine.length, start + BATCH * PKT)));
  let forwarded = 0;
  let v = 0;
  for (let done = 0; done < count; done += input.count) {
    const view = views[v];
    v = v + 1 === views.length ? 0 : v + 1;
    input.buffer.set(view, 0);
    input.count = Math.min(view.length / PKT, count - done);
    forwarded += d.process(input, output, now);
  }
  return forwarded;
}

/**
 * The harness's own cost inside pump(): restoring each batch's bytes (the
 * dispatcher rewrote them). Timed alone over the same batches, it is
 * subtracted so the figures are the dispatch core's; both are printed.
 */
function restoreSeconds(pristine: Uint8Array, count: number, input: PacketBatch): number {
  const views: Uint8Array[] = [];
  for (let start = 0; start < pristine.length; start += BATCH * PKT) views.push(pristine.subarray(start, Math.min(pristine.length, start + BATCH * PKT)));
  let v = 0;
  const t = performance.now();
  for (let done = 0; done < count; done += BATCH) {
    input.buffer.set(views[v], 0);
    v = v + 1 === views.length ? 0 : v + 1;
  }
  return (performance.now() - t) / 1000;
}

function main(): void {
  // Huge pages for the table, as `hostlb start` uses them (BENCH_HUGE_PAGES=0 for plain 4 KiB pages).
  const allocate = process.env.BENCH_HUGE_PAGES === '0' ? undefined : hugePageAllocator;
  const d = new Dispatcher({ capacity: Math.ceil(FLOWS * 1.05), seed: 7, allocate });
  d.configure({
    clusters: [{ address: '198.18.100.1', ports: [{ port: 80, protocol: 'tcp', scheduler: SCHEDULER, daemons: DAEMONS.map((a) => ({ address: `${a}:8080` })) }] }],
  });
  const daemonAddr = DAEMONS.map((a) => ipv4ToU32(parseIp(a)!.bytes));

  // One slot per packet, BATCH slots: the input batch points into consecutive PKT-byte slots.
  const input = createBatch(BATCH, PKT);
  const output = createSiblingBatch(input);
  input.lengths.fill(PKT); // every slot holds one packet; bytes past its total length are ignored

  // New connections: one SYN per flow, all distinct.
  const syns = new Uint8Array(FLOWS * PKT);
  for (let f = 0; f < FLOWS; f++) {
    const c = clientOf(f);
    writePacket(syns, f * PKT, c.addr, CLUSTER, c.port, 80, TCP_SYN);
  }
  let now = 1_000;
  const t0 = performance.now();
  const created = pump(d, syns, FLOWS, now, input, output);
  const newSeconds = (performance.now() - t0) / 1000;
  if (created !== FLOWS || d.table.size !== FLOWS) throw new Error(`expected ${FLOWS} records, got ${d.table.size} (forwarded ${created})`);

  // Find each flow's daemon (from the record) to build replies and ACKs that complete the handshake.
  const daemonOfFlow = new Uint32Array(FLOWS);
  const key = d.key;
  for (let f = 0; f < FLOWS; f++) {
    const c = clientOf(f);
    key.fill(0);
    key[0] = c.addr; key[4] = CLUSTER; key[8] = ((c.port << 16) | 80) >>> 0; key[9] = (IP_PROTO_TCP << 8) | 4;
    const id = d.table.findForward(key, d.table.hashKey(key));
    daemonOfFlow[f] = d.table.u32[id * REC_WORDS + R_DAEMON_ADDR];
  }
  const handshake = new Uint8Array(FLOWS * 2 * PKT);
  for (let f = 0; f < FLOWS; f++) {
    const c = clientOf(f);
    writePacket(handshake, (2 * f) * PKT, daemonOfFlow[f], c.addr, 8080, c.port, TCP_SYN | TCP_ACK_FLAG);
    writePacket(handshake, (2 * f + 1) * PKT, c.addr, CLUSTER, c.port, 80, TCP_ACK_FLAG);
  }
  now += 1;
  pump(d, handshake, FLOWS * 2, now, input, output);

  // Established traffic: data both ways on flows drawn at random from the whole table.
  const POOL = 1 << 20;
  const pool = new Uint8Array(POOL * PKT);
  let seed = 12345;
  for (let i = 0; i < POOL; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const f = seed % FLOWS;
    const c = clientOf(f);
    if (i & 1) writePacket(pool, i * PKT, daemonOfFlow[f], c.addr, 8080, c.port, TCP_ACK_FLAG);
    else writePacket(pool, i * PKT, c.addr, CLUSTER, c.port, 80, TCP_ACK_FLAG);
  }
  void daemonAddr;
  pump(d, pool, POOL, now, input, output); // warm-up

  let gcCount = 0;
  const obs = new PerformanceObserver((list) => { gcCount += list.getEntries().length; });
  (globalThis as { gc?: () => void }).gc?.();
  obs.observe({ entryTypes: ['gc'] });
  const t1 = performance.now();
  const forwarded = pump(d, pool, EST_PACKETS, now + 1, input, output);
  const estSeconds = (performance.now() - t1) / 1000;
  const heapMb = process.memoryUsage().heapUsed / 1e6;
  const estCopy = restoreSeconds(pool, EST_PACKETS, input);
  const newCopy = restoreSeconds(syns, FLOWS, input);
  // Observer callbacks run asynchronously: read the count on the next turn.
  setImmediate(() => {
    obs.disconnect();
    const mem = process.memoryUsage();
    console.log(`setup: ${FLOWS} SYNs in ${newSeconds.toFixed(2)} s; ${forwarded}/${EST_PACKETS} established packets forwarded in ${estSeconds.toFixed(2)} s`);
    console.log(`memory: heap ${(mem.heapUsed / 1e6).toFixed(0)} MB, array buffers ${(mem.arrayBuffers / 1e6).toFixed(0)} MB, rss ${(mem.rss / 1e6).toFixed(0)} MB; drops ${JSON.stringify(Array.from(d.balancer.stats.drops))}`);
    console.log(`with the harness's restore copies: established ${(EST_PACKETS / estSeconds / 1e6).toFixed(2)} Mpps, new ${(FLOWS / newSeconds / 1e6).toFixed(2)} Mconn/s (copies took ${estCopy.toFixed(2)} s and ${newCopy.toFixed(2)} s)`);
    console.log(`core: established ${(EST_PACKETS / (estSeconds - estCopy) / 1e6).toFixed(2)} Mpps, new ${(FLOWS / (newSeconds - newCopy) / 1e6).toFixed(2)} Mconn/s, table ${d.table.size} flows, heap ${heapMb.toFixed(0)} MB, gc ${gcCount} collections`);
  });
}

main();
