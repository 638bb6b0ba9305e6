// The restart delay of one supervised daemon: doubling from `initialMs` up to
// `maxMs`, back to the start after a run long enough to count as healthy.
// Pure arithmetic on durations the caller measures; timers and clocks are the
// supervisor's.

import { HostlbError } from '../errors.js';

export interface BackoffOptions {
  /** Delay before the first restart, in ms (default 500). */
  initialMs?: number;
  /** Ceiling of the delay, in ms (default 30 000). */
  maxMs?: number;
  /** A run at least this long, in ms, resets the delay to `initialMs` (default 10 000). */
  resetAfterMs?: number;
}

export const BACKOFF_DEFAULTS: Readonly<Required<BackoffOptions>> = Object.freeze({
  initialMs: 500,
  maxMs: 30_000,
  resetAfterMs: 10_000,
});

/**
 * Delays for one daemon's restarts. No jitter: each daemon has its own
 * address and port, so restarts do not contend for anything a herd would hit.
 * Throws a HostlbError with code SUPERVISE_INVALID naming the bad option.
 */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly resetAfterMs: number;
  #failures = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? BACKOFF_DEFAULTS.initialMs;
    this.maxMs = options.maxMs ?? BACKOFF_DEFAULTS.maxMs;
    this.resetAfterMs = options.resetAfterMs ?? BACKOFF_DEFAULTS.resetAfterMs;
    // A zero initial delay would double to zero forever: a crash loop at full speed.
    checkMs('backoff.initialMs', this.initialMs, 1);
    checkMs('backoff.maxMs', this.maxMs, this.initialMs);
    checkMs('backoff.resetAfterMs', this.resetAfterMs, 0);
  }

  /** Restarts handed out since the last reset. */
  get failures(): number {
    return this.#failures;
  }

  /** The delay before the next restart, in ms; each call doubles the following one, up to maxMs. */
  next(): number {
    // 2 ** n reaches Infinity after ~1024 failures; Math.min still yields maxMs.
    const delay = Math.min(this.maxMs, this.initialMs * 2 ** this.#failures);
    this.#failures++;
    return delay;
  }

  /** Reports how long the daemon ran before its exit, in ms; a long enough run resets the delay. */
  noteRun(runMs: number): void {
    if (runMs >= this.resetAfterMs) this.reset();
  }

  reset(): void {
    this.#failures = 0;
  }
}

function checkMs(field: string, value: number, min: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new HostlbError('SUPERVISE_INVALID', `${field}: ${String(value)} must be a number of milliseconds >= ${min}`);
  }
}
