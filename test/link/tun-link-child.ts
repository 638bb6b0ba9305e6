// The TUN half of tun-link.test.ts, run inside a fresh network namespace with
// `ip netns exec <ns> node tun-link-child.js <scenario>`. It drives a TunLink
// against the namespace's kernel and prints what it saw as one JSON line; the
// test asserts on that. Not a test file itself (no .test suffix).

import { execFileSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { createBatch, createSiblingBatch, type CycleResult, type PacketBatch } from '../../src/link/link.js';
import { LinkError, TunLink } from '../../src/link/tun-link.js';

// Bounds every wait for the kernel (a wake-up, a packet, a datagram); each
// ends as soon as it is met, so this is only reached when something is broken.
// Generous: on a busy machine the kernel's packet can take seconds to show.
const DEADLINE_MS = 15_000;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function onesSum(bytes: Uint8Array, sum = 0): number {
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (bytes.length & 1) sum += bytes[bytes.length - 1] << 8;
  return sum;
}

function finish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

function udpHeader(sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const udp = new Uint8Array(8 + payload.length);
  const view = new DataView(udp.buffer);
  view.setUint16(0, sport);
  view.setUint16(2, dport);
  view.setUint16(4, udp.length);
  udp.set(payload, 8);
  return udp;
}

/** An IPv4 UDP datagram with correct header and UDP checksums (RFC 791, RFC 768). */
function ipv4Udp(src: number[], dst: number[], sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const udp = udpHeader(sport, dport, payload);
  const pseudo = onesSum(Uint8Array.from([...src, ...dst, 0, 17, udp.length >> 8, udp.length & 0xff]));
  const udpSum = finish(onesSum(udp, pseudo)) || 0xffff;
  udp[6] = udpSum >> 8;
  udp[7] = udpSum & 0xff;
  const packet = new Uint8Array(20 + udp.length);
  const view = new DataView(packet.buffer);
  view.setUint8(0, 0x45);
  view.setUint16(2, packet.length);
  view.setUint8(8, 64);
  view.setUint8(9, 17);
  packet.set(src, 12);
  packet.set(dst, 16);
  view.setUint16(10, finish(onesSum(packet.subarray(0, 20))));
  packet.set(udp, 20);
  return packet;
}

/** An IPv6 UDP datagram; the UDP checksum is mandatory over IPv6 (RFC 8200 §8.1). */
function ipv6Udp(src: Uint8Array, dst: Uint8Array, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const udp = udpHeader(sport, dport, payload);
  const lengthWords = Uint8Array.from([0, 0, udp.length >> 8, udp.length & 0xff, 0, 0, 0, 17]);
  const udpSum = finish(onesSum(udp, onesSum(lengthWords, onesSum(dst, onesSum(src))))) || 0xffff;
  udp[6] = udpSum >> 8;
  udp[7] = udpSum & 0xff;
  const packet = new Uint8Array(40 + udp.length);
  const view = new DataView(packet.buffer);
  view.setUint8(0, 0x60);
  view.setUint16(4, udp.length);
  view.setUint8(6, 17);
  view.setUint8(7, 64);
  packet.set(src, 8);
  packet.set(dst, 24);
  packet.set(udp, 40);
  return packet;
}

function v6(text: string): Uint8Array {
  // Enough for the fixed test addresses ("2001:db8::1"): one "::" gap.
  const [head, tail] = text.split('::');
  const words = (part: string) => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  const h = words(head);
  const t = words(tail ?? '');
  const all = [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** Waits until onReadable fires (or the deadline passes); true when it fired. */
function readable(link: TunLink): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      link.onReadable(null);
      resolve(false);
    }, DEADLINE_MS);
    link.onReadable(() => {
      clearTimeout(timer);
      link.onReadable(null);
      resolve(true);
    });
  });
}

/**
 * Reads batches until a packet matching `match` arrives. The kernel also sends
 * its own packets into the device (IPv6 router solicitations, MLD reports), so
 * others are skipped. Bounded by the deadline.
 */
async function readMatching(link: TunLink, batch: PacketBatch, match: (p: Uint8Array) => boolean) {
  const deadline = Date.now() + DEADLINE_MS;
  while (Date.now() < deadline) {
    const count = link.read(batch);
    for (let i = 0; i < count; i++) {
      const packet = batch.buffer.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i]);
      if (match(packet)) return { slot: i, offset: batch.offsets[i], length: batch.lengths[i], hex: hex(packet) };
    }
    await readable(link);
  }
  return null;
}

function receiveOne(socket: Socket): Promise<{ data: string; from: string; port: number } | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), DEADLINE_MS);
    socket.once('message', (msg, rinfo) => {
      clearTimeout(timer);
      resolve({ data: msg.toString(), from: rinfo.address, port: rinfo.port });
    });
  });
}

function bind(type: 'udp4' | 'udp6', address: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(type);
    socket.once('error', reject);
    socket.bind(0, address, () => resolve(socket));
  });
}

function send(socket: Socket, payload: string, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => socket.send(payload, port, address, (error) => (error ? reject(error) : resolve())));
}

function errorInfo(run: () => unknown): { code?: string; name?: string; message?: string } | null {
  try {
    run();
    return null;
  } catch (error) {
    const e = error as LinkError;
    return { code: e.code, name: e.name, message: e.message };
  }
}

/** Writes `packets` in one batch, each at the given offset, and returns how many were accepted. */
function fill(batch: PacketBatch, packets: Array<[Uint8Array, number]>): PacketBatch {
  packets.forEach(([packet, offset], i) => {
    batch.buffer.set(packet, offset);
    batch.offsets[i] = offset;
    batch.lengths[i] = packet.length;
  });
  batch.count = packets.length;
  return batch;
}

function writeAt(link: TunLink, batch: PacketBatch, packets: Array<[Uint8Array, number]>): number {
  return link.write(fill(batch, packets));
}

/** Pushes each datagram `socket` receives onto `received`; resolves at `count` of them (or the deadline). */
function collect(socket: Socket, count: number, received: string[]): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, DEADLINE_MS);
    socket.on('message', (msg) => {
      received.push(msg.toString());
      if (received.length === count) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** The UDP payloads to port 9999 among a batch's first `count` packets, in slot order. */
function payloadsTo9999(batch: PacketBatch, count: number): string[] {
  const found: string[] = [];
  for (let i = 0; i < count; i++) {
    const p = batch.buffer.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i]);
    if (p[0] >> 4 === 4 && p[9] === 17 && p[22] === 0x27 && p[23] === 0x0f) found.push(Buffer.from(p.subarray(28)).toString());
  }
  return found;
}

async function io(ioUring = false): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const link = TunLink.open('hlbt0', { mtu: 1400, ioUring });
  out.name = link.name;
  out.ioUring = link.ioUring;
  out.ioUringRefused = link.ioUringRefused;
  out.mtu = link.mtu;
  out.busy = errorInfo(() => TunLink.open('hlbt0'));
  out.conflict = errorInfo(() => TunLink.open('lo'));
  ip('link', 'set', 'dev', 'hlbt0', 'up');
  ip('addr', 'add', '198.18.0.1/24', 'dev', 'hlbt0');
  ip('-6', 'addr', 'add', '2001:db8::1/64', 'dev', 'hlbt0', 'nodad');

  const batch = createBatch(8, 2048);

  // IPv4: kernel -> device -> TunLink.read, then TunLink.write -> kernel -> socket.
  const s4 = await bind('udp4', '198.18.0.1');
  while (link.read(batch) > 0); // the kernel's own chatter since the device came up
  const woke4 = readable(link);
  await send(s4, 'hostlb-v4', 9999, '198.18.0.2');
  out.v4notified = await woke4;
  out.v4read = await readMatching(link, batch, (p) => p[0] >> 4 === 4 && p[9] === 17 && p[22] === 0x27 && p[23] === 0x0f);
  const garbage = new Uint8Array(28).fill(0xff); // version nibble 15: the kernel refuses it (EINVAL)
  const reply4 = ipv4Udp([198, 18, 0, 2], [198, 18, 0, 1], 9999, s4.address().port, Buffer.from('reply-v4'));
  const got4 = receiveOne(s4);
  out.v4accepted = writeAt(link, batch, [[garbage, 0], [reply4, 5000]]); // offsets need not be slot-aligned
  out.v4received = await got4;
  s4.close();

  // IPv6 the same way.
  const s6 = await bind('udp6', '2001:db8::1');
  while (link.read(batch) > 0);
  const woke6 = readable(link);
  await send(s6, 'hostlb-v6', 9999, '2001:db8::2');
  out.v6notified = await woke6;
  out.v6read = await readMatching(link, batch, (p) => p[0] >> 4 === 6 && p[6] === 17 && p[42] === 0x27 && p[43] === 0x0f);
  const reply6 = ipv6Udp(v6('2001:db8::2'), v6('2001:db8::1'), 9999, s6.address().port, Buffer.from('reply-v6'));
  const got6 = receiveOne(s6);
  out.v6accepted = writeAt(link, batch, [[reply6, 100]]);
  out.v6received = await got6;
  s6.close();

  // A packet larger than the slot: cut to the slot, not written past it.
  // Two 64-byte slots in a 192-byte buffer: the last 64 bytes belong to no slot.
  const small: PacketBatch = {
    buffer: new Uint8Array(192).fill(0xee),
    offsets: new Uint32Array(2),
    lengths: new Uint32Array(2),
    flags: new Uint8Array(2),
    gsoSizes: new Uint16Array(2),
    csumAt: new Uint16Array(2),
    vnetHeaders: new Uint8Array(20),
    capacity: 2,
    slotSize: 64,
    count: 0,
  };
  const sBig = await bind('udp4', '198.18.0.1');
  await send(sBig, 'x'.repeat(200), 9998, '198.18.0.2');
  const cut = await readMatching(link, small, (p) => p[0] >> 4 === 4 && p[9] === 17 && p[23] === 0x0e);
  out.truncated = { length: cut?.length, beyondSlotsUntouched: small.buffer.subarray(128).every((b) => b === 0xee) };
  sBig.close();

  link.close();
  out.readAfterClose = link.read(batch);
  batch.count = 1;
  out.writeAfterClose = link.write(batch);
  out.deviceAfterClose = deviceExists('hlbt0');
  return out;
}

/**
 * A burst through the ring: 40 datagrams queued in the device before one read
 * (more than a batch of 8 holds, and more than the first read-ahead tries),
 * then 20 replies written as batches of 8, 8 and 4. Reports the payloads in
 * the order read and the replies the socket got.
 */
async function burst(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const link = TunLink.open('hlbt3', { ioUring: true });
  out.ioUring = link.ioUring;
  out.ioUringRefused = link.ioUringRefused;
  ip('link', 'set', 'dev', 'hlbt3', 'up');
  ip('addr', 'add', '198.18.0.1/24', 'dev', 'hlbt3');
  const batch = createBatch(8, 2048);
  const socket = await bind('udp4', '198.18.0.1');
  while (link.read(batch) > 0); // the kernel's own chatter since the device came up
  const woke = readable(link);
  for (let i = 0; i < 40; i++) await send(socket, `burst-${i}`, 9999, '198.18.0.2');
  await woke;
  const payloads: string[] = [];
  const counts: number[] = [];
  const deadline = Date.now() + DEADLINE_MS;
  while (payloads.length < 40 && Date.now() < deadline) {
    const count = link.read(batch);
    if (count === 0) {
      await readable(link);
      continue;
    }
    counts.push(count);
    payloads.push(...payloadsTo9999(batch, count));
  }
  out.payloads = payloads;
  out.readCounts = counts;

  const received: string[] = [];
  const allReceived = collect(socket, 20, received);
  const accepted: number[] = [];
  for (const [from, to] of [[0, 8], [8, 16], [16, 20]]) {
    const packets: Array<[Uint8Array, number]> = [];
    for (let i = from; i < to; i++) {
      packets.push([ipv4Udp([198, 18, 0, 2], [198, 18, 0, 1], 9999, socket.address().port, Buffer.from(`reply-${i}`)), (i - from) * 2048]);
    }
    accepted.push(writeAt(link, batch, packets));
  }
  await allReceived;
  out.accepted = accepted;
  out.received = received;
  socket.close();
  link.close();
  return out;
}

/**
 * Link.cycle, with io_uring or without: six datagrams wait in the device
 * while three replies (one of them garbage the kernel refuses) go out of one
 * batch and the six come into another, in one call. Then a cycle with
 * nothing either way, and one whose two batches share a buffer.
 */
async function cycle(ioUring: boolean): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const link = TunLink.open('hlbt4', { ioUring });
  out.ioUring = link.ioUring;
  out.ioUringRefused = link.ioUringRefused;
  ip('link', 'set', 'dev', 'hlbt4', 'up');
  ip('addr', 'add', '198.18.0.1/24', 'dev', 'hlbt4');
  const outgoing = createBatch(8, 2048);
  const incoming = createBatch(8, 2048);
  const socket = await bind('udp4', '198.18.0.1');
  while (link.read(incoming) > 0); // the kernel's own chatter since the device came up
  const woke = readable(link);
  for (let i = 0; i < 6; i++) await send(socket, `cycle-${i}`, 9999, '198.18.0.2');
  await woke;

  const received: string[] = [];
  const allReceived = collect(socket, 2, received);
  const reply = (i: number): Uint8Array => ipv4Udp([198, 18, 0, 2], [198, 18, 0, 1], 9999, socket.address().port, Buffer.from(`reply-${i}`));
  fill(outgoing, [[reply(0), 0], [Uint8Array.of(0x00, 0x01, 0x02), 2048], [reply(1), 4096]]);
  const result: CycleResult = { written: -1, read: -1 };
  // The datagrams may reach the device one by one: cycle until all six are in.
  const payloads: string[] = [];
  link.cycle(outgoing, incoming, result);
  out.first = { written: result.written, read: result.read, count: incoming.count };
  payloads.push(...payloadsTo9999(incoming, result.read));
  const deadline = Date.now() + DEADLINE_MS;
  while (payloads.length < 6 && Date.now() < deadline) {
    outgoing.count = 0;
    link.cycle(outgoing, incoming, result);
    if (result.read === 0) await readable(link);
    payloads.push(...payloadsTo9999(incoming, result.read));
  }
  out.payloads = payloads;
  await allReceived;
  out.received = received;

  outgoing.count = 0;
  link.cycle(outgoing, incoming, result);
  out.idle = { written: result.written, read: result.read, count: incoming.count };
  try {
    link.cycle(createSiblingBatch(incoming), incoming, result);
    out.shared = 'no error';
  } catch (error) {
    out.shared = `${(error as Error).name}: ${(error as Error).message}`;
  }
  socket.close();
  link.close();
  link.cycle(outgoing, incoming, result);
  out.afterClose = { written: result.written, read: result.read };
  return out;
}

function deviceExists(name: string): boolean {
  try {
    ip('link', 'show', 'dev', name);
    return true;
  } catch {
    return false;
  }
}

function persist(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const first = TunLink.open('hlbt1', { persist: true });
  first.close();
  out.afterPersistentClose = deviceExists('hlbt1');
  const again = TunLink.open('hlbt1');
  out.reattached = again.name;
  again.setPersist(false);
  again.close();
  out.afterNonPersistentClose = deviceExists('hlbt1');
  return out;
}

function noPrivilege(): Record<string, unknown> {
  return { open: errorInfo(() => TunLink.open('hlbt2')), exists: deviceExists('hlbt2') };
}

const scenarios: Record<string, () => Promise<Record<string, unknown>> | Record<string, unknown>> = {
  io: () => io(false),
  'io-ring': () => io(true),
  burst,
  cycle: () => cycle(false),
  'cycle-ring': () => cycle(true),
  persist,
  'no-privilege': noPrivilege,
};

const scenario = scenarios[process.argv[2] ?? ''];
if (scenario === undefined) {
  console.error(`usage: tun-link-child.js ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
try {
  process.stdout.write(`${JSON.stringify(await scenario())}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ failed: String((error as Error).stack ?? error), code: (error as LinkError).code })}\n`);
  process.exitCode = 1;
}
