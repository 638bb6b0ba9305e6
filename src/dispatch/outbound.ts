// Outbound translation (seed Figure 9): a daemon's reply. Find the record
// through the reverse index (daemon address/port, client address/port), rewrite
// the source back to the cluster address/port, drive the state, count it.

import { IP_PROTO_TCP, IPV4_SRC_ADDR } from '../wire/ipv4.js';
import { IPV6_SRC_ADDR } from '../wire/ipv6.js';
import { TCP_ACK_FLAG, TCP_CHECKSUM, TCP_RST, TCP_SRC_PORT } from '../wire/tcp.js';
import { UDP_CHECKSUM, UDP_SRC_PORT } from '../wire/udp.js';
import {
  REC_F64, REC_WORDS, RF_BYTES_OUT, RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_OUT, R_ACK_OUT, R_CLUSTER_ADDR, R_DAEMON_ID, R_PORTS, R_STATE,
} from './conn-table.js';
import { Drop } from './drop-reason.js';
import { reflectReset } from './reset.js';
import { rewriteAddressAndPort } from './rewrite.js';
import { D_BYTES_OUT, D_PACKETS_OUT, DAEMON_COLUMNS } from './stats.js';
import { advanceTcp, ConnState, evictionList, FLAG_REPLIED, FLAG_RESET, STATE_MASK } from './tcp-state.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';

/**
 * Figure 9 for the packet parsed into `d` (not addressed to any cluster port);
 * `hash` is table.hashKey(d.key). Returns a verdict.
 */
export function translateOutbound(d: TranslateContext, buf: Uint8Array, now: number, hash: number): number {
  const table = d.table;
  // The forward-form key [src, dst, ports] of a reply is already the reverse key
  // [daemon, client, daemonPort<<16|clientPort] the reverse index wants.
  const id = table.findReverse(d.key, hash);
  if (id === -1 || table.f64[id * REC_F64 + RF_EXPIRES] <= now) {
    if (d.balancer.tree.hasCluster(d.family, d.key, 4)) {
      d.balancer.stats.drop(Drop.NotOurs);
      return VERDICT_DROP;
    }
    // A daemon's packet on a connection hostlb never dispatched — a health
    // probe, or anyone talking to the daemon's own address — is routed here
    // all the same (the policy rule matches on source address and port only).
    // It belongs to that direct connection: hand it back unchanged.
    if (d.passUnmatchedReplies) {
      d.balancer.stats.passedThrough++;
      return VERDICT_FORWARD;
    }
    d.balancer.stats.drop(Drop.NoRecordOut);
    return VERDICT_DROP;
  }
  const tcp = d.protocol === IP_PROTO_TCP;
  const u32 = table.u32;
  const b = id * REC_WORDS;
  if (tcp) {
    if ((u32[b + R_STATE] & FLAG_RESET) && !(d.tcpFlags & TCP_RST)) return reflectReset(d, buf);
    if (d.tcpFlags & TCP_ACK_FLAG) u32[b + R_ACK_OUT] = d.tcp.ackNumber;
    advanceTcp(d, id, true, now);
  } else if ((u32[b + R_STATE] & FLAG_REPLIED) === 0) {
    // A UDP flow the daemon answered is confirmed: a full table no longer gives it up.
    u32[b + R_STATE] |= FLAG_REPLIED;
    table.setList(id, evictionList(ConnState.Udp, u32[b + R_STATE]));
  }

  const f = id * REC_F64;
  const f64 = table.f64;
  const daemonId = u32[b + R_DAEMON_ID];
  f64[f + RF_EXPIRES] = now + d.timeouts[u32[b + R_STATE] & STATE_MASK];
  f64[f + RF_LAST_SEEN] = now;
  f64[f + RF_PACKETS_OUT] += d.segments;
  f64[f + RF_BYTES_OUT] += d.wireBytes;
  const stats = d.balancer.stats.daemon;
  stats[daemonId * DAEMON_COLUMNS + D_PACKETS_OUT] += d.segments;
  stats[daemonId * DAEMON_COLUMNS + D_BYTES_OUT] += d.wireBytes;
  d.balancer.stats.forwardedOut++;

  d.lastRecordId = id;
  rewriteAddressAndPort(
    buf, d.family, d.ipOff, d.ipOff + (d.family === 4 ? IPV4_SRC_ADDR : IPV6_SRC_ADDR),
    u32, b + R_CLUSTER_ADDR, d.l4Off + (tcp ? TCP_SRC_PORT : UDP_SRC_PORT), u32[b + R_PORTS] & 0xffff,
    d.l4Off + (tcp ? TCP_CHECKSUM : UDP_CHECKSUM), !tcp, d.partial,
  );
  return VERDICT_FORWARD;
}
