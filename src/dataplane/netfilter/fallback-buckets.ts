// The kernel-side hash rule's buckets (netfilter plane, see nft-maps.ts): which
// daemon each of a cluster port's fallback buckets sends new connections to
// while hostlb is away: the weighted bucket table (weighted-buckets.ts) over
// effective weights, with REJECT_ID where no daemon takes flows.

import { weightedBuckets } from '../../dispatch/schedulers/weighted-buckets.js';
import { FALLBACK_BUCKETS } from './host-plan.js';
import { REJECT_ID } from './marks.js';

/** Bucket b's daemon id, or REJECT_ID for every bucket when no daemon has weight. */
export function fallbackBuckets(daemons: ReadonlyArray<{ id: number; weight: number }>, buckets = FALLBACK_BUCKETS): number[] {
  return weightedBuckets(daemons, buckets).map((id) => (id < 0 ? REJECT_ID : id));
}
