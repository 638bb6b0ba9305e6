// The bpffs step (net-step.ts, apply.ts, repair.ts): how it prints, how
// mountinfo is read, that a directory outside /run/hostlb/bpf is refused
// before anything runs; then, as root, against the kernel: the mount is made
// once however often applied, undone however often undone, put back by repair,
// and a mount hostlb did not make is never touched. Root tests mount only on
// /run/hostlb/bpf/hostlb-test-<pid>-*, and unmount only there.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { applyPlan, mountBpffs, mountsOn, parseMountInfo, readJournal, topMountOn, undoJournal, unmountBpffs } from '../../src/net/apply.js';
import { NetError } from '../../src/net/net-error.js';
import { BPFFS_ROOT, formatCommand, type NetStep } from '../../src/net/net-step.js';
import { repairMissing } from '../../src/net/repair.js';
import { skipUnlessRoot } from '../support/netns.js';

const bpffsStep = (dir: string): NetStep => ({ description: `mount a bpffs on ${dir}`, apply: ['bpffs', 'mount', dir], undo: ['bpffs', 'umount', dir] });

const FORMATTED: Array<[string[], string]> = [
  [['bpffs', 'mount', '/run/hostlb/bpf/socket'], 'mount -t bpf bpf /run/hostlb/bpf/socket'],
  [['bpffs', 'umount', '/run/hostlb/bpf/socket'], 'umount /run/hostlb/bpf/socket'],
  // Not a shape hostlb writes: printed as it is, so nobody mistakes it for a mount.
  [['bpffs', 'remount', '/run/hostlb/bpf/socket'], 'bpffs remount /run/hostlb/bpf/socket'],
  [['bpffs', 'mount', '/run/hostlb/bpf/socket', '-o', 'x'], 'bpffs mount /run/hostlb/bpf/socket -o x'],
  [['ip', '-4', 'rule', 'add', 'pref', '100', 'lookup', '100'], 'ip -4 rule add pref 100 lookup 100'],
  [['sysctl', 'net/ipv4/conf/hlb0.5/rp_filter', '0'], 'sysctl -w net.ipv4.conf.hlb0.5.rp_filter=0'],
];

for (const [command, text] of FORMATTED) {
  test(`formatCommand: ${text}`, () => {
    assert.equal(formatCommand(command), text);
  });
}

// proc(5): id parent major:minor root mount-point options [optional...] - type source super-options
const MOUNTINFO = [
  '26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '60 26 0:40 / /run rw,nosuid,nodev shared:5 master:2 - tmpfs tmpfs rw,mode=755',
  '61 60 0:41 / /run/hostlb/bpf/socket rw,relatime shared:30 - bpf bpf rw',
  '62 60 0:42 / /run/hostlb/bpf/stacked rw,relatime - bpf bpf rw',
  '63 62 0:43 / /run/hostlb/bpf/stacked rw,relatime - tmpfs none rw',
  '64 60 0:44 / /run/with\\040space rw - bpf bpf rw',
  'not a mountinfo line',
  '',
].join('\n');

test('parseMountInfo: optional fields, octal escapes, malformed lines skipped', () => {
  const mounts = parseMountInfo(MOUNTINFO);
  assert.deepEqual(mounts.map((m) => [m.id, m.parentId, m.mountPoint, m.fsType]), [
    [26, 1, '/', 'ext4'],
    [60, 26, '/run', 'tmpfs'],
    [61, 60, '/run/hostlb/bpf/socket', 'bpf'],
    [62, 60, '/run/hostlb/bpf/stacked', 'bpf'],
    [63, 62, '/run/hostlb/bpf/stacked', 'tmpfs'],
    [64, 60, '/run/with space', 'bpf'],
  ]);
});

test('topMountOn: the uppermost mount on exactly that path; none on a path below a mount', () => {
  const mounts = parseMountInfo(MOUNTINFO);
  assert.equal(topMountOn(mounts, '/run/hostlb/bpf/socket')?.id, 61);
  assert.equal(topMountOn(mounts, '/run/hostlb/bpf/stacked')?.fsType, 'tmpfs', 'a tmpfs hides the bpffs under it');
  assert.equal(mountsOn(mounts, '/run/hostlb/bpf/stacked').length, 2);
  assert.equal(topMountOn(mounts, '/run/hostlb/bpf'), undefined, 'inside /run, but nothing mounted on it');
  assert.equal(topMountOn(mounts, '/run/hostlb/bpf/socket/x'), undefined);
});

/** The types mounted on exactly `dir`, bottom first, read straight from mountinfo. */
function mountTypesOn(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .filter((line) => line.split(' ')[4] === dir)
    .map((line) => line.split(' - ')[1].split(' ')[0]);
}

test('a bpffs directory outside /run/hostlb/bpf is refused before anything runs', (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'hlbt-bpffs-'));
  const elsewhere = join(tmp, 'mnt');
  t.after(() => {
    // Only if the refusal regressed (as root): take back the mount it made.
    if (mountTypesOn(elsewhere).length > 0) execFileSync('umount', [elsewhere]);
    rmSync(tmp, { recursive: true, force: true });
  });
  const journal = join(tmp, 'run', 'hlb0.journal.json');
  const climbing = `${BPFFS_ROOT}/../hostlb-test-${process.pid}-climbed`;
  for (const dir of [elsewhere, climbing]) {
    assert.throws(() => applyPlan([bpffsStep(dir)], journal), (e: unknown) => {
      assert.ok(e instanceof NetError);
      assert.equal(e.code, 'NET_STEP_FAILED');
      assert.match(e.message, /not a command hostlb runs/);
      return true;
    });
    assert.throws(() => mountBpffs(dir), { code: 'NET_JOURNAL_INVALID', message: /is not a bpffs directory hostlb mounts \(\/run\/hostlb\/bpf\/<name>\)/ });
    assert.throws(() => unmountBpffs(dir), { code: 'NET_JOURNAL_INVALID' });
  }
  assert.equal(existsSync(elsewhere), false, 'no directory was made');
  assert.equal(existsSync(`/run/hostlb/hostlb-test-${process.pid}-climbed`), false);
  assert.equal(existsSync(journal), false, 'nothing done, so nothing journaled');
});

// ---- as root, against the kernel ----------------------------------------------

const TEST_PREFIX = `${BPFFS_ROOT}/hostlb-test-${process.pid}`;
const rootExisted = existsSync(BPFFS_ROOT);

/** Takes back whatever a test left on `path` (one of its own directories): its mounts, then the directory or link. */
function removeTestPath(path: string): void {
  assert.ok(path.startsWith(`${TEST_PREFIX}-`), path);
  for (let i = 0; i < 8 && mountTypesOn(path).length > 0; i++) execFileSync('umount', [path]);
  let link: boolean;
  try {
    link = lstatSync(path).isSymbolicLink();
  } catch {
    return;
  }
  if (link) unlinkSync(path);
  else rmdirSync(path);
}

after(() => {
  if (rootExisted) return;
  try {
    rmdirSync(BPFFS_ROOT); // left only if empty: it may be in use by now
  } catch {
    // not ours any more, or not made at all
  }
});

function rootSetUp(t: TestContext, ...names: string[]): { dirs: string[]; journal: (name: string) => string } | null {
  if (!skipUnlessRoot(t, 'mounts a bpffs under /run/hostlb/bpf')) return null;
  const dirs = names.map((name) => `${TEST_PREFIX}-${name}`);
  const tmp = mkdtempSync(join(tmpdir(), 'hlbt-bpffs-journal-'));
  t.after(() => {
    for (const dir of [...dirs].reverse()) removeTestPath(dir);
    rmSync(tmp, { recursive: true, force: true });
  });
  for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} is left from an earlier run`);
  return { dirs, journal: (name) => join(tmp, name, 'hlb0.journal.json') };
}

test('the mount step mounts one bpffs however often applied; its undo unmounts it and removes the directory however often run', (t) => {
  const ctx = rootSetUp(t, 'apply');
  if (ctx === null) return;
  const [dir] = ctx.dirs;
  const step = bpffsStep(dir);

  applyPlan([step], ctx.journal('a'));
  assert.deepEqual(mountTypesOn(dir), ['bpf']);
  assert.deepEqual(readJournal(ctx.journal('a'))?.steps, [step]);
  assert.equal(statSync(BPFFS_ROOT).mode & 0o022, 0, 'only root may write where the bpffs directories are');

  // An adopting start applies it again: still one bpffs, not a second stacked on it.
  applyPlan([step], ctx.journal('b'));
  assert.deepEqual(mountTypesOn(dir), ['bpf']);

  assert.equal(undoJournal(ctx.journal('a')), 1);
  assert.deepEqual(mountTypesOn(dir), []);
  assert.equal(existsSync(dir), false, 'the directory went with the mount');
  // The second journal's undo finds it already undone.
  assert.equal(undoJournal(ctx.journal('b')), 1);
  assert.equal(existsSync(ctx.journal('b')), false);

  // Unmounted but the directory left (a crash between umount and rmdir): the undo removes it.
  mkdirSync(dir, { mode: 0o700 });
  unmountBpffs(dir);
  assert.equal(existsSync(dir), false);
  unmountBpffs(dir);
});

test('a mount hostlb did not make is left alone, and so is a symlinked directory', (t) => {
  const ctx = rootSetUp(t, 'foreign', 'target', 'link');
  if (ctx === null) return;
  const [foreign, target, link] = ctx.dirs;

  mkdirSync(foreign, { recursive: true, mode: 0o700 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k,mode=700', 'hostlb-test', foreign]);
  assert.throws(() => applyPlan([bpffsStep(foreign)], ctx.journal('a')), (e: unknown) => {
    assert.ok(e instanceof NetError);
    assert.equal(e.code, 'NET_STEP_FAILED');
    assert.match(e.message, /has a tmpfs file system mounted on it, not a bpffs, and hostlb leaves other mounts alone/);
    return true;
  });
  assert.deepEqual(mountTypesOn(foreign), ['tmpfs']);
  assert.throws(() => unmountBpffs(foreign), { code: 'NET_UNDO_FAILED', message: /has a tmpfs file system mounted on it, not the bpffs hostlb mounted/ });
  assert.deepEqual(mountTypesOn(foreign), ['tmpfs']);

  // A bpffs that is not hostlb's, reached through a symlink of the right name: neither mounted on nor unmounted.
  mkdirSync(target, { mode: 0o700 });
  execFileSync('mount', ['-t', 'bpf', 'bpf', target]);
  symlinkSync(target, link);
  assert.throws(() => mountBpffs(link), { code: 'NET_STEP_FAILED', message: /is a symbolic link/ });
  assert.throws(() => unmountBpffs(link), { code: 'NET_UNDO_FAILED', message: /is a symbolic link/ });
  assert.deepEqual(mountTypesOn(target), ['bpf']);
  assert.deepEqual(mountTypesOn(link), []);
});

test('repair mounts a vanished bpffs again, once, and reports it under bpffs', async (t) => {
  const ctx = rootSetUp(t, 'repair');
  if (ctx === null) return;
  const [dir] = ctx.dirs;
  const journal = ctx.journal('a');
  const steps = (): NetStep[] => readJournal(journal)?.steps ?? [];
  applyPlan([bpffsStep(dir)], journal);

  assert.deepEqual(await repairMissing(steps(), new AbortController().signal), { repaired: {}, errors: [] }, 'nothing missing');

  execFileSync('umount', [dir]);
  assert.deepEqual(mountTypesOn(dir), []);
  assert.deepEqual(await repairMissing(steps(), new AbortController().signal), { repaired: { bpffs: 1 }, errors: [] });
  assert.deepEqual(mountTypesOn(dir), ['bpf']);

  // Directory gone too: made again. And a journal listing the mount twice mounts it once.
  applyPlan([bpffsStep(dir)], journal);
  assert.equal(steps().length, 2);
  execFileSync('umount', [dir]);
  rmdirSync(dir);
  assert.deepEqual(await repairMissing(steps(), new AbortController().signal), { repaired: { bpffs: 1 }, errors: [] });
  assert.deepEqual(mountTypesOn(dir), ['bpf']);

  // Once stop has aborted repair, nothing is put back.
  execFileSync('umount', [dir]);
  const stopping = new AbortController();
  stopping.abort();
  assert.deepEqual(await repairMissing(steps(), stopping.signal), { repaired: {}, errors: [] });
  assert.deepEqual(mountTypesOn(dir), []);

  assert.equal(undoJournal(journal), 2);
  assert.equal(existsSync(dir), false);
});
