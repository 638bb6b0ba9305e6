// NFQUEUE over nfnetlink (linux/netfilter/nfnetlink_queue.h): binding a queue,
// reading the packets the kernel queues to it, and answering each with a
// verdict and a mark. Only the first packet of a new connection is queued
// (the iptables rule matches conntrack state NEW), so this path runs once per
// connection, not per packet.

import { indexAttributes, type MessageReader, NFGEN_HDRLEN, NLM_F_ACK, NLM_F_REQUEST, NLMSG_HDRLEN, type NetlinkWriter } from './message.js';

export const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_QUEUE = 3;
export const NFQNL_MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | 0;
const NFQNL_MSG_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | 1;
const NFQNL_MSG_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | 2;

const NFQA_CFG_CMD = 1;
const NFQA_CFG_PARAMS = 2;
const NFQA_CFG_QUEUE_MAXLEN = 3;
const NFQA_CFG_MASK = 4;
const NFQA_CFG_FLAGS = 5;
const NFQNL_CFG_CMD_BIND = 1;
const NFQNL_CFG_CMD_UNBIND = 2;
const NFQNL_COPY_PACKET = 2;
/** When the queue is full, accept rather than drop: new connections then fall through to the kernel-side hash rule. */
const NFQA_CFG_F_FAIL_OPEN = 1;

const NFQA_PACKET_HDR = 1;
const NFQA_VERDICT_HDR = 2;
const NFQA_MARK = 3;
const NFQA_PAYLOAD = 10;
const NFQA_MAX = 24;

export const NF_DROP = 0;
export const NF_ACCEPT = 1;

export interface QueueOptions {
  /** Bytes of each packet copied to hostlb: enough for the IP and transport headers. */
  copyRange: number;
  /** Packets the kernel holds for hostlb before fail-open accepts the rest. */
  maxLength: number;
}

/** Appends the messages that bind queue `queue` and set it up; each asks for an acknowledgment. */
export function writeQueueBind(w: NetlinkWriter, queue: number, options: QueueOptions): number[] {
  const seqs: number[] = [];
  seqs.push(w.beginNfMessage(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 0, queue));
  w.raw(NFQA_CFG_CMD, [NFQNL_CFG_CMD_BIND, 0, 0, 0]);
  w.endMessage();
  seqs.push(w.beginNfMessage(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 0, queue));
  const params = new Uint8Array(5);
  new DataView(params.buffer).setUint32(0, options.copyRange, false);
  params[4] = NFQNL_COPY_PACKET;
  w.raw(NFQA_CFG_PARAMS, params);
  w.u32be(NFQA_CFG_QUEUE_MAXLEN, options.maxLength);
  w.u32be(NFQA_CFG_FLAGS, NFQA_CFG_F_FAIL_OPEN);
  w.u32be(NFQA_CFG_MASK, NFQA_CFG_F_FAIL_OPEN);
  w.endMessage();
  return seqs;
}

export function writeQueueUnbind(w: NetlinkWriter, queue: number): void {
  w.beginNfMessage(NFQNL_MSG_CONFIG, NLM_F_REQUEST, 0, queue);
  w.raw(NFQA_CFG_CMD, [NFQNL_CFG_CMD_UNBIND, 0, 0, 0]);
  w.endMessage();
}

/** Appends a verdict for packet `id`; `mark` is set on the packet when not null. */
export function writeVerdict(w: NetlinkWriter, queue: number, id: number, verdict: number, mark: number | null): void {
  w.beginNfMessage(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, queue);
  const p = w.length;
  w.raw(NFQA_VERDICT_HDR, ZERO8);
  w.putU32be(p + 4, verdict);
  w.putU32be(p + 8, id);
  if (mark !== null) w.u32be(NFQA_MARK, mark);
  w.endMessage();
}
const ZERO8 = new Uint8Array(8);

/** Verdict message size, for batching. */
export const VERDICT_BYTES = NLMSG_HDRLEN + NFGEN_HDRLEN + 12 + 8;

/** One queued packet: where its bytes sit in the datagram, and its id for the verdict. Reused. */
export class QueuedPacket {
  id = 0;
  mark = 0;
  /** The L3 protocol (0x0800, 0x86dd). */
  hwProtocol = 0;
  payloadAt = 0;
  payloadLength = 0;
  private readonly offsets = new Int32Array(NFQA_MAX);
  private readonly lengths = new Int32Array(NFQA_MAX);

  /** Reads the packet message at the reader's position. False when it is not one or lacks a header. */
  parse(view: DataView, m: MessageReader): boolean {
    if (m.type !== NFQNL_MSG_PACKET) return false;
    indexAttributes(view, m.at + NLMSG_HDRLEN + NFGEN_HDRLEN, m.at + m.length, this.offsets, this.lengths);
    const hdr = this.offsets[NFQA_PACKET_HDR];
    if (hdr === 0 || this.lengths[NFQA_PACKET_HDR] < 7) return false;
    this.id = view.getUint32(hdr, false);
    this.hwProtocol = view.getUint16(hdr + 4, false);
    const mark = this.offsets[NFQA_MARK];
    this.mark = mark !== 0 && this.lengths[NFQA_MARK] >= 4 ? view.getUint32(mark, false) : 0;
    this.payloadAt = this.offsets[NFQA_PAYLOAD];
    this.payloadLength = this.lengths[NFQA_PAYLOAD];
    return true;
  }
}
