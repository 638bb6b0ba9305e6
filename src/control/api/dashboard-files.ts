// The web dashboard's static files (docs/dashboard.md): a fixed list of URL
// paths, each mapped to one file of the repository's dashboard/ folder or of
// the uplot package, served with its content type and a strict CSP. Shared by
// the TCP admin listener (admin.dashboard) and `hostlb dashboard`; the data
// the page shows comes from /v1/view, which each of them guards with a token.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';

/**
 * The page loads only its own files and talks only to its own origin; uPlot
 * styles its elements through the CSSOM (el.style.x = ...), which CSP does not
 * restrict, so it needs nothing beyond 'self'.
 */
export const DASHBOARD_CSP = "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'";

/** Where the page lives: /dashboard/ (and `/` redirects there). */
export const DASHBOARD_PATH = '/dashboard/';

interface FileSpec {
  /** 'page': under the repository's dashboard/; 'uplot': a file of the uplot package, resolved through node_modules. */
  from: 'page' | 'uplot';
  file: string;
  type: string;
}

/** Every URL path the dashboard answers with a file. Nothing else is read: no request path reaches the file system. */
export const DASHBOARD_FILES: Readonly<Record<string, FileSpec>> = {
  '/dashboard/': { from: 'page', file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/index.html': { from: 'page', file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { from: 'page', file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/style.css': { from: 'page', file: 'style.css', type: 'text/css; charset=utf-8' },
  '/dashboard/favicon.svg': { from: 'page', file: 'favicon.svg', type: 'image/svg+xml' },
  '/dashboard/uplot.js': { from: 'uplot', file: 'uplot/dist/uPlot.esm.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/uplot.css': { from: 'uplot', file: 'uplot/dist/uPlot.min.css', type: 'text/css; charset=utf-8' },
};

/** dist/src/control/api/ → the repository (or the installed package) root. */
const PAGE_DIR = new URL('../../../../dashboard/', import.meta.url);
const require = createRequire(import.meta.url);

function filePath(spec: FileSpec): string {
  return spec.from === 'page' ? fileURLToPath(new URL(spec.file, PAGE_DIR)) : require.resolve(spec.file);
}

/** True for the paths serveDashboard answers: `/`, `/dashboard` and anything under `/dashboard/`. */
export function isDashboardPath(pathname: string): boolean {
  return pathname === '/' || pathname === '/dashboard' || pathname.startsWith(DASHBOARD_PATH);
}

function plain(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify({ error: { code, message } })}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/**
 * Answers a request for a dashboard path (isDashboardPath): the file with its
 * type and the security headers, a redirect to /dashboard/ for `/` and
 * `/dashboard`, 405 for anything but GET and HEAD, 404 for a path not in
 * DASHBOARD_FILES. Never throws: a file that cannot be read answers 500.
 */
export async function serveDashboard(req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void> {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') {
    plain(res, 405, 'METHOD_NOT_ALLOWED', `${method} ${pathname}: the dashboard's files accept GET and HEAD`, { allow: 'GET, HEAD' });
    return;
  }
  if (pathname === '/' || pathname === '/dashboard') {
    res.writeHead(302, { location: DASHBOARD_PATH, 'content-length': 0, 'cache-control': 'no-store' });
    res.end();
    return;
  }
  const spec = Object.hasOwn(DASHBOARD_FILES, pathname) ? DASHBOARD_FILES[pathname] : undefined;
  if (spec === undefined) {
    plain(res, 404, 'NO_SUCH_FILE', `the dashboard has no file ${pathname}`);
    return;
  }
  let body: Buffer;
  try {
    body = await readFile(filePath(spec));
  } catch (e) {
    plain(res, 500, 'DASHBOARD_FILE_MISSING', `the dashboard's ${spec.file} cannot be read (${(e as Error).message}): reinstall hostlb (npm install)`);
    return;
  }
  res.writeHead(200, {
    'content-type': spec.type,
    'content-length': body.length,
    // Revalidated each time: a new hostlb must not run with an old app.js.
    'cache-control': 'no-cache',
    'content-security-policy': DASHBOARD_CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cross-origin-resource-policy': 'same-origin',
  });
  res.end(method === 'HEAD' ? undefined : body);
}
