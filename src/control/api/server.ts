// The admin listener: JSON over HTTP on a unix socket (mode 0600, so only its
// owner — root — can connect) and, only when configured, on a TCP address that
// demands a bearer token. Parses requests, checks the token, hands off to
// routes.ts and turns every error into a JSON answer with a stable code.
// Both listeners are bounded (limits.ts) and survive their own errors.

import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { HostlbError } from '../../errors.js';
import type { Logger } from '../logger.js';
import { createMetrics } from '../metrics.js';
import { ApiError, badRequest, errorResponse } from './api-error.js';
import { tokenMatches } from './bearer.js';
import type { Controlled } from './controlled.js';
import { isDashboardPath, serveDashboard } from './dashboard-files.js';
import { EventStreams, type EventStreamStats } from './event-stream.js';
import { DEFAULT_ADMIN_LIMITS, type AdminLimits } from './limits.js';
import { route, type RouteContext } from './routes.js';
import { LiveView } from '../view/live-view.js';

export interface AdminOptions {
  /** Unix socket path. */
  socket: string;
  /** Optional TCP listener; requires `token`. `dashboard`: also serve the web dashboard's page there (admin.dashboard). */
  tcp?: { host: string; port: number; token: string; dashboard?: boolean };
  version: string;
  logger: Logger;
  /** Called after a POST /v1/stop has been answered. */
  onStopRequested(): void;
  /** Called after a POST /v1/takeover has been answered; absent = not offered. */
  onTakeoverRequested?: () => void;
  /** Overrides of DEFAULT_ADMIN_LIMITS (tests use small ones). */
  limits?: Partial<AdminLimits>;
}

const MAX_BODY = 1 << 20;

function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new ApiError(413, 'BODY_TOO_LARGE', `request bodies are limited to ${MAX_BODY} bytes`));
        req.destroy();
      } else {
        chunks.push(c);
      }
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve({});
      try {
        const body = JSON.parse(text) as unknown;
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not an object');
        resolve(body as Record<string, unknown>);
      } catch {
        reject(badRequest('BAD_JSON', 'the request body must be a JSON object'));
      }
    });
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = contentType === 'application/json' ? `${JSON.stringify(body, null, 1)}\n` : String(body);
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** True when something answers on the unix socket (another hostlb owns it). */
function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/**
 * One bounded listener: at most `maxConnections` connections, headers and
 * request within their times. Once it listens, an 'error' (EMFILE or ENFILE
 * on accept when hostlb is out of file descriptors) is logged and survived:
 * without a listener Node would end hostlb, and with one the server keeps
 * accepting once descriptors are free again.
 */
async function listen(handler: Handler, limits: AdminLimits, logger: Logger, name: string, start: (s: Server, done: () => void) => void): Promise<Server> {
  const server = createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: limits.checkIntervalMs,
  }, (req, res) => void handler(req, res));
  server.maxConnections = limits.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    start(server, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err: NodeJS.ErrnoException) => {
    logger.error({ err, code: err.code, listener: name, event: 'admin_listener_error' }, 'admin listener error; still listening');
  });
  return server;
}

export class AdminServer {
  private constructor(private readonly servers: Server[], private readonly socket: string, private readonly streams: EventStreams, private readonly live: LiveView) {}

  /** The listeners (unix socket first, then TCP when configured). */
  get listeners(): readonly Server[] {
    return this.servers;
  }

  /** Event-stream clients now, refused, dropped for reading too slowly, and the most bytes one had waiting. */
  get eventStreams(): Readonly<EventStreamStats> {
    return this.streams.stats;
  }

  /** Starts the listeners. Throws HostlbError ADMIN_SOCKET_IN_USE when another live hostlb owns the socket. */
  static async start(ctl: Controlled, options: AdminOptions): Promise<AdminServer> {
    const registry = createMetrics(ctl);
    const limits: AdminLimits = { ...DEFAULT_ADMIN_LIMITS, ...options.limits };
    const streams = new EventStreams(limits.maxEventClients, limits.maxEventBuffer);
    let stopRequested = false;
    let takeoverRequested = false;
    const live = new LiveView(ctl, options.version);
    const ctx: RouteContext = {
      ctl,
      view: () => live.snapshot(),
      version: options.version,
      metrics: async () => ({ text: await registry.metrics(), contentType: registry.contentType }),
      requestStop: () => { stopRequested = true; },
      requestTakeover: options.onTakeoverRequested ? () => { takeoverRequested = true; } : undefined,
    };
    const handler = (requireToken: string | null, dashboard = false) => async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      const method = req.method ?? 'GET';
      try {
        // The page's files hold no data (it comes from /v1/view, behind the token), so they need none:
        // a browser cannot send a header when it opens a URL.
        if (dashboard) {
          const pathname = new URL(req.url ?? '/', 'http://hostlb').pathname;
          if (isDashboardPath(pathname)) return await serveDashboard(req, res, pathname);
        }
        // The token is checked before anything else, so an unauthenticated request changes nothing.
        if (requireToken !== null && !tokenMatches(req.headers.authorization, requireToken)) {
          res.setHeader('www-authenticate', 'Bearer');
          throw new ApiError(401, 'UNAUTHORIZED', 'this listener needs "Authorization: Bearer <token>" with the token from the admin configuration');
        }
        const url = new URL(req.url ?? '/', 'http://hostlb');
        if (method === 'GET' && (url.pathname === '/v1/events' || url.pathname === '/v1/view') && (req.headers.accept ?? '').includes('text/event-stream')) {
          streams.open(ctl, req, res, url, url.pathname === '/v1/view' ? () => live.snapshot() : undefined);
          return;
        }
        const { handler: h, params } = route(method, url.pathname);
        const body = method === 'GET' || method === 'HEAD' ? {} : await readBody(req);
        const out = await h(ctx, { method, params, query: url.searchParams, body });
        send(res, out.status ?? 200, out.body, out.contentType);
        if (method !== 'GET') options.logger.info({ event: 'api', method, path: url.pathname, status: out.status ?? 200 }, 'admin request');
      } catch (e) {
        const { status, body } = errorResponse(e);
        if (status >= 500) options.logger.error({ err: e, method, path: req.url }, 'admin request failed');
        send(res, status, body);
      } finally {
        if (stopRequested) {
          stopRequested = false;
          res.once('finish', () => setImmediate(options.onStopRequested));
        }
        if (takeoverRequested && options.onTakeoverRequested) {
          takeoverRequested = false;
          res.once('finish', () => setImmediate(options.onTakeoverRequested!));
        }
      }
    };

    mkdirSync(dirname(options.socket), { recursive: true, mode: 0o700 });
    if (existsSync(options.socket)) {
      if (await socketAlive(options.socket)) {
        throw new HostlbError('ADMIN_SOCKET_IN_USE', `another hostlb answers on ${options.socket}: stop it first (hostlb stop), or give this one another admin.socket`);
      }
      rmSync(options.socket, { force: true }); // left by a crashed run
    }
    const servers: Server[] = [];
    // Only the owner (root) may connect: the socket grants full control. The umask makes
    // bind() create it 0600 (listen binds synchronously), so it is never open to others.
    const umask = process.umask(0o177);
    let unix: Server;
    try {
      unix = await listen(handler(null), limits, options.logger, 'unix', (s, done) => {
        try {
          s.listen(options.socket, done);
        } finally {
          process.umask(umask);
        }
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(options.socket, 0o600);
    servers.push(unix);
    if (options.tcp) {
      const { host, port } = options.tcp;
      try {
        servers.push(await listen(handler(options.tcp.token, options.tcp.dashboard === true), limits, options.logger, 'tcp', (s, done) => s.listen(port, host, done)));
      } catch (e) {
        unix.close();
        rmSync(options.socket, { force: true });
        throw e;
      }
    }
    // Sampling from now on, so a view opened later has the last minute's rates.
    live.start();
    return new AdminServer(servers, options.socket, streams, live);
  }

  close(): void {
    this.live.stop();
    for (const s of this.servers) {
      s.close();
      s.closeAllConnections();
    }
    rmSync(this.socket, { force: true });
  }
}
