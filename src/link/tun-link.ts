// The Link over a Linux TUN device: batches of raw IP packets through the
// native addon, readiness through libuv's poll. Owns the mapping of OS errors to
// LinkError codes (once, here); routes and rules for the device live in src/net/.

import { HostlbError } from '../errors.js';
import type { CycleResult, Link, PacketBatch } from './link.js';
import { loadTunAddon, type NativeSystemError, type TunAddon } from '../native/addon.js';

/** Stable codes for every way opening or using a TUN device fails. */
export type LinkErrorCode =
  | 'TUN_ADDON_NOT_BUILT'
  | 'TUN_BAD_NAME'
  | 'TUN_PERMISSION'
  | 'TUN_NOT_AVAILABLE'
  | 'TUN_BUSY'
  | 'TUN_NAME_CONFLICT'
  | 'TUN_OPEN_FAILED'
  | 'TUN_CONFIG_FAILED'
  | 'TUN_IO_FAILED';

/** An error at the link boundary. `code` is stable; the message says what to do. `cause` is the OS error. */
export class LinkError extends HostlbError {
  declare readonly code: LinkErrorCode;
  /** The device the error is about. */
  readonly device: string;

  constructor(code: LinkErrorCode, device: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.device = device;
  }
}

export interface TunLinkOptions {
  /**
   * Sets TUNSETPERSIST: a persistent device and its routes outlive this
   * process, so a restart does not leak untranslated replies (DESIGN.md).
   * Undefined leaves the flag as it is (a new device is not persistent).
   */
  persist?: boolean;
  /** Sets the device MTU in bytes (68..65535). Undefined keeps the device's MTU (1500 for a new one). */
  mtu?: number;
  /**
   * Asks the kernel for checksum and segmentation offloads (TUNSETOFFLOAD):
   * reads may then return 64 KB super-packets and partial checksums, each
   * described by its virtio-net header (PACKET_FLAG_*). Offloads the kernel
   * refuses stay off. Default false: one complete packet per read.
   */
  offloads?: boolean;
  /**
   * Reads and writes a batch through an io_uring, one system call per batch
   * instead of one per packet (native/ring.h). A kernel or sandbox that
   * refuses io_uring leaves it off (`ioUringRefused` says why). Default false.
   */
  ioUring?: boolean;
}

// TUNSETOFFLOAD bits (linux/if_tun.h).
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_TSO_ECN = 0x08;
const TUN_F_USO4 = 0x20;
const TUN_F_USO6 = 0x40;

/**
 * Offload sets to ask for, most first: a kernel refuses a set with a bit it
 * does not know (USO came in 6.2), so each refusal falls back to the next.
 */
const OFFLOAD_SETS: ReadonlyArray<{ flags: number; names: readonly string[] }> = [
  { flags: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6, names: ['csum', 'tso4', 'tso6', 'tso-ecn', 'uso4', 'uso6'] },
  { flags: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN, names: ['csum', 'tso4', 'tso6', 'tso-ecn'] },
  { flags: TUN_F_CSUM, names: ['csum'] },
];

/** Largest IP packet: what a super-packet may fill. */
const MAX_IP_PACKET = 65535;

/** Longest device name the kernel keeps: IFNAMSIZ (16) less the terminating NUL. */
export const MAX_DEVICE_NAME_BYTES = 15;

/**
 * The kernel's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or
 * whitespace. Returns a sentence saying what is wrong, or null.
 */
export function checkDeviceName(name: string): string | null {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0) return 'a device name must not be empty';
  if (bytes > MAX_DEVICE_NAME_BYTES) return `device name "${name}" is ${bytes} bytes long; Linux allows at most ${MAX_DEVICE_NAME_BYTES}`;
  if (name === '.' || name === '..') return `"${name}" is not a valid device name`;
  if (/[/:\s]/.test(name)) return `device name "${name}" must not contain '/', ':' or whitespace`;
  return null;
}

export class TunLink implements Link {
  readonly name: string;
  readonly mtu: number;
  readonly maxReadSize: number;
  /** The offloads the kernel accepted ('csum', 'tso4', 'tso6', 'tso-ecn', 'uso4', 'uso6'); empty when off. */
  readonly offloads: readonly string[];
  /** True when batches go through an io_uring (TunLinkOptions.ioUring, accepted by the kernel). */
  readonly ioUring: boolean;
  /** Why io_uring was asked for and is off (the system error), or null. */
  readonly ioUringRefused: string | null;
  private readonly addon: TunAddon;
  private fd: number;
  private readableCallback: (() => void) | null = null;
  private watching = false;

  private constructor(addon: TunAddon, fd: number, name: string, mtu: number, offloads: readonly string[], ioUring: boolean, ioUringRefused: string | null) {
    this.addon = addon;
    this.fd = fd;
    this.name = name;
    this.mtu = mtu;
    this.offloads = offloads;
    this.maxReadSize = offloads.includes('tso4') ? MAX_IP_PACKET : mtu;
    this.ioUring = ioUring;
    this.ioUringRefused = ioUringRefused;
  }

  /**
   * Opens (creating when missing) the TUN device `name`, non-blocking. Needs
   * CAP_NET_ADMIN in the current network namespace. The device starts down and
   * without addresses; src/net/ brings it up and routes into it.
   * Throws LinkError (TUN_BAD_NAME, TUN_PERMISSION, TUN_NOT_AVAILABLE, TUN_BUSY,
   * TUN_NAME_CONFLICT, TUN_ADDON_NOT_BUILT, TUN_OPEN_FAILED, TUN_CONFIG_FAILED).
   */
  static open(name: string, options: TunLinkOptions = {}): TunLink {
    const problem = checkDeviceName(name);
    if (problem !== null) throw new LinkError('TUN_BAD_NAME', name, `${problem}: choose a shorter device name such as "hlb0"`);
    if (options.mtu !== undefined && !(Number.isInteger(options.mtu) && options.mtu >= 68 && options.mtu <= 65535)) {
      // 68 is the IPv4 minimum (RFC 791); 65535 the largest IP packet without jumbograms.
      throw new LinkError('TUN_CONFIG_FAILED', name, `TUN MTU must be an integer from 68 to 65535, got ${options.mtu}`);
    }

    let addon: TunAddon;
    try {
      addon = loadTunAddon();
    } catch (cause) {
      throw new LinkError('TUN_ADDON_NOT_BUILT', name, (cause as Error).message, { cause });
    }

    let opened: { fd: number; name: string };
    try {
      // Always behind a virtio-net header, offloads on or not: one read and
      // write path, whose headers say "complete, one packet" when they are off.
      opened = addon.open(name, true);
    } catch (cause) {
      throw openError(name, cause as NativeSystemError);
    }

    try {
      // MTU before persistence: if configuring fails, closing the fd removes a
      // device this call created instead of leaving a persistent one behind.
      if (options.mtu !== undefined) addon.setMtu(opened.name, options.mtu);
      const mtu = addon.getMtu(opened.name);
      if (options.persist !== undefined) addon.setPersist(opened.fd, options.persist);
      const offloads = setOffloads(addon, opened.fd, options.offloads === true);
      const refused = options.ioUring === true ? attachRing(addon, opened.fd) : null;
      return new TunLink(addon, opened.fd, opened.name, mtu, offloads, options.ioUring === true && refused === null, refused);
    } catch (cause) {
      addon.close(opened.fd);
      const error = cause as NativeSystemError;
      if (error.code === 'EPERM' || error.code === 'EACCES') throw permissionError(opened.name, error);
      throw new LinkError('TUN_CONFIG_FAILED', opened.name, `configuring TUN device ${opened.name} failed (${error.message})`, { cause });
    }
  }

  /** True after close(). */
  get closed(): boolean {
    return this.fd < 0;
  }

  /**
   * Makes the device persistent (or not) from now on. A persistent device stays
   * after close() and process exit; `ip link del <name>` or setPersist(false)
   * before close() removes it. Throws LinkError TUN_CONFIG_FAILED or TUN_PERMISSION.
   */
  setPersist(on: boolean): void {
    if (this.fd < 0) throw new LinkError('TUN_IO_FAILED', this.name, `TUN device ${this.name} is closed`);
    try {
      this.addon.setPersist(this.fd, on);
    } catch (cause) {
      const error = cause as NativeSystemError;
      if (error.code === 'EPERM') throw permissionError(this.name, error);
      throw new LinkError('TUN_CONFIG_FAILED', this.name, `TUNSETPERSIST on ${this.name} failed (${error.message})`, { cause });
    }
  }

  read(batch: PacketBatch): number {
    if (this.fd < 0) {
      batch.count = 0;
      return 0;
    }
    resetSlots(batch);
    let count: number;
    try {
      count = this.addon.readVnetBatch(this.fd, batch.buffer, batch.offsets, batch.lengths, batch.capacity, batch.slotSize,
        batch.vnetHeaders, batch.flags, batch.gsoSizes, batch.csumAt);
    } catch (cause) {
      throw ioError(this.name, 'reading from', cause as NativeSystemError);
    }
    batch.count = count;
    return count;
  }

  write(batch: PacketBatch): number {
    if (this.fd < 0 || batch.count === 0) return 0;
    try {
      return this.addon.writeVnetBatch(this.fd, batch.buffer, batch.offsets, batch.lengths, batch.count,
        batch.flags, batch.vnetHeaders, batch.slotSize);
    } catch (cause) {
      throw ioError(this.name, 'writing to', cause as NativeSystemError);
    }
  }

  /**
   * write(output) then read(input) in one addon call; through the ring, the
   * writes and the first reads share one io_uring_enter. A failed write of a
   * packet drops it (as write() does); a failed device throws LinkError.
   */
  cycle(output: PacketBatch, input: PacketBatch, result: CycleResult): void {
    if (this.fd < 0) {
      input.count = 0;
      result.written = 0;
      result.read = 0;
      return;
    }
    resetSlots(input);
    let packed: number;
    try {
      packed = this.addon.cycleVnetBatch(this.fd, output.buffer, output.offsets, output.lengths, output.count,
        output.flags, output.vnetHeaders, output.slotSize,
        input.buffer, input.offsets, input.lengths, input.capacity, input.slotSize,
        input.vnetHeaders, input.flags, input.gsoSizes, input.csumAt);
    } catch (cause) {
      if (cause instanceof RangeError) throw cause;
      throw ioError(this.name, 'writing to and reading from', cause as NativeSystemError);
    }
    result.read = packed % 65536;
    result.written = (packed - result.read) / 65536;
    input.count = result.read;
  }

  /**
   * Level-triggered, like the libuv poll underneath: called again on the next
   * loop turn while packets remain unread. While a callback is set the watch
   * keeps the event loop alive; pass null (or close()) to release it.
   */
  onReadable(onReadable: (() => void) | null): void {
    this.readableCallback = onReadable;
    if (this.fd < 0) return;
    if (onReadable !== null && !this.watching) {
      this.addon.watch(this.fd, this.handlePoll);
      this.watching = true;
    } else if (onReadable === null && this.watching) {
      this.addon.unwatch(this.fd);
      this.watching = false;
    }
  }

  /**
   * Stops polling and closes the fd. A persistent device stays (with its
   * routes); otherwise the kernel deletes it. Idempotent.
   */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.watching = false;
    this.readableCallback = null;
    try {
      this.addon.close(fd);
    } catch {
      // close(2) releases the fd even when it reports an error; there is
      // nothing left for the caller to do about it.
    }
  }

  // One bound function for the link's life: no closure per readiness event.
  private readonly handlePoll = (): void => {
    // A poll error stops libuv's handle; the owner's next read() reports it.
    if (this.readableCallback !== null) this.readableCallback();
  };
}

/**
 * The contract puts packet i in slot i; a previous write may have pointed
 * offsets elsewhere, so restore them (capacity integer stores, no allocation).
 */
function resetSlots(batch: PacketBatch): void {
  const { offsets, slotSize, capacity } = batch;
  for (let i = 0; i < capacity; i++) offsets[i] = i * slotSize;
}

function permissionError(name: string, cause: NativeSystemError): LinkError {
  return new LinkError(
    'TUN_PERMISSION',
    name,
    `hostlb needs CAP_NET_ADMIN to open /dev/net/tun: run it as root (sudo) or grant the capability (${cause.message})`,
    { cause },
  );
}

function openError(name: string, cause: NativeSystemError): LinkError {
  switch (cause.code) {
    case 'EPERM':
    case 'EACCES':
      return permissionError(name, cause);
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return new LinkError(
        'TUN_NOT_AVAILABLE',
        name,
        `/dev/net/tun is not available: load the tun module (modprobe tun), or in a container pass the device in (--device /dev/net/tun) (${cause.message})`,
        { cause },
      );
    case 'EBUSY':
      return new LinkError(
        'TUN_BUSY',
        name,
        `TUN device ${name} is attached to another process: stop the other hostlb instance or choose another device name (${cause.message})`,
        { cause },
      );
    case 'EINVAL':
      // tun_set_iff(): the name belongs to a device that is not a TUN device of
      // this kind (an Ethernet NIC, a TAP, a multi-queue TUN).
      return new LinkError(
        'TUN_NAME_CONFLICT',
        name,
        `device ${name} exists and is not a single-queue TUN device: choose another device name, or delete it (ip link del ${name}) if it is a leftover (${cause.message})`,
        { cause },
      );
    case 'ENAMETOOLONG':
      return new LinkError('TUN_BAD_NAME', name, `${cause.message}: choose a shorter device name such as "hlb0"`, { cause });
    default:
      return new LinkError('TUN_OPEN_FAILED', name, `opening TUN device ${name} failed (${cause.message})`, { cause });
  }
}

function ioError(name: string, doing: string, cause: NativeSystemError): LinkError {
  // EBADFD: the device was deleted under us (ip link del); EBADF: fd closed elsewhere.
  return new LinkError('TUN_IO_FAILED', name, `${doing} TUN device ${name} failed (${cause.message}); reopen the link`, { cause });
}

/**
 * Puts the fd's batches through an io_uring. Returns null when on, or the
 * refusal (io_uring_setup's error: ENOSYS before Linux 5.1, EPERM under
 * kernel.io_uring_disabled or a container's seccomp) when not: the device
 * works as well without it, one system call per packet.
 */
function attachRing(addon: TunAddon, fd: number): string | null {
  try {
    addon.ringAttach(fd);
    return null;
  } catch (cause) {
    return (cause as Error).message;
  }
}

/**
 * Switches on the most offloads the kernel accepts (OFFLOAD_SETS), or none
 * when not asked: TUNSETOFFLOAD 0, so a device a previous owner left with
 * offloads on hands over complete packets again. Returns the names on.
 */
function setOffloads(addon: TunAddon, fd: number, wanted: boolean): readonly string[] {
  if (wanted) {
    for (const set of OFFLOAD_SETS) {
      try {
        addon.setOffload(fd, set.flags);
        return set.names;
      } catch {
        // Refused (EINVAL): try the next, smaller set.
      }
    }
  }
  addon.setOffload(fd, 0);
  return [];
}
