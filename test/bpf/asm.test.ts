// The eBPF encoder against known encodings, and the dispatch program's pure
// parts (port keys, flow hash, candidates, its assembled shape). No root, no
// kernel. Golden bytes: the opcode tables of
// Documentation/bpf/standardization/instruction-set.rst, cross-checked with
// `llvm-mc -triple bpf -mcpu=v3 -show-encoding` (LLVM 14) for each line below.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Assembler, PSEUDO_MAP_FD, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, type Register } from '../../src/bpf/asm.js';
import { BUCKETS, TRIES, bucketCandidates, buildProgram, encodePortKey, flowHash } from '../../src/bpf/sk-lookup.js';
import { buildCountProgram, cpuGroupStart, decodeLoad, encodeFreshLoad, encodeMembers, encodeSequence, encodeSlotValue, LOAD_SIZE, MAX_MEMBERS, MEMBERS_SIZE, PortMode, SLOT_VALUE_SIZE } from '../../src/bpf/load-count.js';
import { findSocketInode } from '../../src/bpf/listener.js';

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function one(build: (a: Assembler) => unknown): string {
  const a = new Assembler();
  build(a);
  return hex(a.assemble());
}

// description, instruction, expected bytes (the llvm-mc syntax in the description).
const GOLDEN: Array<[string, (a: Assembler) => unknown, string]> = [
  ['r0 = 1', (a) => a.mov64(R0, 1), 'b700000001000000'],
  ['exit', (a) => a.exit(), '9500000000000000'],
  ['r1 = r10', (a) => a.mov64(R1, R10), 'bfa1000000000000'],
  ['r6 = r1', (a) => a.mov64(R6, R1), 'bf16000000000000'],
  ['r1 += -24', (a) => a.alu64('add', R1, -24), '07010000e8ffffff'],
  ['w1 = w2', (a) => a.mov32(R1, R2), 'bc21000000000000'],
  ['w2 = -1 (0xffffffff taken as its bit pattern)', (a) => a.mov32(R2, 0xffffffff), 'b4020000ffffffff'],
  ['w3 <<= 8', (a) => a.alu32('lsh', R3, 8), '6403000008000000'],
  ['w1 -= w5', (a) => a.alu32('sub', R1, R5), '1c51000000000000'],
  ['r3 s>>= 7', (a) => a.alu64('arsh', R3, 7), 'c703000007000000'],
  ['r9 /= 3', (a) => a.alu64('div', R9, 3), '3709000003000000'],
  ['r1 *= r2', (a) => a.alu64('mul', R1, R2), '2f21000000000000'],
  ['w8 >>= 8', (a) => a.alu32('rsh', R8, 8), '7408000008000000'],
  ['w1 &= 255', (a) => a.alu32('and', R1, 255), '54010000ff000000'],
  ['w1 |= w3', (a) => a.alu32('or', R1, R3), '4c31000000000000'],
  ['r1 ^= 0x55', (a) => a.alu64('xor', R1, 0x55), 'a701000055000000'],
  ['w4 %= w5 (BPF_MOD | BPF_X | BPF_ALU = 0x9c)', (a) => a.alu32('mod', R4, R5), '9c54000000000000'],
  ['w7 = -w7', (a) => a.neg32(R7), '8407000000000000'],
  ['r1 = be16 r1', (a) => a.endian('be', R1, 16), 'dc01000010000000'],
  ['r1 = le32 r1', (a) => a.endian('le', R1, 32), 'd401000020000000'],
  ['r2 = *(u32 *)(r6 + 8)', (a) => a.ldx('w', R2, R6, 8), '6162080000000000'],
  ['r3 = *(u16 *)(r1 + 2)', (a) => a.ldx('h', R3, R1, 2), '6913020000000000'],
  ['r4 = *(u8 *)(r1 + 3)', (a) => a.ldx('b', R4, R1, 3), '7114030000000000'],
  ['r5 = *(u64 *)(r1 - 8)', (a) => a.ldx('dw', R5, R1, -8), '7915f8ff00000000'],
  ['*(u32 *)(r10 - 20) = r1', (a) => a.stx('w', R10, -20, R1), '631aecff00000000'],
  ['*(u64 *)(r10 - 40) = r0', (a) => a.stx('dw', R10, -40, R0), '7b0ad8ff00000000'],
  ['*(u16 *)(r1 + 2) = r7', (a) => a.stx('h', R1, 2, R7), '6b71020000000000'],
  ['*(u8 *)(r1 - 1) = r7', (a) => a.stx('b', R1, -1, R7), '7371ffff00000000'],
  ['*(u32 *)(r10 - 12) = 0 (BPF_ST | BPF_MEM | BPF_W = 0x62)', (a) => a.st('w', R10, -12, 0), '620af4ff00000000'],
  ['*(u8 *)(r10 - 1) = 7 (0x72)', (a) => a.st('b', R10, -1, 7), '720affff07000000'],
  ['*(u64 *)(r10 - 8) = -1 (0x7a)', (a) => a.st('dw', R10, -8, -1), '7a0af8ffffffffff'],
  ['lock *(u64 *)(r0 + 8) += r1', (a) => a.atomic('add', 'dw', R0, 8, R1), 'db10080000000000'],
  ['lock *(u32 *)(r0 + 4) += r1', (a) => a.atomic('add', 'w', R0, 4, R1), 'c310040000000000'],
  ['lock *(u32 *)(r1 + 0) |= w3', (a) => a.atomic('or', 'w', R1, 0, R3), 'c331000040000000'],
  ['lock *(u64 *)(r1 + 0) ^= r3', (a) => a.atomic('xor', 'dw', R1, 0, R3), 'db310000a0000000'],
  ['r0 = atomic_fetch_add((u64 *)(r2 - 16), r0) (imm BPF_ADD | BPF_FETCH)', (a) => a.atomic('add', 'dw', R2, -16, R0, true), 'db02f0ff01000000'],
  ['call 1', (a) => a.call(1), '8500000001000000'],
  ['call 124', (a) => a.call(124), '850000007c000000'],
  ['r1 = 0x1122334455667788 ll', (a) => a.ldImm64(R1, 0x1122334455667788n), '18010000887766550000000044332211'],
  ['r0 = 4294967295 ll', (a) => a.ldImm64(R0, 0xffffffff), '18000000ffffffff0000000000000000'],
  ['r0 = -1 ll', (a) => a.ldImm64(R0, -1), '18000000ffffffff00000000ffffffff'],
];

test('asm: instructions encode as the kernel documents them', () => {
  for (const [description, build, expected] of GOLDEN) assert.equal(one(build), expected, description);
});

test('asm: a map fd load is LD_IMM64 with src_reg BPF_PSEUDO_MAP_FD and the fd in imm', () => {
  assert.equal(PSEUDO_MAP_FD, 1);
  // r1 = map_by_fd(7): 0x18, dst 1 | src 1 << 4, imm 7, then the zero upper half.
  assert.equal(one((a) => a.ldMapFd(R1, 7)), '1811000007000000' + '0000000000000000');
});

test('asm: jumps resolve forward and backward labels, counting LD_IMM64 as two slots', () => {
  const a = new Assembler();
  a.label('top');
  a.jmp('eq', R0, 0, 'end'); // 0 → end at 6: off 5
  a.ldImm64(R1, 1); // 1-2
  a.jmp32('ne', R2, 2, 'top'); // 3 → 0: off -4
  a.jmp('sgt', R1, R2, 'top'); // 4 → 0: off -5
  a.ja('end'); // 5 → 6: off 0
  a.label('end');
  a.exit(); // 6
  const bytes = a.assemble();
  const insn = (i: number): string => hex(bytes.subarray(i * 8, i * 8 + 8));
  assert.equal(a.length, 7);
  assert.equal(insn(0), '1500050000000000', 'if r0 == 0 goto +5');
  assert.equal(insn(3), '5602fcff02000000', 'if w2 != 2 goto -4');
  assert.equal(insn(4), '6d21fbff00000000', 'if r1 s> r2 goto -5');
  assert.equal(insn(5), '0500000000000000', 'goto +0');
  assert.equal(insn(6), '9500000000000000');
});

test('asm: jump conditions, register and immediate, 32- and 64-bit', () => {
  // From llvm-mc: if w2 != 2 goto +5; if r3 < r4 goto +0; if w3 s<= w4 goto -7; if w1 == -1 goto -2.
  const a = new Assembler();
  a.jmp32('ne', R2, 2, 'p5').jmp('lt', R3, R4, 'p1');
  a.label('p1');
  a.label('m7');
  for (let i = 0; i < 4; i++) a.exit();
  a.jmp32('sle', R3, R4, 'm7'); // at 6 → 2: off -5
  a.jmp32('eq', R1, -1, 'm7'); // at 7 → 2: off -6
  a.label('p5');
  const bytes = a.assemble();
  assert.equal(hex(bytes.subarray(0, 8)), '5602070002000000');
  assert.equal(hex(bytes.subarray(8, 16)), 'ad43000000000000');
  assert.equal(hex(bytes.subarray(48, 56)), 'de43fbff00000000');
  assert.equal(hex(bytes.subarray(56, 64)), '1601faffffffffff');
  assert.equal(one((a) => a.jmp('set', R1, 0x10, 'x').label('x')), '4501000010000000');
});

test('asm: bad input throws BPF_ASSEMBLY with the reason', () => {
  const cases: Array<[string, (a: Assembler) => unknown, RegExp]> = [
    ['a label never placed', (a) => a.ja('nowhere').assemble(), /label "nowhere", which is never placed/],
    ['a label placed twice', (a) => a.label('x').label('x'), /placed twice/],
    ['an immediate over 32 bits', (a) => a.mov64(R0, 0x100000000), /does not fit 32 bits/],
    ['a fractional immediate', (a) => a.mov64(R0, 1.5), /does not fit 32 bits/],
    ['an offset over 16 bits', (a) => a.ldx('w', R0, R1, 0x8000), /signed 16-bit/],
    ['register r11', (a) => a.mov64({ index: 11 } as Register, 0), /not a register/],
    ['an unsafe 64-bit number', (a) => a.ldImm64(R0, 2 ** 60 + 1), /bigint/],
    ['a constant over 64 bits', (a) => a.ldImm64(R0, 1n << 64n), /does not fit 64 bits/],
    ['a negative map fd', (a) => a.ldMapFd(R1, -1), /not an fd/],
  ];
  for (const [description, build, message] of cases) {
    assert.throws(() => build(new Assembler()), (e: Error & { code?: string }) => e.code === 'BPF_ASSEMBLY' && message.test(e.message), description);
  }
  const far = new Assembler().ja('far');
  for (let i = 0; i < 0x8000; i++) far.exit();
  far.label('far');
  assert.throws(() => far.assemble(), /spans 32768 instructions/);
});

test('sk-lookup: port keys put family, protocol, host-order port and network-order address in 20 bytes', () => {
  assert.equal(hex(encodePortKey({ protocol: 'tcp', family: 4, port: 80, address: '198.18.100.1' })), '0206' + '5000' + 'c6126401' + '00'.repeat(12));
  assert.equal(hex(encodePortKey({ protocol: 'udp', family: 6, port: 0x1234, address: '2001:db8::1' })), '0a11' + '3412' + '20010db8' + '00'.repeat(11) + '01');
  assert.equal(hex(encodePortKey({ protocol: 'tcp', family: 4, port: 443 })), '0206' + 'bb01' + '00'.repeat(16), 'wildcard: the address is zero');
  assert.throws(() => encodePortKey({ protocol: 'tcp', family: 6, port: 80, address: '198.18.0.1' }), { code: 'CONFIG_INVALID' });
  assert.throws(() => encodePortKey({ protocol: 'tcp', family: 4, port: 0 }), { code: 'CONFIG_INVALID' });
});

test('sk-lookup: flowHash is __jhash_final over (address, port, seed) as include/linux/jhash.h computes it', () => {
  // Reference values from a C build of the kernel's __jhash_final with
  // a, b, c = address word, port as read from the context, seed, each + JHASH_INITVAL.
  assert.equal(flowHash(new Uint8Array([198, 18, 3, 1]), 40001, 0), 796718772);
  assert.equal(flowHash(new Uint8Array([198, 18, 3, 1]), 40001, 12345), 1308598808);
  const v6 = new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  assert.equal(flowHash(v6, 50000, 7), 1389744517);
});

test('sk-lookup: candidates are the hash bytes, low first, then the buckets after the last byte\'s', () => {
  assert.deepEqual(bucketCandidates(0x04030201), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
  assert.deepEqual(bucketCandidates(0xfa000000).slice(3, 9), [250, 251, 252, 253, 254, 255], 'after the last byte');
  assert.deepEqual(bucketCandidates(0xfe000000).slice(4, 6), [255, 0], 'wrapping at BUCKETS');
  assert.equal(bucketCandidates(0xffffffff).length, TRIES);
  assert.ok(bucketCandidates(0xdeadbeef).every((b) => b >= 0 && b < BUCKETS));
});

test('sk-lookup: the program loads each map by fd and ends in exit', () => {
  const maps = { ports: 101, buckets: 102, sockets: 103, counters: 104, members: 105, loads: 106, slots: 107, turns: 108 };
  const bytes = buildProgram(maps, 1);
  assert.equal(bytes.length % 8, 0);
  const fds = new Set<number>();
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < bytes.length; i += 8) {
    if (bytes[i] === 0x18 && bytes[i + 1] >> 4 === PSEUDO_MAP_FD) fds.add(view.getInt32(i + 4, true));
  }
  // Every map but `slots`, which only the counting program touches.
  assert.deepEqual([...fds].sort(), [101, 102, 103, 104, 105, 106, 108]);
  assert.equal(hex(bytes.subarray(bytes.length - 8)), '9500000000000000');
  // The least-loaded scan is unrolled (MAX_MEMBERS copies): past the unprivileged 4096, far below the 1M a root load allows.
  assert.ok(bytes.length / 8 < 8192, `${bytes.length / 8} instructions`);
});

test('load-count: the counting program names its two maps and returns 1; members and loads encode as the programs read them', () => {
  const bytes = buildCountProgram({ loads: 201, slots: 202 });
  const fds = new Set<number>();
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < bytes.length; i += 8) {
    if (bytes[i] === 0x18 && bytes[i + 1] >> 4 === PSEUDO_MAP_FD) fds.add(view.getInt32(i + 4, true));
  }
  assert.deepEqual([...fds].sort(), [201, 202]);
  assert.equal(hex(bytes.subarray(bytes.length - 16)), 'b700000001000000' + '9500000000000000', 'r0 = 1; exit');

  const members = encodeMembers(PortMode.twoChoices, [{ slot: 3, weight: 2.4 }, { slot: 9, weight: 0 }]);
  assert.equal(members.length, MEMBERS_SIZE);
  const m = new DataView(members.buffer);
  assert.deepEqual([m.getUint32(0, true), m.getUint32(4, true), m.getUint32(8, true), m.getUint32(12, true), m.getUint32(16, true), m.getUint32(20, true)], [2, 2, 3, 2, 9, 1], 'n, mode, then slot/weight pairs; weights rounded, at least 1');
  const sequence = encodeSequence(3);
  assert.equal(sequence.length, MEMBERS_SIZE);
  const q = new DataView(sequence.buffer);
  assert.deepEqual([q.getUint32(0, true), q.getUint32(4, true), q.getUint32(8, true)], [3, PortMode.sequence, 0], 'mode sequence: n is the length of the order, no members');
  const many = encodeMembers(PortMode.least, Array.from({ length: MAX_MEMBERS + 5 }, (_, i) => ({ slot: i + 1, weight: 1 })));
  assert.equal(new DataView(many.buffer).getUint32(0, true), MAX_MEMBERS, 'at most MAX_MEMBERS');

  const load = new Uint8Array(LOAD_SIZE);
  const l = new DataView(load.buffer);
  l.setBigInt64(0, 5n, true); // active
  l.setBigInt64(8, 2n, true); // current window's pending
  l.setBigInt64(16, 3n, true); // previous window's
  l.setBigUint64(24, 100n, true); // window
  l.setBigUint64(32, 7n, true); // generation
  assert.deepEqual(decodeLoad(load, 100n), { active: 5, pending: 5, generation: 7n }, 'this window: both');
  assert.deepEqual(decodeLoad(load, 101n), { active: 5, pending: 2, generation: 7n }, 'a window later: the current one only');
  assert.deepEqual(decodeLoad(load, 102n), { active: 5, pending: 0, generation: 7n }, 'two later: nothing pending counts');
  assert.deepEqual(decodeLoad(encodeFreshLoad(8n), 100n), { active: 0, pending: 0, generation: 8n }, 'a new owner: nothing counted, the next generation');
  const slot = encodeSlotValue(3, 8n);
  const sv = new DataView(slot.buffer);
  assert.equal(slot.length, SLOT_VALUE_SIZE);
  assert.deepEqual([sv.getUint32(0, true), sv.getUint32(4, true), sv.getBigUint64(8, true)], [3, 0, 8n], 'slot, not counted, generation');
  l.setBigInt64(0, -1n, true);
  assert.equal(decodeLoad(load, 100n).active, 0, 'a count that raced below 0 reads as 0');
});

test('listener: finds a socket inode in /proc/net text by address, port and state', () => {
  const tcp = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 010212C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
    '   1: 020212C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0',
    '   2: 010212C6:1F90 030312C6:9C41 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  assert.equal(findSocketInode(tcp, new Uint8Array([198, 18, 2, 2]), 8080, 0x0a), 4343);
  assert.equal(findSocketInode(tcp, new Uint8Array([198, 18, 2, 1]), 8080, 0x0a), 4242);
  assert.equal(findSocketInode(tcp, new Uint8Array([198, 18, 2, 3]), 8080, 0x0a), null);
  const tcp6 = [
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: B80D0120000002000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  const v6 = new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  assert.equal(findSocketInode(tcp6, v6, 8080, 0x0a), 777);
});

test('load-count: the SYN\'s CPU\'s member, the flow hash choosing among a CPU\'s several', () => {
  // Fewer members than CPUs: the CPU's own, by number.
  assert.deepEqual([0, 1, 2, 3].map((cpu) => cpuGroupStart(cpu, 12345, 2, 4)), [0, 1, 0, 1]);
  assert.deepEqual([0, 1].map((cpu) => cpuGroupStart(cpu, 7, 2, 2)), [0, 1]);
  // More members than CPUs: members i with i mod cpus = cpu, by hash; every member is some CPU's.
  const seen = new Set<number>();
  for (let cpu = 0; cpu < 2; cpu++) {
    for (let h = 0; h < 64; h++) {
      const member = cpuGroupStart(cpu, h, 5, 2);
      assert.ok(member >= 0 && member < 5, `member ${member}`);
      assert.equal(member % 2, cpu, `cpu ${cpu} hash ${h}: member ${member} is of its group`);
      seen.add(member);
    }
  }
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4], 'no member left out');
  assert.equal(cpuGroupStart(1, 0, 1, 2), 0, 'one member');
});
