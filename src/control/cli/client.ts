// The CLI's side of the admin API: one HTTP request over the unix socket (or
// TCP with a token), errors turned into one sentence and an exit code that
// scripts can trust.

import { request } from 'node:http';
import { HostlbError } from '../../errors.js';

export const DEFAULT_SOCKET = '/run/hostlb/admin.sock';

/** Exit codes of the `hostlb` command. */
export const EXIT = { ok: 0, rejected: 1, usage: 2, notRunning: 3, permission: 4, serverError: 5 } as const;

export interface ClientOptions {
  socket?: string;
  /** http://host:port of a TCP admin listener (then `token` is needed). */
  url?: string;
  token?: string;
}

export class ClientError extends HostlbError {
  constructor(code: string, message: string, readonly exitCode: number, readonly body?: unknown) {
    super(code, message);
  }
}

/** Sends one request; resolves the parsed JSON (or text) body of a 2xx answer, rejects with ClientError otherwise. */
export function call(options: ClientOptions, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
  const socket = options.socket ?? process.env.HOSTLB_SOCKET ?? DEFAULT_SOCKET;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const target = options.url ? new URL(path, options.url) : null;
    const req = request({
      ...(target ? { host: target.hostname, port: target.port, path: target.pathname + target.search } : { socketPath: socket, path }),
      method,
      headers: {
        ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      },
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        if ((res.headers['content-type'] ?? '').includes('json')) {
          try { parsed = JSON.parse(text); } catch { /* keep text */ }
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(parsed);
        const err = (parsed as { error?: { code?: string; message?: string } })?.error;
        const code = err?.code ?? `HTTP_${status}`;
        const message = err?.message ?? `hostlb answered ${status}`;
        reject(new ClientError(code, message, status === 401 || status === 403 ? EXIT.permission : status >= 500 ? EXIT.serverError : EXIT.rejected, parsed));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const where = target ? options.url : socket;
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new ClientError('NOT_RUNNING', `hostlb is not running (nothing answers on ${where}): start it with \`hostlb start --config FILE\`, or point --socket at its admin socket`, EXIT.notRunning));
      } else if (e.code === 'EACCES' || e.code === 'EPERM') {
        reject(new ClientError('PERMISSION_DENIED', `permission denied on ${where}: the admin socket belongs to root; run this command with sudo`, EXIT.permission));
      } else {
        reject(new ClientError('REQUEST_FAILED', `request to hostlb failed: ${e.message}`, EXIT.serverError));
      }
    });
    if (payload) req.write(payload);
    req.end();
  });
}
