// The seeded generator and hash mixing the schedulers stand on: streams that
// repeat from a seed, values in range, MurmurHash3 as published.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, hashPair, mix32 } from '../../../src/dispatch/rng.js';

describe('Rng', () => {
  it('repeats from a seed, and different seeds give different streams', () => {
    const stream = (seed: number): number[] => {
      const rng = new Rng(seed);
      return Array.from({ length: 20 }, () => rng.nextU32());
    };
    assert.deepEqual(stream(1), stream(1));
    assert.notDeepEqual(stream(1), stream(2));
    // Pinned: simulations replay from seeds, so changing the stream is a breaking change.
    assert.deepEqual(stream(1).slice(0, 4), PINNED_SEED_1);
  });

  it('next() is in [0, 1) and nextU32() an integer in [0, 2^32)', () => {
    const rng = new Rng(99);
    for (let k = 0; k < 100_000; k++) {
      const u = rng.nextU32();
      assert.ok(Number.isInteger(u) && u >= 0 && u <= 0xffffffff);
      const x = rng.next();
      assert.ok(x >= 0 && x < 1);
    }
  });

  it('fills 16 bins evenly: chi-square below 40 (15 degrees of freedom, p ≈ 0.0005) over 160,000 draws', () => {
    const rng = new Rng(12345);
    const bins = new Array<number>(16).fill(0);
    const draws = 160_000;
    for (let k = 0; k < draws; k++) bins[Math.floor(rng.next() * 16)]++;
    const expected = draws / 16;
    const chi2 = bins.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
    assert.ok(chi2 < 40, `chi-square ${chi2}`);
  });
});

describe('hashes', () => {
  it('hashPair is MurmurHash3_x86_32 of the two words, little-endian', () => {
    // Values from a reference implementation of MurmurHash3_x86_32.
    assert.equal(hashPair(1, 2, 7), 1958221757);
    assert.equal(hashPair(-1, 65536, 0xdeadbeef), 1851760474);
  });

  it('mix32 is a bijection (no collisions over 200,000 inputs) returning uint32', () => {
    const seen = new Set<number>();
    for (let x = 0; x < 200_000; x++) {
      const h = mix32(x);
      assert.ok(h >= 0 && h <= 0xffffffff);
      seen.add(h);
    }
    assert.equal(seen.size, 200_000);
  });
});

// Cross-checked against an independent implementation of splitmix32 seeding and xoshiro128**.
const PINNED_SEED_1 = [393288148, 2174103013, 3814759091, 2092745082];
