// Weighted least connection: minimises (active + 1) / weight, so counts stay
// in proportion to weight and idle daemons fill heaviest first.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { WeightedLeastConnectionScheduler } from '../../../src/dispatch/schedulers/index.js';

function counted(active: Map<number, number>): WeightedLeastConnectionScheduler {
  return new WeightedLeastConnectionScheduler({ activeFlows: (id) => active.get(id) ?? 0, random: () => 0 });
}

describe('wlc', () => {
  it('sends the first flow of an idle port to the heaviest daemon', () => {
    const wlc = counted(new Map());
    wlc.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 5 }, { id: 3, weight: 2 }]);
    assert.equal(wlc.pick(0, 0), 2);
  });

  it('rotates among ties rather than always taking the first', () => {
    const wlc = counted(new Map());
    wlc.setDaemons([1, 2, 3].map((id) => ({ id, weight: 4 })));
    assert.deepEqual(Array.from({ length: 6 }, () => wlc.pick(0, 0)), [1, 2, 3, 1, 2, 3]);
  });

  it('keeps counts within 1 of weight share at every pick, and exact after each multiple of the total weight', () => {
    const active = new Map<number, number>();
    const wlc = counted(active);
    const daemons = [{ id: 1, weight: 1 }, { id: 2, weight: 2 }, { id: 3, weight: 0 }, { id: 4, weight: 3 }, { id: 5, weight: 4 }];
    const total = 10;
    wlc.setDaemons(daemons);
    for (let k = 1; k <= 2000; k++) {
      const id = wlc.pick(k, k);
      active.set(id, (active.get(id) ?? 0) + 1);
      for (const { id: d, weight } of daemons) {
        const ideal = (k * weight) / total;
        const have = active.get(d) ?? 0;
        assert.ok(Math.abs(have - ideal) < 1, `daemon ${d}: ${have} flows after ${k} picks, ideal ${ideal}`);
        if (k % total === 0) assert.equal(have, ideal);
      }
    }
  });

  it('always picks a daemon with the least (active + 1) / weight while flows open and end at random (fast-check)', () => {
    const op = fc.oneof(fc.constant({ kind: 'pick' as const }), fc.record({ kind: fc.constant('end' as const), at: fc.nat() }));
    fc.assert(
      fc.property(fc.array(fc.nat(10), { minLength: 1, maxLength: 8 }), fc.array(op, { maxLength: 200 }), (weights, ops) => {
        const active = new Map<number, number>();
        const wlc = counted(active);
        const daemons = weights.map((weight, i) => ({ id: i, weight }));
        wlc.setDaemons(daemons);
        const live = daemons.filter((d) => d.weight > 0);
        const load = (id: number, weight: number): number => ((active.get(id) ?? 0) + 1) / weight;
        for (const o of ops) {
          if (o.kind === 'end') {
            const busy = [...active].filter(([, n]) => n > 0);
            if (busy.length > 0) {
              const [id, n] = busy[o.at % busy.length];
              active.set(id, n - 1);
            }
            continue;
          }
          const id = wlc.pick(0, 0);
          if (live.length === 0) {
            assert.equal(id, -1);
            continue;
          }
          const least = Math.min(...live.map((d) => load(d.id, d.weight)));
          const chosen = live.find((d) => d.id === id);
          assert.ok(chosen !== undefined && load(chosen.id, chosen.weight) === least, `picked ${id}`);
          active.set(id, (active.get(id) ?? 0) + 1);
        }
      }),
    );
  });
});
