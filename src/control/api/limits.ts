// What one admin listener will hold at once, so a client that opens many
// connections, sends slowly or reads slowly costs hostlb bounded memory and
// file descriptors. Both listeners (unix socket and TCP) use the same limits.

export interface AdminLimits {
  /** Open connections per listener; more are closed as they arrive (net.Server maxConnections). */
  maxConnections: number;
  /** Time to receive a request's headers, ms (http.Server headersTimeout). */
  headersTimeoutMs: number;
  /** Time to receive a whole request, ms (http.Server requestTimeout); answering may take longer (a rolling restart). */
  requestTimeoutMs: number;
  /** How often the server looks for requests over those times, ms. */
  checkIntervalMs: number;
  /** Event-stream clients at once, over both listeners; one more gets 503 TOO_MANY_EVENT_CLIENTS. */
  maxEventClients: number;
  /** Bytes waiting to go to one event-stream client; a client that lets more pile up is disconnected. */
  maxEventBuffer: number;
}

export const DEFAULT_ADMIN_LIMITS: AdminLimits = {
  maxConnections: 64,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  checkIntervalMs: 1_000,
  maxEventClients: 16,
  maxEventBuffer: 256 * 1024,
};
