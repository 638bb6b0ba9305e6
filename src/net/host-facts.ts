// What the host's network looks like now, as plain data: addresses, devices,
// policy rules, routes and sysctls, parsed from `ip -j` output. Pure: probe.ts
// runs the commands, a host plan (dataplane/*/host-plan.ts) compares these
// facts with what a HostSpec needs.

import { parseIp } from '../wire/address.js';

export type Family = 4 | 6;

export interface AddressFact {
  family: Family;
  /** Canonical text (RFC 5952 for IPv6). */
  address: string;
  dev: string;
  /** "global", "host", "link", ... as ip prints it. */
  scope: string;
}

export interface DeviceFact {
  name: string;
  /** Administratively up (IFF_UP). */
  up: boolean;
}

/**
 * A policy rule reduced to a comparable key, e.g.
 * `4 pref 100 from 198.18.1.1/32 to all ipproto 6 sport 8080 dport - lookup 100`.
 * Tables and protocols are numbers (local = 255, tcp = 6) whatever names
 * /etc/iproute2 gives them; a rule with selectors hostlb never writes (iif,
 * fwmark, not, ...) gets a key no planned rule can equal.
 */
export interface RuleFact {
  family: Family;
  priority: number;
  key: string;
  /** Who made the rule ("kernel" for the default rules), when `ip -d` said; undo restores it. */
  protocol?: string;
}

/** A route reduced to a comparable key: `4 table 100 type 1 0.0.0.0/0 dev hlb0 metric 0`. */
export interface RouteFact {
  family: Family;
  key: string;
}

export interface HostFacts {
  addresses: AddressFact[];
  devices: DeviceFact[];
  rules: RuleFact[];
  routes: RouteFact[];
  /** Current values by path under /proc/sys (`net/ipv4/ip_forward`); a missing path is absent. */
  sysctls: Record<string, string>;
}

/** Well-known table ids (linux/rtnetlink.h). */
export const TABLE_IDS: Record<string, number> = { unspec: 0, default: 253, main: 254, local: 255 };

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, ipv6: 41, 'ipv6-icmp': 58, icmpv6: 58, sctp: 132 };

/** Route types (linux/rtnetlink.h RTN_*). */
export const ROUTE_TYPES: Record<string, number> = {
  unicast: 1,
  local: 2,
  broadcast: 3,
  anycast: 4,
  multicast: 5,
  blackhole: 6,
  unreachable: 7,
  prohibit: 8,
  throw: 9,
  nat: 10,
};

/** "local", "255" or 255 -> 255; a name only /etc/iproute2/rt_tables knows stays a name. */
export function tableId(table: unknown): string {
  if (typeof table === 'number') return String(table);
  const text = String(table ?? 'main');
  if (text in TABLE_IDS) return String(TABLE_IDS[text]);
  return text;
}

/** "tcp", "ipproto-6" (ip -N) or 6 -> "6". */
export function protocolNumber(value: unknown): string {
  if (value === undefined || value === null) return '-';
  if (typeof value === 'number') return String(value);
  const text = String(value);
  if (text in PROTOCOLS) return String(PROTOCOLS[text]);
  const m = /^(?:ipproto-)?(\d+)$/.exec(text);
  return m ? m[1] : text;
}

/** "198.18.0.1" + 32, "default", "all" -> "198.18.0.1/32", "0.0.0.0/0", "all". */
export function prefixKey(family: Family, address: unknown, length?: unknown): string {
  if (address === undefined || address === 'all') return 'all';
  if (address === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  const text = String(address);
  const [addr, lenText] = text.split('/');
  const parsed = parseIp(addr);
  const len = length ?? lenText ?? (family === 4 ? 32 : 128);
  return `${parsed ? parsed.text : addr}/${len}`;
}

/** The rule key dataplane/tun/host-plan.ts builds for a rule it wants; the same shape ruleFromJson() gives. */
export function ruleKey(
  family: Family,
  rule: { priority: number; from?: string; to?: string; ipproto?: string; sport?: number; dport?: number; iif?: string; table: string | number },
): string {
  // `ip -j rule` reports iif as an extra field; ruleFromJson appends extras the same way.
  const extra = rule.iif === undefined ? '' : ` ${JSON.stringify({ iif: rule.iif })}`;
  return [
    family,
    `pref ${rule.priority}`,
    `from ${rule.from === undefined ? 'all' : prefixKey(family, rule.from)}`,
    `to ${rule.to === undefined ? 'all' : prefixKey(family, rule.to)}`,
    `ipproto ${protocolNumber(rule.ipproto)}`,
    `sport ${rule.sport ?? '-'}`,
    `dport ${rule.dport ?? '-'}`,
    `lookup ${tableId(rule.table)}`,
  ].join(' ') + extra;
}

/** rtnetlink.h RTPROT_*: `ip -N` prints numbers, the names read better in an undo command. */
const RULE_PROTOCOLS: Record<string, string> = { '0': 'unspec', '1': 'redirect', '2': 'kernel', '3': 'boot', '4': 'static' };

const RULE_FIELDS = new Set(['priority', 'src', 'srclen', 'dst', 'dstlen', 'ipproto', 'sport', 'dport', 'table', 'protocol', 'flags']);

/** One entry of `ip -j [-N] rule` output. */
export function ruleFromJson(family: Family, json: Record<string, unknown>): RuleFact {
  const extras = Object.keys(json).filter((k) => !RULE_FIELDS.has(k));
  let key = [
    family,
    `pref ${json.priority ?? 0}`,
    `from ${json.src === undefined || json.src === 'all' ? 'all' : prefixKey(family, json.src, json.srclen)}`,
    `to ${json.dst === undefined || json.dst === 'all' ? 'all' : prefixKey(family, json.dst, json.dstlen)}`,
    `ipproto ${protocolNumber(json.ipproto)}`,
    `sport ${json.sport ?? '-'}`,
    `dport ${json.dport ?? '-'}`,
    `lookup ${tableId(json.table)}`,
  ].join(' ');
  if (extras.length > 0) key += ` ${JSON.stringify(Object.fromEntries(extras.sort().map((k) => [k, json[k]])))}`;
  const fact: RuleFact = { family, priority: Number(json.priority ?? 0), key };
  if (json.protocol !== undefined) fact.protocol = RULE_PROTOCOLS[String(json.protocol)] ?? String(json.protocol);
  return fact;
}

/**
 * The route key for a route hostlb adds. IPv4 routes default to metric 0,
 * IPv6 routes to 1024 (the kernel's IP6_RT_PRIO_USER). A blackhole has no
 * device to compare (IPv6 reports it on "lo").
 */
export function routeKey(family: Family, route: { table: string | number; type?: string | number; dst: string; dev?: string; metric?: number }): string {
  const type = route.type === undefined ? 1 : typeof route.type === 'number' ? route.type : (ROUTE_TYPES[route.type] ?? Number(route.type));
  const dev = type === ROUTE_TYPES.unicast ? (route.dev ?? '-') : '-';
  const metric = route.metric ?? (family === 4 ? 0 : 1024);
  return `${family} table ${tableId(route.table)} type ${type} ${prefixKey(family, route.dst)} dev ${dev} metric ${metric}`;
}

/** One entry of `ip -j [-N] route show table all` output. */
export function routeFromJson(family: Family, json: Record<string, unknown>): RouteFact {
  return {
    family,
    key: routeKey(family, {
      table: (json.table as string | undefined) ?? 'main',
      type: json.type as string | undefined,
      dst: String(json.dst ?? 'default'),
      dev: json.dev as string | undefined,
      metric: json.metric as number | undefined,
    }),
  };
}

/** `ip -j addr` output -> addresses and devices. */
export function addressesFromJson(links: Array<Record<string, unknown>>): { addresses: AddressFact[]; devices: DeviceFact[] } {
  const addresses: AddressFact[] = [];
  const devices: DeviceFact[] = [];
  for (const link of links) {
    const name = String(link.ifname);
    const flags = Array.isArray(link.flags) ? (link.flags as string[]) : [];
    devices.push({ name, up: flags.includes('UP') });
    for (const info of (link.addr_info as Array<Record<string, unknown>> | undefined) ?? []) {
      const parsed = parseIp(String(info.local));
      if (parsed === null) continue;
      addresses.push({ family: parsed.family, address: parsed.text, dev: name, scope: String(info.scope ?? 'global') });
    }
  }
  return { addresses, devices };
}

/**
 * The address a same-host client's connection to a cluster leaves from: a
 * global address of this host that is neither in `taken` (clusters, daemons)
 * nor on `device`, preferring one not on lo. Null when there is none.
 */
export function sourceAddress(family: Family, taken: ReadonlySet<string>, device: string, facts: HostFacts): string | null {
  const candidates = facts.addresses.filter((a) => a.family === family && a.scope === 'global' && a.dev !== device && !taken.has(a.address));
  return (candidates.find((a) => a.dev !== 'lo') ?? candidates[0])?.address ?? null;
}
