// A conntrack message as the flow accounting reads it (FlowEvent): the parsed
// head of a CtMessage, with its tuples and counters read from the socket's
// buffer only when the accounting asks for them.

import { CtMessage } from '../../netlink/conntrack.js';
import type { MessageReader } from '../../netlink/message.js';
import type { FlowEvent } from './flow-accounting.js';

export class CtEvent implements FlowEvent {
  readonly ct = new CtMessage();
  private bytes: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(new ArrayBuffer(0));

  /** Reads the message at the reader's position; false when it is not a conntrack message with an original tuple. */
  parse(bytes: Uint8Array, view: DataView, m: MessageReader): boolean {
    this.bytes = bytes;
    this.view = view;
    return this.ct.parse(view, m);
  }

  get kind(): number { return this.ct.kind; }
  get id(): number { return this.ct.id; }
  get mark(): number { return this.ct.mark; }
  get status(): number { return this.ct.status; }
  get tcpState(): number { return this.ct.tcpState; }
  get orig(): CtMessage['orig'] { return this.ct.orig; }
  get reply(): CtMessage['reply'] | null { return this.ct.hasReply ? this.ct.reply : null; }
  get packetsOrig(): number { return this.ct.packetsOrig; }
  get bytesOrig(): number { return this.ct.bytesOrig; }
  get packetsReply(): number { return this.ct.packetsReply; }
  get bytesReply(): number { return this.ct.bytesReply; }

  tuples(): boolean {
    return this.ct.tuples(this.bytes, this.view);
  }

  counters(): void {
    this.ct.counters(this.view);
  }
}
