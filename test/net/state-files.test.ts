// The state directory check and the baseline reader (state-files.ts): a
// missing directory is created 0700; one owned by another user or writable by
// group or others is refused naming the fix; a baseline that is not what the
// probe wrote is refused naming the file. Ownership cases need root.

import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureStateDir, readBaseline, writeFileAtomic } from '../../src/net/state-files.js';
import { hasRoot } from '../support/netns.js';

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'hlbt-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('ensureStateDir creates a missing directory with mode 0700 and accepts it', (t) => {
  const dir = join(scratch(t), 'run', 'hostlb');
  ensureStateDir(dir);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  ensureStateDir(dir);
});

test('ensureStateDir refuses a directory group or others may write, naming it and the chmod; leaves it as it was', (t) => {
  const dir = join(scratch(t), 'state');
  mkdirSync(dir);
  for (const [mode, who] of [[0o777, 'everyone'], [0o770, 'its group'], [0o1733, 'everyone']] as const) {
    chmodSync(dir, mode);
    assert.throws(() => ensureStateDir(dir), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'NET_STATE_DIR_UNSAFE');
      assert.ok(e.message.includes(`stateDir ${dir} is writable by ${who}`), e.message);
      assert.ok(e.message.includes(`chmod 700 ${dir}`), e.message);
      return true;
    });
    assert.equal(statSync(dir).mode & 0o7777, mode, 'not changed');
  }
  chmodSync(dir, 0o755);
  ensureStateDir(dir);
});

test('ensureStateDir refuses a directory another user owns, naming the chown', { skip: !hasRoot() && 'needs root to chown' }, (t) => {
  const dir = join(scratch(t), 'state');
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, 65534, 65534);
  assert.throws(() => ensureStateDir(dir), { code: 'NET_STATE_DIR_UNSAFE', message: new RegExp(`stateDir ${dir} belongs to uid 65534.*chown root:root ${dir}`) });
  const file = join(scratch(t), 'file');
  writeFileSync(file, '');
  assert.throws(() => ensureStateDir(file), { code: 'NET_STATE_DIR_UNSAFE', message: /is not a directory/ });
});

test('readBaseline: what the probe writes reads back; anything else is NET_BASELINE_INVALID naming the file', (t) => {
  const path = join(scratch(t), 'hlb0.baseline.json');
  const good = { addresses: [{ family: 4, address: '198.18.0.1', dev: 'eth0', scope: 'global' }], devices: [{ name: 'eth0', up: true }], rules: [{ family: 4, priority: 0, key: 'k', protocol: 'kernel' }], routes: [], sysctls: { 'net/ipv4/ip_forward': '0' } };
  writeFileAtomic(path, JSON.stringify(good));
  assert.deepEqual(readBaseline(path), good);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  for (const [bad, why] of [
    ['{"addresses": [', /Unexpected end of JSON input|Unterminated|JSON/],
    [JSON.stringify({ ...good, rules: 'x' }), /"rules" is not a list/],
    [JSON.stringify({ ...good, sysctls: { 'net/ipv4/ip_forward': '1; reboot' } }), /sysctl net\/ipv4\/ip_forward has the value/],
    [JSON.stringify({ ...good, rules: [{ family: 4, priority: 0, key: 'k', protocol: 'kernel x' }] }), /a rule entry is malformed/],
  ] as const) {
    writeFileSync(path, bad);
    assert.throws(() => readBaseline(path), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'NET_BASELINE_INVALID');
      assert.ok(e.message.startsWith(`the baseline ${path} of an earlier run cannot be used (`), e.message);
      assert.match(e.message, why);
      return true;
    });
  }
});
