// A fixed table of buckets, each naming a daemon, in proportion to effective
// weights: what a data plane whose decisions run in the kernel (a hash picks
// a bucket) is given instead of a scheduler. The sh scheduler's weighted
// rendezvous table, so a change of weights moves only the buckets of the
// daemons it touches, and flows of the others stay put.

import { SourceHashScheduler } from './sh.js';

/** Bucket b's daemon id, for `count` buckets; -1 in every bucket when no daemon has weight. */
export function weightedBuckets(daemons: ReadonlyArray<{ id: number; weight: number }>, count: number): number[] {
  const table = new SourceHashScheduler(count);
  table.setDaemons(daemons);
  const out: number[] = [];
  for (let b = 0; b < count; b++) out.push(table.pick(0, b));
  return out;
}
