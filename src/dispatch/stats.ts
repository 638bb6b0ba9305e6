// Named counters of the dispatch layer, in typed arrays indexed by daemon id
// and cluster-port id so the packet path bumps numbers, never objects. Readers
// (metrics, API, tests) sum them up; nothing here is reset while running.

import { DROP_REASON_COUNT } from './drop-reason.js';

export const D_NEW_FLOWS = 0;
export const D_ACTIVE_FLOWS = 1;
export const D_PACKETS_IN = 2;
export const D_BYTES_IN = 3;
export const D_PACKETS_OUT = 4;
export const D_BYTES_OUT = 5;
// Passive health signals (health/passive.ts): SYNs sent to the daemon, its
// SYN-ACKs, the sum of SYN→SYN-ACK times in ms, and RSTs in answer to a SYN.
export const D_SYNS = 6;
export const D_SYN_ANSWERED = 7;
export const D_SYN_TIME_MS = 8;
export const D_SYN_REFUSED = 9;
export const DAEMON_COLUMNS = 10;

export interface DaemonCounters {
  newFlows: number;
  activeFlows: number;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
}

export class Stats {
  /** Per daemon id: DAEMON_COLUMNS doubles (D_*). */
  daemon = new Float64Array(64 * DAEMON_COLUMNS);
  /** Per cluster-port id: drops by reason (DROP_REASON_COUNT doubles). */
  portDrops = new Float64Array(16 * DROP_REASON_COUNT);
  /** Drops by reason over everything (includes the per-port ones). */
  readonly drops = new Float64Array(DROP_REASON_COUNT);
  /** Packets translated client → daemon and daemon → client (a super-packet counts once here; per-daemon and per-flow counters count its segments). */
  forwardedIn = 0;
  forwardedOut = 0;
  /** Super-packets (GSO, from a link with offloads on) among the packets handled. */
  superPackets = 0;
  /** RSTs sent on flows reset on purpose (see reset.ts). */
  resetsSent = 0;
  /** Segments of unknown connections given back to their daemon by a consistent-hash scheduler (inbound.ts). */
  recovered = 0;
  /** Echo requests to a cluster address answered, and ICMP errors about a flow translated (icmp-translate.ts). */
  echoReplies = 0;
  icmpTranslated = 0;
  /** Daemon packets of connections hostlb did not dispatch, handed back unchanged (see outbound.ts). */
  passedThrough = 0;
  /** ICMP port unreachable answers to UDP flows no daemon could take (see reject.ts). */
  unreachableSent = 0;

  /** Control path: makes room for daemon ids below `count`. */
  ensureDaemons(count: number): void {
    if (count * DAEMON_COLUMNS <= this.daemon.length) return;
    const grown = new Float64Array(Math.max(count, (this.daemon.length / DAEMON_COLUMNS) * 2) * DAEMON_COLUMNS);
    grown.set(this.daemon);
    this.daemon = grown;
  }

  /** Control path: makes room for cluster-port ids below `count`. */
  ensurePorts(count: number): void {
    if (count * DROP_REASON_COUNT <= this.portDrops.length) return;
    const grown = new Float64Array(Math.max(count, (this.portDrops.length / DROP_REASON_COUNT) * 2) * DROP_REASON_COUNT);
    grown.set(this.portDrops);
    this.portDrops = grown;
  }

  /** Packet path: counts a drop that belongs to no cluster port. */
  drop(reason: number): void {
    this.drops[reason]++;
  }

  /** Packet path: counts a drop of a known cluster port. */
  dropAt(portId: number, reason: number): void {
    this.drops[reason]++;
    this.portDrops[portId * DROP_REASON_COUNT + reason]++;
  }

  daemonCounters(id: number): DaemonCounters {
    const b = id * DAEMON_COLUMNS;
    const d = this.daemon;
    return {
      newFlows: d[b + D_NEW_FLOWS], activeFlows: d[b + D_ACTIVE_FLOWS],
      packetsIn: d[b + D_PACKETS_IN], bytesIn: d[b + D_BYTES_IN],
      packetsOut: d[b + D_PACKETS_OUT], bytesOut: d[b + D_BYTES_OUT],
    };
  }

  portDropCounts(portId: number): Float64Array {
    return this.portDrops.slice(portId * DROP_REASON_COUNT, (portId + 1) * DROP_REASON_COUNT);
  }
}
