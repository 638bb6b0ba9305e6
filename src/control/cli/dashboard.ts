// `hostlb dashboard [--port P] [--host H]`: the web dashboard (docs/dashboard.md)
// on localhost for as long as the command runs. Serves the page's files
// (api/dashboard-files.ts) and passes /v1/* to the admin unix socket, behind
// a random token made for this run: the socket is root's, and without the
// token any local user could act as root through this port.

import { randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Command } from 'commander';
import { tokenMatches } from '../api/bearer.js';
import { isDashboardPath, serveDashboard } from '../api/dashboard-files.js';
import { DEFAULT_ADMIN_LIMITS } from '../api/limits.js';
import { call, ClientError, DEFAULT_SOCKET, EXIT } from './client.js';

export const DEFAULT_DASHBOARD_PORT = 9181;

/** Request headers passed on to the admin socket; the rest (authorization, host, cookies) stay here. */
const FORWARD_REQUEST = ['accept', 'content-type', 'content-length', 'last-event-id'];
/** Hop-by-hop answer headers, which belong to one connection and are not passed back. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);

export interface DashboardOptions {
  /** The admin unix socket of the running hostlb. */
  socket: string;
  host: string;
  /** 0 = any free port. */
  port: number;
  /** The bearer token /v1/* needs; default: 32 random bytes, base64url. */
  token?: string;
}

export interface DashboardServer {
  /** The page's address with the token in its fragment (which a browser never sends). */
  readonly url: string;
  readonly port: number;
  readonly token: string;
  close(): void;
}

function json(res: ServerResponse, status: number, code: string, message: string, headers: OutgoingHttpHeaders = {}): void {
  const text = `${JSON.stringify({ error: { code, message } })}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** Passes one request to the admin socket and its answer back, streamed both ways (server-sent events included). */
function proxy(socket: string, req: IncomingMessage, res: ServerResponse): void {
  const headers: OutgoingHttpHeaders = {};
  for (const name of FORWARD_REQUEST) if (req.headers[name] !== undefined) headers[name] = req.headers[name];
  const upstream = request({ socketPath: socket, path: req.url, method: req.method, headers }, (answer) => {
    const back: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) back[name] = value;
    res.writeHead(answer.statusCode ?? 502, back);
    answer.pipe(res);
  });
  upstream.on('error', (e: NodeJS.ErrnoException) => {
    if (res.headersSent) {
      res.destroy();
    } else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      json(res, 503, 'NOT_RUNNING', `hostlb is not running (nothing answers on ${socket}); the dashboard shows it again once it does`);
    } else {
      json(res, 502, 'REQUEST_FAILED', `request to hostlb on ${socket} failed: ${e.message}`);
    }
  });
  // A browser that leaves ends its stream here too, so hostlb's count of stream clients goes down.
  res.on('close', () => upstream.destroy());
  req.pipe(upstream);
}

/**
 * Starts the dashboard's server on host:port. Resolves once it listens; rejects
 * with the listen error (EADDRINUSE, EACCES). Does not check that hostlb runs.
 */
export async function startDashboard(options: DashboardOptions): Promise<DashboardServer> {
  const token = options.token ?? randomBytes(32).toString('base64url');
  const server: Server = createServer({
    headersTimeout: DEFAULT_ADMIN_LIMITS.headersTimeoutMs,
    requestTimeout: DEFAULT_ADMIN_LIMITS.requestTimeoutMs,
  }, (req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://dashboard').pathname;
    // The page's files hold no data and a browser opening a URL sends no header: no token for them.
    if (isDashboardPath(pathname)) {
      void serveDashboard(req, res, pathname);
      return;
    }
    if (!tokenMatches(req.headers.authorization, token)) {
      json(res, 401, 'UNAUTHORIZED', 'this dashboard needs "Authorization: Bearer <token>" with the token `hostlb dashboard` printed', { 'www-authenticate': 'Bearer' });
      return;
    }
    if (!pathname.startsWith('/v1/')) {
      json(res, 404, 'NO_SUCH_ENDPOINT', `hostlb dashboard passes on /v1/… only, not ${pathname}`);
      return;
    }
    proxy(options.socket, req, res);
  });
  server.maxConnections = DEFAULT_ADMIN_LIMITS.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => process.stderr.write(`hostlb dashboard: ${e.message}; still listening\n`));
  const port = (server.address() as { port: number }).port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}/dashboard/#token=${token}`,
    port,
    token,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

interface DashboardFlags { port: string; host: string }
interface GlobalFlags { socket?: string; url?: string }

export function addDashboardCommand(program: Command, fail: (e: unknown) => never): void {
  program.command('dashboard')
    .description('serve the web dashboard on localhost until Ctrl-C, passing its requests to the admin socket behind a one-time token; prints the address to open')
    .option('--port <port>', `local port to serve it on (0: any free port)`, String(DEFAULT_DASHBOARD_PORT))
    .option('--host <address>', 'local address to serve it on', '127.0.0.1')
    .action(async (flags: DashboardFlags, cmd: Command) => {
      try {
        const g = cmd.optsWithGlobals() as GlobalFlags & DashboardFlags;
        if (g.url !== undefined) {
          process.stderr.write(`hostlb: dashboard talks to the admin socket (--socket); a TCP listener serves the page itself: set admin.dashboard: true and open ${g.url.replace(/\/$/, '')}/dashboard/\n`);
          process.exit(EXIT.usage);
        }
        if (!/^\d+$/.test(flags.port) || Number(flags.port) > 65535) {
          process.stderr.write(`hostlb: --port must be a port number 0-65535 (0: any free one), got "${flags.port}"\n`);
          process.exit(EXIT.usage);
        }
        const socket = g.socket ?? process.env.HOSTLB_SOCKET ?? DEFAULT_SOCKET;
        // Once now, so a wrong socket or missing sudo is said here rather than in the browser.
        await call({ socket }, 'GET', '/v1/status');
        const dashboard = await startDashboard({ socket, host: flags.host, port: Number(flags.port) });
        const stop = (): void => {
          dashboard.close();
          process.exit(EXIT.ok);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
        process.stdout.write(`dashboard: ${dashboard.url}\n`);
        process.stderr.write(`hostlb dashboard: serving hostlb on ${socket} until Ctrl-C; the token in the address is good for this run only\n`);
      } catch (e) {
        if (e instanceof ClientError) {
          process.stderr.write(`hostlb: ${e.message}\n`);
          process.exit(e.exitCode);
        }
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
          process.stderr.write(`hostlb: ${flags.host}:${flags.port} is in use: choose another --port (0: any free one)\n`);
          process.exit(EXIT.rejected);
        }
        fail(e);
      }
    });
}
