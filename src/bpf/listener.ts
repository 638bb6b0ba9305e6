// Finds a daemon's socket by what it is bound to and takes a duplicate of it,
// for daemons hostlb did not start: the socket's inode comes from the
// namespace's /proc/PID/net/{tcp,tcp6,udp,udp6} table, its owner from the
// /proc/PID/fd links that name that inode, and the duplicate from pidfd_getfd.
// Reading /proc is this file's; putting the socket in the sockmap is
// sk-lookup.ts's.

import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { HostlbError } from '../errors.js';
import { parseIp } from '../wire/address.js';
import { duplicateFd } from './syscalls.js';

/** A socket's owner: process `pid` holds it as fd `fd`. */
export interface SocketOwner {
  pid: number;
  fd: number;
  inode: number;
}

export interface ListenerQuery {
  protocol: 'tcp' | 'udp';
  /** The address the socket is bound to, exactly (0.0.0.0 or :: for a wildcard bind). */
  address: string;
  port: number;
  /**
   * A process inside the network namespace to search (its /proc/PID/net is
   * that namespace's table); default 'self'. Owners are searched among all
   * processes, `netnsPid` first.
   */
  netnsPid?: number | 'self';
  /** Where procfs is mounted; tests only. Default /proc. */
  procRoot?: string;
}

// Socket states as /proc/net prints them (include/net/tcp_states.h): a
// listening TCP socket is LISTEN; a bound, unconnected UDP socket is CLOSE.
const TCP_LISTEN = 0x0a;
const TCP_CLOSE = 0x07;

/**
 * The /proc/net text of an address: each 32-bit word of the network-order
 * bytes printed as a host-order (little-endian here) %08X.
 */
function procAddress(bytes: Uint8Array): string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) out += view.getUint32(i, true).toString(16).toUpperCase().padStart(8, '0');
  return out;
}

/**
 * The inode of the socket in `table` (the text of a /proc/net/{tcp,udp}{,6}
 * file) bound to `address:port` in `state`, or null. Pure; exported for tests.
 */
export function findSocketInode(table: string, addressBytes: Uint8Array, port: number, state: number): number | null {
  const want = `${procAddress(addressBytes)}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    if (fields[1] !== want || parseInt(fields[3], 16) !== state) continue;
    const inode = Number(fields[9]);
    // Inode 0: a socket being torn down, no longer anyone's file.
    if (inode > 0) return inode;
  }
  return null;
}

function pidsFirst(procRoot: string, first: number | null): number[] {
  const pids = readdirSync(procRoot)
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
  if (first === null) return pids;
  return [first, ...pids.filter((pid) => pid !== first)];
}

/** The first process holding socket `inode`, and its fd number; null when none (it closed). */
export function findSocketOwner(inode: number, options: { procRoot?: string; firstPid?: number } = {}): SocketOwner | null {
  const procRoot = options.procRoot ?? '/proc';
  const want = `socket:[${inode}]`;
  for (const pid of pidsFirst(procRoot, options.firstPid ?? null)) {
    let fds: string[];
    try {
      fds = readdirSync(join(procRoot, String(pid), 'fd'));
    } catch {
      continue; // exited, or a kernel thread
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(join(procRoot, String(pid), 'fd', fd)) === want) return { pid, fd: Number(fd), inode };
      } catch {
        // Closed while we looked.
      }
    }
  }
  return null;
}

/**
 * Finds the socket bound to `address:port` (a listening TCP socket, or a bound
 * unconnected UDP socket) in the namespace of `netnsPid`, and its owner. Null
 * when there is none. Throws CONFIG_INVALID on a bad address.
 */
export function findListener(query: ListenerQuery): SocketOwner | null {
  const ip = parseIp(query.address);
  if (ip === null) throw new HostlbError('CONFIG_INVALID', `"${query.address}" is not an IP address`);
  const procRoot = query.procRoot ?? '/proc';
  const nsPid = query.netnsPid ?? 'self';
  const file = `${query.protocol}${ip.family === 6 ? '6' : ''}`;
  const table = readFileSync(join(procRoot, String(nsPid), 'net', file), 'utf8');
  const inode = findSocketInode(table, ip.bytes, query.port, query.protocol === 'tcp' ? TCP_LISTEN : TCP_CLOSE);
  if (inode === null) return null;
  const firstPid = nsPid === 'self' ? process.pid : nsPid;
  return findSocketOwner(inode, { procRoot, firstPid });
}

/**
 * findListener, then a duplicate of the socket in this process (pidfd_getfd).
 * The caller closes the returned fd once the socket is in the sockmap.
 * BPF_NOT_FOUND when no such socket (or owner) exists.
 */
export function takeListener(query: ListenerQuery): { fd: number; owner: SocketOwner } {
  const owner = findListener(query);
  if (owner === null) {
    throw new HostlbError('BPF_NOT_FOUND', `no ${query.protocol} socket is bound to ${query.address}:${query.port} (is the daemon running?)`);
  }
  return { fd: duplicateFd(owner.pid, owner.fd), owner };
}
