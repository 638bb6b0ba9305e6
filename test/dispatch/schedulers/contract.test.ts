// What every scheduler promises the dispatcher, checked across all eight:
// -1 with nothing to pick, weight 0 never picked, shares that follow weights,
// input copied, and a pick that never throws whatever the hashes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Rng } from '../../../src/dispatch/rng.js';
import {
  LeastConnectionScheduler,
  MaglevScheduler,
  PowerOfTwoScheduler,
  RandomScheduler,
  RoundRobinScheduler,
  SCHEDULER_NAMES,
  SourceHashScheduler,
  WeightedLeastConnectionScheduler,
  WeightedRoundRobinScheduler,
  createScheduler,
} from '../../../src/dispatch/schedulers/index.js';
import type { SchedulerContext, SchedulerDaemon, SchedulerName } from '../../../src/dispatch/schedulers/index.js';

/** A dispatcher stand-in: a seeded random() and active counts the test moves. */
function fakeContext(seed: number): { ctx: SchedulerContext; active: Map<number, number> } {
  const rng = new Rng(seed);
  const active = new Map<number, number>();
  return { active, ctx: { activeFlows: (id) => active.get(id) ?? 0, random: () => rng.next() } };
}

const PICKS = 100_000;

describe('every scheduler', () => {
  it('createScheduler builds each name with that name', () => {
    const { ctx } = fakeContext(1);
    const classes = {
      rr: RoundRobinScheduler,
      wrr: WeightedRoundRobinScheduler,
      lc: LeastConnectionScheduler,
      wlc: WeightedLeastConnectionScheduler,
      random: RandomScheduler,
      p2c: PowerOfTwoScheduler,
      sh: SourceHashScheduler,
      maglev: MaglevScheduler,
    };
    for (const name of SCHEDULER_NAMES) {
      const scheduler = createScheduler(name, ctx);
      assert.equal(scheduler.name, name);
      assert.ok(scheduler instanceof classes[name], name);
    }
  });

  it('createScheduler rejects an unknown name with RangeError', () => {
    assert.throws(() => createScheduler('lblc' as SchedulerName, fakeContext(1).ctx), (e: unknown) => e instanceof RangeError && /lblc/.test(e.message));
  });

  it('createScheduler passes maglevTableSize on, and a non-prime throws', () => {
    const { ctx } = fakeContext(1);
    const small = createScheduler('maglev', ctx, { maglevTableSize: 251 });
    small.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 1 }]);
    // With 251 entries, hashes 251 apart read the same entry.
    for (let h = 0; h < 251; h++) assert.equal(small.pick(h, 0), small.pick(h + 251 * 1000, 0));
    assert.throws(() => createScheduler('maglev', ctx, { maglevTableSize: 1000 }), RangeError);
  });

  for (const name of SCHEDULER_NAMES) {
    describe(name, () => {
      it('returns -1 before setDaemons, with no daemons, and with every daemon quiesced', () => {
        const scheduler = createScheduler(name, fakeContext(2).ctx);
        assert.equal(scheduler.pick(123, 456), -1);
        scheduler.setDaemons([]);
        assert.equal(scheduler.pick(123, 456), -1);
        scheduler.setDaemons([{ id: 1, weight: 0 }, { id: 2, weight: 0 }, { id: 3, weight: 0 }]);
        for (let h = 0; h < 100; h++) assert.equal(scheduler.pick(h * 7919, h * 104729), -1);
        scheduler.setDaemons([{ id: 1, weight: 0 }, { id: 2, weight: 3 }]);
        assert.equal(scheduler.pick(123, 456), 2);
      });

      it('copies its input: changing the array afterwards changes nothing', () => {
        const scheduler = createScheduler(name, fakeContext(3).ctx);
        const daemons: SchedulerDaemon[] = [{ id: 1, weight: 1 }, { id: 2, weight: 1 }];
        scheduler.setDaemons(daemons);
        daemons[0] = { id: 99, weight: 5 };
        daemons.push({ id: 100, weight: 5 });
        const rng = new Rng(3);
        for (let k = 0; k < 1000; k++) {
          const id = scheduler.pick(rng.nextU32(), rng.nextU32());
          assert.ok(id === 1 || id === 2, `picked ${id}`);
        }
      });

      it('returns a daemon of weight > 0, or -1 when there is none, for any uint32 hashes and load (fast-check)', () => {
        const daemonSet = fc.uniqueArray(
          fc.record({ id: fc.integer({ min: 0, max: 0x7fffffff }), weight: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 0, max: 10000 })) }),
          { selector: (d) => d.id, maxLength: 12 },
        );
        const uint32 = fc.integer({ min: 0, max: 0xffffffff });
        fc.assert(
          fc.property(daemonSet, fc.array(fc.tuple(uint32, uint32, fc.nat(1000)), { minLength: 1, maxLength: 50 }), fc.integer(), (daemons, picks, seed) => {
            const { ctx, active } = fakeContext(seed);
            const scheduler = createScheduler(name, ctx, { maglevTableSize: 1009 });
            scheduler.setDaemons(daemons);
            const live = new Set(daemons.filter((d) => d.weight > 0).map((d) => d.id));
            for (const [flowHash, sourceHash, load] of picks) {
              const id = scheduler.pick(flowHash, sourceHash);
              if (live.size === 0) assert.equal(id, -1);
              else assert.ok(live.has(id), `picked ${id}`);
              if (id >= 0) active.set(id, load);
            }
          }),
          { numRuns: 100 },
        );
      });

      it('still returns a daemon of weight > 0 for out-of-contract hashes, random() and counts (fast-check)', () => {
        const junk = fc.oneof(fc.double(), fc.integer(), fc.constant(NaN), fc.constant(-1), fc.constant(2 ** 40));
        fc.assert(
          fc.property(fc.array(fc.tuple(junk, junk, junk, junk), { minLength: 1, maxLength: 20 }), (picks) => {
            let random = 0;
            let load = 0;
            const scheduler = createScheduler(name, { activeFlows: () => load, random: () => random }, { maglevTableSize: 1009 });
            scheduler.setDaemons([{ id: 4, weight: 1 }, { id: 5, weight: 0 }, { id: 6, weight: 7 }]);
            for (const [flowHash, sourceHash, r, l] of picks) {
              random = r;
              load = l;
              const id = scheduler.pick(flowHash, sourceHash);
              assert.ok(id === 4 || id === 6, `picked ${id}`);
            }
          }),
        );
      });
    });
  }
});

describe('shares over 100,000 picks, random hashes, each pick opening a flow that never ends', () => {
  const daemons = [
    { id: 10, weight: 1 },
    { id: 11, weight: 2 },
    { id: 12, weight: 3 },
    { id: 13, weight: 0 },
    { id: 14, weight: 4 },
  ];
  const total = 10;
  // rr and lc ignore weight magnitudes (as IPVS's do): equal shares among daemons of weight > 0.
  const equalShare = new Set<SchedulerName>(['rr', 'lc']);

  for (const name of SCHEDULER_NAMES) {
    const what = equalShare.has(name) ? 'an equal share for each daemon of weight > 0' : 'its weight share';
    it(`${name}: every daemon within ±1 percentage point of ${what}; weight 0 gets none`, () => {
      const { ctx, active } = fakeContext(42);
      const scheduler = createScheduler(name, ctx);
      scheduler.setDaemons(daemons);
      const hashes = new Rng(7);
      const counts = new Map<number, number>();
      for (let k = 0; k < PICKS; k++) {
        const id = scheduler.pick(hashes.nextU32(), hashes.nextU32());
        counts.set(id, (counts.get(id) ?? 0) + 1);
        active.set(id, (active.get(id) ?? 0) + 1);
      }
      assert.equal(counts.get(13), undefined, 'a quiesced daemon was picked');
      for (const { id, weight } of daemons) {
        if (weight === 0) continue;
        const expected = equalShare.has(name) ? 1 / 4 : weight / total;
        const share = (counts.get(id) ?? 0) / PICKS;
        assert.ok(Math.abs(share - expected) <= 0.01, `daemon ${id}: share ${share.toFixed(4)}, expected ${expected}`);
      }
    });
  }
});
