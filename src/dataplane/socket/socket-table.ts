// The namespace's TCP sockets as /proc/net/tcp{,6} lists them, and which
// process holds each: what the socket plane knows of the connections the
// kernel hands its daemons (it sees none of their packets). Read on the
// control path, at most once a second: a listing of every socket, and one
// readdir of /proc/PID/fd per process.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

/** TCP states as /proc/net prints them (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 0x01;
export const TCP_LISTEN = 0x0a;
const TCP_STATE_NAMES: Record<number, string> = {
  1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT', 5: 'FIN_WAIT', 6: 'TIME_WAIT', 7: 'CLOSE', 8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING',
};

export interface TcpSocket {
  family: 4 | 6;
  /** Network-order address bytes (4 or 16) and port. */
  local: Uint8Array;
  localPort: number;
  remote: Uint8Array;
  remotePort: number;
  state: number;
  /** For a listening socket, connections waiting in its accept queue; else bytes not yet read. */
  rxQueue: number;
  /** 0 for a socket no file refers to (TIME_WAIT, being torn down). */
  inode: number;
}

export function tcpStateName(state: number): string {
  return TCP_STATE_NAMES[state] ?? 'UNKNOWN';
}

/** An address as /proc/net prints it: each 32-bit word in host (little-endian) order, %08X. */
function parseAddress(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < hex.length; i += 8) view.setUint32(i / 2, parseInt(hex.slice(i, i + 8), 16), true);
  return bytes;
}

/** The sockets of one /proc/net/tcp{,6} text. Pure; exported for tests. */
export function parseTcpTable(text: string, family: 4 | 6): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [localHex, localPort] = f[1].split(':');
    const [remoteHex, remotePort] = f[2].split(':');
    out.push({
      family, local: parseAddress(localHex), localPort: parseInt(localPort, 16),
      remote: parseAddress(remoteHex), remotePort: parseInt(remotePort, 16), state: parseInt(f[3], 16),
      rxQueue: parseInt(f[4].split(':')[1] ?? '0', 16), inode: Number(f[9]),
    });
  }
  return out;
}

/** Every TCP socket of this process's network namespace. */
export function readTcpSockets(procRoot = '/proc'): TcpSocket[] {
  const read = (file: string, family: 4 | 6): TcpSocket[] => {
    try {
      return parseTcpTable(readFileSync(join(procRoot, 'self', 'net', file), 'utf8'), family);
    } catch {
      return []; // IPv6 disabled
    }
  };
  return [...read('tcp', 4), ...read('tcp6', 6)];
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
