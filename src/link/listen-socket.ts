// Listening TCP sockets hostlb opens for the daemons it supervises, handed to
// each as fd 3 the systemd way (LISTEN_FDS=1): Node's `server.listen({ fd: 3 })`,
// Python's `socket.socket(fileno=3)`, gunicorn, uvicorn and anything built on
// sd_listen_fds() take it. hostlb keeps its own copy open and never accepts on
// it, so the socket outlives a daemon's crash or restart: connections that
// arrive meanwhile wait in its backlog instead of being refused.

import { HostlbError } from '../errors.js';
import { parseIp } from '../wire/address.js';
import { loadTunAddon, type NativeSystemError } from '../native/addon.js';

/** The kernel caps it at net.core.somaxconn; as large as it allows. */
const BACKLOG = 4096;

interface ListenAddon {
  listenTcp(family: number, address: Uint8Array, port: number, backlog: number): number;
  close(fd: number): void;
}

function addon(): ListenAddon {
  const a = loadTunAddon() as unknown as Partial<ListenAddon>;
  if (typeof a.listenTcp !== 'function') throw new HostlbError('LISTEN_FAILED', 'the native addon predates listenTcp: rebuild it (npm install, or npx node-gyp rebuild)');
  return a as ListenAddon;
}

/**
 * A listening socket on `address`:`port` (close-on-exec: a child gets it only
 * where spawn's stdio puts it). Throws HostlbError LISTEN_FAILED naming the
 * address and the errno (EADDRINUSE: something listens there already;
 * EADDRNOTAVAIL: the address is not the host's).
 */
export function openListenSocket(address: string, port: number): number {
  const ip = parseIp(address);
  if (ip === null) throw new HostlbError('LISTEN_FAILED', `"${address}" is not an IP address`);
  try {
    return addon().listenTcp(ip.family, ip.bytes, port, BACKLOG);
  } catch (error) {
    const code = (error as NativeSystemError).code ?? 'error';
    const where = ip.family === 6 ? `[${ip.text}]:${port}` : `${ip.text}:${port}`;
    throw new HostlbError('LISTEN_FAILED', `cannot listen on ${where} for a supervised daemon (${code}): ${(error as Error).message}`, { cause: error });
  }
}

export function closeListenSocket(fd: number): void {
  try {
    addon().close(fd);
  } catch {
    // Already closed: nothing to give back.
  }
}
