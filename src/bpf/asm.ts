// An eBPF instruction encoder: programs are written as a sequence of calls
// (one per instruction) with named labels, and assembled into the bytes
// BPF_PROG_LOAD takes (struct bpf_insn[], 8 bytes each, host order). It owns
// encodings and jump resolution only; what a program means is its author's
// (sk-lookup.ts), and whether it is safe is the kernel verifier's.
//
// Encoding (Documentation/bpf/standardization/instruction-set.rst): byte 0 the
// opcode (class | size/mode | op/source), byte 1 dst_reg in the low nibble and
// src_reg in the high one, bytes 2-3 a signed 16-bit offset, bytes 4-7 a signed
// 32-bit immediate. LD_IMM64 takes two slots, its second holding the upper
// 32 bits. A jump's offset counts slots from the instruction after the jump.

import { HostlbError } from '../errors.js';

/** A register; r10 is the read-only frame pointer, r0 the return value, r1-r5 arguments (clobbered by calls). */
export interface Register {
  readonly index: number;
}

function register(index: number): Register {
  return Object.freeze({ index });
}

export const R0 = register(0);
export const R1 = register(1);
export const R2 = register(2);
export const R3 = register(3);
export const R4 = register(4);
export const R5 = register(5);
export const R6 = register(6);
export const R7 = register(7);
export const R8 = register(8);
export const R9 = register(9);
export const R10 = register(10);

/** Memory access width: 1, 2, 4 or 8 bytes. */
export type Size = 'b' | 'h' | 'w' | 'dw';
export type AluOp = 'add' | 'sub' | 'mul' | 'div' | 'or' | 'and' | 'lsh' | 'rsh' | 'mod' | 'xor' | 'mov' | 'arsh';
/** Jump conditions; unsigned unless prefixed with s. */
export type JumpCondition = 'eq' | 'gt' | 'ge' | 'set' | 'ne' | 'sgt' | 'sge' | 'lt' | 'le' | 'slt' | 'sle';
export type AtomicOp = 'add' | 'or' | 'and' | 'xor';

// Instruction classes.
const CLASS_LD = 0x00;
const CLASS_LDX = 0x01;
const CLASS_ST = 0x02;
const CLASS_STX = 0x03;
const CLASS_ALU = 0x04;
const CLASS_JMP = 0x05;
const CLASS_JMP32 = 0x06;
const CLASS_ALU64 = 0x07;

const SIZE: Record<Size, number> = { w: 0x00, h: 0x08, b: 0x10, dw: 0x18 };
const MODE_IMM = 0x00;
const MODE_MEM = 0x60;
const MODE_ATOMIC = 0xc0;
const SOURCE_K = 0x00;
const SOURCE_X = 0x08;

const ALU: Record<AluOp, number> = {
  add: 0x00, sub: 0x10, mul: 0x20, div: 0x30, or: 0x40, and: 0x50,
  lsh: 0x60, rsh: 0x70, mod: 0x90, xor: 0xa0, mov: 0xb0, arsh: 0xc0,
};
const ALU_NEG = 0x80;
const ALU_END = 0xd0;
const END_TO_LE = 0x00;
const END_TO_BE = 0x08;

const JUMP: Record<JumpCondition, number> = {
  eq: 0x10, gt: 0x20, ge: 0x30, set: 0x40, ne: 0x50, sgt: 0x60,
  sge: 0x70, lt: 0xa0, le: 0xb0, slt: 0xc0, sle: 0xd0,
};
const JMP_JA = 0x00;
const JMP_CALL = 0x80;
const JMP_EXIT = 0x90;

const ATOMIC: Record<AtomicOp, number> = { add: 0x00, or: 0x40, and: 0x50, xor: 0xa0 };
const ATOMIC_FETCH = 0x01;

/** src_reg of LD_IMM64 when its immediate is a map fd the kernel swaps for the map (BPF_PSEUDO_MAP_FD). */
export const PSEUDO_MAP_FD = 1;

/** Bytes per instruction slot. */
export const INSN_SIZE = 8;

/** Kernel helper function numbers (enum bpf_func_id in linux/bpf.h). */
export const Helper = {
  mapLookupElem: 1,
  mapUpdateElem: 2,
  mapDeleteElem: 3,
  ktimeGetNs: 5,
  getPrandomU32: 7,
  getSmpProcessorId: 8,
  sockOpsCbFlagsSet: 59,
  skRelease: 86,
  skStorageGet: 107,
  skAssign: 124,
} as const;

interface Slot {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
  /** A jump's target, resolved into `off` by assemble(). */
  target?: string;
}

function fail(message: string): never {
  throw new HostlbError('BPF_ASSEMBLY', message);
}

function isRegister(value: Register | number): value is Register {
  return typeof value === 'object';
}

function checkRegister(r: Register, what: string): number {
  if (!Number.isInteger(r.index) || r.index < 0 || r.index > 10) fail(`${what}: r${r.index} is not a register (r0-r10)`);
  return r.index;
}

/** A signed 32-bit immediate; values up to 0xffffffff are taken as their 32-bit pattern. */
function imm32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) fail(`${what}: immediate ${value} does not fit 32 bits`);
  return value | 0;
}

function off16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -0x8000 || value > 0x7fff) fail(`${what}: offset ${value} does not fit a signed 16-bit field`);
  return value;
}

/**
 * Builds one program. Each method appends one instruction (ldImm64 and
 * ldMapFd two slots) and returns the assembler, so programs read top to
 * bottom. Labels may be used before they are placed; assemble() resolves them
 * and throws HostlbError 'BPF_ASSEMBLY' on a missing label or a jump too far.
 */
export class Assembler {
  private readonly slots: Slot[] = [];
  private readonly labels = new Map<string, number>();

  /** Instruction slots so far (LD_IMM64 counts two). */
  get length(): number {
    return this.slots.length;
  }

  /** Places `name` at the next instruction. */
  label(name: string): this {
    if (this.labels.has(name)) fail(`label "${name}" is placed twice`);
    this.labels.set(name, this.slots.length);
    return this;
  }

  /** 64-bit ALU: dst = dst OP src (mov: dst = src). An immediate is sign-extended to 64 bits. */
  alu64(op: AluOp, dst: Register, src: Register | number): this {
    return this.alu(CLASS_ALU64, op, dst, src);
  }

  /** 32-bit ALU on the low halves; the result is zero-extended into dst's upper 32 bits. */
  alu32(op: AluOp, dst: Register, src: Register | number): this {
    return this.alu(CLASS_ALU, op, dst, src);
  }

  mov64(dst: Register, src: Register | number): this {
    return this.alu64('mov', dst, src);
  }

  mov32(dst: Register, src: Register | number): this {
    return this.alu32('mov', dst, src);
  }

  neg64(dst: Register): this {
    return this.push(CLASS_ALU64 | ALU_NEG, checkRegister(dst, 'neg64'), 0, 0, 0);
  }

  neg32(dst: Register): this {
    return this.push(CLASS_ALU | ALU_NEG, checkRegister(dst, 'neg32'), 0, 0, 0);
  }

  /** Byte order conversion of dst's low `bits` to little- or big-endian (htons is endian('be', r, 16) on x86). */
  endian(order: 'le' | 'be', dst: Register, bits: 16 | 32 | 64): this {
    if (bits !== 16 && bits !== 32 && bits !== 64) fail(`endian: width ${String(bits)} is not 16, 32 or 64`);
    const source = order === 'be' ? END_TO_BE : END_TO_LE;
    return this.push(CLASS_ALU | ALU_END | source, checkRegister(dst, 'endian'), 0, 0, bits);
  }

  /** dst = *(size *)(src + off), zero-extended. */
  ldx(size: Size, dst: Register, src: Register, off: number): this {
    return this.push(CLASS_LDX | MODE_MEM | SIZE[size], checkRegister(dst, 'ldx'), checkRegister(src, 'ldx'), off16(off, 'ldx'), 0);
  }

  /** *(size *)(dst + off) = src. */
  stx(size: Size, dst: Register, off: number, src: Register): this {
    return this.push(CLASS_STX | MODE_MEM | SIZE[size], checkRegister(dst, 'stx'), checkRegister(src, 'stx'), off16(off, 'stx'), 0);
  }

  /** *(size *)(dst + off) = imm (sign-extended for dw). */
  st(size: Size, dst: Register, off: number, imm: number): this {
    return this.push(CLASS_ST | MODE_MEM | SIZE[size], checkRegister(dst, 'st'), 0, off16(off, 'st'), imm32(imm, 'st'));
  }

  /**
   * Atomic read-modify-write: *(size *)(dst + off) OP= src. With `fetch` the
   * old value lands in src. Only 'w' and 'dw' exist.
   */
  atomic(op: AtomicOp, size: 'w' | 'dw', dst: Register, off: number, src: Register, fetch = false): this {
    if (size !== 'w' && size !== 'dw') fail(`atomic: size ${String(size)} is not w or dw`);
    const imm = ATOMIC[op] | (fetch ? ATOMIC_FETCH : 0);
    return this.push(CLASS_STX | MODE_ATOMIC | SIZE[size], checkRegister(dst, 'atomic'), checkRegister(src, 'atomic'), off16(off, 'atomic'), imm);
  }

  /** dst = a 64-bit constant (two slots). */
  ldImm64(dst: Register, value: bigint | number): this {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) fail(`ldImm64: ${value} is not a safe integer (pass a bigint)`);
    const big = BigInt(value);
    if (big < -(1n << 63n) || big >= 1n << 64n) fail(`ldImm64: ${big} does not fit 64 bits`);
    const v = BigInt.asUintN(64, big);
    return this.wide(checkRegister(dst, 'ldImm64'), 0, Number(v & 0xffffffffn), Number(v >> 32n));
  }

  /** dst = the map behind `fd` (LD_IMM64 with BPF_PSEUDO_MAP_FD; the kernel resolves it at load). */
  ldMapFd(dst: Register, fd: number): this {
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) fail(`ldMapFd: ${fd} is not an fd`);
    return this.wide(checkRegister(dst, 'ldMapFd'), PSEUDO_MAP_FD, fd, 0);
  }

  /** Unconditional jump to `label`. */
  ja(label: string): this {
    return this.push(CLASS_JMP | JMP_JA, 0, 0, 0, 0, label);
  }

  /** if (dst COND src) goto label, comparing all 64 bits (an immediate is sign-extended). */
  jmp(cond: JumpCondition, dst: Register, src: Register | number, label: string): this {
    return this.branch(CLASS_JMP, cond, dst, src, label);
  }

  /** if ((u32)dst COND (u32)src) goto label: the low halves only. */
  jmp32(cond: JumpCondition, dst: Register, src: Register | number, label: string): this {
    return this.branch(CLASS_JMP32, cond, dst, src, label);
  }

  /** Calls kernel helper number `helper` (Helper.*): arguments in r1-r5, result in r0; r1-r5 are clobbered. */
  call(helper: number): this {
    return this.push(CLASS_JMP | JMP_CALL, 0, 0, 0, imm32(helper, 'call'));
  }

  /** Returns r0. */
  exit(): this {
    return this.push(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0);
  }

  /** The program as struct bpf_insn[] bytes, labels resolved. The assembler can keep growing afterwards. */
  assemble(): Uint8Array {
    const bytes = new Uint8Array(this.slots.length * INSN_SIZE);
    const view = new DataView(bytes.buffer);
    this.slots.forEach((slot, i) => {
      let off = slot.off;
      if (slot.target !== undefined) {
        const at = this.labels.get(slot.target);
        if (at === undefined) fail(`jump at instruction ${i} to label "${slot.target}", which is never placed`);
        off = at - (i + 1);
        if (off < -0x8000 || off > 0x7fff) fail(`jump at instruction ${i} to "${slot.target}" spans ${off} instructions (limit ±32767)`);
      }
      const at = i * INSN_SIZE;
      bytes[at] = slot.code;
      bytes[at + 1] = (slot.src << 4) | slot.dst;
      view.setInt16(at + 2, off, true);
      view.setInt32(at + 4, slot.imm, true);
    });
    return bytes;
  }

  private alu(cls: number, op: AluOp, dst: Register, src: Register | number): this {
    const d = checkRegister(dst, op);
    if (isRegister(src)) return this.push(cls | ALU[op] | SOURCE_X, d, checkRegister(src, op), 0, 0);
    return this.push(cls | ALU[op] | SOURCE_K, d, 0, 0, imm32(src, op));
  }

  private branch(cls: number, cond: JumpCondition, dst: Register, src: Register | number, label: string): this {
    const d = checkRegister(dst, `j${cond}`);
    if (isRegister(src)) return this.push(cls | JUMP[cond] | SOURCE_X, d, checkRegister(src, `j${cond}`), 0, 0, label);
    return this.push(cls | JUMP[cond] | SOURCE_K, d, 0, 0, imm32(src, `j${cond}`), label);
  }

  private wide(dst: number, src: number, low: number, high: number): this {
    this.push(CLASS_LD | MODE_IMM | SIZE.dw, dst, src, 0, low | 0);
    return this.push(0, 0, 0, 0, high | 0);
  }

  private push(code: number, dst: number, src: number, off: number, imm: number, target?: string): this {
    this.slots.push({ code, dst, src, off, imm, target });
    return this;
  }
}
