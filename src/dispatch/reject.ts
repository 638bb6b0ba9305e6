// Refusing a UDP flow nobody can take: when every daemon of a port is down
// (or quiesced), a datagram is answered, in place, with the ICMP "port
// unreachable" a host sends for a closed UDP port (RFC 1122 §3.2.2.1,
// RFC 4443 §3.1) — from the cluster address — so the client fails at once.
// TCP gets a RST instead (reset.ts).

import { read32 } from '../wire/bytes.js';
import { pseudoSumV6 } from '../wire/checksum.js';
import { emitIpv4, IP_PROTO_ICMP, IP_PROTO_ICMPV6, IPV4_DST_ADDR, IPV4_SRC_ADDR } from '../wire/ipv4.js';
import { emitIpv6, IPV6_DST_ADDR, IPV6_HEADER_LEN, IPV6_SRC_ADDR } from '../wire/ipv6.js';
import {
  ICMP_HEADER_LEN, ICMPV4_CODE_PORT_UNREACHABLE, ICMPV4_DEST_UNREACHABLE, ICMPV6_CODE_PORT_UNREACHABLE, ICMPV6_DEST_UNREACHABLE,
} from '../wire/icmp.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';

/** RFC 1812 §4.3.2.3: an ICMPv4 error quotes as much as fits in 576 bytes. */
const ICMPV4_MAX = 576;
/** RFC 4443 §2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU. */
const ICMPV6_MAX = 1280;

const scratch = new Uint8Array(ICMPV6_MAX);

/**
 * Rewrites the datagram parsed into `d` (at `d.ipOff`) into an ICMP port
 * unreachable back to its sender, from the address it was sent to. The
 * answer may be longer than the datagram (it quotes it after new headers), so
 * it needs `d.room` bytes of space from `d.ipOff`; with less, the datagram is
 * only dropped. Sets `d.ipLen`. Never throws.
 */
export function reflectUnreachable(d: TranslateContext, buf: Uint8Array): number {
  const off = d.ipOff;
  const v4 = d.family === 4;
  const outer = v4 ? 20 : IPV6_HEADER_LEN;
  const max = Math.min(v4 ? ICMPV4_MAX : ICMPV6_MAX, d.room);
  const quoteLen = Math.min(d.ipLen, max - outer - ICMP_HEADER_LEN);
  if (quoteLen < (v4 ? 28 : 48)) return VERDICT_DROP;
  const total = outer + ICMP_HEADER_LEN + quoteLen;

  // The quote is the original datagram; copy it aside before the headers overwrite it.
  scratch.set(buf.subarray(off, off + quoteLen));
  const icmp = off + outer;
  buf.set(scratch.subarray(0, quoteLen), icmp + ICMP_HEADER_LEN);
  buf[icmp] = v4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
  buf[icmp + 1] = v4 ? ICMPV4_CODE_PORT_UNREACHABLE : ICMPV6_CODE_PORT_UNREACHABLE;
  for (let i = 2; i < ICMP_HEADER_LEN; i++) buf[icmp + i] = 0;

  if (v4) {
    const src = read32(scratch, IPV4_DST_ADDR);
    const dst = read32(scratch, IPV4_SRC_ADDR);
    emitIpv4({ srcAddr: src, dstAddr: dst, protocol: IP_PROTO_ICMP, payloadLen: ICMP_HEADER_LEN + quoteLen }, buf, off);
    d.icmp.wrap(buf, icmp, ICMP_HEADER_LEN + quoteLen);
    d.icmp.fillChecksum(0);
  } else {
    emitIpv6({
      srcAddr: scratch.subarray(IPV6_DST_ADDR, IPV6_DST_ADDR + 16), dstAddr: scratch.subarray(IPV6_SRC_ADDR, IPV6_SRC_ADDR + 16),
      nextHeader: IP_PROTO_ICMPV6, payloadLen: ICMP_HEADER_LEN + quoteLen,
    }, buf, off);
    d.icmp.wrap(buf, icmp, ICMP_HEADER_LEN + quoteLen);
    d.icmp.fillChecksum(pseudoSumV6(buf, off + IPV6_SRC_ADDR, off + IPV6_DST_ADDR, IP_PROTO_ICMPV6, ICMP_HEADER_LEN + quoteLen));
  }
  d.ipLen = total;
  d.offloadFlags = 0;
  d.balancer.stats.unreachableSent++;
  return VERDICT_FORWARD;
}
