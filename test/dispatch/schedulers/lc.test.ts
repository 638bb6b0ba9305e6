// Least connection: follows the active-flow counts the dispatcher reports,
// rotates among ties, and ignores weight magnitudes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LeastConnectionScheduler } from '../../../src/dispatch/schedulers/index.js';

function counted(active: Map<number, number>): LeastConnectionScheduler {
  return new LeastConnectionScheduler({ activeFlows: (id) => active.get(id) ?? 0, random: () => 0 });
}

describe('lc', () => {
  it('rotates among ties rather than always taking the first', () => {
    const active = new Map<number, number>();
    const lc = counted(active);
    lc.setDaemons([1, 2, 3, 4].map((id) => ({ id, weight: 1 })));
    // Counts never move here, so every pick is a four-way tie.
    assert.deepEqual(Array.from({ length: 8 }, () => lc.pick(0, 0)), [1, 2, 3, 4, 1, 2, 3, 4]);
  });

  it('keeps counts within 1 of each other when each pick opens a flow; weights 1..50 and 0 alike', () => {
    const active = new Map<number, number>();
    const lc = counted(active);
    const daemons = [{ id: 1, weight: 1 }, { id: 2, weight: 50 }, { id: 3, weight: 0 }, { id: 4, weight: 7 }, { id: 5, weight: 1 }];
    lc.setDaemons(daemons);
    for (let k = 0; k < 1000; k++) {
      const id = lc.pick(k, k);
      active.set(id, (active.get(id) ?? 0) + 1);
      const counts = [1, 2, 4, 5].map((d) => active.get(d) ?? 0);
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `counts ${counts} after ${k + 1} picks`);
    }
    assert.equal(active.get(3), undefined);
    assert.deepEqual([1, 2, 4, 5].map((d) => active.get(d)), [250, 250, 250, 250]);
  });

  it('always picks a daemon holding the fewest flows while flows open and end at random (fast-check)', () => {
    const op = fc.oneof(fc.constant({ kind: 'pick' as const }), fc.record({ kind: fc.constant('end' as const), at: fc.nat() }));
    fc.assert(
      fc.property(fc.array(fc.nat(3), { minLength: 1, maxLength: 8 }), fc.array(op, { maxLength: 200 }), (weights, ops) => {
        const active = new Map<number, number>();
        const lc = counted(active);
        const daemons = weights.map((weight, i) => ({ id: i, weight }));
        lc.setDaemons(daemons);
        const live = daemons.filter((d) => d.weight > 0).map((d) => d.id);
        for (const o of ops) {
          if (o.kind === 'end') {
            const busy = [...active].filter(([, n]) => n > 0);
            if (busy.length > 0) {
              const [id, n] = busy[o.at % busy.length];
              active.set(id, n - 1);
            }
            continue;
          }
          const id = lc.pick(0, 0);
          if (live.length === 0) {
            assert.equal(id, -1);
            continue;
          }
          const least = Math.min(...live.map((d) => active.get(d) ?? 0));
          assert.equal(active.get(id) ?? 0, least, `picked ${id}`);
          active.set(id, (active.get(id) ?? 0) + 1);
        }
      }),
    );
  });
});
