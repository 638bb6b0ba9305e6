// Weighted random: a new flow goes to a daemon drawn with probability
// weight / total weight, from ctx.random(). Also owns the alias table that
// makes one such draw O(1); p2c draws from it twice.

import assert from 'node:assert/strict';
import type { Scheduler, SchedulerContext, SchedulerDaemon } from './scheduler.js';

/**
 * Vose's alias method over the daemons with weight > 0, in integer arithmetic
 * so the probabilities are exactly weight / total. Column i keeps itself with
 * chance threshold[i] / total and otherwise yields alias[i].
 */
export class AliasTable {
  private liveIds = new Int32Array(0);
  private liveWeights = new Int32Array(0);
  private threshold = new Float64Array(0);
  private alias = new Int32Array(0);
  private total = 0;

  /** Control path: rebuilds from `daemons`, which it does not keep. */
  build(daemons: readonly SchedulerDaemon[]): void {
    const ids: number[] = [];
    const weights: number[] = [];
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight === 0) continue;
      ids.push(id);
      weights.push(weight);
    }
    const n = ids.length;
    let total = 0;
    for (const w of weights) total += w;
    // Each column holds `total` units; daemon i owns weight[i] * n of the n * total.
    const scaled = Float64Array.from(weights, (w) => w * n);
    const threshold = new Float64Array(n).fill(total);
    const alias = Int32Array.from({ length: n }, (_, i) => i);
    const small = new Int32Array(n);
    const large = new Int32Array(n);
    let smallLen = 0;
    let largeLen = 0;
    for (let i = 0; i < n; i++) {
      if (scaled[i] < total) small[smallLen++] = i;
      else large[largeLen++] = i;
    }
    while (smallLen > 0 && largeLen > 0) {
      const s = small[--smallLen];
      const l = large[--largeLen];
      threshold[s] = scaled[s];
      alias[s] = l;
      scaled[l] -= total - scaled[s];
      if (scaled[l] < total) small[smallLen++] = l;
      else large[largeLen++] = l;
    }
    // Whatever is left holds exactly `total` (integer arithmetic): it keeps its column.
    this.liveIds = Int32Array.from(ids);
    this.liveWeights = Int32Array.from(weights);
    this.threshold = threshold;
    this.alias = alias;
    this.total = total;
  }

  /** Ids of the daemons with weight > 0, in port order; sample() returns indexes into this. Do not write. */
  get ids(): Int32Array {
    return this.liveIds;
  }

  /** Weights matching `ids`. Do not write. */
  get weights(): Int32Array {
    return this.liveWeights;
  }

  /**
   * Packet path: an index into `ids`, drawn by weight from `r` uniform in [0, 1).
   * Requires ids.length > 0. Out-of-range or NaN `r` still yields a valid index.
   */
  sample(r: number): number {
    const n = this.liveIds.length;
    const x = r * n;
    let i = x | 0;
    if (i < 0) i = 0;
    else if (i >= n) i = n - 1;
    // The fraction left after choosing the column decides between it and its alias.
    return (x - i) * this.total < this.threshold[i] ? i : this.alias[i];
  }
}

export class RandomScheduler implements Scheduler {
  readonly name = 'random' as const;
  private readonly ctx: SchedulerContext;
  private readonly table = new AliasTable();

  constructor(ctx: SchedulerContext) {
    this.ctx = ctx;
  }

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    this.table.build(daemons);
  }

  pick(_flowHash: number, _sourceHash: number): number {
    const table = this.table;
    if (table.ids.length === 0) return -1;
    return table.ids[table.sample(this.ctx.random())];
  }
}
