// Connection records as plain objects, for people and the admin API: the
// control path's window onto the table (allocates freely; never on the
// packet path). Filtering and paging happen here, over one table scan that
// counts every match but builds only the records of the page asked for.

import { formatIpv4, formatIpv6, parseIp, type IpAddress } from '../wire/address.js';
import {
  REC_F64, REC_WORDS, R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_PORTS, R_STATE,
  RF_BYTES_IN, RF_BYTES_OUT, RF_CREATED, RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_PACKETS_OUT,
} from './conn-table.js';
import type { Dispatcher } from './dispatcher.js';
import { CONN_STATE_NAMES, FLAG_RESET, STATE_MASK } from './tcp-state.js';

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

/** Records built for a listing since start (both planes), so a test can count what a page cost. */
export const listingCounters = { built: 0 };

function sameAddress(want: IpAddress, family: number, bytes: Uint8Array): boolean {
  if (want.family !== family) return false;
  for (let i = 0; i < want.bytes.length; i++) if (want.bytes[i] !== bytes[i]) return false;
  return true;
}

/**
 * One page of a connection listing being gathered: the filter, the window
 * (offset, limit), the count of every match (`total`) and the records built
 * (`connections`). A plane offers each flow's fields to admit() and builds
 * the record only when admit() says so: at most `limit` records, however
 * many flows there are.
 */
export class ConnectionPage {
  total = 0;
  readonly connections: ConnectionInfo[] = [];
  private readonly offset: number;
  private readonly limit: number;
  private readonly protocol: number;
  private readonly state: string | undefined;
  private readonly cluster: IpAddress | null;
  private readonly client: IpAddress | null;
  /** Flows admit() said to build: counted here, not from `connections`, which a plane may fill only after its pass. */
  private admitted = 0;

  /** Addresses in `filter` must be canonical text (the route checks them). */
  constructor(private readonly filter: ConnectionFilter = {}) {
    this.offset = filter.offset ?? 0;
    this.limit = filter.limit ?? 100;
    this.protocol = filter.protocol === 'tcp' ? 6 : filter.protocol === 'udp' ? 17 : 0;
    this.state = filter.state?.toUpperCase();
    this.cluster = filter.cluster !== undefined ? parseIp(filter.cluster) : null;
    this.client = filter.client !== undefined ? parseIp(filter.client) : null;
  }

  /**
   * Counts the flow when it matches the filter; true when it also falls in
   * the page, and the caller is to build its record (and push it to
   * `connections`). Addresses are network-order bytes (IPv4 in the first 4),
   * `protocol` the IP protocol number, `state` and `daemon` as ConnectionInfo
   * names them.
   */
  admit(protocol: number, state: string, daemon: string, family: number, clusterAddr: Uint8Array, clusterPort: number, clientAddr: Uint8Array): boolean {
    const f = this.filter;
    if (this.protocol !== 0 && protocol !== this.protocol) return false;
    if (this.state !== undefined && state !== this.state) return false;
    if (f.daemon !== undefined && daemon !== f.daemon) return false;
    if (f.port !== undefined && clusterPort !== f.port) return false;
    if (this.cluster !== null && !sameAddress(this.cluster, family, clusterAddr)) return false;
    if (this.client !== null && !sameAddress(this.client, family, clientAddr)) return false;
    const inPage = this.total >= this.offset && this.admitted < this.limit;
    this.total++;
    if (inPage) {
      this.admitted++;
      listingCounters.built++;
    }
    return inPage;
  }
}

function wordsToBytes(u32: Uint32Array, at: number, family: number, out: Uint8Array): Uint8Array {
  for (let i = 0; i < (family === 4 ? 1 : 4); i++) {
    const w = u32[at + i];
    out[4 * i] = w >>> 24; out[4 * i + 1] = (w >>> 16) & 0xff; out[4 * i + 2] = (w >>> 8) & 0xff; out[4 * i + 3] = w & 0xff;
  }
  return out;
}

/** The TUN dispatcher's records matching `filter`, in table order: the page asked for and the total that matched. */
export function listConnections(d: Dispatcher, filter: ConnectionFilter = {}): ConnectionPage {
  const page = new ConnectionPage(filter);
  const u32 = d.table.u32;
  const cluster = new Uint8Array(16);
  const client = new Uint8Array(16);
  d.table.forEach((id) => {
    const b = id * REC_WORDS;
    const meta = u32[b + R_META];
    const family = meta & 0xff;
    const daemon = d.tree.daemonsById[u32[b + R_DAEMON_ID]]?.name ?? endpoint(addressText(u32, b + R_DAEMON_ADDR, family), meta >>> 16, family);
    const admitted = page.admit(
      (meta >>> 8) & 0xff, CONN_STATE_NAMES[u32[b + R_STATE] & STATE_MASK] ?? 'UNKNOWN', daemon, family,
      wordsToBytes(u32, b + R_CLUSTER_ADDR, family, cluster), u32[b + R_PORTS] & 0xffff, wordsToBytes(u32, b + R_CLIENT_ADDR, family, client),
    );
    if (admitted) page.connections.push(describeRecord(d, id));
  });
  return page;
}
