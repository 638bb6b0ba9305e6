// Loads the addon (native/tun.cc, built by node-gyp into build/Release/) and
// states its surface as types. One addon serves every layer that needs a system
// call Node lacks: the TUN device (link/), netlink and bpf(2) sockets (netlink/,
// bpf/), the device lock (net/) and sd_notify (control/). Errors from here are
// raw (errno names); each caller maps them to its own error codes, once.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** A system error thrown by the addon: `code` is the errno name ('EPERM', 'EBUSY', 'ENOENT'). */
export interface NativeSystemError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

/** The addon's functions. All take the fd `open` returned; none keep state beyond poll handles. */
export interface TunAddon {
  /**
   * Opens /dev/net/tun and attaches it to device `name` (created when missing)
   * with IFF_TUN | IFF_NO_PI; the fd is O_NONBLOCK and FD_CLOEXEC. `name` is
   * the kernel's copy (a "%d" template comes back filled in).
   */
  open(name: string, vnetHeader?: boolean): { fd: number; name: string };
  /**
   * TUNSETOFFLOAD with TUN_F_* bits (a device opened with a virtio-net
   * header). Throws EINVAL when the kernel does not know a bit.
   */
  setOffload(fd: number, flags: number): void;
  /**
   * readBatch for a device opened with a virtio-net header: packet i's 10-byte
   * header goes to `headers[i * 10, i * 10 + 10)` and is decoded into
   * `flags[i]` (PACKET_FLAG_*), `gsoSizes[i]` (0 when not a super-packet) and
   * `csumAt[i]` (where a partial checksum lives, bytes from the IP header).
   */
  readVnetBatch(
    fd: number, buffer: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, maxPackets: number, slotSize: number,
    headers: Uint8Array, flags: Uint8Array, gsoSizes: Uint16Array, csumAt: Uint16Array,
  ): number;
  /**
   * writeBatch for a device opened with a virtio-net header: a packet whose
   * `flags[i]` says partial checksum or GSO goes out behind the header read
   * into its slot (`headers[floor(offsets[i] / slotSize) * 10]`), any other
   * behind a zero header.
   */
  writeVnetBatch(
    fd: number, buffer: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number,
    flags: Uint8Array, headers: Uint8Array, slotSize: number,
  ): number;
  /**
   * writeVnetBatch of one batch, then readVnetBatch into another: with a ring
   * (ringAttach) the writes and the first reads go in one system call. The
   * batches must not share a buffer or headers (RangeError): the kernel need
   * not run the writes first. Returns read + 65536 * accepted.
   */
  cycleVnetBatch(
    fd: number, outBuffer: Uint8Array, outOffsets: Uint32Array, outLengths: Uint32Array, outCount: number,
    outFlags: Uint8Array, outHeaders: Uint8Array, outSlotSize: number,
    inBuffer: Uint8Array, inOffsets: Uint32Array, inLengths: Uint32Array, maxPackets: number, inSlotSize: number,
    inHeaders: Uint8Array, inFlags: Uint8Array, gsoSizes: Uint16Array, csumAt: Uint16Array,
  ): number;
  /**
   * From now until close(fd), readVnetBatch, writeVnetBatch and cycleVnetBatch on this fd go
   * through an io_uring: a batch's reads, or its writes, in one system call.
   * Throws (code ENOSYS, EPERM, ...) when the kernel or a sandbox refuses
   * io_uring; the fd then keeps reading and writing one call per packet.
   */
  ringAttach(fd: number): void;
  /**
   * flock(fd, LOCK_EX | LOCK_NB): true when this open file now holds the lock,
   * false when another open file does. Released when the fd closes (or the
   * process ends, however it ends).
   */
  tryLock(fd: number): boolean;
  /** TUNSETPERSIST: whether the device outlives the close of its last fd. */
  setPersist(fd: number, on: boolean): void;
  /** The device's MTU in bytes (SIOCGIFMTU in the caller's network namespace). */
  getMtu(name: string): number;
  /** Sets the device's MTU in bytes (SIOCSIFMTU). */
  setMtu(name: string, mtu: number): void;
  /**
   * Reads packets with read(2), packet i into `buffer[offsets[i], offsets[i] + slotSize)`,
   * until EAGAIN or `maxPackets`; stores each length in `lengths[i]` (clamped to
   * the slot) and returns the count. Throws only when nothing was read and the
   * fd failed (EBADF, EBADFD). One call per batch.
   */
  readBatch(fd: number, buffer: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, maxPackets: number, slotSize: number): number;
  /**
   * Writes packets 0..count-1 (`buffer[offsets[i], offsets[i] + lengths[i])`),
   * one write(2) each, and returns how many the kernel accepted. A full queue
   * or a down device (EAGAIN, ENOBUFS, EIO) drops the rest of the batch; a
   * packet the kernel rejects (EINVAL, EMSGSIZE) is dropped alone. Throws only
   * when the fd itself failed.
   */
  writeBatch(fd: number, buffer: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  /**
   * Calls `callback` whenever the fd is readable (libuv uv_poll_t, level-
   * triggered: again on the next loop turn while packets remain). A poll error
   * is passed once as an Error with an errno `code`, after which polling stops.
   * Replaces an earlier watch of the same fd. The handle keeps the loop alive.
   */
  watch(fd: number, callback: (error?: NativeSystemError) => void): void;
  /** Stops watching `fd`; no-op when not watched. */
  unwatch(fd: number): void;
  /** Stops any watch, then closes `fd`. */
  close(fd: number): void;
  /**
   * A non-blocking netlink socket of `protocol` (12: netfilter), bound to a
   * kernel-chosen port id and joined to multicast `groups`, with its receive
   * buffer forced to `receiveBufferBytes` (0: the default). readBatch,
   * writeBatch, watch and close work on it as on the TUN fd.
   */
  netlinkOpen(protocol: number, groups: number[], receiveBufferBytes: number): { fd: number; portId: number };
  /** readBatch for a socket: up to min(maxPackets, 256) datagrams in one recvmmsg(2). */
  recvBatch(fd: number, buffer: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, maxPackets: number, slotSize: number): number;
  /**
   * madvise(MADV_HUGEPAGE) on the 2 MiB-aligned spans of an untouched buffer,
   * so its pages fault in as huge pages. Returns the bytes advised (0: declined).
   */
  adviseHugePages(buffer: ArrayBuffer): number;
}

/** Where node-gyp puts the addon, relative to this file's compiled location (dist/src/link/). */
export const TUN_ADDON_PATH = fileURLToPath(new URL('../../../build/Release/hostlb_tun.node', import.meta.url));

let loaded: TunAddon | null = null;

/**
 * Loads the addon once and caches it. Throws an Error with code
 * 'TUN_ADDON_NOT_BUILT' when the build output is missing or does not load.
 */
export function loadTunAddon(): TunAddon {
  if (loaded !== null) return loaded;
  const require = createRequire(import.meta.url);
  try {
    loaded = require(TUN_ADDON_PATH) as TunAddon;
  } catch (cause) {
    const error = new Error(
      `the TUN addon is not built (${TUN_ADDON_PATH}): run npm install to build the native addon ` +
        `(it needs a C++ compiler, make and python3)`,
      { cause },
    ) as NativeSystemError;
    error.code = 'TUN_ADDON_NOT_BUILT';
    throw error;
  }
  return loaded;
}

/**
 * An allocator for large, randomly accessed buffers (the connection table):
 * a zeroed ArrayBuffer advised to use huge pages before anything touches it.
 * Falls back to a plain buffer when the addon is missing.
 */
export function hugePageAllocator(bytes: number): ArrayBuffer {
  const buffer = new ArrayBuffer(bytes);
  try {
    loadTunAddon().adviseHugePages(buffer);
  } catch {
    // No addon (a build without the native part): plain pages still work.
  }
  return buffer;
}

/** A system error from bpfProgLoad: `log` is the verifier's log ('' when none was asked for). */
export interface NativeBpfLoadError extends NativeSystemError {
  log: string;
}

/**
 * The addon's bpf(2) and pidfd wrappers, used by src/bpf/ for the socket data
 * plane. One command each, no policy: keys, values and instructions are bytes
 * encoded by the caller. Errors are raw (errno names); src/bpf/syscalls.ts
 * maps them to HostlbError codes. Every fd returned is close-on-exec; `close`
 * above closes them.
 */
export interface BpfAddon {
  /**
   * BPF_MAP_CREATE. `name` is at most 15 bytes of [A-Za-z0-9_.]. With a BTF fd
   * (bpfBtfLoad) the key and value are described by those type ids; a
   * socket-storage map needs them. Returns the map fd.
   */
  bpfMapCreate(
    type: number, keySize: number, valueSize: number, maxEntries: number, flags: number, name: string,
    btfFd?: number, btfKeyTypeId?: number, btfValueTypeId?: number,
  ): number;
  /**
   * BPF_BTF_LOAD of a BTF blob (btf.ts); with a `log` buffer a refusal throws
   * a NativeBpfLoadError whose `log` says why. Returns the BTF object's fd.
   */
  bpfBtfLoad(blob: Uint8Array, log: Uint8Array | null): number;
  /**
   * BPF_MAP_UPDATE_ELEM with flags BPF_ANY (0), BPF_NOEXIST (1) or BPF_EXIST (2).
   * For a SOCKMAP the value is the socket's fd. Throws RangeError when `key` or
   * `value` is shorter than the map's sizes (asked from the map on each call).
   */
  bpfMapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags: number): void;
  /** BPF_MAP_LOOKUP_ELEM into `value`; false when the key is absent. A SOCKMAP gives the socket cookie (u64). */
  bpfMapLookup(fd: number, key: Uint8Array, value: Uint8Array): boolean;
  /** BPF_MAP_DELETE_ELEM; false when the key was absent. */
  bpfMapDelete(fd: number, key: Uint8Array): boolean;
  /** BPF_MAP_GET_NEXT_KEY into `next`; `key` null asks for the first. False after the last key. */
  bpfMapNextKey(fd: number, key: Uint8Array | null, next: Uint8Array): boolean;
  /**
   * BPF_PROG_LOAD of `instructions` (struct bpf_insn[] as bytes). With
   * `logLevel` > 0 and a `log` buffer the verifier writes its log there; a
   * failure throws a NativeBpfLoadError whose `log` holds it. ENOSPC: the log
   * did not fit the buffer. Returns the program fd.
   */
  bpfProgLoad(
    type: number,
    expectedAttachType: number,
    instructions: Uint8Array,
    license: string,
    name: string,
    logLevel: number,
    log: Uint8Array | null,
  ): number;
  /** BPF_LINK_CREATE: attaches `progFd` to `targetFd` (a netns fd for BPF_SK_LOOKUP). Returns the link fd. */
  bpfLinkCreate(progFd: number, targetFd: number, attachType: number, flags: number): number;
  /** BPF_LINK_DETACH: detaches the link's program now, even while it is pinned. */
  bpfLinkDetach(linkFd: number): void;
  /** BPF_OBJ_PIN: pins a map, program or link at `path` inside a bpffs. */
  bpfObjPin(fd: number, path: string): void;
  /** BPF_OBJ_GET: an fd for the object pinned at `path`. */
  bpfObjGet(path: string): number;
  /** BPF_OBJ_GET_INFO_BY_FD into `buffer` (zeroed first); returns the bytes the kernel filled. */
  bpfObjGetInfo(fd: number, buffer: Uint8Array): number;
  /** pidfd_open(pid, 0) (Linux 5.3). */
  pidfdOpen(pid: number): number;
  /** pidfd_getfd(pidfd, targetFd, 0) (Linux 5.6): this process's duplicate of the target's fd. Needs ptrace access (root). */
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /** Closes an fd (the TUN addon's close). */
  close(fd: number): void;
}

/**
 * The same addon seen through its bpf surface. Throws like loadTunAddon, and
 * with code 'BPF_ADDON_STALE' when the built addon predates these functions
 * (rebuild it: npx node-gyp rebuild).
 */
export function loadBpfAddon(): BpfAddon {
  const addon = loadTunAddon() as unknown as Partial<BpfAddon>;
  if (typeof addon.bpfProgLoad !== 'function' || typeof addon.pidfdGetfd !== 'function') {
    const error = new Error(
      `the native addon at ${TUN_ADDON_PATH} has no bpf functions: it was built from an older native/tun.cc ` +
        `(run npm install or npx node-gyp rebuild)`,
    ) as NativeSystemError;
    error.code = 'BPF_ADDON_STALE';
    throw error;
  }
  return addon as BpfAddon;
}
