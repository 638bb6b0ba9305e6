// Flow keys as numbers. A key is a handful of 32-bit words filled from header
// fields into a caller-owned Uint32Array; its hash is a 32-bit number. Nothing
// here allocates, so the packet path can hash every packet.

/** Words in a flow key: two 128-bit addresses, a port pair, protocol and family. */
export const FLOW_KEY_WORDS = 10;
export const KEY_ADDR_A = 0;
export const KEY_ADDR_B = 4;
export const KEY_PORTS = 8;
export const KEY_PROTO_FAMILY = 9;

/** Returns a fresh key buffer; allocate once per dispatcher, not per packet. */
export function createFlowKey(): Uint32Array {
  return new Uint32Array(FLOW_KEY_WORDS);
}

/** murmur3's finaliser: spreads every input bit over the whole word. */
export function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit hash of the first `words` words of `key`, seeded so that peers cannot aim collisions without the seed. */
export function hashWords(key: Uint32Array, words: number, seed: number): number {
  let h = seed | 0;
  for (let i = 0; i < words; i++) {
    h = Math.imul(h ^ key[i], 0x9e3779b1);
    h = (h << 13) | (h >>> 19);
  }
  return mix32(h ^ words);
}

/** Hash of a flow key (all FLOW_KEY_WORDS words). */
export function hashFlowKey(key: Uint32Array, seed: number): number {
  return hashWords(key, FLOW_KEY_WORDS, seed);
}

/**
 * Seeds hashAddress() of the client address the sh and maglev schedulers pick
 * by (Balancer.choose's sourceHash): inbound.ts and the netfilter plane both use it.
 */
export const SOURCE_HASH_SEED = 0x5bd1e995;

/** Hash of a client address alone (for source hashing), given its four words. */
export function hashAddress(key: Uint32Array, at: number, seed: number): number {
  let h = seed | 0;
  for (let i = at; i < at + 4; i++) {
    h = Math.imul(h ^ key[i], 0x9e3779b1);
    h = (h << 13) | (h >>> 19);
  }
  return mix32(h);
}

/**
 * hashFlowKey of an IPv4 key given as numbers — [src, 0, 0, 0, dst, 0, 0, 0,
 * ports, protoFamily] — without filling a key array: the packet path's common
 * case. Returns the same value as int32 (`| 0`), so it stays a small integer
 * across calls instead of a boxed number above 2^31.
 */
export function hashV4Key(src: number, dst: number, ports: number, protoFamily: number, seed: number): number {
  let h = Math.imul(seed ^ src, 0x9e3779b1);
  h = (h << 13) | (h >>> 19);
  for (let i = 0; i < 3; i++) {
    h = Math.imul(h, 0x9e3779b1);
    h = (h << 13) | (h >>> 19);
  }
  h = Math.imul(h ^ dst, 0x9e3779b1);
  h = (h << 13) | (h >>> 19);
  for (let i = 0; i < 3; i++) {
    h = Math.imul(h, 0x9e3779b1);
    h = (h << 13) | (h >>> 19);
  }
  h = Math.imul(h ^ ports, 0x9e3779b1);
  h = (h << 13) | (h >>> 19);
  h = Math.imul(h ^ protoFamily, 0x9e3779b1);
  h = (h << 13) | (h >>> 19);
  h ^= FLOW_KEY_WORDS;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
