// Weighted random: the alias table gives each daemon exactly weight/total of
// [0, 1), and the scheduler draws from ctx.random() alone.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Rng } from '../../../src/dispatch/rng.js';
import { AliasTable, RandomScheduler } from '../../../src/dispatch/schedulers/index.js';

describe('AliasTable', () => {
  it('gives each daemon exactly weight/total of [0, 1) (fast-check, midpoint grid)', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(40), { minLength: 1, maxLength: 10 }), (weights) => {
        const table = new AliasTable();
        table.build(weights.map((weight, i) => ({ id: 100 + i, weight })));
        const n = table.ids.length;
        const total = weights.reduce((a, b) => a + b, 0);
        if (n === 0) return;
        // r at the midpoints of n·total equal cells: each cell is one unit of one column.
        const counts = new Array<number>(n).fill(0);
        const cells = n * total;
        for (let k = 0; k < cells; k++) counts[table.sample((k + 0.5) / cells)]++;
        for (let i = 0; i < n; i++) assert.equal(counts[i], table.weights[i] * n, `column ${i}`);
      }),
    );
  });

  it('keeps only daemons of weight > 0, in port order', () => {
    const table = new AliasTable();
    table.build([{ id: 5, weight: 2 }, { id: 6, weight: 0 }, { id: 7, weight: 1 }]);
    assert.deepEqual([...table.ids], [5, 7]);
    assert.deepEqual([...table.weights], [2, 1]);
  });
});

describe('random', () => {
  it('repeats exactly from the same seed', () => {
    const run = (seed: number): number[] => {
      const rng = new Rng(seed);
      const scheduler = new RandomScheduler({ activeFlows: () => 0, random: () => rng.next() });
      scheduler.setDaemons([1, 2, 3, 4, 5].map((id) => ({ id, weight: id })));
      return Array.from({ length: 50 }, () => scheduler.pick(0, 0));
    };
    assert.deepEqual(run(9), run(9));
    assert.notDeepEqual(run(9), run(10));
  });

  it('gives weights 1 and 9999 shares within ±0.1 percentage point over 1,000,000 picks', () => {
    const rng = new Rng(5);
    const scheduler = new RandomScheduler({ activeFlows: () => 0, random: () => rng.next() });
    scheduler.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 9999 }]);
    let light = 0;
    const picks = 1_000_000;
    for (let k = 0; k < picks; k++) if (scheduler.pick(0, 0) === 1) light++;
    assert.ok(Math.abs(light / picks - 0.0001) <= 0.001, `light share ${light / picks}`);
    assert.ok(light > 0, 'weight 1 never drawn');
  });
});
