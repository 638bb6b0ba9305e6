// Every reason the packet path drops a packet, as counter indexes. The first
// entries mirror wire/wire-error.ts so a parse failure maps to a drop directly.

import { WIRE_ERROR_NAMES } from '../wire/wire-error.js';

export const Drop = {
  // 1..7: WireError codes (truncated, bad_version, ...).
  UnknownProtocol: 8,
  /** Addressed to no cluster port, and not a reply of any flow. */
  NotOurs: 9,
  /** A non-SYN TCP packet with no connection record. */
  NoRecord: 10,
  /** Every daemon of the port is quiesced or down. */
  NoDaemon: 11,
  /** The table is full of established flows. */
  TableFull: 12,
  /** Another record already owns the daemon-side tuple. */
  ReverseTaken: 13,
  /** A fragment that cannot be dispatched: a later one whose first was never seen, or a first too short for its ports (fragments.ts). */
  Fragment: 14,
  /** SYN with FIN or RST, no flags at all, and similar impossible combinations. */
  BadTcpFlags: 15,
  /** An ICMP message hostlb does not translate. */
  Icmp: 16,
  /** A reply from a daemon that is not a reply to any flow. */
  NoRecordOut: 17,
  /** A client-side RST outside the window the daemon's last acknowledgment opens (a blind spoof). */
  RstOutOfWindow: 18,
  /** A virtio-net header that does not describe its packet (a super-packet of another protocol, a partial checksum elsewhere than the transport's). */
  BadOffload: 19,
} as const;

export const DROP_REASON_NAMES: readonly string[] = [
  ...WIRE_ERROR_NAMES,
  'unknown_protocol',
  'not_ours',
  'no_record',
  'no_daemon',
  'table_full',
  'reverse_taken',
  'fragment',
  'bad_tcp_flags',
  'icmp',
  'no_record_out',
  'rst_out_of_window',
  'bad_offload',
];

export const DROP_REASON_COUNT = DROP_REASON_NAMES.length;
