// Weighted round robin, the smooth variant nginx uses: a daemon of weight w
// gets w of every `total` flows, spread out rather than in a burst (weights
// 5,1,1 give a a b a c a a). Daemons of weight 0 get nothing.

import assert from 'node:assert/strict';
import type { Scheduler, SchedulerDaemon } from './scheduler.js';

/**
 * The sequence repeats after total/gcd(weights) picks, so when that period is
 * short it is computed once and pick() becomes a table read. Past these
 * limits (many daemons with unrelated weights) pick() runs nginx's O(daemons)
 * loop instead, which yields the same sequence.
 */
const SEQUENCE_MAX_LEN = 65536;
const SEQUENCE_MAX_WORK = 1 << 24;

export class WeightedRoundRobinScheduler implements Scheduler {
  readonly name = 'wrr' as const;
  private ids = new Int32Array(0);
  /** Weights divided by their gcd: same sequence, shorter period. */
  private weights = new Int32Array(0);
  private current = new Float64Array(0);
  private total = 0;
  /** One full period of picks, or null to compute each pick live. */
  private sequence: Int32Array | null = null;
  private cursor = 0;

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    const ids: number[] = [];
    const weights: number[] = [];
    let divisor = 0;
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight === 0) continue;
      ids.push(id);
      weights.push(weight);
      divisor = gcd(divisor, weight);
    }
    this.ids = Int32Array.from(ids);
    this.weights = Int32Array.from(weights, (w) => w / divisor);
    this.current = new Float64Array(ids.length);
    this.total = 0;
    for (const w of this.weights) this.total += w;
    this.cursor = 0;
    this.sequence = null;
    // A new set starts a new period, as an nginx reload does.
    if (this.total > 0 && this.total <= SEQUENCE_MAX_LEN && this.total * ids.length <= SEQUENCE_MAX_WORK) {
      const sequence = new Int32Array(this.total);
      for (let k = 0; k < sequence.length; k++) sequence[k] = this.step();
      // After a full period every `current` is back at 0, so the live state stays consistent.
      this.sequence = sequence;
    }
  }

  pick(_flowHash: number, _sourceHash: number): number {
    const sequence = this.sequence;
    if (sequence !== null) {
      const c = this.cursor;
      this.cursor = c + 1 === sequence.length ? 0 : c + 1;
      return sequence[c];
    }
    if (this.total === 0) return -1;
    return this.step();
  }

  /** nginx's ngx_http_upstream_get_peer: all gain their weight; the first with the most wins and pays back the total. */
  private step(): number {
    const { current, weights } = this;
    let best = 0;
    let bestCurrent = -Infinity;
    for (let i = 0; i < current.length; i++) {
      const c = current[i] + weights[i];
      current[i] = c;
      if (c > bestCurrent) {
        best = i;
        bestCurrent = c;
      }
    }
    current[best] -= this.total;
    return this.ids[best];
  }
}

/** Greatest common divisor of two non-negative integers (gcd(0, b) = b). */
export function gcd(a: number, b: number): number {
  while (b !== 0) {
    const t = a % b;
    a = b;
    b = t;
  }
  return a;
}
