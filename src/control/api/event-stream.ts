// GET /v1/events as server-sent events: the kept events after Last-Event-ID
// (or ?since=N), then each as it happens. Owns the cap on clients and the
// back-pressure rule: a client whose unsent bytes pass the limit is dropped,
// so a slow reader never makes hostlb buffer without bound.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DaemonEvent } from '../../health/events.js';
import type { Controlled } from './controlled.js';

export interface EventStreamStats {
  /** Clients streaming now. */
  clients: number;
  /** Clients refused with 503 because `clients` was at the cap. */
  refused: number;
  /** Clients disconnected because their unsent bytes passed the limit. */
  dropped: number;
  /** The most bytes ever waiting for one client (after a write), for tests and metrics. */
  maxBuffered: number;
}

export class EventStreams {
  readonly stats: EventStreamStats = { clients: 0, refused: 0, dropped: 0, maxBuffered: 0 };

  constructor(private readonly maxClients: number, private readonly maxBuffer: number) {}

  /**
   * Starts a stream on `res`, or answers 503 TOO_MANY_EVENT_CLIENTS (JSON) when
   * `maxClients` stream already. With `view`, the stream also carries a `view`
   * event (its result) at once and then every second (GET /v1/view).
   */
  open(ctl: Controlled, req: IncomingMessage, res: ServerResponse, url: URL, view?: () => unknown): void {
    if (this.stats.clients >= this.maxClients) {
      this.stats.refused++;
      const text = `${JSON.stringify({ error: { code: 'TOO_MANY_EVENT_CLIENTS', message: `${this.maxClients} clients already follow /v1/events; close one, or poll GET /v1/events?since=N instead` } })}\n`;
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', 'retry-after': '5' });
      res.end(text);
      return;
    }
    this.stats.clients++;
    let open = true;
    const events = ctl.health.events;
    // One listener per client: drop() undoes all of it, whichever way the stream ends.
    const send = (text: string): void => {
      if (!open) return;
      res.write(text);
      const buffered = res.writableLength;
      if (buffered > this.stats.maxBuffered) this.stats.maxBuffered = buffered;
      if (buffered > this.maxBuffer) {
        this.stats.dropped++;
        drop();
        res.destroy();
      }
    };
    const write = (e: DaemonEvent): void => send(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    // A comment now and then keeps proxies and idle timeouts from closing the stream.
    const heartbeat = setInterval(() => send(': keep-alive\n\n'), 15_000);
    heartbeat.unref();
    const sendView = (): void => send(`event: view\ndata: ${JSON.stringify(view!())}\n\n`);
    const viewTimer = view ? setInterval(sendView, 1000) : null;
    viewTimer?.unref();
    const drop = (): void => {
      if (!open) return;
      open = false;
      this.stats.clients--;
      clearInterval(heartbeat);
      if (viewTimer) clearInterval(viewTimer);
      events.off('event', write);
    };
    res.on('close', drop);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    send(': hostlb daemon events\n\n');
    const after = Number(req.headers['last-event-id'] ?? url.searchParams.get('since') ?? 0) || 0;
    for (const e of events.since(after)) write(e);
    if (view) sendView();
    if (!open) return; // dropped while catching up
    // Every client is one listener, besides the log's: room for all of them without Node's leak warning.
    if (events.getMaxListeners() < this.maxClients + 10) events.setMaxListeners(this.maxClients + 10);
    events.on('event', write);
  }
}
