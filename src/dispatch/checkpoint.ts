// Checkpoints of the connection table: every live record as bytes, and back.
// A restarted or upgraded hostlb restores them, so established flows keep
// their daemon across the restart. Daemons and ports are matched by address
// and port, not by id (ids are per run); a record whose daemon is gone from
// the configuration is left out. No file system here: the caller stores the
// bytes, all at once (snapshotTable) or slice by slice (SnapshotCursor), so a
// table of a million records never holds the packet path for long.

import { REC_F64, REC_WORDS, R_ACK_OUT, R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_PORT_ID, R_PORTS, R_STATE, RF_BYTES_IN, RF_BYTES_OUT, RF_CREATED,
  RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_PACKETS_OUT } from './conn-table.js';
import type { Dispatcher } from './dispatcher.js';
import { D_ACTIVE_FLOWS, DAEMON_COLUMNS } from './stats.js';
import { HostlbError } from '../errors.js';
import { ConnState, evictionList, FLAG_ACTIVE, FLAG_FIN_IN, FLAG_FIN_OUT, FLAG_REPLIED, FLAG_RESET, STATE_MASK } from './tcp-state.js';

const MAGIC = 0x484c4243; // "HLBC"
const VERSION = 1;
const HEADER_WORDS = 4;
const F64_FIELDS = [RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_BYTES_IN, RF_PACKETS_OUT, RF_BYTES_OUT, RF_CREATED];

/** Bytes of the header: magic, version, words per record, record count. */
export const CHECKPOINT_HEADER_BYTES = HEADER_WORDS * 4;

/** The header of a snapshot of `count` records. */
export function checkpointHeader(count: number): Uint8Array {
  const header = new Uint32Array(HEADER_WORDS);
  header[0] = MAGIC; header[1] = VERSION; header[2] = REC_WORDS; header[3] = count;
  return new Uint8Array(header.buffer);
}

/** Every record in use, as one buffer: a header, then REC_WORDS words per record. Control path. */
export function snapshotTable(d: Dispatcher): Uint8Array {
  const table = d.table;
  const out = new Uint32Array(HEADER_WORDS + table.size * REC_WORDS);
  out.set(new Uint32Array(checkpointHeader(table.size).buffer));
  let at = HEADER_WORDS;
  table.forEach((id) => {
    out.set(table.u32.subarray(id * REC_WORDS, (id + 1) * REC_WORDS), at);
    at += REC_WORDS;
  });
  return new Uint8Array(out.buffer, 0, at * 4);
}

/** Record ids a SnapshotCursor looks at per slice at most by default: an empty stretch costs ~0.1 ms. */
export const SNAPSHOT_IDS_PER_SLICE = 65_536;
/** Records a SnapshotCursor copies per slice at most by default: 128 KB, a fraction of a millisecond (bench:checkpoint). */
export const SNAPSHOT_RECORDS_PER_SLICE = 1024;

/**
 * A snapshot taken a slice at a time, so the caller can let packets through
 * between slices: next() copies the records in use among the next record
 * ids, stopping after `idsPerSlice` ids or `recordsPerSlice` records. The
 * records a table holds the whole time come out exactly as snapshotTable
 * writes them (same order); one that arrives or leaves meanwhile is in or out
 * depending on whether the cursor had passed its id. Each record is copied
 * whole within one call, so none is torn. A flow ended and begun again behind
 * and ahead of the cursor may appear twice; restoreTable keeps the first.
 */
export class SnapshotCursor {
  /** Records handed out so far: the count for the header. */
  count = 0;
  private nextId = 0;
  private readonly slice: Uint32Array;
  private readonly recordsPerSlice: number;

  constructor(private readonly d: Dispatcher, private readonly idsPerSlice = SNAPSHOT_IDS_PER_SLICE, recordsPerSlice = SNAPSHOT_RECORDS_PER_SLICE) {
    for (const [name, n] of [['idsPerSlice', idsPerSlice], ['recordsPerSlice', recordsPerSlice]] as const) {
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${n}`);
    }
    this.recordsPerSlice = Math.min(recordsPerSlice, idsPerSlice, d.table.capacity);
    this.slice = new Uint32Array(this.recordsPerSlice * REC_WORDS);
  }

  /** True once every id has been looked at (next() returns null). */
  get done(): boolean {
    return this.nextId >= this.d.table.capacity;
  }

  /**
   * The records of the next slice as bytes (a fresh buffer the caller owns; may
   * be empty), or null once every id has been looked at.
   */
  next(): Uint8Array | null {
    const table = this.d.table;
    if (this.nextId >= table.capacity) return null;
    const end = Math.min(table.capacity, this.nextId + this.idsPerSlice);
    const u32 = table.u32;
    const out = this.slice;
    const full = this.recordsPerSlice * REC_WORDS;
    let at = 0;
    let id = this.nextId;
    for (; id < end && at < full; id++) {
      if (!table.isInUse(id)) continue;
      // A word loop: a subarray per record would allocate a million views per checkpoint.
      for (let w = 0, b = id * REC_WORDS; w < REC_WORDS; w++) out[at + w] = u32[b + w];
      at += REC_WORDS;
    }
    this.nextId = id;
    this.count += at / REC_WORDS;
    return new Uint8Array(out.buffer.slice(0, at * 4));
  }

  /** The header for what next() handed out; write it at offset 0 once next() returned null. */
  header(): Uint8Array {
    return checkpointHeader(this.count);
  }
}

/** Record flags a checkpoint may carry. */
const KNOWN_FLAGS = FLAG_FIN_IN | FLAG_FIN_OUT | FLAG_REPLIED | FLAG_ACTIVE | FLAG_RESET;
/** Daemon and port ids are indexes into arrays of the configuration: far below this. */
const MAX_ID = 1 << 24;
/** Timestamps further ahead than this are not from a clock hostlb ran on (ms). */
const MAX_AHEAD_MS = 366 * 24 * 3600 * 1000;

/** Why the record starting at word `b` of `words` (double `b / 2` of `f64`) cannot have come from a table, or null. */
function recordProblem(words: Uint32Array, f64: Float64Array, b: number, now: number): string | null {
  const meta = words[b + R_META];
  const family = meta & 0xff;
  const protocol = (meta >>> 8) & 0xff;
  if (family !== 4 && family !== 6) return `family ${family}`;
  if (protocol !== 6 && protocol !== 17) return `protocol ${protocol}`;
  if (meta >>> 16 === 0 || (words[b + R_PORTS] & 0xffff) === 0) return 'port 0';
  if (family === 4) {
    for (const base of [R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR]) {
      if ((words[b + base + 1] | words[b + base + 2] | words[b + base + 3]) !== 0) return 'an IPv4 address with IPv6 words';
    }
  }
  // Ids are per run (restore matches daemons by address) but still bounded: dense indexes from 0.
  if (words[b + R_DAEMON_ID] >= MAX_ID || words[b + R_PORT_ID] >= MAX_ID) return `daemon id ${words[b + R_DAEMON_ID]}, port id ${words[b + R_PORT_ID]}`;
  const state = words[b + R_STATE];
  const s = state & STATE_MASK;
  if ((state & ~(STATE_MASK | KNOWN_FLAGS)) !== 0) return `flags 0x${(state >>> 8).toString(16)}`;
  if (s < ConnState.SynRecv || s > ConnState.Udp || (s === ConnState.Udp) !== (protocol === 17)) return `state ${s} for protocol ${protocol}`;
  const fb = b / 2;
  for (const field of [RF_CREATED, RF_LAST_SEEN, RF_EXPIRES]) {
    const t = f64[fb + field];
    if (!Number.isFinite(t) || t < 0 || t > now + MAX_AHEAD_MS) return `timestamp ${t}`;
  }
  if (f64[fb + RF_CREATED] > f64[fb + RF_EXPIRES]) return 'created after it expires';
  for (const field of [RF_PACKETS_IN, RF_BYTES_IN, RF_PACKETS_OUT, RF_BYTES_OUT]) {
    const n = f64[fb + field];
    if (!Number.isSafeInteger(n) || n < 0) return `counter ${n}`;
  }
  return null;
}

/**
 * Checks a whole snapshot before anything is restored: its header, its length
 * and every record's fields (family, protocol, ports, state and flags,
 * timestamps, counters). Throws HostlbError CHECKPOINT_INVALID saying what is
 * wrong; returns the record count.
 */
function checkSnapshot(words: Uint32Array, f64: Float64Array, byteLength: number, now: number): number {
  const invalid = (why: string): HostlbError => new HostlbError('CHECKPOINT_INVALID', `not a table checkpoint hostlb can restore: ${why}`);
  if (byteLength < HEADER_WORDS * 4 || byteLength % 4 !== 0) throw invalid(`${byteLength} bytes`);
  if (words[0] !== MAGIC) throw invalid('wrong magic number');
  if (words[1] !== VERSION || words[2] !== REC_WORDS) throw invalid(`version ${words[1]} with ${words[2]}-word records (this hostlb writes version ${VERSION}, ${REC_WORDS} words)`);
  const count = words[3];
  if ((words.length - HEADER_WORDS) !== count * REC_WORDS) throw invalid(`the header counts ${count} records but ${(words.length - HEADER_WORDS) / REC_WORDS} follow (a torn write?)`);
  for (let r = 0; r < count; r++) {
    const problem = recordProblem(words, f64, HEADER_WORDS + r * REC_WORDS, now);
    if (problem !== null) throw invalid(`record ${r} has ${problem}`);
  }
  return count;
}

/**
 * Restores records from a snapshot into `d`'s table, skipping those that are
 * expired at `now`, whose cluster port or daemon no longer exists, or that
 * clash with a record already present. Returns how many it restored and
 * skipped. A snapshot that fails checkSnapshot (another format, torn, a field
 * out of range) restores nothing: HostlbError CHECKPOINT_INVALID.
 */
export function restoreTable(d: Dispatcher, bytes: Uint8Array, now: number): { restored: number; skipped: number } {
  // A copy: aligned for the typed arrays, whatever the caller's buffer.
  const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength - (bytes.byteLength % 8));
  const words = new Uint32Array(copy);
  const f64 = new Float64Array(copy);
  const count = checkSnapshot(words, f64, bytes.byteLength, now);
  const table = d.table;
  const key = new Uint32Array(10);
  let restored = 0;
  let skipped = 0;
  for (let r = 0; r < count; r++) {
    const b = HEADER_WORDS + r * REC_WORDS;
    const fb = b / 2;
    if (f64[fb + RF_EXPIRES] <= now) { skipped++; continue; }
    const meta = words[b + R_META];
    const family = meta & 0xff;
    const protocol = (meta >>> 8) & 0xff;
    const daemonPort = meta >>> 16;
    const port = d.tree.findPort(family, words, b + R_CLUSTER_ADDR, protocol, words[b + R_PORTS] & 0xffff);
    const daemon = port?.daemons.find((x) => x.port === daemonPort &&
      x.addrWords[0] === words[b + R_DAEMON_ADDR] && x.addrWords[1] === words[b + R_DAEMON_ADDR + 1] &&
      x.addrWords[2] === words[b + R_DAEMON_ADDR + 2] && x.addrWords[3] === words[b + R_DAEMON_ADDR + 3]);
    if (!port || !daemon) { skipped++; continue; }
    for (let i = 0; i < 8; i++) key[i] = words[b + i];
    key[8] = words[b + R_PORTS];
    key[9] = meta & 0xffff;
    const hash = table.hashKey(key);
    if (table.findForward(key, hash) !== -1) { skipped++; continue; }
    const state = words[b + R_STATE];
    const id = table.insert(key, hash, daemon.addrWords, 0, daemon.port, daemon.id, port.id, state, f64[fb + RF_CREATED], f64[fb + RF_EXPIRES]);
    if (id < 0) { skipped++; continue; }
    for (const field of F64_FIELDS) table.f64[id * REC_F64 + field] = f64[fb + field];
    table.u32[id * REC_WORDS + R_ACK_OUT] = words[b + R_ACK_OUT];
    table.setList(id, evictionList(state & STATE_MASK, state));
    if (state & FLAG_ACTIVE) d.balancer.stats.daemon[daemon.id * DAEMON_COLUMNS + D_ACTIVE_FLOWS]++;
    restored++;
  }
  return { restored, skipped };
}
