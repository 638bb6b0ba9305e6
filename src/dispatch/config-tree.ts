// The configuration tree (seed Figure 7): clusters → ports → daemons, built
// from a plain spec and indexed for the packet path. Rebuilding it from a new
// spec keeps the identity (id) of every cluster port and daemon that remains,
// so records of kept daemons keep flowing; removed daemons are retired, not
// forgotten, while records still point at them.

import { ConfigError } from '../errors.js';
import { parseEndpoint, parseIp, formatEndpoint, type IpAddress } from '../wire/address.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { hashAddress } from './flow-hash.js';
import { SCHEDULER_NAMES, type SchedulerName } from './schedulers/scheduler.js';

export type PortProtocol = 'tcp' | 'udp' | 'any';

export interface DaemonSpec {
  /** "198.18.2.1:8080" or "[2001:db8::2]:8080". */
  address: string;
  /** Relative share of new flows; 0 = quiesced. Default 1. */
  weight?: number;
}

export interface PortSpec {
  port: number;
  protocol?: PortProtocol;
  scheduler?: SchedulerName;
  /** A new flow no daemon can take is answered (TCP RST, ICMP port unreachable) instead of dropped. */
  rejectWhenEmpty?: boolean;
  daemons: DaemonSpec[];
}

export interface ClusterSpec {
  address: string;
  ports: PortSpec[];
}

export interface DispatchSpec {
  clusters: ClusterSpec[];
}

export const MAX_WEIGHT = 10000;

/** IP address as four 32-bit words, the form connection records store (IPv4 in word 0). */
export function addressWords(addr: IpAddress): Uint32Array {
  const words = new Uint32Array(4);
  const b = addr.bytes;
  for (let i = 0; i < b.length / 4; i++) words[i] = ((b[4 * i] << 24) | (b[4 * i + 1] << 16) | (b[4 * i + 2] << 8) | b[4 * i + 3]) >>> 0;
  return words;
}

export class Daemon {
  /** The endpoint as configured, canonical ("198.18.2.1:8080"). */
  readonly name: string;
  /** Set when a new tree no longer has this daemon; its records may still exist. */
  retired = false;
  /** When a retired daemon was first seen holding nothing (ms, the releaser's clock); NaN while it holds flows. */
  quietSince = Number.NaN;
  constructor(
    readonly id: number,
    readonly address: IpAddress,
    readonly addrWords: Uint32Array,
    readonly port: number,
    public weight: number,
    public clusterPort: ClusterPort,
  ) {
    this.name = formatEndpoint({ address, port });
  }
}

export class ClusterPort {
  daemons: Daemon[] = [];
  constructor(
    readonly id: number,
    readonly cluster: Cluster,
    readonly port: number,
    readonly protocol: PortProtocol,
    public scheduler: SchedulerName,
    readonly rejectWhenEmpty = false,
  ) {}

  /** "198.18.100.1:8080/tcp" — the name logs, metrics and the API use. */
  get name(): string {
    return `${formatEndpoint({ address: this.cluster.address, port: this.port })}/${this.protocol}`;
  }
}

export class Cluster {
  readonly ports: ClusterPort[] = [];
  /** Ports by protocol << 16 | port; an `any` port sits under both TCP and UDP. */
  readonly portIndex = new Map<number, ClusterPort>();
  /** Next cluster whose IPv6 address hashes alike (the index chains them). */
  nextSameHash: Cluster | null = null;
  constructor(readonly address: IpAddress, readonly addrWords: Uint32Array) {}
}

function portKey(protocol: number, port: number): number {
  return (protocol << 16) | port;
}

const HASH_SEED = 0x2545f491;

export class ConfigTree {
  readonly clusters: Cluster[] = [];
  /**
   * IPv4 clusters keyed by address | 0: an int32 key is a small integer to V8,
   * while an address above 127.255.255.255 as uint32 would be a heap number,
   * slower to hash on every packet.
   */
  private readonly v4 = new Map<number, Cluster>();
  private readonly v6 = new Map<number, Cluster>();
  /** Every daemon ever created, by id; retired ones stay until no record points at them. */
  readonly daemonsById: Daemon[] = [];
  readonly portsById: ClusterPort[] = [];

  /**
   * The cluster port for a packet's destination, or undefined. `words` holds the
   * address at `at` in the record's four-word form; `protocol` is 6 or 17.
   * Packet path: no allocation.
   */
  findPort(family: number, words: Uint32Array, at: number, protocol: number, port: number): ClusterPort | undefined {
    let cluster: Cluster | null | undefined;
    if (family === 4) {
      cluster = this.v4.get(words[at] | 0);
    } else {
      cluster = this.v6.get(hashAddress(words, at, HASH_SEED));
      while (cluster && !(cluster.addrWords[0] === words[at] && cluster.addrWords[1] === words[at + 1] &&
          cluster.addrWords[2] === words[at + 2] && cluster.addrWords[3] === words[at + 3])) {
        cluster = cluster.nextSameHash;
      }
    }
    return cluster ? cluster.portIndex.get(portKey(protocol, port)) : undefined;
  }

  /** True when `words[at..]` is a cluster address of the given family (any port). */
  hasCluster(family: number, words: Uint32Array, at: number): boolean {
    if (family === 4) return this.v4.has(words[at] | 0);
    let cluster: Cluster | null | undefined = this.v6.get(hashAddress(words, at, HASH_SEED));
    while (cluster) {
      const w = cluster.addrWords;
      if (w[0] === words[at] && w[1] === words[at + 1] && w[2] === words[at + 2] && w[3] === words[at + 3]) return true;
      cluster = cluster.nextSameHash;
    }
    return false;
  }

  /** Live (not retired) daemons of every port. */
  *daemons(): Iterable<Daemon> {
    for (const cluster of this.clusters) for (const port of cluster.ports) yield* port.daemons;
  }

  /**
   * Builds a tree from `spec`, reusing ids from `previous` for every cluster port
   * (same address, port, protocol) and daemon (same port and endpoint) that
   * remains. Validates everything first; throws ConfigError naming the key and
   * leaves `previous` untouched.
   */
  static build(spec: DispatchSpec, previous?: ConfigTree): ConfigTree {
    validate(spec);
    const tree = new ConfigTree();
    const oldPorts = new Map<string, ClusterPort>();
    const oldDaemons = new Map<string, Daemon>();
    if (previous) {
      for (const p of previous.portsById) if (p) oldPorts.set(p.name, p);
      // Retired daemons too: one added back while its old flows live on is the
      // same daemon again, so its flows and counters stay under one id.
      for (const d of previous.daemonsById) if (d) oldDaemons.set(`${d.clusterPort.name} ${d.name}`, d);
      // A retired daemon's id still names its records; it is reused only once the
      // balancer has released it (no flow, no record left: Balancer.releaseDaemon).
      tree.daemonsById.length = previous.daemonsById.length;
      tree.portsById.length = previous.portsById.length;
      for (let i = 0; i < previous.daemonsById.length; i++) tree.daemonsById[i] = previous.daemonsById[i];
      for (let i = 0; i < previous.portsById.length; i++) tree.portsById[i] = previous.portsById[i];
    }
    const kept = new Set<Daemon>();

    for (const cs of spec.clusters) {
      const address = parseIp(cs.address) as IpAddress;
      const cluster = new Cluster(address, addressWords(address));
      tree.clusters.push(cluster);
      if (address.family === 4) {
        tree.v4.set(cluster.addrWords[0] | 0, cluster);
      } else {
        const h = hashAddress(cluster.addrWords, 0, HASH_SEED);
        cluster.nextSameHash = tree.v6.get(h) ?? null;
        tree.v6.set(h, cluster);
      }
      for (const ps of cs.ports) {
        const protocol = ps.protocol ?? 'tcp';
        const scheduler = ps.scheduler ?? 'wlc';
        const name = `${formatEndpoint({ address, port: ps.port })}/${protocol}`;
        const old = oldPorts.get(name);
        const id = old ? old.id : tree.portsById.length;
        const port = new ClusterPort(id, cluster, ps.port, protocol, scheduler, ps.rejectWhenEmpty === true);
        tree.portsById[id] = port;
        cluster.ports.push(port);
        if (protocol !== 'udp') cluster.portIndex.set(portKey(IP_PROTO_TCP, ps.port), port);
        if (protocol !== 'tcp') cluster.portIndex.set(portKey(IP_PROTO_UDP, ps.port), port);
        for (const ds of ps.daemons) {
          const endpoint = parseEndpoint(ds.address)!;
          const weight = ds.weight ?? 1;
          const previousDaemon = oldDaemons.get(`${name} ${formatEndpoint(endpoint)}`);
          let daemon: Daemon;
          if (previousDaemon) {
            // Same object, so records and counters that name it carry on.
            daemon = previousDaemon;
            daemon.retired = false;
            daemon.quietSince = Number.NaN;
            daemon.weight = weight;
            daemon.clusterPort = port;
            kept.add(daemon);
          } else {
            // The lowest released id first: marks (netfilter plane) and stats stay small over months of add/remove.
            let id = tree.daemonsById.findIndex((d) => d === undefined);
            if (id < 0) id = tree.daemonsById.length;
            daemon = new Daemon(id, endpoint.address, addressWords(endpoint.address), endpoint.port, weight, port);
            tree.daemonsById[daemon.id] = daemon;
          }
          port.daemons.push(daemon);
        }
      }
    }
    for (const d of oldDaemons.values()) if (!kept.has(d)) d.retired = true;
    return tree;
  }
}

/** Checks a spec for everything the packet path relies on. Throws ConfigError naming the first bad key. */
export function validate(spec: DispatchSpec): void {
  if (!spec || !Array.isArray(spec.clusters)) throw new ConfigError('clusters', 'expected a list of clusters');
  const clusterSeen = new Map<string, number>();
  spec.clusters.forEach((cs, ci) => {
    const at = `clusters[${ci}]`;
    const address = typeof cs.address === 'string' ? parseIp(cs.address) : null;
    if (!address) throw new ConfigError(`${at}.address`, `"${cs.address}" is not an IPv4 or IPv6 address (write it without a port or prefix)`);
    const dup = clusterSeen.get(address.text);
    if (dup !== undefined) throw new ConfigError(`${at}.address`, `${address.text} is already clusters[${dup}]; list each cluster once and give it several ports`);
    clusterSeen.set(address.text, ci);
    if (!Array.isArray(cs.ports) || cs.ports.length === 0) throw new ConfigError(`${at}.ports`, 'expected at least one port');
    const taken = new Map<string, number>();
    cs.ports.forEach((ps, pi) => {
      const pat = `${at}.ports[${pi}]`;
      if (!Number.isInteger(ps.port) || ps.port < 1 || ps.port > 65535) throw new ConfigError(`${pat}.port`, `expected a port number 1..65535, got ${JSON.stringify(ps.port)}`);
      const protocol = ps.protocol ?? 'tcp';
      if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'any') throw new ConfigError(`${pat}.protocol`, `expected tcp, udp or any, got ${JSON.stringify(protocol)}`);
      for (const proto of protocol === 'any' ? ['tcp', 'udp'] : [protocol]) {
        const other = taken.get(`${proto}/${ps.port}`);
        if (other !== undefined) throw new ConfigError(`${pat}.port`, `${ps.port}/${proto} is already served by ${at}.ports[${other}]`);
        taken.set(`${proto}/${ps.port}`, pi);
      }
      if (ps.scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(ps.scheduler)) {
        throw new ConfigError(`${pat}.scheduler`, `unknown scheduler ${JSON.stringify(ps.scheduler)}; expected one of ${SCHEDULER_NAMES.join(', ')}`);
      }
      if (!Array.isArray(ps.daemons)) throw new ConfigError(`${pat}.daemons`, 'expected a list of daemons (it may be empty)');
      const endpoints = new Map<string, number>();
      ps.daemons.forEach((ds, di) => {
        const dat = `${pat}.daemons[${di}]`;
        const endpoint = typeof ds.address === 'string' ? parseEndpoint(ds.address) : null;
        if (!endpoint) throw new ConfigError(`${dat}.address`, `"${ds.address}" is not address:port (IPv6 as [2001:db8::1]:8080)`);
        if (endpoint.address.family !== address.family) {
          throw new ConfigError(`${dat}.address`, `daemon ${ds.address} is IPv${endpoint.address.family} but cluster ${address.text} is IPv${address.family}; a daemon must share its cluster's family`);
        }
        const name = formatEndpoint(endpoint);
        const again = endpoints.get(name);
        if (again !== undefined) throw new ConfigError(`${dat}.address`, `${name} is already daemons[${again}] of this port`);
        endpoints.set(name, di);
        const w = ds.weight ?? 1;
        if (!Number.isInteger(w) || w < 0 || w > MAX_WEIGHT) throw new ConfigError(`${dat}.weight`, `expected an integer 0..${MAX_WEIGHT} (0 = quiesced), got ${JSON.stringify(ds.weight)}`);
      });
    });
  });
}
