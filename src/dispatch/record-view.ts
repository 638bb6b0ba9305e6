// Connection records as plain objects, for people and the admin API: the
// control path's window onto the table (allocates freely; never on the
// packet path). Filtering and paging happen here, over one table scan.

import { formatIpv4, formatIpv6 } from '../wire/address.js';
import {
  REC_WORDS, R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_PORTS, R_STATE,
  RF_BYTES_IN, RF_BYTES_OUT, RF_CREATED, RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_PACKETS_OUT,
} from './conn-table.js';
import type { Dispatcher } from './dispatcher.js';
import { CONN_STATE_NAMES, FLAG_RESET, STATE_MASK } from './tcp-state.js';

const REC_F64 = REC_WORDS / 2;

export interface ConnectionInfo {
  id: number;
  protocol: 'tcp' | 'udp';
  client: string;
  cluster: string;
  daemon: string;
  state: string;
  /** Marked to be reset by hostlb (its daemon was removed with onDaemonRemoved: reset). */
  reset: boolean;
  /** ms timestamps on the dispatcher's clock (Date.now in a running hostlb). */
  created: number;
  lastSeen: number;
  expires: number;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
}

export interface ConnectionFilter {
  /** Cluster address (canonical text). */
  cluster?: string;
  port?: number;
  protocol?: 'tcp' | 'udp';
  /** Daemon endpoint ("198.18.2.1:8080", "[2001:db8::2]:8080"). */
  daemon?: string;
  /** Client address (without port). */
  client?: string;
  /** State name, e.g. ESTABLISHED. */
  state?: string;
  offset?: number;
  limit?: number;
}

function addressText(u32: Uint32Array, at: number, family: number): string {
  if (family === 4) return formatIpv4(u32[at]);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 4; i++) {
    const w = u32[at + i];
    bytes[4 * i] = w >>> 24; bytes[4 * i + 1] = (w >>> 16) & 0xff; bytes[4 * i + 2] = (w >>> 8) & 0xff; bytes[4 * i + 3] = w & 0xff;
  }
  return formatIpv6(bytes, 0);
}

function endpoint(address: string, port: number, family: number): string {
  return family === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The record `id` as a plain object. */
export function describeRecord(d: Dispatcher, id: number): ConnectionInfo {
  const u32 = d.table.u32;
  const f64 = d.table.f64;
  const b = id * REC_WORDS;
  const f = id * REC_F64;
  const meta = u32[b + R_META];
  const family = meta & 0xff;
  const protocol = (meta >>> 8) & 0xff;
  const client = addressText(u32, b + R_CLIENT_ADDR, family);
  return {
    id,
    protocol: protocol === 6 ? 'tcp' : 'udp',
    client: endpoint(client, u32[b + R_PORTS] >>> 16, family),
    cluster: endpoint(addressText(u32, b + R_CLUSTER_ADDR, family), u32[b + R_PORTS] & 0xffff, family),
    daemon: d.tree.daemonsById[u32[b + R_DAEMON_ID]]?.name ?? endpoint(addressText(u32, b + R_DAEMON_ADDR, family), meta >>> 16, family),
    state: CONN_STATE_NAMES[u32[b + R_STATE] & STATE_MASK] ?? 'UNKNOWN',
    reset: (u32[b + R_STATE] & FLAG_RESET) !== 0,
    created: f64[f + RF_CREATED],
    lastSeen: f64[f + RF_LAST_SEEN],
    expires: f64[f + RF_EXPIRES],
    packetsIn: f64[f + RF_PACKETS_IN],
    bytesIn: f64[f + RF_BYTES_IN],
    packetsOut: f64[f + RF_PACKETS_OUT],
    bytesOut: f64[f + RF_BYTES_OUT],
  };
}

/** Records matching `filter`, in table order, with the total that matched (for paging). */
export function listConnections(d: Dispatcher, filter: ConnectionFilter = {}): { total: number; connections: ConnectionInfo[] } {
  const records: ConnectionInfo[] = [];
  d.table.forEach((id) => {
    records.push(describeRecord(d, id));
  });
  return filterConnections(records, filter);
}

/** The connections of `records` matching `filter`, with the total that matched (for paging). */
export function filterConnections(records: Iterable<ConnectionInfo>, filter: ConnectionFilter = {}): { total: number; connections: ConnectionInfo[] } {
  const offset = filter.offset ?? 0;
  const limit = filter.limit ?? 100;
  const out: ConnectionInfo[] = [];
  let total = 0;
  for (const r of records) {
    if (filter.protocol && r.protocol !== filter.protocol) continue;
    if (filter.state && r.state !== filter.state.toUpperCase()) continue;
    if (filter.daemon && r.daemon !== filter.daemon) continue;
    if (filter.cluster || filter.port) {
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(r.cluster)!;
      if (filter.cluster && m[1] !== filter.cluster) continue;
      if (filter.port && Number(m[2]) !== filter.port) continue;
    }
    if (filter.client && r.client.replace(/^\[?(.*?)\]?:\d+$/, '$1') !== filter.client) continue;
    if (total >= offset && out.length < limit) out.push(r);
    total++;
  }
  return { total, connections: out };
}
