// Maglev: prime table sizes, entries in proportion to weight, and about 1/N
// of the table moving when one of N daemons leaves or joins.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAGLEV_DEFAULT_TABLE_SIZE, MaglevScheduler, buildMaglevTable, isPrime } from '../../../src/dispatch/schedulers/index.js';
import type { SchedulerDaemon } from '../../../src/dispatch/schedulers/index.js';

const M = MAGLEV_DEFAULT_TABLE_SIZE;

/** Every entry's daemon: flow hashes 0..M-1 cover the table once. */
function table(daemons: readonly SchedulerDaemon[]): Int32Array {
  const maglev = new MaglevScheduler();
  maglev.setDaemons(daemons);
  return Int32Array.from({ length: M }, (_, h) => maglev.pick(h, 0));
}

function equalDaemons(n: number): SchedulerDaemon[] {
  return Array.from({ length: n }, (_, i) => ({ id: 100 + i * 3, weight: 1 }));
}

function count(t: Int32Array, id: number): number {
  let c = 0;
  for (const d of t) if (d === id) c++;
  return c;
}

describe('maglev', () => {
  it('accepts prime table sizes and throws RangeError naming any other', () => {
    for (const size of [2, 3, 251, 65537]) assert.equal(new MaglevScheduler(size).tableSize, size);
    const tooBig = 16777259;
    assert.ok(isPrime(tooBig));
    for (const size of [65536, 65535, 1, 0, -7, 2.5, NaN, Infinity, tooBig]) {
      assert.throws(
        () => new MaglevScheduler(size),
        (e: unknown) => e instanceof RangeError && e.message.includes(String(size)),
        `size ${size}`,
      );
    }
  });

  it('isPrime agrees with a sieve below 10,000', () => {
    const composite = new Uint8Array(10000);
    for (let i = 2; i < 10000; i++) if (!composite[i]) for (let j = i * i; j < 10000; j += i) composite[j] = 1;
    for (let i = 0; i < 10000; i++) assert.equal(isPrime(i), i >= 2 && !composite[i], String(i));
  });

  it('reads table[flowHash mod size]', () => {
    const maglev = new MaglevScheduler(251);
    maglev.setDaemons(equalDaemons(5));
    for (let h = 0; h < 251; h++) {
      assert.equal(maglev.pick(h + 251 * 17, 999), maglev.pick(h, 0));
      assert.equal(maglev.pick(0xffffffff - 251 + 1 + h, 0), maglev.pick((0xffffffff - 251 + 1 + h) % 251, 0));
    }
  });

  it('gives equal weights floor or ceil of size/N entries each (N = 10)', () => {
    const set = equalDaemons(10);
    const t = table(set);
    for (const { id } of set) {
      const c = count(t, id);
      assert.ok(c === Math.floor(M / 10) || c === Math.ceil(M / 10), `daemon ${id}: ${c}`);
    }
  });

  it('gives weights 2:1 2/3 and 1/3 of the entries (±0.5 percentage point), weights 1:2:3:4 likewise', () => {
    const two = table([{ id: 1, weight: 2 }, { id: 2, weight: 1 }]);
    assert.ok(Math.abs(count(two, 1) / M - 2 / 3) <= 0.005, `weight 2 share ${count(two, 1) / M}`);
    assert.ok(Math.abs(count(two, 2) / M - 1 / 3) <= 0.005, `weight 1 share ${count(two, 2) / M}`);
    const four = table([1, 2, 3, 4].map((weight) => ({ id: weight * 11, weight })));
    for (const weight of [1, 2, 3, 4]) assert.ok(Math.abs(count(four, weight * 11) / M - weight / 10) <= 0.005, `weight ${weight}`);
  });

  for (const n of [5, 10]) {
    it(`removing any one of ${n} daemons moves at most 1/${n} + 1 percentage point of entries, and keeps ≥ 98% of the others' entries`, () => {
      const set = equalDaemons(n);
      const before = table(set);
      for (const gone of set) {
        const after = table(set.filter((d) => d !== gone));
        let moved = 0;
        let others = 0;
        let othersKept = 0;
        for (let h = 0; h < M; h++) {
          if (after[h] !== before[h]) moved++;
          if (before[h] !== gone.id) {
            others++;
            if (after[h] === before[h]) othersKept++;
          }
          assert.notEqual(after[h], gone.id);
        }
        assert.ok(moved / M <= 1 / n + 0.01, `removing ${gone.id} moved ${moved / M}`);
        assert.ok(othersKept / others >= 0.98, `removing ${gone.id} kept only ${othersKept / others} of the others`);
      }
    });

    it(`adding a daemon to ${n} moves at most 1/${n + 1} + 1 percentage point; removing it again restores every entry`, () => {
      const set = equalDaemons(n);
      const before = table(set);
      // Listed first, to show the port's order does not matter.
      const grown = table([{ id: 7, weight: 1 }, ...set]);
      let moved = 0;
      for (let h = 0; h < M; h++) if (grown[h] !== before[h]) moved++;
      assert.ok(moved / M <= 1 / (n + 1) + 0.01, `adding moved ${moved / M}`);
      assert.deepEqual(table(set), before);
    });
  }

  it('treats a quiesced daemon as removed, and restores the table when its weight returns', () => {
    const set = equalDaemons(6);
    const before = table(set);
    const quiesced = table(set.map((d, i) => (i === 2 ? { ...d, weight: 0 } : d)));
    assert.deepEqual(quiesced, table(set.filter((_, i) => i !== 2)));
    assert.deepEqual(table([...set].reverse()), before);
  });

  it('fills every entry of a small table, even with more daemons than entries', () => {
    const ids = Int32Array.from({ length: 20 }, (_, i) => i);
    const t = buildMaglevTable(ids, new Int32Array(20).fill(1), 7);
    assert.equal(t.length, 7);
    for (const d of t) assert.ok(d >= 0 && d < 20);
  });
});
