// The fragment table: later fragments of a datagram carry no ports, so they
// follow their first fragment. When a first fragment is translated, its
// (source, destination, protocol, identification) is remembered with the
// flow's record for a short while (Linux keeps fragments 30 s,
// net.ipv4.ipfrag_time); later fragments with the same four get the same
// address rewrite. Bounded: a fixed number of entries, each probe run at most
// PROBE long, the oldest entry of a full run overwritten — a flood of
// fragments can neither grow memory nor slow lookups.

import { mix32 } from './flow-hash.js';

/** Words of a fragment key: source (4), destination (4), identification, protocol << 8 | family. */
export const FRAG_KEY_WORDS = 10;
const PROBE = 8;

export class FragmentTable {
  private readonly keys: Uint32Array;
  /** Record id * 2 + (1 when the datagram goes daemon → client), or -1 for a free entry. */
  private readonly values: Int32Array;
  private readonly expires: Float64Array;
  /** When the record was created: record ids are reused at once, this tells a new flow from the old. */
  private readonly created: Float64Array;
  private readonly mask: number;
  /** Entries overwritten while still live (a full probe run). */
  overwritten = 0;

  constructor(capacity = 4096, private readonly timeoutMs = 30_000) {
    let size = 8;
    while (size < capacity) size *= 2;
    this.mask = size - 1;
    this.keys = new Uint32Array(size * FRAG_KEY_WORDS);
    this.values = new Int32Array(size).fill(-1);
    this.expires = new Float64Array(size);
    this.created = new Float64Array(size);
  }

  private hash(key: Uint32Array): number {
    let h = 0x3c6ef372;
    for (let i = 0; i < FRAG_KEY_WORDS; i++) h = Math.imul(h ^ key[i], 0x9e3779b1) ^ (h >>> 15);
    return mix32(h);
  }

  private matches(slot: number, key: Uint32Array): boolean {
    const at = slot * FRAG_KEY_WORDS;
    for (let i = 0; i < FRAG_KEY_WORDS; i++) if (this.keys[at + i] !== key[i]) return false;
    return true;
  }

  /**
   * Remembers that the datagram `key` belongs to record `recordId` (created
   * at `recordCreated`, direction `outbound`) until now + timeout.
   */
  remember(key: Uint32Array, recordId: number, outbound: boolean, now: number, recordCreated = 0): void {
    const start = this.hash(key) & this.mask;
    let target = -1;
    let oldest = -1;
    for (let n = 0; n < PROBE; n++) {
      const slot = (start + n) & this.mask;
      if (this.values[slot] < 0 || this.expires[slot] <= now || this.matches(slot, key)) {
        target = slot; // free, expired, or this very datagram
        break;
      }
      if (oldest === -1 || this.expires[slot] < this.expires[oldest]) oldest = slot;
    }
    if (target === -1) {
      target = oldest;
      this.overwritten++;
    }
    for (let i = 0; i < FRAG_KEY_WORDS; i++) this.keys[target * FRAG_KEY_WORDS + i] = key[i];
    this.values[target] = recordId * 2 + (outbound ? 1 : 0);
    this.expires[target] = now + this.timeoutMs;
    this.created[target] = recordCreated;
  }

  /**
   * Record id * 2 + direction for datagram `key`, or -1. With `createdOf`, an
   * entry whose record has since been reused by another flow (another
   * creation time) is not returned.
   */
  find(key: Uint32Array, now: number, createdOf?: (recordId: number) => number): number {
    const start = this.hash(key) & this.mask;
    for (let n = 0; n < PROBE; n++) {
      const slot = (start + n) & this.mask;
      if (this.values[slot] >= 0 && this.expires[slot] > now && this.matches(slot, key)) {
        if (createdOf && createdOf(this.values[slot] >> 1) !== this.created[slot]) return -1;
        return this.values[slot];
      }
    }
    return -1;
  }
}
