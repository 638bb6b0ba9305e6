// Resetting flows on purpose: when a removed daemon's flows are to be reset
// rather than kept, their records are marked, and the next packet either side
// sends on such a flow is turned, in place, into the RST a TCP stack sends for
// a segment of a connection it does not have (RFC 9293 §3.10.7.1). So each
// end learns at once, the next time it speaks, instead of waiting for a timeout.

import { read32, write16, write32 } from '../wire/bytes.js';
import { pseudoSumV4, pseudoSumV6 } from '../wire/checksum.js';
import { IP_PROTO_TCP, IPV4_DST_ADDR, IPV4_SRC_ADDR, IPV4_TOTAL_LEN } from '../wire/ipv4.js';
import { IPV6_DST_ADDR, IPV6_PAYLOAD_LEN, IPV6_SRC_ADDR } from '../wire/ipv6.js';
import { TCP_ACK_FLAG, TCP_FIN, TCP_HEADER_LEN, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';

function swap(buf: Uint8Array, a: number, b: number, len: number): void {
  for (let i = 0; i < len; i++) {
    const t = buf[a + i];
    buf[a + i] = buf[b + i];
    buf[b + i] = t;
  }
}

/**
 * Rewrites the TCP packet parsed into `d` into a RST back to its sender:
 * addresses and ports swapped, payload and options cut, sequence numbers as
 * RFC 9293 prescribes, checksums recomputed. A RST is never answered with a
 * RST (returns VERDICT_DROP). Sets `d.ipLen` to the new length.
 */
export function reflectReset(d: TranslateContext, buf: Uint8Array): number {
  const flags = d.tcpFlags;
  if (flags & TCP_RST) return VERDICT_DROP;
  const ipOff = d.ipOff;
  const l4 = d.l4Off;
  const tcp = d.tcp;
  const seq = tcp.seqNumber;
  const ack = tcp.ackNumber;
  const segLen = tcp.payloadLen + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);

  if (d.family === 4) swap(buf, ipOff + IPV4_SRC_ADDR, ipOff + IPV4_DST_ADDR, 4);
  else swap(buf, ipOff + IPV6_SRC_ADDR, ipOff + IPV6_DST_ADDR, 16);
  swap(buf, l4, l4 + 2, 2);
  if (flags & TCP_ACK_FLAG) {
    write32(buf, l4 + 4, ack);
    write32(buf, l4 + 8, 0);
    buf[l4 + 13] = TCP_RST;
  } else {
    write32(buf, l4 + 4, 0);
    write32(buf, l4 + 8, (seq + segLen) >>> 0);
    buf[l4 + 13] = TCP_RST | TCP_ACK_FLAG;
  }
  buf[l4 + 12] = (TCP_HEADER_LEN >>> 2) << 4;
  write16(buf, l4 + 14, 0); // window
  write16(buf, l4 + 18, 0); // urgent pointer

  const l4Len = TCP_HEADER_LEN;
  let pseudo: number;
  if (d.family === 4) {
    const ip = d.ip4;
    write16(buf, ipOff + IPV4_TOTAL_LEN, ip.headerLen + l4Len);
    ip.fillChecksum();
    pseudo = pseudoSumV4(read32(buf, ipOff + IPV4_SRC_ADDR), read32(buf, ipOff + IPV4_DST_ADDR), IP_PROTO_TCP, l4Len);
    d.ipLen = ip.headerLen + l4Len;
  } else {
    const headers = l4 - ipOff;
    write16(buf, ipOff + IPV6_PAYLOAD_LEN, headers - 40 + l4Len);
    pseudo = pseudoSumV6(buf, ipOff + IPV6_SRC_ADDR, ipOff + IPV6_DST_ADDR, IP_PROTO_TCP, l4Len);
    d.ipLen = headers + l4Len;
  }
  tcp.wrap(buf, l4, l4Len);
  tcp.fillChecksum(pseudo);
  d.offloadFlags = 0;
  d.balancer.stats.resetsSent++;
  return VERDICT_FORWARD;
}
