// Parsing ip's JSON into comparable facts: named and numeric (`ip -N`) output
// must give the same keys, so a plan recognises hostlb's own rules and routes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressesFromJson, routeFromJson, routeKey, ruleFromJson, ruleKey } from '../../src/net/host-facts.js';

test('a rule printed with names and with numbers (-N) has one key, the key the TUN host plan builds', () => {
  const named = ruleFromJson(4, { priority: 100, src: '198.18.1.1', ipproto: 'tcp', sport: 8080, table: '100' });
  const numeric = ruleFromJson(4, { priority: 100, src: '198.18.1.1', ipproto: 'ipproto-6', sport: 8080, table: '100', protocol: '0' });
  assert.equal(named.key, numeric.key);
  assert.equal(named.key, ruleKey(4, { priority: 100, from: '198.18.1.1', ipproto: 'tcp', sport: 8080, table: 100 }));
  assert.equal(named.key, '4 pref 100 from 198.18.1.1/32 to all ipproto 6 sport 8080 dport - lookup 100');
});

test('table names and numbers agree; the kernel\'s protocol is kept for undo', () => {
  const named = ruleFromJson(6, { priority: 0, src: 'all', table: 'local', protocol: 'kernel' });
  const numeric = ruleFromJson(6, { priority: 0, src: 'all', table: '255', protocol: '2' });
  assert.equal(named.key, numeric.key);
  assert.equal(numeric.protocol, 'kernel');
  assert.equal(named.key, '6 pref 0 from all to all ipproto - sport - dport - lookup 255');
});

test('prefixes: an explicit length and IPv6 text are normalised', () => {
  assert.equal(
    ruleFromJson(6, { priority: 99, src: 'all', dst: '2001:DB8:0::10', table: '100' }).key,
    ruleKey(6, { priority: 99, to: '2001:db8::10', table: 100 }),
  );
  assert.match(ruleFromJson(4, { priority: 5, src: '198.18.1.0', srclen: 24, table: '100' }).key, /from 198\.18\.1\.0\/24 /);
});

test('a rule with a selector hostlb never writes gets a key of its own', () => {
  const plain = ruleFromJson(4, { priority: 100, src: '198.18.1.1', table: '100' });
  const withIif = ruleFromJson(4, { priority: 100, src: '198.18.1.1', iif: 'eth0', table: '100' });
  assert.notEqual(plain.key, withIif.key);
});

test('routes: default metrics per family, blackhole device ignored, type names and numbers agree', () => {
  assert.equal(routeFromJson(4, { dst: 'default', dev: 'hlb0', table: '100', scope: '253', flags: ['linkdown'] }).key, routeKey(4, { table: 100, dst: 'default', dev: 'hlb0' }));
  assert.equal(routeKey(4, { table: 100, dst: 'default', dev: 'hlb0' }), '4 table 100 type 1 0.0.0.0/0 dev hlb0 metric 0');
  assert.equal(routeKey(6, { table: 100, dst: 'default', dev: 'hlb0' }), '6 table 100 type 1 ::/0 dev hlb0 metric 1024');
  const v6Blackhole = routeFromJson(6, { type: 'blackhole', dst: 'default', dev: 'lo', table: '100', metric: 4000000000 });
  assert.equal(v6Blackhole.key, routeFromJson(6, { type: '6', dst: 'default', table: '100', metric: 4000000000 }).key);
  assert.equal(routeFromJson(4, { dst: '198.18.0.10', dev: 'hlb0', prefsrc: '198.18.3.1' }).key, '4 table 254 type 1 198.18.0.10/32 dev hlb0 metric 0');
});

test('addresses and devices from `ip -j addr`', () => {
  const { addresses, devices } = addressesFromJson([
    { ifname: 'lo', flags: ['LOOPBACK', 'UP'], addr_info: [{ family: 'inet', local: '127.0.0.1', scope: 'host' }] },
    { ifname: 'hlb0', flags: ['POINTOPOINT', 'NOARP'], addr_info: [{ family: 'inet6', local: '2001:DB8::0:1', scope: 'global' }] },
  ]);
  assert.deepEqual(devices, [{ name: 'lo', up: true }, { name: 'hlb0', up: false }]);
  assert.deepEqual(addresses, [
    { family: 4, address: '127.0.0.1', dev: 'lo', scope: 'host' },
    { family: 6, address: '2001:db8::1', dev: 'hlb0', scope: 'global' },
  ]);
});
