// Inbound translation (seed Figure 8): a client's packet to a cluster port.
// Find its connection record; on a miss, a TCP SYN or any UDP datagram asks the
// port's scheduler for a daemon and creates one. Then rewrite the destination
// to the daemon, drive the record's state and count the packet.

import { IP_PROTO_TCP, IPV4_DST_ADDR } from '../wire/ipv4.js';
import { IPV6_DST_ADDR } from '../wire/ipv6.js';
import { TCP_ACK_FLAG, TCP_DST_PORT, TCP_CHECKSUM, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { UDP_CHECKSUM, UDP_DST_PORT } from '../wire/udp.js';
import type { ClusterPort } from './config-tree.js';
import {
  INSERT_FULL, R_ACK_OUT, REC_F64, REC_WORDS, RemoveReason, RF_BYTES_IN, RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN,
  R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_STATE,
} from './conn-table.js';
import { Drop } from './drop-reason.js';
import { hashAddress, SOURCE_HASH_SEED } from './flow-hash.js';
import { reflectUnreachable } from './reject.js';
import { reflectReset } from './reset.js';
import { rewriteAddressAndPort } from './rewrite.js';
import { D_BYTES_IN, D_PACKETS_IN, D_SYNS, DAEMON_COLUMNS } from './stats.js';
import { advanceTcp, ConnState, evictionList, FLAG_ACTIVE, FLAG_RESET, isEnded, STATE_MASK } from './tcp-state.js';
import type { TranslateContext } from './translate-context.js';
import { VERDICT_DROP, VERDICT_FORWARD } from './verdict.js';

/**
 * How far past the daemon's last acknowledgment a client's RST may be and
 * still count: data the client sent that the daemon has not acknowledged yet.
 * 1 MiB — a blind RST then has odds of 1 in 4096 per guess.
 */
const RST_WINDOW = 1 << 20;

/** Figure 8 for the packet parsed into `d`, bound for `port`; `hash` is table.hashKey(d.key). Returns a verdict. */
export function translateInbound(d: TranslateContext, port: ClusterPort, buf: Uint8Array, now: number, hash: number): number {
  const table = d.table;
  const key = d.key;
  const tcp = d.protocol === IP_PROTO_TCP;
  let id = table.findForward(key, hash);

  if (id !== -1) {
    const b = id * REC_WORDS;
    const state = table.u32[b + R_STATE] & STATE_MASK;
    const expired = table.f64[id * REC_F64 + RF_EXPIRES] <= now;
    // A new SYN on an ended connection (client port reuse) starts a new flow,
    // as does any packet of a record whose time ran out before collection. So
    // does a SYN on a handshake still pending at a daemon that no longer takes
    // new flows (down, drained): a client reusing its port, or retrying, would
    // otherwise be held on the dead daemon for the SYN timeout.
    const syn = tcp && (d.tcpFlags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN;
    const reopened = syn && (isEnded(state) ||
      (state === ConnState.SynRecv && !d.balancer.takesNewFlows(port, table.u32[id * REC_WORDS + R_DAEMON_ID])));
    if (expired || reopened) {
      table.remove(id, expired ? RemoveReason.Expired : RemoveReason.Ended);
      id = -1;
    }
  }

  if (id === -1) {
    // A segment of a connection the table does not know (lost in a restart
    // without a checkpoint, or evicted): a consistent-hash scheduler picks the
    // daemon the flow's hash picked when it began, so the flow can go on there.
    let recovering = false;
    if (tcp && (d.tcpFlags & (TCP_SYN | TCP_ACK_FLAG)) !== TCP_SYN) {
      recovering = (port.scheduler === 'maglev' || port.scheduler === 'sh') && (d.tcpFlags & (TCP_ACK_FLAG | TCP_RST | TCP_SYN)) === TCP_ACK_FLAG;
      if (!recovering) {
        d.balancer.stats.dropAt(port.id, Drop.NoRecord);
        return VERDICT_DROP;
      }
    }
    const daemon = d.balancer.choose(port, hash, hashAddress(key, 0, SOURCE_HASH_SEED));
    if (daemon === null) {
      d.balancer.stats.dropAt(port.id, Drop.NoDaemon);
      // Better an immediate refusal than a client waiting for a SYN-ACK that never comes.
      if (port.rejectWhenEmpty) return tcp ? reflectReset(d, buf) : reflectUnreachable(d, buf);
      return VERDICT_DROP;
    }
    const state = recovering ? ConnState.Established : tcp ? ConnState.SynRecv : ConnState.Udp;
    id = table.insert(key, hash, daemon.addrWords, 0, daemon.port, daemon.id, port.id, state | FLAG_ACTIVE, now,
      now + d.timeouts[state]);
    if (id < 0) {
      d.balancer.stats.dropAt(port.id, id === INSERT_FULL ? Drop.TableFull : Drop.ReverseTaken);
      return VERDICT_DROP;
    }
    table.setList(id, evictionList(state, 0));
    d.balancer.flowStarted(daemon.id);
    if (recovering) d.balancer.stats.recovered++;
    else if (tcp) d.balancer.stats.daemon[daemon.id * DAEMON_COLUMNS + D_SYNS]++;
  } else if (tcp) {
    // A RST of its own ends the flow on both ends: it goes through like any segment.
    if ((table.u32[id * REC_WORDS + R_STATE] & FLAG_RESET) && !(d.tcpFlags & TCP_RST)) return reflectReset(d, buf);
    // A RST from the client side ends the flow only inside the window the
    // daemon's last acknowledgment opens (RFC 5961 §3): a blind spoofed RST
    // would have to guess it. 0 = the daemon has acknowledged nothing yet.
    if (d.tcpFlags & TCP_RST) {
      const ackOut = table.u32[id * REC_WORDS + R_ACK_OUT];
      if (ackOut !== 0 && ((d.tcp.seqNumber - ackOut) >>> 0) >= RST_WINDOW) {
        d.balancer.stats.dropAt(port.id, Drop.RstOutOfWindow);
        return VERDICT_DROP;
      }
    }
    advanceTcp(d, id, false, now);
  }

  const u32 = table.u32;
  const b = id * REC_WORDS;
  const f = id * REC_F64;
  const f64 = table.f64;
  const daemonId = u32[b + R_DAEMON_ID];
  f64[f + RF_EXPIRES] = now + d.timeouts[u32[b + R_STATE] & STATE_MASK];
  f64[f + RF_LAST_SEEN] = now;
  f64[f + RF_PACKETS_IN] += d.segments;
  f64[f + RF_BYTES_IN] += d.wireBytes;
  const stats = d.balancer.stats.daemon;
  stats[daemonId * DAEMON_COLUMNS + D_PACKETS_IN] += d.segments;
  stats[daemonId * DAEMON_COLUMNS + D_BYTES_IN] += d.wireBytes;
  d.balancer.stats.forwardedIn++;

  d.lastRecordId = id;
  rewriteAddressAndPort(
    buf, d.family, d.ipOff, d.ipOff + (d.family === 4 ? IPV4_DST_ADDR : IPV6_DST_ADDR),
    u32, b + R_DAEMON_ADDR, d.l4Off + (tcp ? TCP_DST_PORT : UDP_DST_PORT), u32[b + R_META] >>> 16,
    d.l4Off + (tcp ? TCP_CHECKSUM : UDP_CHECKSUM), !tcp, d.partial,
  );
  return VERDICT_FORWARD;
}
