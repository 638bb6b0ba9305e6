// What a data plane whose decisions run in the kernel is given instead of a
// scheduler, in proportion to effective weights:
// - weightedBuckets: a fixed table of buckets, each naming a daemon, which a
//   hash of the flow picks from. The sh scheduler's weighted rendezvous
//   table, so a change of weights moves only the buckets of the daemons it
//   touches, and flows of the others stay put.
// - weightedSequence: one period of wrr's order, which a counter walks, one
//   step per new connection: rr and wrr hand out connections in turn, as the
//   other planes' schedulers do, not by the luck of a hash.

import { SourceHashScheduler } from './sh.js';
import { WeightedRoundRobinScheduler, gcd } from './wrr.js';

/** Bucket b's daemon id, for `count` buckets; -1 in every bucket when no daemon has weight. */
export function weightedBuckets(daemons: ReadonlyArray<{ id: number; weight: number }>, count: number): number[] {
  const table = new SourceHashScheduler(count);
  table.setDaemons(daemons);
  const out: number[] = [];
  for (let b = 0; b < count; b++) out.push(table.pick(0, b));
  return out;
}

/**
 * One period of smooth weighted round robin over the daemons of weight > 0
 * (wrr.ts; equal weights give port order, as rr), at most `max` picks long:
 * weights whose period is longer (the health layer's are hundredths) are
 * scaled to `max` picks, each daemon keeping at least one, so shares are
 * right to within one pick in `max`. Empty when no daemon has weight.
 */
export function weightedSequence(daemons: ReadonlyArray<{ id: number; weight: number }>, max: number): number[] {
  const live = daemons.filter((d) => d.weight > 0);
  if (live.length === 0) return [];
  const counts = periodCounts(live.map((d) => d.weight), max);
  const wrr = new WeightedRoundRobinScheduler();
  wrr.setDaemons(live.map((d, i) => ({ id: d.id, weight: counts[i] })));
  const length = counts.reduce((sum, c) => sum + c, 0);
  return Array.from({ length }, () => wrr.pick(0, 0));
}

/** Picks per daemon in one period: the weights over their gcd, or, when they add up to more than `max`, `max` shared by largest remainder, one at least each. */
function periodCounts(weights: readonly number[], max: number): number[] {
  let divisor = 0;
  for (const w of weights) divisor = gcd(divisor, w);
  const reduced = weights.map((w) => w / divisor);
  const total = reduced.reduce((sum, w) => sum + w, 0);
  if (total <= max) return reduced;
  // More daemons than picks: one each (a period longer than `max`; the socket plane has fewer slots than that).
  if (weights.length >= max) return weights.map(() => 1);
  // One each, then the rest in proportion; the remainders decide the last few, heaviest first on a tie.
  const spare = max - weights.length;
  const shares = reduced.map((w) => (spare * w) / total);
  const counts = shares.map((s) => 1 + Math.floor(s));
  let left = max - counts.reduce((sum, c) => sum + c, 0);
  const order = shares.map((s, i) => i).sort((a, b) => (shares[b] % 1) - (shares[a] % 1) || reduced[b] - reduced[a] || a - b);
  for (const i of order) {
    if (left <= 0) break;
    counts[i]++;
    left--;
  }
  return counts;
}
