// Every problem of a configuration, collected instead of thrown at the first:
// its shape (every zod issue, unknown keys too), the tree's rules
// (dispatch/config-tree), users and groups, advisors, and the mistakes people
// make writing a file (a host name for an address, a loop, a multicast
// cluster). With a HostView, also what only this host can answer (a daemon
// the socket plane cannot reach, a token file it cannot read). Lines, files,
// and whether to throw the first or print them all, are config-file.ts's.

import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { choosePlane, planeConfigProblem, type PlaneKind } from '../dataplane/data-plane.js';
import { validate as validateTree, type DispatchSpec } from '../dispatch/config-tree.js';
import { ConfigError, HostlbError } from '../errors.js';
import { advisorSpec } from '../health/advisors/advisor.js';
import { resolveRunAs } from '../health/run-as.js';
import { daemonEndpoints } from '../health/supervisor.js';
import { isLoopback, parseEndpoint, parseIp, type IpAddress } from '../wire/address.js';
import { configSchema, type HostlbConfig } from './config-schema.js';

type Keys = (string | number)[];

/** One problem, about the key at `keys`. */
export interface Finding {
  keys: Keys;
  /** What is wrong and what to write instead; no key path in front. */
  message: string;
  /** The key itself is wrong (unknown): its line is the key's, not its value's. */
  atKey?: boolean;
  /** Worth saying, but the configuration is usable (hostlb check prints it and passes). */
  warning?: boolean;
}

/** What the host checks need to know of the host `hostlb check` runs on; thisHost() asks the real one. */
export interface HostView {
  /** The plane `dataplane: auto` runs here (choosePlane). */
  autoPlane(): PlaneKind;
  /** True when `address` is an address of this host. */
  isLocal(address: IpAddress): boolean;
  /** A file's text; throws as readFileSync does. */
  readFile(path: string): string;
  /** True when this process runs as root (a file root alone may read is readable at start). */
  isRoot(): boolean;
}

/** The host this process runs on. autoPlane probes the planes once (it opens and closes a BPF map). */
export function thisHost(): HostView {
  let auto: PlaneKind | undefined;
  return {
    autoPlane: () => (auto ??= choosePlane('auto')),
    // Linux answers for all of 127.0.0.0/8 on lo (a route, not one address per
    // interface), so networkInterfaces() lists only 127.0.0.1 of them.
    isLocal: (address) => isLoopback(address) || Object.values(networkInterfaces()).some((list) => list?.some((i) => parseIp(i.address)?.text === address.text)),
    readFile: (path) => readFileSync(path, 'utf8'),
    isRoot: () => process.geteuid?.() === 0,
  };
}

/** Formats a key path the way messages show it: clusters[0].ports[1].scheduler. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Parses "clusters[0].ports[1].daemons[2].address" back into a key path. */
export function parsePath(path: string): Keys {
  const keys: Keys = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) keys.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return keys;
}

/**
 * Every problem of `raw` (a configuration as plain data: YAML's or the API's),
 * in the order the layers find them: shape, tree, then the rest. `config` is
 * the validated configuration when no finding is an error, else null. With
 * `host`, the checks that depend on this host run too (hostlb check only).
 * A part whose shape is wrong is left out of the checks that need it.
 */
export function collectFindings(raw: unknown, host?: HostView): { config: HostlbConfig | null; findings: Finding[] } {
  const parsed = configSchema.safeParse(raw);
  const shape = parsed.success ? [] : parsed.error.issues.flatMap(issueFindings);
  const findings: Finding[] = shape.map((s) => s.finding);
  // The tree repeats some shape checks (a port's range, a missing address): say each once.
  const said = (f: Finding): boolean => shape.some((s) => sameKeys(s.finding.keys, f.keys) || (s.wrongType && startsWith(f.keys, s.finding.keys)));
  for (const f of treeFindings(parsed.success ? parsed.data : raw)) if (!said(f)) findings.push(f);
  const view = parsed.success ? viewOf(parsed.data) : partialView(raw);
  findings.push(...runAsFindings(view), ...advisorFindings(view), ...addressFindings(view, host), ...agentFindings(view));
  if (host) findings.push(...hostFindings(view, host));
  const seen = new Set<string>();
  const unique = findings.filter((f) => {
    const key = `${formatPath(f.keys)}\n${f.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { config: parsed.success && unique.every((f) => f.warning) ? parsed.data : null, findings: unique };
}

type ZodIssue = NonNullable<ReturnType<typeof configSchema.safeParse>['error']>['issues'][number];

function issueFindings(issue: ZodIssue): { finding: Finding; wrongType: boolean }[] {
  const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
  if (issue.code === 'unrecognized_keys') {
    // One each: every unknown key has a line of its own.
    return issue.keys.map((k) => ({ finding: { keys: [...path, k], message: `unknown key "${k}"; check the spelling against docs/configuration.md`, atKey: true }, wrongType: false }));
  }
  return [{ finding: { keys: path, message: issue.message }, wrongType: issue.code === 'invalid_type' }];
}

const sameKeys = (a: Keys, b: Keys): boolean => a.length === b.length && startsWith(a, b);
const startsWith = (keys: Keys, prefix: Keys): boolean => prefix.length <= keys.length && prefix.every((k, i) => keys[i] === k);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The tree's findings (config-tree.ts validate), all of them: validate throws
 * at the first, so each bad cluster, port or daemon is taken out of a copy (a
 * bad scheduler or weight: just that key) and the rest validated again, until
 * it passes. Rules between a removed part and the others (duplicates) are then
 * not checked for it.
 */
function treeFindings(input: unknown): Finding[] {
  // Where each copied cluster, port and daemon was in the input, as the indices shift.
  const origin = new WeakMap<object, number>();
  const spec = treeCopy(input, origin);
  if (spec === null) return [];
  const findings: Finding[] = [];
  // Each round takes something out of the copy, so this ends; the bound is a guard, not a limit anyone meets.
  for (let round = 0; round < 100_000; round++) {
    try {
      validateTree(spec);
      return findings;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      const keys = parsePath(e.path);
      const chain: { list: unknown[]; at: number }[] = [];
      const mapped: Keys = [];
      let parent: unknown;
      let node: unknown = spec;
      for (const k of keys) {
        parent = node;
        if (typeof k === 'number' && Array.isArray(node)) {
          const item: unknown = node[k];
          chain.push({ list: node, at: k });
          mapped.push(isRecord(item) ? origin.get(item) ?? k : k);
          node = item;
        } else {
          mapped.push(k);
          node = isRecord(node) ? node[k] : undefined;
        }
      }
      const message = e.path ? e.message.slice(e.path.length + 2) : e.message;
      const last = keys[keys.length - 1];
      // The tree says what it expected; for an address that does not parse, say what to write.
      const better = last !== 'address' || typeof node !== 'string' ? null
        : chain.length === 1 && parseIp(node) === null ? clusterAddressMistake(node)
          : chain.length === 3 && parseEndpoint(node) === null ? endpointMistake(node) : null;
      findings.push({ keys: mapped, message: better ?? message });
      // A key with a default is dropped, so the rest of its port (duplicates, daemons) is still checked.
      if (isRecord(parent) && (last === 'scheduler' || last === 'weight')) {
        delete parent[last];
        continue;
      }
      if (isRecord(parent) && last === 'daemons') {
        parent.daemons = [];
        continue;
      }
      const innermost = chain.pop();
      if (innermost === undefined) return findings;
      innermost.list.splice(innermost.at, 1);
      // A cluster left without ports would be a new finding of our own making: take it out too.
      if (chain.length === 1 && innermost.list.length === 0) chain[0].list.splice(chain[0].at, 1);
    }
  }
  return findings;
}

/**
 * The parts of `input` the tree validates, copied: clusters, ports and
 * daemons that are maps (the shape check reports the others), each recorded
 * in `origin` with its index in the input. null when there are no clusters.
 */
function treeCopy(input: unknown, origin: WeakMap<object, number>): DispatchSpec | null {
  if (!isRecord(input) || !Array.isArray(input.clusters)) return null;
  const keep = (copy: Record<string, unknown>, at: number): Record<string, unknown> => {
    origin.set(copy, at);
    return copy;
  };
  const clusters = input.clusters.flatMap((c: unknown, ci) => {
    if (!isRecord(c)) return [];
    if (!Array.isArray(c.ports)) return [keep({ ...c }, ci)];
    const ports = c.ports.flatMap((p: unknown, pi) => {
      if (!isRecord(p)) return [];
      const daemons = p.daemons === undefined ? [] : Array.isArray(p.daemons)
        ? p.daemons.flatMap((d: unknown, di) => (isRecord(d) ? [keep({ ...d }, di)] : []))
        : p.daemons;
      return [keep({ ...p, daemons }, pi)];
    });
    return ports.length === 0 && c.ports.length > 0 ? [] : [keep({ ...c, ports }, ci)];
  });
  return { clusters } as unknown as DispatchSpec;
}

/** A daemon's "address:port" that does not parse, said so a person knows what to write; null when the tree's words are as good. */
export function endpointMistake(text: string): string | null {
  const m = /^\[([^\]]*)\]:(.*)$/.exec(text) ?? /^([^:[\]]*):([^:]*)$/.exec(text);
  if (m !== null) {
    const [, host, port] = m;
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) return `"${text}": the port must be a number 1–65535, not "${port}"`;
    if (hostName(host)) return `"${text}" names a host: hostlb needs an IP address, e.g. ${host === 'localhost' ? '127.0.0.1' : '198.18.2.1'}:${port}; ${NO_NAMES}`;
  }
  const ip = parseIp(text);
  if (ip?.family === 6) return `"${text}" reads as an IPv6 address without a port: write an IPv6 daemon in brackets, e.g. [2001:db8::1]:8080`;
  return null;
}

/** A cluster's address that does not parse, said so a person knows what to write; null when the tree's words are as good. */
export function clusterAddressMistake(text: string): string | null {
  const m = /^\[([^\]]*)\]:(\d+)$/.exec(text) ?? /^([^:[\]]*):(\d+)$/.exec(text);
  if (m !== null && (parseIp(m[1]) !== null || hostName(m[1]))) {
    const example = parseIp(m[1]) !== null ? m[1] : m[1] === 'localhost' ? '127.0.0.1' : '198.18.100.1';
    return `"${text}": a cluster's address is written without its port (give the ports under ports:), e.g. ${example}${hostName(m[1]) ? `; hostlb needs an IP address, and ${NO_NAMES}` : ''}`;
  }
  if (hostName(text)) return `"${text}" names a host: hostlb needs an IP address, e.g. ${text === 'localhost' ? '127.0.0.1' : '198.18.100.1'}; ${NO_NAMES}`;
  return null;
}

const NO_NAMES = 'it does not resolve host names, on purpose (the address must not change under a running hostlb, and start must not wait for DNS)';

/** "localhost", "web1", "db.example.com": a name, not an address. */
function hostName(text: string): boolean {
  return /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(text) && /[A-Za-z]/.test(text) && parseIp(text) === null;
}

type PortConf = HostlbConfig['clusters'][number]['ports'][number];

/** The parts of a configuration whose shape is right, with the indices they have in the file. */
interface View {
  /** null when the key's value is wrong. */
  dataplane: HostlbConfig['dataplane'] | null;
  admin: HostlbConfig['admin'] | null;
  clusters: { ci: number; address: unknown; ports: { pi: number; port: PortConf }[] }[];
}

function viewOf(config: HostlbConfig): View {
  return {
    dataplane: config.dataplane,
    admin: config.admin,
    clusters: config.clusters.map((c, ci) => ({ ci, address: c.address, ports: c.ports.map((port, pi) => ({ pi, port })) })),
  };
}

/**
 * `schema` parses `value` but for unknown keys: the value without them. A
 * misspelt key is reported already (as unknown), and says nothing about the
 * rest, which is still worth checking.
 */
function parseIgnoringUnknownKeys<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: ZodIssue[] } } }, value: unknown): { success: true; data: T } | { success: false } {
  const first = schema.safeParse(value);
  if (first.success || !first.error.issues.every((i) => i.code === 'unrecognized_keys')) return first;
  const copy: unknown = structuredClone(value);
  for (const issue of first.error.issues) {
    let node: unknown = copy;
    for (const k of issue.path) node = isRecord(node) || Array.isArray(node) ? (node as Record<PropertyKey, unknown>)[k] : undefined;
    if (isRecord(node) && issue.code === 'unrecognized_keys') for (const k of issue.keys) delete node[k];
  }
  return schema.safeParse(copy);
}

/** Each top-level section and each port validated alone, so one bad port does not hide another's problems. */
function partialView(raw: unknown): View {
  const top = isRecord(raw) ? raw : {};
  const { shape } = configSchema;
  const portSchema = shape.clusters.element.shape.ports.element;
  const dataplane = shape.dataplane.safeParse(top.dataplane);
  const admin = parseIgnoringUnknownKeys(shape.admin, top.admin);
  const clusters = Array.isArray(top.clusters) ? top.clusters : [];
  return {
    dataplane: dataplane.success ? dataplane.data : null,
    admin: admin.success ? admin.data : null,
    clusters: clusters.flatMap((c: unknown, ci) => {
      if (!isRecord(c)) return [];
      const ports = Array.isArray(c.ports) ? c.ports : [];
      return [{
        ci,
        address: c.address,
        ports: ports.flatMap((p: unknown, pi) => {
          const port = parseIgnoringUnknownKeys(portSchema, p);
          return port.success ? [{ pi, port: port.data }] : [];
        }),
      }];
    }),
  };
}

const portKeys = (ci: number, pi: number): Keys => ['clusters', ci, 'ports', pi];

/**
 * Every `user` and `group` (supervise, exec advisors and their per-daemon
 * overrides) names a user or group of this host (checked when the file is
 * validated, so a typo never reaches a fork).
 */
function runAsFindings(view: View): Finding[] {
  const findings: Finding[] = [];
  const check = (keys: Keys, ids: { user?: string | number; group?: string | number } | undefined): void => {
    if (ids === undefined) return;
    try {
      resolveRunAs(ids.user, ids.group);
    } catch (e) {
      if (!(e instanceof HostlbError && e.code === 'RUN_AS_UNKNOWN')) throw e;
      // The message starts with the key ("user: ...").
      const key = e.message.startsWith('group:') ? 'group' : 'user';
      findings.push({ keys: [...keys, key], message: e.message.slice(key.length + 2) });
    }
  };
  for (const c of view.clusters) {
    for (const { pi, port: p } of c.ports) {
      const at = portKeys(c.ci, pi);
      check([...at, 'supervise'], p.supervise);
      check([...at, 'advisor'], p.advisor);
      p.daemons.forEach((d, di) => check([...at, 'daemons', di, 'advisor'], d.advisor));
    }
  }
  return findings;
}

/**
 * Every advisor, and every daemon's override merged over its port's, is one
 * the health layer can run (advisor.ts checkAdvisorSpec: intervals a timer can
 * hold, a path without spaces, ...): refused before hostlb touches the host or
 * switches a running configuration, not half-way through either.
 */
function advisorFindings(view: View): Finding[] {
  const findings: Finding[] = [];
  const check = (keys: Keys, spec: Record<string, unknown>): void => {
    try {
      advisorSpec(spec as Parameters<typeof advisorSpec>[0]);
    } catch (e) {
      if (!(e instanceof HostlbError && e.code === 'ADVISOR_INVALID')) throw e;
      // The message starts with the key ("advisor.interval: ...").
      const m = /^advisor\.(\w+): (.*)$/s.exec(e.message);
      findings.push({ keys: m ? [...keys, m[1]] : keys, message: m ? m[2] : e.message });
    }
  };
  const plain = (a: Record<string, unknown>): Record<string, unknown> => {
    const { user: _user, group: _group, ...rest } = a;
    return rest;
  };
  for (const c of view.clusters) {
    for (const { pi, port: p } of c.ports) {
      if (!p.advisor) continue;
      const at = portKeys(c.ci, pi);
      const base = plain(p.advisor as Record<string, unknown>);
      check([...at, 'advisor'], base);
      p.daemons.forEach((d, di) => {
        if (d.advisor) check([...at, 'daemons', di, 'advisor'], { ...base, ...plain(d.advisor as Record<string, unknown>) });
      });
    }
  }
  return findings;
}

/**
 * The plane a check about `dataplane` applies to, and whether a problem on it
 * is an error: a plane named in the file is; the one `auto` picks on this host
 * (known with a HostView only) gets a warning, since naming another plane may
 * be the fix. null: no plane to ask about.
 */
function planeOf(view: View, host: HostView | undefined): { kind: PlaneKind; named: boolean } | null {
  if (view.dataplane === null) return null;
  if (view.dataplane !== 'auto') return { kind: view.dataplane, named: true };
  return host ? { kind: host.autoPlane(), named: false } : null;
}

/** A finding about plane `plane`: an error when the file names it, else a warning saying auto chose it. */
function onPlane(plane: { kind: PlaneKind; named: boolean }, keys: Keys, message: string): Finding {
  return plane.named ? { keys, message } : { keys, message: `${message} (dataplane: auto runs ${plane.kind} on this host)`, warning: true };
}

/**
 * Addresses that parse but cannot work: a multicast or broadcast cluster, a
 * wildcard cluster on a plane that needs one address, a daemon that is its own
 * cluster (a loop), supervised daemons of the other family or past the end of
 * the address range.
 */
function addressFindings(view: View, host: HostView | undefined): Finding[] {
  const findings: Finding[] = [];
  const plane = planeOf(view, host);
  for (const c of view.clusters) {
    const cluster = typeof c.address === 'string' ? parseIp(c.address) : null;
    const addressKeys: Keys = ['clusters', c.ci, 'address'];
    if (cluster !== null) {
      const notUnicast = multicastOrBroadcast(cluster);
      if (notUnicast !== null) findings.push({ keys: addressKeys, message: `${cluster.text} is ${notUnicast}: a cluster is one unicast address clients connect to, e.g. 198.18.100.1 or 2001:db8::100` });
      if (plane !== null && plane.kind !== 'socket') {
        // planeConfigProblem looks at every cluster and names the first: ask it about each alone.
        const problem = planeConfigProblem({ clusters: [{ address: c.address }] } as unknown as HostlbConfig, plane.kind);
        if (problem !== null) findings.push(onPlane(plane, addressKeys, problem.message.slice(problem.path.length + 2)));
      }
    }
    for (const { pi, port: p } of c.ports) {
      const at = portKeys(c.ci, pi);
      const endpoints: { keys: Keys; address: IpAddress; port: number }[] = [];
      if (p.supervise) {
        const hostKeys = [...at, 'supervise', 'host'];
        const first = parseIp(p.supervise.host);
        if (first === null && hostName(p.supervise.host)) {
          findings.push({ keys: hostKeys, message: `"${p.supervise.host}" names a host: hostlb needs the IP address of the first instance, e.g. 127.0.0.2; ${NO_NAMES}` });
        } else if (first !== null && cluster !== null && first.family !== cluster.family) {
          findings.push({ keys: hostKeys, message: `${first.text} is IPv${first.family} but cluster ${cluster.text} is IPv${cluster.family}; supervised daemons must share their cluster's family (e.g. ${cluster.family === 4 ? '127.0.0.2' : '::1'})` });
        } else {
          try {
            for (const e of daemonEndpoints(p.supervise)) endpoints.push({ keys: hostKeys, address: parseIp(e.address)!, port: e.port });
          } catch (e) {
            if (!(e instanceof HostlbError && e.code === 'SUPERVISE_INVALID')) throw e;
            // The message starts with the key ("host: ...").
            const m = /^(\w+): (.*)$/s.exec(e.message);
            findings.push({ keys: m ? [...at, 'supervise', m[1]] : [...at, 'supervise'], message: m ? m[2] : e.message });
          }
        }
      }
      p.daemons.forEach((d, di) => {
        const endpoint = parseEndpoint(d.address);
        if (endpoint !== null) endpoints.push({ keys: [...at, 'daemons', di, 'address'], ...endpoint });
      });
      // The socket plane hands the connection to the daemon's own socket, which
      // may listen on the cluster's address and port; the others would send it
      // back to the cluster.
      if (cluster === null || plane === null || plane.kind === 'socket') continue;
      const loop = endpoints.find((e) => e.port === p.port && e.address.text === cluster.text);
      if (loop !== undefined) {
        findings.push(onPlane(plane, loop.keys, `${loop.address.family === 6 ? `[${cluster.text}]` : cluster.text}:${p.port} is the cluster's own address and port: the ${plane.kind} plane would send its connections back to the cluster, a loop; give the daemon an address or port of its own`));
      }
    }
  }
  return findings;
}

/**
 * A port's agent listens on an IP address of the cluster's family and not on
 * a cluster port of its own address (it would take that port's connections).
 */
function agentFindings(view: View): Finding[] {
  const findings: Finding[] = [];
  const clusterPorts = view.clusters.flatMap((c) => c.ports.map(({ port }) => ({ address: typeof c.address === 'string' ? parseIp(c.address)?.text : undefined, port: port.port, protocol: port.protocol })));
  for (const c of view.clusters) {
    const cluster = typeof c.address === 'string' ? parseIp(c.address) : null;
    for (const { pi, port: p } of c.ports) {
      if (!p.agent) continue;
      const keys: Keys = [...portKeys(c.ci, pi), 'agent'];
      let address = cluster;
      if (p.agent.address !== undefined) {
        address = parseIp(p.agent.address);
        if (address === null) {
          findings.push({ keys: [...keys, 'address'], message: `"${p.agent.address}" is not an IP address; the agent listens on one of this host's addresses, e.g. ${cluster?.text ?? '198.18.100.1'} (default: the cluster's)` });
          continue;
        }
      }
      if (address === null) continue;
      const taken = clusterPorts.find((x) => x.port === p.agent!.port && x.protocol !== 'udp' && (x.address === address!.text || x.address === '0.0.0.0' || x.address === '::'));
      if (taken !== undefined) {
        findings.push({ keys: [...keys, 'port'], message: `${p.agent.port} is a TCP cluster port on ${address.text}: the agent needs a port of its own (HAProxy's agent-port), e.g. ${p.agent.port === 9999 ? 9998 : 9999}` });
      }
    }
  }
  return findings;
}

/** What kind of address that no client connects to `address` is ("a multicast address"), or null for unicast. */
function multicastOrBroadcast(address: IpAddress): string | null {
  const b = address.bytes;
  if (address.family === 4 && b[0] >= 224 && b[0] <= 239) return 'a multicast address (224.0.0.0/4)';
  if (address.family === 4 && b.every((x) => x === 255)) return 'the broadcast address';
  if (address.family === 6 && b[0] === 0xff) return 'a multicast address (ff00::/8)';
  return null;
}

/**
 * What only this host can say: daemons the socket plane cannot reach (it
 * takes each daemon's listening socket, so they must run here; supervised
 * daemons are started here by hostlb), and a token file that cannot be read.
 */
function hostFindings(view: View, host: HostView): Finding[] {
  const findings: Finding[] = [];
  const plane = planeOf(view, host);
  if (plane?.kind === 'socket') {
    for (const c of view.clusters) {
      for (const { pi, port: p } of c.ports) {
        p.daemons.forEach((d, di) => {
          const endpoint = parseEndpoint(d.address);
          if (endpoint === null || endpoint.address.bytes.every((b) => b === 0) || host.isLocal(endpoint.address)) return;
          findings.push(onPlane(plane, [...portKeys(c.ci, pi), 'daemons', di, 'address'], `${endpoint.address.text} is not an address of this host, and the socket plane hands each connection to a daemon's own listening socket on this host; run the daemon here (on an address of this host, or any of 127.0.0.0/8), or name another dataplane`));
        });
      }
    }
  }
  const tokenFile = view.admin?.tokenFile;
  if (tokenFile !== undefined) {
    const keys = ['admin', 'tokenFile'];
    try {
      const token = host.readFile(tokenFile).trim();
      if (view.admin?.listen !== undefined && view.admin.token === undefined && token.length < 16) {
        findings.push({ keys, message: `${tokenFile} holds a token of ${token.length} characters; a token needs at least 16` });
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES' && !host.isRoot()) {
        // Token files are rightly root's alone; hostlb start (as root) reads it, check as a user cannot.
        findings.push({ keys, message: `${tokenFile} cannot be read by this user (EACCES); make sure the user hostlb runs as can read it`, warning: true });
      } else if (code === 'ENOENT') {
        findings.push({ keys, message: `${tokenFile} does not exist; write the token (at least 16 characters) there, or fix the path` });
      } else {
        findings.push({ keys, message: `${tokenFile} cannot be read: ${(e as Error).message}` });
      }
    }
  }
  return findings;
}
