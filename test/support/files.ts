// Files for transfer tests: a file of random bytes with its sha256, and the
// sha256 of a file that arrived, to prove a transfer byte-identical.

import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

/** Writes `bytes` random bytes to `path` (1 MiB at a time) and returns their sha256 in hex. */
export function writeRandomFile(path: string, bytes: number): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let written = 0; written < bytes; ) {
      const piece = randomBytes(Math.min(1 << 20, bytes - written));
      hash.update(piece);
      writeSync(fd, piece);
      written += piece.length;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** sha256 of a file's bytes, in hex. */
export function sha256Of(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
