// Smooth weighted round robin: nginx's exact sequences, from both the
// precomputed period and the live loop used when the period is too long.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { WeightedRoundRobinScheduler } from '../../../src/dispatch/schedulers/index.js';
import type { SchedulerDaemon } from '../../../src/dispatch/schedulers/index.js';

/** nginx's ngx_http_upstream_get_peer, written plainly as the reference. */
function nginxSequence(daemons: readonly SchedulerDaemon[], count: number): number[] {
  const live = daemons.filter((d) => d.weight > 0);
  const total = live.reduce((sum, d) => sum + d.weight, 0);
  const current = live.map(() => 0);
  const out: number[] = [];
  for (let k = 0; k < count; k++) {
    if (live.length === 0) {
      out.push(-1);
      continue;
    }
    let best = -1;
    for (let i = 0; i < live.length; i++) {
      current[i] += live[i].weight;
      if (best < 0 || current[i] > current[best]) best = i;
    }
    current[best] -= total;
    out.push(live[best].id);
  }
  return out;
}

function picks(wrr: WeightedRoundRobinScheduler, count: number): number[] {
  return Array.from({ length: count }, (_, k) => wrr.pick(k, k));
}

const A = 1;
const B = 2;
const C = 3;

describe('wrr', () => {
  it("weights 5,1,1 give nginx's a a b a c a a, period after period", () => {
    const wrr = new WeightedRoundRobinScheduler();
    wrr.setDaemons([{ id: A, weight: 5 }, { id: B, weight: 1 }, { id: C, weight: 1 }]);
    assert.deepEqual(picks(wrr, 14), [A, A, B, A, C, A, A, A, A, B, A, C, A, A]);
  });

  it('skips weight 0: weights 2,0,1 give a c a', () => {
    const wrr = new WeightedRoundRobinScheduler();
    wrr.setDaemons([{ id: A, weight: 2 }, { id: B, weight: 0 }, { id: C, weight: 1 }]);
    assert.deepEqual(picks(wrr, 6), [A, C, A, A, C, A]);
  });

  it('a common factor changes nothing: weights 10,10 alternate', () => {
    const wrr = new WeightedRoundRobinScheduler();
    wrr.setDaemons([{ id: A, weight: 10 }, { id: B, weight: 10 }]);
    assert.deepEqual(picks(wrr, 4), [A, B, A, B]);
  });

  it('a new daemon set starts a new period', () => {
    const wrr = new WeightedRoundRobinScheduler();
    const daemons = [{ id: A, weight: 5 }, { id: B, weight: 1 }, { id: C, weight: 1 }];
    wrr.setDaemons(daemons);
    picks(wrr, 3);
    wrr.setDaemons(daemons);
    assert.deepEqual(picks(wrr, 7), [A, A, B, A, C, A, A]);
  });

  it('matches the nginx reference for three periods of any small weights (fast-check)', () => {
    const daemons = fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 8 }).map((ws) => ws.map((weight, i) => ({ id: i + 1, weight })));
    fc.assert(
      fc.property(daemons, (set) => {
        const wrr = new WeightedRoundRobinScheduler();
        wrr.setDaemons(set);
        const period = Math.max(1, set.reduce((sum, d) => sum + d.weight, 0));
        assert.deepEqual(picks(wrr, 3 * period), nginxSequence(set, 3 * period));
      }),
    );
  });

  it('matches the nginx reference and gives exact counts when the period is too long to precompute', () => {
    // Coprime weights summing past 65536: pick() runs the live loop.
    const weights = [9973, 9967, 9949, 9941, 9931, 9929, 9923];
    const set = weights.map((weight, i) => ({ id: i + 1, weight }));
    const period = weights.reduce((a, b) => a + b, 0);
    assert.ok(period > 65536);
    const wrr = new WeightedRoundRobinScheduler();
    wrr.setDaemons(set);
    const got = picks(wrr, period + 1000);
    assert.deepEqual(got, nginxSequence(set, period + 1000));
    const counts = new Map<number, number>();
    for (const id of got.slice(0, period)) counts.set(id, (counts.get(id) ?? 0) + 1);
    for (const { id, weight } of set) assert.equal(counts.get(id), weight);
  });
});
