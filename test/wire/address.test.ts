// Tests for address text (src/wire/address.ts): parse/format round trips, the
// RFC 5952 canonical IPv6 form, endpoints with brackets, and garbage refused.
// The WHATWG URL serializer (RFC 5952 compression, hex only) is the oracle for
// random IPv6 addresses.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

import {
  formatEndpoint, formatIpv4, formatIpv4Bytes, formatIpv6, ipv4ToU32, isLoopback, parseEndpoint, parseIp,
} from '../../src/wire/address.js';

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

/** Eight words, each zero about half the time, so runs of zeros are common. */
const ipv6Words = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 });

function wordsToBytes(words: number[]): Uint8Array {
  const out = new Uint8Array(16);
  words.forEach((w, i) => { out[2 * i] = w >>> 8; out[2 * i + 1] = w & 0xff; });
  return out;
}

describe('address: IPv4', () => {
  it('parses dotted quads to bytes, text and a u32', () => {
    const a = parseIp('198.18.0.1');
    assert.ok(a);
    assert.equal(a.family, 4);
    assert.deepEqual(a.bytes, bytes(198, 18, 0, 1));
    assert.equal(a.text, '198.18.0.1');
    assert.equal(ipv4ToU32(a.bytes), 0xc6120001);
    assert.equal(ipv4ToU32(parseIp('255.255.255.255')!.bytes), 0xffffffff, 'unsigned, not -1');
    assert.equal(parseIp('0.0.0.0')!.text, '0.0.0.0');
  });

  it('formats u32 and bytes, including the high bit', () => {
    assert.equal(formatIpv4(0xc6126401), '198.18.100.1');
    assert.equal(formatIpv4(0xffffffff), '255.255.255.255');
    assert.equal(formatIpv4(0), '0.0.0.0');
    assert.equal(formatIpv4Bytes(bytes(9, 9, 127, 0, 0, 1), 2), '127.0.0.1');
  });

  it('round-trips every u32 through text (1000 random runs)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
      const a = parseIp(formatIpv4(n));
      assert.ok(a);
      assert.equal(ipv4ToU32(a.bytes), n);
      assert.equal(a.text, formatIpv4(n));
    }), { numRuns: 1000 });
  });
});

describe('address: IPv6 and RFC 5952', () => {
  const canonical: Array<[string, string]> = [
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'], // §4.1 leading zeros dropped
    ['2001:DB8::1', '2001:db8::1'], // §4.3 lowercase
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'], // §4.2.1 shortest form
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // §4.2.2 one zero word is not "::"
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // §4.2.3 longest run
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // §4.2.3 first of equal runs
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'], // a single trailing zero is written out
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['a:b:c:d:e:f:0:0', 'a:b:c:d:e:f::'],
    ['fe80:0000:0000:0000:0204:61ff:fe9d:f156', 'fe80::204:61ff:fe9d:f156'],
  ];
  for (const [input, expected] of canonical) {
    it(`${input} -> ${expected}`, () => {
      const a = parseIp(input);
      assert.ok(a, input);
      assert.equal(a.family, 6);
      assert.equal(a.text, expected);
      assert.equal(parseIp(expected)!.text, expected, 'canonical text is a fixed point');
      assert.deepEqual(parseIp(expected)!.bytes, a.bytes);
    });
  }

  it('parses embedded IPv4 into the last two words', () => {
    const a = parseIp('::ffff:198.18.0.1');
    assert.ok(a);
    assert.deepEqual(a.bytes, bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1));
    assert.deepEqual(parseIp(a.text)!.bytes, a.bytes);
    assert.deepEqual(parseIp('1:2:3:4:5:6:1.2.3.4')!.bytes, parseIp('1:2:3:4:5:6:102:304')!.bytes);
  });

  it('formats at an offset inside a packet buffer', () => {
    const buf = new Uint8Array(24);
    buf.set(parseIp('2001:db8::100')!.bytes, 8);
    assert.equal(formatIpv6(buf, 8), '2001:db8::100');
  });

  it('agrees with the WHATWG URL serializer on random addresses (1000 runs)', () => {
    fc.assert(fc.property(ipv6Words, (words) => {
      const addr = wordsToBytes(words);
      const text = formatIpv6(addr, 0);
      const full = words.map((w) => w.toString(16).padStart(4, '0')).join(':');
      assert.equal(`[${text}]`, new URL(`http://[${full}]/`).hostname, full);
      const parsed = parseIp(text);
      assert.ok(parsed, text);
      assert.deepEqual(parsed.bytes, addr);
      assert.equal(parsed.text, text);
      assert.equal(parseIp(full)!.text, text);
    }), { numRuns: 1000 });
  });
});

describe('address: garbage is refused', () => {
  const garbage = [
    '', ' ', 'localhost', 'example.com', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.-4', '01.2.3.4', ' 1.2.3.4', '1.2.3.4 ',
    '1.2.3.4/32', '1.2.3.4:80', '0x7f.0.0.1', '::ffff:1.2.3', ':::', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7', 'fe80::1%eth0', '[::1]', '2001:db8::/32', '::1 ', '1.2.3.4\n',
  ];
  for (const text of garbage) {
    it(`parseIp(${JSON.stringify(text)}) is null`, () => {
      assert.equal(parseIp(text), null);
    });
  }

  it('never throws on arbitrary strings (1000 runs)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 60 }), (text) => {
      const a = parseIp(text);
      if (a !== null) assert.equal(parseIp(a.text)!.text, a.text);
      parseEndpoint(text);
    }), { numRuns: 1000 });
  });
});

describe('address: endpoints', () => {
  it('parses IPv4 endpoints and bracketed IPv6 endpoints', () => {
    const v4 = parseEndpoint('198.18.2.1:8080');
    assert.ok(v4);
    assert.equal(v4.address.text, '198.18.2.1');
    assert.equal(v4.port, 8080);
    assert.equal(formatEndpoint(v4), '198.18.2.1:8080');

    const v6 = parseEndpoint('[2001:DB8:0::1]:443');
    assert.ok(v6);
    assert.equal(v6.address.family, 6);
    assert.equal(v6.address.text, '2001:db8::1');
    assert.equal(v6.port, 443);
    assert.equal(formatEndpoint(v6), '[2001:db8::1]:443');

    assert.equal(parseEndpoint('1.2.3.4:1')!.port, 1);
    assert.equal(parseEndpoint('1.2.3.4:65535')!.port, 65535);
  });

  const bad = [
    '2001:db8::1:8080', // IPv6 without brackets: the port is ambiguous
    '[1.2.3.4]:80', // brackets are for IPv6 only (RFC 3986 §3.2.2)
    '1.2.3.4:0', '1.2.3.4:65536', '1.2.3.4:999999', '1.2.3.4:', '1.2.3.4', '1.2.3.4:+80', '1.2.3.4:8o',
    ':80', '[::1]', '[::1]:', '[::1]80', '[fe80::1%eth0]:80', 'localhost:80', '[::1]:80 ', ' 1.2.3.4:80', '1.2.3.4:80:80',
  ];
  for (const text of bad) {
    it(`parseEndpoint(${JSON.stringify(text)}) is null`, () => {
      assert.equal(parseEndpoint(text), null);
    });
  }

  it('round-trips random endpoints through text (1000 runs)', () => {
    const v4 = fc.integer({ min: 0, max: 0xffffffff }).map((n) => formatIpv4(n));
    const v6 = ipv6Words.map((w) => formatIpv6(wordsToBytes(w), 0));
    fc.assert(fc.property(fc.oneof(v4, v6), fc.integer({ min: 1, max: 65535 }), (addr, port) => {
      const text = addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
      const ep = parseEndpoint(text);
      assert.ok(ep, text);
      assert.equal(ep.port, port);
      assert.equal(formatEndpoint(ep), text);
    }), { numRuns: 1000 });
  });
});

describe('address: loopback', () => {
  it('recognises 127.0.0.0/8 and ::1 only', () => {
    assert.equal(isLoopback(parseIp('127.10.0.1')!), true);
    assert.equal(isLoopback(parseIp('127.255.255.255')!), true);
    assert.equal(isLoopback(parseIp('128.0.0.1')!), false);
    assert.equal(isLoopback(parseIp('::1')!), true);
    assert.equal(isLoopback(parseIp('::')!), false);
    assert.equal(isLoopback(parseIp('::ffff:127.0.0.1')!), false);
    assert.equal(isLoopback(parseIp('1::1')!), false);
  });
});
