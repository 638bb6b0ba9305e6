// The sk_lookup dispatch against a real kernel, each case in a network
// namespace of its own: daemons (small Node processes) listen on their own
// addresses, the test takes their sockets with pidfd_getfd, loads and attaches
// the program, and clients connect to the cluster address from inside the
// namespace. Asserts who accepted, what addresses the daemon saw, and the
// program's counters. Needs root; the verifier case needs only CAP_BPF.
// Every wait ends on an event (a line from a child), bounded by a hang guard.

import assert from 'node:assert/strict';
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { Assembler, R0, R2 } from '../../src/bpf/asm.js';
import { takeListener } from '../../src/bpf/listener.js';
import { BUCKETS, SkLookupDispatch, TRIES, bucketCandidates, flowHash } from '../../src/bpf/sk-lookup.js';
import { PortMode } from '../../src/bpf/load-count.js';
import { cgroupRoot } from '../../src/dataplane/socket/cgroup-root.js';
import { AttachType, BpfVerifierError, ProgramType, closeFd, loadProgram, updateElement } from '../../src/bpf/syscalls.js';
import { parseIp } from '../../src/wire/address.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

const CHILD = fileURLToPath(new URL('../support/sk-lookup-child.js', import.meta.url));
// Hang guard for one awaited event; a busy machine takes seconds, a broken run forever.
const EVENT_TIMEOUT_MS = 30_000;
const SEED = 0x5eed;

const CLUSTER_V4 = '198.18.100.1';
const CLIENT_V4 = '198.18.3.1';
const DAEMONS_V4 = ['198.18.2.1', '198.18.2.2'];
const CLUSTER_V6 = '2001:db8:100::1';
const CLIENT_V6 = '2001:db8:3::1';
const DAEMONS_V6 = ['2001:db8:2::1', '2001:db8:2::2'];
const CLUSTER_PORT = 80;
const DAEMON_PORT = 8080;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Line = Record<string, any>;

/** The JSON lines a child prints; take() hands each matching line out once, in order. */
class Lines {
  private readonly lines: Line[] = [];
  private readonly taken = new Set<Line>();
  private readonly waiters = new Set<() => void>();
  private stderr = '';

  constructor(readonly what: string, child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      try {
        this.lines.push(JSON.parse(text) as Line);
      } catch {
        this.stderr += `(stdout) ${text}\n`;
      }
      for (const wake of this.waiters) wake();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
  }

  take(predicate: (line: Line) => boolean, description: string): Promise<Line> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = this.lines.find((l) => !this.taken.has(l) && predicate(l));
        if (line === undefined) return false;
        this.taken.add(line);
        this.waiters.delete(wake);
        clearTimeout(timer);
        resolve(line);
        return true;
      };
      const wake = (): void => void check();
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        reject(new Error(`${this.what}: no ${description} within ${EVENT_TIMEOUT_MS} ms; stderr: ${this.stderr.trim()}`));
      }, EVENT_TIMEOUT_MS);
      this.waiters.add(wake);
      check();
    });
  }

  /** Resolves with the lines matching `predicate` once there are `count` of them (taken or not). */
  waitCount(predicate: (line: Line) => boolean, count: number, description: string): Promise<Line[]> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const matching = this.all(predicate);
        if (matching.length < count) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(matching);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        const seen = this.all(predicate).map((l) => JSON.stringify(l));
        reject(new Error(`${this.what}: ${seen.length} of ${count} ${description} within ${EVENT_TIMEOUT_MS} ms: ${seen.join(' ')}`));
      }, EVENT_TIMEOUT_MS);
      this.waiters.add(check);
      check();
    });
  }

  /** Lines matching `predicate` so far (taken or not). */
  all(predicate: (line: Line) => boolean): Line[] {
    return this.lines.filter(predicate);
  }
}

interface Daemon {
  name: string;
  pid: number;
  child: ChildProcess;
  lines: Lines;
}

async function startDaemon(sandbox: NetnsSandbox, ns: Namespace, kind: 'tcp' | 'udp', name: string, address: string, port: number, hold = false): Promise<Daemon> {
  const argv = [process.execPath, CHILD, `${kind}-daemon`, name, address, String(port)];
  if (hold) argv.push('hold');
  const child = sandbox.spawn(ns, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = new Lines(`daemon ${name}`, child);
  const ready = await lines.take((l) => l.event === 'listening', 'listening line');
  return { name, pid: ready.pid as number, child, lines };
}

async function tcpClient(sandbox: NetnsSandbox, ns: Namespace, host: string, localAddress: string, localPort?: number, port = CLUSTER_PORT): Promise<Line> {
  const argv = [process.execPath, CHILD, 'tcp-client', host, String(port), localAddress];
  if (localPort !== undefined) argv.push(String(localPort));
  const result = await sandbox.run(ns, argv, { timeoutMs: EVENT_TIMEOUT_MS });
  const last = result.stdout.trim().split('\n').pop() ?? '';
  assert.ok(last.startsWith('{'), `tcp-client printed nothing useful: ${result.stdout} ${result.stderr}`);
  return JSON.parse(last) as Line;
}

function addLo(ns: Namespace, address: string): void {
  if (address.includes(':')) ns.ip('-6', 'addr', 'add', `${address}/128`, 'dev', 'lo', 'nodad');
  else ns.ip('addr', 'add', `${address}/32`, 'dev', 'lo');
}

/** A namespace with the cluster, client and daemon addresses on lo, and a netns fd closed after the test. */
function setUp(t: TestContext, addresses: string[]): { sandbox: NetnsSandbox; ns: Namespace; netnsFd: number; netnsPath: string } {
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  for (const address of addresses) addLo(ns, address);
  const netnsPath = `/run/netns/${ns.name}`;
  const netnsFd = openSync(netnsPath, 'r');
  t.after(() => closeSync(netnsFd));
  return { sandbox, ns, netnsFd, netnsPath };
}

function dispatchFor(t: TestContext): SkLookupDispatch {
  const dispatch = SkLookupDispatch.create({ maxPorts: 4, maxSlots: 8, hashSeed: SEED });
  t.after(() => dispatch.close());
  return dispatch;
}

/** Takes the daemon's socket with pidfd_getfd (found through /proc), puts it in `slot`, closes the duplicate. */
function adoptSocket(dispatch: SkLookupDispatch, slot: number, protocol: 'tcp' | 'udp', daemon: Daemon, address: string, port: number): void {
  const { fd, owner } = takeListener({ protocol, address, port, netnsPid: daemon.pid });
  assert.equal(owner.pid, daemon.pid);
  try {
    dispatch.setSocket(slot, fd);
  } finally {
    closeFd(fd);
  }
}

/** A namespace with daemons A and B in slots 1 and 2 of a dispatch routing the cluster port to index 0 (no buckets yet, not attached). */
async function twoTcpDaemons(t: TestContext, family: 4 | 6): Promise<ReturnType<typeof setUp> & { a: Daemon; b: Daemon; dispatch: SkLookupDispatch }> {
  const [cluster, client, daemons] = family === 6 ? [CLUSTER_V6, CLIENT_V6, DAEMONS_V6] : [CLUSTER_V4, CLIENT_V4, DAEMONS_V4];
  const site = setUp(t, [cluster, client, ...daemons]);
  const a = await startDaemon(site.sandbox, site.ns, 'tcp', 'A', daemons[0], DAEMON_PORT);
  const b = await startDaemon(site.sandbox, site.ns, 'tcp', 'B', daemons[1], DAEMON_PORT);
  const dispatch = dispatchFor(t);
  adoptSocket(dispatch, 1, 'tcp', a, daemons[0], DAEMON_PORT);
  adoptSocket(dispatch, 2, 'tcp', b, daemons[1], DAEMON_PORT);
  dispatch.setPort({ protocol: 'tcp', family, port: CLUSTER_PORT, address: cluster }, 0);
  return { ...site, a, b, dispatch };
}

/** The first candidate bucket of a client at `address`:`port`. */
function firstBucket(address: string, port: number): number {
  return bucketCandidates(flowHash(parseIp(address)!.bytes, port, SEED))[0];
}

test('sk-lookup: TCP connections go to the daemon the buckets name, with the real client and the cluster address', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, CLIENT_V4, ...DAEMONS_V4]);
  const a = await startDaemon(sandbox, ns, 'tcp', 'A', DAEMONS_V4[0], DAEMON_PORT);
  const b = await startDaemon(sandbox, ns, 'tcp', 'B', DAEMONS_V4[1], DAEMON_PORT);
  const dispatch = dispatchFor(t);
  adoptSocket(dispatch, 1, 'tcp', a, DAEMONS_V4[0], DAEMON_PORT);
  adoptSocket(dispatch, 2, 'tcp', b, DAEMONS_V4[1], DAEMON_PORT);
  assert.notEqual(dispatch.socketCookie(1), null);
  dispatch.setPort({ protocol: 'tcp', family: 4, port: CLUSTER_PORT, address: CLUSTER_V4 }, 0);
  dispatch.setBuckets(0, [1]);

  // Not attached yet: nothing listens on the cluster address.
  assert.equal((await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4)).code, 'ECONNREFUSED');
  dispatch.attach(netnsFd);
  assert.equal(dispatch.attachedNetnsInode(), statSync(`/run/netns/${ns.name}`).ino);

  const first = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
  assert.equal(first.ok, true, JSON.stringify(first));
  assert.equal(first.greeting, 'hello from A');
  const acceptedA = await a.lines.take((l) => l.event === 'accepted', 'accepted connection');
  assert.equal(acceptedA.local, `${CLUSTER_V4}:${CLUSTER_PORT}`);
  assert.equal(acceptedA.remote, first.local, 'the daemon sees the real client');
  assert.deepEqual(dispatch.counters(1), { assigned: 1, noSocket: 0, refused: 0 });

  dispatch.setBuckets(0, [2]);
  const second = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
  assert.equal(second.greeting, 'hello from B', JSON.stringify(second));
  const acceptedB = await b.lines.take((l) => l.event === 'accepted', 'accepted connection');
  assert.equal(acceptedB.local, `${CLUSTER_V4}:${CLUSTER_PORT}`);
  assert.equal(acceptedB.remote, second.local);
  assert.equal(dispatch.counters(2).assigned, 1);

  // Traffic that is not a cluster port's is untouched: A's own address and
  // port reach A's socket as usual, and port 80 there stays closed.
  const direct = await tcpClient(sandbox, ns, DAEMONS_V4[0], CLIENT_V4, undefined, DAEMON_PORT);
  assert.equal(direct.greeting, 'hello from A', JSON.stringify(direct));
  assert.equal((await a.lines.take((l) => l.event === 'accepted', 'accepted connection')).local, `${DAEMONS_V4[0]}:${DAEMON_PORT}`);
  assert.equal((await tcpClient(sandbox, ns, DAEMONS_V4[0], CLIENT_V4)).code, 'ECONNREFUSED');
  assert.deepEqual(dispatch.totals(), { matched: 2, unassigned: 0 });
  assert.equal(dispatch.counters(1).assigned, 1);

  // B closes its socket: it leaves the sockmap by itself, and with every bucket on B
  // each of the TRIES candidates finds the slot empty; the kernel then refuses.
  b.child.stdin!.write('close\n');
  await b.lines.take((l) => l.event === 'closed', 'closed line');
  assert.equal(dispatch.socketCookie(2), null);
  const refused = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
  assert.equal(refused.code, 'ECONNREFUSED', JSON.stringify(refused));
  assert.deepEqual(dispatch.counters(2), { assigned: 1, noSocket: TRIES, refused: 0 });
  assert.deepEqual(dispatch.totals(), { matched: 3, unassigned: 1 });

  // Fallback: a client whose first candidate is B's (empty) bucket and whose
  // second is A's is served by A.
  let port = 42000;
  while (new Set(bucketCandidates(flowHash(parseIp(CLIENT_V4)!.bytes, port, SEED)).slice(0, 2)).size < 2) port++;
  const [c0, c1] = bucketCandidates(flowHash(parseIp(CLIENT_V4)!.bytes, port, SEED));
  const table = new Array<number>(BUCKETS).fill(2);
  table[c1] = 1;
  assert.equal(table[c0], 2);
  dispatch.setBuckets(0, table);
  const fallback = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4, port);
  assert.equal(fallback.greeting, 'hello from A', JSON.stringify(fallback));
  const acceptedFallback = await a.lines.take((l) => l.event === 'accepted', 'accepted connection');
  assert.equal(acceptedFallback.remote, `${CLIENT_V4}:${port}`);
  assert.deepEqual(dispatch.counters(2), { assigned: 1, noSocket: TRIES + 1, refused: 0 });
  assert.equal(dispatch.counters(1).assigned, 2);
});

test('sk-lookup: the datagrams of one UDP flow land on one daemon, the one the flow hash names', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, CLIENT_V4, ...DAEMONS_V4]);
  const udpPort = 7000;
  const daemons = [await startDaemon(sandbox, ns, 'udp', 'A', DAEMONS_V4[0], udpPort), await startDaemon(sandbox, ns, 'udp', 'B', DAEMONS_V4[1], udpPort)];
  const dispatch = dispatchFor(t);
  adoptSocket(dispatch, 1, 'udp', daemons[0], DAEMONS_V4[0], udpPort);
  adoptSocket(dispatch, 2, 'udp', daemons[1], DAEMONS_V4[1], udpPort);
  dispatch.setPort({ protocol: 'udp', family: 4, port: 9000, address: CLUSTER_V4 }, 0);
  dispatch.setBuckets(0, [1, 2]); // even buckets A, odd B
  dispatch.attach(netnsFd);

  const ports = Array.from({ length: 8 }, (_, i) => 41000 + i);
  const perPort = 3;
  const expected = new Map(ports.map((p) => [p, firstBucket(CLIENT_V4, p) % 2 === 0 ? 'A' : 'B']));
  assert.equal(new Set(expected.values()).size, 2, 'the chosen ports spread over both daemons');

  const sent = await sandbox.run(ns, [process.execPath, CHILD, 'udp-client', CLUSTER_V4, '9000', CLIENT_V4, String(perPort), ports.join(',')], { timeoutMs: EVENT_TIMEOUT_MS });
  assert.match(sent.stdout, /"sent":24/, sent.stderr);
  // Each daemon's share is known in advance: wait for it, then check who got what.
  const isDatagram = (l: Line): boolean => l.event === 'datagram';
  const lines = await Promise.all(
    daemons.map((d) => d.lines.waitCount(isDatagram, perPort * ports.filter((p) => expected.get(p) === d.name).length, 'datagrams')),
  );
  const seen = new Map<number, Set<string>>();
  for (const line of lines.flat()) {
    const port = Number(String(line.remote).split(':').pop());
    assert.equal(String(line.remote), `${CLIENT_V4}:${port}`);
    seen.set(port, (seen.get(port) ?? new Set()).add(line.name as string));
  }
  for (const port of ports) assert.deepEqual([...(seen.get(port) ?? [])], [expected.get(port)], `client port ${port}`);
  assert.equal(dispatch.counters(1).assigned + dispatch.counters(2).assigned, ports.length * perPort);

  // A TCP port whose buckets name a UDP socket: bpf_sk_assign refuses it
  // (EPROTOTYPE) on every candidate, the kernel's own lookup refuses the client.
  dispatch.setPort({ protocol: 'tcp', family: 4, port: 9000, address: CLUSTER_V4 }, 1);
  dispatch.setBuckets(1, [1]);
  const before = dispatch.counters(1);
  assert.equal((await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4, undefined, 9000)).code, 'ECONNREFUSED');
  assert.deepEqual(dispatch.counters(1), { ...before, refused: before.refused + TRIES });
});

test('sk-lookup: IPv6 connections go to the daemon the flow hash names', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  const { sandbox, ns, netnsFd, a, b, dispatch } = await twoTcpDaemons(t, 6);
  dispatch.setBuckets(0, [1]);
  dispatch.attach(netnsFd);

  const first = await tcpClient(sandbox, ns, CLUSTER_V6, CLIENT_V6);
  assert.equal(first.greeting, 'hello from A', JSON.stringify(first));
  const accepted = await a.lines.take((l) => l.event === 'accepted', 'accepted connection');
  assert.equal(accepted.local, `[${CLUSTER_V6}]:${CLUSTER_PORT}`);
  assert.equal(accepted.remote, first.local);

  // Alternate buckets: each client port meets the daemon its first candidate names.
  dispatch.setBuckets(0, [1, 2]);
  for (const port of [43000, 43001, 43002, 43003]) {
    const want = firstBucket(CLIENT_V6, port) % 2 === 0 ? 'A' : 'B';
    const reply = await tcpClient(sandbox, ns, CLUSTER_V6, CLIENT_V6, port);
    assert.equal(reply.greeting, `hello from ${want}`, `client port ${port}: ${JSON.stringify(reply)}`);
    const line = await (want === 'A' ? a : b).lines.take((l) => l.event === 'accepted', 'accepted connection');
    assert.equal(line.remote, `[${CLIENT_V6}]:${port}`);
  }
  assert.equal(dispatch.counters(1).assigned + dispatch.counters(2).assigned, 5);
});

/** A client process holding `count` connections to the cluster port, opened at once. */
async function holdConnections(sandbox: NetnsSandbox, ns: Namespace, count: number, host = CLUSTER_V4, port = CLUSTER_PORT): Promise<{ greetings: string[]; release(): Promise<void> }> {
  const child = sandbox.spawn(ns, [process.execPath, CHILD, 'tcp-hold', host, String(port), CLIENT_V4, String(count)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = new Lines('tcp-hold', child);
  const held = await lines.take((l) => l.event === 'held' || l.event === 'failed', 'held line');
  assert.equal(held.event, 'held', JSON.stringify(held));
  return {
    greetings: held.greetings as string[],
    release: async () => {
      child.stdin!.write('close\n');
      await lines.take((l) => l.event === 'released', 'released line');
    },
  };
}

/** How many greetings came from each daemon, in the order of `names`. */
function tally(greetings: string[], names: string[]): number[] {
  return names.map((n) => greetings.filter((g) => g === `hello from ${n}`).length);
}

/** The cgroup v2 root the counting program attaches to, or null (and `t` skipped) when none is mounted. */
function cgroupRootOrSkip(t: TestContext): string | null {
  const root = cgroupRoot();
  if (root === null) t.skip('no cgroup2 file system is mounted');
  return root;
}

function attachCounting(dispatch: SkLookupDispatch, root: string): void {
  const cgroup = openSync(root, 'r');
  try {
    dispatch.attachCounting(cgroup);
  } finally {
    closeSync(cgroup);
  }
}

/** Polls (every 20 ms, bounded by the hang guard) until `read()` equals `want`; returns the last value. */
async function settle<T>(read: () => T, want: T): Promise<T> {
  const deadline = Date.now() + EVENT_TIMEOUT_MS;
  let value = read();
  while (JSON.stringify(value) !== JSON.stringify(want) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    value = read();
  }
  return value;
}

test('sk-lookup: least-loaded ports pick by the kernel\'s own connection counts, per connection', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, BPF programs and a cgroup v2 mount')) return;
  const root = cgroupRootOrSkip(t);
  if (root === null) return;
  const names = ['A', 'B', 'C'];
  const addresses = ['198.18.2.1', '198.18.2.2', '198.18.2.3'];
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, CLIENT_V4, ...addresses]);
  const daemons = await Promise.all(names.map((n, i) => startDaemon(sandbox, ns, 'tcp', n, addresses[i], DAEMON_PORT, true)));
  const dispatch = dispatchFor(t);
  daemons.forEach((d, i) => adoptSocket(dispatch, i + 1, 'tcp', d, addresses[i], DAEMON_PORT));
  dispatch.setPort({ protocol: 'tcp', family: 4, port: CLUSTER_PORT, address: CLUSTER_V4 }, 0);
  // The buckets name A alone: any connection not on A was placed by load.
  dispatch.setBuckets(0, [1]);
  dispatch.setMembers(0, PortMode.least, [1, 2, 3].map((slot) => ({ slot, weight: 1 })));
  attachCounting(dispatch, root);
  assert.equal(dispatch.counting, true);
  dispatch.attach(netnsFd);
  const loads = (): Array<{ active: number; pending: number }> => [1, 2, 3].map((slot) => {
    const { active, pending } = dispatch.load(slot);
    return { active, pending };
  });

  // Nine connections opened together: each daemon gets three (lc), and holds them.
  const first = await holdConnections(sandbox, ns, 9);
  assert.deepEqual(tally(first.greetings, names), [3, 3, 3], first.greetings.join(', '));
  assert.deepEqual(await settle(loads, [3, 3, 3].map((active) => ({ active, pending: 0 }))), [3, 3, 3].map((active) => ({ active, pending: 0 })));

  // Closed connections leave the counts.
  await first.release();
  const idle = [0, 0, 0].map((active) => ({ active, pending: 0 }));
  assert.deepEqual(await settle(loads, idle), idle, 'every count back to 0 once the client closed');

  // One connection at a time, each closed before the next: every daemon idle, a tie each time,
  // which the port's turns break (as nginx's least_conn breaks its ties by round robin).
  const oneByOne: string[] = [];
  for (let i = 0; i < 6; i++) {
    const held = await holdConnections(sandbox, ns, 1);
    oneByOne.push(held.greetings[0].replace('hello from ', ''));
    await held.release();
    assert.deepEqual(await settle(loads, idle), idle, `every count back to 0 after connection ${i + 1}`);
  }
  assert.deepEqual([...oneByOne.slice(0, 3)].sort(), names, `three ties, three daemons: ${oneByOne.join(' ')}`);
  assert.deepEqual(oneByOne.slice(3), oneByOne.slice(0, 3), `and again in the same order: ${oneByOne.join(' ')}`);

  // wlc: weights 2, 1, 1 → of 8 connections A takes 4.
  dispatch.setMembers(0, PortMode.least, [{ slot: 1, weight: 2 }, { slot: 2, weight: 1 }, { slot: 3, weight: 1 }]);
  const second = await holdConnections(sandbox, ns, 8);
  assert.deepEqual(tally(second.greetings, names), [4, 2, 2], second.greetings.join(', '));

  // B is loaded now (it holds 2): with A out of the members, B and C take the
  // next two connections one each; then C closes its socket, and the pick that
  // lands on it falls back to the buckets (A).
  dispatch.setMembers(0, PortMode.least, [{ slot: 2, weight: 1 }, { slot: 3, weight: 1 }]);
  const third = await holdConnections(sandbox, ns, 2);
  assert.deepEqual(tally(third.greetings, names), [0, 1, 1], third.greetings.join(', '));
  daemons[2].child.stdin!.write('close\n');
  await daemons[2].lines.take((l) => l.event === 'closed', 'closed line');
  dispatch.setMembers(0, PortMode.least, [{ slot: 3, weight: 1 }]);
  const fourth = await holdConnections(sandbox, ns, 1);
  assert.deepEqual(fourth.greetings, ['hello from A']);
  assert.equal(dispatch.counters(3).noSocket, 1);

  // Mode hash: the buckets decide again.
  dispatch.setMembers(0, PortMode.hash, []);
  const fifth = await holdConnections(sandbox, ns, 2);
  assert.deepEqual(fifth.greetings, ['hello from A', 'hello from A']);
  for (const held of [second, third, fourth, fifth]) await held.release();
  assert.deepEqual(await settle(loads, idle), idle, 'every count back to 0 once the client closed');
});

test('sk-lookup: a slot given to another daemon counts nothing of its old daemon, which runs on', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, BPF programs and a cgroup v2 mount')) return;
  const root = cgroupRootOrSkip(t);
  if (root === null) return;
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, CLIENT_V4, ...DAEMONS_V4]);
  const [a, b] = await Promise.all(['A', 'B'].map((n, i) => startDaemon(sandbox, ns, 'tcp', n, DAEMONS_V4[i], DAEMON_PORT, true)));
  const dispatch = dispatchFor(t);
  adoptSocket(dispatch, 1, 'tcp', a, DAEMONS_V4[0], DAEMON_PORT);
  dispatch.setPort({ protocol: 'tcp', family: 4, port: CLUSTER_PORT, address: CLUSTER_V4 }, 0);
  dispatch.setBuckets(0, [1]);
  dispatch.setMembers(0, PortMode.least, [{ slot: 1, weight: 1 }]);
  attachCounting(dispatch, root);
  dispatch.attach(netnsFd);
  const active = (): number => dispatch.load(1).active;

  const throughCluster = await holdConnections(sandbox, ns, 2);
  assert.deepEqual(throughCluster.greetings, ['hello from A', 'hello from A']);
  assert.equal(await settle(active, 2), 2);

  // A leaves slot 1 but runs on, its listening socket still marked with the slot.
  dispatch.releaseSlot(1);
  assert.deepEqual(dispatch.load(1), { active: 0, pending: 0, generation: 1n });
  assert.equal(dispatch.socketCookie(1), null);
  const direct = await holdConnections(sandbox, ns, 1, DAEMONS_V4[0], DAEMON_PORT);
  assert.deepEqual(direct.greetings, ['hello from A']);

  // B takes the slot: its connection counts, A's direct one (accepted above, before B's) does not.
  adoptSocket(dispatch, 1, 'tcp', b, DAEMONS_V4[1], DAEMON_PORT);
  const toB = await holdConnections(sandbox, ns, 1);
  assert.deepEqual(toB.greetings, ['hello from B']);
  assert.equal(await settle(active, 1), 1, 'only B\'s connection counts in slot 1');

  // A's connections close (every one of its sockets but the listener gone): B's count stays.
  await throughCluster.release();
  await direct.release();
  const aConnections = (): number => ns.exec(['ss', '-Htna', 'src', DAEMONS_V4[0]]).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('LISTEN') && !l.startsWith('TIME-WAIT')).length;
  assert.equal(await settle(aConnections, 0), 0, 'A\'s connections closed');
  assert.equal(active(), 1, 'closing A\'s connections left B\'s count alone');
  await toB.release();
  assert.equal(await settle(active, 0), 0);
});

/**
 * Mode sequence (rr, wrr): sequential connections take the order the first n
 * buckets hold, in turn; a rewrite keeps the cursor; a daemon whose socket
 * closed is skipped for the next in the order.
 */
async function takesTurns(t: TestContext, atomicFetch: boolean): Promise<void> {
  const names = ['A', 'B', 'C'];
  const addresses = ['198.18.2.1', '198.18.2.2', '198.18.2.3'];
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, CLIENT_V4, ...addresses]);
  const daemons = await Promise.all(names.map((n, i) => startDaemon(sandbox, ns, 'tcp', n, addresses[i], DAEMON_PORT)));
  const dispatch = SkLookupDispatch.create({ maxPorts: 4, maxSlots: 8, hashSeed: SEED, atomicFetch });
  t.after(() => dispatch.close());
  assert.equal(dispatch.exactTurns, atomicFetch);
  daemons.forEach((d, i) => adoptSocket(dispatch, i + 1, 'tcp', d, addresses[i], DAEMON_PORT));
  dispatch.setPort({ protocol: 'tcp', family: 4, port: CLUSTER_PORT, address: CLUSTER_V4 }, 0);
  dispatch.setBuckets(0, [1, 2, 3]);
  dispatch.setSequence(0, 3);
  dispatch.attach(netnsFd);
  const served = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
      assert.equal(r.ok, true, JSON.stringify(r));
      out.push(String(r.greeting).replace('hello from ', ''));
    }
    return out;
  };

  // rr: in turn, from the first.
  assert.deepEqual(await served(7), ['A', 'B', 'C', 'A', 'B', 'C', 'A']);
  // Written again (a weight changed elsewhere): the order carries on at B, not back at A.
  dispatch.setSequence(0, 3);
  assert.deepEqual(await served(1), ['B']);

  // wrr 2:1:1 (wrr.ts's smooth order A B C A): of every four, A takes two. The cursor is at 8: position 0.
  dispatch.setBuckets(0, [1, 2, 3, 1]);
  dispatch.setSequence(0, 4);
  assert.deepEqual(await served(4), ['A', 'B', 'C', 'A']);

  // C closes its socket: its turn goes to the next in the order.
  daemons[2].child.stdin!.write('close\n');
  await daemons[2].lines.take((l) => l.event === 'closed', 'closed line');
  assert.deepEqual(await served(4), ['A', 'B', 'A', 'A']);
  assert.deepEqual(dispatch.counters(3), { assigned: 3, noSocket: 1, refused: 0 });
  assert.deepEqual(dispatch.totals(), { matched: 16, unassigned: 0 });

  // Length 0: the port goes by hash over the buckets again (all A's now).
  dispatch.setBuckets(0, [1]);
  dispatch.setSequence(0, 0);
  assert.deepEqual(await served(3), ['A', 'A', 'A']);
}

test('sk-lookup: a TCP port in mode sequence (rr, wrr) hands connections out in turn; a closed socket\'s turn goes to the next', (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  return takesTurns(t, true);
});

test('sk-lookup: mode sequence as built for Linux before 5.12 (no atomic fetch-and-add) takes the same turns one connection at a time', (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  return takesTurns(t, false);
});

test('sk-lookup: a port in mode source (sh) sends every connection of a client address to one daemon', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  const { sandbox, ns, netnsFd, dispatch } = await twoTcpDaemons(t, 4);
  dispatch.setBuckets(0, [1, 2]);
  dispatch.attach(netnsFd);
  // Client ports whose flow hashes name both daemons (found with the TypeScript twin of the hash).
  const byPort = (port: number): string => (bucketCandidates(flowHash(parseIp(CLIENT_V4)!.bytes, port, SEED))[0] % 2 === 0 ? 'A' : 'B');
  const ports = [43000, 43001, 43002, 43003, 43004, 43005, 43006, 43007];
  assert.deepEqual(new Set(ports.map(byPort)), new Set(['A', 'B']), 'the chosen client ports spread over both daemons by flow hash');
  const greetings = async (): Promise<string[]> => {
    const out: string[] = [];
    for (const port of ports) out.push(String((await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4, port)).greeting));
    return out;
  };
  assert.deepEqual(await greetings(), ports.map((p) => `hello from ${byPort(p)}`), 'mode hash: each connection by its flow hash');
  dispatch.setMembers(0, PortMode.source, []);
  const bySource = bucketCandidates(flowHash(parseIp(CLIENT_V4)!.bytes, 0, SEED))[0] % 2 === 0 ? 'A' : 'B';
  assert.deepEqual(await greetings(), ports.map(() => `hello from ${bySource}`), 'mode source: one daemon, the hash of the address alone');
});

test('sk-lookup: a wildcard port entry serves any local address of its family', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and BPF programs')) return;
  const other = '198.18.100.2';
  const { sandbox, ns, netnsFd } = setUp(t, [CLUSTER_V4, other, CLIENT_V4, DAEMONS_V4[0]]);
  const a = await startDaemon(sandbox, ns, 'tcp', 'A', DAEMONS_V4[0], DAEMON_PORT);
  const dispatch = dispatchFor(t);
  adoptSocket(dispatch, 1, 'tcp', a, DAEMONS_V4[0], DAEMON_PORT);
  dispatch.setPort({ protocol: 'tcp', family: 4, port: CLUSTER_PORT }, 0);
  dispatch.setBuckets(0, [1]);
  dispatch.attach(netnsFd);
  for (const host of [CLUSTER_V4, other]) {
    const reply = await tcpClient(sandbox, ns, host, CLIENT_V4);
    assert.equal(reply.greeting, 'hello from A', `${host}: ${JSON.stringify(reply)}`);
    const line = await a.lines.take((l) => l.event === 'accepted', 'accepted connection');
    assert.equal(line.local, `${host}:${CLUSTER_PORT}`);
  }
  // detach() stops dispatch at once (BPF_LINK_DETACH): the program no longer runs.
  dispatch.detach();
  assert.equal(dispatch.attachedNetnsInode(), null);
  assert.equal((await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4)).code, 'ECONNREFUSED');
  assert.deepEqual(dispatch.totals(), { matched: 2, unassigned: 0 });
  assert.equal(dispatch.clearSocket(1), true);
  assert.equal(dispatch.socketCookie(1), null);
});

test('sk-lookup: the sockmap takes only sockets; anything else is BPF_BAD_SOCKET', (t) => {
  if (!skipUnlessRoot(t, 'BPF maps need CAP_BPF')) return;
  const dispatch = dispatchFor(t);
  const file = openSync('/dev/null', 'r');
  t.after(() => closeSync(file));
  assert.throws(() => dispatch.setSocket(1, file), { code: 'BPF_BAD_SOCKET' });
  assert.throws(() => dispatch.setSocket(1, 0x7ffffff0), { code: 'BPF_BAD_SOCKET' });
  assert.throws(() => dispatch.setSocket(0, file), { code: 'CONFIG_INVALID' }, 'slot 0 is never a daemon');
  assert.equal(dispatch.socketCookie(1), null);
  assert.equal(dispatch.clearSocket(1), false);
});

test('sk-lookup: setBuckets writes only the buckets that changed, and every table written reads back whole', (t) => {
  if (!skipUnlessRoot(t, 'BPF maps need CAP_BPF')) return;
  const dispatch = dispatchFor(t);
  const expand = (slots: number[]): number[] => Array.from({ length: BUCKETS }, (_, b) => (slots.length === 0 ? 0 : slots[b % slots.length]));
  for (const table of [[1, 2], [1, 2, 3], [3], [], [2, 1], expand([1, 2]).map((s, b) => (b === 7 ? 3 : s))]) {
    dispatch.setBuckets(1, table);
    assert.deepEqual(dispatch.buckets(1), expand(table), JSON.stringify(table));
  }
  // Behind its back (no other writer does this): bucket 100 of port 1 and all of port 2, which it has not written.
  const key = (b: number): Uint8Array => new Uint8Array(new Uint32Array([b]).buffer);
  const value = (slot: number): Uint8Array => new Uint8Array(new Uint32Array([slot]).buffer);
  updateElement(dispatch.fds.buckets, key(BUCKETS + 100), value(5), 0);
  for (let b = 0; b < BUCKETS; b++) updateElement(dispatch.fds.buckets, key(2 * BUCKETS + b), value(6), 0);
  // Port 1: one bucket differs from the last write, and only it is written; port 2 is written whole.
  const last = expand([1, 2]).map((s, b) => (b === 7 ? 3 : s));
  dispatch.setBuckets(1, last.map((s, b) => (b === 8 ? 4 : s)));
  assert.equal(dispatch.buckets(1)[8], 4);
  assert.equal(dispatch.buckets(1)[100], 5, 'a bucket that did not change is not written again');
  dispatch.setBuckets(2, [1]);
  assert.deepEqual(dispatch.buckets(2), expand([1]));
});

test('sk-lookup: a program the verifier refuses throws BPF_VERIFIER with the log in the message', (t) => {
  if (!skipUnlessRoot(t, 'BPF_PROG_LOAD needs CAP_BPF')) return;
  const program = new Assembler().mov64(R0, R2).exit().assemble(); // r2 is never written
  assert.throws(
    () => loadProgram({ type: ProgramType.skLookup, expectedAttachType: AttachType.skLookup, instructions: program, license: 'GPL', name: 'hlb_bad' }),
    (error: unknown) => {
      assert.ok(error instanceof BpfVerifierError, String(error));
      assert.equal(error.code, 'BPF_VERIFIER');
      assert.match(error.message, /R2 !read_ok/);
      assert.match(error.log, /R2 !read_ok/);
      return true;
    },
  );
});

test('sk-lookup: both programs load while a profiler signals the loading thread every 50 µs', async (t) => {
  if (!skipUnlessRoot(t, 'BPF_PROG_LOAD needs CAP_BPF')) return;
  // The verifier gives up (EAGAIN) whenever a signal is pending; node --cpu-prof sends its
  // SIGPROF to the main thread, so every load would be interrupted, every retry too.
  const profiles = mkdtempSync(join(tmpdir(), 'hlbt-prof-'));
  t.after(() => rmSync(profiles, { recursive: true, force: true }));
  const argv = ['--cpu-prof', '--cpu-prof-interval', '50', '--cpu-prof-dir', profiles, CHILD, 'load'];
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, argv, { timeout: EVENT_TIMEOUT_MS }, (error, out, stderr) => (error ? reject(new Error(`load: ${stderr}`, { cause: error })) : resolve(out)));
  });
  assert.deepEqual(JSON.parse(stdout), { loaded: true, counting: true });
});

test('sk-lookup: a pinned dispatch outlives the process that loaded it; unpin and close detach it', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, BPF programs and a bpffs mount')) return;
  const { sandbox, ns, netnsPath } = setUp(t, [CLUSTER_V4, CLIENT_V4, DAEMONS_V4[0]]);
  const a = await startDaemon(sandbox, ns, 'tcp', 'A', DAEMONS_V4[0], DAEMON_PORT);

  // Our own bpffs: none is mounted at /sys/fs/bpf here, and `ip netns exec` remounts /sys.
  const mountDir = `/run/hostlb-test-bpf-${process.pid}`;
  mkdirSync(mountDir, { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', mountDir]);
  t.after(() => {
    execFileSync('umount', [mountDir]);
    rmdirSync(mountDir);
  });
  const pinDir = `${mountDir}/dispatch`;

  const loaded = await new Promise<string>((resolve, reject) => {
    const argv = [CHILD, 'loader', pinDir, netnsPath, CLUSTER_V4, String(CLUSTER_PORT), String(a.pid), DAEMONS_V4[0], String(DAEMON_PORT)];
    execFile(process.execPath, argv, { timeout: EVENT_TIMEOUT_MS }, (error, stdout, stderr) => (error ? reject(new Error(`loader: ${stderr}`, { cause: error })) : resolve(stdout)));
  });
  assert.match(loaded, /"pinned":true/);

  // The loader has exited and closed every fd: only the pins hold the program.
  const served = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
  assert.equal(served.greeting, 'hello from A', JSON.stringify(served));
  await a.lines.take((l) => l.event === 'accepted', 'accepted connection');

  const adopted = SkLookupDispatch.adopt(pinDir);
  t.after(() => adopted.close());
  assert.equal(adopted.hashSeed, null);
  assert.equal(adopted.attachedNetnsInode(), statSync(netnsPath).ino);
  assert.equal(adopted.counters(1).assigned, 1);
  assert.equal(adopted.buckets(0)[0], 1);
  assert.ok(adopted.fds.turns >= 0, 'the turns map is pinned too');

  // Pins an older hostlb left have no `turns` map: still adopted (their program takes no turns).
  rmSync(`${pinDir}/turns`);
  const older = SkLookupDispatch.adopt(pinDir);
  assert.equal(older.fds.turns, -1);
  assert.equal(older.counters(1).assigned, 1);
  older.close();

  SkLookupDispatch.unpin(pinDir);
  adopted.close();
  const after = await tcpClient(sandbox, ns, CLUSTER_V4, CLIENT_V4);
  assert.equal(after.code, 'ECONNREFUSED', `detached: nothing listens on the cluster address (${JSON.stringify(after)})`);
  assert.equal(a.lines.all((l) => l.event === 'accepted').length, 1);
});
