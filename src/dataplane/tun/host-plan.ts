// Turns a HostSpec and the host's current state into the ordered, reversible
// steps that route clusters into the TUN device and daemon replies back to it
// (DESIGN.md, "Live data plane on Linux"). Pure: no I/O; probe.ts gathers the
// facts and apply.ts runs the steps.

import { checkDeviceName } from '../../link/tun-link.js';
import { isLoopback, parseIp, type IpAddress } from '../../wire/address.js';
import { prefixKey, routeKey, ruleKey, sourceAddress, TABLE_IDS, type Family, type HostFacts } from '../../net/host-facts.js';
import { DEFAULT_ROUTE_TABLE, type HostSpec } from '../../net/host-spec.js';
import { NetError } from '../../net/net-error.js';
import type { NetCommand, NetStep } from '../../net/net-step.js';

/** `to C lookup <table>` for a loopback-range cluster: before the other rules (DESIGN.md). */
export const LOOPBACK_CLUSTER_RULE_PREF = 99;
/** Daemon-reply rules and local-cluster rules. Anything below LOCAL_RULE_PREF works. */
export const RULE_PREF = 100;
/** Portless rules for IPv4 daemons, just after the per-port ones (see the path MTU note in planTunSetup). */
export const PMTU_RULE_PREF = 101;
/** Where the `local` rule moves to: after hostlb's rules, still before `main` (32766). */
export const LOCAL_RULE_PREF = 32765;
/** The fallback route's metric: worse than any route a person adds. */
export const BLACKHOLE_METRIC = 4000000000;

const IPV4_FORWARD = 'net/ipv4/ip_forward';
const IPV6_FORWARD = 'net/ipv6/conf/all/forwarding';

function conf(device: string, key: string): string {
  return `net/ipv4/conf/${device}/${key}`;
}

interface PlannedPort {
  port: number;
  protocols: Array<'tcp' | 'udp'>;
  daemons: Array<{ address: IpAddress; port: number }>;
}

interface PlannedCluster {
  address: IpAddress;
  /** Already an address of this host (the `local` table would take its packets). */
  local: boolean;
  /** In 127.0.0.0/8: routed through table 100 with src 127.0.0.1. */
  loopback: boolean;
  ports: PlannedPort[];
}

/**
 * The steps that make the host route `spec`'s clusters through `spec.device`,
 * in the order they must run. A step whose effect `facts` already show is left
 * out, so it is neither applied nor undone (running the plan twice does nothing
 * the second time). The device must exist when the steps run (TunLink.open
 * first); it need not exist when planning: its sysctls start from `default`.
 *
 * Order: sysctls; device up; table routes; cluster routes; rules; last, the
 * `local` rule moves behind hostlb's rules, so nothing is diverted before the
 * routes that receive it exist.
 *
 * Throws NetError NET_SPEC_INVALID (naming the spec key) or
 * NET_FACTS_INCOMPLETE (a sysctl the plan needs is missing, e.g. IPv6 disabled).
 */
export function planTunSetup(spec: HostSpec, facts: HostFacts): NetStep[] {
  const device = spec.device;
  const table = String(spec.routeTable ?? DEFAULT_ROUTE_TABLE);
  const clusters = validate(spec, facts);
  const families = new Set(clusters.map((c) => c.address.family));
  const steps: NetStep[] = [];
  const ruleKeys = new Set(facts.rules.map((r) => r.key));
  const routeKeys = new Set(facts.routes.map((r) => r.key));
  const planned = new Set<string>();

  const addIpStep = (present: boolean, key: string, description: string, apply: NetCommand, undo: NetCommand): void => {
    if (present || planned.has(key)) return;
    planned.add(key);
    steps.push({ description, apply, undo });
  };
  const addRule = (family: Family, rule: Parameters<typeof ruleKey>[1], args: string[], description: string): void => {
    const key = ruleKey(family, rule);
    const argv = [`-${family}`, 'rule'];
    addIpStep(ruleKeys.has(key), key, description, ['ip', ...argv, 'add', ...args], ['ip', ...argv, 'del', ...args]);
  };
  const addRoute = (family: Family, route: Parameters<typeof routeKey>[1], args: string[], description: string): void => {
    const key = routeKey(family, route);
    const argv = [`-${family}`, 'route'];
    // `del` without src: the kernel matches on destination, device, table and metric.
    const delArgs = args.filter((arg, i) => arg !== 'src' && args[i - 1] !== 'src');
    addIpStep(routeKeys.has(key), key, description, ['ip', ...argv, 'add', ...args], ['ip', ...argv, 'del', ...delArgs]);
  };
  const addSysctl = (path: string, value: string, description: string): void => {
    if (planned.has(path)) return;
    planned.add(path);
    let current = facts.sysctls[path];
    // A device created after the probe starts with the `default` values.
    if (current === undefined && path.startsWith(`net/ipv4/conf/${device}/`)) current = facts.sysctls[path.replace(`/${device}/`, '/default/')];
    if (current === undefined) {
      throw new NetError('NET_FACTS_INCOMPLETE', `/proc/sys/${path} does not exist, so it cannot be set to ${value}: ${path.includes('ipv6') ? 'enable IPv6 on this host or remove the IPv6 clusters' : 'is this a Linux host with IPv4?'}`);
    }
    if (current === value) return;
    steps.push({ description, apply: ['sysctl', path, value], undo: ['sysctl', path, current] });
  };

  // Sysctls. Note: writing ip_forward (or IPv6 all/forwarding) also rewrites
  // every device's own forwarding flag (devinet_sysctl_forward); undo writes
  // the old global value back the same way.
  const needsLocalnet = clusters.some((c) => c.loopback || c.ports.some((p) => p.daemons.some((d) => isLoopback(d.address))));
  if (families.has(4)) {
    addSysctl(IPV4_FORWARD, '1', 'forward IPv4, for clients on other hosts');
    // hostlb's own device, except where the kernel reads `all` too. accept_local
    // and route_localnet are (all OR device): the device alone is enough, and
    // route_localnet=1 on all would let the LAN reach 127.0.0.1 services.
    // rp_filter is max(all, device): packets the dispatcher writes arrive on
    // the device from sources routed elsewhere, which both strict (1) and loose
    // (2) mode drop there (the loose check looks the source up through the
    // device itself), so it must be 0 on all as well — the one host-wide
    // change, left out when all is 0 already, undone at stop.
    addSysctl(conf('all', 'rp_filter'), '0', 'no reverse-path filter (all): the kernel uses max(all, device), and translated packets arrive on the device');
    addSysctl(conf(device, 'rp_filter'), '0', `no reverse-path filter on ${device}`);
    // accept_local: a reply rewritten to come from a local cluster address, or a
    // local client's packet, arrives from a source this host owns.
    addSysctl(conf(device, 'accept_local'), '1', `accept packets from local source addresses on ${device}`);
    if (needsLocalnet) {
      // 127/8 on a device other than lo is martian unless route_localnet is set.
      addSysctl(conf(device, 'route_localnet'), '1', `route 127.0.0.0/8 on ${device}: loopback-range clusters or daemons`);
    }
  }
  if (families.has(6)) addSysctl(IPV6_FORWARD, '1', 'forward IPv6, for clients on other hosts');

  const deviceFact = facts.devices.find((d) => d.name === device);
  const upKey = `link ${device} up`;
  addIpStep(deviceFact?.up === true, upKey, `bring ${device} up`, ['ip', 'link', 'set', 'dev', device, 'up'], ['ip', 'link', 'set', 'dev', device, 'down']);

  // Table routes: everything looked up in the table goes into the device; when
  // the device is gone the blackhole keeps daemon replies from leaking out
  // untranslated through `main` (DESIGN.md).
  for (const family of [4, 6] as const) {
    if (!families.has(family)) continue;
    addRoute(family, { table, type: 'blackhole', dst: 'default', metric: BLACKHOLE_METRIC }, ['blackhole', 'default', 'metric', String(BLACKHOLE_METRIC), 'table', table], `IPv${family} fallback in table ${table}: drop replies while ${device} is gone`);
    addRoute(family, { table, dst: 'default', dev: device }, ['default', 'dev', device, 'table', table], `IPv${family} table ${table} sends everything into ${device}`);
  }

  // Cluster routes.
  for (const cluster of clusters) {
    const family = cluster.address.family;
    const c = cluster.address.text;
    const prefix = prefixKey(family, c);
    if (cluster.loopback) {
      // Without src a local client's SYN would leave with source 0.0.0.0.
      addRoute(family, { table, dst: prefix, dev: device }, [prefix, 'dev', device, 'src', '127.0.0.1', 'table', table], `route loopback-range cluster ${c} into ${device} (table ${table})`);
    } else if (!cluster.local) {
      const src = pickSource(family, clusters, spec.device, facts);
      addRoute(family, { table: 'main', dst: prefix, dev: device }, [prefix, 'dev', device, ...(src ? ['src', src] : [])], `route cluster ${c} into ${device}`);
    }
    // A local, non-loopback cluster needs no route: its rules below send the
    // cluster's ports to the table's default route.
  }

  // Rules.
  for (const cluster of clusters) {
    const family = cluster.address.family;
    const c = cluster.address.text;
    if (cluster.loopback && !cluster.local) {
      addRule(family, { priority: LOOPBACK_CLUSTER_RULE_PREF, to: c, table }, ['pref', String(LOOPBACK_CLUSTER_RULE_PREF), 'to', c, 'lookup', table], `send loopback-range cluster ${c} to table ${table}, before local`);
    } else if (cluster.local) {
      // The host owns C, so only the cluster's ports go to the device; the
      // rest of C's traffic stays the host's (ssh to the same address, ...).
      for (const port of cluster.ports) {
        for (const protocol of port.protocols) {
          addRule(family, { priority: RULE_PREF, to: c, ipproto: protocol, dport: port.port, table }, ['pref', String(RULE_PREF), 'to', c, 'ipproto', protocol, 'dport', String(port.port), 'lookup', table], `send ${protocol} to local cluster ${c} port ${port.port} to table ${table}, before local`);
        }
      }
    }
  }
  for (const cluster of clusters) {
    const family = cluster.address.family;
    for (const port of cluster.ports) {
      for (const daemon of port.daemons) {
        for (const protocol of port.protocols) {
          const d = daemon.address.text;
          // iif lo: only what the daemon sends (locally generated). A packet hostlb hands back
          // unchanged (a health probe's answer) arrives on the device and must not loop into it again.
          addRule(family, { priority: RULE_PREF, from: d, iif: 'lo', ipproto: protocol, sport: daemon.port, table }, ['pref', String(RULE_PREF), 'from', d, 'iif', 'lo', 'ipproto', protocol, 'sport', String(daemon.port), 'lookup', table], `send ${protocol} replies of daemon ${formatDaemon(daemon.address, daemon.port)} to table ${table}`);
        }
      }
    }
  }

  // IPv4 path MTU: when "fragmentation needed" lowers a daemon's path MTU, the
  // kernel looks the route up again without ports, so the sport rules above do
  // not match and the lower MTU lands on the main table's route while the
  // socket keeps sending into the device (bench and hard-cases test). A rule
  // without sport catches that lookup; packets of connections hostlb did not
  // dispatch are handed back unchanged, and iif lo keeps them from looping.
  // IPv6 updates the socket's own route and needs none.
  for (const cluster of clusters) {
    if (cluster.address.family !== 4) continue;
    for (const port of cluster.ports) {
      for (const daemon of port.daemons) {
        for (const protocol of port.protocols) {
          const d = daemon.address.text;
          addRule(4, { priority: PMTU_RULE_PREF, from: d, iif: 'lo', ipproto: protocol, table }, ['pref', String(PMTU_RULE_PREF), 'from', d, 'iif', 'lo', 'ipproto', protocol, 'lookup', table], `send ${protocol} of daemon ${d} to table ${table} for path MTU updates`);
        }
      }
    }
  }

  // ICMP the daemon's host sends about a flow (port unreachable for a UDP
  // datagram, errors quoting a client's packet) comes from the daemon's
  // address: hostlb rewrites it to come from the cluster (icmp-translate.ts);
  // any other ICMP of the daemon is handed back unchanged.
  for (const cluster of clusters) {
    const family = cluster.address.family;
    const icmp = family === 4 ? 'icmp' : 'ipv6-icmp';
    for (const port of cluster.ports) {
      for (const daemon of port.daemons) {
        const d = daemon.address.text;
        addRule(family, { priority: PMTU_RULE_PREF, from: d, iif: 'lo', ipproto: icmp, table }, ['pref', String(PMTU_RULE_PREF), 'from', d, 'iif', 'lo', 'ipproto', icmp, 'lookup', table], `send ICMP of daemon ${d} to table ${table}`);
      }
    }
  }

  // The local rule last: add its new place before removing the old one, so
  // local delivery never has a gap.
  for (const family of [4, 6] as const) {
    if (!families.has(family)) continue;
    const local = String(TABLE_IDS.local);
    addRule(family, { priority: LOCAL_RULE_PREF, table: local }, ['pref', String(LOCAL_RULE_PREF), 'lookup', 'local'], `IPv${family}: consult local at ${LOCAL_RULE_PREF}, after hostlb's rules`);
    const oldKey = ruleKey(family, { priority: 0, table: local });
    const old = facts.rules.find((r) => r.key === oldKey);
    if (old !== undefined && !planned.has(`del ${oldKey}`)) {
      planned.add(`del ${oldKey}`);
      // Put it back as it was: the kernel's own rule says "protocol kernel".
      const protocol = old.protocol !== undefined && old.protocol !== 'unspec' && old.protocol !== '0' ? ['protocol', old.protocol] : [];
      steps.push({
        description: `IPv${family}: stop consulting local at priority 0`,
        apply: ['ip', `-${family}`, 'rule', 'del', 'pref', '0', 'lookup', 'local'],
        undo: ['ip', `-${family}`, 'rule', 'add', 'pref', '0', 'lookup', 'local', ...protocol],
      });
    }
  }
  return steps;
}

function formatDaemon(address: IpAddress, port: number): string {
  return address.family === 6 ? `[${address.text}]:${port}` : `${address.text}:${port}`;
}

/**
 * The source for local clients of a non-local cluster: the first address of
 * the family that is neither a cluster's nor a daemon's and not on the device
 * itself, preferring devices other than lo. Null lets the kernel choose.
 */
function pickSource(family: Family, clusters: PlannedCluster[], device: string, facts: HostFacts): string | null {
  const taken = new Set<string>();
  for (const c of clusters) {
    taken.add(c.address.text);
    for (const p of c.ports) for (const d of p.daemons) taken.add(d.address.text);
  }
  return sourceAddress(family, taken, device, facts);
}

function invalid(path: string, message: string): NetError {
  return new NetError('NET_SPEC_INVALID', `${path}: ${message}`);
}

function unicast(path: string, text: unknown, family?: Family): IpAddress {
  const address = typeof text === 'string' ? parseIp(text) : null;
  if (address === null) throw invalid(path, `${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  if (family !== undefined && address.family !== family) {
    throw invalid(path, `${address.text} is IPv${address.family} but its cluster is IPv${family}: hostlb does not translate between families`);
  }
  if (address.family === 6 && isLoopback(address)) {
    // ip6_rcv_core() drops ::1 arriving on any device but lo (RFC 4291 §2.5.3),
    // and every packet hostlb forwards arrives on the TUN device.
    throw invalid(path, '::1 cannot be used: the kernel drops ::1 packets that arrive on a device other than lo; put an address from 2001:db8::/32 (or your own) on lo instead');
  }
  const b = address.bytes;
  const unspecified = b.every((x) => x === 0);
  const multicast = address.family === 4 ? b[0] >= 224 : b[0] === 0xff;
  if (unspecified || multicast) throw invalid(path, `${address.text} is not a unicast address`);
  return address;
}

function checkPort(path: string, port: unknown): number {
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) throw invalid(path, `${JSON.stringify(port)} is not a port (1-65535)`);
  return port as number;
}

function validate(spec: HostSpec, facts: HostFacts): PlannedCluster[] {
  const nameProblem = checkDeviceName(spec.device);
  if (nameProblem !== null) throw invalid('device', nameProblem);
  const table = spec.routeTable ?? DEFAULT_ROUTE_TABLE;
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff || table === 253 || table === 254 || table === 255) {
    throw invalid('routeTable', `${table} cannot be used: pick an unused table id from 1 to 4294967295 other than 253 (default), 254 (main) and 255 (local)`);
  }
  const localAddresses = new Set(facts.addresses.map((a) => a.address));
  return spec.clusters.map((cluster, ci) => {
    const address = unicast(`clusters[${ci}].address`, cluster.address);
    const ports = cluster.ports.map((port, pi): PlannedPort => {
      const path = `clusters[${ci}].ports[${pi}]`;
      if (port.protocol !== 'tcp' && port.protocol !== 'udp' && port.protocol !== 'any') {
        throw invalid(`${path}.protocol`, `${JSON.stringify(port.protocol)} is not tcp, udp or any`);
      }
      return {
        port: checkPort(`${path}.port`, port.port),
        protocols: port.protocol === 'any' ? ['tcp', 'udp'] : [port.protocol],
        daemons: port.daemons.map((daemon, di) => ({
          address: unicast(`${path}.daemons[${di}].address`, daemon.address, address.family),
          port: checkPort(`${path}.daemons[${di}].port`, daemon.port),
        })),
      };
    });
    return { address, local: localAddresses.has(address.text), loopback: isLoopback(address), ports };
  });
}
