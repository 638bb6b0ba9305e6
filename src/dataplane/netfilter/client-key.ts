// A flow's client side as a Map key, and back: the netfilter plane finds a
// decided-but-unanswered handshake by it when conntrack reports the flow, and
// rebuilds the flow's original tuple from it to look the entry up or delete it.

import type { ClusterPort } from '../../dispatch/config-tree.js';

/** The parts of a conntrack tuple a key is made from or written back to. */
export interface ClientTuple {
  family: number;
  protocol: number;
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  srcPort: number;
  dstPort: number;
}

/**
 * The key of the flow from the client address at `buf[at, at + length)`
 * (4 or 16 bytes) and `srcPort` to cluster port `dstPort`. IPv4 as a number
 * below 2^53 — address, source port, protocol (TCP/UDP: 1 bit) — so the
 * common case allocates nothing. A client using one source port for two
 * cluster ports at once would share a key; the NEW event then finds the other
 * daemon's mark and is counted afresh, and the pending entry expires.
 */
export function clientKey(protocol: number, buf: Uint8Array, at: number, length: number, srcPort: number, dstPort: number): number | string {
  if (length === 4) {
    return ((((buf[at] * 256 + buf[at + 1]) * 256 + buf[at + 2]) * 256 + buf[at + 3]) * 65536 + srcPort) * 2 + (protocol === 6 ? 0 : 1);
  }
  let key = `${protocol}:${srcPort}:${dstPort}`;
  for (let i = at; i < at + length; i++) key += `.${buf[i]}`;
  return key;
}

/** The key of a conntrack original tuple. */
export function tupleKey(t: ClientTuple): number | string {
  return clientKey(t.protocol, t.src, 0, t.family === 4 ? 4 : 16, t.srcPort, t.dstPort);
}

/** Writes the original tuple of a pending flow from its key and cluster port into `t`; false when the key cannot say. */
export function clientTuple(key: number | string, port: ClusterPort, t: ClientTuple): boolean {
  const cluster = port.cluster.address;
  t.family = cluster.family;
  t.dst.fill(0).set(cluster.bytes);
  t.dstPort = port.port;
  if (typeof key === 'number') {
    t.protocol = key % 2 === 0 ? 6 : 17;
    t.srcPort = Math.floor(key / 2) % 65536;
    const addr = Math.floor(key / 131072);
    t.src.fill(0).set([addr >>> 24, (addr >>> 16) & 0xff, (addr >>> 8) & 0xff, addr & 0xff]);
    return true;
  }
  const [head, ...bytes] = key.split('.');
  const [protocol, srcPort] = head.split(':').map(Number);
  if (bytes.length !== 16) return false;
  t.protocol = protocol;
  t.srcPort = srcPort;
  t.src.set(bytes.map(Number));
  return true;
}
