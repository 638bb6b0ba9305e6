// The namespace's TCP connections and listeners, and which process holds
// each: what the socket plane knows of the connections the kernel hands its
// daemons (it sees none of their packets). Read on the control path, at most
// once a second: a sock_diag dump of the sockets in ESTABLISHED or LISTEN
// (the kernel filters; TIME_WAIT sockets, a million under a load of new
// connections, are never copied), and one readdir of /proc/PID/fd per process.

import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { NetlinkWriter } from '../../netlink/message.js';
import { NETLINK_SOCK_DIAG, readDiagSocket, TCP_ESTABLISHED, TCP_LISTEN, writeTcpDestroy, writeTcpDump, type DiagSocket } from '../../netlink/sock-diag.js';
import { NetlinkSocket } from '../../netlink/socket.js';

export { TCP_ESTABLISHED, TCP_LISTEN };
export type TcpSocket = DiagSocket;

const TCP_STATE_NAMES: Record<number, string> = { 1: 'ESTABLISHED', 10: 'LISTEN' };

export function tcpStateName(state: number): string {
  return TCP_STATE_NAMES[state] ?? 'UNKNOWN';
}

/** The TCP sockets of this process's network namespace in ESTABLISHED or LISTEN, through one netlink socket kept open. */
export class TcpSocketTable {
  private socket: NetlinkSocket | null = null;
  private readonly request = new NetlinkWriter(256);

  /** Every TCP socket now in one of `states` (default ESTABLISHED and LISTEN), IPv4 and IPv6. Throws NetlinkError. */
  read(states: readonly number[] = [TCP_ESTABLISHED, TCP_LISTEN]): TcpSocket[] {
    const socket = this.open();
    const out: TcpSocket[] = [];
    for (const family of [4, 6] as const) {
      this.request.reset();
      const seq = writeTcpDump(this.request, family, states);
      socket.dump(this.request, seq, `list the namespace's TCP sockets (IPv${family})`, (m, view) => {
        const s = readDiagSocket(view, m);
        if (s !== null) out.push(s);
      });
    }
    return out;
  }

  /**
   * Aborts each of `sockets` (SOCK_DESTROY: the kernel sends the peer a RST);
   * returns how many it aborted. One that is gone already is not counted.
   * Throws NetlinkError when the kernel cannot destroy sockets at all
   * (EOPNOTSUPP: built without CONFIG_INET_DIAG_DESTROY).
   */
  destroy(sockets: readonly TcpSocket[]): number {
    const socket = this.open();
    let destroyed = 0;
    for (const s of sockets) {
      this.request.reset();
      const seq = writeTcpDestroy(this.request, s);
      const failed = socket.requestAll(this.request, [seq], 'abort a TCP connection');
      if (failed === null) destroyed++;
      else if (failed.code === 'NETLINK_UNSUPPORTED') throw failed;
    }
    return destroyed;
  }

  private open(): NetlinkSocket {
    this.socket ??= new NetlinkSocket([], { slots: 16, slotSize: 65536, receiveBuffer: 0, protocol: NETLINK_SOCK_DIAG });
    return this.socket;
  }

  close(): void {
    this.socket?.close();
    this.socket = null;
  }
}

/** For each inode in `wanted`, the processes holding it (one pass over /proc/*\/fd). */
export function socketHolders(wanted: ReadonlySet<number>, procRoot = '/proc'): Map<number, number[]> {
  const holders = new Map<number, number[]>();
  if (wanted.size === 0) return holders;
  for (const name of readdirSync(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(join(procRoot, name, 'fd'));
    } catch {
      continue; // exited, or not ours to read
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(join(procRoot, name, 'fd', fd));
      } catch {
        continue;
      }
      if (!link.startsWith('socket:[')) continue;
      const inode = Number(link.slice(8, -1));
      if (!wanted.has(inode)) continue;
      const pids = holders.get(inode);
      if (pids === undefined) holders.set(inode, [Number(name)]);
      else if (!pids.includes(Number(name))) pids.push(Number(name));
    }
  }
  return holders;
}
