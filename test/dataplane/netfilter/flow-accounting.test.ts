// The netfilter plane's flow accounting, Katran style: each row replays
// decisions (FlowAccounting.decide, or QueueDecision over a built packet),
// conntrack events, lookups, sweeps and clock steps, and states the expected
// per-daemon counts, flows, pending handshakes, onEvent verdicts and the
// handshakes handed out. One runner executes every row. Then the client keys,
// and fast-check sequences that must leave no daemon's active count negative.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { clientKey, clientTuple, tupleKey, type ClientTuple } from '../../../src/dataplane/netfilter/client-key.js';
import { EVENT_DONE, EVENT_FORGET, FlowAccounting, PENDING_MS, SWEEP_GRACE_MS, UNDECIDED, type FlowEvent, type LiveFlow } from '../../../src/dataplane/netfilter/flow-accounting.js';
import { ANSWERED_BIT, ENDING_BIT, QUIET_BIT, REJECT_ID } from '../../../src/dataplane/netfilter/marks.js';
import { QueueDecision } from '../../../src/dataplane/netfilter/queue-decision.js';
import { Balancer } from '../../../src/dispatch/balancer.js';
import type { ClusterPort, DispatchSpec } from '../../../src/dispatch/config-tree.js';
import { Drop } from '../../../src/dispatch/drop-reason.js';
import {
  D_ACTIVE_FLOWS, D_BYTES_IN, D_BYTES_OUT, D_NEW_FLOWS, D_PACKETS_IN, D_PACKETS_OUT, D_SYN_ANSWERED, D_SYN_REFUSED, D_SYN_TIME_MS, D_SYNS, DAEMON_COLUMNS,
} from '../../../src/dispatch/stats.js';
import { EVENT_DESTROY, EVENT_NEW, EVENT_UPDATE, IPS_SEEN_REPLY, TcpCt } from '../../../src/netlink/conntrack.js';
import { parseIp } from '../../../src/wire/address.js';
import { buildTcp, buildUdp } from '../../support/packet-builder.js';

// ---------------------------------------------------------------------------
// The configuration every row starts from.

const MARK_BASE = 0x686c0000;
/** Another hostlb's netfilter.mark on the same host. */
const OTHER_BASE = 0x12340000;
const V4 = '198.18.100.1';
const V6 = '2001:db8::100';
const C4 = '198.18.0.1';
const C6 = '2001:db8:1::10';
const START = 1_000;

const SPEC: DispatchSpec = {
  clusters: [
    {
      address: V4,
      ports: [
        { port: 80, scheduler: 'rr', daemons: [{ address: '198.18.2.1:8080' }, { address: '198.18.2.2:8080' }] },
        { port: 53, protocol: 'udp', scheduler: 'rr', daemons: [{ address: '198.18.2.3:5353' }] },
        { port: 443, scheduler: 'rr', daemons: [{ address: '198.18.2.4:8443' }] },
      ],
    },
    { address: V6, ports: [{ port: 443, scheduler: 'rr', daemons: [{ address: '[2001:db8:2::1]:8443' }] }] },
  ],
};

/** The daemons by the names rows use. */
const DAEMONS = { a: '198.18.2.1:8080', b: '198.18.2.2:8080', u: '198.18.2.3:5353', t: '198.18.2.4:8443', s: '[2001:db8:2::1]:8443' } as const;
type DaemonName = keyof typeof DAEMONS;
const DAEMON_NAMES = Object.keys(DAEMONS) as DaemonName[];

/** A flow's client side and the cluster port it goes to. */
interface Client {
  family: 4 | 6;
  protocol: 6 | 17;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
}

const tcp = (srcPort: number, dstPort = 80): Client => ({ family: 4, protocol: 6, src: C4, dst: V4, srcPort, dstPort });
const udp = (srcPort: number): Client => ({ family: 4, protocol: 17, src: C4, dst: V4, srcPort, dstPort: 53 });
const tcp6 = (srcPort: number): Client => ({ family: 6, protocol: 6, src: C6, dst: V6, srcPort, dstPort: 443 });

function tupleOf(c: Client): ClientTuple {
  const t: ClientTuple = { family: c.family, protocol: c.protocol, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort: c.srcPort, dstPort: c.dstPort };
  t.src.set(parseIp(c.src)!.bytes);
  t.dst.set(parseIp(c.dst)!.bytes);
  return t;
}

function keyOf(c: Client): number | string {
  const src = parseIp(c.src)!.bytes;
  return clientKey(c.protocol, src, 0, src.length, c.srcPort, c.dstPort);
}

// ---------------------------------------------------------------------------
// Conntrack messages as plain objects. The tuple and the counters are filled
// only when the accounting asks (tuples(), counters()), as CtEvent reads them
// from the socket's buffer: a path that reads them without asking sees zeros.

class FakeEvent implements FlowEvent {
  readonly orig: ClientTuple = { family: 0, protocol: 0, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort: 0, dstPort: 0 };
  packetsOrig = 0;
  bytesOrig = 0;
  packetsReply = 0;
  bytesReply = 0;

  constructor(
    readonly kind: number,
    readonly id: number,
    readonly mark: number,
    readonly status: number,
    readonly tcpState: number,
    private readonly tuple: ClientTuple | null,
    private readonly counts: readonly [number, number, number, number],
    readonly reply: ClientTuple | null = null,
  ) {}

  tuples(): boolean {
    const t = this.tuple;
    if (t === null) return false;
    Object.assign(this.orig, { family: t.family, protocol: t.protocol, srcPort: t.srcPort, dstPort: t.dstPort });
    this.orig.src.set(t.src);
    this.orig.dst.set(t.dst);
    return true;
  }

  counters(): void {
    [this.packetsOrig, this.bytesOrig, this.packetsReply, this.bytesReply] = this.counts;
  }
}

interface EventSpec {
  kind: number;
  /** Conntrack id of the entry. */
  ct: number;
  flow: Client;
  /** The daemon the mark names, by name or as a raw id (REJECT_ID, an id no daemon has). */
  daemon: DaemonName | number;
  /** TcpCt state; -1 when the message carries none. */
  state: number;
  seenReply?: boolean;
  /** Event bits of the mark (marks.ts). */
  bits?: number;
  markBase?: number;
  /** Packets and bytes in, packets and bytes out. */
  counters?: readonly [number, number, number, number];
  /** tuples() fails (a message hostlb cannot read). */
  malformed?: boolean;
  /** The reply tuple's source: where conntrack translated the flow to (a daemon, or an endpoint no daemon has); none when absent. */
  natTo?: DaemonName | typeof NOBODY;
}

type EventMore = Partial<Pick<EventSpec, 'seenReply' | 'bits' | 'markBase' | 'counters' | 'malformed' | 'state' | 'natTo'>>;

/** An endpoint no daemon of SPEC has. */
const NOBODY = '198.18.9.9:8080';

/** The reply tuple of `flow` translated to `endpoint`: from there back to the client. */
function replyOf(flow: Client, endpoint: string): ClientTuple {
  const at = endpoint.lastIndexOf(':');
  const address = parseIp(endpoint.slice(0, at).replace(/^\[|\]$/g, ''))!;
  const t: ClientTuple = { family: address.family, protocol: flow.protocol, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort: Number(endpoint.slice(at + 1)), dstPort: flow.srcPort };
  t.src.set(address.bytes);
  t.dst.set(parseIp(flow.src)!.bytes);
  return t;
}

const ENDED = new Set<number>([TcpCt.FinWait, TcpCt.CloseWait, TcpCt.LastAck, TcpCt.TimeWait, TcpCt.Close]);

/** The entry's creation (UDP; a TCP one in SYN_SENT as a dump or a lookup lists it). */
const created = (ct: number, flow: Client, daemon: DaemonName | number, more: EventMore = {}): EventSpec =>
  ({ kind: EVENT_NEW, ct, flow, daemon, state: flow.protocol === 6 ? TcpCt.SynSent : -1, bits: flow.protocol === 6 ? 0 : ANSWERED_BIT, ...more });
/** A TCP state change (UPDATE with protoinfo), with the mark bits host-plan.ts would have set by then. */
const update = (ct: number, flow: Client, daemon: DaemonName | number, state: number, more: EventMore = {}): EventSpec =>
  ({ kind: EVENT_UPDATE, ct, flow, daemon, state, seenReply: state !== TcpCt.SynSent, bits: ENDED.has(state) ? ANSWERED_BIT | ENDING_BIT : ANSWERED_BIT, ...more });
/** The daemon's SYN-ACK: the first event of a TCP flow. */
const synAck = (ct: number, flow: Client, daemon: DaemonName | number, more: EventMore = {}): EventSpec => update(ct, flow, daemon, TcpCt.SynRecv, more);
const destroyed = (ct: number, flow: Client, daemon: DaemonName | number, more: EventMore = {}): EventSpec =>
  ({ kind: EVENT_DESTROY, ct, flow, daemon, state: -1, bits: ANSWERED_BIT | QUIET_BIT, ...more });

// ---------------------------------------------------------------------------
// Rows: inputs and expected outputs.

interface Counts {
  active: number;
  new: number;
  syns: number;
  answered: number;
  refused: number;
  synTime: number;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
}

const ZERO: Counts = { active: 0, new: 0, syns: 0, answered: 0, refused: 0, synTime: 0, packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0 };

interface Expect {
  /** Every daemon's counts: fields left out, and daemons left out, are 0. */
  counts?: Partial<Record<DaemonName, Partial<Counts>>>;
  flows?: number;
  pending?: number;
  overflows?: number;
  swept?: number;
  events?: number;
  /** Daemons a flow or pending handshake still names (daemonsHeld). */
  held?: DaemonName[];
  /** Decisions no daemon could take (Drop.NoDaemon). */
  noDaemon?: number;
}

type Want = DaemonName | 'reject' | 'undecided';

type Step =
  | { op: 'decide'; flow: Client; want: Want }
  | { op: 'queue'; packet: Uint8Array; copied?: number; want: Want }
  | { op: 'event'; ev: EventSpec; want: 'done' | 'forget' }
  | { op: 'restore'; ev: EventSpec }
  | { op: 'confirmed'; ev: EventSpec }
  | { op: 'tick'; ms: number }
  | { op: 'expire' }
  | { op: 'weight'; daemon: DaemonName; weight: number }
  | { op: 'release'; want: Client[] }
  | { op: 'unconfirmed'; age: number; want: Client[] }
  | { op: 'reconcile'; live: LiveSpec[] }
  | { op: 'forgetDaemon'; daemon: DaemonName; want: number }
  | { op: 'check'; want: Expect };

interface LiveSpec {
  ct: number;
  flow: Client;
  daemon: DaemonName | number;
  state: number;
}

interface Row {
  name: string;
  options?: { maxPending?: number };
  steps: Step[];
  end: Expect & Required<Pick<Expect, 'counts' | 'flows' | 'pending'>>;
  /** Set on a row that shows a suspected defect: what the accounting does wrong. */
  todo?: string;
}

const decide = (flow: Client, want: Want): Step => ({ op: 'decide', flow, want });
const queue = (packet: Uint8Array, want: Want, copied?: number): Step => ({ op: 'queue', packet, want, copied });
const event = (ev: EventSpec, want: 'done' | 'forget' = 'done'): Step => ({ op: 'event', ev, want });
const restore = (ev: EventSpec): Step => ({ op: 'restore', ev });
const confirmed = (ev: EventSpec): Step => ({ op: 'confirmed', ev });
const tick = (ms: number): Step => ({ op: 'tick', ms });
const expire: Step = { op: 'expire' };
const weight = (daemon: DaemonName, w: number): Step => ({ op: 'weight', daemon, weight: w });
const release = (...want: Client[]): Step => ({ op: 'release', want });
const unconfirmed = (age: number, ...want: Client[]): Step => ({ op: 'unconfirmed', age, want });
const reconcile = (...live: LiveSpec[]): Step => ({ op: 'reconcile', live });
const forgetDaemon = (daemon: DaemonName, want: number): Step => ({ op: 'forgetDaemon', daemon, want });
const check = (want: Expect): Step => ({ op: 'check', want });
const live = (ct: number, flow: Client, daemon: DaemonName | number, state: number): LiveSpec => ({ ct, flow, daemon, state });

const synPacket = (c: Client): Uint8Array => buildTcp({ src: c.src, dst: c.dst, srcPort: c.srcPort, dstPort: c.dstPort, flags: 'S', seq: 1 });

const f1 = tcp(40001);
const f2 = tcp(40002);
const f3 = tcp(40003);
const f4 = tcp(40004);
const u1 = udp(5300);
const s1 = tcp6(40001);

const ROWS: Row[] = [
  // ---- a TCP flow's life --------------------------------------------------
  {
    name: 'TCP: decided, answered (SYN-ACK), established, the first FIN ends it, later events ignored',
    steps: [
      decide(f1, 'a'),
      check({ counts: { a: { new: 1, active: 1 } }, flows: 0, pending: 1, held: ['a'] }),
      tick(3),
      event(synAck(7, f1, 'a')),
      check({ counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 3 } }, flows: 1, pending: 0, held: ['a'] }),
      tick(1_000),
      event(update(7, f1, 'a', TcpCt.Established)),
      check({ counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 3 } }, flows: 1 }),
      event(update(7, f1, 'a', TcpCt.FinWait)),
      check({ counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 3 } }, flows: 0, held: [] }),
      event(update(7, f1, 'a', TcpCt.LastAck)),
      event(update(7, f1, 'a', TcpCt.TimeWait)),
      event(destroyed(7, f1, 'a', { seenReply: true })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 3 } }, flows: 0, pending: 0, events: 6 },
  },
  {
    name: 'TCP: the SYN-ACK\'s event lost, the established one answers the SYN; a destroy without FIN brings the counters',
    steps: [
      decide(f1, 'a'),
      tick(4),
      event(update(7, f1, 'a', TcpCt.Established)),
      check({ counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 4 } }, flows: 1, pending: 0 }),
      tick(60_000),
      event(destroyed(7, f1, 'a', { seenReply: true, counters: [12, 1_400, 10, 9_000] })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 4, packetsIn: 12, bytesIn: 1_400, packetsOut: 10, bytesOut: 9_000 } }, flows: 0, pending: 0 },
  },
  {
    name: 'TCP: the first FIN\'s event lost, straight to TIME_WAIT: the flow ends once',
    steps: [
      decide(f1, 'a'),
      tick(2),
      event(synAck(7, f1, 'a')),
      event(update(7, f1, 'a', TcpCt.TimeWait)),
      check({ counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 2 } }, flows: 0 }),
      event(destroyed(7, f1, 'a', { seenReply: true })),
      // A state change of a flow hostlb forgot: not a RST of a flow it follows, nothing to delete.
      event(update(7, f1, 'a', TcpCt.Close), 'done'),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 2 } }, flows: 0, pending: 0 },
  },
  {
    name: 'TCP: no FIN event at all, the destroy ends the flow once; a repeated destroy changes nothing',
    steps: [
      decide(f1, 'a'),
      tick(2),
      event(synAck(7, f1, 'a')),
      event(destroyed(7, f1, 'a', { seenReply: true, counters: [5, 500, 4, 400] })),
      event(destroyed(7, f1, 'a', { seenReply: true, counters: [5, 500, 4, 400] })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 2, packetsIn: 5, bytesIn: 500, packetsOut: 4, bytesOut: 400 } }, flows: 0, pending: 0 },
  },
  {
    name: 'TCP: the daemon\'s RST ends the flow in CLOSE (its entry is to be deleted); a new SYN from the same client port is a new flow',
    steps: [
      decide(f1, 'a'),
      tick(1),
      event(synAck(7, f1, 'a')),
      tick(10),
      event(update(7, f1, 'a', TcpCt.Close), 'forget'),
      check({ counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 1 } }, flows: 0, pending: 0 }),
      decide(f1, 'b'),
      check({ counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 1 }, b: { new: 1, active: 1 } }, flows: 0, pending: 1 }),
      tick(2),
      event(synAck(8, f1, 'b')),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 1 }, b: { new: 1, active: 1, syns: 1, answered: 1, synTime: 2 } }, flows: 1, pending: 0 },
  },
  {
    name: 'TCP: the client\'s RST during the handshake: the SYN counts as sent, unanswered, and the entry is to be deleted',
    steps: [
      decide(f1, 'a'),
      event(update(7, f1, 'a', TcpCt.Close, { seenReply: false }), 'forget'),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1 } }, flows: 0, pending: 0 },
  },

  {
    name: 'TCP: the SYN-ACK\'s event lost, the first FIN\'s event answers the SYN as the established one does',
    steps: [
      decide(f1, 'a'),
      tick(4),
      event(update(7, f1, 'a', TcpCt.FinWait)),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 4 } }, flows: 0, pending: 0 },
  },

  // ---- SYNs refused or answered without their event -----------------------
  {
    name: 'refused SYN: destroyed with no reply seen and no earlier event counts one SYN refused',
    steps: [
      decide(f1, 'a'),
      tick(2),
      event(destroyed(7, f1, 'a', { seenReply: false, bits: 0 })),
      check({ counts: { a: { new: 1, active: 0, syns: 1, refused: 1 } }, flows: 0, pending: 0 }),
      event(destroyed(7, f1, 'a', { seenReply: false, bits: 0 })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, refused: 1 } }, flows: 0, pending: 0 },
  },
  {
    name: 'SYN answered, its SYN-ACK event lost, then destroyed with a reply seen: answered, not refused',
    steps: [
      decide(f1, 'a'),
      tick(6),
      event(destroyed(7, f1, 'a', { seenReply: true })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1, synTime: 6 } }, flows: 0, pending: 0 },
  },
  {
    name: 'refused SYN already confirmed counts its SYN once',
    steps: [
      decide(f1, 'a'),
      tick(60),
      unconfirmed(50, f1),
      confirmed(created(7, f1, 'a')),
      check({ counts: { a: { new: 1, active: 1, syns: 1 } }, pending: 1 }),
      event(destroyed(7, f1, 'a', { seenReply: false, bits: 0 })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, refused: 1 } }, flows: 0, pending: 0 },
  },

  // ---- retransmitted first packets ----------------------------------------
  {
    name: 'a retransmitted first packet goes to the same daemon and counts once (the scheduler is not asked again)',
    steps: [
      decide(f1, 'a'),
      decide(f1, 'a'),
      check({ counts: { a: { new: 1, active: 1 } }, pending: 1 }),
      decide(f2, 'b'),
    ],
    end: { counts: { a: { new: 1, active: 1 }, b: { new: 1, active: 1 } }, flows: 0, pending: 2 },
  },
  {
    name: 'a retransmitted first packet after its daemon stopped taking new flows goes to the other; the first stops counting',
    steps: [
      decide(f1, 'a'),
      weight('a', 0),
      decide(f1, 'b'),
      check({ counts: { a: { new: 1, active: 0 }, b: { new: 1, active: 1 } }, pending: 1, held: ['b'] }),
      tick(3),
      event(synAck(8, f1, 'b')),
    ],
    end: { counts: { a: { new: 1, active: 0 }, b: { new: 1, active: 1, syns: 1, answered: 1, synTime: 3 } }, flows: 1, pending: 0, held: ['b'] },
  },

  // ---- flows hostlb did not decide ----------------------------------------
  {
    name: 'fallback hash: the first event, NEW with the daemon\'s mark, counts the flow new and active',
    steps: [
      event(created(9, f1, 'b')),
      check({ counts: { b: { new: 1, active: 1, syns: 1 } }, flows: 1, pending: 0 }),
      tick(5),
      event(synAck(9, f1, 'b')),
      check({ counts: { b: { new: 1, active: 1, syns: 1, answered: 1, synTime: 5 } }, flows: 1 }),
      event(destroyed(9, f1, 'b', { seenReply: true })),
    ],
    end: { counts: { b: { new: 1, active: 0, syns: 1, answered: 1, synTime: 5 } }, flows: 0, pending: 0 },
  },
  {
    name: 'fallback hash, TCP as conntrack reports it: the first event is the daemon\'s SYN-ACK',
    steps: [event(synAck(9, f1, 'a'))],
    end: { counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 0 } }, flows: 1, pending: 0 },
  },

  // ---- pending handshakes: expiry, bound, lookups, release ----------------
  {
    name: 'a pending handshake with no event stops counting PENDING_MS after its decision',
    steps: [
      decide(f1, 'a'),
      tick(PENDING_MS - 1),
      expire,
      check({ counts: { a: { new: 1, active: 1 } }, pending: 1 }),
      tick(1),
      expire,
      check({ counts: { a: { new: 1, active: 0 } }, pending: 0, held: [] }),
      expire,
      // Its entry never made it (dropped after the verdict): a stray destroy finds nothing to end.
      event(destroyed(7, f1, 'a', { seenReply: false, bits: 0 })),
    ],
    end: { counts: { a: { new: 1, active: 0 } }, flows: 0, pending: 0 },
  },
  {
    name: 'a confirmed handshake the daemon answers after PENDING_MS is one new flow and one SYN',
    steps: [
      decide(f1, 'a'),
      tick(60),
      unconfirmed(50, f1),
      confirmed(created(7, f1, 'a')),
      tick(PENDING_MS),
      expire,
      event(synAck(7, f1, 'a')),
    ],
    end: { counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: PENDING_MS + 60 } }, flows: 1, pending: 0 },
  },
  {
    name: 'maxPending bounds the pending handshakes; one beyond it counts when conntrack reports it',
    options: { maxPending: 2 },
    steps: [
      decide(f1, 'a'),
      decide(f2, 'b'),
      decide(f3, 'a'),
      check({ counts: { a: { new: 1, active: 1 }, b: { new: 1, active: 1 } }, pending: 2, overflows: 1 }),
      event(synAck(3, f3, 'a')),
    ],
    end: { counts: { a: { new: 2, active: 2, syns: 1, answered: 1 }, b: { new: 1, active: 1 } }, flows: 1, pending: 2, overflows: 1 },
  },
  {
    name: 'confirmed: a handshake conntrack holds counts its SYN once, also when its SYN-ACK comes later; lookups only for old TCP ones, once',
    steps: [
      decide(f1, 'a'),
      decide(u1, 'u'),
      tick(100),
      decide(f2, 'b'),
      unconfirmed(50, f1),
      unconfirmed(50),
      confirmed(created(7, f1, 'a')),
      confirmed(created(7, f1, 'a')),
      check({ counts: { a: { new: 1, active: 1, syns: 1 }, b: { new: 1, active: 1 }, u: { new: 1, active: 1 } }, pending: 3 }),
      tick(100),
      unconfirmed(50, f2),
      // An entry with another daemon's mark is not this handshake's.
      confirmed(created(8, f2, 'a')),
      tick(20),
      event(synAck(7, f1, 'a')),
    ],
    end: { counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 220 }, b: { new: 1, active: 1 }, u: { new: 1, active: 1 } }, flows: 1, pending: 2 },
  },
  {
    name: 'releaseTakenOut: handshakes at a daemon taken out are handed out once and stop counting',
    steps: [
      decide(f1, 'a'),
      decide(f2, 'b'),
      decide(f3, 'a'),
      decide(f4, 'b'),
      release(),
      weight('a', 0),
      release(f1, f3),
      check({ counts: { a: { new: 2, active: 0 }, b: { new: 2, active: 2 } }, pending: 2, held: ['b'] }),
      release(),
      // The plane deleted the entry: its destroy finds nothing to end.
      event(destroyed(1, f1, 'a', { seenReply: false, bits: 0 })),
      // The client's next SYN is a new connection, to the daemon that takes it.
      decide(f1, 'b'),
    ],
    end: { counts: { a: { new: 2, active: 0 }, b: { new: 3, active: 3 } }, flows: 0, pending: 3, held: ['b'] },
  },

  // ---- comparisons with conntrack ----------------------------------------
  {
    name: 'reconcile ends a counted flow conntrack no longer lists once it is older than SWEEP_GRACE_MS',
    steps: [
      decide(f1, 'a'),
      event(synAck(7, f1, 'a')),
      tick(SWEEP_GRACE_MS - 1),
      reconcile(),
      check({ counts: { a: { new: 1, active: 1, syns: 1, answered: 1 } }, flows: 1, swept: 0 }),
      tick(1),
      reconcile(),
      check({ counts: { a: { new: 1, active: 0, syns: 1, answered: 1 } }, flows: 0, swept: 1 }),
      event(destroyed(7, f1, 'a', { seenReply: true })),
      reconcile(),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1 } }, flows: 0, pending: 0, swept: 1 },
  },
  {
    name: 'reconcile counts a live flow it did not know, leaves handshakes and young pending ones alone, and takes over old pending ones',
    steps: [
      decide(f3, 'a'),
      tick(1_000),
      reconcile(
        live(9, f1, 'b', TcpCt.Established),
        live(10, f2, 'a', TcpCt.SynRecv),
        live(11, f3, 'a', TcpCt.Established),
        live(12, u1, 'u', -1),
        live(13, f4, REJECT_ID, TcpCt.Established),
        live(14, f4, 40, TcpCt.Established),
      ),
      check({ counts: { a: { new: 1, active: 1 }, b: { active: 1 }, u: { active: 1 } }, flows: 2, pending: 1, swept: 2 }),
      tick(SWEEP_GRACE_MS),
      reconcile(
        live(9, f1, 'b', TcpCt.Established),
        live(10, f2, 'a', TcpCt.SynRecv),
        live(11, f3, 'a', TcpCt.Established),
        live(12, u1, 'u', -1),
      ),
      check({ counts: { a: { new: 1, active: 1 }, b: { active: 1 }, u: { active: 1 } }, flows: 3, pending: 0, swept: 3 }),
      event(destroyed(9, f1, 'b', { seenReply: true })),
      event(destroyed(11, f3, 'a', { seenReply: true })),
      event(destroyed(12, u1, 'u', { seenReply: true })),
    ],
    end: { counts: { a: { new: 1, active: 0 } }, flows: 0, pending: 0, swept: 3 },
  },
  {
    name: 'reconcile does not hand a pending handshake to a live flow of another daemon under the same IPv4 key',
    steps: [
      decide(f1, 'a'),
      tick(SWEEP_GRACE_MS),
      // The same client address and port, to cluster port 443: the same IPv4 key.
      reconcile(live(9, tcp(40001, 443), 't', TcpCt.Established)),
      event(destroyed(9, tcp(40001, 443), 't', { seenReply: true })),
      tick(PENDING_MS),
      expire,
    ],
    end: { counts: { a: { new: 1, active: 0 }, t: { active: 0 } }, flows: 0, pending: 0 },
  },
  {
    name: 'restoring: live flows count active (not new), ended ones are not followed, and neither goes negative',
    steps: [
      restore(update(1, f1, 'a', TcpCt.Established)),
      restore(update(2, f2, 'b', TcpCt.TimeWait)),
      restore(created(3, u1, 'u')),
      check({ counts: { a: { active: 1 }, u: { active: 1 } }, flows: 2, pending: 0, held: ['a', 'u'] }),
      event(update(1, f1, 'a', TcpCt.FinWait)),
      event(destroyed(2, f2, 'b', { seenReply: true })),
      check({ counts: { u: { active: 1 } }, flows: 1 }),
      tick(SWEEP_GRACE_MS),
      reconcile(),
    ],
    end: { counts: {}, flows: 0, pending: 0, swept: 1 },
  },
  {
    // Ids are per run: with a daemon removed or the list reordered, an earlier run's mark may name another daemon.
    name: 'restoring: a flow counts for the daemon conntrack translated it to, whatever id its mark names; one translated to no daemon not at all',
    steps: [
      restore(update(1, f1, 'a', TcpCt.Established, { natTo: 'b' })),
      restore(update(2, f2, 'b', TcpCt.Established, { natTo: 'b' })),
      restore(update(3, f3, 'a', TcpCt.Established, { natTo: NOBODY })),
      check({ counts: { b: { active: 2 } }, flows: 2, held: ['b'] }),
      event(destroyed(1, f1, 'a', { seenReply: true, counters: [2, 200, 3, 300] })),
      event(destroyed(3, f3, 'a', { seenReply: true, counters: [1, 60, 1, 60] })),
    ],
    end: { counts: { b: { active: 1, packetsIn: 2, bytesIn: 200, packetsOut: 3, bytesOut: 300 } }, flows: 1, pending: 0 },
  },
  {
    // Seen in bench:e2e: a restart a minute after a run of short connections left thousands of TIME_WAIT
    // entries; the client's new SYNs reused their ports, conntrack reopened them under the same ids, and
    // every answer was taken for an old flow's state change: both daemons "ignored SYNs" and went down.
    name: 'restoring: a SYN on the addresses of an ended entry (conntrack reopens it, the new entry under the old id) is answered, not an old flow\'s change',
    steps: [
      restore(update(7, f1, 'a', TcpCt.TimeWait)),
      decide(f1, 'a'),
      confirmed(created(7, f1, 'a')),
      event(synAck(7, f1, 'a')),
    ],
    end: { counts: { a: { new: 1, active: 1, syns: 1, answered: 1 } }, flows: 1, pending: 0 },
  },
  {
    name: 'a daemon\'s SYN-ACK under the id of a flow past its handshake (its end unseen) ends that flow and answers the new one',
    steps: [
      restore(update(7, f1, 'a', TcpCt.Established)),
      check({ counts: { a: { active: 1 } }, flows: 1 }),
      decide(f1, 'a'),
      event(synAck(7, f1, 'a')),
      check({ counts: { a: { new: 1, active: 1, syns: 1, answered: 1 } }, flows: 1, pending: 0 }),
      event(destroyed(7, f1, 'a', { seenReply: true })),
    ],
    end: { counts: { a: { new: 1, active: 0, syns: 1, answered: 1 } }, flows: 0, pending: 0 },
  },
  {
    name: 'forgetDaemon ends every flow of the daemon; their destroys then change nothing',
    steps: [
      decide(f1, 'a'),
      event(synAck(1, f1, 'a')),
      decide(f2, 'b'),
      event(synAck(2, f2, 'b')),
      decide(f3, 'a'),
      event(synAck(3, f3, 'a')),
      decide(f4, 'b'),
      forgetDaemon('a', 2),
      check({ counts: { a: { new: 2, active: 0, syns: 2, answered: 2 }, b: { new: 2, active: 2, syns: 1, answered: 1 } }, flows: 1, pending: 1, held: ['b'] }),
      event(destroyed(1, f1, 'a', { seenReply: true })),
    ],
    end: { counts: { a: { new: 2, active: 0, syns: 2, answered: 2 }, b: { new: 2, active: 2, syns: 1, answered: 1 } }, flows: 1, pending: 1 },
  },

  // ---- events that are not this hostlb's ----------------------------------
  {
    name: 'events of another hostlb, of the reject mark, of an unknown daemon or unreadable change nothing',
    steps: [
      decide(f1, 'a'),
      event(synAck(7, f1, 'a', { markBase: OTHER_BASE })),
      event(destroyed(7, f1, 'a', { markBase: OTHER_BASE, counters: [1, 100, 1, 100] })),
      event(created(8, f1, REJECT_ID)),
      event(destroyed(8, f1, REJECT_ID, { seenReply: false, counters: [1, 100, 0, 0] })),
      event(synAck(9, f1, 40)),
      event(synAck(10, f1, 'a', { malformed: true })),
      event(destroyed(10, f1, 'a', { malformed: true })),
    ],
    // The unknown daemon's and the unreadable ones are hostlb's marks: counted as read, nothing else.
    end: { counts: { a: { new: 1, active: 1 } }, flows: 0, pending: 1, events: 3 },
  },
  {
    name: 'no daemon takes new flows: REJECT_ID, counted as a drop, nothing pending',
    steps: [
      weight('a', 0),
      weight('b', 0),
      decide(f1, 'reject'),
      queue(synPacket(f2), 'reject'),
    ],
    end: { counts: {}, flows: 0, pending: 0, noDaemon: 2 },
  },

  // ---- decisions from queued packets --------------------------------------
  {
    name: 'queue, TCP over IPv4: the SYN is decided and its conntrack event finds the handshake',
    steps: [
      queue(synPacket(f1), 'a'),
      queue(synPacket(f2), 'b'),
      check({ counts: { a: { new: 1, active: 1 }, b: { new: 1, active: 1 } }, pending: 2 }),
      tick(2),
      event(synAck(7, f1, 'a')),
    ],
    end: { counts: { a: { new: 1, active: 1, syns: 1, answered: 1, synTime: 2 }, b: { new: 1, active: 1 } }, flows: 1, pending: 1 },
  },
  {
    name: 'queue: packets hostlb cannot place are left to the fallback hash',
    steps: [
      queue(synPacket(tcp(40001, 81)), 'undecided'),
      queue(buildTcp({ src: C4, dst: '198.18.100.2', srcPort: 40001, dstPort: 80 }), 'undecided'),
      queue(synPacket(f1), 'undecided', 22),
      queue(synPacket(f1), 'undecided', 0),
      queue(buildUdp({ src: C4, dst: V4, srcPort: 5300, dstPort: 80 }), 'undecided'),
    ],
    end: { counts: {}, flows: 0, pending: 0 },
  },
  {
    name: 'UDP: decided from the queued datagram, created, destroyed with its counters (no SYNs)',
    steps: [
      queue(buildUdp({ src: C4, dst: V4, srcPort: 5300, dstPort: 53, payload: 'q' }), 'u'),
      check({ counts: { u: { new: 1, active: 1 } }, pending: 1 }),
      event(created(5, u1, 'u')),
      check({ counts: { u: { new: 1, active: 1 } }, flows: 1, pending: 0 }),
      tick(30_000),
      event(destroyed(5, u1, 'u', { seenReply: true, counters: [3, 300, 2, 200] })),
    ],
    end: { counts: { u: { new: 1, active: 0, packetsIn: 3, bytesIn: 300, packetsOut: 2, bytesOut: 200 } }, flows: 0, pending: 0 },
  },
  {
    name: 'IPv6: the SYN\'s string key finds the handshake when its event arrives',
    steps: [
      queue(synPacket(s1), 's'),
      tick(7),
      event(synAck(7, s1, 's')),
    ],
    end: { counts: { s: { new: 1, active: 1, syns: 1, answered: 1, synTime: 7 } }, flows: 1, pending: 0 },
  },
  {
    name: 'IPv6: a handshake looked up and released gives back its tuple',
    steps: [
      queue(synPacket(s1), 's'),
      tick(60),
      unconfirmed(50, s1),
      confirmed(created(7, s1, 's')),
      weight('s', 0),
      release(s1),
    ],
    end: { counts: { s: { new: 1, active: 0, syns: 1 } }, flows: 0, pending: 0 },
  },
];

// ---------------------------------------------------------------------------
// The runner.

class Harness {
  now = START;
  readonly balancer = new Balancer();
  readonly accounting: FlowAccounting;
  readonly decision: QueueDecision;
  private readonly weights = new Map<ClusterPort, Map<number, number>>();

  constructor(options: { maxPending?: number } = {}) {
    this.balancer.configure(SPEC);
    this.accounting = new FlowAccounting(this.balancer, { markBase: MARK_BASE, maxPending: options.maxPending, clock: () => this.now });
    this.decision = new QueueDecision(this.balancer, this.accounting, 0);
  }

  id(daemon: DaemonName | number): number {
    if (typeof daemon === 'number') return daemon;
    const d = this.balancer.tree.daemonsById.find((x) => x?.name === DAEMONS[daemon]);
    assert.ok(d, `daemon ${daemon} configured`);
    return d.id;
  }

  portOf(c: Client): ClusterPort {
    for (const cluster of this.balancer.tree.clusters) {
      if (cluster.address.text !== c.dst) continue;
      for (const p of cluster.ports) {
        if (p.port === c.dstPort && (p.protocol === 'any' || p.protocol === (c.protocol === 6 ? 'tcp' : 'udp'))) return p;
      }
    }
    throw new Error(`no cluster port for ${c.dst}:${c.dstPort}`);
  }

  event(e: EventSpec): FakeEvent {
    const mark = ((e.markBase ?? MARK_BASE) | (e.bits ?? 0) | this.id(e.daemon)) >>> 0;
    const reply = e.natTo === undefined ? null : replyOf(e.flow, e.natTo === NOBODY ? NOBODY : DAEMONS[e.natTo]);
    return new FakeEvent(e.kind, e.ct, mark, e.seenReply ? IPS_SEEN_REPLY : 0, e.state, e.malformed ? null : tupleOf(e.flow), e.counters ?? [0, 0, 0, 0], reply);
  }

  wanted(want: Want): number {
    if (want === 'reject') return REJECT_ID;
    if (want === 'undecided') return UNDECIDED;
    return this.id(want);
  }

  setWeight(daemon: DaemonName, w: number): void {
    const id = this.id(daemon);
    const port = this.balancer.tree.daemonsById[id].clusterPort;
    const weights = this.weights.get(port) ?? new Map<number, number>();
    weights.set(id, w);
    this.weights.set(port, weights);
    this.balancer.setWeights(port, weights);
  }

  counts(daemon: DaemonName): Counts {
    const d = this.balancer.stats.daemon;
    const b = this.id(daemon) * DAEMON_COLUMNS;
    return {
      active: d[b + D_ACTIVE_FLOWS], new: d[b + D_NEW_FLOWS], syns: d[b + D_SYNS], answered: d[b + D_SYN_ANSWERED], refused: d[b + D_SYN_REFUSED],
      synTime: d[b + D_SYN_TIME_MS], packetsIn: d[b + D_PACKETS_IN], bytesIn: d[b + D_BYTES_IN], packetsOut: d[b + D_PACKETS_OUT], bytesOut: d[b + D_BYTES_OUT],
    };
  }

  /** Handshakes handed out (released or to look up) must be the ones wanted, each with the port and a key that gives back its tuple. */
  handedOut(got: { key: number | string; port: ClusterPort }[], want: Client[], label: string): void {
    assert.deepEqual(got.map((g) => g.key), want.map(keyOf), `${label}: the handshakes handed out`);
    for (const [i, g] of got.entries()) {
      assert.equal(g.port, this.portOf(want[i]), `${label}: the cluster port of handshake ${i}`);
      const t: ClientTuple = { family: 0, protocol: 0, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort: 0, dstPort: 0 };
      assert.equal(clientTuple(g.key, g.port, t), true, `${label}: the key of handshake ${i} gives a tuple`);
      assert.deepEqual(t, tupleOf(want[i]), `${label}: the tuple of handshake ${i}`);
      assert.equal(tupleKey(t), g.key, `${label}: the tuple of handshake ${i} gives its key back`);
    }
  }

  step(s: Step, label: string): void {
    const acc = this.accounting;
    switch (s.op) {
      case 'decide':
        assert.equal(acc.decide(this.portOf(s.flow), keyOf(s.flow), s.flow.protocol, 0, 0), this.wanted(s.want), `${label}: decision`);
        return;
      case 'queue':
        assert.equal(this.decision.decide(s.packet, 0, s.copied ?? s.packet.length), this.wanted(s.want), `${label}: decision`);
        return;
      case 'event':
        assert.equal(acc.onEvent(this.event(s.ev), false), s.want === 'forget' ? EVENT_FORGET : EVENT_DONE, `${label}: onEvent's answer`);
        return;
      case 'restore':
        assert.equal(acc.onEvent(this.event(s.ev), true), EVENT_DONE, `${label}: onEvent's answer`);
        return;
      case 'confirmed':
        acc.confirmed(this.event(s.ev));
        return;
      case 'tick':
        this.now += s.ms;
        return;
      case 'expire':
        acc.expirePending();
        return;
      case 'weight':
        this.setWeight(s.daemon, s.weight);
        return;
      case 'release': {
        const got: { key: number | string; port: ClusterPort }[] = [];
        acc.releaseTakenOut((key, port) => got.push({ key, port }));
        this.handedOut(got, s.want, label);
        return;
      }
      case 'unconfirmed': {
        const got: { key: number | string; port: ClusterPort }[] = [];
        acc.unconfirmed(this.now - s.age, (key, port) => got.push({ key, port }));
        this.handedOut(got, s.want, label);
        return;
      }
      case 'reconcile': {
        const flows = new Map<number, LiveFlow>();
        for (const l of s.live) flows.set(l.ct, { daemonId: this.id(l.daemon), protocol: l.flow.protocol, key: keyOf(l.flow), tcpState: l.state });
        acc.reconcile(flows);
        return;
      }
      case 'forgetDaemon':
        assert.equal(acc.forgetDaemon(this.id(s.daemon)), s.want, `${label}: flows forgotten`);
        return;
      case 'check':
        this.check(s.want, label);
        return;
    }
  }

  check(want: Expect, label: string): void {
    const acc = this.accounting;
    if (want.counts !== undefined) {
      for (const name of DAEMON_NAMES) assert.deepEqual(this.counts(name), { ...ZERO, ...want.counts[name] }, `${label}: counts of daemon ${name}`);
    }
    if (want.flows !== undefined) assert.equal(acc.flowCount, want.flows, `${label}: flows`);
    if (want.pending !== undefined) assert.equal(acc.pendingCount, want.pending, `${label}: pending handshakes`);
    if (want.overflows !== undefined) assert.equal(acc.pendingOverflows, want.overflows, `${label}: pending overflows`);
    if (want.swept !== undefined) assert.equal(acc.swept, want.swept, `${label}: swept`);
    if (want.events !== undefined) assert.equal(acc.events, want.events, `${label}: events read`);
    if (want.held !== undefined) assert.deepEqual([...acc.daemonsHeld()].sort((x, y) => x - y), want.held.map((d) => this.id(d)).sort((x, y) => x - y), `${label}: daemons held`);
    if (want.noDaemon !== undefined) assert.equal(this.balancer.stats.drops[Drop.NoDaemon], want.noDaemon, `${label}: no-daemon drops`);
  }
}

function run(row: Row): void {
  const h = new Harness(row.options);
  for (const [i, s] of row.steps.entries()) h.step(s, `step ${i + 1} (${s.op})`);
  h.check(row.end, 'end');
}

describe('flow accounting: fixtures', () => {
  for (const row of ROWS) {
    it(row.name, row.todo === undefined ? {} : { todo: row.todo }, () => run(row));
  }

  it('every daemon of the fixtures is configured with a distinct id', () => {
    const h = new Harness();
    const ids = DAEMON_NAMES.map((d) => h.id(d));
    assert.equal(new Set(ids).size, DAEMON_NAMES.length);
  });
});

// ---------------------------------------------------------------------------
// Client keys.

describe('flow accounting: the owner of an earlier run\'s entry', () => {
  it('is the mark\'s daemon when the flow was translated to it, else the daemon it was translated to, else none', () => {
    const h = new Harness();
    const acc = h.accounting;
    const f = tcp(40000);
    assert.equal(acc.ownerOf(h.id('a'), replyOf(f, DAEMONS.a)), h.id('a'));
    assert.equal(acc.ownerOf(h.id('a'), replyOf(f, DAEMONS.b)), h.id('b'), 'the id of another run: the daemon at the reply\'s source');
    assert.equal(acc.ownerOf(h.id('a'), null), h.id('a'), 'no reply tuple: the mark stands');
    assert.equal(acc.ownerOf(40, null), -1, 'an id no daemon has');
    assert.equal(acc.ownerOf(h.id('a'), replyOf(f, NOBODY)), -1, 'translated to no daemon of this configuration');
    assert.equal(acc.ownerOf(h.id('u'), replyOf(f, DAEMONS.u)), -1, 'a TCP flow is never the UDP daemon at that endpoint');
    assert.equal(acc.ownerOf(h.id('a'), replyOf(tcp6(40000), DAEMONS.s)), h.id('s'), 'IPv6: all 16 bytes compared');
  });
});

describe('flow accounting: client keys', () => {
  const h = new Harness();

  it('an IPv4 key is a number; TCP and UDP differ; the cluster port is not part of it', () => {
    const k = keyOf(f1);
    assert.equal(typeof k, 'number');
    assert.notEqual(k, keyOf({ ...f1, protocol: 17 }));
    assert.notEqual(k, keyOf(f2));
    assert.notEqual(k, keyOf({ ...f1, src: '198.18.0.2' }));
    // Documented in client-key.ts: one client port to two cluster ports at once shares a key.
    assert.equal(k, keyOf(tcp(40001, 443)));
  });

  it('an IPv6 key is a string that holds the cluster port', () => {
    const k = keyOf(s1);
    assert.equal(typeof k, 'string');
    assert.notEqual(k, keyOf({ ...s1, dstPort: 444 }));
    assert.notEqual(k, keyOf({ ...s1, src: '2001:db8:1::11' }));
    assert.notEqual(k, keyOf({ ...s1, protocol: 17 }));
  });

  it('clientTuple refuses a string key that does not hold 16 address bytes', () => {
    const t: ClientTuple = { family: 0, protocol: 0, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort: 0, dstPort: 0 };
    assert.equal(clientTuple('6:40001:443.1.2.3.4', h.portOf(s1), t), false);
  });

  it('any client key goes back to its tuple (clientTuple, tupleKey), IPv4 and IPv6, TCP and UDP', () => {
    const byte = fc.integer({ min: 0, max: 255 });
    const arb = fc.record({
      family: fc.constantFrom(4 as const, 6 as const),
      protocol: fc.constantFrom(6 as const, 17 as const),
      src: fc.array(byte, { minLength: 16, maxLength: 16 }),
      srcPort: fc.integer({ min: 0, max: 65535 }),
    });
    fc.assert(fc.property(arb, ({ family, protocol, src, srcPort }) => {
      // The key holds the protocol; the port gives the cluster address and, for IPv4, the cluster port.
      const port = family === 4 ? h.portOf(f1) : h.portOf(s1);
      const t: ClientTuple = { family, protocol, src: new Uint8Array(16), dst: new Uint8Array(16), srcPort, dstPort: port.port };
      t.src.set(src.slice(0, family === 4 ? 4 : 16));
      t.dst.set(port.cluster.address.bytes);
      const key = tupleKey(t);
      const back: ClientTuple = { family: 0, protocol: 0, src: new Uint8Array(16).fill(0xee), dst: new Uint8Array(16).fill(0xee), srcPort: 0, dstPort: 0 };
      assert.equal(clientTuple(key, port, back), true);
      assert.deepEqual(back, t);
      assert.equal(tupleKey(back), key);
    }), { numRuns: 500 });
  });
});

// ---------------------------------------------------------------------------
// Property: any sequence of decisions and events for a handful of flows.
//
// A small model of conntrack stands beside the accounting: each flow has at
// most one entry at a time (conntrack holds one per tuple), marked with the
// daemon hostlb last decided for it, or any daemon of its port (the fallback
// hash, a queue that overflowed). Events may be lost (an overrun) or come in
// any order of states. At the end every entry gets its destroy and pending
// handshakes expire: nothing may be left counted. Two of the flows share a
// client address and port (to ports 80 and 443), so they share an IPv4 key.

const PROP_FLOWS: readonly Client[] = [tcp(41000), tcp(41001), tcp(41000, 443), udp(5400), tcp6(41003)];
const TCP_STATES = [TcpCt.SynSent, TcpCt.SynRecv, TcpCt.Established, TcpCt.FinWait, TcpCt.CloseWait, TcpCt.LastAck, TcpCt.TimeWait, TcpCt.Close];

type Op =
  | { op: 'decide'; f: number }
  | { op: 'open'; f: number; fallback: boolean; pick: number; lost: boolean }
  | { op: 'event'; f: number; kind: number; state: number; seenReply: boolean; lost: boolean }
  | { op: 'confirm'; f: number }
  | { op: 'lookup' }
  | { op: 'tick'; ms: number }
  | { op: 'weight'; d: number; w: number }
  | { op: 'reconcile' };

const flowIndex = fc.integer({ min: 0, max: PROP_FLOWS.length - 1 });
const baseOps: fc.Arbitrary<Op>[] = [
  fc.record({ op: fc.constant('decide' as const), f: flowIndex }),
  fc.record({ op: fc.constant('open' as const), f: flowIndex, fallback: fc.boolean(), pick: fc.nat(), lost: fc.boolean() }),
  fc.record({ op: fc.constant('event' as const), f: flowIndex, kind: fc.constantFrom(EVENT_NEW, EVENT_UPDATE, EVENT_UPDATE, EVENT_DESTROY), state: fc.constantFrom(...TCP_STATES), seenReply: fc.boolean(), lost: fc.boolean() }),
  fc.record({ op: fc.constant('confirm' as const), f: flowIndex }),
  fc.record({ op: fc.constant('lookup' as const) }),
  fc.record({ op: fc.constant('tick' as const), ms: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 1_000, max: 6_000 })) }),
  fc.record({ op: fc.constant('weight' as const), d: fc.integer({ min: 0, max: DAEMON_NAMES.length - 1 }), w: fc.constantFrom(0, 1) }),
];
const reconcileOp: fc.Arbitrary<Op> = fc.record({ op: fc.constant('reconcile' as const) });

interface Entry {
  /** The flow (index in PROP_FLOWS). */
  f: number;
  ct: number;
  daemon: number;
  state: number;
  /** Its destroy reached the accounting. */
  delivered: boolean;
}

/** Replays `ops`; asserts no active count is ever negative, and all are 0 after every entry's destroy and the pending expiry. */
function replay(ops: Op[]): void {
  const h = new Harness();
  const acc = h.accounting;
  const ids = DAEMON_NAMES.map((d) => h.id(d));
  const ports = PROP_FLOWS.map((c) => h.portOf(c));
  const keys = PROP_FLOWS.map(keyOf);
  const entries: (Entry | null)[] = PROP_FLOWS.map(() => null);
  const all: Entry[] = [];
  const decided: (number | null)[] = PROP_FLOWS.map(() => null);
  let nextCt = 1;

  const ev = (e: Entry, kind: number, state: number, seenReply: boolean): FakeEvent => {
    const c = PROP_FLOWS[e.f];
    const bits = kind === EVENT_DESTROY ? 0 : ANSWERED_BIT;
    return new FakeEvent(kind, e.ct, (MARK_BASE | bits | e.daemon) >>> 0, seenReply ? IPS_SEEN_REPLY : 0, c.protocol === 6 ? state : -1, tupleOf(c), [1, 60, 1, 60]);
  };
  const destroy = (e: Entry, lost: boolean): void => {
    if (entries[e.f] === e) entries[e.f] = null;
    if (lost) return;
    e.delivered = true;
    acc.onEvent(ev(e, EVENT_DESTROY, e.state, true), false);
  };
  const noneNegative = (at: string): void => {
    for (const [i, id] of ids.entries()) assert.ok(h.balancer.activeFlows(id) >= 0, `${at}: daemon ${DAEMON_NAMES[i]} active ${h.balancer.activeFlows(id)}`);
  };

  for (const [i, o] of ops.entries()) {
    switch (o.op) {
      case 'decide': {
        const id = acc.decide(ports[o.f], keys[o.f], PROP_FLOWS[o.f].protocol, 0, 0);
        if (id !== REJECT_ID && id !== UNDECIDED) decided[o.f] = id;
        break;
      }
      case 'open': {
        const old = entries[o.f];
        if (old !== null) destroy(old, o.lost);
        const choices = ports[o.f].daemons;
        const daemon = o.fallback || decided[o.f] === null ? choices[o.pick % choices.length].id : decided[o.f]!;
        const e: Entry = { f: o.f, ct: nextCt++, daemon, state: PROP_FLOWS[o.f].protocol === 6 ? TcpCt.SynSent : -1, delivered: false };
        entries[o.f] = e;
        all.push(e);
        break;
      }
      case 'event': {
        const e = entries[o.f];
        if (e === null) break;
        if (o.kind === EVENT_DESTROY) {
          destroy(e, o.lost);
          break;
        }
        if (PROP_FLOWS[o.f].protocol === 6) e.state = o.state;
        if (!o.lost) acc.onEvent(ev(e, o.kind, o.state, o.seenReply), false);
        break;
      }
      case 'confirm': {
        const e = entries[o.f];
        if (e !== null) acc.confirmed(ev(e, EVENT_NEW, e.state, false));
        break;
      }
      case 'lookup':
        acc.unconfirmed(h.now - 50, () => {});
        break;
      case 'tick':
        h.now += o.ms;
        acc.expirePending();
        break;
      case 'weight':
        h.setWeight(DAEMON_NAMES[o.d], o.w);
        // The plane deletes the entry of each handshake handed out (by its tuple): its destroy follows.
        acc.releaseTakenOut((key, port) => {
          const e = entries[PROP_FLOWS.findIndex((_, f) => keys[f] === key && ports[f] === port)];
          if (e) destroy(e, false);
        });
        break;
      case 'reconcile': {
        const liveFlows = new Map<number, LiveFlow>();
        for (const e of entries) {
          if (e === null || ENDED.has(e.state)) continue;
          liveFlows.set(e.ct, { daemonId: e.daemon, protocol: PROP_FLOWS[e.f].protocol, key: keys[e.f], tcpState: e.state });
        }
        acc.reconcile(liveFlows);
        break;
      }
    }
    noneNegative(`op ${i} ${JSON.stringify(o)}`);
  }

  for (const e of all) if (!e.delivered) destroy(e, false);
  h.now += PENDING_MS;
  acc.expirePending();
  noneNegative('end');
  assert.deepEqual(ids.map((id) => h.balancer.activeFlows(id)), ids.map(() => 0), 'no flow left counted active');
  assert.equal(acc.flowCount, 0, 'no flow left');
  assert.equal(acc.pendingCount, 0, 'no handshake left pending');
}

describe('flow accounting: properties', () => {
  it('decisions, events (some lost), lookups, expiry and release never leave an active count negative, and leave none once all is destroyed', () => {
    fc.assert(fc.property(fc.array(fc.oneof(...baseOps), { maxLength: 60, size: 'max' }), replay), { numRuns: 2_000 });
  });

  // Seeded: fast-check finds the defect within a few hundred to a few thousand runs; this seed within 50.
  it('the same with conntrack sweeps (reconcile) among them', () => {
    fc.assert(fc.property(fc.array(fc.oneof(...baseOps, reconcileOp), { maxLength: 60, size: 'max' }), replay), { numRuns: 5_000, seed: 1 });
  });
});
