// The exec advisor's command runs as the advisor's user and group, and sees
// HOST, PORT and the allow-list of hostlb's environment, not hostlb's secrets.
// Changing user needs root.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { advisorSpec } from '../../src/health/advisors/advisor.js';
import { execProbe } from '../../src/health/advisors/exec.js';
import { resolveRunAs } from '../../src/health/run-as.js';

const CHECK = 'test "$HOST:$PORT" = "127.0.0.1:8080" && test -z "$HOSTLB_TOKEN" && test "$(id -u):$(id -g)" = "$WANT"';

function probe(want: string, runAs: ReturnType<typeof resolveRunAs>) {
  const spec = advisorSpec({ type: 'exec', command: '/usr/bin/env', args: [`WANT=${want}`, '/bin/sh', '-c', CHECK], timeout: 5, interval: 5, runAs });
  return execProbe({ address: '127.0.0.1', port: 8080 }, spec, new AbortController().signal);
}

test('an exec probe never sees HOSTLB_TOKEN, and runs as its user and group', { skip: process.getuid?.() !== 0 && 'needs root to change user' }, async (t) => {
  process.env.HOSTLB_TOKEN = 'secret-token-of-the-admin-api';
  t.after(() => { delete process.env.HOSTLB_TOKEN; });
  assert.deepEqual(await probe('0:0', null).then((r) => [r.ok, r.reason]), [true, ''], 'as hostlb (root) without a user');
  assert.deepEqual(await probe('65534:65534', resolveRunAs('nobody', undefined)).then((r) => [r.ok, r.reason]), [true, '']);
  assert.deepEqual(await probe('0:0', resolveRunAs('nobody', undefined)).then((r) => [r.ok, r.reason]), [false, 'exit code 1'], 'the check can fail');
});
