// checkNetAdmin reads CapEff bit 12; the live check with the capability dropped
// is in apply.test.ts (it needs root to drop it).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkNetAdmin } from '../../src/net/privileges.js';

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
