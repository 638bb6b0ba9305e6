// weightedSequence: the order the socket plane's rr and wrr ports take turns
// in — wrr's smooth order over one period, scaled to at most `max` picks.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { weightedSequence } from '../../../src/dispatch/schedulers/weighted-buckets.js';

function tally(sequence: number[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const id of sequence) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

test('weightedSequence: equal weights take turns in port order; 0 is out; none left is empty', () => {
  assert.deepEqual(weightedSequence([{ id: 4, weight: 1 }, { id: 2, weight: 1 }, { id: 9, weight: 1 }], 256), [4, 2, 9]);
  assert.deepEqual(weightedSequence([{ id: 0, weight: 100 }, { id: 1, weight: 0 }, { id: 2, weight: 100 }], 256), [0, 2]);
  assert.deepEqual(weightedSequence([{ id: 0, weight: 0 }], 256), []);
  assert.deepEqual(weightedSequence([], 256), []);
});

test('weightedSequence: weights within the length give wrr\'s smooth period exactly', () => {
  // nginx's example: 5, 1, 1 → a a b a c a a.
  assert.deepEqual(weightedSequence([{ id: 0, weight: 5 }, { id: 1, weight: 1 }, { id: 2, weight: 1 }], 256), [0, 0, 1, 0, 2, 0, 0]);
  // The health layer's hundredths reduce by their gcd: 200, 100, 100 is 2, 1, 1.
  assert.deepEqual(weightedSequence([{ id: 0, weight: 200 }, { id: 1, weight: 100 }, { id: 2, weight: 100 }], 256), [0, 1, 2, 0]);
});

test('weightedSequence: a longer period is scaled to the length, every daemon keeps a turn, and heavier never gets fewer', () => {
  const s = weightedSequence([{ id: 0, weight: 100 }, { id: 1, weight: 93 }, { id: 2, weight: 100 }], 256);
  assert.equal(s.length, 256);
  const counts = tally(s);
  // Ideal 87.4, 81.3, 87.4: the one turn left over goes to the first of the two equal remainders.
  assert.deepEqual([0, 1, 2].map((id) => counts.get(id)), [88, 81, 87]);
  const skewed = tally(weightedSequence([{ id: 0, weight: 10000 }, { id: 1, weight: 1 }], 256));
  assert.deepEqual([skewed.get(0), skewed.get(1)], [255, 1]);

  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 10000 }), { minLength: 1, maxLength: 40 }), fc.integer({ min: 41, max: 256 }), (weights, max) => {
    const daemons = weights.map((weight, id) => ({ id, weight }));
    const s = weightedSequence(daemons, max);
    const live = daemons.filter((d) => d.weight > 0);
    assert.ok(s.length <= max, `${s.length} turns, at most ${max}`);
    const counts = tally(s);
    assert.deepEqual([...counts.keys()].sort((a, b) => a - b), live.map((d) => d.id), 'every daemon of weight > 0 has a turn, no other');
    for (const a of live) for (const b of live) if (a.weight > b.weight) assert.ok(counts.get(a.id)! >= counts.get(b.id)!, `weight ${a.weight} has no fewer turns than ${b.weight}`);
    // Spread, not in runs: between two turns of a daemon, no more than its fair gap and one.
    const total = live.reduce((sum, d) => sum + d.weight, 0);
    if (s.length === max) for (const d of live) assert.ok(Math.abs(counts.get(d.id)! - (max * d.weight) / total) <= live.length + 1, `daemon ${d.id}: ${counts.get(d.id)} of ${max} for weight ${d.weight} of ${total}`);
  }));
});
