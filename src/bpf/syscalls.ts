// Typed bpf(2) and pidfd calls over the native addon (src/native/addon.ts): map
// create/update/lookup/delete/iterate, program load with the verifier's log,
// netns links, bpffs pins, object info, and duplicating another process's fd.
// This is where the addon's errno names become HostlbError codes, once:
//
//   BPF_UNSUPPORTED  the kernel or the build lacks it (ENOSYS, EOPNOTSUPP, no addon)
//   BPF_PERMISSION   not allowed (EPERM, EACCES): run as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_PTRACE)
//   BPF_VERIFIER     the verifier refused a program; the message ends with the log's last lines
//   BPF_NOT_FOUND    no such pinned path, process or fd (ENOENT, ESRCH, EBADF from pidfd_getfd)
//   BPF_FAILED       anything else; the message names the command and the errno
//
// What the objects mean is sk-lookup.ts's; this file knows only the ABI.

import { HostlbError } from '../errors.js';
import { loadBpfAddon, type BpfAddon, type NativeBpfLoadError, type NativeSystemError } from '../native/addon.js';

/** enum bpf_map_type values used here. */
export const MapType = { hash: 1, array: 2, lruHash: 9, sockmap: 15, sockhash: 18, skStorage: 24 } as const;
/** enum bpf_prog_type values used here. */
export const ProgramType = { sockOps: 13, skLookup: 30 } as const;
/** enum bpf_attach_type values used here. */
export const AttachType = { cgroupSockOps: 3, skLookup: 36 } as const;
/** enum bpf_link_type values used here. */
export const LinkType = { cgroup: 3, netns: 5 } as const;

/** Map update flags: create or replace, create only, replace only. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** BPF_F_NO_PREALLOC: a HASH allocates entries on insert instead of up front. */
export const BPF_F_NO_PREALLOC = 1;
/** BPF_F_NO_COMMON_LRU: an LRU_HASH keeps a free list per CPU instead of one shared. */
export const BPF_F_NO_COMMON_LRU = 2;
/** BPF_F_CLONE: a socket-storage value is copied to the sockets a listening socket accepts (Linux 5.4). */
export const BPF_F_CLONE = 512;

/** How many verifier log lines a BPF_VERIFIER message quotes; the whole log is on the error. */
const LOG_TAIL_LINES = 12;
// The first retry's log buffer; grown 4x on ENOSPC up to the last size. A
// program of a few hundred instructions logs tens of KiB at level 1.
const LOG_SIZES = [1 << 20, 4 << 20, 16 << 20];

/** A BPF_VERIFIER error: `log` is the verifier's whole log. */
export class BpfVerifierError extends HostlbError {
  readonly log: string;
  constructor(message: string, log: string, options?: { cause?: unknown }) {
    super('BPF_VERIFIER', message, options);
    this.log = log;
  }
}

let addon: BpfAddon | null = null;

function native(): BpfAddon {
  if (addon !== null) return addon;
  try {
    addon = loadBpfAddon();
  } catch (cause) {
    throw new HostlbError('BPF_UNSUPPORTED', (cause as Error).message, { cause });
  }
  return addon;
}

function codeFor(errno: string): string {
  switch (errno) {
    // ENOTSUP is libuv's name for EOPNOTSUPP (the same number on Linux). The
    // kernel's internal ENOTSUPP (524) leaks out of some bpf commands; libuv
    // has no name for it.
    case 'ENOSYS':
    case 'ENOTSUP':
    case 'Unknown system error -524':
      return 'BPF_UNSUPPORTED';
    case 'EPERM':
    case 'EACCES':
      return 'BPF_PERMISSION';
    case 'ENOENT':
    case 'ESRCH':
      return 'BPF_NOT_FOUND';
    default:
      return 'BPF_FAILED';
  }
}

function hintFor(code: string): string {
  switch (code) {
    case 'BPF_PERMISSION':
      return ' (run hostlb as root: it needs CAP_BPF, CAP_NET_ADMIN and, to take daemons\' sockets, CAP_SYS_PTRACE)';
    case 'BPF_UNSUPPORTED':
      return ' (this kernel lacks it: the socket data plane needs Linux 5.9 or later with CONFIG_BPF_SYSCALL)';
    default:
      return '';
  }
}

/** Runs one addon call; a system error becomes a HostlbError whose message starts with `what`. */
function call<T>(what: string, run: (addon: BpfAddon) => T, codes: Record<string, string> = {}): T {
  const a = native();
  try {
    return run(a);
  } catch (error) {
    const errno = (error as NativeSystemError).code;
    if (typeof errno !== 'string') throw error; // TypeError/RangeError: a caller's bug, not the system's
    const code = codes[errno] ?? codeFor(errno);
    throw new HostlbError(code, `${what}: ${(error as Error).message}${hintFor(code)}`, { cause: error });
  }
}

// ---- maps -----------------------------------------------------------------

export interface MapSpec {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  /** At most 15 bytes of [A-Za-z0-9_.]; shown by bpftool. */
  name: string;
  /** The BTF object (loadBtf) and the ids of the key's and value's types in it. */
  btf?: { fd: number; keyTypeId: number; valueTypeId: number };
}

/** BPF_MAP_CREATE; returns the map's fd (the caller closes it). */
export function createMap(spec: MapSpec): number {
  const btf = spec.btf;
  return call(`create BPF map ${spec.name}`, (a) =>
    btf === undefined
      ? a.bpfMapCreate(spec.type, spec.keySize, spec.valueSize, spec.maxEntries, spec.flags ?? 0, spec.name)
      : a.bpfMapCreate(spec.type, spec.keySize, spec.valueSize, spec.maxEntries, spec.flags ?? 0, spec.name, btf.fd, btf.keyTypeId, btf.valueTypeId),
  );
}

/**
 * BPF_BTF_LOAD of `blob` (btf.ts); returns the BTF object's fd. A refusal is
 * retried with a log, whose last lines the BPF_FAILED message quotes.
 */
export function loadBtf(blob: Uint8Array): number {
  const a = native();
  try {
    return a.bpfBtfLoad(blob, null);
  } catch (error) {
    const errno = (error as NativeSystemError).code;
    if (typeof errno !== 'string') throw error;
    if (errno !== 'EINVAL' && errno !== 'EACCES') {
      const code = codeFor(errno);
      throw new HostlbError(code, `load BTF: ${(error as Error).message}${hintFor(code)}`, { cause: error });
    }
  }
  try {
    return a.bpfBtfLoad(blob, new Uint8Array(LOG_SIZES[0]));
  } catch (error) {
    const log = ((error as NativeBpfLoadError).log ?? '').trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
    throw new HostlbError('BPF_FAILED', `load BTF: ${(error as Error).message}${log === '' ? '' : `; the kernel's log ends:\n${log}`}`, { cause: error });
  }
}

/** BPF_MAP_UPDATE_ELEM. `key` and `value` are at least the map's sizes (RangeError otherwise). */
export function updateElement(fd: number, key: Uint8Array, value: Uint8Array, flags = BPF_ANY): void {
  call(`update BPF map fd ${fd}`, (a) => a.bpfMapUpdate(fd, key, value, flags));
}

/** BPF_MAP_LOOKUP_ELEM into `value`; false when the key is absent. */
export function lookupElement(fd: number, key: Uint8Array, value: Uint8Array): boolean {
  return call(`look up BPF map fd ${fd}`, (a) => a.bpfMapLookup(fd, key, value));
}

/** BPF_MAP_DELETE_ELEM; false when the key was absent. */
export function deleteElement(fd: number, key: Uint8Array): boolean {
  return call(`delete from BPF map fd ${fd}`, (a) => a.bpfMapDelete(fd, key));
}

/** BPF_MAP_GET_NEXT_KEY into `next`; `key` null starts the walk. False after the last key. */
export function nextKey(fd: number, key: Uint8Array | null, next: Uint8Array): boolean {
  return call(`walk BPF map fd ${fd}`, (a) => a.bpfMapNextKey(fd, key, next));
}

// ---- programs and links ---------------------------------------------------

export interface ProgramSpec {
  type: number;
  expectedAttachType: number;
  /** struct bpf_insn[] as bytes (asm.ts's Assembler.assemble()). */
  instructions: Uint8Array;
  license: string;
  name: string;
}

/**
 * BPF_PROG_LOAD; returns the program's fd. The first attempt asks for no log
 * (the verifier runs faster without one); when it fails, the load is repeated
 * with a log so the error can say why, since the verifier's log is part of any
 * load error: BpfVerifierError (BPF_VERIFIER) with the log's last lines in the
 * message and all of it in `log`.
 */
export function loadProgram(spec: ProgramSpec): number {
  const a = native();
  const what = `load BPF program ${spec.name}`;
  try {
    return retryInterrupted(() => a.bpfProgLoad(spec.type, spec.expectedAttachType, spec.instructions, spec.license, spec.name, 0, null));
  } catch (error) {
    const errno = (error as NativeSystemError).code;
    if (typeof errno !== 'string') throw error;
    // EPERM is missing privilege; EACCES and EINVAL are what the verifier answers.
    if (errno !== 'EACCES' && errno !== 'EINVAL') {
      const code = codeFor(errno);
      throw new HostlbError(code, `${what}: ${(error as Error).message}${hintFor(code)}`, { cause: error });
    }
  }
  let last: NativeBpfLoadError | null = null;
  for (const size of LOG_SIZES) {
    try {
      return retryInterrupted(() => a.bpfProgLoad(spec.type, spec.expectedAttachType, spec.instructions, spec.license, spec.name, 1, new Uint8Array(size)));
    } catch (error) {
      last = error as NativeBpfLoadError;
      if (typeof last.code !== 'string') throw error;
      // ENOSPC: the log outgrew the buffer (Linux 6.4+ keeps its tail, older
      // kernels its head); a larger one gives the whole story.
      if (last.code !== 'ENOSPC') break;
    }
  }
  const log = last?.log ?? '';
  if (log.trim() === '') {
    const code = codeFor(last?.code ?? '');
    throw new HostlbError(code, `${what}: ${last?.message ?? 'failed'}${hintFor(code)}`, { cause: last });
  }
  const tail = log.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
  throw new BpfVerifierError(`${what}: the kernel's verifier refused it (${last?.code}); the log ends:\n${tail}`, log, { cause: last });
}

/** Verifications a signal may interrupt (EAGAIN) before the load gives up, as libbpf does. */
const LOAD_ATTEMPTS = 5;

/**
 * Runs a program load again when the verifier gave up because a signal was
 * pending (EAGAIN: a child exited, a timer fired): the program is fine, the
 * moment was not. A large program takes the verifier tens of milliseconds.
 */
function retryInterrupted(load: () => number): number {
  for (let attempt = 1; ; attempt++) {
    try {
      return load();
    } catch (error) {
      if ((error as NativeSystemError).code !== 'EAGAIN' || attempt >= LOAD_ATTEMPTS) throw error;
    }
  }
}

/** BPF_LINK_CREATE: attaches `progFd` to `targetFd` (a netns fd for sk_lookup, a cgroup directory's for SOCK_OPS). Returns the link's fd. */
export function createLink(progFd: number, targetFd: number, attachType: number): number {
  return call(`attach BPF program fd ${progFd} to fd ${targetFd}`, (a) => a.bpfLinkCreate(progFd, targetFd, attachType, 0));
}

/** BPF_LINK_DETACH: the program stops now, pinned or not; the fd stays open (and defunct) until closed. */
export function detachLink(linkFd: number): void {
  call(`detach BPF link fd ${linkFd}`, (a) => a.bpfLinkDetach(linkFd));
}

// ---- bpffs ----------------------------------------------------------------

/** BPF_OBJ_PIN at `path` (in a mounted bpffs; EEXIST when taken). */
export function pinObject(fd: number, path: string): void {
  call(`pin BPF object fd ${fd} at ${path}`, (a) => a.bpfObjPin(fd, path));
}

/** BPF_OBJ_GET: an fd for what is pinned at `path`. */
export function openPinned(path: string): number {
  return call(`open pinned BPF object ${path}`, (a) => a.bpfObjGet(path));
}

// ---- object info ----------------------------------------------------------

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export interface ProgramInfo {
  type: number;
  id: number;
  name: string;
}

export interface LinkInfo {
  type: number;
  id: number;
  programId: number;
  /** For a netns link: the namespace's inode (as in `stat -L /proc/PID/ns/net`) and attach type. */
  netnsInode: number;
  attachType: number;
}

// Offsets in struct bpf_map_info, bpf_prog_info and bpf_link_info (linux/bpf.h).
const INFO_BUFFER = 256;
const OBJ_NAME_LEN = 16;

function infoOf(fd: number, kind: string): DataView {
  const buffer = new Uint8Array(INFO_BUFFER);
  call(`read info of BPF ${kind} fd ${fd}`, (a) => a.bpfObjGetInfo(fd, buffer));
  return new DataView(buffer.buffer);
}

function nameAt(view: DataView, at: number): string {
  const bytes = new Uint8Array(view.buffer, at, OBJ_NAME_LEN);
  const end = bytes.indexOf(0);
  return Buffer.from(bytes.subarray(0, end < 0 ? OBJ_NAME_LEN : end)).toString('latin1');
}

/** BPF_OBJ_GET_INFO_BY_FD of a map. */
export function mapInfo(fd: number): MapInfo {
  const v = infoOf(fd, 'map');
  return {
    type: v.getUint32(0, true),
    id: v.getUint32(4, true),
    keySize: v.getUint32(8, true),
    valueSize: v.getUint32(12, true),
    maxEntries: v.getUint32(16, true),
    flags: v.getUint32(20, true),
    name: nameAt(v, 24),
  };
}

/** BPF_OBJ_GET_INFO_BY_FD of a program. */
export function programInfo(fd: number): ProgramInfo {
  const v = infoOf(fd, 'program');
  return { type: v.getUint32(0, true), id: v.getUint32(4, true), name: nameAt(v, 64) };
}

/** BPF_OBJ_GET_INFO_BY_FD of a link. */
export function linkInfo(fd: number): LinkInfo {
  const v = infoOf(fd, 'link');
  return {
    type: v.getUint32(0, true),
    id: v.getUint32(4, true),
    programId: v.getUint32(8, true),
    netnsInode: v.getUint32(16, true),
    attachType: v.getUint32(20, true),
  };
}

// ---- fds ------------------------------------------------------------------

/**
 * Duplicates fd `targetFd` of process `pid` into this process (pidfd_open +
 * pidfd_getfd; the pidfd is closed again). Both then share one open file:
 * closing the duplicate leaves the owner's socket alone. Needs ptrace access
 * to the process (root). BPF_NOT_FOUND when the process or fd is gone.
 */
export function duplicateFd(pid: number, targetFd: number): number {
  const pidfd = call(`open pidfd of process ${pid}`, (a) => a.pidfdOpen(pid));
  try {
    return call(`take fd ${targetFd} of process ${pid}`, (a) => a.pidfdGetfd(pidfd, targetFd), { EBADF: 'BPF_NOT_FOUND' });
  } finally {
    closeFd(pidfd);
  }
}

/** Closes an fd this module returned. */
export function closeFd(fd: number): void {
  call(`close fd ${fd}`, (a) => a.close(fd));
}
