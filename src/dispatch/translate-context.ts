// The dispatcher as the translators see it (inbound.ts, outbound.ts, reset.ts,
// reject.ts, icmp-translate.ts, advanceTcp in tcp-state.ts): the packet being
// translated, as the parse pass left it, and what it is translated against.
// The Dispatcher implements it and passes itself, so the packet path builds no
// object per packet and the translators need nothing from dispatcher.ts.

import type { IcmpPacket } from '../wire/icmp.js';
import type { Ipv4Packet } from '../wire/ipv4.js';
import type { TcpPacket } from '../wire/tcp.js';
import type { Balancer } from './balancer.js';
import type { ConnTable } from './conn-table.js';

export interface TranslateContext {
  // What a packet is translated against.
  readonly table: ConnTable;
  /** Schedulers, flow counts and the named counters (balancer.stats). */
  readonly balancer: Balancer;
  /** Timeout per ConnState in ms (timeoutTable()). */
  readonly timeouts: Float64Array;
  /** Hand back unchanged a daemon's packet of no dispatched flow (see DispatcherOptions). */
  readonly passUnmatchedReplies: boolean;

  // The packet being translated. Translators write only ipLen, offloadFlags, lastRecordId and the key's words.
  /** 4 or 6. */
  readonly family: number;
  /** Where the IP header starts in the buffer. */
  readonly ipOff: number;
  /** Where the transport (or ICMP) header starts, past any IPv6 extension headers. */
  readonly l4Off: number;
  /**
   * Bytes of the IP packet (without link padding), for byte counters. A
   * translator that turns the packet into an answer (reset.ts, reject.ts) sets
   * the answer's length: it is what the caller sends.
   */
  ipLen: number;
  /** Bytes the packet may grow to in place from ipOff (its slot), for answers longer than the question. */
  readonly room: number;
  /** IP protocol number of the transport header (after IPv6 extension headers). */
  readonly protocol: number;
  /** The TCP header's flags byte; 0 for UDP. */
  readonly tcpFlags: number;
  /** The transport checksum field holds a folded pseudo-header sum, not a checksum (virtio NEEDS_CSUM, PACKET_FLAG_PARTIAL_CSUM). */
  readonly partial: boolean;
  /** Segments the packet carries: 1, or a super-packet's (offload.ts); what packet counters add. */
  readonly segments: number;
  /** Bytes those segments carry (ipLen plus the headers a super-packet's other segments repeat); what byte counters add. */
  readonly wireBytes: number;
  /**
   * The link flags the packet is sent with: its own while it is translated in
   * place (its virtio-net header still describes it). A translator that turns
   * it into an answer (reset.ts, reject.ts, an echo reply) sets 0: one packet,
   * checksums complete.
   */
  offloadFlags: number;
  /**
   * The packet's flow key as parsed, FLOW_KEY_WORDS words: [src, dst,
   * srcPort << 16 | dstPort, protocol << 8 | family] (a reply's is its
   * record's reverse key). icmp-translate.ts overwrites it with the quoted flow's.
   */
  readonly key: Uint32Array;
  /** The record of the packet translateInbound/Outbound last forwarded (the fragment table remembers it). */
  lastRecordId: number;
  /** Wrapped over the IPv4 header of a TCP packet before a translator runs; may hold an earlier packet otherwise. */
  readonly ip4: Ipv4Packet;
  /** Wrapped over the TCP header of a TCP packet before a translator runs. */
  readonly tcp: TcpPacket;
  /** Free for a translator to wrap over an answer it builds (reject.ts). */
  readonly icmp: IcmpPacket;
}
