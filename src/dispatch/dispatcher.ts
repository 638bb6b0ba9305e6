// The TUN data plane's packet path: takes a batch of raw IP packets, tells
// inbound (to a cluster port) from outbound (a daemon's reply), translates each
// in place and lists what to send on in an output batch. Parsing and
// classification live here; Figure 8 is inbound.ts, Figure 9 outbound.ts.
// Time comes in as a number (ms); nothing here reads a clock or a device.

import type { PacketBatch } from '../link/link.js';
import { PACKET_FLAG_PARTIAL_CSUM } from '../link/link.js';
import { IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_TCP, IP_PROTO_UDP, Ipv4Packet } from '../wire/ipv4.js';
import { Ipv6Packet } from '../wire/ipv6.js';
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpPacket } from '../wire/tcp.js';
import { UdpPacket } from '../wire/udp.js';
import { WireError } from '../wire/wire-error.js';
import { Balancer, type BalancerOptions } from './balancer.js';
import type { ConfigTree, DispatchSpec } from './config-tree.js';
import {
  ConnTable, LIST_CLOSED, LOOKUP_FORWARD, LOOKUP_NONE, LOOKUP_REVERSE, REC_WORDS, RemoveReason, RF_EXPIRES, R_DAEMON_ID,
  R_META, R_STATE,
} from './conn-table.js';
import { Drop } from './drop-reason.js';
import { createFlowKey, FLOW_KEY_WORDS, hashFlowKey, KEY_ADDR_B, KEY_PORTS } from './flow-hash.js';
import { translateInbound } from './inbound.js';
import { translateOutbound } from './outbound.js';
import { ConnState, DEFAULT_TIMEOUTS, FLAG_ACTIVE, FLAG_RESET, STATE_MASK, timeoutTable, type Timeouts } from './tcp-state.js';

export const VERDICT_DROP = 0;
export const VERDICT_FORWARD = 1;

export interface DispatcherOptions extends BalancerOptions {
  /** Most connection records held at once. */
  capacity: number;
  /** Per-state timeouts in seconds; missing ones take DEFAULT_TIMEOUTS. */
  timeouts?: Partial<Timeouts>;
  /** Seeds the flow hash (a fixed seed keeps consistent hashing stable across restarts). */
  hashSeed?: number;
  /** Allocator for the connection table's large buffers (zeroed); see ConnTable. */
  allocate?: (bytes: number) => ArrayBuffer;
  /** Packets process() handles per pass (larger batches go in chunks). Default 256. */
  maxBatch?: number;
}

export class Dispatcher {
  readonly table: ConnTable;
  /**
   * Called as each record leaves the table, while its fields are readable
   * (connection logs). Control path sets it; null costs nothing.
   */
  connectionEnded: ((id: number, reason: RemoveReason) => void) | null = null;
  readonly balancer: Balancer;
  /** Timeout per ConnState in ms. */
  timeouts: Float64Array;
  readonly timeoutSeconds: Timeouts;

  // Reusable views and scratch: nothing below is allocated per packet.
  readonly ip4 = new Ipv4Packet();
  readonly ip6 = new Ipv6Packet();
  readonly tcp = new TcpPacket();
  readonly udp = new UdpPacket();
  /** Flow key of the packet being processed, in forward or reverse form. */
  readonly key = createFlowKey();

  // The packet being processed, as parsed by classify().
  family = 0;
  ipOff = 0;
  /** Bytes of the IP packet (without link padding), for byte counters. */
  ipLen = 0;
  l4Off = 0;
  protocol = 0;
  srcPort = 0;
  dstPort = 0;
  tcpFlags = 0;
  partial = false;

  // Per-packet scratch of one chunk in process(), sized for maxBatch packets:
  // what classify() found, kept from the parse pass to the translate pass.
  readonly maxBatch: number;
  private readonly slotLookup: Uint8Array;
  private readonly slotPortId: Int32Array;
  private readonly slotHash: Int32Array;
  private readonly slotKey: Uint32Array;
  private readonly slotFamily: Uint8Array;
  private readonly slotProtocol: Uint8Array;
  private readonly slotTcpFlags: Uint8Array;
  private readonly slotIpOff: Uint32Array;
  private readonly slotIpLen: Uint32Array;
  private readonly slotL4Off: Uint32Array;

  constructor(options: DispatcherOptions) {
    this.table = new ConnTable(options.capacity, options.hashSeed, options.allocate);
    this.balancer = new Balancer(options);
    this.timeoutSeconds = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.timeouts = timeoutTable(this.timeoutSeconds);
    const max = options.maxBatch ?? 256;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maxBatch must be a positive integer, got ${max}`);
    this.maxBatch = max;
    this.slotLookup = new Uint8Array(max);
    this.slotPortId = new Int32Array(max);
    this.slotHash = new Int32Array(max);
    this.slotKey = new Uint32Array(max * FLOW_KEY_WORDS);
    this.slotFamily = new Uint8Array(max);
    this.slotProtocol = new Uint8Array(max);
    this.slotTcpFlags = new Uint8Array(max);
    this.slotIpOff = new Uint32Array(max);
    this.slotIpLen = new Uint32Array(max);
    this.slotL4Off = new Uint32Array(max);
    this.table.setListener({ recordRemoved: (id: number, reason: RemoveReason) => this.recordRemoved(id, reason) });
  }

  get tree(): ConfigTree {
    return this.balancer.tree;
  }

  /** Control path: see Balancer.configure. Throws ConfigError and changes nothing on a bad spec. */
  configure(spec: DispatchSpec): ConfigTree {
    return this.balancer.configure(spec);
  }

  /** Control path: new timeouts apply to each record at its next packet. */
  setTimeouts(timeouts: Partial<Timeouts>): void {
    const merged = { ...this.timeoutSeconds, ...timeouts };
    this.timeouts = timeoutTable(merged);
    Object.assign(this.timeoutSeconds, merged);
  }

  /**
   * Translates every packet of `input` in place and lists the ones to send in
   * `output` (which must share input's buffer; see createSiblingBatch).
   * Dropped packets are counted and left out. Returns output.count.
   * Any batch size works; it is handled in chunks of `maxBatch` packets.
   */
  process(input: PacketBatch, output: PacketBatch, now: number): number {
    let n = 0;
    for (let start = 0; start < input.count; start += this.maxBatch) {
      n = this.processChunk(input, start, Math.min(input.count, start + this.maxBatch), output, n, now);
    }
    output.count = n;
    return n;
  }

  /**
   * Packets [start, end) of `input`, in three passes: parse every packet into
   * the slot scratch, let the table pull in every index slot and record the
   * chunk will look up, then translate each packet in order. Appends the
   * forwarded ones to `output` from position `n`; returns the new position.
   */
  private processChunk(input: PacketBatch, start: number, end: number, output: PacketBatch, n: number, now: number): number {
    const buf = input.buffer;
    const count = end - start;
    const tree = this.balancer.tree;
    const key = this.key;
    const slotKey = this.slotKey;
    const seed = this.table.seed;
    for (let i = 0; i < count; i++) {
      const reason = this.classify(buf, input.offsets[start + i], input.lengths[start + i]);
      if (reason !== 0) {
        this.balancer.stats.drop(reason);
        this.slotLookup[i] = LOOKUP_NONE;
        continue;
      }
      const port = tree.findPort(this.family, key, KEY_ADDR_B, this.protocol, this.dstPort);
      this.slotLookup[i] = port === undefined ? LOOKUP_REVERSE : LOOKUP_FORWARD;
      this.slotPortId[i] = port === undefined ? -1 : port.id;
      // Both directions hash the key as parsed: a reply's forward-form key is already its reverse key.
      this.slotHash[i] = hashFlowKey(key, seed);
      this.slotFamily[i] = this.family;
      this.slotProtocol[i] = this.protocol;
      this.slotTcpFlags[i] = this.tcpFlags;
      this.slotIpOff[i] = this.ipOff;
      this.slotIpLen[i] = this.ipLen;
      this.slotL4Off[i] = this.l4Off;
      const k = i * FLOW_KEY_WORDS;
      for (let w = 0; w < FLOW_KEY_WORDS; w++) slotKey[k + w] = key[w];
    }

    this.table.prefetch(this.slotHash, this.slotLookup, count);

    for (let i = 0; i < count; i++) {
      const lookup = this.slotLookup[i];
      if (lookup === LOOKUP_NONE) continue;
      const flags = input.flags[start + i];
      this.partial = (flags & PACKET_FLAG_PARTIAL_CSUM) !== 0;
      this.family = this.slotFamily[i];
      this.protocol = this.slotProtocol[i];
      this.tcpFlags = this.slotTcpFlags[i];
      this.ipOff = this.slotIpOff[i];
      this.ipLen = this.slotIpLen[i];
      this.l4Off = this.slotL4Off[i];
      const k = i * FLOW_KEY_WORDS;
      for (let w = 0; w < FLOW_KEY_WORDS; w++) key[w] = slotKey[k + w];
      this.srcPort = key[KEY_PORTS] >>> 16;
      this.dstPort = key[KEY_PORTS] & 0xffff;
      const hash = this.slotHash[i] >>> 0;
      const verdict = lookup === LOOKUP_FORWARD
        ? translateInbound(this, tree.portsById[this.slotPortId[i]], buf, now, hash)
        : translateOutbound(this, buf, now, hash);
      if (verdict === VERDICT_FORWARD) {
        output.offsets[n] = this.ipOff;
        output.lengths[n] = this.ipLen;
        output.flags[n] = flags;
        n++;
      }
    }
    return n;
  }

  /** One packet at `buf[off, off + len)`: rewrites it in place and returns a verdict. Never throws. */
  processPacket(buf: Uint8Array, off: number, len: number, linkFlags: number, now: number): number {
    this.partial = (linkFlags & PACKET_FLAG_PARTIAL_CSUM) !== 0;
    const reason = this.classify(buf, off, len);
    if (reason !== 0) {
      this.balancer.stats.drop(reason);
      return VERDICT_DROP;
    }
    const key = this.key;
    const port = this.balancer.tree.findPort(this.family, key, KEY_ADDR_B, this.protocol, this.dstPort);
    const hash = hashFlowKey(key, this.table.seed);
    if (port !== undefined) return translateInbound(this, port, buf, now, hash);
    return translateOutbound(this, buf, now, hash);
  }

  /** Removes expired records: at most `budget` of them, in bounded work. Returns how many. */
  collect(now: number, budget: number): number {
    return this.table.collect(now, budget);
  }

  /**
   * Control path: ends every flow of daemon `daemonId` now. TCP records are
   * marked to be reset (each end gets a RST the next time it sends, see
   * reset.ts) and kept for the close timeout; UDP records are removed.
   * Returns how many flows it ended. Scans the whole table.
   */
  resetDaemonFlows(daemonId: number, now: number): number {
    const u32 = this.table.u32;
    const f64 = this.table.f64;
    let ended = 0;
    this.table.forEach((id) => {
      const b = id * REC_WORDS;
      if (u32[b + R_DAEMON_ID] !== daemonId) return;
      ended++;
      if (((u32[b + R_META] >>> 8) & 0xff) !== IP_PROTO_TCP) {
        this.table.remove(id, RemoveReason.Flushed);
        return;
      }
      const word = u32[b + R_STATE];
      if (word & FLAG_ACTIVE) this.balancer.flowEnded(daemonId);
      u32[b + R_STATE] = ((word & ~(FLAG_ACTIVE | STATE_MASK)) | ConnState.Close | FLAG_RESET) >>> 0;
      f64[id * (REC_WORDS / 2) + RF_EXPIRES] = now + this.timeouts[ConnState.Close];
      this.table.setList(id, LIST_CLOSED);
    });
    return ended;
  }

  /**
   * Parses the packet into this object's fields and fills `key` in forward
   * form [src, dst, srcPort<<16|dstPort, proto<<8|family]. Returns 0, or the
   * drop reason.
   */
  private classify(buf: Uint8Array, off: number, len: number): number {
    if (len < 1) return WireError.Truncated;
    const version = buf[off] >>> 4;
    const key = this.key;
    let l4Len: number;
    if (version === 4) {
      const ip = this.ip4;
      const err = ip.wrap(buf, off, len);
      if (err !== WireError.None) return err;
      if (!ip.verifyChecksum()) return WireError.BadChecksum;
      // Fragments need a fragment table to follow their first piece (not built yet).
      if (ip.isFragment) return Drop.Fragment;
      this.family = 4;
      this.protocol = ip.protocol;
      this.ipLen = ip.totalLen;
      this.l4Off = ip.payloadOffset;
      l4Len = ip.totalLen - ip.headerLen;
      key[0] = ip.srcAddr; key[1] = 0; key[2] = 0; key[3] = 0;
      key[4] = ip.dstAddr; key[5] = 0; key[6] = 0; key[7] = 0;
    } else if (version === 6) {
      const ip = this.ip6;
      const err = ip.wrap(buf, off, len);
      if (err !== WireError.None) return err;
      if (ip.isFragment) return Drop.Fragment;
      this.family = 6;
      this.protocol = ip.transportProtocol;
      this.ipLen = 40 + ip.payloadLen;
      this.l4Off = ip.transportOffset;
      l4Len = ip.transportLen;
      const s = off + 8;
      for (let w = 0; w < 8; w++) {
        const o = s + 4 * w;
        key[w] = ((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) >>> 0;
      }
    } else {
      return WireError.BadVersion;
    }
    this.ipOff = off;

    if (this.protocol === IP_PROTO_TCP) {
      const tcp = this.tcp;
      const err = tcp.wrap(buf, this.l4Off, l4Len);
      if (err !== WireError.None) return err;
      const flags = tcp.flags;
      // RFC 9293 allows none of these: scans and attacks, never a real stack.
      if ((flags & (TCP_SYN | TCP_FIN)) === (TCP_SYN | TCP_FIN) || (flags & (TCP_SYN | TCP_RST)) === (TCP_SYN | TCP_RST) ||
          (flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK_FLAG)) === 0 ||
          (flags & (TCP_FIN | TCP_PSH | TCP_URG)) === (TCP_FIN | TCP_PSH | TCP_URG)) {
        return Drop.BadTcpFlags;
      }
      this.tcpFlags = flags;
      this.srcPort = tcp.srcPort;
      this.dstPort = tcp.dstPort;
    } else if (this.protocol === IP_PROTO_UDP) {
      const udp = this.udp;
      const err = udp.wrap(buf, this.l4Off, l4Len);
      if (err !== WireError.None) return err;
      this.tcpFlags = 0;
      this.srcPort = udp.srcPort;
      this.dstPort = udp.dstPort;
    } else if (this.protocol === (this.family === 4 ? IP_PROTO_ICMP : IP_PROTO_ICMPV6)) {
      return Drop.Icmp;
    } else {
      return Drop.UnknownProtocol;
    }
    key[8] = ((this.srcPort << 16) | this.dstPort) >>> 0;
    key[9] = (this.protocol << 8) | this.family;
    return 0;
  }

  private recordRemoved(id: number, reason: RemoveReason): void {
    const b = id * REC_WORDS;
    const u32 = this.table.u32;
    if (u32[b + R_STATE] & FLAG_ACTIVE) this.balancer.flowEnded(u32[b + R_DAEMON_ID]);
    if (this.connectionEnded !== null) this.connectionEnded(id, reason);
  }
}
