// The TCP state of a connection record, as a dispatcher in the middle sees it:
// driven by the flags of packets in both directions (client→daemon is "in",
// daemon→client is "out"), modelled on IPVS's tcp state table. It decides the
// state and its timeout (nextTcpState, pure) and moves a record to it
// (advanceTcp); the connection table only stores them.

import { TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { LIST_CLOSED, LIST_NONE, LIST_UNCONFIRMED, R_DAEMON_ID, R_STATE, REC_F64, REC_WORDS, RF_CREATED } from './conn-table.js';
import { D_SYN_ANSWERED, D_SYN_REFUSED, D_SYN_TIME_MS, DAEMON_COLUMNS } from './stats.js';
import type { TranslateContext } from './translate-context.js';

export const ConnState = {
  None: 0,
  /** The client's SYN went to the daemon; no answer yet. */
  SynRecv: 1,
  /** The daemon answered with SYN-ACK; the client has not acknowledged it. */
  SynAck: 2,
  Established: 3,
  /** The client sent FIN first. */
  FinWait: 4,
  /** The daemon sent FIN first. */
  CloseWait: 5,
  /** Both sides sent FIN; the last one is not yet acknowledged. */
  LastAck: 6,
  TimeWait: 7,
  /** Reset by either side. */
  Close: 8,
  /** A UDP flow (no connection state; idle timeout only). */
  Udp: 9,
} as const;
export type ConnState = (typeof ConnState)[keyof typeof ConnState];

export const CONN_STATE_NAMES: readonly string[] = [
  'NONE', 'SYN_RECV', 'SYN_ACK', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'UDP',
];

/** Record flags, stored above the state byte. */
export const FLAG_FIN_IN = 1 << 8;
export const FLAG_FIN_OUT = 1 << 9;
/** The daemon has answered (SYN-ACK, or any UDP reply). */
export const FLAG_REPLIED = 1 << 10;
/** The record counts towards its daemon's active flows. */
export const FLAG_ACTIVE = 1 << 11;
/** The flow is to be reset: the next packet from either side is answered with a RST (reset.ts). */
export const FLAG_RESET = 1 << 12;
export const STATE_MASK = 0xff;

/** Timeouts per state, in seconds. Defaults follow IPVS (net/netfilter/ipvs/ip_vs_proto_tcp.c). */
export interface Timeouts {
  established: number;
  synRecv: number;
  finWait: number;
  closeWait: number;
  lastAck: number;
  timeWait: number;
  close: number;
  udp: number;
}

export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({
  established: 900,
  synRecv: 60,
  finWait: 120,
  closeWait: 60,
  lastAck: 30,
  timeWait: 120,
  close: 10,
  udp: 300,
});

/** Timeouts in milliseconds indexed by ConnState, for the packet path. */
export function timeoutTable(t: Timeouts): Float64Array {
  const table = new Float64Array(CONN_STATE_NAMES.length);
  table[ConnState.SynRecv] = t.synRecv * 1000;
  table[ConnState.SynAck] = t.synRecv * 1000;
  table[ConnState.Established] = t.established * 1000;
  table[ConnState.FinWait] = t.finWait * 1000;
  table[ConnState.CloseWait] = t.closeWait * 1000;
  table[ConnState.LastAck] = t.lastAck * 1000;
  table[ConnState.TimeWait] = t.timeWait * 1000;
  table[ConnState.Close] = t.close * 1000;
  table[ConnState.Udp] = t.udp * 1000;
  return table;
}

/** Which eviction list a record in `state` belongs on. */
export function evictionList(state: number, flags: number): number {
  if (state === ConnState.SynRecv || state === ConnState.SynAck) return LIST_UNCONFIRMED;
  if (state === ConnState.Udp) return (flags & FLAG_REPLIED) === 0 ? LIST_UNCONFIRMED : LIST_NONE;
  if (state === ConnState.TimeWait || state === ConnState.Close) return LIST_CLOSED;
  return LIST_NONE;
}

/** True for states whose record no longer counts as an active flow. */
export function isEnded(state: number): boolean {
  return state === ConnState.TimeWait || state === ConnState.Close;
}

/**
 * The next value of a record's state word (state | flags) after a TCP packet
 * with `tcpFlags` in direction `outbound` (false = client to daemon).
 * Pure; never throws.
 */
export function nextTcpState(word: number, tcpFlags: number, outbound: boolean): number {
  let state = word & STATE_MASK;
  let flags = word & ~STATE_MASK;
  if (tcpFlags & TCP_RST) return ConnState.Close | flags;
  if (state === ConnState.Close || state === ConnState.TimeWait) return word;

  if (tcpFlags & TCP_SYN) {
    // A daemon's SYN-ACK answers the client's SYN; a repeated SYN changes nothing.
    if (outbound && (tcpFlags & TCP_ACK_FLAG) && state === ConnState.SynRecv) {
      return ConnState.SynAck | flags | FLAG_REPLIED;
    }
    return word;
  }

  if (tcpFlags & TCP_FIN) {
    flags |= outbound ? FLAG_FIN_OUT : FLAG_FIN_IN;
    if ((flags & FLAG_FIN_IN) && (flags & FLAG_FIN_OUT)) state = ConnState.LastAck;
    else if (state === ConnState.SynRecv) state = ConnState.Close; // aborted before the handshake finished
    else state = outbound ? ConnState.CloseWait : ConnState.FinWait;
    return state | flags;
  }

  if (tcpFlags & TCP_ACK_FLAG) {
    if (state === ConnState.SynAck && !outbound) return ConnState.Established | flags;
    if (state === ConnState.LastAck) return ConnState.TimeWait | flags;
  }
  return word;
}

/**
 * Moves record `id` to its next TCP state for the packet in `d` (direction
 * `outbound`), keeping its eviction list, its daemon's active count and the
 * passive health counters in step. Packet path, for translateInbound and
 * translateOutbound; `now` in ms.
 */
export function advanceTcp(d: TranslateContext, id: number, outbound: boolean, now: number): void {
  const table = d.table;
  const at = id * REC_WORDS + R_STATE;
  const word = table.u32[at];
  let next = nextTcpState(word, d.tcpFlags, outbound);
  if (next === word) return;
  const state = next & STATE_MASK;
  if (outbound && (word & STATE_MASK) === ConnState.SynRecv) {
    // Passive health signals (health/passive.ts): the daemon answered the SYN, or refused it.
    const s = d.balancer.stats.daemon;
    const b = table.u32[id * REC_WORDS + R_DAEMON_ID] * DAEMON_COLUMNS;
    if (state === ConnState.SynAck) {
      s[b + D_SYN_ANSWERED]++;
      s[b + D_SYN_TIME_MS] += now - table.f64[id * REC_F64 + RF_CREATED];
    } else if (state === ConnState.Close) {
      s[b + D_SYN_REFUSED]++;
    }
  }
  if (isEnded(state) && (next & FLAG_ACTIVE)) {
    next &= ~FLAG_ACTIVE;
    d.balancer.flowEnded(table.u32[id * REC_WORDS + R_DAEMON_ID]);
  }
  table.u32[at] = next >>> 0;
  if (state !== (word & STATE_MASK)) table.setList(id, evictionList(state, next));
}
