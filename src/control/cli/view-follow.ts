// Following GET /v1/view as server-sent events from the CLI (hostlb top):
// each `view` event's snapshot goes to onView, a lost stream is tried again
// after a second, and close() ends it for good.

import { request, type ClientRequest } from 'node:http';
import type { LiveViewSnapshot } from '../view/live-view.js';
import { DEFAULT_SOCKET, type ClientOptions } from './client.js';

export interface ViewFollower {
  close(): void;
}

/** Splits a server-sent-event stream into events; returns the text not yet complete. */
export function splitEvents(buffer: string, onEvent: (type: string, data: string) => void): string {
  let rest = buffer;
  for (let end = rest.indexOf('\n\n'); end >= 0; end = rest.indexOf('\n\n')) {
    const block = rest.slice(0, end);
    rest = rest.slice(end + 2);
    let type = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) type = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length > 0) onEvent(type, data.join('\n'));
  }
  return rest;
}

export function followView(options: ClientOptions, onView: (view: LiveViewSnapshot) => void, onState: (connected: boolean, why: string) => void): ViewFollower {
  let closed = false;
  let current: ClientRequest | null = null;
  let retry: NodeJS.Timeout | null = null;
  const again = (why: string): void => {
    current = null;
    if (closed) return;
    onState(false, why);
    retry = setTimeout(open, 1000);
  };
  const open = (): void => {
    retry = null;
    const target = options.url ? new URL('/v1/view', options.url) : null;
    const req = request({
      ...(target ? { host: target.hostname, port: target.port, path: target.pathname } : { socketPath: options.socket ?? process.env.HOSTLB_SOCKET ?? DEFAULT_SOCKET, path: '/v1/view' }),
      headers: { accept: 'text/event-stream', ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) },
    }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        again(res.statusCode === 401 ? 'the token was refused (--token, or $HOSTLB_TOKEN)' : `hostlb answered ${res.statusCode}`);
        return;
      }
      onState(true, '');
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer = splitEvents(buffer + chunk, (type, data) => {
          if (type !== 'view') return;
          try {
            onView(JSON.parse(data) as LiveViewSnapshot);
          } catch {
            // A broken snapshot is skipped; the next comes within a second.
          }
        });
      });
      res.on('end', () => again('hostlb closed the stream'));
      res.on('error', () => undefined);
    });
    req.on('error', (e: NodeJS.ErrnoException) => again(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'hostlb is not running' : e.message));
    req.end();
    current = req;
  };
  open();
  return {
    close(): void {
      closed = true;
      if (retry) clearTimeout(retry);
      current?.destroy();
    },
  };
}
