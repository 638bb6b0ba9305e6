// Maglev: a lookup table of prime size filled from per-daemon permutations
// (Maglev paper §3.4), weighted as in Katran's MaglevHashV2. A flow hash maps
// to a daemon in one read, and a change of daemons moves few flows.

import assert from 'node:assert/strict';
import { hashPair } from '../rng.js';
import type { Scheduler, SchedulerDaemon } from './scheduler.js';

export const MAGLEV_DEFAULT_TABLE_SIZE = 65537;
/** 2^24 entries of 4 bytes: 64 MiB, well past the paper's 655373 for large pools. */
export const MAGLEV_MAX_TABLE_SIZE = 1 << 24;

// These seeds decide where every flow lands. Changing them moves every flow of
// every port, and two hostlb instances with different seeds disagree.
const OFFSET_SEED = 0x4d41474c;
const SKIP_SEED = 0x45565332;

/** The table of a port with no daemon of weight > 0: every hash reads -1. */
const NO_DAEMON = Int32Array.of(-1);

export class MaglevScheduler implements Scheduler {
  readonly name = 'maglev' as const;
  readonly tableSize: number;
  private table: Int32Array = NO_DAEMON;

  /** Throws RangeError unless `tableSize` is a prime no larger than MAGLEV_MAX_TABLE_SIZE. */
  constructor(tableSize: number = MAGLEV_DEFAULT_TABLE_SIZE) {
    if (!isPrime(tableSize) || tableSize > MAGLEV_MAX_TABLE_SIZE) {
      throw new RangeError(
        `maglev table size must be a prime no larger than ${MAGLEV_MAX_TABLE_SIZE} (65537 is the usual choice), got ${tableSize}`,
      );
    }
    this.tableSize = tableSize;
  }

  /**
   * Control path: allocates a new table. About O(tableSize · log tableSize),
   * more when weights are skewed (measured: 3 ms for 10 daemons, 35 ms for
   * 1000 daemons with one at weight 10000 and the rest near 50).
   */
  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    const live: SchedulerDaemon[] = [];
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight > 0) live.push({ id, weight });
    }
    // Daemons earlier in the fill order win contested slots. Sorting by id makes
    // the table depend on the set alone, not on the order the port lists it in,
    // so a daemon that leaves and comes back restores exactly the old table.
    live.sort((a, b) => a.id - b.id);
    this.table =
      live.length === 0
        ? NO_DAEMON
        : buildMaglevTable(
            Int32Array.from(live, (d) => d.id),
            Int32Array.from(live, (d) => d.weight),
            this.tableSize,
          );
  }

  /** table[flowHash mod size]. */
  pick(flowHash: number, _sourceHash: number): number {
    const table = this.table;
    return table[(flowHash >>> 0) % table.length];
  }
}

/**
 * Fills a table of `size` (prime) entries with `ids` (weights > 0, same
 * length, at least one). Each daemon walks its own permutation of the slots,
 * offset + k·skip mod size, taking the next free slot when its turn comes;
 * a daemon of weight w gets a turn in w of every max-weight rounds (Katran).
 */
export function buildMaglevTable(ids: Int32Array, weights: Int32Array, size: number): Int32Array {
  const n = ids.length;
  assert.ok(n > 0 && weights.length === n);
  const table = new Int32Array(size).fill(-1);
  const position = new Float64Array(n);
  const skip = new Float64Array(n);
  const credit = new Float64Array(n);
  let maxWeight = 0;
  for (let i = 0; i < n; i++) {
    // The paper hashes the daemon's name; the id is the stable key here.
    position[i] = hashPair(ids[i], 0, OFFSET_SEED) % size;
    skip[i] = (hashPair(ids[i], 0, SKIP_SEED) % (size - 1)) + 1;
    if (weights[i] > maxWeight) maxWeight = weights[i];
  }
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      credit[i] += weights[i];
      if (credit[i] < maxWeight) continue;
      credit[i] -= maxWeight;
      // size is prime and 0 < skip < size, so the walk visits every slot and ends at a free one.
      let p = position[i];
      while (table[p] >= 0) {
        p += skip[i];
        if (p >= size) p -= size;
      }
      table[p] = ids[i];
      p += skip[i];
      position[i] = p >= size ? p - size : p;
      if (++filled === size) return table;
    }
  }
}

/** True for a prime integer; trial division, fine up to 2^31 on the control path. */
export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
