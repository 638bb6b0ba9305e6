// BTF as btf.ts encodes it: the bytes of the header and types (pure), and,
// as root, the kernel taking the blob and a socket-storage map described by it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BtfBuilder } from '../../src/bpf/btf.js';
import { BPF_F_CLONE, BPF_F_NO_PREALLOC, MapType, closeFd, createMap, loadBtf } from '../../src/bpf/syscalls.js';
import { skipUnlessRoot } from '../support/netns.js';

function slotTypes(): { btf: BtfBuilder; key: number; value: number } {
  const btf = new BtfBuilder();
  const key = btf.addInt('int', 4, true);
  const u32 = btf.addInt('unsigned int', 4, false);
  const value = btf.addStruct('hlb_slot', [{ name: 'slot', type: u32 }, { name: 'counted', type: u32 }]);
  return { btf, key, value };
}

test('btf: header, types and strings laid out as linux/btf.h says', () => {
  const { btf, key, value } = slotTypes();
  assert.deepEqual([key, value], [1, 3], 'ids from 1, in the order added');
  const bytes = btf.build();
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint16(0, true), 0xeb9f, 'magic');
  assert.equal(bytes[2], 1, 'version');
  assert.equal(view.getUint32(4, true), 24, 'header length');
  const typeLength = view.getUint32(12, true);
  // Two INTs (3 words + 1) and a struct of two members (3 words + 2 × 3).
  assert.equal(typeLength, 4 * (4 + 4 + 3 + 6));
  assert.equal(view.getUint32(16, true), typeLength, 'strings right after the types');
  const strings = new TextDecoder().decode(bytes.subarray(24 + typeLength));
  assert.equal(strings, '\0int\0unsigned int\0slot\0counted\0hlb_slot\0', 'members named before their struct');
  assert.equal(view.getUint32(20, true), strings.length);
  // The first INT: name "int", kind 1, size 4, signed, 32 bits.
  assert.deepEqual([0, 1, 2, 3].map((i) => view.getUint32(24 + 4 * i, true)), [1, 1 << 24, 4, (1 << 24) | 32]);
  // The struct: kind 4 with 2 members, size 8; "counted" at bit 32.
  const struct = 24 + 4 * 8;
  assert.equal(view.getUint32(struct + 4, true), (4 << 24) | 2);
  assert.equal(view.getUint32(struct + 8, true), 8);
  assert.deepEqual([0, 1, 2].map((i) => view.getUint32(struct + 24 + 4 * i, true)), [strings.indexOf('counted'), 2, 32]);
});

test('btf: the kernel loads it, and a cloning socket-storage map exists only with it', (t) => {
  if (!skipUnlessRoot(t, 'bpf(2)')) return;
  const { btf, key, value } = slotTypes();
  const spec = { type: MapType.skStorage, keySize: 4, valueSize: 8, maxEntries: 0, flags: BPF_F_NO_PREALLOC | BPF_F_CLONE, name: 'hlb_test_slots' };
  assert.throws(() => createMap(spec), (e: Error & { code?: string }) => e.code === 'BPF_FAILED', 'no BTF: the kernel refuses a socket-storage map');
  const btfFd = loadBtf(btf.build());
  try {
    closeFd(createMap({ ...spec, btf: { fd: btfFd, keyTypeId: key, valueTypeId: value } }));
    assert.throws(() => createMap({ ...spec, btf: { fd: btfFd, keyTypeId: value, valueTypeId: value } }), /BPF_MAP_CREATE/, 'a key that is not an int is refused');
  } finally {
    closeFd(btfFd);
  }
  assert.throws(() => loadBtf(new Uint8Array(24)), /load BTF/, 'a blob with no magic is refused');
});
