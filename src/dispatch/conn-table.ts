// The connection record table (seed Figure 10): a fixed number of records,
// preallocated, reached through two open-addressing indexes — forward (the
// client's tuple, for inbound packets) and reverse (the daemon's tuple, for
// replies). It stores and finds records; what a state means, and when a record
// should go, is decided by the dispatcher and the TCP state machine.

import assert from 'node:assert/strict';
import { FLOW_KEY_WORDS, hashFlowKey } from './flow-hash.js';

/*
 * One record is REC_WORDS 32-bit words in a single ArrayBuffer, read through a
 * Uint32Array and a Float64Array over the same memory. Every field a packet
 * reads or writes sits in the first 28 words (112 bytes: two or three cache
 * lines), and fields only insert, remove and the eviction lists use live in a
 * separate array (B_* words of `book`). bench:core, 1M flows, with prefetch():
 * 160-byte records with counters at the far end ~2.0 Mpps established, this
 * layout ~2.3. (Page-aligning the buffer so no record straddles a third line
 * measured no better, so it is not done.)
 */
export const REC_WORDS = 32;
export const R_CLIENT_ADDR = 0; // 4 words (IPv4: word 0, others 0)
export const R_CLUSTER_ADDR = 4; // 4 words
export const R_DAEMON_ADDR = 8; // 4 words
export const R_PORTS = 12; // clientPort << 16 | clusterPort
export const R_META = 13; // daemonPort << 16 | protocol << 8 | family
export const R_STATE = 14; // state (low byte) | flags << 8
export const R_DAEMON_ID = 15;
/** Doubles per record in the Float64Array view: record `id`'s RF_* fields start at `id * REC_F64`. */
export const REC_F64 = REC_WORDS / 2;
// Float64 fields in words 16-29, as indexes into the Float64Array (word index / 2).
export const RF_EXPIRES = 8; // ms on the caller's clock
export const RF_LAST_SEEN = 9;
export const RF_PACKETS_IN = 10;
export const RF_BYTES_IN = 11;
export const RF_PACKETS_OUT = 12;
export const RF_BYTES_OUT = 13;
export const RF_CREATED = 14;
// 32-bit words again, after the Float64 fields.
export const R_PORT_ID = 30;
/**
 * The daemon's latest acknowledgment number (what it expects next from the
 * client): a RST from the client side must fall in the window it opens
 * (inbound.ts). Written per outbound segment; it shares its line with the
 * counters every packet writes anyway.
 */
export const R_ACK_OUT = 31;
// Words prefetch() touches to pull in the lines a packet uses: one a line (16
// words) apart, and the last one a packet touches: a record need not start on a
// line, and touching word 27 instead of 31 left a third line to a miss (bench:core
// fell from ~5.0 to ~4.0 Mpps when the fast path began writing R_ACK_OUT).
const REC_HOT_LINE_1 = 16;
const REC_HOT_END = R_ACK_OUT; // the last word a packet touches (an outbound segment writes it)

/*
 * prefetch()'s scratch between its two passes: candidate record id + 1 per
 * lookup. Module-level, not a field: V8 compiles the passes tighter against a
 * constant array (bench:core, 1M flows: ~195-206 ns/packet against ~205-217
 * with a field or a caller's array; noisy). Holds nothing between calls, so
 * tables may share it.
 */
const PREFETCH_BLOCK = 512;
const PREFETCH_IDS = new Int32Array(PREFETCH_BLOCK);

/* Bookkeeping words per record, in `book`: never read for an established packet. */
export const B_WORDS = 6;
export const B_FWD_HASH = 0;
export const B_REV_HASH = 1;
export const B_LIST_PREV = 2; // eviction list links (record id + 1; 0 = none)
export const B_LIST_NEXT = 3;
export const B_LIST = 4; // which eviction list the record is on
export const B_SEQ_OUT = 5; // free

/** Eviction lists: which records a full table may give up to admit a new flow. */
export const LIST_NONE = 0;
/** Never confirmed by the daemon (a SYN with no established connection, a UDP flow with no reply). */
export const LIST_UNCONFIRMED = 1;
/** Already ended (TIME_WAIT, CLOSE): waiting only for their timeout. */
export const LIST_CLOSED = 2;

/** Why a record left the table, passed to the removal listener. */
export const RemoveReason = { Expired: 0, Evicted: 1, Ended: 2, Flushed: 3 } as const;
export type RemoveReason = (typeof RemoveReason)[keyof typeof RemoveReason];

/** Outcomes of insert() other than a record id. */
export const INSERT_FULL = -1;
export const INSERT_REVERSE_TAKEN = -2;

/** Which index a prefetch() entry goes to. */
export const LOOKUP_NONE = 0;
export const LOOKUP_FORWARD = 1;
export const LOOKUP_REVERSE = 2;

export interface ConnTableListener {
  /** Called once per removed record, before its slot is reused; fields are still readable. */
  recordRemoved(id: number, reason: RemoveReason): void;
}

const EMPTY_LISTENER: ConnTableListener = { recordRemoved() {} };

function plainBuffer(bytes: number): ArrayBuffer {
  return new ArrayBuffer(bytes);
}

export class ConnTable {
  readonly capacity: number;
  /** Record fields as 32-bit words: record `id` starts at `id * REC_WORDS`. */
  readonly u32: Uint32Array;
  /** Record fields as doubles: record `id` starts at `id * REC_F64`. */
  readonly f64: Float64Array;
  /** Bookkeeping words (B_*): record `id` starts at `id * B_WORDS`. */
  readonly book: Uint32Array;
  size = 0;
  /** Records given up to admit new flows since start. */
  evictions = 0;

  // Each index slot is two Int32 words: the key hash and record id + 1 (0 = empty).
  // Both indexes live in one buffer, forward first, reverse from word
  // `revBase`, so prefetch() reaches either through one array (see there).
  private readonly indexes: Int32Array;
  private readonly revBase: number;
  private readonly fwd: Int32Array;
  private readonly rev: Int32Array;
  private readonly mask: number;
  readonly seed: number;
  private readonly free: Int32Array;
  private freeTop: number;
  private readonly inUse: Uint8Array;
  private readonly listHead = new Int32Array(3);
  private readonly listTail = new Int32Array(3);
  private readonly revKey = new Uint32Array(FLOW_KEY_WORDS);
  private collectCursor = 0;
  private listener: ConnTableListener = EMPTY_LISTENER;
  private prefetchSink = 0;

  /**
   * Allocates everything up front: about ((REC_WORDS + B_WORDS) * 4 + 33)
   * bytes per record, so 1,048,576 records take about 190 MB. Throws a RangeError for a
   * capacity outside 1..2^26. `allocate` makes the large zeroed buffers
   * (records and indexes); the control layer passes one that asks for huge
   * pages, since every packet touches them at random.
   */
  constructor(capacity: number, seed = 0x6c62272e, allocate: (bytes: number) => ArrayBuffer = plainBuffer) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 26) {
      throw new RangeError(`table capacity must be an integer in 1..${1 << 26}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.seed = seed;
    const buffer = allocate(capacity * REC_WORDS * 4);
    this.u32 = new Uint32Array(buffer, 0, capacity * REC_WORDS);
    this.f64 = new Float64Array(buffer, 0, capacity * REC_F64);
    this.book = new Uint32Array(capacity * B_WORDS);
    // Load factor at most 1/2 keeps linear-probe chains short even when full.
    let slots = 2;
    while (slots < capacity * 2) slots *= 2;
    this.mask = slots - 1;
    const indexBuffer = allocate(slots * 16);
    this.indexes = new Int32Array(indexBuffer);
    this.revBase = slots * 2;
    this.fwd = new Int32Array(indexBuffer, 0, slots * 2);
    this.rev = new Int32Array(indexBuffer, slots * 8, slots * 2);
    this.free = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.free[i] = capacity - 1 - i;
    this.freeTop = capacity;
    this.inUse = new Uint8Array(capacity);
  }

  setListener(listener: ConnTableListener): void {
    this.listener = listener;
  }

  /** Hash of a forward key (the one findForward and insert use). */
  hashKey(key: Uint32Array): number {
    return hashFlowKey(key, this.seed);
  }

  /**
   * Brings into cache what `count` lookups will touch: `lookups[i]` says
   * which index hash `hashes[i]` goes to (LOOKUP_*). Finds nothing and
   * changes nothing; a later find*() still decides.
   *
   * Why: with a million records every lookup misses cache twice (index slot,
   * then record). JavaScript has no prefetch instruction, so these are plain
   * loads, and a load that misses holds up retirement: misses overlap only as
   * far as the CPU's reorder window reaches, so each loop must be as short as
   * possible (the DPDK/VPP batch pattern). Pass 1 loads every index slot and
   * notes the candidate record; pass 2, reading only that scratch, loads the
   * records. bench:core, 1M flows, established ns/packet (CPU time, best of
   * 4, A/B alternated): no prefetch ~450; index and record passes each with a
   * probe loop ~250-260; one fused loop without the probe loop ~210; this
   * ~195-206 (10K flows: ~130 before and after). A probe `for` loop in either
   * pass cost ~40 ns a packet by itself, so the probe is unrolled to the first
   * two slots (a record further down the run is found by find*(), missing
   * then).
   */
  prefetch(hashes: Int32Array, lookups: Uint8Array, count: number): void {
    for (let from = 0; from < count; from += PREFETCH_BLOCK) {
      this.prefetchBlock(hashes, lookups, from, Math.min(count, from + PREFETCH_BLOCK));
    }
  }

  /** prefetch() for lookups [from, to), at most PREFETCH_BLOCK of them. */
  private prefetchBlock(hashes: Int32Array, lookups: Uint8Array, from: number, to: number): void {
    const ids = PREFETCH_IDS;
    const indexes = this.indexes;
    const revBase = this.revBase;
    const mask = this.mask;
    for (let i = from; i < to; i++) {
      const lookup = lookups[i];
      const hash = hashes[i];
      // One array for both indexes: selecting between two typed arrays per
      // element cost ~18 ns a packet in a loop of index loads alone.
      const base = lookup === LOOKUP_REVERSE ? revBase : 0;
      const slot = hash & mask;
      let at = base + (slot << 1);
      let id1 = indexes[at + 1];
      if (id1 !== 0 && indexes[at] !== hash) {
        at = base + (((slot + 1) & mask) << 1);
        id1 = indexes[at + 1];
        if (indexes[at] !== hash) id1 = 0;
      }
      ids[i - from] = lookup === LOOKUP_NONE ? 0 : id1;
    }
    const u32 = this.u32;
    let sink = 0;
    for (let i = 0; i < to - from; i++) {
      const id1 = ids[i];
      if (id1 !== 0) {
        const b = (id1 - 1) * REC_WORDS;
        sink ^= u32[b] ^ u32[b + REC_HOT_LINE_1] ^ u32[b + REC_HOT_END];
      }
    }
    // Stored so the compiler cannot drop the loads as dead.
    this.prefetchSink = sink;
  }

  /** Record id for a forward key [clientAddr, clusterAddr, clientPort<<16|clusterPort, proto<<8|family], or -1. */
  findForward(key: Uint32Array, hash: number): number {
    const index = this.fwd;
    const u32 = this.u32;
    let slot = hash & this.mask;
    for (;;) {
      const id1 = index[slot * 2 + 1];
      if (id1 === 0) return -1;
      if (index[slot * 2] === (hash | 0)) {
        const b = (id1 - 1) * REC_WORDS;
        if (u32[b] === key[0] && u32[b + 1] === key[1] && u32[b + 2] === key[2] && u32[b + 3] === key[3] &&
            u32[b + 4] === key[4] && u32[b + 5] === key[5] && u32[b + 6] === key[6] && u32[b + 7] === key[7] &&
            u32[b + R_PORTS] === key[8] && (u32[b + R_META] & 0xffff) === key[9]) {
          return id1 - 1;
        }
      }
      slot = (slot + 1) & this.mask;
    }
  }

  /** Record id for a reverse key [daemonAddr, clientAddr, daemonPort<<16|clientPort, proto<<8|family], or -1. */
  findReverse(key: Uint32Array, hash: number): number {
    const index = this.rev;
    const u32 = this.u32;
    let slot = hash & this.mask;
    for (;;) {
      const id1 = index[slot * 2 + 1];
      if (id1 === 0) return -1;
      if (index[slot * 2] === (hash | 0)) {
        const b = (id1 - 1) * REC_WORDS;
        if (u32[b + 8] === key[0] && u32[b + 9] === key[1] && u32[b + 10] === key[2] && u32[b + 11] === key[3] &&
            u32[b] === key[4] && u32[b + 1] === key[5] && u32[b + 2] === key[6] && u32[b + 3] === key[7] &&
            // >>> 0: `&` and `|` give int32, negative for a daemon port above 32767; key words are uint32.
            (((u32[b + R_META] & 0xffff0000) | (u32[b + R_PORTS] >>> 16)) >>> 0) === key[8] &&
            (u32[b + R_META] & 0xffff) === key[9]) {
          return id1 - 1;
        }
      }
      slot = (slot + 1) & this.mask;
    }
  }

  /**
   * findForward() for an IPv4 key given as int32 numbers (address words 1–3
   * are zero): [src, 0, 0, 0, dst, 0, 0, 0, ports, protoFamily]. The packet
   * path's common case, with no key array to fill and read back.
   */
  findForwardV4(src: number, dst: number, ports: number, protoFamily: number, hash: number): number {
    const index = this.fwd;
    const u32 = this.u32;
    const mask = this.mask;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const id1 = index[(slot << 1) + 1];
      if (id1 === 0) return -1;
      if (index[slot << 1] === hash) {
        const b = (id1 - 1) * REC_WORDS;
        if ((u32[b] | 0) === src && (u32[b + 4] | 0) === dst && (u32[b + R_PORTS] | 0) === ports &&
            (u32[b + R_META] & 0xffff) === protoFamily &&
            (u32[b + 1] | u32[b + 2] | u32[b + 3] | u32[b + 5] | u32[b + 6] | u32[b + 7]) === 0) {
          return id1 - 1;
        }
      }
    }
  }

  /** findReverse() for an IPv4 reverse key given as int32 numbers, as findForwardV4(). */
  findReverseV4(src: number, dst: number, ports: number, protoFamily: number, hash: number): number {
    const index = this.rev;
    const u32 = this.u32;
    const mask = this.mask;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const id1 = index[(slot << 1) + 1];
      if (id1 === 0) return -1;
      if (index[slot << 1] === hash) {
        const b = (id1 - 1) * REC_WORDS;
        const meta = u32[b + R_META];
        if ((u32[b + 8] | 0) === src && (u32[b] | 0) === dst &&
            ((meta & 0xffff0000) | (u32[b + R_PORTS] >>> 16)) === ports && (meta & 0xffff) === protoFamily &&
            (u32[b + 9] | u32[b + 10] | u32[b + 11] | u32[b + 1] | u32[b + 2] | u32[b + 3]) === 0) {
          return id1 - 1;
        }
      }
    }
  }

  /**
   * Adds a record for a new flow. `key` is the forward key and `hash` its
   * hashKey(); the daemon's address is read from `daemonAddr[daemonAddrAt..+4]`.
   * When the table is full, it first gives up the oldest never-confirmed record,
   * then the oldest closed one; an established flow is never given up. Returns
   * the record id, INSERT_FULL when nothing could be given up, or
   * INSERT_REVERSE_TAKEN when another live record already owns the daemon-side
   * tuple (the reply could not be told apart). The caller must have checked that
   * the forward key is not present. Never allocates.
   */
  insert(
    key: Uint32Array, hash: number, daemonAddr: Uint32Array, daemonAddrAt: number, daemonPort: number,
    daemonId: number, portId: number, state: number, now: number, expiresAt: number,
  ): number {
    const rk = this.revKey;
    rk[0] = daemonAddr[daemonAddrAt]; rk[1] = daemonAddr[daemonAddrAt + 1];
    rk[2] = daemonAddr[daemonAddrAt + 2]; rk[3] = daemonAddr[daemonAddrAt + 3];
    rk[4] = key[0]; rk[5] = key[1]; rk[6] = key[2]; rk[7] = key[3];
    rk[8] = ((daemonPort << 16) | (key[8] >>> 16)) >>> 0;
    rk[9] = key[9];
    const revHash = hashFlowKey(rk, this.seed);
    if (this.findReverse(rk, revHash) !== -1) return INSERT_REVERSE_TAKEN;
    if (this.freeTop === 0 && !this.evictOne()) return INSERT_FULL;

    const id = this.free[--this.freeTop];
    const b = id * REC_WORDS;
    const u32 = this.u32;
    for (let i = 0; i < 8; i++) u32[b + i] = key[i];
    u32[b + 8] = rk[0]; u32[b + 9] = rk[1]; u32[b + 10] = rk[2]; u32[b + 11] = rk[3];
    u32[b + R_PORTS] = key[8];
    u32[b + R_META] = ((daemonPort << 16) | (key[9] & 0xffff)) >>> 0;
    u32[b + R_STATE] = state;
    u32[b + R_DAEMON_ID] = daemonId;
    u32[b + R_PORT_ID] = portId;
    u32[b + R_ACK_OUT] = 0;
    const k = id * B_WORDS;
    const book = this.book;
    book[k + B_FWD_HASH] = hash;
    book[k + B_REV_HASH] = revHash;
    book[k + B_LIST_PREV] = 0;
    book[k + B_LIST_NEXT] = 0;
    book[k + B_LIST] = LIST_NONE;
    book[k + B_SEQ_OUT] = 0;
    const f = id * REC_F64;
    const f64 = this.f64;
    f64[f + RF_EXPIRES] = expiresAt;
    f64[f + RF_CREATED] = now;
    f64[f + RF_LAST_SEEN] = now;
    f64[f + RF_PACKETS_IN] = 0;
    f64[f + RF_BYTES_IN] = 0;
    f64[f + RF_PACKETS_OUT] = 0;
    f64[f + RF_BYTES_OUT] = 0;
    this.inUse[id] = 1;
    this.size++;
    this.indexAdd(this.fwd, hash, id);
    this.indexAdd(this.rev, revHash, id);
    return id;
  }

  /** Removes a record (the listener hears of it first). Ignores an id not in use. */
  remove(id: number, reason: RemoveReason): void {
    if (id < 0 || id >= this.capacity || this.inUse[id] === 0) return;
    this.listener.recordRemoved(id, reason);
    const b = id * REC_WORDS;
    this.setList(id, LIST_NONE);
    this.indexRemove(this.fwd, this.book[id * B_WORDS + B_FWD_HASH], id);
    this.indexRemove(this.rev, this.book[id * B_WORDS + B_REV_HASH], id);
    this.u32[b + R_STATE] = 0;
    this.inUse[id] = 0;
    this.free[this.freeTop++] = id;
    this.size--;
  }

  isInUse(id: number): boolean {
    return id >= 0 && id < this.capacity && this.inUse[id] === 1;
  }

  /** Moves a record onto an eviction list (or off all of them with LIST_NONE); it joins at the young end. */
  setList(id: number, list: number): void {
    const book = this.book;
    const k = id * B_WORDS;
    const current = book[k + B_LIST];
    if (current === list) return;
    if (current !== LIST_NONE) {
      const prev = book[k + B_LIST_PREV];
      const next = book[k + B_LIST_NEXT];
      if (prev === 0) this.listHead[current] = next; else book[(prev - 1) * B_WORDS + B_LIST_NEXT] = next;
      if (next === 0) this.listTail[current] = prev; else book[(next - 1) * B_WORDS + B_LIST_PREV] = prev;
    }
    book[k + B_LIST] = list;
    book[k + B_LIST_PREV] = 0;
    book[k + B_LIST_NEXT] = 0;
    if (list === LIST_NONE) return;
    const tail = this.listTail[list];
    book[k + B_LIST_PREV] = tail;
    if (tail === 0) this.listHead[list] = id + 1; else book[(tail - 1) * B_WORDS + B_LIST_NEXT] = id + 1;
    this.listTail[list] = id + 1;
  }

  /** The eviction list record `id` is on (LIST_*). */
  listOf(id: number): number {
    return this.book[id * B_WORDS + B_LIST];
  }

  /** The oldest record on a list, or -1. */
  oldest(list: number): number {
    return this.listHead[list] - 1;
  }

  /**
   * Removes up to `budget` expired records, scanning at most `budget * 4`
   * slots from where the last call stopped, so one call does bounded work
   * however large the table is. Returns how many it removed.
   */
  collect(now: number, budget: number): number {
    const f64 = this.f64;
    let removed = 0;
    let cursor = this.collectCursor;
    const scan = Math.min(this.capacity, budget * 4);
    for (let n = 0; n < scan && removed < budget; n++) {
      if (this.inUse[cursor] === 1 && f64[cursor * REC_F64 + RF_EXPIRES] <= now) {
        this.remove(cursor, RemoveReason.Expired);
        removed++;
      }
      cursor = cursor + 1 === this.capacity ? 0 : cursor + 1;
    }
    this.collectCursor = cursor;
    return removed;
  }

  /** Calls `visit` for every record in use (control path: listing, checkpoints). */
  forEach(visit: (id: number) => void): void {
    for (let id = 0; id < this.capacity; id++) if (this.inUse[id] === 1) visit(id);
  }

  private evictOne(): boolean {
    let victim = this.oldest(LIST_UNCONFIRMED);
    if (victim === -1) victim = this.oldest(LIST_CLOSED);
    if (victim === -1) return false;
    this.remove(victim, RemoveReason.Evicted);
    this.evictions++;
    return true;
  }

  private indexAdd(index: Int32Array, hash: number, id: number): void {
    let slot = hash & this.mask;
    while (index[slot * 2 + 1] !== 0) slot = (slot + 1) & this.mask;
    index[slot * 2] = hash | 0;
    index[slot * 2 + 1] = id + 1;
  }

  // Linear probing deletes by shifting later members of the probe run back
  // (Knuth 6.4, Algorithm R), so there are no tombstones to slow lookups down.
  private indexRemove(index: Int32Array, hash: number, id: number): void {
    const mask = this.mask;
    let i = hash & mask;
    while (index[i * 2 + 1] !== id + 1) {
      assert.notEqual(index[i * 2 + 1], 0, 'record missing from its index');
      i = (i + 1) & mask;
    }
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (index[j * 2 + 1] === 0) break;
      const home = index[j * 2] & mask;
      // Move j back to i unless its home lies cyclically in (i, j].
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (!stays) {
        index[i * 2] = index[j * 2];
        index[i * 2 + 1] = index[j * 2 + 1];
        i = j;
      }
    }
    index[i * 2] = 0;
    index[i * 2 + 1] = 0;
  }
}
