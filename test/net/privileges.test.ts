// checkNetAdmin reads CapEff bit 12; checkTools looks for executables on PATH; the live check with the capability dropped
// is in apply.test.ts (it needs root to drop it).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkNetAdmin, checkTools, missingTools } from '../../src/net/privileges.js';

const status = (capEff: string) => `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`;

test('CapEff with bit 12 set: allowed', () => {
  assert.equal(checkNetAdmin(status('000001ffffffffff')), null);
  assert.equal(checkNetAdmin(status('0000000000001000')), null);
});

test('CapEff without bit 12: one sentence that says what to do', () => {
  const message = checkNetAdmin(status('000001ffffffefff'));
  assert.equal(message, 'hostlb needs CAP_NET_ADMIN to set up its data plane (iptables and nftables rules, or a TUN device and routes): run it as root (sudo) or grant the capability.');
  assert.equal(checkNetAdmin(status('0000000000000000')), message);
});

test('missing tools are named with the package that has them; present ones are not', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-tools-'));
  try {
    writeFileSync(join(dir, 'nft'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(dir, 'iptables'), 'not executable\n', { mode: 0o644 });
    assert.deepEqual(missingTools(['nft', 'iptables', 'ip6tables'], dir), ['iptables', 'ip6tables']);
    assert.equal(checkTools(['nft'], dir), null);
    const message = checkTools(['nft', 'iptables', 'ip6tables'], dir);
    assert.match(message ?? '', /needs iptables and ip6tables, not found on PATH: install iptables \(Debian: apt-get install -y iptables\), or use dataplane: tun/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
