// The kernel-side hash rule's buckets (netfilter plane, see nft-maps.ts): which
// daemon each of a cluster port's fallback buckets sends new connections to
// while hostlb is away. The sh scheduler's weighted rendezvous table, so
// buckets follow effective weights and a change moves only the buckets of the
// daemons it touches.

import { SourceHashScheduler } from '../../dispatch/schedulers/sh.js';
import { FALLBACK_BUCKETS } from './host-plan.js';
import { REJECT_ID } from './marks.js';

/** Bucket b's daemon id, or REJECT_ID for every bucket when no daemon has weight. */
export function fallbackBuckets(daemons: ReadonlyArray<{ id: number; weight: number }>, buckets = FALLBACK_BUCKETS): number[] {
  const table = new SourceHashScheduler(buckets);
  table.setDaemons(daemons);
  const out: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const id = table.pick(0, b);
    out.push(id < 0 ? REJECT_ID : id);
  }
  return out;
}
