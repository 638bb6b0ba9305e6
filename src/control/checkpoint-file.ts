// The table checkpoint on disk (TUN plane): written slice by slice between
// turns of the event loop, so a table of a million records never holds a
// packet back for more than a slice (bench:checkpoint), then fsynced and
// renamed over the last one. What a record holds is dispatch/checkpoint.ts's.

import { renameSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CHECKPOINT_HEADER_BYTES, SnapshotCursor } from '../dispatch/checkpoint.js';
import type { Dispatcher } from '../dispatch/dispatcher.js';
import { syncDirectory } from '../net/state-files.js';

export interface CheckpointWriteOptions {
  /** Record ids looked at per slice (default SNAPSHOT_IDS_PER_SLICE). */
  idsPerSlice?: number;
  /** Asked between slices and before the rename; false abandons the write (the old file stays). */
  proceed?: () => boolean;
}

/**
 * Writes a checkpoint of `d`'s table to `path`: a temp file beside it (mode
 * 0600) filled one slice at a time, each slice's write done by libuv's
 * threads while packets flow, the header (record count) written last at
 * offset 0, fsynced, renamed over `path`, directory fsynced. Resolves with
 * the records written, or null when `proceed` said stop. Rejects with the fs
 * error (the temp file removed, `path` untouched).
 */
export async function writeCheckpointFile(path: string, d: Dispatcher, options: CheckpointWriteOptions = {}): Promise<number | null> {
  const proceed = options.proceed ?? (() => true);
  // Not the name writeFileAtomic uses: a one-shot checkpoint (handover) may run meanwhile.
  const tmp = `${path}.${process.pid}.slices.tmp`;
  const cursor = new SnapshotCursor(d, options.idsPerSlice);
  const file = await open(tmp, 'w', 0o600);
  let done = false;
  try {
    let at = CHECKPOINT_HEADER_BYTES;
    for (let slice = cursor.next(); slice !== null; slice = cursor.next()) {
      if (slice.byteLength > 0) {
        await writeAll(file, slice, at);
        at += slice.byteLength;
      } else {
        await nextTurn();
      }
      if (!proceed()) return null;
    }
    await writeAll(file, cursor.header(), 0);
    await file.sync();
    await file.close();
    done = true;
    // Checked and renamed in one turn: a stop that removes the checkpoint cannot slip in between.
    if (!proceed()) return null;
    renameSync(tmp, path);
    syncDirectory(dirname(path));
    return cursor.count;
  } finally {
    if (!done) await file.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
  }
}

async function writeAll(file: Awaited<ReturnType<typeof open>>, bytes: Uint8Array, position: number): Promise<void> {
  for (let written = 0; written < bytes.byteLength;) {
    const { bytesWritten } = await file.write(bytes, written, bytes.byteLength - written, position + written);
    written += bytesWritten;
  }
}
