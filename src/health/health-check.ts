// One advisor watching one daemon: runs its probe every interval, turns the
// results into a state (unknown, up, down) with rise/fall hysteresis, and
// keeps a smoothed response time. What the state means for the daemon's weight
// is the manager's.

import {
  advisorSpec,
  probeFor,
  reasonFromError,
  timeoutMs,
  type AdvisorSpec,
  type Probe,
  type ProbeResult,
  type ProbeTarget,
} from './advisors/index.js';

export type HealthState = 'unknown' | 'up' | 'down';

/** Called on every transition of state, with the probe result that caused it. */
export type HealthChange = (state: HealthState, result: ProbeResult) => void;

/** A clock's timers: `setTimer` returns a handle `clearTimer` accepts. */
export interface HealthCheckOptions {
  /** Replaces the advisor's own probe (tests, or an advisor of the caller's making). */
  probe?: Probe;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

/** Weight of the newest sample in smoothedMs. */
export const SMOOTHING_ALPHA = 0.3;

/**
 * How long past spec.timeout a probe may go unsettled before the check gives
 * up on it: a probe that breaks its contract and never settles would
 * otherwise stop the check for good, leaving its daemon's last state standing.
 */
export const WATCHDOG_GRACE_MS = 1000;

function defaultSetTimer(fn: () => void, ms: number): unknown {
  // Unref'd: health checks never keep a stopping process alive.
  return setTimeout(fn, ms).unref();
}

function defaultClearTimer(handle: unknown): void {
  clearTimeout(handle as ReturnType<typeof setTimeout>);
}

/**
 * The health of one daemon, as one advisor sees it.
 *
 * The first probe starts at start(); each next one `interval` seconds after
 * the previous one settled, so probes never overlap. A daemon starts
 * `unknown`; `rise` consecutive successes make it `up`, `fall` consecutive
 * failures make it `down`, from any other state. onChange runs synchronously
 * on each transition and must not throw (an exception is not caught here).
 * stop() aborts a probe in flight and clears the timer; nothing is called
 * after it. State and counters survive stop(); start() again resumes.
 */
export class HealthCheck {
  readonly target: ProbeTarget;
  readonly spec: AdvisorSpec;
  readonly #onChange: HealthChange;
  readonly #probe: Probe;
  readonly #setTimer: (fn: () => void, ms: number) => unknown;
  readonly #clearTimer: (handle: unknown) => void;

  #state: HealthState = 'unknown';
  #lastResult: ProbeResult | undefined;
  #consecutiveOk = 0;
  #consecutiveFail = 0;
  #smoothedMs = NaN;

  #running = false;
  // Bumped by every start() and stop(): a probe settling under an older epoch
  // belongs to a run that was stopped and is ignored.
  #epoch = 0;
  #timer: unknown;
  #watchdog: unknown;
  #controller: AbortController | undefined;

  /** Throws a HostlbError with code ADVISOR_INVALID for an unusable spec. */
  constructor(target: ProbeTarget, spec: AdvisorSpec, onChange: HealthChange, options: HealthCheckOptions = {}) {
    this.target = Object.freeze({ ...target });
    this.spec = Object.freeze(advisorSpec(spec));
    this.#onChange = onChange;
    this.#probe = options.probe ?? probeFor(this.spec.type);
    this.#setTimer = options.setTimer ?? defaultSetTimer;
    this.#clearTimer = options.clearTimer ?? defaultClearTimer;
  }

  get state(): HealthState {
    return this.#state;
  }

  /** The latest probe's result, undefined before the first settles. */
  get lastResult(): ProbeResult | undefined {
    return this.#lastResult;
  }

  get consecutiveOk(): number {
    return this.#consecutiveOk;
  }

  get consecutiveFail(): number {
    return this.#consecutiveFail;
  }

  /** Exponentially smoothed responseMs of successful probes (alpha 0.3); NaN before the first success. */
  get smoothedMs(): number {
    return this.#smoothedMs;
  }

  get running(): boolean {
    return this.#running;
  }

  /** Starts probing now. Does nothing if already running. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#epoch++;
    this.#probeNow();
  }

  /** Aborts a probe in flight and cancels the next; no onChange after this returns. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#epoch++;
    if (this.#timer !== undefined) this.#clearTimer(this.#timer);
    this.#timer = undefined;
    if (this.#watchdog !== undefined) this.#clearTimer(this.#watchdog);
    this.#watchdog = undefined;
    this.#controller?.abort();
    this.#controller = undefined;
  }

  #probeNow(): void {
    this.#timer = undefined;
    const epoch = this.#epoch;
    const controller = new AbortController();
    this.#controller = controller;
    let settled = false;

    const settle = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      if (epoch !== this.#epoch) return;
      this.#clearTimer(this.#watchdog);
      this.#watchdog = undefined;
      this.#controller = undefined;
      // Scheduled before onChange runs, so a throwing callback cannot stop the check.
      this.#timer = this.#setTimer(() => this.#probeNow(), this.spec.interval * 1000);
      this.#record(result);
    };

    const limitMs = timeoutMs(this.spec);
    this.#watchdog = this.#setTimer(() => {
      controller.abort();
      settle({ ok: false, responseMs: limitMs + WATCHDOG_GRACE_MS, reason: `timed out after ${limitMs} ms` });
    }, limitMs + WATCHDOG_GRACE_MS);

    let pending: Promise<ProbeResult>;
    try {
      pending = this.#probe(this.target, this.spec, controller.signal);
    } catch (err) {
      pending = Promise.reject(err);
    }
    // A probe of the caller's making may reject despite the contract; that is a failure.
    pending.then(settle, (err: unknown) => settle({ ok: false, responseMs: 0, reason: reasonFromError(err) }));
  }

  #record(result: ProbeResult): void {
    this.#lastResult = result;
    let next = this.#state;
    if (result.ok) {
      this.#consecutiveOk++;
      this.#consecutiveFail = 0;
      this.#smoothedMs =
        Number.isNaN(this.#smoothedMs)
          ? result.responseMs
          : SMOOTHING_ALPHA * result.responseMs + (1 - SMOOTHING_ALPHA) * this.#smoothedMs;
      if (this.#consecutiveOk >= this.spec.rise) next = 'up';
    } else {
      this.#consecutiveFail++;
      this.#consecutiveOk = 0;
      if (this.#consecutiveFail >= this.spec.fall) next = 'down';
    }
    if (next === this.#state) return;
    this.#state = next;
    this.#onChange(next, result);
  }
}
