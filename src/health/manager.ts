// The manager's arithmetic (seed: "sophisticated weighted round robin with
// active management"; IBM Network Dispatcher's manager): every interval, each
// daemon's share of new flows is re-weighted from configurable proportions of
// four signals — active flows, new flows, advisor response time and the
// data path's SYN→SYN-ACK time — each scored against the port's average (less
// is better), smoothed, bounded, and ramped up after a daemon (re)joins.

export interface Proportions {
  active: number;
  new: number;
  /** Advisor response time. */
  response: number;
  /** Handshake time seen by the data path (SYN to SYN-ACK). */
  passive: number;
}

export interface ManagerSpec {
  enabled: boolean;
  /** Seconds between weight updates. */
  interval: number;
  proportions: Proportions;
  /** Weight of the newest computation in the smoothed factor (0..1]; 1 = no smoothing. */
  smoothing: number;
  /** Seconds over which a daemon that comes up, or is added, ramps from a small share to its full weight. */
  slowStart: number;
  /** Bounds of the factor applied to a configured weight. */
  minFactor: number;
  maxFactor: number;
}

export const DEFAULT_MANAGER: Readonly<ManagerSpec> = Object.freeze({
  enabled: true,
  interval: 2,
  proportions: Object.freeze({ active: 0.5, new: 0.5, response: 0, passive: 0 }),
  smoothing: 0.5,
  slowStart: 10,
  minFactor: 0.1,
  maxFactor: 10,
});

/** What the manager knows of one daemon in one interval. */
export interface DaemonSample {
  /** Active flows now. */
  active: number;
  /** New flows during the last interval. */
  newFlows: number;
  /** Smoothed advisor response time in ms, or NaN when unknown. */
  responseMs: number;
  /** Mean SYN→SYN-ACK time in ms over the last interval, or NaN when unknown. */
  handshakeMs: number;
}

/**
 * Scores `values` against their mean: a daemon at the mean scores 1, one with
 * half the load 2, one with twice the load 0.5. Unknown (NaN) values score 1;
 * all-zero inputs score 1 for everyone. `floor` keeps a zero from scoring infinity.
 */
export function inverseScores(values: readonly number[], floor: number): number[] {
  const known = values.filter((v) => Number.isFinite(v));
  if (known.length === 0) return values.map(() => 1);
  const mean = known.reduce((a, b) => a + b, 0) / known.length;
  if (mean <= 0) return values.map(() => 1);
  return values.map((v) => (Number.isFinite(v) ? mean / Math.max(v, floor, mean * 0.05) : 1));
}

/**
 * New factors (multipliers of configured weights) for a port's daemons from
 * this interval's samples and the previous factors. Pure.
 */
export function computeFactors(samples: readonly DaemonSample[], previous: readonly number[], spec: ManagerSpec): number[] {
  const p = spec.proportions;
  const total = p.active + p.new + p.response + p.passive;
  if (total <= 0 || samples.length === 0) return samples.map(() => 1);
  const active = inverseScores(samples.map((s) => s.active), 1);
  const fresh = inverseScores(samples.map((s) => s.newFlows), 1);
  const response = inverseScores(samples.map((s) => s.responseMs), 0.1);
  const passive = inverseScores(samples.map((s) => s.handshakeMs), 0.05);
  return samples.map((_, i) => {
    const raw = (p.active * active[i] + p.new * fresh[i] + p.response * response[i] + p.passive * passive[i]) / total;
    const prev = Number.isFinite(previous[i]) ? previous[i] : 1;
    const smoothed = spec.smoothing * raw + (1 - spec.smoothing) * prev;
    return Math.min(spec.maxFactor, Math.max(spec.minFactor, smoothed));
  });
}

/**
 * Share of its weight a daemon gets `sinceMs` after it came up: from 10% to
 * 100% linearly over `slowStartSeconds` (IPVS and HAProxy ramp the same way).
 */
export function slowStartRamp(sinceMs: number, slowStartSeconds: number): number {
  if (slowStartSeconds <= 0 || sinceMs >= slowStartSeconds * 1000) return 1;
  return 0.1 + 0.9 * Math.max(0, sinceMs) / (slowStartSeconds * 1000);
}

/**
 * Mean of slowStartRamp over the interval [fromMs, toMs] for a daemon up since
 * `upSinceMs` (0 before then: down, quiesced or draining, it took no new flows).
 * The share of its weight a daemon was given over a manager interval. Pure.
 */
export function meanRamp(fromMs: number, toMs: number, upSinceMs: number, slowStartSeconds: number): number {
  if (toMs <= fromMs) return toMs < upSinceMs ? 0 : slowStartRamp(toMs - upSinceMs, slowStartSeconds);
  const start = Math.max(fromMs, upSinceMs);
  if (start >= toMs) return 0;
  // Linear from `start` to the ramp's end (or `toMs`), then 1.
  const rampEnd = Math.min(toMs, Math.max(start, upSinceMs + slowStartSeconds * 1000));
  const linear = (rampEnd - start) * (slowStartRamp(start - upSinceMs, slowStartSeconds) + slowStartRamp(rampEnd - upSinceMs, slowStartSeconds)) / 2;
  return (linear + (toMs - rampEnd)) / (toMs - fromMs);
}

/** Scheduler weights are integers: configured weight × factor × ramp, ×100 so fractions survive; never 0 for a live daemon. */
export function effectiveWeight(configured: number, factor: number, ramp: number): number {
  if (configured <= 0) return 0;
  return Math.max(1, Math.round(configured * factor * ramp * 100));
}
