// The TUN data plane's packet path: takes a batch of raw IP packets, tells
// inbound (to a cluster port) from outbound (a daemon's reply), translates each
// in place and lists what to send on in an output batch. Parsing and
// classification live here; Figure 8 is inbound.ts, Figure 9 outbound.ts.
// Time comes in as a number (ms); nothing here reads a clock or a device.

import type { PacketBatch } from '../link/link.js';
import { PACKET_FLAG_BAD_VNET, PACKET_FLAG_GSO, PACKET_FLAG_PARTIAL_CSUM, PACKET_FLAGS_OFFLOAD } from '../link/link.js';
import {
  IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_TCP, IP_PROTO_UDP, IPV4_DST_ADDR, IPV4_FLAGS_FRAG, IPV4_HEADER_LEN, IPV4_PROTOCOL,
  IPV4_SRC_ADDR, Ipv4Packet, verifyIpv4HeaderChecksum,
} from '../wire/ipv4.js';
import { Ipv6Packet } from '../wire/ipv6.js';
import {
  TCP_ACK_FLAG, TCP_DATA_OFFSET, TCP_DST_PORT, TCP_FIN, TCP_FLAGS, TCP_PSH, TCP_RST, TCP_SRC_PORT, TCP_SYN, TCP_URG, TcpPacket,
} from '../wire/tcp.js';
import { IcmpPacket } from '../wire/icmp.js';
import { UdpPacket } from '../wire/udp.js';
import { WireError } from '../wire/wire-error.js';
import { Balancer, type BalancerOptions } from './balancer.js';
import type { ConfigTree, DispatchSpec } from './config-tree.js';
import {
  ConnTable, LIST_CLOSED, LOOKUP_FORWARD, LOOKUP_NONE, LOOKUP_REVERSE, REC_F64, REC_WORDS, RemoveReason, RF_BYTES_IN, RF_BYTES_OUT,
  RF_CREATED, RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_PACKETS_OUT, R_ACK_OUT, R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_PORTS,
  R_STATE,
} from './conn-table.js';
import { Drop } from './drop-reason.js';
import { createFlowKey, FLOW_KEY_WORDS, hashFlowKey, hashV4Key, KEY_ADDR_B, KEY_PORTS } from './flow-hash.js';
import { applyComplete, delta32 } from '../wire/checksum.js';
import { FRAG_KEY_WORDS, FragmentTable } from './fragments.js';
import { translateIcmp } from './icmp-translate.js';
import { translateInbound } from './inbound.js';
import { translateOutbound } from './outbound.js';
import { offloadFits, segmentCount, segmentHeaderBytes } from './offload.js';
import { rewriteV4Tcp } from './rewrite.js';
import { D_BYTES_IN, D_BYTES_OUT, D_PACKETS_IN, D_PACKETS_OUT, DAEMON_COLUMNS } from './stats.js';
import { ConnState, DEFAULT_TIMEOUTS, FLAG_ACTIVE, FLAG_RESET, STATE_MASK, timeoutTable, type Timeouts } from './tcp-state.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';

/** protocol << 8 | family of an IPv4 TCP flow key (KEY_PROTO_FAMILY). */
const V4_TCP = (IP_PROTO_TCP << 8) | 4;
// What the parse pass of process() made of a packet (slotKind).
/** Dropped while parsing (already counted). */
const SLOT_DROPPED = 0;
/** Parsed by classify(): its fields are in the slot* scratch, key in slotKey. */
const SLOT_GENERIC = 1;
/** IPv4 without options carrying TCP: src, dst and ports in slotSrc/slotDst/slotPorts, key not filled. */
const SLOT_V4_TCP = 2;
/** ICMP or ICMPv6: ipOff, ipLen, family and l4Off kept; translated by icmp-translate.ts. */
const SLOT_ICMP = 3;
/** A fragment, translated through processOne() at its turn (the fragment table decides). */
const SLOT_FRAGMENT = 4;
/** classify()'s answer for ICMP: no flow key; icmp-translate.ts takes it from here. */
const CLASSIFY_ICMP = -1;
/** classify()'s answer for a fragment: addresses and fragment fields set; translateFragment() takes it. */
const CLASSIFY_FRAGMENT = -2;

/** False for flag sets RFC 9293 allows none of: scans and attacks, never a real stack. */
function tcpFlagsAllowed(flags: number): boolean {
  return (flags & (TCP_SYN | TCP_FIN)) !== (TCP_SYN | TCP_FIN) && (flags & (TCP_SYN | TCP_RST)) !== (TCP_SYN | TCP_RST) &&
    (flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK_FLAG)) !== 0 &&
    (flags & (TCP_FIN | TCP_PSH | TCP_URG)) !== (TCP_FIN | TCP_PSH | TCP_URG);
}

/**
 * Bytes from `off` to the end of the batch slot that holds it: the room an
 * answer longer than its question may take. A packet need not start its slot
 * (a link header before it, a test), so slotSize alone would run past the slot.
 */
function slotRoom(input: PacketBatch, off: number): number {
  return Math.min(input.slotSize - (off % input.slotSize), input.buffer.length - off);
}

/** Slot hash of the dispatcher's IPv4 cluster-port table (addr and protoPort as int32). */
function v4PortHash(addr: number, protoPort: number): number {
  const h = Math.imul(addr ^ Math.imul(protoPort, 0x9e3779b1), 0x85ebca6b);
  return h ^ (h >>> 15);
}

export interface DispatcherOptions extends BalancerOptions {
  /** Most connection records held at once. */
  capacity: number;
  /** Per-state timeouts in seconds; missing ones take DEFAULT_TIMEOUTS. */
  timeouts?: Partial<Timeouts>;
  /** Seeds the flow hash (a fixed seed keeps consistent hashing stable across restarts). */
  hashSeed?: number;
  /**
   * Hand back unchanged a daemon's packet that belongs to no dispatched flow
   * (a direct connection to the daemon, e.g. a health probe) instead of
   * dropping it as no_record_out. The TUN data plane turns this on.
   */
  passUnmatchedReplies?: boolean;
  /** Allocator for the connection table's large buffers (zeroed); see ConnTable. */
  allocate?: (bytes: number) => ArrayBuffer;
  /** Packets process() handles per pass (larger batches go in chunks). Default 256. */
  maxBatch?: number;
  /**
   * The Balancer to choose daemons and count flows with, built by the caller
   * (so an instance can build one and hand it to its data plane). Without it
   * the Dispatcher builds its own from `seed` and `maglevTableSize`, which are
   * ignored when it is given.
   */
  balancer?: Balancer;
}

/** The TUN data plane's dispatcher; the translators see it as a TranslateContext. */
export class Dispatcher implements TranslateContext {
  readonly table: ConnTable;
  readonly passUnmatchedReplies: boolean;
  /**
   * Called as each record leaves the table, while its fields are readable
   * (connection logs). Control path sets it; null costs nothing.
   */
  connectionEnded: ((id: number, reason: RemoveReason) => void) | null = null;
  readonly balancer: Balancer;
  /** Timeout per ConnState in ms. */
  timeouts: Float64Array;
  readonly timeoutSeconds: Timeouts;
  readonly fragments = new FragmentTable();

  // Reusable views and scratch: nothing below is allocated per packet.
  readonly ip4 = new Ipv4Packet();
  readonly ip6 = new Ipv6Packet();
  readonly tcp = new TcpPacket();
  readonly udp = new UdpPacket();
  readonly icmp = new IcmpPacket();
  /** Flow key of the packet being processed, in forward or reverse form. */
  readonly key = createFlowKey();
  /** Fragment key of the fragment being processed (see FragmentTable). */
  private readonly fragKey = new Uint32Array(FRAG_KEY_WORDS);

  // The packet being processed, as parsed by classify() (TranslateContext says
  // what each field the translators read holds).
  family = 0;
  ipOff = 0;
  /** Bytes of the IP packet (without link padding), for byte counters. */
  ipLen = 0;
  /** Bytes the packet may grow to in place (its slot), for answers longer than the question. */
  room = 0;
  /** Fragment offset in bytes of the packet being processed, or -1 when it is not a fragment. */
  fragOffset = -1;
  fragIdent = 0;
  /** The record the last forwarded packet belonged to (inbound.ts and outbound.ts set it). */
  lastRecordId = -1;
  l4Off = 0;
  protocol = 0;
  srcPort = 0;
  dstPort = 0;
  tcpFlags = 0;
  partial = false;
  /** Segments the packet carries: 1, or a super-packet's count (offload.ts). */
  segments = 1;
  /** Bytes its segments carry on the wire: ipLen, plus the repeated headers of a super-packet's other segments. */
  wireBytes = 0;
  /** The link flags it goes out with: its own, or 0 once a translator made it an answer. */
  offloadFlags = 0;

  // Per-packet scratch of one chunk in process(), sized for maxBatch packets:
  // what the parse pass found (slotKind says which fields hold it), kept for
  // the translate pass. IPv4 TCP keeps its tuple as three int32 numbers
  // (slotSrc/Dst/Ports) instead of a 10-word key: uint32 values above 2^31
  // would be boxed wherever they cross a call that is not inlined.
  readonly maxBatch: number;
  private readonly slotKind: Uint8Array;
  private readonly slotSrc: Int32Array;
  private readonly slotDst: Int32Array;
  private readonly slotPorts: Int32Array;
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

  // IPv4 cluster ports of `indexedTree` in an open-addressing table of int32
  // triples [address, protocol << 16 | port, port id + 1]: rebuilt when the
  // tree is replaced, so the parse pass needs no Map lookups (two per packet
  // in ConfigTree.findPort).
  private indexedTree: ConfigTree | null = null;
  private v4Ports = new Int32Array(4);
  private v4PortsMask = 0;

  constructor(options: DispatcherOptions) {
    this.table = new ConnTable(options.capacity, options.hashSeed, options.allocate);
    this.passUnmatchedReplies = options.passUnmatchedReplies === true;
    this.balancer = options.balancer ?? new Balancer(options);
    this.timeoutSeconds = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.timeouts = timeoutTable(this.timeoutSeconds);
    const max = options.maxBatch ?? 256;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maxBatch must be a positive integer, got ${max}`);
    this.maxBatch = max;
    this.slotKind = new Uint8Array(max);
    this.slotSrc = new Int32Array(max);
    this.slotDst = new Int32Array(max);
    this.slotPorts = new Int32Array(max);
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

  /**
   * Control path: the daemon ids the table's records name. Records that
   * outlive their daemon's last active flow (TIME_WAIT, a half-closed flow)
   * keep its id taken (Balancer.releaseRetired). One pass over the table.
   */
  daemonsNamed(): Set<number> {
    const named = new Set<number>();
    const u32 = this.table.u32;
    this.table.forEach((id) => {
      named.add(u32[id * REC_WORDS + R_DAEMON_ID]);
    });
    return named;
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
    const count = end - start;
    this.parseChunk(input, start, count);
    this.table.prefetch(this.slotHash, this.slotLookup, count);
    return this.translateChunk(input, start, count, output, n, now);
  }

  /**
   * Pass 1 of processChunk(): fills the slot scratch for packets [start,
   * start + count) and counts the ones dropped while parsing.
   *
   * IPv4 without options carrying TCP (nearly every packet) is read straight
   * from the bytes, accepting exactly what classify() accepts; anything else,
   * or any check failing, goes through classify(), which also names the drop
   * reason. bench:core, 10,000 flows: the view getters (not always inlined:
   * `get totalLen` showed as its own 5% frame) plus copying the 10-word key
   * into scratch and back cost ~60 ns of ~280 per packet.
   */
  private parseChunk(input: PacketBatch, start: number, count: number): void {
    const buf = input.buffer;
    const bufLen = buf.length;
    const offsets = input.offsets;
    const lengths = input.lengths;
    const seed = this.table.seed | 0;
    const tree = this.balancer.tree;
    if (tree !== this.indexedTree) this.indexV4Ports(tree);
    const slotKind = this.slotKind;
    const slotLookup = this.slotLookup;
    const slotPortId = this.slotPortId;
    const slotHash = this.slotHash;
    const slotIpOff = this.slotIpOff;
    const slotIpLen = this.slotIpLen;
    const slotTcpFlags = this.slotTcpFlags;
    const linkFlags = input.flags;
    for (let i = 0; i < count; i++) {
      const off = offsets[start + i];
      const len = lengths[start + i];
      if (len >= 40 && off + len <= bufLen && buf[off] === 0x45) {
        const totalLen = (buf[off + 2] << 8) | buf[off + 3];
        const l4 = off + IPV4_HEADER_LEN;
        const tcpFlags = buf[l4 + TCP_FLAGS];
        if (totalLen >= 40 && totalLen <= len && buf[off + IPV4_PROTOCOL] === IP_PROTO_TCP &&
            // Not a fragment: MF clear and fragment offset 0.
            ((buf[off + IPV4_FLAGS_FRAG] & 0x3f) | buf[off + IPV4_FLAGS_FRAG + 1]) === 0 &&
            buf[l4 + TCP_DATA_OFFSET] >= 0x50 && (buf[l4 + TCP_DATA_OFFSET] >>> 4) << 2 <= totalLen - IPV4_HEADER_LEN &&
            tcpFlagsAllowed(tcpFlags) && verifyIpv4HeaderChecksum(buf, off)) {
          const src = (buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15];
          const dst = (buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19];
          const ports = (buf[l4] << 24) | (buf[l4 + 1] << 16) | (buf[l4 + 2] << 8) | buf[l4 + 3];
          const portId = this.findV4Port(dst, (IP_PROTO_TCP << 16) | (ports & 0xffff));
          slotKind[i] = SLOT_V4_TCP;
          slotLookup[i] = portId < 0 ? LOOKUP_REVERSE : LOOKUP_FORWARD;
          slotPortId[i] = portId;
          slotHash[i] = hashV4Key(src, dst, ports, V4_TCP, seed);
          this.slotSrc[i] = src;
          this.slotDst[i] = dst;
          this.slotPorts[i] = ports;
          slotIpOff[i] = off;
          slotIpLen[i] = totalLen;
          slotTcpFlags[i] = tcpFlags;
          if (linkFlags[start + i] !== 0) this.checkOffload(input, start, i);
          continue;
        }
      }
      this.parseGeneric(buf, off, len, i, tree, seed);
      if (linkFlags[start + i] !== 0) this.checkOffload(input, start, i);
    }
  }

  /**
   * Drops (Drop.BadOffload) slot `i` when its virtio-net header does not fit
   * what parsing found (offload.ts): checked before anything is looked up or
   * counted for it. Only packets read with offloads on get here.
   */
  private checkOffload(input: PacketBatch, start: number, i: number): void {
    const flags = input.flags[start + i];
    if ((flags & PACKET_FLAGS_OFFLOAD) === 0) return;
    const kind = this.slotKind[i];
    if (kind === SLOT_DROPPED) return;
    const fits = kind === SLOT_V4_TCP
      ? offloadFits(flags, 4, IP_PROTO_TCP, IPV4_HEADER_LEN, input.csumAt[start + i])
      : kind === SLOT_GENERIC &&
        offloadFits(flags, this.slotFamily[i], this.slotProtocol[i], this.slotL4Off[i] - this.slotIpOff[i], input.csumAt[start + i]);
    if (fits) {
      if ((flags & PACKET_FLAG_GSO) !== 0) this.balancer.stats.superPackets++;
      return;
    }
    this.balancer.stats.drop(Drop.BadOffload);
    this.slotKind[i] = SLOT_DROPPED;
    this.slotLookup[i] = LOOKUP_NONE;
  }

  /** parseChunk() for a packet off the common path: classify() it into slot `i`. */
  private parseGeneric(buf: Uint8Array, off: number, len: number, i: number, tree: ConfigTree, seed: number): void {
    const reason = this.classify(buf, off, len);
    if (reason === CLASSIFY_FRAGMENT) {
      this.slotKind[i] = SLOT_FRAGMENT;
      this.slotLookup[i] = LOOKUP_NONE;
      this.slotIpOff[i] = off;
      this.slotIpLen[i] = len;
      return;
    }
    if (reason === CLASSIFY_ICMP) {
      this.slotKind[i] = SLOT_ICMP;
      this.slotLookup[i] = LOOKUP_NONE;
      this.slotFamily[i] = this.family;
      this.slotProtocol[i] = this.protocol;
      this.slotIpOff[i] = this.ipOff;
      this.slotIpLen[i] = this.ipLen;
      this.slotL4Off[i] = this.l4Off;
      return;
    }
    if (reason !== 0) {
      this.balancer.stats.drop(reason);
      this.slotKind[i] = SLOT_DROPPED;
      this.slotLookup[i] = LOOKUP_NONE;
      return;
    }
    const key = this.key;
    const port = tree.findPort(this.family, key, KEY_ADDR_B, this.protocol, this.dstPort);
    this.slotKind[i] = SLOT_GENERIC;
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
    for (let w = 0; w < FLOW_KEY_WORDS; w++) this.slotKey[k + w] = key[w];
  }

  /**
   * Pass 3 of processChunk(). A data segment (no SYN, FIN or RST) of an
   * ESTABLISHED IPv4 TCP flow, not marked for reset and not expired, is
   * translated here: for it translateInbound/Outbound would leave the state
   * word alone and only count and rewrite, which this does with the same
   * results. Every other packet goes through them (translateSlot).
   */
  private translateChunk(input: PacketBatch, start: number, count: number, output: PacketBatch, n: number, now: number): number {
    const buf = input.buffer;
    const table = this.table;
    const u32 = table.u32;
    const f64 = table.f64;
    const stats = this.balancer.stats;
    const expiresAt = now + this.timeouts[ConnState.Established];
    const slotKind = this.slotKind;
    const slotLookup = this.slotLookup;
    const slotIpOff = this.slotIpOff;
    const slotIpLen = this.slotIpLen;
    const outOffsets = output.offsets;
    const outLengths = output.lengths;
    const outFlags = output.flags;
    let forwardedIn = 0;
    let forwardedOut = 0;
    for (let i = 0; i < count; i++) {
      const kind = slotKind[i];
      if (kind === SLOT_DROPPED) continue;
      const linkFlags = input.flags[start + i];
      const partial = (linkFlags & PACKET_FLAG_PARTIAL_CSUM) !== 0;
      if (kind === SLOT_V4_TCP && (this.slotTcpFlags[i] & (TCP_SYN | TCP_FIN | TCP_RST)) === 0) {
        const inbound = slotLookup[i] === LOOKUP_FORWARD;
        const id = inbound
          ? table.findForwardV4(this.slotSrc[i], this.slotDst[i], this.slotPorts[i], V4_TCP, this.slotHash[i])
          : table.findReverseV4(this.slotSrc[i], this.slotDst[i], this.slotPorts[i], V4_TCP, this.slotHash[i]);
        if (id >= 0 && (u32[id * REC_WORDS + R_STATE] & (STATE_MASK | FLAG_RESET)) === ConnState.Established &&
            f64[id * REC_F64 + RF_EXPIRES] > now) {
          const b = id * REC_WORDS;
          const f = id * REC_F64;
          const ipOff = slotIpOff[i];
          const ipLen = slotIpLen[i];
          let segments = 1;
          let bytes = ipLen;
          if ((linkFlags & PACKET_FLAG_GSO) !== 0) {
            const headers = segmentHeaderBytes(buf, ipOff, ipOff + IPV4_HEADER_LEN, IP_PROTO_TCP);
            segments = segmentCount(ipLen, headers, input.gsoSizes[start + i]);
            bytes += (segments - 1) * headers;
          }
          const daemonStats = stats.daemon;
          const at = u32[b + R_DAEMON_ID] * DAEMON_COLUMNS;
          f64[f + RF_EXPIRES] = expiresAt;
          f64[f + RF_LAST_SEEN] = now;
          if (inbound) {
            f64[f + RF_PACKETS_IN] += segments;
            f64[f + RF_BYTES_IN] += bytes;
            daemonStats[at + D_PACKETS_IN] += segments;
            daemonStats[at + D_BYTES_IN] += bytes;
            forwardedIn++;
            rewriteV4Tcp(buf, ipOff, IPV4_DST_ADDR, u32[b + R_DAEMON_ADDR] | 0, TCP_DST_PORT, u32[b + R_META] >>> 16, partial);
          } else {
            f64[f + RF_PACKETS_OUT] += segments;
            f64[f + RF_BYTES_OUT] += bytes;
            daemonStats[at + D_PACKETS_OUT] += segments;
            daemonStats[at + D_BYTES_OUT] += bytes;
            forwardedOut++;
            // The daemon's acknowledgment: the window a client-side RST must fall in (inbound.ts).
            const ackAt = ipOff + IPV4_HEADER_LEN + 8;
            u32[b + R_ACK_OUT] = ((buf[ackAt] << 24) | (buf[ackAt + 1] << 16) | (buf[ackAt + 2] << 8) | buf[ackAt + 3]) >>> 0;
            rewriteV4Tcp(buf, ipOff, IPV4_SRC_ADDR, u32[b + R_CLUSTER_ADDR] | 0, TCP_SRC_PORT, u32[b + R_PORTS] & 0xffff, partial);
          }
          outOffsets[n] = ipOff;
          outLengths[n] = ipLen;
          outFlags[n] = linkFlags;
          n++;
          continue;
        }
      }
      if (this.translateSlot(input, start, i, now, partial) === VERDICT_FORWARD) {
        outOffsets[n] = this.ipOff;
        outLengths[n] = this.ipLen;
        outFlags[n] = this.offloadFlags;
        n++;
      }
    }
    stats.forwardedIn += forwardedIn;
    stats.forwardedOut += forwardedOut;
    return n;
  }

  /**
   * Slot `i` through translateInbound/Outbound: loads what the parse pass kept
   * into this object's fields and key, and returns the verdict.
   */
  private translateSlot(input: PacketBatch, start: number, i: number, now: number, partial: boolean): number {
    const buf = input.buffer;
    const key = this.key;
    this.partial = partial;
    this.offloadFlags = input.flags[start + i];
    this.segments = 1;
    this.tcpFlags = this.slotTcpFlags[i];
    this.ipOff = this.slotIpOff[i];
    this.ipLen = this.slotIpLen[i];
    this.wireBytes = this.ipLen;
    if (this.slotKind[i] === SLOT_FRAGMENT) {
      // Classified again now: an earlier packet of this batch may have been its first fragment.
      return this.processOne(buf, this.ipOff, this.ipLen, input.flags[start + i], now, slotRoom(input, this.ipOff));
    }
    if (this.slotKind[i] === SLOT_ICMP) {
      this.family = this.slotFamily[i];
      this.protocol = this.slotProtocol[i];
      this.l4Off = this.slotL4Off[i];
      return translateIcmp(this, buf);
    }
    if (this.slotKind[i] === SLOT_V4_TCP) {
      this.family = 4;
      this.protocol = IP_PROTO_TCP;
      this.l4Off = this.ipOff + IPV4_HEADER_LEN;
      key[0] = this.slotSrc[i] >>> 0; key[1] = 0; key[2] = 0; key[3] = 0;
      key[4] = this.slotDst[i] >>> 0; key[5] = 0; key[6] = 0; key[7] = 0;
      key[8] = this.slotPorts[i] >>> 0; key[9] = V4_TCP;
    } else {
      this.family = this.slotFamily[i];
      this.protocol = this.slotProtocol[i];
      this.l4Off = this.slotL4Off[i];
      const k = i * FLOW_KEY_WORDS;
      for (let w = 0; w < FLOW_KEY_WORDS; w++) key[w] = this.slotKey[k + w];
    }
    this.srcPort = key[KEY_PORTS] >>> 16;
    this.dstPort = key[KEY_PORTS] & 0xffff;
    if ((this.offloadFlags & PACKET_FLAG_GSO) !== 0) {
      const headers = segmentHeaderBytes(buf, this.ipOff, this.l4Off, this.protocol);
      this.segments = segmentCount(this.ipLen, headers, input.gsoSizes[start + i]);
      this.wireBytes = this.ipLen + (this.segments - 1) * headers;
    }
    // A packet may be answered in place with a longer one (reject.ts): its slot is the room it has.
    this.room = slotRoom(input, this.ipOff);
    if (this.protocol === IP_PROTO_TCP) {
      // reflectReset() reads this packet through the views; the parse pass left them on the chunk's last packet.
      if (this.family === 4) this.ip4.wrap(buf, this.ipOff, input.lengths[start + i]);
      this.tcp.wrap(buf, this.l4Off, this.ipOff + this.ipLen - this.l4Off);
    }
    const hash = this.slotHash[i] >>> 0;
    return this.slotLookup[i] === LOOKUP_FORWARD
      ? translateInbound(this, this.balancer.tree.portsById[this.slotPortId[i]], buf, now, hash)
      : translateOutbound(this, buf, now, hash);
  }

  /** Cluster port id for IPv4 `addr` (int32) and `protocol << 16 | port`, or -1; see v4Ports. */
  private findV4Port(addr: number, protoPort: number): number {
    const table = this.v4Ports;
    const mask = this.v4PortsMask;
    for (let slot = v4PortHash(addr, protoPort) & mask; ; slot = (slot + 1) & mask) {
      const at = slot << 2;
      const id1 = table[at + 2];
      if (id1 === 0) return -1;
      if (table[at] === addr && table[at + 1] === protoPort) return id1 - 1;
    }
  }

  /** Rebuilds v4Ports from `tree` (once per configure; allocates). */
  private indexV4Ports(tree: ConfigTree): void {
    let entries = 0;
    for (const cluster of tree.clusters) if (cluster.address.family === 4) entries += cluster.portIndex.size;
    let slots = 8;
    while (slots < entries * 4) slots *= 2; // load at most 1/4: a miss (every reply) ends fast
    const table = new Int32Array(slots * 4);
    const mask = slots - 1;
    for (const cluster of tree.clusters) {
      if (cluster.address.family !== 4) continue;
      const addr = cluster.addrWords[0] | 0;
      for (const [protoPort, port] of cluster.portIndex) {
        let slot = v4PortHash(addr, protoPort) & mask;
        while (table[(slot << 2) + 2] !== 0) slot = (slot + 1) & mask;
        table[slot << 2] = addr;
        table[(slot << 2) + 1] = protoPort;
        table[(slot << 2) + 2] = port.id + 1;
      }
    }
    this.v4Ports = table;
    this.v4PortsMask = mask;
    this.indexedTree = tree;
  }

  /** One packet at `buf[off, off + len)`: rewrites it in place and returns a verdict. Never throws. */
  processPacket(buf: Uint8Array, off: number, len: number, linkFlags: number, now: number): number {
    return this.processOne(buf, off, len, linkFlags, now, buf.length - off);
  }

  /** processPacket() with `room` bytes from `off` that an answer may grow into. */
  private processOne(buf: Uint8Array, off: number, len: number, linkFlags: number, now: number, room: number): number {
    this.partial = (linkFlags & PACKET_FLAG_PARTIAL_CSUM) !== 0;
    this.offloadFlags = linkFlags;
    this.room = room;
    const reason = this.classify(buf, off, len);
    this.segments = 1;
    this.wireBytes = this.ipLen;
    // A lone packet comes with no segment size or checksum position (it
    // counts as one segment): only the super-packet's type is checked here.
    if ((linkFlags & (PACKET_FLAG_GSO | PACKET_FLAG_BAD_VNET)) !== 0 && reason <= 0 &&
        (reason !== 0 || !offloadFits(linkFlags & ~PACKET_FLAG_PARTIAL_CSUM, this.family, this.protocol, 0, 0))) {
      this.balancer.stats.drop(Drop.BadOffload);
      return VERDICT_DROP;
    }
    if (reason === CLASSIFY_ICMP) return translateIcmp(this, buf);
    if (reason === CLASSIFY_FRAGMENT) return this.translateFragment(buf, now);
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
      f64[id * REC_F64 + RF_EXPIRES] = now + this.timeouts[ConnState.Close];
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
      this.fragOffset = ip.isFragment ? ip.fragOffset : -1;
      this.family = 4;
      this.protocol = ip.protocol;
      this.ipLen = ip.totalLen;
      this.l4Off = ip.payloadOffset;
      l4Len = ip.totalLen - ip.headerLen;
      key[0] = ip.srcAddr; key[1] = 0; key[2] = 0; key[3] = 0;
      key[4] = ip.dstAddr; key[5] = 0; key[6] = 0; key[7] = 0;
      if (this.fragOffset >= 0) this.fragIdent = ip.ident;
    } else if (version === 6) {
      const ip = this.ip6;
      const err = ip.wrap(buf, off, len);
      if (err !== WireError.None) return err;
      this.fragOffset = ip.isFragment ? ip.fragOffset : -1;
      if (this.fragOffset >= 0) this.fragIdent = ip.fragIdent;
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
    if (this.fragOffset >= 0) return CLASSIFY_FRAGMENT;

    if (this.protocol === IP_PROTO_TCP) {
      const tcp = this.tcp;
      const err = tcp.wrap(buf, this.l4Off, l4Len);
      if (err !== WireError.None) return err;
      const flags = tcp.flags;
      if (!tcpFlagsAllowed(flags)) return Drop.BadTcpFlags;
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
      return CLASSIFY_ICMP;
    } else {
      return Drop.UnknownProtocol;
    }
    key[8] = ((this.srcPort << 16) | this.dstPort) >>> 0;
    key[9] = (this.protocol << 8) | this.family;
    return 0;
  }

  /**
   * A fragment parsed by classify(). The first one (offset 0) carries the
   * ports: it is translated like any packet and, when forwarded, its datagram
   * is remembered in the fragment table. A later one follows that entry: only
   * its address changes (and the IPv4 header checksum; the transport checksum
   * sits in the first fragment). A later fragment whose first one was not seen
   * (out of order, or never sent) is dropped and counted.
   */
  private translateFragment(buf: Uint8Array, now: number): number {
    const key = this.key;
    const fk = this.fragKey;
    for (let w = 0; w < 8; w++) fk[w] = key[w];
    fk[8] = this.fragIdent;
    fk[9] = (this.protocol << 8) | this.family;
    if (this.fragOffset === 0 && (this.protocol === IP_PROTO_TCP || this.protocol === IP_PROTO_UDP)) {
      const l4Len = this.ipOff + this.ipLen - this.l4Off;
      // Only the ports (and TCP's flags) are needed; a UDP length field counts the whole datagram.
      if (l4Len < (this.protocol === IP_PROTO_TCP ? 20 : 8)) {
        this.balancer.stats.drop(Drop.Fragment);
        return VERDICT_DROP;
      }
      this.srcPort = (buf[this.l4Off] << 8) | buf[this.l4Off + 1];
      this.dstPort = (buf[this.l4Off + 2] << 8) | buf[this.l4Off + 3];
      if (this.protocol === IP_PROTO_TCP) {
        if (this.tcp.wrap(buf, this.l4Off, l4Len) !== WireError.None) {
          this.balancer.stats.drop(Drop.Fragment);
          return VERDICT_DROP;
        }
        this.tcpFlags = this.tcp.flags;
        if (!tcpFlagsAllowed(this.tcpFlags)) {
          this.balancer.stats.drop(Drop.BadTcpFlags);
          return VERDICT_DROP;
        }
      } else {
        this.tcpFlags = 0;
      }
      key[8] = ((this.srcPort << 16) | this.dstPort) >>> 0;
      key[9] = (this.protocol << 8) | this.family;
      const port = this.balancer.tree.findPort(this.family, key, KEY_ADDR_B, this.protocol, this.dstPort);
      const hash = hashFlowKey(key, this.table.seed);
      this.lastRecordId = -1;
      const verdict = port !== undefined ? translateInbound(this, port, buf, now, hash) : translateOutbound(this, buf, now, hash);
      if (verdict === VERDICT_FORWARD && this.lastRecordId >= 0) this.fragments.remember(fk, this.lastRecordId, port === undefined, now, this.recordCreated(this.lastRecordId));
      return verdict;
    }
    const found = this.fragments.find(fk, now, this.recordCreated);
    const id = found >> 1;
    if (found < 0 || !this.table.isInUse(id) || !this.fragmentMatches(id, (found & 1) === 1)) {
      this.balancer.stats.drop(Drop.Fragment);
      return VERDICT_DROP;
    }
    const outbound = (found & 1) === 1;
    const u32 = this.table.u32;
    const b = id * REC_WORDS;
    const v4 = this.family === 4;
    // Inbound: the destination becomes the daemon's; outbound: the source becomes the cluster's.
    const addrOff = this.ipOff + (outbound ? (v4 ? 12 : 8) : (v4 ? 16 : 24));
    const from = b + (outbound ? R_CLUSTER_ADDR : R_DAEMON_ADDR);
    let delta = 0;
    for (let w = 0; w < (v4 ? 1 : 4); w++) {
      const at = addrOff + 4 * w;
      const old = ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
      const value = u32[from + w];
      delta += delta32(old, value);
      buf[at] = value >>> 24; buf[at + 1] = (value >>> 16) & 0xff; buf[at + 2] = (value >>> 8) & 0xff; buf[at + 3] = value & 0xff;
    }
    if (v4) applyComplete(buf, this.ipOff + 10, delta);
    if (outbound) this.balancer.stats.forwardedOut++;
    else this.balancer.stats.forwardedIn++;
    return VERDICT_FORWARD;
  }

  /** When record `id` was created (ms); tells a reused record id from its earlier flow. */
  private readonly recordCreated = (id: number): number => this.table.f64[id * REC_F64 + RF_CREATED];

  /**
   * True when record `id` still belongs to the datagram in fragKey: ids are
   * reused at once, so an entry may outlive its flow (evicted, collected).
   */
  private fragmentMatches(id: number, outbound: boolean): boolean {
    const u32 = this.table.u32;
    const b = id * REC_WORDS;
    const fk = this.fragKey;
    // Inbound fragments: client → cluster. Outbound: daemon → client.
    const srcAt = b + (outbound ? R_DAEMON_ADDR : R_CLIENT_ADDR);
    const dstAt = b + (outbound ? R_CLIENT_ADDR : R_CLUSTER_ADDR);
    for (let w = 0; w < 4; w++) if (u32[srcAt + w] !== fk[w] || u32[dstAt + w] !== fk[4 + w]) return false;
    return ((u32[b + R_META] >>> 8) & 0xff) === (fk[9] >>> 8);
  }

  private recordRemoved(id: number, reason: RemoveReason): void {
    const b = id * REC_WORDS;
    const u32 = this.table.u32;
    if (u32[b + R_STATE] & FLAG_ACTIVE) this.balancer.flowEnded(u32[b + R_DAEMON_ID]);
    if (this.connectionEnded !== null) this.connectionEnded(id, reason);
  }
}
