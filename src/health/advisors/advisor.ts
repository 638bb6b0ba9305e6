// The advisor contract: what a probe of one daemon is asked to do
// (AdvisorSpec), where it points (ProbeTarget) and what it answers
// (ProbeResult), plus runProbe(), the timing, timeout and abort discipline
// every probe shares. Protocol details live in tcp.ts, http.ts, udp.ts, exec.ts.

import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { HostlbError } from '../../errors.js';
import type { RunAs } from '../run-as.js';

export type AdvisorType = 'tcp' | 'http' | 'udp' | 'exec';

export const ADVISOR_TYPES: readonly AdvisorType[] = Object.freeze(['tcp', 'http', 'udp', 'exec']);

/** How to probe one daemon and how to judge the answers. Durations are in seconds. */
export interface AdvisorSpec {
  type: AdvisorType;
  /** Seconds from one probe settling to the next starting (default 2). */
  interval: number;
  /** Seconds one probe may take, end to end (default 1). */
  timeout: number;
  /** Consecutive successes that make a daemon up (default 2). */
  rise: number;
  /** Consecutive failures that make a daemon down (default 3). */
  fall: number;
  /** http: request method (default GET). */
  method?: string;
  /** http: request path (default '/'). */
  path?: string;
  /** http: the status the daemon must answer (default 200). */
  expect?: number;
  /** http: the response body must contain this substring. */
  body?: string;
  /** http: Host header (default the daemon's address:port). */
  host?: string;
  /** udp: the datagram to send (default 'ping'). */
  payload?: string;
  /** udp: a reply must contain this; without it any reply will do. */
  reply?: string;
  /** exec: the program to run (no shell; use `sh -c` for one). */
  command?: string;
  /** exec: its arguments. */
  args?: string[];
  /** exec: the user and group the command runs as (run-as.ts); absent: as hostlb. */
  runAs?: RunAs | null;
}

/** One daemon's own endpoint. `address` is IP text (IPv4 or IPv6, no brackets); never a name. */
export interface ProbeTarget {
  address: string;
  port: number;
}

/**
 * One probe's verdict. `responseMs` is wall time from the start of the probe
 * to its verdict, in milliseconds (fractional), for failures too. `reason` is
 * '' when ok, otherwise a short phrase for logs and the admin API:
 * 'connection refused', 'timed out after 1000 ms', 'status 503, expected 200',
 * 'body lacks "ok"', 'exit code 1', 'no reply within 1000 ms', 'aborted', ...
 */
export interface ProbeResult {
  ok: boolean;
  responseMs: number;
  reason: string;
}

/**
 * Probes `target` once. Never rejects; settles within spec.timeout plus a few
 * milliseconds (at most CLEANUP_GRACE_MS more while a killed command exits).
 * Aborting `signal` ends the probe at once with reason 'aborted'.
 */
export type Probe = (target: ProbeTarget, spec: AdvisorSpec, signal: AbortSignal) => Promise<ProbeResult>;

/** Field figures from keepalived and HAProxy (DESIGN.md, "Reference figures"). */
export const ADVISOR_DEFAULTS: Readonly<Pick<AdvisorSpec, 'interval' | 'timeout' | 'rise' | 'fall'>> = Object.freeze({
  interval: 2,
  timeout: 1,
  rise: 2,
  fall: 3,
});

export const HTTP_DEFAULT_METHOD = 'GET';
export const HTTP_DEFAULT_PATH = '/';
export const HTTP_DEFAULT_EXPECT = 200;
export const UDP_DEFAULT_PAYLOAD = 'ping';

/** How long a probe may spend tidying up (a SIGKILLed command exiting) after its verdict. */
export const CLEANUP_GRACE_MS = 250;

// RFC 9110 section 5.6.2: a method is a token.
const METHOD_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function invalid(key: string, message: string): HostlbError {
  return new HostlbError('ADVISOR_INVALID', `advisor.${key}: ${message}`);
}

/**
 * Control path: a complete spec from what a user wrote, with interval,
 * timeout, rise and fall defaulted. The optional protocol fields stay as given;
 * the probes default them. Throws a HostlbError with code ADVISOR_INVALID naming
 * the key to change.
 */
export function advisorSpec(input: Partial<AdvisorSpec> & Pick<AdvisorSpec, 'type'>): AdvisorSpec {
  const spec: AdvisorSpec = { ...ADVISOR_DEFAULTS, ...dropUndefined(input), type: input.type };
  checkAdvisorSpec(spec);
  return spec;
}

function dropUndefined<T extends object>(input: T): Partial<T> {
  return Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Throws a HostlbError with code ADVISOR_INVALID if `spec` cannot be used. */
export function checkAdvisorSpec(spec: AdvisorSpec): void {
  if (!ADVISOR_TYPES.includes(spec.type)) {
    throw invalid('type', `${JSON.stringify(spec.type)} is not one of ${ADVISOR_TYPES.join(', ')}`);
  }
  for (const key of ['interval', 'timeout'] as const) {
    // Node's timers hold at most 2^31-1 ms; past that they fire at once.
    if (!(Number.isFinite(spec[key]) && spec[key] > 0 && spec[key] * 1000 <= 0x7fffffff)) {
      throw invalid(key, `${String(spec[key])} is not a positive number of seconds (at most 2147483)`);
    }
  }
  for (const key of ['rise', 'fall'] as const) {
    if (!(Number.isInteger(spec[key]) && spec[key] >= 1)) {
      throw invalid(key, `${String(spec[key])} is not a whole number of probes, 1 or more`);
    }
  }
  if (spec.method !== undefined && !METHOD_TOKEN.test(spec.method)) {
    throw invalid('method', `${JSON.stringify(spec.method)} is not an HTTP method`);
  }
  if (spec.path !== undefined && !/^\/[\x21-\x7e]*$/.test(spec.path)) {
    throw invalid('path', `${JSON.stringify(spec.path)} must start with "/" and hold no spaces or control characters`);
  }
  if (spec.expect !== undefined && !(Number.isInteger(spec.expect) && spec.expect >= 100 && spec.expect <= 599)) {
    throw invalid('expect', `${String(spec.expect)} is not an HTTP status (100-599)`);
  }
  if (spec.host !== undefined && !/^[\x21-\x7e]+$/.test(spec.host)) {
    throw invalid('host', `${JSON.stringify(spec.host)} is not a Host header value`);
  }
  if (spec.type === 'exec' && (spec.command === undefined || spec.command === '')) {
    throw invalid('command', 'an exec advisor needs a command');
  }
}

/** Seconds to whole milliseconds, as reasons and timers use them. */
export function timeoutMs(spec: Pick<AdvisorSpec, 'timeout'>): number {
  return Math.max(1, Math.round(spec.timeout * 1000));
}

/** Why a target cannot be probed over the network, or '' if it can. */
export function targetProblem(target: ProbeTarget): string {
  // A name would need a DNS lookup, which has no place in a health check's
  // timing and could hang past the timeout in getaddrinfo.
  if (isIP(target.address) === 0) return `bad address ${JSON.stringify(target.address)}`;
  if (!(Number.isInteger(target.port) && target.port >= 1 && target.port <= 65535)) return `bad port ${String(target.port)}`;
  return '';
}

const ERRNO_REASONS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  ECONNABORTED: 'connection aborted',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EADDRNOTAVAIL: 'address not available',
  ETIMEDOUT: 'timed out in the kernel',
  EMSGSIZE: 'message too long',
};

/** A short phrase for an OS or Node error: the errno's meaning when known, else the message. */
export function reasonFromError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in ERRNO_REASONS) return ERRNO_REASONS[code];
  if (err instanceof Error && err.message !== '') return err.message;
  return typeof code === 'string' ? code : String(err);
}

/** Text for a reason, quoted and cut short so a reason stays one short line. */
export function quote(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text);
}

/** Ends a probe: `ok` true for success, otherwise a reason. Calls after the first do nothing. */
export type ProbeFinish = (ok: boolean, reason?: string) => void;

/** Releases what a probe holds; may return a promise of the release (bounded by CLEANUP_GRACE_MS). */
export type ProbeCleanup = () => void | Promise<unknown>;

/**
 * Runs one probe under the shared discipline: `begin` starts the work and
 * returns its cleanup; the first of finish(), the timeout or an abort decides
 * the result; responseMs is taken at that moment; cleanup then runs, and the
 * promise resolves once it is done (or CLEANUP_GRACE_MS later). A throw from
 * `begin` becomes a failed result. Never rejects. `timeoutReason` words the
 * timeout for protocols where silence means something else ('no reply').
 */
export function runProbe(
  spec: Pick<AdvisorSpec, 'timeout'>,
  signal: AbortSignal,
  begin: (finish: ProbeFinish) => ProbeCleanup | void,
  timeoutReason: (ms: number) => string = (ms) => `timed out after ${ms} ms`,
): Promise<ProbeResult> {
  if (signal.aborted) return Promise.resolve({ ok: false, responseMs: 0, reason: 'aborted' });
  const limitMs = timeoutMs(spec);
  return new Promise<ProbeResult>((resolve) => {
    const started = performance.now();
    let result: ProbeResult | undefined;
    let begun = false;
    let cleanup: ProbeCleanup | void = undefined;

    const settle = (): void => {
      const verdict = result!;
      let pending: unknown;
      try {
        pending = cleanup?.();
      } catch {
        // The verdict is already taken; a failed release must not hide it.
      }
      if (!(pending instanceof Promise)) {
        resolve(verdict);
        return;
      }
      const grace = setTimeout(() => resolve(verdict), CLEANUP_GRACE_MS);
      grace.unref();
      pending.then(
        () => { clearTimeout(grace); resolve(verdict); },
        () => { clearTimeout(grace); resolve(verdict); },
      );
    };

    const finish: ProbeFinish = (ok, reason = '') => {
      if (result !== undefined) return;
      result = { ok, responseMs: performance.now() - started, reason: ok ? '' : reason || 'failed' };
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      // finish() called from inside begin() has no cleanup to run yet.
      if (begun) settle();
    };
    const onAbort = (): void => finish(false, 'aborted');

    const timer = setTimeout(() => finish(false, timeoutReason(limitMs)), limitMs);
    // A health check must never be what keeps a stopping process alive.
    timer.unref();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      cleanup = begin(finish);
    } catch (err) {
      finish(false, reasonFromError(err));
    }
    begun = true;
    if (result !== undefined) settle();
  });
}
