// The smallest BTF hostlb needs: type descriptions the kernel insists on
// for a socket-storage map ("enforced for user space dumping": an i32 key,
// a described value). Encoded here byte by byte, as the instructions are in
// asm.ts, so loading it needs one bpf(BPF_BTF_LOAD) call and no toolchain.
//
// Layout (linux/btf.h): a 24-byte header, the type section, the string
// section. Types are numbered from 1 in the order they are written; a
// name is an offset into the strings, which start with an empty one.

const BTF_MAGIC = 0xeb9f;
const HEADER_SIZE = 24;
const KIND_INT = 1;
const KIND_STRUCT = 4;
const INT_SIGNED = 1;

/** One member of a struct: its name and the id of its (already added) type. */
export interface BtfMember {
  name: string;
  type: number;
}

/** Builds a BTF blob; add* return the new type's id. */
export class BtfBuilder {
  private readonly types: number[] = [];
  private readonly strings: string[] = [''];
  private stringBytes = 1;
  private readonly sizes: number[] = [0];

  /** An integer of `bytes` bytes (1, 2, 4, 8 or 16). */
  addInt(name: string, bytes: number, signed: boolean): number {
    this.types.push(this.name(name), (KIND_INT << 24) >>> 0, bytes, ((signed ? INT_SIGNED : 0) << 24) | (bytes * 8));
    return this.added(bytes);
  }

  /** A struct of the given members, laid out one after another with no padding. */
  addStruct(name: string, members: readonly BtfMember[]): number {
    let bits = 0;
    const words: number[] = [];
    for (const m of members) {
      words.push(this.name(m.name), m.type, bits);
      bits += this.sizes[m.type] * 8;
    }
    this.types.push(this.name(name), ((KIND_STRUCT << 24) | members.length) >>> 0, bits / 8, ...words);
    return this.added(bits / 8);
  }

  /** The blob: header, types, strings. */
  build(): Uint8Array {
    const typeLength = this.types.length * 4;
    const text = new TextEncoder().encode(this.strings.map((s) => `${s}\0`).join(''));
    const bytes = new Uint8Array(HEADER_SIZE + typeLength + text.length);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, BTF_MAGIC, true);
    view.setUint8(2, 1); // version
    view.setUint32(4, HEADER_SIZE, true);
    view.setUint32(8, 0, true); // type_off, from the header's end
    view.setUint32(12, typeLength, true);
    view.setUint32(16, typeLength, true); // str_off
    view.setUint32(20, text.length, true);
    this.types.forEach((word, i) => view.setUint32(HEADER_SIZE + 4 * i, word >>> 0, true));
    bytes.set(text, HEADER_SIZE + typeLength);
    return bytes;
  }

  private name(text: string): number {
    const at = this.stringBytes;
    this.strings.push(text);
    this.stringBytes += new TextEncoder().encode(text).length + 1;
    return at;
  }

  private added(bytes: number): number {
    this.sizes.push(bytes);
    return this.sizes.length - 1;
  }
}
