// Supervised daemons' output apart from hostlb's log: rings per instance, one
// sequence across them (since=N), filters by index, address or name, files
// per instance with rotation. Files go to a temporary directory.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { InstanceLogs } from '../../src/health/instance-logs.js';

const line = (index: number, text: string, stream: 'stdout' | 'stderr' = 'stdout') => ({ name: 'app', port: '0.0.0.0:3000/tcp', index, daemon: `127.11.184.${index + 1}:3000`, pid: 100 + index, stream, text });

test('instance logs: one sequence over every instance, filters by index, address or name, the last N', () => {
  const logs = new InstanceLogs(null, 3);
  logs.add(line(0, 'a'));
  logs.add(line(1, 'b'));
  logs.add(line(0, 'c', 'stderr'));
  logs.add(line(1, 'd'));
  assert.deepEqual(logs.lines().map((l) => `${l.id}:${l.index}:${l.text}`), ['1:0:a', '2:1:b', '3:0:c', '4:1:d']);
  assert.deepEqual(logs.lines({ instance: '0' }).map((l) => l.text), ['a', 'c']);
  assert.deepEqual(logs.lines({ instance: '127.11.184.2:3000' }).map((l) => l.text), ['b', 'd']);
  assert.deepEqual(logs.lines({ instance: 'app', since: 2 }).map((l) => l.text), ['c', 'd']);
  assert.deepEqual(logs.lines({ limit: 1 }).map((l) => l.text), ['d'], 'the most recent');
  assert.equal(logs.lines({ instance: 'other' }).length, 0);
  // Each instance keeps its last 3.
  for (const t of ['e', 'f', 'g']) logs.add(line(0, t));
  assert.deepEqual(logs.lines({ instance: '0' }).map((l) => l.text), ['e', 'f', 'g']);
  assert.equal(logs.lines({ instance: '0' })[0].stream, 'stdout');
});

test('instance logs: every line appended to a file per instance, rotated past its size (one older file kept)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hlb-logs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const logs = new InstanceLogs(join(dir, 'hlb0.logs'), 100, 200);
  for (let i = 0; i < 6; i++) logs.add(line(0, `line ${i} ${'x'.repeat(40)}`));
  logs.add(line(1, 'other', 'stderr'));
  logs.close();
  const file = logs.fileOf('0.0.0.0:3000/tcp', 0)!;
  assert.match(file, /0\.0\.0\.0_3000_tcp\.0\.log$/);
  assert.ok(existsSync(`${file}.1`), 'rotated once past 200 bytes');
  const both = readFileSync(`${file}.1`, 'utf8') + readFileSync(file, 'utf8');
  // 75-byte lines, 200-byte files: rotated at lines 2 and 4; the file and its one older copy hold the last four.
  assert.deepEqual(both.trim().split('\n').map((l) => l.split(' ').slice(1, 4).join(' ')), [2, 3, 4, 5].map((i) => `O line ${i}`));
  assert.match(readFileSync(logs.fileOf('0.0.0.0:3000/tcp', 1)!, 'utf8'), /^\S+ E other\n$/);
});
