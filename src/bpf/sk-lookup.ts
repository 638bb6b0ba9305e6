// The socket data plane's dispatch program: a BPF_PROG_TYPE_SK_LOOKUP program,
// attached to a network namespace, that hands each new TCP connection or UDP
// datagram addressed to a cluster port to one of the daemons' own sockets.
// No NAT, no conntrack: the daemon accepts with the cluster address as its
// local address and the real client as its peer. This file owns the program,
// its maps and their byte layouts; which daemons get which buckets (weights,
// health) and where sockets come from are the plane's (listener.ts finds them).
//
// Maps
//   ports     HASH   {family u8, protocol u8, local port u16 (host order),
//                     local address 16 bytes, network order; IPv4 in the first
//                     4, the rest zero} → port index u32. An all-zero address is
//                     the wildcard: "this port on any local address". Port
//                     index PASSTHROUGH: not a cluster port (a daemon's own
//                     address and port under a wildcard key: its health
//                     checks must reach it, not be dispatched).
//   buckets   ARRAY  port index * BUCKETS + bucket → daemon slot u32; 0 = none.
//   sockets   SOCKMAP slot → the daemon's socket (a listening TCP socket or a
//                     bound UDP socket; updated with its fd, read back as its
//                     cookie). Slot 0 is never a daemon. A socket whose last fd
//                     closes leaves the map by itself.
//   members, loads, slots, turns: the least-loaded pick's, the counts' and
//                     the turns rr and wrr take (load-count.ts).
//   counters  ARRAY  slot → {assigned, noSocket, refused} u64 each, atomic adds:
//                     lookups handed to the slot's socket, lookups that found
//                     the slot empty (the daemon's socket closed), and
//                     bpf_sk_assign refusals (wrong protocol or state).
//                     counters[0] is the port line: {matched, unassigned, 0}.
//
// Decision, per socket lookup (every TCP SYN and every UDP datagram that finds
// no connected socket; the kernel runs it before its own listener lookup):
//   1. Key from family, protocol, local address and local port; look it up in
//      `ports`, then with the address zeroed (wildcard). No match: SK_PASS and
//      the kernel's lookup goes on as if the program were not there.
//   2. h = jhash-style mix of (remote address folded to 32 bits, remote port,
//      seed); the port counts as 0 on a port in mode source (sh). A hash, not bpf_get_prandom_u32, for TCP too: a retransmitted
//      SYN, or the ACK that completes a SYN-cookie handshake (it goes through
//      the listener lookup again), meets the same daemon, and a UDP flow stays
//      on one daemon while the buckets stay put. flowHash() is the same
//      function in TypeScript.
//   3. A port whose scheduler picks by load (lc, wlc, p2c) picks the daemon
//      with the least connections per weight from the kernel's own counts
//      (load-count.ts: emitLeastLoaded; a tie between busy daemons goes to
//      the one of the CPU that took the SYN); when that daemon's socket is gone,
//      or the port has no members, the buckets decide as below.
//   4. A TCP port in mode sequence (rr, wrr) walks its first n buckets in
//      turn instead: the port's `turns` goes up by one per lookup, an atomic
//      fetch-and-add, so concurrent SYNs on two CPUs take two turns (Linux
//      5.12+; an older kernel gets a load and an add, and two SYNs at the
//      same instant may take one turn); its candidates are position turns
//      mod n and the ones after it, wrapping at n. A SYN
//      retransmitted finds its request socket before any listener lookup; the
//      ACK of a SYN-cookie handshake takes the next turn, and any daemon's
//      listener checks the cookie (the secret is the kernel's, not the
//      socket's) while its own queue overflowed lately, as in a flood they all do.
//   5. Up to TRIES (16) candidates — bucket i = byte i of h for the first four,
//      then the buckets after the fourth (bucketCandidates): slot = buckets[index *
//      BUCKETS + bucket]; skip a 0; take the slot's socket from `sockets`;
//      bpf_sk_assign(ctx, sk, 0), bpf_sk_release(sk); on success count
//      `assigned` and return SK_PASS (the kernel uses the assigned socket). An
//      empty slot counts `noSocket`, a refusal `refused`, and the next candidate
//      is tried.
//   6. No candidate took it: count counters[0].unassigned and return SK_PASS
//      without a socket. The kernel's own lookup then runs: with nothing
//      listening on the cluster address a TCP client is refused (RST) and a UDP
//      datagram draws ICMP port unreachable.
// The program never drops (SK_DROP): traffic that is not a cluster port's is
// untouched.
//
// The cluster address must be local (on lo, or a `local` route) or packets
// never reach the socket lookup (DESIGN.md, facts verified for this plane).

import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { HostlbError } from '../errors.js';
import { parseIp } from '../wire/address.js';
import { BtfBuilder } from './btf.js';
import { Assembler, Helper, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, type Register } from './asm.js';
import { emitCountPending, emitLeastLoaded, emitTurn, encodeMembers, encodeSequence, PortMode, type LeastLoadedSite, buildCountProgram, decodeLoad, encodeFreshLoad, encodeSlotValue, nowWindow, LOAD_SIZE, MEMBERS_SIZE, SLOT_VALUE_SIZE, type Member, type PortModeValue, type SlotLoad } from './load-count.js';
import {
  AttachType,
  BPF_ANY,
  BPF_F_CLONE,
  BPF_F_NO_PREALLOC,
  BpfVerifierError,
  MapType,
  ProgramType,
  closeFd,
  createLink,
  createMap,
  deleteElement,
  detachLink,
  linkInfo,
  loadBtf,
  loadProgram,
  lookupElement,
  mapInfo,
  nextKey,
  openPinned,
  pinObject,
  programInfo,
  updateElement,
} from './syscalls.js';

/** Buckets per port: the hash's bytes index them. */
export const BUCKETS = 256;
/** Candidates per lookup: one per byte of the 32-bit hash. */
export const TRIES = 16;
/** Of those, the ones taken from the hash's bytes; the rest follow the last (bucketCandidates). */
const HASH_TRIES = 4;
/** A bucket's slot value meaning "no daemon"; also the counters line of the whole plane. */
export const NO_SLOT = 0;
/** The `ports` value of an address and port the program leaves to the kernel (setPassthrough). */
export const PASSTHROUGH = 0xffffffff;

export const PORT_KEY_SIZE = 20;
const COUNTER_FIELDS = 3;
const COUNTER_SIZE = COUNTER_FIELDS * 8;
const FIELD_ASSIGNED = 0;
const FIELD_NO_SOCKET = 1;
const FIELD_REFUSED = 2;
// counters[NO_SLOT]'s fields.
const TOTAL_MATCHED = 0;
const TOTAL_UNASSIGNED = 1;

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const SK_PASS = 1;

// struct bpf_sk_lookup (linux/bpf.h). local_ip4/local_ip6/remote_* are network
// order; local_port is host order; remote_port is a network-order __be16
// followed by zero padding (it was a __u32 in the first kernels with
// sk_lookup; later ones still allow the 4-byte load used here, and the value
// is masked to 16 bits, so both read alike).
const CTX_FAMILY = 8;
const CTX_PROTOCOL = 12;
const CTX_REMOTE_IP4 = 16;
const CTX_REMOTE_IP6 = 20;
const CTX_REMOTE_PORT = 36;
const CTX_LOCAL_IP4 = 40;
const CTX_LOCAL_IP6 = 44;
const CTX_LOCAL_PORT = 60;

// Stack: the ports key at fp-24..fp-5, a u32 key for the other maps at fp-32,
// bpf_sk_assign's result at fp-40, the port index at fp-44, the flow hash
// (mode sequence: the turn's position) at fp-48, the load-count window at
// fp-56 (0: not read yet), the sequence length at fp-64 (0: the buckets go by
// hash); the least-loaded pick's scratch below.
const STACK_PORT_KEY = -24;
const STACK_KEY = -32;
const STACK_RESULT = -40;
const STACK_INDEX = -44;
const STACK_HASH = -48;
const STACK_WINDOW = -56;
const STACK_SEQUENCE = -64;
const STACK_SCRATCH = -64;

const JHASH_INITVAL = 0xdeadbeef;

const PIN_NAMES = ['program', 'ports', 'buckets', 'sockets', 'counters', 'members', 'loads', 'slots', 'count', 'turns'] as const;
/**
 * Pins a dispatch may lack: a kernel that cannot count has no `slots` nor
 * `count`; a dispatch an older hostlb pinned has no `turns` (its program
 * takes no turns, and its buckets still share by weight).
 */
const OPTIONAL_PINS: ReadonlySet<(typeof PIN_NAMES)[number]> = new Set(['slots', 'count', 'turns'] as const);
const PIN_LINK = 'link';
const PIN_COUNT_LINK = 'count-link';

export interface DispatchOptions {
  /**
   * Cluster ports the buckets table has room for (port indexes 0..maxPorts-1);
   * `ports` holds up to 4 keys per index (IPv4/IPv6, address or wildcard). Default 64.
   */
  maxPorts?: number;
  /** Daemon slots, slot 0 included (it is never a daemon): slots 1..maxSlots-1. Default 256. */
  maxSlots?: number;
  /** The hash's seed (u32). Default: random, so clients cannot aim at one daemon. */
  hashSeed?: number;
  /** False: rr's and wrr's turns without an atomic fetch-and-add, as on Linux before 5.12 (tests). Default: with it when the kernel takes it. */
  atomicFetch?: boolean;
}

/** A cluster port as the program matches it. `address` omitted: this port on any local address of the family. */
export interface PortKey {
  protocol: 'tcp' | 'udp';
  family: 4 | 6;
  port: number;
  address?: string;
}

export interface SlotCounters {
  /** Lookups handed to this slot's socket. */
  assigned: number;
  /** Lookups that picked this slot while it held no socket (the daemon's socket had closed). */
  noSocket: number;
  /** Lookups where bpf_sk_assign refused this slot's socket (wrong protocol or state). */
  refused: number;
}

export interface DispatchTotals {
  /** Lookups that matched a cluster port. */
  matched: number;
  /** Of those, lookups no candidate took: passed on to the kernel's own lookup. */
  unassigned: number;
}

/** The fds behind one dispatch; -1 for a link not (yet) made. `count` is the SOCK_OPS program, `countLink` its cgroup link. */
export interface DispatchFds extends MapFds {
  program: number;
  link: number;
  count: number;
  countLink: number;
}

/** The map fds a program is assembled against. */
export interface MapFds {
  ports: number;
  buckets: number;
  sockets: number;
  counters: number;
  members: number;
  loads: number;
  slots: number;
  /** -1 in a dispatch an older hostlb pinned (adopt). */
  turns: number;
}

function fail(code: string, message: string, cause?: unknown): never {
  throw new HostlbError(code, message, cause === undefined ? undefined : { cause });
}

function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value, true);
  return bytes;
}

/** The 20-byte `ports` key of `key` (layout in the header comment). */
export function encodePortKey(key: PortKey): Uint8Array {
  if (!Number.isInteger(key.port) || key.port < 1 || key.port > 65535) fail('CONFIG_INVALID', `port ${key.port} is not in 1..65535`);
  if (key.protocol !== 'tcp' && key.protocol !== 'udp') fail('CONFIG_INVALID', `protocol "${String(key.protocol)}" is not tcp or udp`);
  if (key.family !== 4 && key.family !== 6) fail('CONFIG_INVALID', `family ${String(key.family)} is not 4 or 6`);
  const bytes = new Uint8Array(PORT_KEY_SIZE);
  bytes[0] = key.family === 6 ? AF_INET6 : AF_INET;
  bytes[1] = key.protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  new DataView(bytes.buffer).setUint16(2, key.port, true);
  if (key.address !== undefined) {
    const ip = parseIp(key.address);
    if (ip === null) fail('CONFIG_INVALID', `"${key.address}" is not an IP address`);
    if (ip.family !== key.family) fail('CONFIG_INVALID', `${key.address} is not an IPv${key.family} address`);
    bytes.set(ip.bytes, 4);
  }
  return bytes;
}

function rol32(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// The mixing steps of jhash's __jhash_final: (x ^= y; x -= rol32(y, k)).
const MIX: ReadonlyArray<readonly ['a' | 'b' | 'c', 'a' | 'b' | 'c', number]> = [
  ['c', 'b', 14], ['a', 'c', 11], ['b', 'a', 25], ['c', 'b', 16], ['a', 'c', 4], ['b', 'a', 14], ['c', 'b', 24],
];

/**
 * The program's flow hash, in TypeScript: `remote` is the client's address (4
 * or 16 bytes, network order), `remotePort` its port. The address is read as
 * the program reads it (little-endian 32-bit words of network-order bytes,
 * IPv6's four XORed), the port as its network-order bytes read little-endian.
 */
export function flowHash(remote: Uint8Array, remotePort: number, seed: number): number {
  const view = new DataView(remote.buffer, remote.byteOffset, remote.byteLength);
  let folded = 0;
  for (let i = 0; i < remote.length; i += 4) folded ^= view.getUint32(i, true);
  const state = {
    a: (folded + JHASH_INITVAL) >>> 0,
    b: ((((remotePort & 0xff) << 8) | (remotePort >>> 8)) + JHASH_INITVAL) >>> 0,
    c: ((seed >>> 0) + JHASH_INITVAL) >>> 0,
  };
  for (const [x, y, k] of MIX) {
    state[x] = (state[x] ^ state[y]) >>> 0;
    state[x] = (state[x] - rol32(state[y], k)) >>> 0;
  }
  return state.c;
}

/**
 * The buckets a lookup tries, in order, for hash `h`: its four bytes, then
 * the buckets after the last of them. A daemon whose socket just closed still
 * holds its buckets until hostlb's next sync; with a dozen more candidates a
 * new connection finds another daemon's socket unless nearly every bucket is
 * the dead one's.
 */
export function bucketCandidates(h: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < HASH_TRIES; i++) out.push((h >>> (8 * i)) & (BUCKETS - 1));
  for (let i = HASH_TRIES; i < TRIES; i++) out.push((out[HASH_TRIES - 1] + i - HASH_TRIES + 1) & (BUCKETS - 1));
  return out;
}

/**
 * The dispatch program for the given maps, assembled. Pure: exported so tests
 * and tools can inspect it without loading it. `atomicFetch` false: the
 * turns taken without BPF_FETCH (Linux before 5.12; header comment, 4).
 */
export function buildProgram(maps: MapFds, hashSeed: number, cpus = availableParallelism(), atomicFetch = true): Uint8Array {
  const a = new Assembler();
  let counterLabels = 0;

  // counters[*(u32 *)(fp + STACK_KEY)].field += 1; clobbers r0-r5.
  const count = (field: number): void => {
    const skip = `count_${counterLabels++}`;
    a.ldMapFd(R1, maps.counters).mov64(R2, R10).alu64('add', R2, STACK_KEY).call(Helper.mapLookupElem);
    a.jmp('eq', R0, 0, skip);
    a.mov64(R1, 1).atomic('add', 'dw', R0, field * 8, R1);
    a.label(skip);
  };
  // x ^= y; x -= rol32(y, k), in 32-bit ALU with r0 and r5 as scratch.
  const mix = (x: Register, y: Register, k: number): void => {
    a.alu32('xor', x, y);
    a.mov32(R5, y).alu32('lsh', R5, k).mov32(R0, y).alu32('rsh', R0, 32 - k).alu32('or', R5, R0);
    a.alu32('sub', x, R5);
  };

  a.mov64(R6, R1);
  // Key word 0: family | protocol << 8 | local port << 16 (bytes family, protocol, port LE).
  a.ldx('w', R2, R6, CTX_FAMILY).ldx('w', R3, R6, CTX_PROTOCOL).ldx('w', R4, R6, CTX_LOCAL_PORT);
  a.alu32('lsh', R3, 8).alu32('or', R3, R2).alu32('lsh', R4, 16).alu32('or', R3, R4);
  a.stx('w', R10, STACK_PORT_KEY, R3);
  a.jmp32('eq', R2, AF_INET6, 'local_v6');
  a.jmp32('ne', R2, AF_INET, 'pass');
  a.ldx('w', R1, R6, CTX_LOCAL_IP4).stx('w', R10, STACK_PORT_KEY + 4, R1);
  for (let i = 1; i < 4; i++) a.st('w', R10, STACK_PORT_KEY + 4 + 4 * i, 0);
  a.ja('find_port');
  a.label('local_v6');
  for (let i = 0; i < 4; i++) a.ldx('w', R1, R6, CTX_LOCAL_IP6 + 4 * i).stx('w', R10, STACK_PORT_KEY + 4 + 4 * i, R1);

  a.label('find_port');
  a.ldMapFd(R1, maps.ports).mov64(R2, R10).alu64('add', R2, STACK_PORT_KEY).call(Helper.mapLookupElem);
  a.jmp('ne', R0, 0, 'port_found');
  for (let i = 0; i < 4; i++) a.st('w', R10, STACK_PORT_KEY + 4 + 4 * i, 0);
  a.ldMapFd(R1, maps.ports).mov64(R2, R10).alu64('add', R2, STACK_PORT_KEY).call(Helper.mapLookupElem);
  a.jmp('eq', R0, 0, 'pass');
  a.label('port_found');
  a.ldx('w', R1, R0, 0).stx('w', R10, STACK_INDEX, R1);
  a.jmp32('eq', R1, PASSTHROUGH, 'pass');
  a.st('w', R10, STACK_KEY, NO_SLOT);
  count(TOTAL_MATCHED);

  // h = mix(remote address folded, remote port, seed); the port counts as 0
  // on a port in mode source (sh: one daemon per client address). The port's
  // members entry stays in r7 for the least-loaded pick.
  a.ldx('w', R1, R10, STACK_INDEX).stx('w', R10, STACK_KEY, R1);
  a.ldMapFd(R1, maps.members).mov64(R2, R10).alu64('add', R2, STACK_KEY).call(Helper.mapLookupElem);
  a.mov64(R7, R0).mov64(R9, 0xffff);
  a.jmp('eq', R7, 0, 'hash');
  a.ldx('w', R1, R7, 4).jmp('ne', R1, PortMode.source, 'hash');
  a.mov64(R9, 0);
  a.label('hash');
  a.st('w', R10, STACK_KEY, NO_SLOT);
  a.ldx('w', R2, R6, CTX_FAMILY);
  a.jmp32('eq', R2, AF_INET6, 'remote_v6');
  a.ldx('w', R2, R6, CTX_REMOTE_IP4);
  a.ja('remote_port');
  a.label('remote_v6');
  a.ldx('w', R2, R6, CTX_REMOTE_IP6);
  for (let i = 1; i < 4; i++) a.ldx('w', R3, R6, CTX_REMOTE_IP6 + 4 * i).alu32('xor', R2, R3);
  a.label('remote_port');
  a.ldx('w', R3, R6, CTX_REMOTE_PORT).alu32('and', R3, R9);
  a.alu32('add', R2, JHASH_INITVAL).alu32('add', R3, JHASH_INITVAL);
  a.mov32(R4, ((hashSeed >>> 0) + JHASH_INITVAL) >>> 0);
  const reg = { a: R2, b: R3, c: R4 };
  for (const [x, y, k] of MIX) mix(reg[x], reg[y], k);
  a.stx('w', R10, STACK_HASH, R4);
  a.st('dw', R10, STACK_WINDOW, 0);
  a.st('dw', R10, STACK_SEQUENCE, 0);

  // Mode sequence: the port's turn, as the position the buckets are walked from.
  a.jmp('eq', R7, 0, 'least');
  a.ldx('w', R1, R7, 4).jmp('ne', R1, PortMode.sequence, 'least');
  a.ldx('w', R1, R6, CTX_PROTOCOL).jmp32('ne', R1, IPPROTO_TCP, 'least');
  a.ldx('w', R1, R7, 0).jmp('eq', R1, 0, 'least').jmp('gt', R1, BUCKETS, 'least');
  a.stx('dw', R10, STACK_SEQUENCE, R1);
  emitTurn(a, maps, { index: STACK_INDEX, hash: STACK_HASH, key: STACK_KEY, atomicFetch });
  a.ldx('dw', R1, R10, STACK_SEQUENCE).alu64('mod', R2, R1).stx('w', R10, STACK_HASH, R2);
  a.ja('buckets');

  a.label('least');

  const fields = { assigned: FIELD_ASSIGNED, noSocket: FIELD_NO_SOCKET, refused: FIELD_REFUSED };
  const site: LeastLoadedSite = {
    cpus, atomicFetch,
    ctx: R6, index: STACK_INDEX, hash: STACK_HASH, window: STACK_WINDOW, key: STACK_KEY, result: STACK_RESULT, scratch: STACK_SCRATCH,
    count: (field) => count(fields[field]), fallback: 'buckets', assigned: 'assigned', pass: 'pass',
  };
  emitLeastLoaded(a, maps, site);

  a.label('buckets');
  a.ldx('w', R7, R10, STACK_INDEX).alu32('lsh', R7, 8); // r7 = port index * BUCKETS
  a.ldx('w', R8, R10, STACK_HASH);

  for (let t = 0; t < TRIES; t++) {
    const next = `next_${t}`;
    a.mov32(R1, R8).alu32('and', R1, BUCKETS - 1).alu32('add', R1, R7).stx('w', R10, STACK_KEY, R1);
    // Mode sequence: the next position, wrapping at the length. Else the hash's next byte, and after
    // the last one the bucket after it (bucketCandidates).
    a.ldx('dw', R1, R10, STACK_SEQUENCE).jmp('eq', R1, 0, `by_hash_${t}`);
    a.alu64('add', R8, 1).jmp('lt', R8, R1, `stepped_${t}`).mov64(R8, 0).ja(`stepped_${t}`);
    a.label(`by_hash_${t}`);
    if (t < HASH_TRIES - 1) a.alu32('rsh', R8, 8);
    else a.alu32('add', R8, 1);
    a.label(`stepped_${t}`);
    a.ldMapFd(R1, maps.buckets).mov64(R2, R10).alu64('add', R2, STACK_KEY).call(Helper.mapLookupElem);
    a.jmp('eq', R0, 0, next);
    a.ldx('w', R1, R0, 0);
    a.jmp32('eq', R1, NO_SLOT, next);
    a.stx('w', R10, STACK_KEY, R1);
    a.ldMapFd(R1, maps.sockets).mov64(R2, R10).alu64('add', R2, STACK_KEY).call(Helper.mapLookupElem);
    a.jmp('eq', R0, 0, `empty_${t}`);
    a.mov64(R9, R0);
    a.mov64(R1, R6).mov64(R2, R9).mov64(R3, 0).call(Helper.skAssign);
    a.stx('dw', R10, STACK_RESULT, R0);
    a.mov64(R1, R9).call(Helper.skRelease);
    a.ldx('dw', R1, R10, STACK_RESULT);
    a.jmp('ne', R1, 0, `refused_${t}`);
    count(FIELD_ASSIGNED);
    a.ja('assigned');
    a.label(`refused_${t}`);
    count(FIELD_REFUSED);
    a.ja(next);
    a.label(`empty_${t}`);
    count(FIELD_NO_SOCKET);
    a.label(next);
  }
  a.st('w', R10, STACK_KEY, NO_SLOT);
  count(TOTAL_UNASSIGNED);
  a.ja('pass');

  // Handed to the slot at STACK_KEY: counted pending until its handshake completes.
  a.label('assigned');
  emitCountPending(a, maps, site);

  a.label('pass');
  a.mov64(R0, SK_PASS).exit();
  return a.assemble();
}

/**
 * The `slots` socket storage (load-count.ts): the kernel creates one only
 * with BTF describing its key and value, loaded here and dropped once the
 * map holds it. BPF_F_CLONE copies a listening socket's value to each
 * connection it accepts.
 */
function createSlotStorage(): number {
  const btf = new BtfBuilder();
  const key = btf.addInt('int', 4, true);
  const u32Type = btf.addInt('unsigned int', 4, false);
  const u64Type = btf.addInt('unsigned long long', 8, false);
  const value = btf.addStruct('hlb_slot', [{ name: 'slot', type: u32Type }, { name: 'counted', type: u32Type }, { name: 'generation', type: u64Type }]);
  const btfFd = loadBtf(btf.build());
  try {
    return createMap({
      type: MapType.skStorage, keySize: 4, valueSize: SLOT_VALUE_SIZE, maxEntries: 0, flags: BPF_F_NO_PREALLOC | BPF_F_CLONE,
      name: 'hlb_slots', btf: { fd: btfFd, keyTypeId: key, valueTypeId: value },
    });
  } finally {
    closeFd(btfFd);
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    if (fd < 0) continue;
    try {
      closeFd(fd);
    } catch {
      // Closing is best effort on a failure path: the first error is the one to report.
    }
  }
}

/**
 * One dispatch program with its maps. Created (create) or taken over from a
 * bpffs directory another process pinned (adopt); attached to a network
 * namespace with attach(). Map updates take effect for the next lookup; a
 * setBuckets() is up to 256 single updates, so lookups during it may see a
 * mix of the old and new tables (each still a valid daemon). Not thread-safe.
 */
export class SkLookupDispatch {
  readonly maxPorts: number;
  readonly maxSlots: number;
  /** The hash seed, or null for an adopted program (it is baked into the instructions). */
  readonly hashSeed: number | null;
  private readonly f: DispatchFds;
  private closed = false;
  /** Why create() could not load the counting program (its maps or the program), or null. */
  private countError: Error | null = null;
  /**
   * Each port's buckets as this object last wrote them: setBuckets writes
   * only the buckets that differ. Slow start and health change weights every
   * tick, which moves a few buckets; 256 bpf() calls each time were most of
   * what hostlb's timers cost under load (a CPU profile: 117 of 228 ms in
   * 20 s). Only setBuckets writes the buckets map; a port not written yet
   * (an adopted program's) is written whole.
   */
  private readonly written = new Map<number, Uint32Array>();
  /**
   * False when the program takes rr's and wrr's turns without an atomic
   * fetch-and-add (Linux before 5.12): SYNs at the same instant on two CPUs
   * may take one turn. True for an adopted program (unknown; it ran here before).
   */
  exactTurns = true;

  private constructor(fds: DispatchFds, maxPorts: number, maxSlots: number, hashSeed: number | null) {
    this.f = fds;
    this.maxPorts = maxPorts;
    this.maxSlots = maxSlots;
    this.hashSeed = hashSeed;
  }

  /** Creates the maps and loads the program (not attached). Throws BPF_* HostlbErrors, closing what it made. */
  static create(options: DispatchOptions = {}): SkLookupDispatch {
    const maxPorts = options.maxPorts ?? 64;
    const maxSlots = options.maxSlots ?? 256;
    const hashSeed = (options.hashSeed ?? randomInt(0, 0x100000000)) >>> 0;
    if (!Number.isInteger(maxPorts) || maxPorts < 1 || maxPorts > 65536) fail('CONFIG_INVALID', `maxPorts ${maxPorts} is not in 1..65536`);
    if (!Number.isInteger(maxSlots) || maxSlots < 2 || maxSlots > 65536) fail('CONFIG_INVALID', `maxSlots ${maxSlots} is not in 2..65536`);
    const made: number[] = [];
    try {
      const ports = createMap({ type: MapType.hash, keySize: PORT_KEY_SIZE, valueSize: 4, maxEntries: maxPorts * 4, flags: BPF_F_NO_PREALLOC, name: 'hlb_ports' });
      made.push(ports);
      const buckets = createMap({ type: MapType.array, keySize: 4, valueSize: 4, maxEntries: maxPorts * BUCKETS, name: 'hlb_buckets' });
      made.push(buckets);
      // Value size 8: updates take an fd, lookups from user space answer with the socket's cookie.
      const sockets = createMap({ type: MapType.sockmap, keySize: 4, valueSize: 8, maxEntries: maxSlots, name: 'hlb_sockets' });
      made.push(sockets);
      const counters = createMap({ type: MapType.array, keySize: 4, valueSize: COUNTER_SIZE, maxEntries: maxSlots, name: 'hlb_counters' });
      made.push(counters);
      const members = createMap({ type: MapType.array, keySize: 4, valueSize: MEMBERS_SIZE, maxEntries: maxPorts, name: 'hlb_members' });
      made.push(members);
      const loads = createMap({ type: MapType.array, keySize: 4, valueSize: LOAD_SIZE, maxEntries: maxSlots, name: 'hlb_loads' });
      made.push(loads);
      const turns = createMap({ type: MapType.array, keySize: 4, valueSize: 8, maxEntries: maxPorts, name: 'hlb_turns' });
      made.push(turns);
      // Counting is an extra: a kernel that cannot count (socket storage, Linux 5.2; the socket in a
      // SOCK_OPS program, 5.10) still dispatches, and attachCounting says why it cannot count.
      let slots = -1;
      let countError: Error | null = null;
      try {
        slots = createSlotStorage();
        made.push(slots);
      } catch (error) {
        countError = error as Error;
      }
      const maps: MapFds = { ports, buckets, sockets, counters, members, loads, slots, turns };
      const load = (atomicFetch: boolean): number => loadProgram({
        type: ProgramType.skLookup,
        expectedAttachType: AttachType.skLookup,
        instructions: buildProgram(maps, hashSeed, availableParallelism(), atomicFetch),
        // GPL: bpf_sk_assign and bpf_sk_release are offered to GPL programs only.
        license: 'GPL',
        name: 'hlb_sk_lookup',
      });
      const fetch = options.atomicFetch ?? true;
      let program: number;
      let exactTurns = fetch;
      try {
        program = load(fetch);
      } catch (error) {
        // Linux before 5.12 has no atomic fetch-and-add for BPF: rr and wrr take turns by a load and an add.
        if (!fetch || !(error instanceof BpfVerifierError)) throw error;
        program = load(false);
        exactTurns = false;
      }
      made.push(program);
      let count = -1;
      if (slots >= 0) {
        try {
          count = loadProgram({ type: ProgramType.sockOps, expectedAttachType: AttachType.cgroupSockOps, instructions: buildCountProgram(maps), license: 'GPL', name: 'hlb_count' });
        } catch (error) {
          countError = error as Error;
        }
      }
      const dispatch = new SkLookupDispatch({ ...maps, program, count, link: -1, countLink: -1 }, maxPorts, maxSlots, hashSeed);
      dispatch.countError = countError;
      dispatch.exactTurns = exactTurns;
      return dispatch;
    } catch (error) {
      closeAll(made);
      throw error;
    }
  }

  /**
   * Opens what pin() left in `dir`: the program, its maps and, when present,
   * the link. Checks each object's type and sizes; BPF_NOT_FOUND when a pin is
   * missing, BPF_FAILED when one is not what this file makes.
   */
  static adopt(dir: string): SkLookupDispatch {
    const opened: number[] = [];
    try {
      const fds = {} as DispatchFds;
      for (const name of PIN_NAMES) {
        if (OPTIONAL_PINS.has(name)) continue;
        fds[name] = openPinned(join(dir, name));
        opened.push(fds[name]);
      }
      const optional: Array<readonly [keyof DispatchFds, string]> = [['slots', 'slots'], ['count', 'count'], ['turns', 'turns'], ['link', PIN_LINK], ['countLink', PIN_COUNT_LINK]];
      for (const [field, name] of optional) {
        fds[field] = -1;
        try {
          fds[field] = openPinned(join(dir, name));
          opened.push(fds[field]);
        } catch (error) {
          if ((error as HostlbError).code !== 'BPF_NOT_FOUND') throw error;
        }
      }
      const expect = (fd: number, name: string, type: number, keySize: number, valueSize: number): number => {
        const info = mapInfo(fd);
        if (info.type !== type || info.keySize !== keySize || info.valueSize !== valueSize) {
          fail('BPF_FAILED', `${join(dir, name)} is a map of type ${info.type} with ${info.keySize}-byte keys and ${info.valueSize}-byte values, not hostlb's ${name} map as this version lays it out (left by another version of hostlb?): stop that hostlb, or run \`hostlb cleanup\` for its device, then start again`);
        }
        return info.maxEntries;
      };
      expect(fds.ports, 'ports', MapType.hash, PORT_KEY_SIZE, 4);
      const bucketEntries = expect(fds.buckets, 'buckets', MapType.array, 4, 4);
      const maxSlots = expect(fds.sockets, 'sockets', MapType.sockmap, 4, 8);
      expect(fds.counters, 'counters', MapType.array, 4, COUNTER_SIZE);
      expect(fds.members, 'members', MapType.array, 4, MEMBERS_SIZE);
      expect(fds.loads, 'loads', MapType.array, 4, LOAD_SIZE);
      if (fds.slots >= 0) expect(fds.slots, 'slots', MapType.skStorage, 4, SLOT_VALUE_SIZE);
      if (fds.turns >= 0) expect(fds.turns, 'turns', MapType.array, 4, 8);
      const program = programInfo(fds.program);
      if (program.type !== ProgramType.skLookup) fail('BPF_FAILED', `${join(dir, 'program')} is a BPF program of type ${program.type}, not sk_lookup`);
      if (fds.count >= 0 && programInfo(fds.count).type !== ProgramType.sockOps) fail('BPF_FAILED', `${join(dir, 'count')} is a BPF program of type ${programInfo(fds.count).type}, not sock_ops`);
      return new SkLookupDispatch(fds, Math.floor(bucketEntries / BUCKETS), maxSlots, null);
    } catch (error) {
      closeAll(opened);
      throw error;
    }
  }

  /** The fds (owned by this object: close() closes them). */
  get fds(): Readonly<DispatchFds> {
    return this.f;
  }

  /** Routes `key` (a cluster port) to port index `index`'s buckets. */
  setPort(key: PortKey, index: number): void {
    this.checkOpen();
    this.checkIndex(index);
    updateElement(this.f.ports, encodePortKey(key), u32(index), BPF_ANY);
  }

  /**
   * Leaves `key` (an address given: exact keys win over the wildcard) to the
   * kernel's own lookup: a daemon's own address and port that a wildcard
   * cluster port would otherwise dispatch.
   */
  setPassthrough(key: PortKey): void {
    this.checkOpen();
    if (key.address === undefined) fail('CONFIG_INVALID', 'a passthrough key names an address');
    updateElement(this.f.ports, encodePortKey(key), u32(PASSTHROUGH), BPF_ANY);
  }

  /** Stops routing `key`; false when it was not routed. */
  deletePort(key: PortKey): boolean {
    this.checkOpen();
    return deleteElement(this.f.ports, encodePortKey(key));
  }

  /** Every key in `ports` now, as encodePortKey bytes (an adopted program may route ports the configuration no longer has). */
  portKeys(): Uint8Array[] {
    this.checkOpen();
    const keys: Uint8Array[] = [];
    let key: Uint8Array | null = null;
    for (;;) {
      const next = new Uint8Array(PORT_KEY_SIZE);
      if (!nextKey(this.f.ports, key, next)) return keys;
      keys.push(next);
      key = next;
    }
  }

  /** Deletes a `ports` key given as its bytes; false when it was not there. */
  deletePortBytes(key: Uint8Array): boolean {
    this.checkOpen();
    return deleteElement(this.f.ports, key);
  }

  /**
   * Sets port `index`'s BUCKETS buckets: bucket b gets slots[b % slots.length]
   * (0 = none); an empty list clears them all. A daemon's share of new flows
   * is its share of buckets.
   */
  setBuckets(index: number, slots: ArrayLike<number>): void {
    this.checkOpen();
    this.checkIndex(index);
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i];
      if (!Number.isInteger(slot) || slot < 0 || slot >= this.maxSlots) fail('CONFIG_INVALID', `slot ${slot} is not in 0..${this.maxSlots - 1}`);
    }
    const before = this.written.get(index);
    const after = new Uint32Array(BUCKETS);
    for (let b = 0; b < BUCKETS; b++) after[b] = slots.length === 0 ? NO_SLOT : slots[b % slots.length];
    // Forgotten first: a write that fails part-way leaves the map unknown, so the next one writes all.
    this.written.delete(index);
    for (let b = 0; b < BUCKETS; b++) {
      if (before !== undefined && before[b] === after[b]) continue;
      updateElement(this.f.buckets, u32(index * BUCKETS + b), u32(after[b]), BPF_ANY);
    }
    this.written.set(index, after);
  }

  /**
   * Sets how port `index` picks: PortMode.hash leaves it to the buckets;
   * least and twoChoices pick among `members` by load (load-count.ts).
   */
  setMembers(index: number, mode: PortModeValue, members: readonly Member[]): void {
    this.checkOpen();
    this.checkIndex(index);
    for (const m of members) this.checkSlot(m.slot);
    updateElement(this.f.members, u32(index), encodeMembers(mode, members), BPF_ANY);
  }

  /**
   * Puts port `index` in mode sequence: new TCP connections take its first
   * `length` buckets in turn (setBuckets writes them; 0 leaves the port to
   * the buckets by hash). Its turns carry on where they were.
   */
  setSequence(index: number, length: number): void {
    this.checkOpen();
    this.checkIndex(index);
    if (!Number.isInteger(length) || length < 0 || length > BUCKETS) fail('CONFIG_INVALID', `sequence length ${length} is not in 0..${BUCKETS}`);
    updateElement(this.f.members, u32(index), encodeSequence(length), BPF_ANY);
  }

  /** Slot `slot`'s connection counts as the least-loaded pick sees them now. */
  load(slot: number): SlotLoad {
    this.checkOpen();
    this.checkSlot(slot);
    const value = new Uint8Array(LOAD_SIZE);
    lookupElement(this.f.loads, u32(slot), value);
    return decodeLoad(value, nowWindow());
  }

  /** True while the counting program is attached (the least-loaded pick has counts to go by). */
  get counting(): boolean {
    return this.f.countLink >= 0;
  }

  /**
   * Attaches the counting program to the cgroup v2 directory behind
   * `cgroupFd` (the hierarchy's root: every TCP socket on the host is under
   * it); the caller keeps and closes the fd. Kept while this object holds the
   * link, or while it is pinned. No-op when already attached.
   */
  attachCounting(cgroupFd: number): void {
    this.checkOpen();
    if (this.f.countLink >= 0) return;
    if (this.f.count < 0) fail('BPF_UNSUPPORTED', `the counting program could not be loaded: ${this.countError?.message ?? 'an adopted dispatch without one'}`, this.countError ?? undefined);
    this.f.countLink = createLink(this.f.count, cgroupFd, AttachType.cgroupSockOps);
  }

  /** Port `index`'s buckets as they are in the map. */
  buckets(index: number): number[] {
    this.checkOpen();
    this.checkIndex(index);
    const value = new Uint8Array(4);
    const view = new DataView(value.buffer);
    const out: number[] = [];
    for (let b = 0; b < BUCKETS; b++) {
      lookupElement(this.f.buckets, u32(index * BUCKETS + b), value);
      out.push(view.getUint32(0, true));
    }
    return out;
  }

  /**
   * Puts socket `fd` (a listening TCP socket or a bound, unconnected UDP
   * socket) in `slot`. The map holds the socket, not the fd: close the fd
   * afterwards, or the socket outlives its owner's close and keeps its slot.
   * BPF_BAD_SOCKET when the kernel will not take it.
   */
  setSocket(slot: number, fd: number): void {
    this.checkOpen();
    this.checkSlot(slot);
    const value = new Uint8Array(8);
    new DataView(value.buffer).setBigUint64(0, BigInt(fd), true);
    try {
      // First the mark, so no connection the dispatch hands it goes uncounted: the connections it
      // accepts from now on carry the slot (load-count.ts). A UDP socket's is never read.
      if (this.f.slots >= 0) updateElement(this.f.slots, u32(fd), encodeSlotValue(slot, this.load(slot).generation), BPF_ANY);
      updateElement(this.f.sockets, u32(slot), value, BPF_ANY);
    } catch (error) {
      const errno = ((error as HostlbError).cause as { code?: string } | undefined)?.code;
      // ENOTSUP (libuv's name for EOPNOTSUPP): a TCP socket neither listening
      // nor established, or an unbound UDP one; ENOTSOCK, EBADF: no socket at all.
      if (errno === 'ENOTSUP' || errno === 'ENOTSOCK' || errno === 'EBADF' || errno === 'EINVAL') {
        fail('BPF_BAD_SOCKET', `fd ${fd} cannot serve slot ${slot}: it must be a listening TCP socket or a bound UDP socket (${errno})`, error);
      }
      throw error;
    }
  }

  /**
   * Gives `slot` to a new owner: empties it and starts its counts afresh in
   * the next generation, so neither what the old socket accepts from now on
   * nor the closing of what it accepted before counts against the next
   * daemon (load-count.ts, Generations). The old socket's mark stays: hostlb
   * no longer holds it, and it may belong to a daemon that runs on.
   */
  releaseSlot(slot: number): void {
    const generation = this.load(slot).generation;
    this.clearSocket(slot);
    updateElement(this.f.loads, u32(slot), encodeFreshLoad(generation + 1n), BPF_ANY);
  }

  /** Empties `slot`; false when it was already empty. */
  clearSocket(slot: number): boolean {
    this.checkOpen();
    this.checkSlot(slot);
    try {
      return deleteElement(this.f.sockets, u32(slot));
    } catch (error) {
      // A SOCKMAP answers EINVAL, not ENOENT, for an empty slot (the slot's range is checked above).
      if (((error as HostlbError).cause as { code?: string } | undefined)?.code === 'EINVAL') return false;
      throw error;
    }
  }

  /** The cookie of the socket in `slot` (SO_COOKIE), or null when the slot is empty. */
  socketCookie(slot: number): bigint | null {
    this.checkOpen();
    this.checkSlot(slot);
    const value = new Uint8Array(8);
    if (!lookupElement(this.f.sockets, u32(slot), value)) return null;
    return new DataView(value.buffer).getBigUint64(0, true);
  }

  /** The counters of `slot` (1..maxSlots-1). */
  counters(slot: number): SlotCounters {
    this.checkSlot(slot);
    const [assigned, noSocket, refused] = this.readCounters(slot);
    return { assigned, noSocket, refused };
  }

  /** The plane's line: lookups that matched a cluster port, and those no daemon took. */
  totals(): DispatchTotals {
    const line = this.readCounters(NO_SLOT);
    return { matched: line[TOTAL_MATCHED], unassigned: line[TOTAL_UNASSIGNED] };
  }

  /**
   * Attaches the program to the network namespace behind `netnsFd` (an open
   * /proc/PID/ns/net or /run/netns/NAME; the caller keeps and closes it) and
   * returns the link's fd. The program stays attached while this object holds
   * the link, or while it is pinned. BPF_FAILED (EEXIST) when already attached.
   */
  attach(netnsFd: number): number {
    this.checkOpen();
    if (this.f.link >= 0) fail('BPF_FAILED', 'the dispatch program is already attached (link fd ' + this.f.link + ')');
    this.f.link = createLink(this.f.program, netnsFd, AttachType.skLookup);
    return this.f.link;
  }

  /** The attached namespace's inode (as `stat -L -c %i /proc/PID/ns/net` prints it), or null when not attached. */
  attachedNetnsInode(): number | null {
    this.checkOpen();
    if (this.f.link < 0) return null;
    const info = linkInfo(this.f.link);
    // A detached link reports inode 0.
    return info.netnsInode === 0 ? null : info.netnsInode;
  }

  /**
   * Detaches now (BPF_LINK_DETACH, effective even while the link is pinned) and
   * closes the link. Pins are left to unpin(). No-op when not attached.
   */
  detach(): void {
    this.checkOpen();
    for (const field of ['countLink', 'link'] as const) {
      const link = this.f[field];
      if (link < 0) continue;
      this.f[field] = -1;
      try {
        detachLink(link);
      } finally {
        closeFd(link);
      }
    }
  }

  /**
   * Pins the programs, the maps and (when attached) the links under `dir`,
   * which must lie in a mounted bpffs; created when missing. A name already
   * pinned there is left as it is (pin again after attaching the counting program). A pinned link
   * keeps the program attached after this process exits; adopt(dir) takes it
   * all over. On failure the pins made so far are removed.
   */
  pin(dir: string): void {
    this.checkOpen();
    mkdirSync(dir, { recursive: true });
    const made: string[] = [];
    try {
      const objects: Array<[string, number]> = PIN_NAMES.filter((name) => this.f[name] >= 0).map((name) => [name, this.f[name]]);
      if (this.f.link >= 0) objects.push([PIN_LINK, this.f.link]);
      if (this.f.countLink >= 0) objects.push([PIN_COUNT_LINK, this.f.countLink]);
      for (const [name, fd] of objects) {
        // Pinned by an earlier pin() of this object (adopted, or pinned before the counting link was made).
        if (existsSync(join(dir, name))) continue;
        pinObject(fd, join(dir, name));
        made.push(join(dir, name));
      }
    } catch (error) {
      for (const path of made) rmSync(path, { force: true });
      throw error;
    }
  }

  /**
   * Removes the pins pin() makes under `dir` (and the directory when it is
   * then empty). The objects live on while fds refer to them: a pinned link
   * whose pin is removed detaches when its last fd closes.
   */
  static unpin(dir: string): void {
    for (const name of [...PIN_NAMES, PIN_LINK, PIN_COUNT_LINK]) rmSync(join(dir, name), { force: true });
    try {
      rmSync(dir, { recursive: false });
    } catch {
      // Not empty (someone else's pins) or already gone: leave it.
    }
  }

  /** Closes every fd. An unpinned link's program detaches; maps and program go once nothing refers to them. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const f = this.f;
    closeAll([f.link, f.countLink, f.program, f.count, f.ports, f.buckets, f.sockets, f.counters, f.members, f.loads, f.slots]);
    f.link = f.countLink = -1;
  }

  private readCounters(slot: number): number[] {
    this.checkOpen();
    const value = new Uint8Array(COUNTER_SIZE);
    lookupElement(this.f.counters, u32(slot), value);
    const view = new DataView(value.buffer);
    const out: number[] = [];
    for (let i = 0; i < COUNTER_FIELDS; i++) out.push(Number(view.getBigUint64(i * 8, true)));
    return out;
  }

  private checkOpen(): void {
    if (this.closed) fail('BPF_FAILED', 'this dispatch has been closed');
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.maxPorts) fail('CONFIG_INVALID', `port index ${index} is not in 0..${this.maxPorts - 1}`);
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot >= this.maxSlots) fail('CONFIG_INVALID', `slot ${slot} is not in 1..${this.maxSlots - 1}`);
  }
}
