// The admin API's resources: status, clusters/ports/daemons (list, add, change,
// quiesce, remove), connections, counters, config, reload, stop, metrics.
// Reads are GET and never change anything; every change is POST, PUT or
// DELETE and goes through Controlled.apply, validated whole — and refused
// when it would make hostlb run a program the file did not ask for.

import { stringify } from 'yaml';
import { DROP_REASON_NAMES } from '../../dispatch/drop-reason.js';
import { D_ACTIVE_FLOWS, DAEMON_COLUMNS } from '../../dispatch/stats.js';
import { CONN_STATE_NAMES } from '../../dispatch/tcp-state.js';
import {
  addCluster, addDaemon, addPort, canonicalAddress, canonicalEndpoint, parsePort, parseProtocol, removeCluster,
  removeDaemon, removePort, setDaemon, setPort, type PortRef,
} from '../config-edit.js';
import { validateConfig } from '../config-file.js';
import { HostlbError } from '../../errors.js';
import { formatEndpoint, parseIp } from '../../wire/address.js';
import { ApiError, badRequest, conflict, notFound } from './api-error.js';
import { saveConfig, saveTarget } from './config-save.js';
import type { Controlled } from './controlled.js';
import { checkNoNewExec } from './exec-guard.js';
import { redactSecrets } from './secrets.js';
import { rollOut } from '../rollout.js';
import { portName } from '../health-runtime.js';
import { drainDaemon, undrainDaemon } from './drain.js';
import type { LiveViewSnapshot } from '../view/live-view.js';

export const API_VERSION = 'v1';

export interface Request {
  method: string;
  params: string[];
  query: URLSearchParams;
  body: Record<string, unknown>;
}

export interface Response {
  status?: number;
  body: unknown;
  /** Plain text instead of JSON (metrics). */
  contentType?: string;
}

export interface RouteContext {
  ctl: Controlled;
  version: string;
  metrics(): Promise<{ text: string; contentType: string }>;
  /** Ends the process after the response is sent. */
  requestStop(): void;
  /** Hands the data plane to a new hostlb after the response is sent (`start --takeover`). */
  requestTakeover?: () => void;
  /** The live views' picture (GET /v1/view). */
  view(): LiveViewSnapshot;
}

type Handler = (ctx: RouteContext, req: Request) => Response | Promise<Response>;

interface Route { method: string; pattern: RegExp; handler: Handler }

const SEG = '([^/]+)';
const PORT = `${SEG}/ports/${SEG}/${SEG}`;

function portRef(params: string[]): PortRef {
  return { cluster: canonicalAddress(params[0], 'cluster'), port: parsePort(params[1]), protocol: parseProtocol(params[2]) };
}

function change(ctx: RouteContext, next: unknown, source: string): Response {
  const valid = validateConfig(next);
  checkNoNewExec(ctx.ctl.config, valid);
  const summary = ctx.ctl.apply(valid, source);
  return { body: { ok: true, change: summary } };
}

/** Port `ref`'s agent answer (whether or not it has an agent listener). Throws 404 PORT_NOT_FOUND. */
function agentOf(ctl: Controlled, ref: PortRef): { name: string; listener: string | null; state: string; weightPercent: number; line: string; drained: boolean } {
  for (const c of ctl.config.clusters) {
    if (parseIp(c.address)?.text !== ref.cluster) continue;
    const p = c.ports.find((x) => x.port === ref.port && x.protocol === ref.protocol);
    if (!p) break;
    const name = portName(c.address, p);
    const answer = ctl.agent.answer({ name, port: p.port, protocol: p.protocol, maxconn: p.agent?.maxconn });
    const listener = p.agent ? formatEndpoint({ address: parseIp(p.agent.address ?? c.address)!, port: p.agent.port }) : null;
    return { name, listener, ...answer, drained: ctl.agent.isDrained(name) };
  }
  throw notFound('PORT_NOT_FOUND', `no port ${ref.port}/${ref.protocol} on cluster ${ref.cluster}; list them with hostlb status`, 'port');
}

/** The running tree with weights and counters, as `GET /v1/clusters` shows it. */
export function describeClusters(ctl: Controlled): unknown[] {
  const d = ctl.balancer;
  const health = new Map(ctl.health.monitor.view().map((h) => [`${h.port} ${h.daemon}`, h]));
  const stats = d.stats;
  return d.tree.clusters.map((c) => ({
    address: c.address.text,
    ports: c.ports.map((p) => ({
      port: p.port,
      protocol: p.protocol,
      scheduler: p.scheduler,
      drops: Object.fromEntries(DROP_REASON_NAMES.map((n, i) => [n, stats.portDrops[p.id * DROP_REASON_NAMES.length + i]]).filter(([n, v]) => n !== 'none' && (v as number) > 0)),
      daemons: p.daemons.map((x) => {
        const h = health.get(`${p.name} ${x.name}`);
        return {
          address: x.name, weight: x.weight,
          state: x.weight === 0 ? 'quiesced' : h ? h.state : 'up',
          effectiveWeight: h ? h.effectiveWeight : x.weight,
          reason: h?.reason ?? '',
          advisor: h?.advisor ?? 'none',
          responseMs: h?.responseMs ?? null,
          ...stats.daemonCounters(x.id),
        };
      }),
    })),
  }));
}

/** The TUN device's packet counters, or null for a plane without a device. */
function linkCounters(plane: Controlled['plane']): { read: number; written: number; refused: number } | null {
  const read = plane.counter('link.read');
  if (read === null) return null;
  return { read, written: plane.counter('link.written') ?? 0, refused: plane.counter('link.refused') ?? 0 };
}

function intParam(query: URLSearchParams, key: string, fallback: number, max: number): number {
  const text = query.get(key);
  if (text === null) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > max) throw badRequest('BAD_QUERY', `${key} must be an integer 0..${max}, got "${text}"`, key);
  return n;
}

const routes: Route[] = [
  {
    method: 'GET', pattern: /^\/v1\/status$/, handler: (ctx) => {
      const d = ctx.ctl.balancer;
      const daemons = [...d.tree.daemons()];
      const table = ctx.ctl.plane.table();
      return {
        body: {
          version: ctx.version,
          pid: process.pid,
          uptimeSeconds: Math.round((Date.now() - ctx.ctl.startedAt) / 1000),
          device: ctx.ctl.config.device,
          dataplane: ctx.ctl.plane.kind,
          configFile: ctx.ctl.configFile ?? null,
          table: { records: table.records, capacity: table.capacity, evictions: table.evictions },
          clusters: d.tree.clusters.length,
          daemons: daemons.length,
          // Removed daemons still holding flows count too: those flows are live.
          activeFlows: d.tree.daemonsById.reduce((a, x) => a + (x ? d.stats.daemon[x.id * DAEMON_COLUMNS + D_ACTIVE_FLOWS] : 0), 0),
          packets: { in: d.stats.forwardedIn, out: d.stats.forwardedOut },
          drops: d.stats.drops.reduce((a, b) => a + b, 0),
        },
      };
    },
  },
  { method: 'GET', pattern: /^\/v1\/clusters$/, handler: (ctx) => ({ body: { clusters: describeClusters(ctx.ctl) } }) },
  {
    method: 'POST', pattern: /^\/v1\/clusters$/, handler: (ctx, req) =>
      ({ ...change(ctx, addCluster(ctx.ctl.config, req.body as { address: string }), `api: add cluster ${String(req.body.address)}`), status: 201 }),
  },
  {
    method: 'DELETE', pattern: new RegExp(`^/v1/clusters/${SEG}$`), handler: (ctx, req) =>
      change(ctx, removeCluster(ctx.ctl.config, req.params[0]), `api: remove cluster ${req.params[0]}`),
  },
  {
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${SEG}/ports$`), handler: (ctx, req) =>
      ({ ...change(ctx, addPort(ctx.ctl.config, req.params[0], req.body), `api: add port ${String(req.body.port)} to ${req.params[0]}`), status: 201 }),
  },
  {
    method: 'PUT', pattern: new RegExp(`^/v1/clusters/${PORT}$`), handler: (ctx, req) =>
      change(ctx, setPort(ctx.ctl.config, portRef(req.params), req.body as { scheduler?: string }), `api: set port ${req.params.join(' ')}`),
  },
  {
    method: 'DELETE', pattern: new RegExp(`^/v1/clusters/${PORT}$`), handler: (ctx, req) =>
      change(ctx, removePort(ctx.ctl.config, portRef(req.params)), `api: remove port ${req.params.join(' ')}`),
  },
  {
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons$`), handler: (ctx, req) =>
      ({ ...change(ctx, addDaemon(ctx.ctl.config, portRef(req.params), req.body), `api: add daemon ${String(req.body.address)}`), status: 201 }),
  },
  {
    method: 'PUT', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons/${SEG}$`), handler: (ctx, req) =>
      change(ctx, setDaemon(ctx.ctl.config, portRef(req.params), req.params[3], req.body), `api: set daemon ${req.params[3]}`),
  },
  {
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons/${SEG}/quiesce$`), handler: (ctx, req) =>
      change(ctx, setDaemon(ctx.ctl.config, portRef(req.params), req.params[3], { weight: 0 }), `api: quiesce daemon ${req.params[3]}`),
  },
  {
    method: 'DELETE', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons/${SEG}$`), handler: (ctx, req) =>
      change(ctx, removeDaemon(ctx.ctl.config, portRef(req.params), req.params[3]), `api: remove daemon ${req.params[3]}`),
  },
  {
    // Weight 0 in the running configuration (a supervised daemon: held out by health); daemon_drained once its flows end.
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons/${SEG}/drain$`), handler: (ctx, req) => {
      const { change: summary, activeFlows } = drainDaemon(ctx.ctl, portRef(req.params), canonicalEndpoint(req.params[3], 'daemon'));
      return { body: { ok: true, change: summary, activeFlows } };
    },
  },
  {
    // Back in: the weight from before the drain (or body.weight, else 1); a supervised daemon is released.
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/daemons/${SEG}/undrain$`), handler: (ctx, req) => {
      const weight = req.body.weight;
      if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1)) throw badRequest('BAD_WEIGHT', `weight must be a whole number of at least 1, got ${JSON.stringify(weight)}`, 'weight');
      const out = undrainDaemon(ctx.ctl, portRef(req.params), canonicalEndpoint(req.params[3], 'daemon'), weight as number | undefined);
      return { body: { ok: true, ...out } };
    },
  },
  {
    // What the front tier's agent-check hears about this port now (docs/scale-out.md).
    method: 'GET', pattern: new RegExp(`^/v1/clusters/${PORT}/agent$`), handler: (ctx, req) => ({ body: agentOf(ctx.ctl, portRef(req.params)) }),
  },
  {
    // The front tier sends this port nothing new (agent answers drain); its daemons keep serving what still comes.
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/(drain|undrain)$`), handler: (ctx, req) => {
      const ref = portRef(req.params);
      const { name } = agentOf(ctx.ctl, ref);
      ctx.ctl.agent.setDrained(name, req.params[3] === 'drain');
      return { body: { ok: true, ...agentOf(ctx.ctl, ref) } };
    },
  },
  {
    method: 'POST', pattern: new RegExp(`^/v1/clusters/${PORT}/restart$`), handler: async (ctx, req) => {
      const ref = portRef(req.params);
      const address = parseIp(ref.cluster)!;
      const name = `${formatEndpoint({ address, port: ref.port })}/${ref.protocol}`;
      const drainTimeout = typeof req.body.drainTimeout === 'number' ? req.body.drainTimeout : undefined;
      const upTimeout = typeof req.body.upTimeout === 'number' ? req.body.upTimeout : undefined;
      const surge = req.body.surge !== false;
      try {
        return { body: { ok: true, ...(await rollOut(ctx.ctl, name, { drainTimeout, upTimeout, surge })) } };
      } catch (e) {
        if (e instanceof HostlbError && e.code === 'NOT_SUPERVISED') throw conflict(e.code, e.message, 'port');
        throw e;
      }
    },
  },
  {
    // Everything the live views draw, in one answer; with Accept: text/event-stream, once a second (server.ts).
    method: 'GET', pattern: /^\/v1\/view$/, handler: (ctx) => ({ body: ctx.view() }),
  },
  {
    method: 'GET', pattern: /^\/v1\/health$/, handler: (ctx) => ({ body: { daemons: ctx.ctl.health.monitor.view() } }),
  },
  {
    method: 'GET', pattern: /^\/v1\/events$/, handler: (ctx, req) => {
      const after = intParam(req.query, 'since', 0, Number.MAX_SAFE_INTEGER);
      return { body: { events: ctx.ctl.health.events.since(after) } };
    },
  },
  {
    // What supervised daemons printed: ?instance=INDEX|ADDRESS:PORT|NAME, ?since=ID, ?lines=N (default 100, the most recent).
    method: 'GET', pattern: /^\/v1\/logs$/, handler: (ctx, req) => {
      const since = intParam(req.query, 'since', 0, Number.MAX_SAFE_INTEGER);
      const limit = intParam(req.query, 'lines', 100, 100_000);
      const instance = req.query.get('instance') ?? undefined;
      return { body: { lines: ctx.ctl.health.logs.lines({ instance, since, limit }) } };
    },
  },
  {
    method: 'GET', pattern: /^\/v1\/connections$/, handler: (ctx, req) => {
      const q = req.query;
      const state = q.get('state') ?? undefined;
      if (state !== undefined && !CONN_STATE_NAMES.includes(state.toUpperCase())) {
        throw badRequest('BAD_QUERY', `state must be one of ${CONN_STATE_NAMES.slice(1).join(', ')}, got "${state}"`, 'state');
      }
      const protocol = q.get('protocol') ?? undefined;
      if (protocol !== undefined && protocol !== 'tcp' && protocol !== 'udp') throw badRequest('BAD_QUERY', `protocol must be tcp or udp, got "${protocol}"`, 'protocol');
      const daemon = q.get('daemon');
      const filter = {
        cluster: q.get('cluster') !== null ? canonicalAddress(q.get('cluster')!, 'cluster') : undefined,
        port: q.get('port') !== null ? parsePort(q.get('port')!) : undefined,
        protocol: protocol as 'tcp' | 'udp' | undefined,
        daemon: daemon !== null ? canonicalEndpoint(daemon, 'daemon') : undefined,
        client: q.get('client') !== null ? canonicalAddress(q.get('client')!, 'client') : undefined,
        state,
        offset: intParam(q, 'offset', 0, 1 << 30),
        limit: intParam(q, 'limit', 100, 10000),
      };
      // Every plane counts every match but builds only the records of the page asked for.
      const page = ctx.ctl.plane.connections(filter);
      return { body: { total: page.total, offset: filter.offset, connections: page.connections } };
    },
  },
  {
    method: 'GET', pattern: /^\/v1\/counters$/, handler: (ctx) => {
      const stats = ctx.ctl.balancer.stats;
      return {
        body: {
          packets: { in: stats.forwardedIn, out: stats.forwardedOut },
          // Packets answered or handed back rather than translated.
          answered: {
            resets: stats.resetsSent, unreachable: stats.unreachableSent, echoReplies: stats.echoReplies,
            icmpTranslated: stats.icmpTranslated, passedThrough: stats.passedThrough, recovered: stats.recovered,
          },
          drops: Object.fromEntries(DROP_REASON_NAMES.slice(1).map((n, i) => [n, stats.drops[i + 1]])),
          link: linkCounters(ctx.ctl.plane),
          daemons: Object.fromEntries(ctx.ctl.balancer.tree.daemonsById.filter(Boolean).map((x) => [`${x.clusterPort.name} ${x.name}`, { ...stats.daemonCounters(x.id), removed: x.retired }])),
        },
      };
    },
  },
  {
    method: 'GET', pattern: /^\/v1\/config$/, handler: (ctx, req) => {
      // The token and supervised daemons' environments are the file's; a reader of the API never sees them.
      const shown = redactSecrets(ctx.ctl.config);
      return req.query.get('format') === 'yaml' ? { body: stringify(shown), contentType: 'application/yaml' } : { body: shown };
    },
  },
  {
    method: 'POST', pattern: /^\/v1\/config\/save$/, handler: (ctx, req) => {
      const path = saveTarget(ctx.ctl.config, ctx.ctl.configFile, req.body.path);
      saveConfig(ctx.ctl.config, path);
      return { body: { ok: true, path } };
    },
  },
  {
    method: 'POST', pattern: /^\/v1\/reload$/, handler: (ctx) => {
      // How this hostlb was started, not a failure of it: 409, so the CLI says "rejected" (exit 1), not "failed" (5).
      if (!ctx.ctl.configFile) throw conflict('NO_CONFIG_FILE', 'this hostlb was started without --config, so there is no file to reload; save one with hostlb config save PATH');
      return { body: { ok: true, change: ctx.ctl.reload() } };
    },
  },
  {
    method: 'POST', pattern: /^\/v1\/stop$/, handler: (ctx) => {
      ctx.requestStop();
      return { status: 202, body: { ok: true, stopping: true } };
    },
  },
  {
    method: 'POST', pattern: /^\/v1\/takeover$/, handler: (ctx) => {
      if (!ctx.requestTakeover) throw conflict('NO_TAKEOVER', 'this hostlb cannot hand over its data plane');
      ctx.requestTakeover();
      return { status: 202, body: { ok: true, handingOver: true, pid: process.pid } };
    },
  },
  {
    method: 'GET', pattern: /^\/metrics$/, handler: async (ctx) => {
      const m = await ctx.metrics();
      return { body: m.text, contentType: m.contentType };
    },
  },
];

/** Finds the handler for a request: 404 for an unknown path, 405 (naming the allowed methods) for another method. */
export function route(method: string, path: string): { handler: Handler; params: string[] } {
  const matching = routes.filter((r) => r.pattern.test(path));
  const r = matching.find((x) => x.method === method);
  if (!r) {
    if (matching.length === 0) throw notFound('NO_SUCH_ENDPOINT', `no endpoint ${method} ${path}; see docs/api.md`);
    throw new ApiError(405, 'METHOD_NOT_ALLOWED', `${path} accepts ${matching.map((x) => x.method).join(', ')}, not ${method}`);
  }
  const params = r.pattern.exec(path)!.slice(1).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      throw badRequest('BAD_PATH', `"${p}" is not a valid URL path segment`);
    }
  });
  return { handler: r.handler, params };
}
