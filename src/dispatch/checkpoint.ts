// Checkpoints of the connection table: every live record as bytes, and back.
// A restarted or upgraded hostlb restores them, so established flows keep
// their daemon across the restart. Daemons and ports are matched by address
// and port, not by id (ids are per run); a record whose daemon is gone from
// the configuration is left out. No file system here: the caller stores the bytes.

import { REC_WORDS, R_ACK_OUT, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_META, R_PORTS, R_STATE, RF_BYTES_IN, RF_BYTES_OUT, RF_CREATED,
  RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_PACKETS_OUT } from './conn-table.js';
import type { Dispatcher } from './dispatcher.js';
import { D_ACTIVE_FLOWS, DAEMON_COLUMNS } from './stats.js';
import { evictionList, FLAG_ACTIVE, STATE_MASK } from './tcp-state.js';

const MAGIC = 0x484c4243; // "HLBC"
const VERSION = 1;
const HEADER_WORDS = 4;
const REC_F64 = REC_WORDS / 2;
const F64_FIELDS = [RF_EXPIRES, RF_LAST_SEEN, RF_PACKETS_IN, RF_BYTES_IN, RF_PACKETS_OUT, RF_BYTES_OUT, RF_CREATED];

/** Every record in use, as one buffer: a header, then REC_WORDS words per record. Control path. */
export function snapshotTable(d: Dispatcher): Uint8Array {
  const table = d.table;
  const out = new Uint32Array(HEADER_WORDS + table.size * REC_WORDS);
  out[0] = MAGIC; out[1] = VERSION; out[2] = REC_WORDS; out[3] = table.size;
  let at = HEADER_WORDS;
  table.forEach((id) => {
    out.set(table.u32.subarray(id * REC_WORDS, (id + 1) * REC_WORDS), at);
    at += REC_WORDS;
  });
  return new Uint8Array(out.buffer, 0, at * 4);
}

/**
 * Restores records from a snapshot into `d`'s table, skipping those that are
 * expired at `now`, whose cluster port or daemon no longer exists, or that
 * clash with a record already present. Returns how many it restored; a
 * snapshot of another format restores nothing.
 */
export function restoreTable(d: Dispatcher, bytes: Uint8Array, now: number): { restored: number; skipped: number } {
  if (bytes.byteLength < HEADER_WORDS * 4 || bytes.byteLength % 4 !== 0) return { restored: 0, skipped: 0 };
  const words = new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  if (words[0] !== MAGIC || words[1] !== VERSION || words[2] !== REC_WORDS) return { restored: 0, skipped: 0 };
  const count = Math.min(words[3], (words.length - HEADER_WORDS) / REC_WORDS);
  const f64 = new Float64Array(words.buffer);
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
