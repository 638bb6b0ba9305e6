// TunLink against a real kernel: each case runs tun-link-child.js inside a
// fresh network namespace (so no device or packet reaches the host's own
// namespace) and asserts on what the child saw. Needs root; name checks do not.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { LinkError, TunLink, checkDeviceName } from '../../src/link/tun-link.js';
import { TUN_ADDON_PATH } from '../../src/native/addon.js';
import { NetnsSandbox, skipUnlessRoot, type RunResult } from '../support/netns.js';

const CHILD = fileURLToPath(new URL('./tun-link-child.js', import.meta.url));

// What tun-link-child.js reports.
interface ErrorSeen {
  code?: string;
  name?: string;
  message?: string;
}
interface PacketSeen {
  slot: number;
  offset: number;
  length: number;
  hex: string;
}
interface DatagramSeen {
  data: string;
  from: string;
  port: number;
}
interface IoReport {
  name: string;
  ioUring: boolean;
  ioUringRefused: string | null;
  mtu: number;
  busy: ErrorSeen | null;
  conflict: ErrorSeen | null;
  v4notified: boolean;
  v4read: PacketSeen | null;
  v4accepted: number;
  v4received: DatagramSeen | null;
  v6notified: boolean;
  v6read: PacketSeen | null;
  v6accepted: number;
  v6received: DatagramSeen | null;
  truncated: { length?: number; beyondSlotsUntouched: boolean };
  readAfterClose: number;
  writeAfterClose: number;
  deviceAfterClose: boolean;
}

interface BurstReport {
  ioUring: boolean;
  ioUringRefused: string | null;
  payloads: string[];
  readCounts: number[];
  accepted: number[];
  received: string[];
}

function parse<T>(result: RunResult): T {
  assert.equal(result.timedOut, false, `child timed out; stderr: ${result.stderr}`);
  const line = result.stdout.trim().split('\n').pop() ?? '';
  let out: T & { failed?: string };
  try {
    out = JSON.parse(line) as T & { failed?: string };
  } catch {
    assert.fail(`child printed no JSON (exit ${result.code}); stdout: ${result.stdout}; stderr: ${result.stderr}`);
  }
  assert.equal(out.failed, undefined, `child failed: ${out.failed}`);
  assert.equal(result.code, 0, result.stderr);
  return out;
}

function canRunTun(t: TestContext): boolean {
  if (!skipUnlessRoot(t, 'opens TUN devices inside a network namespace')) return false;
  if (!existsSync(TUN_ADDON_PATH)) {
    // Not a skip: a missing addon is a broken build, and CI must say so.
    assert.fail(`the TUN addon is not built (${TUN_ADDON_PATH}): run npm install`);
  }
  return true;
}

test('TunLink.open rejects names the kernel would refuse, with TUN_BAD_NAME', () => {
  for (const name of ['a-name-of-16-byt', '', 'has/slash', 'has space', '..']) {
    assert.throws(
      () => TunLink.open(name),
      (error: unknown) => error instanceof LinkError && error.code === 'TUN_BAD_NAME' && error.device === name && /device name/.test(error.message),
      `name ${JSON.stringify(name)}`,
    );
  }
  assert.equal(checkDeviceName('hlb0'), null);
  assert.equal(checkDeviceName('a-name-of-15-by'), null);
});

test('TunLink.open rejects an MTU outside 68..65535 before touching the device', () => {
  assert.throws(() => TunLink.open('hlb0', { mtu: 67 }), { code: 'TUN_CONFIG_FAILED' });
  assert.throws(() => TunLink.open('hlb0', { mtu: 65536 }), { code: 'TUN_CONFIG_FAILED' });
});

/** True when this kernel lets root set up an io_uring (kernel.io_uring_disabled 0 or 1); skips otherwise. */
function canRunRing(t: TestContext): boolean {
  const disabled = existsSync(IO_URING_DISABLED) ? Number(readFileSync(IO_URING_DISABLED, 'utf8').trim()) : 0;
  if (disabled === 2) {
    t.skip('kernel.io_uring_disabled is 2: no io_uring on this host');
    return false;
  }
  return true;
}
const IO_URING_DISABLED = '/proc/sys/kernel/io_uring_disabled';

for (const ring of [false, true]) {
  test(`TunLink moves IPv4 and IPv6 packets between the kernel and the caller's batch${ring ? ', through io_uring' : ''}`, async (t) => {
    if (!canRunTun(t) || (ring && !canRunRing(t))) return;
    const sandbox = NetnsSandbox.forTest(t);
    const ns = sandbox.namespace();
    // The child's own waits are bounded at 15 s each (tun-link-child.ts); this bounds the whole child.
    const out = parse<IoReport>(await sandbox.run(ns, [process.execPath, CHILD, ring ? 'io-ring' : 'io'], { timeoutMs: 120_000 }));
    assert.equal(out.ioUring, ring, `io_uring ${ring ? 'on' : 'off'} as asked (refused: ${out.ioUringRefused})`);
    checkIo(out);
  });
}

test('TunLink through io_uring reads a burst larger than its batch in order, and writes batches whole', async (t) => {
  if (!canRunTun(t) || !canRunRing(t)) return;
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  const out = parse<BurstReport>(await sandbox.run(ns, [process.execPath, CHILD, 'burst'], { timeoutMs: 120_000 }));
  assert.equal(out.ioUring, true, `io_uring refused: ${out.ioUringRefused}`);
  assert.deepEqual(out.payloads, Array.from({ length: 40 }, (_, i) => `burst-${i}`), 'every datagram, in the order sent');
  assert.ok(out.readCounts.every((n) => n >= 1 && n <= 8), `no read returns more than the batch holds: ${out.readCounts.join(',')}`);
  assert.deepEqual(out.accepted, [8, 8, 4], 'each batch accepted whole');
  assert.deepEqual([...out.received].sort(), Array.from({ length: 20 }, (_, i) => `reply-${i}`).sort(), 'the socket got every reply');
});

interface CycleReport {
  ioUring: boolean;
  ioUringRefused: string | null;
  first: { written: number; read: number; count: number };
  payloads: string[];
  received: string[];
  idle: { written: number; read: number; count: number };
  shared: string;
  afterClose: { written: number; read: number };
}

for (const ring of [false, true]) {
  test(`TunLink.cycle writes one batch and reads the next in one call${ring ? ', through io_uring' : ''}`, async (t) => {
    if (!canRunTun(t) || (ring && !canRunRing(t))) return;
    const sandbox = NetnsSandbox.forTest(t);
    const ns = sandbox.namespace();
    const out = parse<CycleReport>(await sandbox.run(ns, [process.execPath, CHILD, ring ? 'cycle-ring' : 'cycle'], { timeoutMs: 120_000 }));
    assert.equal(out.ioUring, ring, `io_uring ${ring ? 'on' : 'off'} as asked (refused: ${out.ioUringRefused})`);
    assert.equal(out.first.written, 2, 'both replies accepted, the garbage packet dropped alone');
    assert.ok(out.first.read >= 1 && out.first.read <= 8, `the first cycle read what was waiting: ${out.first.read}`);
    assert.equal(out.first.count, out.first.read, 'the read batch\'s count is what was read');
    assert.deepEqual(out.payloads, Array.from({ length: 6 }, (_, i) => `cycle-${i}`), 'every datagram, in the order sent');
    assert.deepEqual([...out.received].sort(), ['reply-0', 'reply-1'], 'the socket got both replies');
    assert.deepEqual(out.idle, { written: 0, read: 0, count: 0 }, 'nothing out and nothing waiting');
    assert.match(out.shared, /^RangeError: .*share a buffer/, 'batches over one buffer are refused');
    assert.deepEqual(out.afterClose, { written: 0, read: 0 });
  });
}

function checkIo(out: IoReport): void {
  assert.equal(out.name, 'hlbt0');
  assert.equal(out.mtu, 1400, 'the mtu option sets the device MTU and link.mtu reports it');
  assert.equal(out.busy?.code, 'TUN_BUSY', 'a second open of an attached device');
  assert.match(out.busy?.message ?? '', /another process/);
  assert.equal(out.conflict?.code, 'TUN_NAME_CONFLICT', 'opening "lo" as a TUN device');

  // The datagram the kernel routed into the device, byte for byte where it is fixed.
  assert.equal(out.v4notified, true, 'onReadable fired when the datagram reached the device');
  const v4 = out.v4read;
  assert.ok(v4, 'the IPv4 datagram came out of the device');
  assert.equal(v4.offset, v4.slot * 2048, 'packet i sits in slot i');
  const p4 = Buffer.from(v4.hex, 'hex');
  assert.equal(v4.length, 20 + 8 + 'hostlb-v4'.length);
  assert.equal(p4[0], 0x45, 'IPv4, 20-byte header, no packet-information prefix (IFF_NO_PI)');
  assert.equal(p4.readUInt16BE(2), v4.length, 'total length');
  assert.equal(p4[9], 17, 'UDP');
  assert.deepEqual([...p4.subarray(12, 16)], [198, 18, 0, 1], 'source address');
  assert.deepEqual([...p4.subarray(16, 20)], [198, 18, 0, 2], 'destination address');
  assert.equal(p4.readUInt16BE(22), 9999, 'destination port');
  assert.equal(p4.subarray(28).toString(), 'hostlb-v4');

  assert.equal(out.v4accepted, 1, 'the garbage packet is dropped alone; the reply is accepted');
  assert.deepEqual(out.v4received, { data: 'reply-v4', from: '198.18.0.2', port: 9999 }, 'the socket got the crafted reply');

  assert.equal(out.v6notified, true, 'onReadable fired for the IPv6 datagram');
  const v6 = out.v6read;
  assert.ok(v6, 'the IPv6 datagram came out of the device');
  const p6 = Buffer.from(v6.hex, 'hex');
  assert.equal(p6[0] >> 4, 6);
  assert.equal(p6[6], 17, 'next header UDP');
  assert.equal(p6.subarray(24, 40).toString('hex'), '20010db8000000000000000000000002', 'destination address');
  assert.equal(p6.subarray(48).toString(), 'hostlb-v6');
  assert.equal(out.v6accepted, 1);
  assert.deepEqual(out.v6received, { data: 'reply-v6', from: '2001:db8::2', port: 9999 });

  assert.deepEqual(out.truncated, { length: 64, beyondSlotsUntouched: true }, 'a packet larger than its slot is cut to the slot');
  assert.equal(out.readAfterClose, 0);
  assert.equal(out.writeAfterClose, 0);
  assert.equal(out.deviceAfterClose, false, 'a non-persistent device goes away with its fd');
}

test('TunLink persist keeps the device after close; setPersist(false) lets it go', async (t) => {
  if (!canRunTun(t)) return;
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  const out = parse<Record<string, unknown>>(await sandbox.run(ns, [process.execPath, CHILD, 'persist'], { timeoutMs: 60_000 }));
  assert.deepEqual(out, { afterPersistentClose: true, reattached: 'hlbt1', afterNonPersistentClose: false });
});

test('TunLink.open without CAP_NET_ADMIN fails with TUN_PERMISSION and says what to do', async (t) => {
  if (!canRunTun(t)) return;
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  // Root without CAP_NET_ADMIN: drop it from the bounding and inheritable sets
  // so the exec'd node does not regain it.
  const argv = ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin', process.execPath, CHILD, 'no-privilege'];
  const out = parse<{ open: ErrorSeen | null; exists: boolean }>(await sandbox.run(ns, argv, { timeoutMs: 60_000 }));
  assert.equal(out.open?.code, 'TUN_PERMISSION');
  assert.equal(out.open?.name, 'LinkError');
  assert.match(out.open?.message ?? '', /^hostlb needs CAP_NET_ADMIN to open \/dev\/net\/tun: run it as root/);
  assert.equal(out.exists, false);
});
