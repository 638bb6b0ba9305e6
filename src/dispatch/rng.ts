// Seeded pseudo-random numbers and 32-bit hash mixing for the dispatch layer.
// Simulations and tests repeat exactly from a seed; nothing here reads the
// clock or Math.random. Not for anything secret.

/**
 * xoshiro128** (Blackman and Vigna, 2018): 128 bits of state, period 2^128 - 1,
 * passes BigCrush. Calls allocate nothing: the state is four int32 fields.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `seed`: any number; only its low 32 bits count. */
  constructor(seed: number) {
    // splitmix32 spreads one 32-bit seed over the four state words, so nearby
    // seeds give unrelated streams; being a bijection of its counter, it cannot
    // produce the all-zero state (xoshiro's one fixed point).
    let x = seed | 0;
    const split = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      return z ^ (z >>> 15);
    };
    this.s0 = split();
    this.s1 = split();
    this.s2 = split();
    this.s3 = split();
  }

  /** Uniform integer in [0, 2^32). */
  nextU32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform number in [0, 1) with 32 random bits; never returns 1. */
  next(): number {
    return this.nextU32() / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** MurmurHash3's finaliser: a bijection on uint32 with full avalanche. Returns uint32. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * MurmurHash3_x86_32 of two 32-bit little-endian words `a`, `b` with `seed`.
 * Inputs are taken modulo 2^32; returns uint32. Used to derive stable,
 * independent per-daemon keys (maglev permutations, rendezvous scores).
 */
export function hashPair(a: number, b: number, seed: number): number {
  let h = murmurRound(seed | 0, a);
  h = murmurRound(h, b);
  return mix32(h ^ 8);
}

function murmurRound(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = rotl(k, 15);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = rotl(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
