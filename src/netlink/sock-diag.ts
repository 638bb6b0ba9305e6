// NETLINK_SOCK_DIAG for TCP sockets (inet_diag, linux/inet_diag.h): a dump of
// the namespace's TCP sockets in the states asked for, filtered in the kernel,
// and SOCK_DESTROY of one socket (the kernel aborts it: RST to the peer, the
// owner's next call fails with ECONNABORTED; needs CONFIG_INET_DIAG_DESTROY).
// What /proc/net/tcp gives, without printing every TIME_WAIT socket as text:
// under a load of new connections the server side holds a million of those.

import type { MessageReader, NetlinkWriter } from './message.js';
import { NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_HDRLEN } from './message.js';

export const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const SOCK_DESTROY = 21;
const IPPROTO_TCP = 6;
const AF_INET = 2;
const AF_INET6 = 10;
/** sizeof(struct inet_diag_req_v2) and sizeof(struct inet_diag_msg). */
const REQ_SIZE = 56;
const MSG_SIZE = 72;

/** TCP states (include/net/tcp_states.h), as a mask bit each. */
export const TCP_ESTABLISHED = 1;
export const TCP_LISTEN = 10;

/** One TCP socket of a dump. Addresses are network-order bytes (4 or 16). */
export interface DiagSocket {
  family: 4 | 6;
  state: number;
  local: Uint8Array;
  localPort: number;
  remote: Uint8Array;
  remotePort: number;
  /** Listening: connections waiting to be accepted; else bytes not yet read. */
  rxQueue: number;
  /** 0 for a socket no file refers to. */
  inode: number;
  /** The kernel's cookie for the socket (SO_COOKIE), as the two u32 words inet_diag carries. */
  cookie: [number, number];
}

/** Writes a dump request for the TCP sockets of `family` in `states` (a list of TCP_* states); returns its sequence number. */
export function writeTcpDump(w: NetlinkWriter, family: 4 | 6, states: readonly number[]): number {
  const seq = w.beginMessage(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP);
  const at = w.struct(REQ_SIZE);
  w.buffer[at] = family === 4 ? AF_INET : AF_INET6;
  w.buffer[at + 1] = IPPROTO_TCP;
  let mask = 0;
  for (const s of states) mask |= 1 << s;
  new DataView(w.buffer.buffer, w.buffer.byteOffset).setUint32(at + 4, mask >>> 0, true);
  w.endMessage();
  return seq;
}

/** Reads the inet_diag_msg at the reader's position; null when it is not one. */
export function readDiagSocket(view: DataView, m: MessageReader): DiagSocket | null {
  if (m.type !== SOCK_DIAG_BY_FAMILY || m.length < NLMSG_HDRLEN + MSG_SIZE) return null;
  const at = m.at + NLMSG_HDRLEN;
  const family = view.getUint8(at) === AF_INET6 ? 6 : 4;
  const size = family === 4 ? 4 : 16;
  const bytes = (offset: number): Uint8Array => {
    const out = new Uint8Array(size);
    for (let i = 0; i < size; i++) out[i] = view.getUint8(offset + i);
    return out;
  };
  return {
    family,
    state: view.getUint8(at + 1),
    localPort: view.getUint16(at + 4, false),
    remotePort: view.getUint16(at + 6, false),
    local: bytes(at + 8),
    remote: bytes(at + 24),
    rxQueue: view.getUint32(at + 56, true),
    inode: view.getUint32(at + 68, true),
    cookie: [view.getUint32(at + 44, true), view.getUint32(at + 48, true)],
  };
}

/**
 * Writes a SOCK_DESTROY request for `socket` (as a dump gave it: its
 * addresses, ports and cookie, so a socket that closed and whose 4-tuple was
 * reused is not the one destroyed); returns its sequence number.
 */
export function writeTcpDestroy(w: NetlinkWriter, socket: DiagSocket): number {
  const seq = w.beginMessage(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK);
  const at = w.struct(REQ_SIZE);
  const view = new DataView(w.buffer.buffer, w.buffer.byteOffset);
  w.buffer[at] = socket.family === 4 ? AF_INET : AF_INET6;
  w.buffer[at + 1] = IPPROTO_TCP;
  view.setUint32(at + 4, 0xffffffff, true); // any state
  // struct inet_diag_sockid at +8: sport, dport (network order), src, dst, if, cookie.
  view.setUint16(at + 8, socket.localPort, false);
  view.setUint16(at + 10, socket.remotePort, false);
  w.buffer.set(socket.local, at + 12);
  w.buffer.set(socket.remote, at + 28);
  view.setUint32(at + 48, socket.cookie[0], true);
  view.setUint32(at + 52, socket.cookie[1], true);
  w.endMessage();
  return seq;
}
