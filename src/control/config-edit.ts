// Edits of a running configuration, as the admin API and CLI express them:
// add or remove a cluster, port or daemon, change a weight or scheduler. Each
// returns a new raw configuration (the input is never changed) for the
// instance to validate whole and apply; a missing or duplicate target is an
// ApiError naming the field.

import { formatEndpoint, parseEndpoint, parseIp } from '../wire/address.js';
import { badRequest, conflict, notFound } from './api/api-error.js';
import type { HostlbConfig } from './config-schema.js';

type Config = HostlbConfig;
type ClusterConf = Config['clusters'][number];
type PortConf = ClusterConf['ports'][number];
type DaemonConf = PortConf['daemons'][number];

/** Canonical text of a cluster address, or a 400 naming `field`. */
export function canonicalAddress(text: string, field: string): string {
  const ip = parseIp(text);
  if (!ip) throw badRequest('BAD_ADDRESS', `"${text}" is not an IPv4 or IPv6 address`, field);
  return ip.text;
}

/** Canonical text of a daemon endpoint, or a 400 naming `field`. */
export function canonicalEndpoint(text: string, field: string): string {
  const e = parseEndpoint(text);
  if (!e) throw badRequest('BAD_ENDPOINT', `"${text}" is not address:port (IPv6 as [2001:db8::1]:8080)`, field);
  return formatEndpoint(e);
}

export function parseProtocol(text: string, field = 'protocol'): 'tcp' | 'udp' | 'any' {
  if (text !== 'tcp' && text !== 'udp' && text !== 'any') throw badRequest('BAD_PROTOCOL', `expected tcp, udp or any, got "${text}"`, field);
  return text;
}

export function parsePort(text: string | number, field = 'port'): number {
  const n = typeof text === 'number' ? text : /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw badRequest('BAD_PORT', `expected a port number 1..65535, got ${JSON.stringify(text)}`, field);
  return n;
}

function copy(config: Config): Config {
  return structuredClone(config);
}

function findCluster(config: Config, address: string): ClusterConf {
  const want = canonicalAddress(address, 'cluster');
  const c = config.clusters.find((x) => parseIp(x.address)?.text === want);
  if (!c) throw notFound('CLUSTER_NOT_FOUND', `no cluster ${want}; list them with hostlb status`, 'cluster');
  return c;
}

function findPort(config: Config, cluster: string, port: number, protocol: string): PortConf {
  const c = findCluster(config, cluster);
  const p = c.ports.find((x) => x.port === port && x.protocol === protocol);
  if (!p) throw notFound('PORT_NOT_FOUND', `cluster ${c.address} has no port ${port}/${protocol}`, 'port');
  return p;
}

function findDaemon(port: PortConf, daemon: string): DaemonConf {
  const want = canonicalEndpoint(daemon, 'daemon');
  const d = port.daemons.find((x) => parseEndpoint(x.address) && formatEndpoint(parseEndpoint(x.address)!) === want);
  if (!d) throw notFound('DAEMON_NOT_FOUND', `port ${port.port}/${port.protocol} has no daemon ${want}`, 'daemon');
  return d;
}

export interface PortRef { cluster: string; port: number; protocol: string }

/** A misspelt key must not be ignored silently: 400 UNKNOWN_KEY naming it. */
function onlyKeys(body: object, allowed: readonly string[]): void {
  const extra = Object.keys(body).find((k) => !allowed.includes(k));
  if (extra !== undefined) throw badRequest('UNKNOWN_KEY', `unknown key "${extra}"; this request takes ${allowed.map((k) => `"${k}"`).join(', ')}`, extra);
}

export function addCluster(config: Config, cluster: { address: string; ports?: unknown[] }): Config {
  const next = copy(config);
  const address = canonicalAddress(String(cluster.address ?? ''), 'address');
  if (next.clusters.some((x) => parseIp(x.address)?.text === address)) throw conflict('CLUSTER_EXISTS', `cluster ${address} already exists; add ports to it instead`, 'address');
  next.clusters.push({ ...(cluster as ClusterConf), address });
  return next;
}

export function removeCluster(config: Config, address: string): Config {
  const next = copy(config);
  const c = findCluster(next, address);
  if (next.clusters.length === 1) throw conflict('LAST_CLUSTER', `${c.address} is the only cluster; hostlb needs at least one (stop hostlb instead)`, 'cluster');
  next.clusters = next.clusters.filter((x) => x !== c);
  return next;
}

export function addPort(config: Config, cluster: string, port: Record<string, unknown>): Config {
  const next = copy(config);
  const c = findCluster(next, cluster);
  c.ports.push(port as unknown as PortConf);
  return next;
}

export function setPort(config: Config, ref: PortRef, change: { scheduler?: string }): Config {
  const next = copy(config);
  const p = findPort(next, ref.cluster, ref.port, ref.protocol);
  onlyKeys(change, ['scheduler']);
  if (change.scheduler === undefined) throw badRequest('NOTHING_TO_CHANGE', 'give "scheduler" to change', 'scheduler');
  p.scheduler = change.scheduler as PortConf['scheduler'];
  return next;
}

export function removePort(config: Config, ref: PortRef): Config {
  const next = copy(config);
  const c = findCluster(next, ref.cluster);
  const p = findPort(next, ref.cluster, ref.port, ref.protocol);
  if (c.ports.length === 1) throw conflict('LAST_PORT', `${ref.port}/${ref.protocol} is the only port of ${c.address}; remove the cluster instead`, 'port');
  c.ports = c.ports.filter((x) => x !== p);
  return next;
}

export function addDaemon(config: Config, ref: PortRef, daemon: { address?: unknown; weight?: unknown }): Config {
  const next = copy(config);
  const p = findPort(next, ref.cluster, ref.port, ref.protocol);
  onlyKeys(daemon, ['address', 'weight']);
  const address = canonicalEndpoint(String(daemon.address ?? ''), 'address');
  if (p.daemons.some((x) => parseEndpoint(x.address) && formatEndpoint(parseEndpoint(x.address)!) === address)) {
    throw conflict('DAEMON_EXISTS', `daemon ${address} is already on port ${ref.port}/${ref.protocol}; change its weight instead`, 'address');
  }
  p.daemons.push({ address, weight: (daemon.weight ?? 1) as number });
  return next;
}

export function setDaemon(config: Config, ref: PortRef, daemon: string, change: { weight?: unknown }): Config {
  const next = copy(config);
  const d = findDaemon(findPort(next, ref.cluster, ref.port, ref.protocol), daemon);
  onlyKeys(change, ['weight']);
  if (change.weight === undefined) throw badRequest('NOTHING_TO_CHANGE', 'give "weight" to change', 'weight');
  d.weight = change.weight as number;
  return next;
}

export function removeDaemon(config: Config, ref: PortRef, daemon: string): Config {
  const next = copy(config);
  const p = findPort(next, ref.cluster, ref.port, ref.protocol);
  const d = findDaemon(p, daemon);
  p.daemons = p.daemons.filter((x) => x !== d);
  return next;
}
