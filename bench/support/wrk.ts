// Reading wrk's report: requests per second, request count, socket errors,
// error responses and mean latency. Knows wrk 4.x's text format only; running
// wrk is left to the caller.

/** The figures of one wrk run. */
export interface WrkReport {
  requestsPerSec: number;
  requests: number;
  /** Seconds wrk says the run lasted. */
  seconds: number;
  /** Mean and largest latency, milliseconds; NaN when wrk printed none (no request completed). */
  latencyMs: number;
  latencyMaxMs: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** Responses with status >= 400: wrk labels them "Non-2xx or 3xx responses". */
  non2xx: number;
}

const TIME_UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses wrk's stdout; null when the output has no "Requests/sec:" line (wrk failed or was killed). */
export function parseWrk(output: string): WrkReport | null {
  const rate = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  if (rate === null) return null;
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(output);
  // "Latency   <avg>   <stdev>   <max>   <+/- stdev>"
  const latency = /^\s+Latency\s+([\d.]+)(us|ms|s|m|h)\s+[\d.]+(?:us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)/m.exec(output);
  // wrk prints the socket-error line only when some error happened.
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requestsPerSec: Number(rate[1]),
    requests: total ? Number(total[1]) : 0,
    seconds: total ? (Number(total[2]) * TIME_UNIT_MS[total[3]]) / 1000 : 0,
    latencyMs: latency ? Number(latency[1]) * TIME_UNIT_MS[latency[2]] : Number.NaN,
    latencyMaxMs: latency ? Number(latency[3]) * TIME_UNIT_MS[latency[4]] : Number.NaN,
    socketErrors: {
      connect: errors ? Number(errors[1]) : 0,
      read: errors ? Number(errors[2]) : 0,
      write: errors ? Number(errors[3]) : 0,
      timeout: errors ? Number(errors[4]) : 0,
    },
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

/** Sum of all socket errors. */
export function socketErrorCount(report: WrkReport): number {
  const e = report.socketErrors;
  return e.connect + e.read + e.write + e.timeout;
}
