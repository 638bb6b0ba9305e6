// ctnetlink (linux/netfilter/nfnetlink_conntrack.h): the conntrack events of
// hostlb's flows (new, TCP state changes, destroyed) and the requests the
// netfilter data plane makes — dump the flows carrying a mark (to recount them
// after a restart) and delete them (to end a removed or down daemon's flows).

import { indexAttributes, type MessageReader, NFGEN_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_HDRLEN, type NetlinkWriter } from './message.js';

const NFNL_SUBSYS_CTNETLINK = 1;
export const IPCTNL_MSG_CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | 0;
const IPCTNL_MSG_CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | 1;
export const IPCTNL_MSG_CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | 2;

/** Multicast groups (bit numbers for NETLINK_ADD_MEMBERSHIP). */
export const NFNLGRP_CONNTRACK_NEW = 1;
export const NFNLGRP_CONNTRACK_UPDATE = 2;
export const NFNLGRP_CONNTRACK_DESTROY = 3;

const NLM_F_CREATE = 0x400;

const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_PROTOINFO = 4;
const CTA_TIMEOUT = 7;
const CTA_MARK = 8;
const CTA_COUNTERS_ORIG = 9;
const CTA_COUNTERS_REPLY = 10;
const CTA_ID = 12;
const CTA_MARK_MASK = 21;
const CTA_MAX = 32;

const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;
const CTA_PROTOINFO_TCP = 1;
const CTA_PROTOINFO_TCP_STATE = 1;
const CTA_COUNTERS_PACKETS = 1;
const CTA_COUNTERS_BYTES = 2;

/** Conntrack's TCP states (nf_conntrack_tcp.h). */
export const TcpCt = {
  None: 0, SynSent: 1, SynRecv: 2, Established: 3, FinWait: 4, CloseWait: 5, LastAck: 6, TimeWait: 7, Close: 8, SynSent2: 9,
} as const;

/**
 * Status bit: conntrack has seen a packet in the reply direction. A TCP entry
 * destroyed without it ended on a RST before anyone answered: conntrack kills
 * an entry at once when the only reply to a SYN is a RST (tcp_packet, "If only
 * reply is a RST"), so with it set the daemon had answered the SYN.
 */
export const IPS_SEEN_REPLY = 1 << 1;
export const EVENT_NEW = 1;
export const EVENT_UPDATE = 2;
export const EVENT_DESTROY = 3;

/** A flow's addresses as 16 bytes (IPv4 in the first 4). */
export class CtTuple {
  family = 0;
  readonly src = new Uint8Array(16);
  readonly dst = new Uint8Array(16);
  protocol = 0;
  srcPort = 0;
  dstPort = 0;

  /** A copy that outlives the reused message it was read into. */
  clone(): CtTuple {
    const copy = new CtTuple();
    copy.family = this.family;
    copy.protocol = this.protocol;
    copy.srcPort = this.srcPort;
    copy.dstPort = this.dstPort;
    copy.src.set(this.src);
    copy.dst.set(this.dst);
    return copy;
  }
}

/** One conntrack message (event or dump entry), parsed into reused fields. */
export class CtMessage {
  kind = 0;
  id = 0;
  mark = 0;
  /** TCP state, or -1 when the message carries none. */
  tcpState = -1;
  /** The entry's status bits (IPS_*; every event and dump entry carries them; 0 when absent). */
  status = 0;
  /** Seconds until conntrack forgets the entry (dumps carry it; -1 when absent). */
  timeout = -1;
  readonly orig = new CtTuple();
  readonly reply = new CtTuple();
  hasReply = false;
  /** Counters (only when nf_conntrack_acct is on; 0 otherwise). */
  packetsOrig = 0;
  bytesOrig = 0;
  packetsReply = 0;
  bytesReply = 0;
  private readonly top = [new Int32Array(CTA_MAX), new Int32Array(CTA_MAX)] as const;
  private readonly inner = [new Int32Array(8), new Int32Array(8)] as const;
  private readonly leaf = [new Int32Array(8), new Int32Array(8)] as const;

  private tupleAt = [0, 0, 0, 0];
  private countersAt = [0, 0, 0, 0];

  /**
   * Reads the head of the conntrack message at the reader's position: kind,
   * id, mark, TCP state. False when it is not a conntrack message or has no
   * original tuple. The tuples and counters are read only on demand
   * (tuples(), counters()): most events are state changes of a known flow.
   */
  parse(view: DataView, m: MessageReader): boolean {
    if (m.type === IPCTNL_MSG_CT_DELETE) this.kind = EVENT_DESTROY;
    else if (m.type === IPCTNL_MSG_CT_NEW) this.kind = (m.flags & NLM_F_CREATE) !== 0 ? EVENT_NEW : EVENT_UPDATE;
    else return false;
    const [off, len] = this.top;
    indexAttributes(view, m.at + NLMSG_HDRLEN + NFGEN_HDRLEN, m.at + m.length, off, len);
    if (off[CTA_TUPLE_ORIG] === 0) return false;
    this.tupleAt[0] = off[CTA_TUPLE_ORIG]; this.tupleAt[1] = len[CTA_TUPLE_ORIG];
    this.tupleAt[2] = off[CTA_TUPLE_REPLY]; this.tupleAt[3] = len[CTA_TUPLE_REPLY];
    this.countersAt[0] = off[CTA_COUNTERS_ORIG]; this.countersAt[1] = len[CTA_COUNTERS_ORIG];
    this.countersAt[2] = off[CTA_COUNTERS_REPLY]; this.countersAt[3] = len[CTA_COUNTERS_REPLY];
    this.id = off[CTA_ID] !== 0 && len[CTA_ID] >= 4 ? view.getUint32(off[CTA_ID], false) : 0;
    this.mark = off[CTA_MARK] !== 0 && len[CTA_MARK] >= 4 ? view.getUint32(off[CTA_MARK], false) : 0;
    this.timeout = off[CTA_TIMEOUT] !== 0 && len[CTA_TIMEOUT] >= 4 ? view.getUint32(off[CTA_TIMEOUT], false) : -1;
    this.status = off[CTA_STATUS] !== 0 && len[CTA_STATUS] >= 4 ? view.getUint32(off[CTA_STATUS], false) : 0;
    this.tcpState = -1;
    if (off[CTA_PROTOINFO] !== 0) {
      const [o, l] = this.inner;
      indexAttributes(view, off[CTA_PROTOINFO], off[CTA_PROTOINFO] + len[CTA_PROTOINFO], o, l);
      if (o[CTA_PROTOINFO_TCP] !== 0) {
        const [o2, l2] = this.leaf;
        indexAttributes(view, o[CTA_PROTOINFO_TCP], o[CTA_PROTOINFO_TCP] + l[CTA_PROTOINFO_TCP], o2, l2);
        if (o2[CTA_PROTOINFO_TCP_STATE] !== 0 && l2[CTA_PROTOINFO_TCP_STATE] >= 1) this.tcpState = view.getUint8(o2[CTA_PROTOINFO_TCP_STATE]);
      }
    }
    return true;
  }

  /** Reads the original (and reply) tuple of the message parse() read; false when the original one is malformed. */
  tuples(bytes: Uint8Array, view: DataView): boolean {
    if (!this.tuple(bytes, view, this.tupleAt[0], this.tupleAt[1], this.orig)) return false;
    this.hasReply = this.tupleAt[2] !== 0 && this.tuple(bytes, view, this.tupleAt[2], this.tupleAt[3], this.reply);
    return true;
  }

  /** Reads the counters of the message parse() read (present when nf_conntrack_acct is on; else 0). */
  counters(view: DataView): void {
    this.packetsOrig = this.bytesOrig = this.packetsReply = this.bytesReply = 0;
    if (this.countersAt[0] !== 0) {
      this.packetsOrig = this.counter(view, this.countersAt[0], this.countersAt[1], CTA_COUNTERS_PACKETS);
      this.bytesOrig = this.counter(view, this.countersAt[0], this.countersAt[1], CTA_COUNTERS_BYTES);
    }
    if (this.countersAt[2] !== 0) {
      this.packetsReply = this.counter(view, this.countersAt[2], this.countersAt[3], CTA_COUNTERS_PACKETS);
      this.bytesReply = this.counter(view, this.countersAt[2], this.countersAt[3], CTA_COUNTERS_BYTES);
    }
  }

  private counter(view: DataView, at: number, length: number, type: number): number {
    const [o, l] = this.leaf;
    indexAttributes(view, at, at + length, o, l);
    return o[type] !== 0 && l[type] >= 8 ? Number(view.getBigUint64(o[type], false)) : 0;
  }

  private tuple(bytes: Uint8Array, view: DataView, at: number, length: number, t: CtTuple): boolean {
    const [o, l] = this.inner;
    indexAttributes(view, at, at + length, o, l);
    const ip = o[CTA_TUPLE_IP];
    const proto = o[CTA_TUPLE_PROTO];
    if (ip === 0 || proto === 0) return false;
    const ipEnd = ip + l[CTA_TUPLE_IP];
    const protoEnd = proto + l[CTA_TUPLE_PROTO];
    const [a, al] = this.leaf;
    indexAttributes(view, ip, ipEnd, a, al);
    if (a[CTA_IP_V4_SRC] !== 0 && al[CTA_IP_V4_SRC] === 4 && a[CTA_IP_V4_DST] !== 0 && al[CTA_IP_V4_DST] === 4) {
      t.family = 4;
      t.src.fill(0).set(bytes.subarray(a[CTA_IP_V4_SRC], a[CTA_IP_V4_SRC] + 4));
      t.dst.fill(0).set(bytes.subarray(a[CTA_IP_V4_DST], a[CTA_IP_V4_DST] + 4));
    } else if (a[CTA_IP_V6_SRC] !== 0 && al[CTA_IP_V6_SRC] === 16 && a[CTA_IP_V6_DST] !== 0 && al[CTA_IP_V6_DST] === 16) {
      t.family = 6;
      t.src.set(bytes.subarray(a[CTA_IP_V6_SRC], a[CTA_IP_V6_SRC] + 16));
      t.dst.set(bytes.subarray(a[CTA_IP_V6_DST], a[CTA_IP_V6_DST] + 16));
    } else {
      return false;
    }
    indexAttributes(view, proto, protoEnd, a, al);
    t.protocol = a[CTA_PROTO_NUM] !== 0 ? view.getUint8(a[CTA_PROTO_NUM]) : 0;
    t.srcPort = a[CTA_PROTO_SRC_PORT] !== 0 && al[CTA_PROTO_SRC_PORT] >= 2 ? view.getUint16(a[CTA_PROTO_SRC_PORT], false) : 0;
    t.dstPort = a[CTA_PROTO_DST_PORT] !== 0 && al[CTA_PROTO_DST_PORT] >= 2 ? view.getUint16(a[CTA_PROTO_DST_PORT], false) : 0;
    return true;
  }
}

/** A dump of every conntrack entry whose mark & `mask` equals `mark` (both families). */
export function writeDumpByMark(w: NetlinkWriter, mark: number, mask: number): number {
  const seq = w.beginNfMessage(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 0, 0);
  w.u32be(CTA_MARK, mark);
  w.u32be(CTA_MARK_MASK, mask);
  w.endMessage();
  return seq;
}

/**
 * Deletes every conntrack entry whose mark & `mask` equals `mark`, in one
 * request (the kernel's filtered flush). The flows' next packets find no
 * entry: a TCP segment that is not a SYN is then answered with a RST by the
 * daemon it is sent to, which ends the connection as `reset` promises.
 */
export function writeDeleteByMark(w: NetlinkWriter, family: number, mark: number, mask: number): number {
  const seq = w.beginNfMessage(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, family, 0);
  w.u32be(CTA_MARK, mark);
  w.u32be(CTA_MARK_MASK, mask);
  w.endMessage();
  return seq;
}

/**
 * Deletes one conntrack entry, named by its original tuple and id (0: any
 * id; the kernel refuses with ENOENT when that entry is gone or the id
 * belongs to another one).
 */
/** The most bytes writeDeleteFlow writes (an IPv6 tuple and an id), for NetlinkWriter.fits. */
export const DELETE_FLOW_BYTES = 128;

export function writeDeleteFlow(w: NetlinkWriter, t: CtTuple, id: number): number {
  return writeFlowRequest(w, IPCTNL_MSG_CT_DELETE, t, id);
}

/**
 * Asks for the one entry whose original tuple is `t` (a hash lookup in the
 * kernel, not a walk of the table): the answer is the entry (IPCTNL_MSG_CT_NEW,
 * same seq) then an acknowledgment, or ENOENT when conntrack holds none
 * (never confirmed, or gone). Returns the seq. At most DELETE_FLOW_BYTES.
 */
export function writeGetFlow(w: NetlinkWriter, t: CtTuple): number {
  return writeFlowRequest(w, IPCTNL_MSG_CT_GET, t, 0);
}

/**
 * Sets the bits `mask` of the mark of the entry whose original tuple is `t`
 * to those of `mark`, the others kept (the kernel computes
 * (old & ~mask) ^ mark, so `mark` must have no bit outside `mask`): an update
 * (IPCTNL_MSG_CT_NEW without NLM_F_CREATE), ENOENT when the entry is gone.
 * At most DELETE_FLOW_BYTES.
 */
export function writeSetMark(w: NetlinkWriter, t: CtTuple, mark: number, mask: number): number {
  return writeFlowRequest(w, IPCTNL_MSG_CT_NEW, t, 0, (out) => {
    out.u32be(CTA_MARK, mark);
    out.u32be(CTA_MARK_MASK, mask);
  });
}

function writeFlowRequest(w: NetlinkWriter, type: number, t: CtTuple, id: number, more?: (w: NetlinkWriter) => void): number {
  const v4 = t.family === 4;
  const seq = w.beginNfMessage(type, NLM_F_REQUEST | NLM_F_ACK, v4 ? 2 : 10, 0);
  w.beginNest(CTA_TUPLE_ORIG);
  w.beginNest(CTA_TUPLE_IP);
  w.raw(v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, t.src.subarray(0, v4 ? 4 : 16));
  w.raw(v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, t.dst.subarray(0, v4 ? 4 : 16));
  w.endNest();
  w.beginNest(CTA_TUPLE_PROTO);
  w.u8(CTA_PROTO_NUM, t.protocol);
  w.u16be(CTA_PROTO_SRC_PORT, t.srcPort);
  w.u16be(CTA_PROTO_DST_PORT, t.dstPort);
  w.endNest();
  w.endNest();
  if (id !== 0) w.u32be(CTA_ID, id);
  more?.(w);
  w.endMessage();
  return seq;
}
