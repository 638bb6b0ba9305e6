// The dispatcher, Katran style: fixture tables of input packet → verdict,
// expected output packet (byte for byte, so checksums are checked against a
// full recomputation) and expected drop counters, for IPv4 and IPv6, TCP and
// UDP, through both processPacket() and process(). Then the TCP state machine,
// timeouts, active-flow counts, the full-table policy and reconfiguration.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Balancer } from '../../src/dispatch/balancer.js';
import { addressWords, type DispatchSpec } from '../../src/dispatch/config-tree.js';
import { REC_WORDS, R_DAEMON_ID, R_STATE } from '../../src/dispatch/conn-table.js';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { createFlowKey } from '../../src/dispatch/flow-hash.js';
import type { SchedulerName } from '../../src/dispatch/schedulers/index.js';
import { CONN_STATE_NAMES, DEFAULT_TIMEOUTS, STATE_MASK, type Timeouts } from '../../src/dispatch/tcp-state.js';
import { VERDICT_DROP, VERDICT_FORWARD } from '../../src/dispatch/verdict.js';
import { ConfigError } from '../../src/errors.js';
import { PACKET_FLAG_PARTIAL_CSUM, createBatch, createSiblingBatch } from '../../src/link/link.js';
import { parseIp } from '../../src/wire/address.js';
import { IPV4_CHECKSUM, IPV4_PROTOCOL, IPV4_TOTAL_LEN, Ipv4Packet } from '../../src/wire/ipv4.js';
import { IPV6_PAYLOAD_LEN } from '../../src/wire/ipv6.js';
import { TCP_DATA_OFFSET } from '../../src/wire/tcp.js';
import { UDP_LENGTH } from '../../src/wire/udp.js';
import {
  buildIcmpEcho, buildTcp, buildUdp, checksumsValid, describe as describePacket, toHex, toPartialChecksum,
  type PacketDescription, type TcpOptions, type UdpOptions,
} from '../support/packet-builder.js';

// ---------------------------------------------------------------------------
// Addresses and the configuration every fixture starts from.

const V4 = '198.18.100.1';
const V6 = '2001:db8::100';
const C4 = '198.18.0.10';
const C6 = '2001:db8:1::10';

const SPEC: DispatchSpec = {
  clusters: [
    {
      address: V4,
      ports: [
        { port: 80, protocol: 'tcp', scheduler: 'rr', daemons: [{ address: '198.18.2.1:8080' }] },
        { port: 8000, protocol: 'tcp', scheduler: 'rr', daemons: [{ address: '198.18.2.2:8000' }] },
        { port: 53, protocol: 'udp', scheduler: 'rr', daemons: [{ address: '198.18.2.3:5353' }] },
        { port: 81, protocol: 'tcp', daemons: [{ address: '198.18.2.4:8080', weight: 0 }, { address: '198.18.2.5:8080', weight: 0 }] },
        { port: 90, protocol: 'tcp', daemons: [{ address: '198.18.2.6:40080' }] },
        // The daemon of port 80 again: a client port already talking to it through port 80 cannot also use it here.
        { port: 8080, protocol: 'tcp', daemons: [{ address: '198.18.2.1:8080' }] },
      ],
    },
    {
      address: V6,
      ports: [
        { port: 443, protocol: 'tcp', daemons: [{ address: '[2001:db8:2::1]:8443' }] },
        { port: 53, protocol: 'udp', daemons: [{ address: '[2001:db8:2::3]:5353' }] },
        { port: 8000, protocol: 'any', daemons: [{ address: '[2001:db8:2::2]:8000' }] },
        { port: 81, protocol: 'udp', daemons: [{ address: '[2001:db8:2::4]:5353', weight: 0 }] },
      ],
    },
  ],
};

/** The four views of one flow: client → cluster, as rewritten to the daemon, daemon → client, as rewritten to the cluster. */
interface FlowEnds {
  in: { src: string; dst: string; srcPort: number; dstPort: number };
  fwd: { src: string; dst: string; srcPort: number; dstPort: number };
  reply: { src: string; dst: string; srcPort: number; dstPort: number };
  out: { src: string; dst: string; srcPort: number; dstPort: number };
}

function ends(client: string, clientPort: number, cluster: string, clusterPort: number, daemon: string, daemonPort: number): FlowEnds {
  return {
    in: { src: client, dst: cluster, srcPort: clientPort, dstPort: clusterPort },
    fwd: { src: client, dst: daemon, srcPort: clientPort, dstPort: daemonPort },
    reply: { src: daemon, dst: client, srcPort: daemonPort, dstPort: clientPort },
    out: { src: cluster, dst: client, srcPort: clusterPort, dstPort: clientPort },
  };
}

const T4 = ends(C4, 40001, V4, 80, '198.18.2.1', 8080);
const T4_SAME = ends(C4, 40001, V4, 8000, '198.18.2.2', 8000);
const T4_HIGH = ends(C4, 40001, V4, 90, '198.18.2.6', 40080);
const U4 = ends(C4, 40001, V4, 53, '198.18.2.3', 5353);
const T6 = ends(C6, 50001, V6, 443, '2001:db8:2::1', 8443);
const T6_ANY = ends(C6, 50001, V6, 8000, '2001:db8:2::2', 8000);
const U6 = ends(C6, 50001, V6, 53, '2001:db8:2::3', 5353);
const U6_ANY = ends(C6, 50001, V6, 8000, '2001:db8:2::2', 8000);

type Tcp = Omit<TcpOptions, 'src' | 'dst' | 'srcPort' | 'dstPort'>;
type Udp = Omit<UdpOptions, 'src' | 'dst' | 'srcPort' | 'dstPort'>;
const tcp = (at: FlowEnds[keyof FlowEnds], o: Tcp = {}): Uint8Array => buildTcp({ ...at, seq: 1000, ack: 0, ...o });
const udp = (at: FlowEnds[keyof FlowEnds], o: Udp = {}): Uint8Array => buildUdp({ ...at, payload: 'query', ...o });

function newDispatcher(options: { capacity?: number; timeouts?: Partial<Timeouts> } = {}): Dispatcher {
  const d = new Dispatcher({ capacity: options.capacity ?? 64, timeouts: options.timeouts, seed: 5 });
  d.configure(SPEC);
  return d;
}

// ---------------------------------------------------------------------------
// Packet surgery for malformed inputs (copies; the builder's output stays valid).

function edit(packet: Uint8Array, change: (p: Uint8Array) => void, fixIpChecksum = true): Uint8Array {
  const p = packet.slice();
  change(p);
  if (fixIpChecksum && p[0] >>> 4 === 4) {
    const ip = new Ipv4Packet();
    ip.wrap(p, 0, p.length);
    ip.fillChecksum();
  }
  return p;
}

/** The IPv4 packet with 4 bytes of IP options (four NOPs, RFC 791) after the fixed header: IHL 6. */
function withIpv4Options(packet: Uint8Array): Uint8Array {
  const p = new Uint8Array(packet.length + 4);
  p.set(packet.subarray(0, 20), 0);
  p.fill(1, 20, 24);
  p.set(packet.subarray(20), 24);
  p[0] = 0x46;
  p[IPV4_TOTAL_LEN] = p.length >>> 8;
  p[IPV4_TOTAL_LEN + 1] = p.length & 0xff;
  return edit(p, () => {});
}

const toPartial = (packet: Uint8Array): Uint8Array => toPartialChecksum(packet).bytes;

// ---------------------------------------------------------------------------
// Sending one packet, through processPacket() or through a batch.

type Mode = 'packet' | 'batch';

const batch = createBatch(4, 4096);
const outBatch = createSiblingBatch(batch);

interface Sent {
  verdict: number;
  /** The packet after processing: the output bytes when forwarded, else the (untouched) input slot. */
  bytes: Uint8Array;
}

function send(d: Dispatcher, packet: Uint8Array, now: number, mode: Mode = 'batch', linkFlags = 0, padding = 0): Sent {
  if (mode === 'packet') {
    const buf = new Uint8Array(packet.length + padding + 8);
    buf.fill(0xee);
    buf.set(packet, 8);
    const verdict = d.processPacket(buf, 8, packet.length + padding, linkFlags, now);
    return { verdict, bytes: buf.slice(8, 8 + packet.length) };
  }
  // Slot 1, so offsets are not all zero; 0xee fill stands for link padding and stale bytes.
  const off = batch.slotSize + 16;
  batch.buffer.fill(0xee, batch.slotSize, 2 * batch.slotSize);
  batch.buffer.set(packet, off);
  batch.offsets[0] = off;
  batch.lengths[0] = packet.length + padding;
  batch.flags[0] = linkFlags;
  // Where a virtio-net header puts a partial checksum: the transport's checksum field.
  batch.csumAt[0] = linkFlags & PACKET_FLAG_PARTIAL_CSUM ? toPartialChecksum(packet).csumAt : 0;
  batch.count = 1;
  const n = d.process(batch, outBatch, now);
  assert.equal(outBatch.count, n);
  if (n === 1) {
    assert.equal(outBatch.offsets[0], off, 'the output points at the packet in place');
    assert.equal(outBatch.flags[0], linkFlags, 'link flags pass through');
    assert.equal(outBatch.lengths[0], packet.length, 'the output length is the IP length, without link padding');
  }
  return { verdict: n === 1 ? VERDICT_FORWARD : VERDICT_DROP, bytes: batch.buffer.slice(off, off + packet.length) };
}

function dropCounts(d: Dispatcher): Record<string, number> {
  const out: Record<string, number> = {};
  d.balancer.stats.drops.forEach((n, i) => { if (n !== 0) out[DROP_REASON_NAMES[i]] = n; });
  return out;
}

/** The live daemon `name` ("198.18.2.1:8080"), of the cluster port at `cluster` ("198.18.100.1:80") when given. */
function daemonByName(d: Dispatcher, name: string, cluster?: string) {
  const found = d.tree.daemonsById.filter((x) => x && !x.retired && x.name === name && (cluster === undefined || x.clusterPort.name.startsWith(`${cluster}/`)));
  assert.equal(found.length, 1, `one daemon named ${name}${cluster ? ` at ${cluster}` : ''}`);
  return found[0];
}

const endpointOf = (address: string, port: number): string => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/** The record of the flow from client address:port to cluster address:port, or -1. */
function recordOf(d: Dispatcher, client: string, clientPort: number, cluster: string, clusterPort: number, protocol = 6): number {
  const c = parseIp(client)!;
  const key = createFlowKey();
  key.set(addressWords(c), 0);
  key.set(addressWords(parseIp(cluster)!), 4);
  key[8] = ((clientPort << 16) | clusterPort) >>> 0;
  key[9] = (protocol << 8) | c.family;
  return d.table.findForward(key, d.table.hashKey(key));
}

function stateName(d: Dispatcher, id: number): string {
  assert.ok(id >= 0, 'no record');
  return CONN_STATE_NAMES[d.table.u32[id * REC_WORDS + R_STATE] & STATE_MASK];
}

// ---------------------------------------------------------------------------
// The fixture table.

interface Fixture {
  description: string;
  /** Packets sent first, at the same time; each must be forwarded. */
  before?: Uint8Array[];
  input: Uint8Array;
  linkFlags?: number;
  /** Bytes after the packet inside the link's length (Ethernet-style padding). */
  padding?: number;
  verdict: typeof VERDICT_FORWARD | typeof VERDICT_DROP;
  /** The packet expected on the way out, byte for byte (forward only). */
  output?: Uint8Array;
  /** Drop counters that must have moved, by name, and by how much; every other one must stay 0. */
  drops?: Record<string, number>;
  /** The cluster port a drop is counted against. */
  dropPort?: string;
  /** Records in the table afterwards, and the state of the flow's record. */
  records?: number;
  state?: { flow: FlowEnds; protocol?: number; name: string };
  /** Per-daemon counters afterwards. */
  daemon?: { name: string; cluster: string; newFlows: number; activeFlows: number; packetsIn: number; packetsOut: number };
}

const SYN4 = tcp(T4.in, { flags: 'S' });
const SA4 = tcp(T4.reply, { flags: 'SA', seq: 7000, ack: 1001 });
const SYN6 = tcp(T6.in, { flags: 'S' });
const SA6 = tcp(T6.reply, { flags: 'SA', seq: 7000, ack: 1001 });

const FIXTURES: Fixture[] = [
  // --- IPv4 TCP
  {
    description: 'IPv4 TCP SYN to a cluster port: a record is made and the packet goes to the daemon (address and port rewritten)',
    input: SYN4, verdict: VERDICT_FORWARD, output: tcp(T4.fwd, { flags: 'S' }),
    records: 1, state: { flow: T4, name: 'SYN_RECV' },
    daemon: { name: '198.18.2.1:8080', cluster: '198.18.100.1:80', newFlows: 1, activeFlows: 1, packetsIn: 1, packetsOut: 0 },
  },
  {
    description: 'IPv4 TCP SYN to a daemon on the cluster port number: only the address changes',
    input: tcp(T4_SAME.in, { flags: 'S' }), verdict: VERDICT_FORWARD, output: tcp(T4_SAME.fwd, { flags: 'S' }), records: 1,
  },
  {
    description: 'IPv4 SYN-ACK from the daemon goes back from the cluster address and port',
    before: [SYN4], input: SA4, verdict: VERDICT_FORWARD, output: tcp(T4.out, { flags: 'SA', seq: 7000, ack: 1001 }),
    state: { flow: T4, name: 'SYN_ACK' },
    daemon: { name: '198.18.2.1:8080', cluster: '198.18.100.1:80', newFlows: 1, activeFlows: 1, packetsIn: 1, packetsOut: 1 },
  },
  {
    description: 'IPv4 handshake ACK makes the record ESTABLISHED',
    before: [SYN4, SA4], input: tcp(T4.in, { flags: 'A', seq: 1001, ack: 7001 }), verdict: VERDICT_FORWARD,
    output: tcp(T4.fwd, { flags: 'A', seq: 1001, ack: 7001 }), state: { flow: T4, name: 'ESTABLISHED' },
  },
  {
    description: 'IPv4 data from the daemon, odd payload length, goes back with a valid checksum',
    before: [SYN4, SA4, tcp(T4.in, { flags: 'A', seq: 1001, ack: 7001 })],
    input: tcp(T4.reply, { flags: 'PA', seq: 7001, ack: 1001, payload: 'HTTP/1.1 200 OK\r\n\r\nhello' }), verdict: VERDICT_FORWARD,
    output: tcp(T4.out, { flags: 'PA', seq: 7001, ack: 1001, payload: 'HTTP/1.1 200 OK\r\n\r\nhello' }),
  },
  {
    description: 'IPv4 SYN and its reply with a daemon port above 32767',
    before: [tcp(T4_HIGH.in, { flags: 'S' })], input: tcp(T4_HIGH.reply, { flags: 'SA', seq: 9, ack: 1001 }), verdict: VERDICT_FORWARD,
    output: tcp(T4_HIGH.out, { flags: 'SA', seq: 9, ack: 1001 }),
  },
  {
    description: 'IPv4 SYN with IP options (IHL 6): the transport header is found after them',
    input: withIpv4Options(SYN4), verdict: VERDICT_FORWARD, output: withIpv4Options(tcp(T4.fwd, { flags: 'S' })),
  },
  {
    description: 'IPv4 SYN-ACK with IP options goes back from the cluster',
    before: [SYN4], input: withIpv4Options(SA4), verdict: VERDICT_FORWARD, output: withIpv4Options(tcp(T4.out, { flags: 'SA', seq: 7000, ack: 1001 })),
  },
  {
    description: 'IPv4 SYN whose daemon-side tuple another record holds → reverse_taken',
    before: [SYN4], input: tcp({ ...T4.in, dstPort: 8080 }, { flags: 'S' }), verdict: VERDICT_DROP,
    drops: { reverse_taken: 1 }, dropPort: '198.18.100.1:8080/tcp', records: 1,
  },
  {
    description: 'IPv4 SYN with link padding after it: forwarded at its IP length',
    input: SYN4, padding: 6, verdict: VERDICT_FORWARD, output: tcp(T4.fwd, { flags: 'S' }),
  },
  {
    description: 'IPv4 TCP ACK with no record → no_record',
    input: tcp(T4.in, { flags: 'A', seq: 5, ack: 6 }), verdict: VERDICT_DROP, drops: { no_record: 1 }, dropPort: '198.18.100.1:80/tcp', records: 0,
  },
  {
    description: 'IPv4 TCP FIN-ACK with no record → no_record',
    input: tcp(T4.in, { flags: 'FA' }), verdict: VERDICT_DROP, drops: { no_record: 1 }, dropPort: '198.18.100.1:80/tcp', records: 0,
  },
  {
    description: 'IPv4 TCP RST with no record → no_record',
    input: tcp(T4.in, { flags: 'R' }), verdict: VERDICT_DROP, drops: { no_record: 1 }, records: 0,
  },
  {
    description: 'IPv4 TCP SYN to a cluster port that is not configured → not_ours',
    input: tcp({ ...T4.in, dstPort: 22 }, { flags: 'S' }), verdict: VERDICT_DROP, drops: { not_ours: 1 }, records: 0,
  },
  {
    description: 'IPv4 TCP SYN to a UDP-only cluster port → not_ours',
    input: tcp(U4.in, { flags: 'S' }), verdict: VERDICT_DROP, drops: { not_ours: 1 }, records: 0,
  },
  {
    description: 'IPv4 TCP SYN to an address that is no cluster (nor a reply of any flow) → no_record_out',
    input: tcp({ ...T4.in, dst: '198.18.100.2' }, { flags: 'S' }), verdict: VERDICT_DROP, drops: { no_record_out: 1 }, records: 0,
  },
  {
    description: 'IPv4 reply from a daemon with no record → no_record_out',
    input: SA4, verdict: VERDICT_DROP, drops: { no_record_out: 1 }, records: 0,
  },
  {
    description: 'IPv4 reply from the daemon to another client port → no_record_out',
    before: [SYN4], input: tcp({ ...T4.reply, dstPort: 40002 }, { flags: 'SA' }), verdict: VERDICT_DROP, drops: { no_record_out: 1 }, records: 1,
  },
  {
    description: 'IPv4 SYN to a port whose daemons all have weight 0 → no_daemon',
    input: tcp({ ...T4.in, dstPort: 81 }, { flags: 'S' }), verdict: VERDICT_DROP, drops: { no_daemon: 1 }, dropPort: '198.18.100.1:81/tcp', records: 0,
  },
  {
    description: 'IPv4 SYN+FIN → bad_tcp_flags', input: tcp(T4.in, { flags: 'SF' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, records: 0,
  },
  {
    description: 'IPv4 SYN+RST → bad_tcp_flags', input: tcp(T4.in, { flags: 'SR' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, records: 0,
  },
  {
    description: 'IPv4 null scan (no flags) → bad_tcp_flags', input: tcp(T4.in, { flags: 0 }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, records: 0,
  },
  {
    description: 'IPv4 xmas scan (FIN+PSH+URG) → bad_tcp_flags', input: tcp(T4.in, { flags: 'FPU' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, records: 0,
  },
  {
    description: 'IPv4 PSH alone → bad_tcp_flags', input: tcp(T4.in, { flags: 'P' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, records: 0,
  },
  {
    description: 'IPv4 bad TCP flags on an established flow → bad_tcp_flags, and the record stays ESTABLISHED',
    before: [SYN4, SA4, tcp(T4.in, { flags: 'A', seq: 1001, ack: 7001 })],
    input: tcp(T4.in, { flags: 'SF', seq: 1001 }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 }, state: { flow: T4, name: 'ESTABLISHED' },
  },
  {
    description: 'IPv4 ICMP echo request to the cluster → answered from the cluster',
    input: buildIcmpEcho({ src: C4, dst: V4, ident: 1, seq: 1 }), verdict: VERDICT_FORWARD,
    output: buildIcmpEcho({ src: V4, dst: C4, ident: 1, seq: 1, type: 'reply' }), records: 0,
  },
  {
    description: 'IPv4 GRE → unknown_protocol',
    input: edit(SYN4, (p) => { p[IPV4_PROTOCOL] = 47; }), verdict: VERDICT_DROP, drops: { unknown_protocol: 1 }, records: 0,
  },
  {
    description: 'IPv4 later fragment without its first → fragment',
    input: tcp(T4.in, { flags: 'S', fragment: { ident: 7, offset: 8, moreFrags: true } }), verdict: VERDICT_DROP, drops: { fragment: 1 }, records: 0,
  },
  {
    description: 'IPv4 empty packet → truncated', input: new Uint8Array(0), verdict: VERDICT_DROP, drops: { truncated: 1 },
  },
  {
    description: 'IPv4 cut to 10 bytes → truncated', input: SYN4.slice(0, 10), verdict: VERDICT_DROP, drops: { truncated: 1 }, records: 0,
  },
  {
    description: 'IPv4 total length beyond the bytes read → truncated', input: SYN4.slice(0, SYN4.length - 1), verdict: VERDICT_DROP, drops: { truncated: 1 },
  },
  {
    description: 'IPv4 total length shorter than the TCP header → truncated',
    input: edit(SYN4.slice(0, 30), (p) => { p[IPV4_TOTAL_LEN] = 0; p[IPV4_TOTAL_LEN + 1] = 30; }), verdict: VERDICT_DROP, drops: { truncated: 1 },
  },
  {
    description: 'IPv4 header length of 16 bytes → bad_header_length',
    input: edit(SYN4, (p) => { p[0] = 0x44; }, false), verdict: VERDICT_DROP, drops: { bad_header_length: 1 },
  },
  {
    description: 'IPv4 total length below the header length → bad_total_length',
    input: edit(SYN4, (p) => { p[IPV4_TOTAL_LEN] = 0; p[IPV4_TOTAL_LEN + 1] = 12; }), verdict: VERDICT_DROP, drops: { bad_total_length: 1 },
  },
  {
    description: 'IP version 5 → bad_version', input: edit(SYN4, (p) => { p[0] = 0x55; }, false), verdict: VERDICT_DROP, drops: { bad_version: 1 },
  },
  {
    description: 'IPv4 header checksum wrong → bad_checksum',
    input: edit(SYN4, (p) => { p[IPV4_CHECKSUM + 1] ^= 0x01; }, false), verdict: VERDICT_DROP, drops: { bad_checksum: 1 }, records: 0,
  },
  {
    description: 'IPv4 TCP data offset below 5 words → bad_header_length',
    input: edit(SYN4, (p) => { p[20 + TCP_DATA_OFFSET] = 0x40; }), verdict: VERDICT_DROP, drops: { bad_header_length: 1 },
  },
  // --- IPv4 UDP
  {
    description: 'IPv4 UDP datagram: a record is made and it goes to the daemon',
    input: udp(U4.in), verdict: VERDICT_FORWARD, output: udp(U4.fwd), records: 1, state: { flow: U4, protocol: 17, name: 'UDP' },
    daemon: { name: '198.18.2.3:5353', cluster: '198.18.100.1:53', newFlows: 1, activeFlows: 1, packetsIn: 1, packetsOut: 0 },
  },
  {
    description: 'IPv4 UDP answer goes back from the cluster address and port',
    before: [udp(U4.in)], input: udp(U4.reply, { payload: 'answer!' }), verdict: VERDICT_FORWARD, output: udp(U4.out, { payload: 'answer!' }),
    daemon: { name: '198.18.2.3:5353', cluster: '198.18.100.1:53', newFlows: 1, activeFlows: 1, packetsIn: 1, packetsOut: 1 },
  },
  {
    description: 'IPv4 UDP with checksum 0 ("none") keeps checksum 0 both ways',
    before: [udp(U4.in, { noChecksum: true })], input: udp(U4.reply, { noChecksum: true }), verdict: VERDICT_FORWARD,
    output: udp(U4.out, { noChecksum: true }),
  },
  {
    description: 'IPv4 UDP with checksum 0 inbound stays 0',
    input: udp(U4.in, { noChecksum: true }), verdict: VERDICT_FORWARD, output: udp(U4.fwd, { noChecksum: true }),
  },
  {
    description: 'IPv4 UDP length below 8 → bad_length',
    input: edit(udp(U4.in), (p) => { p[20 + UDP_LENGTH] = 0; p[20 + UDP_LENGTH + 1] = 4; }), verdict: VERDICT_DROP, drops: { bad_length: 1 },
  },
  {
    description: 'IPv4 UDP to a TCP-only cluster port → not_ours',
    input: udp(T4.in), verdict: VERDICT_DROP, drops: { not_ours: 1 }, records: 0,
  },
  // --- IPv6 TCP
  {
    description: 'IPv6 TCP SYN: a record is made and it goes to the daemon (address and port rewritten)',
    input: SYN6, verdict: VERDICT_FORWARD, output: tcp(T6.fwd, { flags: 'S' }), records: 1, state: { flow: T6, name: 'SYN_RECV' },
    daemon: { name: '[2001:db8:2::1]:8443', cluster: '[2001:db8::100]:443', newFlows: 1, activeFlows: 1, packetsIn: 1, packetsOut: 0 },
  },
  {
    description: 'IPv6 TCP SYN to an `any` port with a daemon on the same port number: only the address changes',
    input: tcp(T6_ANY.in, { flags: 'S' }), verdict: VERDICT_FORWARD, output: tcp(T6_ANY.fwd, { flags: 'S' }),
  },
  {
    description: 'IPv6 SYN-ACK goes back from the cluster address',
    before: [SYN6], input: SA6, verdict: VERDICT_FORWARD, output: tcp(T6.out, { flags: 'SA', seq: 7000, ack: 1001 }),
    state: { flow: T6, name: 'SYN_ACK' },
  },
  {
    description: 'IPv6 handshake ACK makes the record ESTABLISHED',
    before: [SYN6, SA6], input: tcp(T6.in, { flags: 'A', seq: 1001, ack: 7001 }), verdict: VERDICT_FORWARD,
    output: tcp(T6.fwd, { flags: 'A', seq: 1001, ack: 7001 }), state: { flow: T6, name: 'ESTABLISHED' },
  },
  {
    description: 'IPv6 SYN behind hop-by-hop and destination options: rewritten, the chain kept',
    input: tcp(T6.in, { flags: 'S', extensionHeaders: ['hop-by-hop', 'dest-opts'] }), verdict: VERDICT_FORWARD,
    output: tcp(T6.fwd, { flags: 'S', extensionHeaders: ['hop-by-hop', 'dest-opts'] }),
  },
  {
    description: 'IPv6 TCP ACK with no record → no_record',
    input: tcp(T6.in, { flags: 'A' }), verdict: VERDICT_DROP, drops: { no_record: 1 }, dropPort: '[2001:db8::100]:443/tcp', records: 0,
  },
  {
    description: 'IPv6 TCP SYN to a port that is not configured → not_ours',
    input: tcp({ ...T6.in, dstPort: 444 }, { flags: 'S' }), verdict: VERDICT_DROP, drops: { not_ours: 1 }, records: 0,
  },
  {
    description: 'IPv6 TCP SYN to an address that is no cluster → no_record_out',
    input: tcp({ ...T6.in, dst: '2001:db8::101' }, { flags: 'S' }), verdict: VERDICT_DROP, drops: { no_record_out: 1 }, records: 0,
  },
  {
    description: 'IPv6 reply with no record → no_record_out', input: SA6, verdict: VERDICT_DROP, drops: { no_record_out: 1 },
  },
  { description: 'IPv6 SYN+FIN → bad_tcp_flags', input: tcp(T6.in, { flags: 'SF' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 } },
  { description: 'IPv6 null scan → bad_tcp_flags', input: tcp(T6.in, { flags: 0 }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 } },
  { description: 'IPv6 xmas scan → bad_tcp_flags', input: tcp(T6.in, { flags: 'FPU' }), verdict: VERDICT_DROP, drops: { bad_tcp_flags: 1 } },
  {
    description: 'IPv6 ICMPv6 echo request → answered from the cluster', input: buildIcmpEcho({ src: C6, dst: V6, ident: 1, seq: 1 }),
    verdict: VERDICT_FORWARD, output: buildIcmpEcho({ src: V6, dst: C6, ident: 1, seq: 1, type: 'reply' }), records: 0,
  },
  {
    description: 'IPv6 later fragment without its first → fragment',
    input: tcp(T6.in, { flags: 'S', fragment: { ident: 1, offset: 8, moreFrags: true } }), verdict: VERDICT_DROP, drops: { fragment: 1 },
  },
  {
    description: 'IPv6 payload length beyond the bytes read → truncated', input: SYN6.slice(0, SYN6.length - 1), verdict: VERDICT_DROP, drops: { truncated: 1 },
  },
  { description: 'IPv6 cut to 39 bytes → truncated', input: SYN6.slice(0, 39), verdict: VERDICT_DROP, drops: { truncated: 1 } },
  {
    description: 'IPv6 payload too short for a TCP header → truncated',
    input: edit(SYN6.slice(0, 50), (p) => { p[IPV6_PAYLOAD_LEN] = 0; p[IPV6_PAYLOAD_LEN + 1] = 10; }), verdict: VERDICT_DROP, drops: { truncated: 1 },
  },
  {
    description: 'IPv6 hop-by-hop after another extension header → bad_extension_header',
    input: tcp(T6.in, { flags: 'S', extensionHeaders: ['dest-opts', 'hop-by-hop'] }), verdict: VERDICT_DROP, drops: { bad_extension_header: 1 },
  },
  // --- IPv6 UDP
  {
    description: 'IPv6 UDP datagram: a record is made and it goes to the daemon',
    input: udp(U6.in), verdict: VERDICT_FORWARD, output: udp(U6.fwd), records: 1, state: { flow: U6, protocol: 17, name: 'UDP' },
  },
  {
    description: 'IPv6 UDP answer goes back from the cluster',
    before: [udp(U6.in)], input: udp(U6.reply, { payload: 'x' }), verdict: VERDICT_FORWARD, output: udp(U6.out, { payload: 'x' }),
  },
  {
    description: 'IPv6 UDP to an `any` port: same port number, only the address changes',
    input: udp(U6_ANY.in), verdict: VERDICT_FORWARD, output: udp(U6_ANY.fwd),
  },
  {
    description: 'IPv6 UDP to a port whose only daemon has weight 0 → no_daemon',
    input: udp({ ...U6.in, dstPort: 81 }), verdict: VERDICT_DROP, drops: { no_daemon: 1 }, dropPort: '[2001:db8::100]:81/udp', records: 0,
  },
  // --- Partial checksums (virtio NEEDS_CSUM)
  {
    description: 'IPv4 TCP SYN with a partial checksum: the field becomes the new pseudo-header sum (ports not in it)',
    input: toPartial(SYN4), linkFlags: PACKET_FLAG_PARTIAL_CSUM, verdict: VERDICT_FORWARD, output: toPartial(tcp(T4.fwd, { flags: 'S' })),
  },
  {
    description: 'IPv4 SYN-ACK with a partial checksum, outbound',
    before: [SYN4], input: toPartial(SA4), linkFlags: PACKET_FLAG_PARTIAL_CSUM, verdict: VERDICT_FORWARD,
    output: toPartial(tcp(T4.out, { flags: 'SA', seq: 7000, ack: 1001 })),
  },
  {
    description: 'IPv4 UDP with a partial checksum',
    input: toPartial(udp(U4.in)), linkFlags: PACKET_FLAG_PARTIAL_CSUM, verdict: VERDICT_FORWARD, output: toPartial(udp(U4.fwd)),
  },
  {
    description: 'IPv6 TCP SYN with a partial checksum',
    input: toPartial(SYN6), linkFlags: PACKET_FLAG_PARTIAL_CSUM, verdict: VERDICT_FORWARD, output: toPartial(tcp(T6.fwd, { flags: 'S' })),
  },
  {
    description: 'IPv6 UDP answer with a partial checksum, outbound',
    before: [udp(U6.in)], input: toPartial(udp(U6.reply)), linkFlags: PACKET_FLAG_PARTIAL_CSUM, verdict: VERDICT_FORWARD,
    output: toPartial(udp(U6.out)),
  },
];

function runFixture(f: Fixture, mode: Mode): void {
  const d = newDispatcher();
  const now = 1000;
  for (const [i, p] of (f.before ?? []).entries()) assert.equal(send(d, p, now, mode).verdict, VERDICT_FORWARD, `before[${i}] was not forwarded`);
  const dropsBefore = d.balancer.stats.drops.slice();
  const sent = send(d, f.input, now, mode, f.linkFlags ?? 0, f.padding ?? 0);
  assert.equal(sent.verdict, f.verdict, `verdict; drops now ${JSON.stringify(dropCounts(d))}`);
  if (f.verdict === VERDICT_FORWARD) {
    assert.ok(f.output, 'a forward fixture names its output');
    assert.equal(toHex(sent.bytes), toHex(f.output), 'output packet');
    if (!f.linkFlags) assert.ok(checksumsValid(sent.bytes));
  } else {
    assert.equal(toHex(sent.bytes), toHex(f.input), 'a dropped packet is left as it was');
  }
  const moved: Record<string, number> = {};
  d.balancer.stats.drops.forEach((n, i) => { if (n !== dropsBefore[i]) moved[DROP_REASON_NAMES[i]] = n - dropsBefore[i]; });
  assert.deepEqual(moved, f.drops ?? {}, 'drop counters');
  if (f.dropPort) {
    const port = d.tree.portsById.find((p) => p && p.name === f.dropPort);
    assert.ok(port, `no port ${f.dropPort}`);
    const perPort = port.id === undefined ? [] : Array.from(d.balancer.stats.portDropCounts(port.id));
    const named: Record<string, number> = {};
    perPort.forEach((n, i) => { if (n !== 0) named[DROP_REASON_NAMES[i]] = n; });
    assert.deepEqual(named, f.drops, `drops of ${f.dropPort}`);
  }
  if (f.records !== undefined) assert.equal(d.table.size, f.records, 'records in the table');
  if (f.state) {
    const e = f.state.flow.in;
    assert.equal(stateName(d, recordOf(d, e.src, e.srcPort, e.dst, e.dstPort, f.state.protocol ?? 6)), f.state.name);
  }
  if (f.daemon) {
    const c = d.balancer.stats.daemonCounters(daemonByName(d, f.daemon.name, f.daemon.cluster).id);
    assert.deepEqual(
      { name: f.daemon.name, cluster: f.daemon.cluster, newFlows: c.newFlows, activeFlows: c.activeFlows, packetsIn: c.packetsIn, packetsOut: c.packetsOut },
      f.daemon,
    );
  }
}

describe('dispatcher fixtures', () => {
  for (const mode of ['packet', 'batch'] as const) {
    describe(mode === 'packet' ? 'processPacket()' : 'process() with a one-packet batch', () => {
      for (const f of FIXTURES) it(f.description, () => runFixture(f, mode));
    });
  }
});

// ---------------------------------------------------------------------------

describe('rewrite property: the output equals a packet built with the new addresses', () => {
  // Outside the cluster and daemon ranges, so a reply's destination can never look like a cluster port.
  const clientV4 = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).map(([a, b]) => `198.19.${a}.${b}`);
  const clientV6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 5, maxLength: 5 })
    .map((w) => `2001:db8:ffff:${w.map((x) => x.toString(16)).join(':')}`);
  const payload = fc.uint8Array({ maxLength: 300 });

  it('for random clients, ports, payloads and both checksum modes, in both directions', () => {
    fc.assert(
      fc.property(
        fc.boolean(), fc.boolean(), fc.boolean(), clientV4, clientV6, fc.integer({ min: 1, max: 65535 }), payload, payload,
        fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 255 }),
        (v6, isUdp, partial, a4, a6, clientPort, p1, p2, seq, ttl) => {
          const d = newDispatcher();
          const flow = v6
            ? (isUdp ? ends(a6, clientPort, V6, 53, '2001:db8:2::3', 5353) : ends(a6, clientPort, V6, 443, '2001:db8:2::1', 8443))
            : (isUdp ? ends(a4, clientPort, V4, 53, '198.18.2.3', 5353) : ends(a4, clientPort, V4, 80, '198.18.2.1', 8080));
          const make = (at: FlowEnds[keyof FlowEnds], data: Uint8Array, flags: string): Uint8Array => {
            const p = isUdp ? buildUdp({ ...at, payload: data, ttl }) : buildTcp({ ...at, flags, seq, ack: seq ^ 0x5a5a5a5a, payload: data, ttl });
            return partial ? toPartial(p) : p;
          };
          const linkFlags = partial ? PACKET_FLAG_PARTIAL_CSUM : 0;
          const first = send(d, make(flow.in, p1, 'S'), 1, 'batch', linkFlags);
          assert.equal(first.verdict, VERDICT_FORWARD);
          assert.equal(toHex(first.bytes), toHex(make(flow.fwd, p1, 'S')));
          const reply = send(d, make(flow.reply, p2, 'SA'), 2, 'packet', linkFlags);
          assert.equal(reply.verdict, VERDICT_FORWARD);
          assert.equal(toHex(reply.bytes), toHex(make(flow.out, p2, 'SA')));
          if (!partial) assert.ok(checksumsValid(first.bytes) && checksumsValid(reply.bytes));
        },
      ),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------
// A flow driven packet by packet, for the state machine and timeout tests.

class TestFlow {
  now = 1000;
  constructor(readonly d: Dispatcher, readonly e: FlowEnds, readonly protocol: 'tcp' | 'udp' = 'tcp') {}

  private packet(at: FlowEnds[keyof FlowEnds], flags: string, payload?: string): Uint8Array {
    return this.protocol === 'udp' ? buildUdp({ ...at, payload: payload ?? 'q' }) : buildTcp({ ...at, flags, payload });
  }

  /** Client → cluster; returns the verdict and, when forwarded, the packet as the daemon gets it. */
  in(flags: string, payload?: string): { verdict: number; out?: PacketDescription } {
    const r = send(this.d, this.packet(this.e.in, flags, payload), this.now);
    return { verdict: r.verdict, out: r.verdict === VERDICT_FORWARD ? describePacket(r.bytes) : undefined };
  }

  /** Daemon → client. */
  out(flags: string, payload?: string): { verdict: number; out?: PacketDescription } {
    const r = send(this.d, this.packet(this.e.reply, flags, payload), this.now);
    return { verdict: r.verdict, out: r.verdict === VERDICT_FORWARD ? describePacket(r.bytes) : undefined };
  }

  get record(): number {
    const e = this.e.in;
    return recordOf(this.d, e.src, e.srcPort, e.dst, e.dstPort, this.protocol === 'udp' ? 17 : 6);
  }

  get state(): string {
    return stateName(this.d, this.record);
  }

  get daemonId(): number {
    return daemonByName(this.d, endpointOf(this.e.fwd.dst, this.e.fwd.dstPort), endpointOf(this.e.in.dst, this.e.in.dstPort)).id;
  }

  get active(): number {
    return this.d.balancer.activeFlows(this.daemonId);
  }
}

type Step = [direction: 'in' | 'out', flags: string, state: string, active: number];

const HANDSHAKE: Step[] = [
  ['in', 'S', 'SYN_RECV', 1],
  ['out', 'SA', 'SYN_ACK', 1],
  ['in', 'A', 'ESTABLISHED', 1],
  ['in', 'PA', 'ESTABLISHED', 1],
  ['out', 'PA', 'ESTABLISHED', 1],
];

const STATE_SEQUENCES: { description: string; steps: Step[] }[] = [
  {
    description: 'client FIN, daemon ACK, daemon FIN+ACK, client ACK → TIME_WAIT',
    steps: [...HANDSHAKE, ['in', 'FA', 'FIN_WAIT', 1], ['out', 'A', 'FIN_WAIT', 1], ['out', 'FA', 'LAST_ACK', 1], ['in', 'A', 'TIME_WAIT', 0]],
  },
  {
    description: 'daemon FIN, client FIN+ACK, daemon ACK → TIME_WAIT',
    steps: [...HANDSHAKE, ['out', 'FA', 'CLOSE_WAIT', 1], ['in', 'PA', 'CLOSE_WAIT', 1], ['in', 'FA', 'LAST_ACK', 1], ['out', 'A', 'TIME_WAIT', 0]],
  },
  { description: 'client RST in ESTABLISHED → CLOSE', steps: [...HANDSHAKE, ['in', 'R', 'CLOSE', 0]] },
  { description: 'daemon RST+ACK in ESTABLISHED → CLOSE', steps: [...HANDSHAKE, ['out', 'RA', 'CLOSE', 0]] },
  { description: 'daemon refuses the SYN with RST+ACK → CLOSE', steps: [['in', 'S', 'SYN_RECV', 1], ['out', 'RA', 'CLOSE', 0]] },
  { description: 'client FIN before the handshake ends → CLOSE', steps: [['in', 'S', 'SYN_RECV', 1], ['in', 'FA', 'CLOSE', 0]] },
  { description: 'a repeated SYN changes nothing', steps: [['in', 'S', 'SYN_RECV', 1], ['in', 'S', 'SYN_RECV', 1], ['out', 'SA', 'SYN_ACK', 1], ['out', 'SA', 'SYN_ACK', 1]] },
  { description: 'a SYN on an ESTABLISHED record changes nothing', steps: [...HANDSHAKE, ['in', 'S', 'ESTABLISHED', 1]] },
  { description: 'packets after CLOSE still pass, and the record stays CLOSE', steps: [...HANDSHAKE, ['in', 'R', 'CLOSE', 0], ['out', 'RA', 'CLOSE', 0], ['out', 'A', 'CLOSE', 0]] },
  {
    description: 'both FINs cross (simultaneous close) → LAST_ACK, then TIME_WAIT',
    steps: [...HANDSHAKE, ['in', 'FA', 'FIN_WAIT', 1], ['out', 'FA', 'LAST_ACK', 1], ['out', 'A', 'TIME_WAIT', 0], ['in', 'A', 'TIME_WAIT', 0]],
  },
];

describe('TCP state machine', () => {
  for (const family of [4, 6] as const) {
    for (const seq of STATE_SEQUENCES) {
      it(`IPv${family}: ${seq.description}`, () => {
        const d = newDispatcher();
        const flow = new TestFlow(d, family === 4 ? T4 : T6);
        for (const [i, [direction, flags, state, active]] of seq.steps.entries()) {
          const r = direction === 'in' ? flow.in(flags) : flow.out(flags);
          const where = `step ${i} (${direction} ${flags})`;
          assert.equal(r.verdict, VERDICT_FORWARD, where);
          assert.equal(flow.state, state, where);
          assert.equal(flow.active, active, `${where}: active flows`);
        }
        assert.equal(d.table.size, 1);
        assert.equal(d.balancer.stats.daemonCounters(flow.daemonId).newFlows, 1);
        assert.deepEqual(dropCounts(d), {});
      });
    }
  }
});

// ---------------------------------------------------------------------------

const TIMEOUT_CASES: { state: string; steps: Step[]; timeout: keyof Timeouts; protocol?: 'udp' }[] = [
  { state: 'SYN_RECV', steps: HANDSHAKE.slice(0, 1), timeout: 'synRecv' },
  { state: 'SYN_ACK', steps: HANDSHAKE.slice(0, 2), timeout: 'synRecv' },
  { state: 'ESTABLISHED', steps: HANDSHAKE, timeout: 'established' },
  { state: 'FIN_WAIT', steps: [...HANDSHAKE, ['in', 'FA', 'FIN_WAIT', 1]], timeout: 'finWait' },
  { state: 'CLOSE_WAIT', steps: [...HANDSHAKE, ['out', 'FA', 'CLOSE_WAIT', 1]], timeout: 'closeWait' },
  { state: 'LAST_ACK', steps: [...HANDSHAKE, ['out', 'FA', 'CLOSE_WAIT', 1], ['in', 'FA', 'LAST_ACK', 1]], timeout: 'lastAck' },
  { state: 'TIME_WAIT', steps: STATE_SEQUENCES[0].steps, timeout: 'timeWait' },
  { state: 'CLOSE', steps: [...HANDSHAKE, ['in', 'R', 'CLOSE', 0]], timeout: 'close' },
  { state: 'UDP', steps: [['in', '', 'UDP', 1], ['out', '', 'UDP', 1]], timeout: 'udp', protocol: 'udp' },
];

/** Calls collect with a small budget until a whole sweep removes nothing. */
function collectAll(d: Dispatcher, now: number): number {
  let removed = 0;
  for (let idle = 0; idle < Math.ceil(d.table.capacity / 8) + 1;) {
    const r = d.collect(now, 2);
    removed += r;
    idle = r < 2 ? idle + 1 : 0;
  }
  return removed;
}

describe('timeouts', () => {
  for (const c of TIMEOUT_CASES) {
    it(`a ${c.state} record leaves after ${c.timeout} (${DEFAULT_TIMEOUTS[c.timeout]} s), not before`, () => {
      const d = newDispatcher();
      const flow = new TestFlow(d, c.protocol === 'udp' ? U4 : T4, c.protocol ?? 'tcp');
      for (const [direction, flags] of c.steps) assert.equal(flow[direction](flags).verdict, VERDICT_FORWARD);
      assert.equal(flow.state, c.state);
      const deadline = flow.now + DEFAULT_TIMEOUTS[c.timeout] * 1000;
      assert.equal(collectAll(d, deadline - 1), 0, 'removed before its timeout');
      assert.equal(flow.state, c.state);
      assert.equal(collectAll(d, deadline), 1);
      assert.equal(flow.record, -1);
      assert.equal(d.table.size, 0);
      assert.equal(flow.active, 0, 'a removed record no longer counts as active');
      assert.equal(d.balancer.stats.daemonCounters(flow.daemonId).newFlows, 1);
    });
  }

  it('timeouts from the options and from setTimeouts() apply', () => {
    const d = newDispatcher({ timeouts: { established: 5, udp: 2 } });
    const t = new TestFlow(d, T4);
    for (const [direction, flags] of HANDSHAKE) t[direction](flags);
    const u = new TestFlow(d, U4, 'udp');
    u.in('');
    assert.equal(collectAll(d, 1000 + 1999), 0);
    assert.equal(collectAll(d, 1000 + 2000), 1);
    assert.equal(u.record, -1);
    assert.equal(collectAll(d, 1000 + 5000), 1);
    assert.equal(t.record, -1);
    // New timeouts apply at a record's next packet.
    d.setTimeouts({ synRecv: 1 });
    assert.equal(d.timeoutSeconds.established, 5, 'setTimeouts keeps the ones it is not given');
    const s = new TestFlow(d, T6);
    s.now = 10_000;
    s.in('S');
    assert.equal(collectAll(d, 10_999), 0);
    assert.equal(collectAll(d, 11_000), 1);
  });

  it('every packet renews the timeout of its state', () => {
    const d = newDispatcher();
    const flow = new TestFlow(d, T4);
    for (const [direction, flags] of HANDSHAKE) flow[direction](flags);
    flow.now += 500_000;
    flow.out('PA', 'more');
    assert.equal(collectAll(d, 1000 + 900_000), 0);
    assert.equal(collectAll(d, flow.now + 900_000), 1);
  });

  it('a packet of a record whose time ran out, before collection, finds no record', () => {
    const d = newDispatcher();
    const flow = new TestFlow(d, T4);
    for (const [direction, flags] of HANDSHAKE) flow[direction](flags);
    flow.now += DEFAULT_TIMEOUTS.established * 1000;
    assert.equal(flow.out('PA').verdict, VERDICT_DROP);
    assert.deepEqual(dropCounts(d), { no_record_out: 1 });
    assert.equal(flow.in('PA').verdict, VERDICT_DROP);
    assert.deepEqual(dropCounts(d), { no_record_out: 1, no_record: 1 });
    assert.equal(d.table.size, 0, 'the inbound packet removed the stale record');
    assert.equal(flow.active, 0);
  });

  it('a UDP datagram on an expired record starts a new flow', () => {
    const d = newDispatcher();
    const flow = new TestFlow(d, U4, 'udp');
    flow.in('');
    flow.now += DEFAULT_TIMEOUTS.udp * 1000;
    assert.equal(flow.in('').verdict, VERDICT_FORWARD);
    assert.equal(d.table.size, 1);
    const len = udp(U4.in, { payload: 'q' }).length; // TestFlow's UDP payload
    assert.deepEqual(d.balancer.stats.daemonCounters(flow.daemonId), { newFlows: 2, activeFlows: 1, packetsIn: 2, bytesIn: 2 * len, packetsOut: 0, bytesOut: 0 });
  });
});

describe('reopening an ended connection', () => {
  const ENDED: { name: string; close: Step[] }[] = [
    { name: 'TIME_WAIT', close: STATE_SEQUENCES[0].steps },
    { name: 'CLOSE', close: [...HANDSHAKE, ['in', 'R', 'CLOSE', 0]] },
  ];
  for (const { name, close } of ENDED) {
    it(`a new SYN on a ${name} record starts a new flow`, () => {
      const d = newDispatcher();
      const flow = new TestFlow(d, T4);
      for (const [direction, flags] of close) flow[direction](flags);
      assert.equal(flow.state, name);
      assert.equal(flow.active, 0);
      flow.now += 1000;
      const r = flow.in('S');
      assert.equal(r.verdict, VERDICT_FORWARD);
      assert.equal(r.out?.dst, '198.18.2.1');
      assert.equal(flow.state, 'SYN_RECV');
      assert.equal(d.table.size, 1);
      assert.equal(flow.active, 1);
      assert.equal(d.balancer.stats.daemonCounters(flow.daemonId).newFlows, 2);
      // The new record has the SYN_RECV timeout, not the ended one's.
      assert.equal(collectAll(d, flow.now + DEFAULT_TIMEOUTS.synRecv * 1000 - 1), 0);
      assert.equal(flow.out('SA').verdict, VERDICT_FORWARD);
      assert.equal(flow.state, 'SYN_ACK');
    });
  }

  it('a SYN+ACK from the client does not reopen a TIME_WAIT record', () => {
    const d = newDispatcher();
    const flow = new TestFlow(d, T4);
    for (const [direction, flags] of STATE_SEQUENCES[0].steps) flow[direction](flags);
    assert.equal(flow.in('SA').verdict, VERDICT_FORWARD);
    assert.equal(flow.state, 'TIME_WAIT');
    assert.equal(d.balancer.stats.daemonCounters(flow.daemonId).newFlows, 1);
  });
});

// ---------------------------------------------------------------------------

describe('a full table', () => {
  /** Client port p of C4 to V4:80. */
  const flowAt = (d: Dispatcher, p: number): TestFlow => new TestFlow(d, ends(C4, p, V4, 80, '198.18.2.1', 8080));

  it('refuses a new SYN with table_full when every record is established, and established flows still pass', () => {
    const d = newDispatcher({ capacity: 4 });
    const flows = [1, 2, 3, 4].map((p) => flowAt(d, 40000 + p));
    for (const f of flows) for (const [direction, flags] of HANDSHAKE) assert.equal(f[direction](flags).verdict, VERDICT_FORWARD);
    const extra = flowAt(d, 40005);
    assert.equal(extra.in('S').verdict, VERDICT_DROP);
    assert.deepEqual(dropCounts(d), { table_full: 1 });
    const port = d.tree.portsById.find((p) => p.name === '198.18.100.1:80/tcp')!;
    assert.equal(d.balancer.stats.portDropCounts(port.id)[DROP_REASON_NAMES.indexOf('table_full')], 1);
    assert.equal(d.table.size, 4);
    for (const f of flows) {
      assert.equal(f.in('PA', 'x').verdict, VERDICT_FORWARD);
      assert.equal(f.out('PA', 'y').verdict, VERDICT_FORWARD);
      assert.equal(f.state, 'ESTABLISHED');
    }
    assert.equal(d.table.evictions, 0);
    assert.equal(flows[0].active, 4);
    // Once one flow has ended, its record is given up for the new SYN.
    for (const [direction, flags] of STATE_SEQUENCES[0].steps.slice(HANDSHAKE.length)) flows[1][direction](flags);
    assert.equal(flows[1].state, 'TIME_WAIT');
    assert.equal(extra.in('S').verdict, VERDICT_FORWARD);
    assert.equal(d.table.evictions, 1);
    assert.equal(flows[1].record, -1);
    assert.equal(flows[0].active, 4, 'three established and one new');
  });

  it('gives up the oldest never-confirmed record first, and its active count with it', () => {
    const d = newDispatcher({ capacity: 3 });
    const est = flowAt(d, 41000);
    for (const [direction, flags] of HANDSHAKE) est[direction](flags);
    const a = flowAt(d, 41001);
    const b = flowAt(d, 41002);
    a.in('S');
    b.in('S');
    assert.equal(est.active, 3);
    const c = flowAt(d, 41003);
    assert.equal(c.in('S').verdict, VERDICT_FORWARD);
    assert.equal(a.record, -1, 'the oldest SYN_RECV record went');
    assert.notEqual(b.record, -1);
    assert.equal(est.state, 'ESTABLISHED');
    assert.equal(est.active, 3);
    // The evicted flow's next packet finds no record.
    assert.equal(a.in('A').verdict, VERDICT_DROP);
    assert.deepEqual(dropCounts(d), { no_record: 1 });
    checkActive(d);
  });

  it('a UDP flow the daemon answered is kept; one it never answered is given up', () => {
    const d = newDispatcher({ capacity: 2 });
    const u = (p: number): TestFlow => new TestFlow(d, ends(C4, p, V4, 53, '198.18.2.3', 5353), 'udp');
    const answered = u(42001);
    const silent = u(42002);
    answered.in('');
    answered.out('');
    silent.in('');
    assert.equal(u(42003).in('').verdict, VERDICT_FORWARD);
    assert.equal(silent.record, -1);
    assert.notEqual(answered.record, -1);
    assert.equal(u(42004).in('').verdict, VERDICT_FORWARD, 'the unanswered 42003 is given up in turn');
    assert.notEqual(answered.record, -1);
    assert.equal(d.table.evictions, 2);
    checkActive(d);
  });
});

/** Each daemon's active count equals its records that still count (not ended). */
function checkActive(d: Dispatcher): void {
  const expected = new Map<number, number>();
  d.table.forEach((id) => {
    const state = CONN_STATE_NAMES[d.table.u32[id * REC_WORDS + R_STATE] & STATE_MASK];
    if (state === 'TIME_WAIT' || state === 'CLOSE') return;
    const daemon = d.table.u32[id * REC_WORDS + R_DAEMON_ID];
    expected.set(daemon, (expected.get(daemon) ?? 0) + 1);
  });
  for (const daemon of d.tree.daemonsById) if (daemon) assert.equal(d.balancer.activeFlows(daemon.id), expected.get(daemon.id) ?? 0, daemon.name);
}

describe('batches', () => {
  it('lists only forwarded packets, in order, in place; a record made early in a batch serves later packets', () => {
    // maxBatch 4: the seven packets go in two chunks.
    const d = new Dispatcher({ capacity: 64, maxBatch: 4 });
    d.configure(SPEC);
    const input = createBatch(8, 256);
    const output = createSiblingBatch(input);
    const packets = [
      tcp(T4.in, { flags: 'S' }),
      tcp(T4.in, { flags: 'A', seq: 1001 }), // same flow, same chunk: finds the record the SYN made
      SYN4.slice(0, 10),
      tcp(T6.in, { flags: 'A' }), // no record
      udp(U6.in),
      tcp(T4.in, { flags: 'SF' }),
      tcp(T4_SAME.in, { flags: 'S' }),
    ];
    packets.forEach((p, i) => {
      input.buffer.set(p, i * 256);
      input.offsets[i] = i * 256;
      input.lengths[i] = p.length;
      input.flags[i] = i << 5; // link bits no translation reads (above the offload ones), passed through untouched
    });
    input.count = packets.length;
    assert.equal(d.process(input, output, 1000), 4);
    assert.deepEqual(Array.from(output.offsets.subarray(0, 4)), [0, 256, 4 * 256, 6 * 256]);
    assert.deepEqual(Array.from(output.flags.subarray(0, 4)), [0, 1 << 5, 4 << 5, 6 << 5]);
    assert.deepEqual(Array.from(output.lengths.subarray(0, 4)), [packets[0].length, packets[1].length, packets[4].length, packets[6].length]);
    const outs = [0, 1, 4, 6].map((i) => describePacket(input.buffer.slice(i * 256, i * 256 + packets[i].length)));
    assert.deepEqual(outs.map((o) => `${o.dst} ${o.dstPort}`), ['198.18.2.1 8080', '198.18.2.1 8080', '2001:db8:2::3 5353', '198.18.2.2 8000']);
    assert.deepEqual(dropCounts(d), { truncated: 1, no_record: 1, bad_tcp_flags: 1 });
    assert.equal(d.table.size, 3);
    // An empty batch is fine too.
    input.count = 0;
    assert.equal(d.process(input, output, 1001), 0);
    assert.equal(output.count, 0);
  });

  it('never throws on arbitrary bytes, in batches or one by one', () => {
    const d = newDispatcher();
    const input = createBatch(16, 256);
    const output = createSiblingBatch(input);
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.uint8Array({ maxLength: 120 }), fc.constantFrom(SYN4, SA4, SYN6, SA6, udp(U4.in))), { maxLength: 16 }),
        fc.array(fc.nat(), { maxLength: 8 }), (packets, flips) => {
        packets.forEach((p, i) => {
          const q = p.slice();
          for (const f of flips) if (q.length > 0) q[f % q.length] ^= 1 << (f % 8);
          input.buffer.set(q.subarray(0, 256), i * 256);
          input.offsets[i] = i * 256;
          input.lengths[i] = Math.min(q.length, 256);
          assert.ok([VERDICT_DROP, VERDICT_FORWARD].includes(d.processPacket(q, 0, q.length, 0, 5)));
        });
        input.count = packets.length;
        const n = d.process(input, output, 6);
        assert.ok(n <= packets.length);
      }),
      { numRuns: 300 },
    );
    assert.ok(d.table.size <= d.table.capacity);
  });
});

// ---------------------------------------------------------------------------

describe('reconfiguration', () => {
  const PORT_SPEC = (daemons: { address: string; weight?: number }[], scheduler: SchedulerName = 'rr'): DispatchSpec => ({
    clusters: [{ address: V4, ports: [{ port: 80, protocol: 'tcp', scheduler, daemons }] }, SPEC.clusters[1]],
  });
  const A = '198.18.2.1:8080';
  const B = '198.18.2.2:8080';
  const C = '198.18.2.3:8080';

  /** 12 established flows over A and B; returns them with the daemon each got. */
  function setUp(): { d: Dispatcher; flows: { flow: TestFlow; daemon: string }[] } {
    const d = new Dispatcher({ capacity: 256, seed: 9 });
    d.configure(PORT_SPEC([{ address: A }, { address: B }]));
    const flows: { flow: TestFlow; daemon: string }[] = [];
    for (let i = 0; i < 12; i++) {
      const placeholder = ends(C4, 30000 + i, V4, 80, '0.0.0.0', 0);
      const flow = new TestFlow(d, placeholder);
      const r = flow.in('S');
      assert.equal(r.verdict, VERDICT_FORWARD);
      const daemon = `${r.out!.dst}:${r.out!.dstPort}`;
      const real = new TestFlow(d, ends(C4, 30000 + i, V4, 80, r.out!.dst, r.out!.dstPort));
      real.out('SA');
      real.in('A');
      assert.equal(real.state, 'ESTABLISHED');
      flows.push({ flow: real, daemon });
    }
    assert.deepEqual(new Set(flows.map((f) => f.daemon)), new Set([A, B]));
    return { d, flows };
  }

  function assertFlowsStay(flows: { flow: TestFlow; daemon: string }[]): void {
    for (const { flow, daemon } of flows) {
      const r = flow.in('PA', 'data');
      assert.equal(r.verdict, VERDICT_FORWARD);
      assert.equal(`${r.out!.dst}:${r.out!.dstPort}`, daemon, `flow from port ${flow.e.in.srcPort} moved`);
      const back = flow.out('PA', 'answer');
      assert.equal(back.verdict, VERDICT_FORWARD);
      assert.equal(`${back.out!.src}:${back.out!.srcPort}`, `${V4}:80`);
    }
  }

  /** Daemons that new SYNs from fresh client ports reach. */
  function newFlowsGoTo(d: Dispatcher, count: number): Set<string> {
    const seen = new Set<string>();
    for (let i = 0; i < count; i++) {
      const r = new TestFlow(d, ends('198.18.0.99', 20000 + i, V4, 80, '0.0.0.0', 0)).in('S');
      assert.equal(r.verdict, VERDICT_FORWARD);
      seen.add(`${r.out!.dst}:${r.out!.dstPort}`);
    }
    return seen;
  }

  const CHANGES: { description: string; spec: DispatchSpec; newFlows?: (seen: Set<string>) => void }[] = [
    { description: 'a daemon added', spec: PORT_SPEC([{ address: A }, { address: B }, { address: C }]), newFlows: (s) => assert.ok(s.has(C)) },
    { description: 'weights changed (B quiesced)', spec: PORT_SPEC([{ address: A, weight: 5 }, { address: B, weight: 0 }]), newFlows: (s) => assert.deepEqual(s, new Set([A])) },
    { description: 'the scheduler swapped to maglev', spec: PORT_SPEC([{ address: A }, { address: B }], 'maglev') },
    { description: 'the scheduler swapped to sh', spec: PORT_SPEC([{ address: A }, { address: B }], 'sh') },
    { description: 'the scheduler swapped to wlc with new weights', spec: PORT_SPEC([{ address: A, weight: 1 }, { address: B, weight: 9 }], 'wlc') },
    {
      description: 'all at once: reordered daemons, one added, weights and scheduler changed',
      spec: PORT_SPEC([{ address: C, weight: 3 }, { address: B, weight: 2 }, { address: A, weight: 1 }], 'random'),
    },
  ];

  for (const change of CHANGES) {
    it(`${change.description}: no existing flow moves, daemon ids and counters carry on`, () => {
      const { d, flows } = setUp();
      const idA = daemonByName(d, A).id;
      const before = d.balancer.stats.daemonCounters(idA);
      d.configure(change.spec);
      assert.equal(daemonByName(d, A).id, idA);
      assert.deepEqual(d.balancer.stats.daemonCounters(idA), before);
      assertFlowsStay(flows);
      change.newFlows?.(newFlowsGoTo(d, 30));
      assertFlowsStay(flows);
      checkActive(d);
    });
  }

  it('a removed daemon keeps its existing flows (both ways, to the end) but gets no new one', () => {
    const { d, flows } = setUp();
    const daemonA = daemonByName(d, A);
    d.configure(PORT_SPEC([{ address: B }]));
    assert.equal(daemonA.retired, true);
    assert.equal(d.tree.daemonsById[daemonA.id], daemonA, 'a retired daemon keeps its id');
    assertFlowsStay(flows);
    assert.deepEqual(newFlowsGoTo(d, 20), new Set([B]));
    const onA = flows.filter((f) => f.daemon === A);
    assert.ok(onA.length > 0);
    assert.equal(d.balancer.activeFlows(daemonA.id), onA.length);
    for (const { flow } of onA) for (const [direction, flags] of STATE_SEQUENCES[0].steps.slice(HANDSHAKE.length)) assert.equal(flow[direction](flags).verdict, VERDICT_FORWARD);
    assert.equal(d.balancer.activeFlows(daemonA.id), 0);
    collectAll(d, 1000 + DEFAULT_TIMEOUTS.timeWait * 1000);
    for (const { flow } of onA) assert.equal(flow.record, -1);
    assert.deepEqual(dropCounts(d), {});
    // Adding the endpoint again brings the same daemon back (same id, counters carry on).
    d.configure(PORT_SPEC([{ address: B }, { address: A }]));
    const again = d.tree.daemonsById.filter((x) => x.name === A && !x.retired);
    assert.equal(again.length, 1);
    assert.equal(again[0].id, daemonA.id);
    assert.equal(d.tree.daemonsById.filter((x) => x.name === A).length, 1, 'no second daemon under the same name');
    assert.deepEqual(newFlowsGoTo(d, 4), new Set([A, B]));
  });

  const BAD: { description: string; mutate: (spec: DispatchSpec) => void; path: string }[] = [
    {
      description: 'a duplicate daemon',
      mutate: (s) => { s.clusters[0].ports[0].daemons.push({ address: A }); },
      path: 'clusters[0].ports[0].daemons[3].address',
    },
    {
      description: 'an IPv6 daemon in an IPv4 cluster',
      mutate: (s) => { s.clusters[0].ports[0].daemons[1] = { address: '[2001:db8:2::9]:80' }; },
      path: 'clusters[0].ports[0].daemons[1].address',
    },
    { description: 'a negative weight', mutate: (s) => { s.clusters[0].ports[0].daemons[1].weight = -1; }, path: 'clusters[0].ports[0].daemons[1].weight' },
    { description: 'a fractional weight', mutate: (s) => { s.clusters[0].ports[0].daemons[2].weight = 1.5; }, path: 'clusters[0].ports[0].daemons[2].weight' },
    { description: 'a weight above the maximum', mutate: (s) => { s.clusters[0].ports[0].daemons[0].weight = 10001; }, path: 'clusters[0].ports[0].daemons[0].weight' },
    { description: 'a weight given as text', mutate: (s) => { (s.clusters[0].ports[0].daemons[0] as { weight: unknown }).weight = '2'; }, path: 'clusters[0].ports[0].daemons[0].weight' },
    { description: 'an unknown scheduler', mutate: (s) => { (s.clusters[0].ports[0] as { scheduler: string }).scheduler = 'lblc'; }, path: 'clusters[0].ports[0].scheduler' },
    { description: 'an unknown protocol', mutate: (s) => { (s.clusters[0].ports[0] as { protocol: string }).protocol = 'sctp'; }, path: 'clusters[0].ports[0].protocol' },
    { description: 'port 0', mutate: (s) => { s.clusters[1].ports[0].port = 0; }, path: 'clusters[1].ports[0].port' },
    { description: 'a port served twice', mutate: (s) => { s.clusters[1].ports.push({ port: 53, protocol: 'any', daemons: [] }); }, path: 'clusters[1].ports[4].port' },
    { description: 'a daemon without a port', mutate: (s) => { s.clusters[0].ports[0].daemons[0].address = '198.18.2.1'; }, path: 'clusters[0].ports[0].daemons[0].address' },
    { description: 'a cluster listed twice', mutate: (s) => { s.clusters.push({ address: '2001:db8:0::100', ports: [{ port: 1, daemons: [] }] }); }, path: 'clusters[2].address' },
    { description: 'a cluster address with a prefix', mutate: (s) => { s.clusters[1].address = '2001:db8::100/64'; }, path: 'clusters[1].address' },
    { description: 'a cluster with no ports', mutate: (s) => { s.clusters[1].ports = []; }, path: 'clusters[1].ports' },
  ];

  for (const bad of BAD) {
    it(`a spec with ${bad.description} throws ConfigError at ${bad.path} and changes nothing`, () => {
      const { d, flows } = setUp();
      const tree = d.tree;
      const daemonA = daemonByName(d, A);
      const daemonCount = d.tree.daemonsById.length;
      // Valid changes earlier in the spec (new weights, a new daemon, a new scheduler) must not leak either.
      const spec = structuredClone(PORT_SPEC([{ address: A, weight: 7 }, { address: B, weight: 0 }, { address: C }], 'maglev'));
      spec.clusters[1] = structuredClone(SPEC.clusters[1]);
      bad.mutate(spec);
      assert.throws(() => d.configure(spec), (e: unknown) => {
        assert.ok(e instanceof ConfigError, `threw ${String(e)}`);
        assert.equal(e.code, 'CONFIG_INVALID');
        assert.equal(e.path, bad.path);
        assert.ok(e.message.startsWith(`${bad.path}: `));
        return true;
      });
      assert.equal(d.tree, tree, 'the tree is the same object');
      assert.equal(daemonA.weight, 1);
      assert.equal(daemonA.retired, false);
      assert.equal(d.tree.daemonsById.length, daemonCount, 'no daemon was created');
      assert.equal(d.tree.portsById[0].scheduler, 'rr');
      assertFlowsStay(flows);
      // Scheduling is as before: rr over A and B, with both getting new flows.
      assert.deepEqual(newFlowsGoTo(d, 4), new Set([A, B]));
    });
  }
});

// ---------------------------------------------------------------------------

describe('a Balancer handed in (DispatcherOptions.balancer)', () => {
  it('is the one the dispatcher chooses daemons with and counts in, configured before the dispatcher existed', () => {
    const balancer = new Balancer({ seed: 5 });
    balancer.configure(SPEC);
    const d = new Dispatcher({ capacity: 64, balancer });
    assert.equal(d.balancer, balancer);
    assert.equal(d.tree, balancer.tree);
    const flow = new TestFlow(d, T4);
    const r = flow.in('S');
    assert.equal(r.verdict, VERDICT_FORWARD);
    assert.equal(`${r.out!.dst}:${r.out!.dstPort}`, '198.18.2.1:8080');
    assert.equal(balancer.activeFlows(flow.daemonId), 1);
    assert.equal(balancer.stats.forwardedIn, 1);
    // A configuration given to the dispatcher lands in the same Balancer.
    const tree = d.configure(SPEC);
    assert.equal(balancer.tree, tree);
    assert.equal(flow.out('SA').verdict, VERDICT_FORWARD);
    assert.equal(balancer.stats.forwardedOut, 1);
  });
});
