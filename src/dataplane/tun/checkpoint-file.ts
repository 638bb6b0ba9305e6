// The table checkpoint on disk (TUN plane): written slice by slice, with a
// turn of the event loop between slices, so a table of a million records never
// holds a packet back for more than a slice (bench:checkpoint), then renamed
// over the last one. What a record holds is dispatch/checkpoint.ts's.

import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CHECKPOINT_HEADER_BYTES, SnapshotCursor } from '../../dispatch/checkpoint.js';
import type { Dispatcher } from '../../dispatch/dispatcher.js';
import { writeWhole } from '../../net/state-files.js';

export interface CheckpointWriteOptions {
  /** Record ids looked at per slice at most (default SNAPSHOT_IDS_PER_SLICE). */
  idsPerSlice?: number;
  /** Records copied per slice at most (default SNAPSHOT_RECORDS_PER_SLICE). */
  recordsPerSlice?: number;
  /** Asked between slices and before the rename; false abandons the write (the old file stays). */
  proceed?: () => boolean;
}

/**
 * Writes a checkpoint of `d`'s table to `path`: a temp file beside it (mode
 * 0600) filled one slice at a time — each slice copied and written to the page
 * cache in one go (well under a millisecond), packets handled between slices
 * — the header (record count) written last at offset 0, then renamed over
 * `path`. A small table is one slice: no turn of the loop at all. Not
 * fsynced: the checkpoint serves the next hostlb after this one dies, when
 * the page cache holds it anyway; after a power loss its flows are gone with
 * the host, and restoreTable's checks turn a torn file into a warning. (An
 * fsync, or a file write queued to libuv's threads, waited for seconds on a
 * loaded machine: restart.test.ts under load lost the flow a checkpoint that
 * late had not caught.) Resolves with the records written, or null when
 * `proceed` said stop. Throws the fs error (the temp file removed, `path`
 * untouched).
 */
export async function writeCheckpointFile(path: string, d: Dispatcher, options: CheckpointWriteOptions = {}): Promise<number | null> {
  const proceed = options.proceed ?? (() => true);
  // Not the name writeFileAtomic uses: a one-shot checkpoint (handover) may run meanwhile.
  const tmp = `${path}.${process.pid}.slices.tmp`;
  const cursor = new SnapshotCursor(d, options.idsPerSlice, options.recordsPerSlice);
  let fd: number | null = openSync(tmp, 'w', 0o600);
  try {
    writeWhole(fd, new Uint8Array(CHECKPOINT_HEADER_BYTES));
    for (let slice = cursor.next(); slice !== null; slice = cursor.next()) {
      if (slice.byteLength > 0) writeWhole(fd, slice);
      if (cursor.done) break;
      await nextTurn();
      if (!proceed()) return null;
    }
    const header = cursor.header();
    for (let at = 0; at < header.byteLength;) at += writeSync(fd, header, at, header.byteLength - at, at);
    closeSync(fd);
    fd = null;
    // Checked and renamed in one turn: a stop that removes the checkpoint cannot slip in between.
    if (!proceed()) return null;
    renameSync(tmp, path);
    return cursor.count;
  } finally {
    if (fd !== null) closeSync(fd);
    rmSync(tmp, { force: true });
  }
}
