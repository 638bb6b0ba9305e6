// ICMP and ICMPv6 through the dispatcher: echo requests to a cluster address
// are answered from it, and errors that quote a dispatched flow are
// translated like the flow itself (RFC 5508 §7, what IPVS and conntrack do):
// an error to the cluster (a router on the client's path: fragmentation
// needed, packet too big, time exceeded, unreachable) goes to the flow's
// daemon, and an error from the daemon's side goes to the client from the
// cluster address. Every checksum involved — outer IPv4 header, quoted IPv4
// header, quoted transport header as far as it is present, ICMP — is updated
// incrementally.

import { read16, read32, write16, write32 } from '../wire/bytes.js';
import { applyComplete, applyUdpV4, delta16, delta32 } from '../wire/checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, IPV4_CHECKSUM, IPV4_DST_ADDR, IPV4_SRC_ADDR, IPV4_TTL } from '../wire/ipv4.js';
import { IPV6_DST_ADDR, IPV6_HOP_LIMIT, IPV6_SRC_ADDR } from '../wire/ipv6.js';
import {
  ICMP_CHECKSUM, ICMP_HEADER_LEN, ICMPV4_DEST_UNREACHABLE, ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST, ICMPV4_TIME_EXCEEDED,
  ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED,
} from '../wire/icmp.js';
import { REC_WORDS, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_META, R_PORTS } from './conn-table.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';
import { Drop } from './drop-reason.js';
import { hashFlowKey } from './flow-hash.js';

/** Hop limit of the echo replies hostlb sends (Linux's default). */
const REPLY_TTL = 64;

function isError(family: number, type: number): boolean {
  return family === 4
    ? type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_TIME_EXCEEDED
    : type === ICMPV6_DEST_UNREACHABLE || type === ICMPV6_PACKET_TOO_BIG || type === ICMPV6_TIME_EXCEEDED;
}

/** Sum of RFC 1624 deltas for `words` 32-bit words at `off` changing to `values[at..]`, written in place. */
function replaceWords(buf: Uint8Array, off: number, values: Uint32Array, at: number, words: number): number {
  let delta = 0;
  for (let i = 0; i < words; i++) {
    const old = read32(buf, off + 4 * i);
    delta += delta32(old, values[at + i]);
    write32(buf, off + 4 * i, values[at + i]);
  }
  return delta;
}

/**
 * The ICMP or ICMPv6 packet parsed into `d` (`d.l4Off` is the ICMP header,
 * `d.ipLen` its IP length). Returns a verdict; drops (counted) what it does
 * not translate, unless it is a daemon's own ICMP to hand back. Never throws.
 */
export function translateIcmp(d: TranslateContext, buf: Uint8Array): number {
  const ipOff = d.ipOff;
  const icmp = d.l4Off;
  const icmpLen = ipOff + d.ipLen - icmp;
  const v4 = d.family === 4;
  if (icmpLen < ICMP_HEADER_LEN) {
    d.balancer.stats.drop(Drop.Icmp);
    return VERDICT_DROP;
  }
  const type = buf[icmp];
  const key = d.key;
  // The outer destination, in record form, for the cluster test.
  if (v4) {
    key[4] = read32(buf, ipOff + IPV4_DST_ADDR); key[5] = 0; key[6] = 0; key[7] = 0;
  } else {
    for (let i = 0; i < 4; i++) key[4 + i] = read32(buf, ipOff + IPV6_DST_ADDR + 4 * i);
  }
  const toCluster = d.balancer.tree.hasCluster(d.family, key, 4);

  if (type === (v4 ? ICMPV4_ECHO_REQUEST : ICMPV6_ECHO_REQUEST) && toCluster) return echoReply(d, buf, icmp, v4);
  if (isError(d.family, type)) {
    const verdict = translateError(d, buf, icmp, icmpLen, v4, toCluster);
    if (verdict === VERDICT_FORWARD) return verdict;
  }
  // Not about a dispatched flow and not to a cluster: a daemon's own ICMP
  // (an echo reply to someone who pinged its address) — hand it back unchanged.
  if (!toCluster && d.passUnmatchedReplies) {
    d.balancer.stats.passedThrough++;
    return VERDICT_FORWARD;
  }
  d.balancer.stats.drop(Drop.Icmp);
  return VERDICT_DROP;
}

/** Answers an echo request in place: addresses swapped, type to reply, TTL reset. */
function echoReply(d: TranslateContext, buf: Uint8Array, icmp: number, v4: boolean): number {
  const ipOff = d.ipOff;
  if (v4) {
    const src = read32(buf, ipOff + IPV4_SRC_ADDR);
    write32(buf, ipOff + IPV4_SRC_ADDR, read32(buf, ipOff + IPV4_DST_ADDR));
    write32(buf, ipOff + IPV4_DST_ADDR, src);
    // Swapping two words leaves the header sum alone; the TTL change does not.
    const oldTtlWord = read16(buf, ipOff + IPV4_TTL);
    buf[ipOff + IPV4_TTL] = REPLY_TTL;
    applyComplete(buf, ipOff + IPV4_CHECKSUM, delta16(oldTtlWord, read16(buf, ipOff + IPV4_TTL)));
  } else {
    for (let i = 0; i < 16; i++) {
      const t = buf[ipOff + IPV6_SRC_ADDR + i];
      buf[ipOff + IPV6_SRC_ADDR + i] = buf[ipOff + IPV6_DST_ADDR + i];
      buf[ipOff + IPV6_DST_ADDR + i] = t;
    }
    buf[ipOff + IPV6_HOP_LIMIT] = REPLY_TTL;
  }
  // The pseudo-header (ICMPv6) is the same after the swap; only the type changes.
  const oldTypeWord = read16(buf, icmp);
  buf[icmp] = v4 ? ICMPV4_ECHO_REPLY : ICMPV6_ECHO_REPLY;
  applyComplete(buf, icmp + ICMP_CHECKSUM, delta16(oldTypeWord, read16(buf, icmp)));
  d.offloadFlags = 0;
  d.balancer.stats.echoReplies++;
  return VERDICT_FORWARD;
}

/**
 * An error quoting a packet of a dispatched flow. `toCluster`: it came from
 * the client's side about a packet the cluster sent (quoted: cluster → client);
 * otherwise it came from the daemon's side about a packet the client sent
 * (quoted: client → daemon).
 */
function translateError(d: TranslateContext, buf: Uint8Array, icmp: number, icmpLen: number, v4: boolean, toCluster: boolean): number {
  const ipOff = d.ipOff;
  const inner = icmp + ICMP_HEADER_LEN;
  const end = icmp + icmpLen;
  // The quoted header: at least the IP header and the 8 bytes that hold the ports (RFC 792).
  let innerL4: number;
  let innerProto: number;
  if (v4) {
    if (end - inner < 20 || buf[inner] >>> 4 !== 4) return VERDICT_DROP;
    innerL4 = inner + ((buf[inner] & 0x0f) << 2);
    innerProto = buf[inner + 9];
  } else {
    if (end - inner < 40 || buf[inner] >>> 4 !== 6) return VERDICT_DROP;
    innerL4 = inner + 40; // an extension header in a quote is rare; such errors are dropped below
    innerProto = buf[inner + 6];
  }
  if ((innerProto !== IP_PROTO_TCP && innerProto !== IP_PROTO_UDP) || end - innerL4 < 8) return VERDICT_DROP;
  const aOff = inner + (v4 ? IPV4_SRC_ADDR : IPV6_SRC_ADDR);
  const bOff = inner + (v4 ? IPV4_DST_ADDR : IPV6_DST_ADDR);
  const words = v4 ? 1 : 4;
  const aPort = read16(buf, innerL4);
  const bPort = read16(buf, innerL4 + 2);

  // Find the record: the quoted packet went the other way from this error's own direction.
  const key = d.key;
  key.fill(0);
  const table = d.table;
  let id: number;
  if (toCluster) {
    // Quoted: cluster → client. Forward key [client, cluster, clientPort<<16|clusterPort].
    for (let i = 0; i < words; i++) { key[i] = read32(buf, bOff + 4 * i); key[4 + i] = read32(buf, aOff + 4 * i); }
    key[8] = ((bPort << 16) | aPort) >>> 0;
    key[9] = (innerProto << 8) | d.family;
    id = table.findForward(key, hashFlowKey(key, table.seed));
  } else {
    // Quoted: client → daemon. Reverse key [daemon, client, daemonPort<<16|clientPort].
    for (let i = 0; i < words; i++) { key[i] = read32(buf, bOff + 4 * i); key[4 + i] = read32(buf, aOff + 4 * i); }
    key[8] = ((bPort << 16) | aPort) >>> 0;
    key[9] = (innerProto << 8) | d.family;
    id = table.findReverse(key, hashFlowKey(key, table.seed));
  }
  if (id < 0) return VERDICT_DROP;
  const u32 = table.u32;
  const b = id * REC_WORDS;
  // toCluster: outer dst and quoted src become the daemon's; otherwise outer src and quoted dst become the cluster's.
  const newAddrAt = toCluster ? b + R_DAEMON_ADDR : b + R_CLUSTER_ADDR;
  const newPort = toCluster ? u32[b + R_META] >>> 16 : u32[b + R_PORTS] & 0xffff;
  const outerOff = ipOff + (toCluster ? (v4 ? IPV4_DST_ADDR : IPV6_DST_ADDR) : (v4 ? IPV4_SRC_ADDR : IPV6_SRC_ADDR));
  const quotedAddrOff = toCluster ? aOff : bOff;
  const quotedPortOff = toCluster ? innerL4 : innerL4 + 2;

  // Every change inside the ICMP message feeds the ICMP checksum; ICMPv6's also covers the outer addresses.
  let icmpDelta = 0;
  const outerDelta = replaceWords(buf, outerOff, u32, newAddrAt, words);
  if (v4) applyComplete(buf, ipOff + IPV4_CHECKSUM, outerDelta);
  else icmpDelta += outerDelta;

  const addrDelta = replaceWords(buf, quotedAddrOff, u32, newAddrAt, words);
  icmpDelta += addrDelta;
  if (v4) {
    const old = read16(buf, inner + IPV4_CHECKSUM);
    applyComplete(buf, inner + IPV4_CHECKSUM, addrDelta);
    icmpDelta += delta16(old, read16(buf, inner + IPV4_CHECKSUM));
  }
  const oldPort = read16(buf, quotedPortOff);
  write16(buf, quotedPortOff, newPort);
  const portDelta = delta16(oldPort, newPort);
  icmpDelta += portDelta;
  // The quoted transport checksum, when the quote reaches it (TCP's sits at byte 16, UDP's at 6).
  const csumAt = innerL4 + (innerProto === IP_PROTO_TCP ? 16 : 6);
  if (csumAt + 2 <= end) {
    const old = read16(buf, csumAt);
    if (innerProto === IP_PROTO_UDP) applyUdpV4(buf, csumAt, addrDelta + portDelta); // 0 = none stays 0
    else applyComplete(buf, csumAt, addrDelta + portDelta);
    icmpDelta += delta16(old, read16(buf, csumAt));
  }
  applyComplete(buf, icmp + ICMP_CHECKSUM, icmpDelta);
  d.balancer.stats.icmpTranslated++;
  return VERDICT_FORWARD;
}
