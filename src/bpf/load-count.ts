// Least-loaded picks in the kernel: per-daemon connection counts kept by BPF
// programs, so lc, wlc and p2c choose per connection, not from a count
// user space took a second ago. This file owns the layouts of the maps
// involved, the SOCK_OPS program that counts, and the piece of the sk_lookup
// program (sk-lookup.ts) that picks.
//
// Maps
//   members     ARRAY  port index → {n u32, mode u32, n × {slot u32, weight u32}}
//                      (up to MAX_MEMBERS): the daemons a least-loaded port
//                      picks among and their weights. Modes hash and source
//                      leave the port to the bucket table; mode sequence
//                      (rr, wrr) has n = the length of the order its buckets
//                      hold (sk-lookup.ts). The plane writes it.
//   turns       ARRAY  port index → u64: the port's turns so far, one per
//                      connection of a port in mode sequence and per scan a
//                      least-loaded port starts by turn (below). Only the
//                      program writes it, so a rewrite of the members never
//                      starts the order again at its first daemon.
//   loads       ARRAY  slot → {active s64, current s64, previous s64, window u64,
//                      generation u64}: connections the slot's socket
//                      accepted and not yet closed; connections handed over
//                      but not yet established, counted in the window
//                      (ktime >> 30, about a second) of their SYN and the one
//                      before; which owner of the slot the counts are for.
//   slots       SK_STORAGE (BPF_F_CLONE) socket → {slot u32, counted u32,
//                      generation u64}: written by hostlb on each daemon's
//                      listening socket when it takes it; the kernel copies
//                      it to every connection that socket accepts, so a
//                      connection knows its daemon with no per-flow table.
//
// Counting, for every TCP cluster port whatever its scheduler (the counts are
// also hostlb's active connections per daemon). The sk_lookup program, having
// handed a SYN to slot s, adds one to s's `current`. The SOCK_OPS program,
// attached to the cgroup v2 root so it sees every TCP socket on the host,
// answers two events: a passive connection established (it carries a `slots`
// value: `counted` set, `current` less one, `active` plus one, and the socket
// asked for state-change callbacks), and a socket reaching TCP_CLOSE (counted:
// `active` less one). A SYN that never completes (a scan, a spoofed source)
// stops counting when its window is two old: nothing a client sends leaves a
// count that does not decay. A connection accepted before hostlb took its
// daemon's socket carries no value and is not counted; one that reached the
// daemon's own address directly is (it is the daemon's load all the same).
//
// Generations. A slot given to another daemon (its first left the
// configuration) starts a new generation with counts of zero
// (SkLookupDispatch.releaseSlot). Both events count only when the
// connection's value and the slot's entry name the same generation: the old
// daemon may run on outside hostlb, its listening socket still marked with
// the slot, and neither what it accepts from then on nor the closing of what
// it accepted before may count against the slot's next owner.
//
// Before this, a `pending` LRU hash (flow → slot, from the SYN) and an
// `established` hash (flow → slot, until close) told a connection's daemon:
// two inserts, two deletes and a 40-byte key per connection, about 5% of a
// new connection's cost on the bench's two CPUs. Socket storage costs one
// small copy when the connection is accepted and nothing to look up.
//
// Picking (emitLeastLoaded): load = active + the pending of the last two
// windows; the pick is the member with the least (load + 1) / weight, scanning
// all n from a start (lc, wlc), or two members drawn by the hash (p2c). A
// member replaces the best so far only below 15/16 of its (load + 1) / weight,
// so loads within a sixteenth are a tie, and the start wins ties. The start is
// the member of the CPU that took the SYN (cpuGroupStart) while that member
// is busy, and otherwise the port's next turn (turns mod n): ties between
// busy daemons go to the SYN's CPU, idle ones take turns, as nginx's
// least_conn breaks its ties by round robin, so one request after another at
// light load meets d1, d2, d3, … When the chosen socket is gone or the port
// has no members, the bucket table decides as for the other schedulers.

import { Assembler, Helper, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, type Register } from './asm.js';

/** Members per least-loaded port (a power of two: the index is masked with it). */
export const MAX_MEMBERS = 64;
/**
 * How a port picks: the bucket table by a hash of the client's address and
 * port, least load over all members, the better of two, the bucket table
 * by the client's address alone (sh: every connection of a client to one
 * daemon), or the first n buckets in turn (rr, wrr: a count of turns per port).
 */
export const PortMode = { hash: 0, least: 1, twoChoices: 2, source: 3, sequence: 4 } as const;
export type PortModeValue = (typeof PortMode)[keyof typeof PortMode];

export const MEMBERS_HEADER = 8;
export const MEMBERS_SIZE = MEMBERS_HEADER + MAX_MEMBERS * 8;
export const LOAD_SIZE = 40;
const LOAD_ACTIVE = 0;
const LOAD_CURRENT = 8;
const LOAD_PREVIOUS = 16;
const LOAD_WINDOW = 24;
const LOAD_GENERATION = 32;
/** A `slots` value: {slot u32, counted u32, generation u64}. */
export const SLOT_VALUE_SIZE = 16;
const SLOT_COUNTED = 4;
const SLOT_GENERATION = 8;
/** ktime_get_ns() >> WINDOW_SHIFT: about one second per window. */
const WINDOW_SHIFT = 30;

const IPPROTO_TCP = 6;
const SK_LOOKUP_PROTOCOL = 12;
const TCP_CLOSE = 7;
const SOCK_OPS_PASSIVE_ESTABLISHED = 5;
const SOCK_OPS_STATE = 10;
const SOCK_OPS_STATE_CB_FLAG = 4;

// struct bpf_sock_ops
const SOCK_OPS_OP = 0;
const SOCK_OPS_NEW_STATE = 8; // args[1]
const SOCK_OPS_CB_FLAGS = 84;
const SOCK_OPS_SK = 184; // struct bpf_sock *, Linux 5.10

export interface LeastLoadedMaps {
  loads: number;
  sockets: number;
  turns: number;
}

/** What the sk_lookup program gives the least-loaded pick. */
export interface LeastLoadedSite {
  /** The sk_lookup context register (callee-saved). */
  ctx: Register;
  /**
   * fp offsets: the port index (u32), the flow hash (u32), the current window
   * (u64, ktime_get_ns() >> WINDOW_SHIFT; the caller stores 0, the first to
   * need it reads the clock), the u32 map key counters use, bpf_sk_assign's
   * result (u64).
   */
  index: number;
  hash: number;
  window: number;
  key: number;
  result: number;
  /** CPUs the host runs on (os.availableParallelism()): cpuGroupStart's. */
  cpus: number;
  /** The kernel has BPF_FETCH (Linux 5.12+): emitTurn's. */
  atomicFetch: boolean;
  /** Free stack from here down (STACK_NEEDED bytes). */
  scratch: number;
  /** Counts counters[*(u32 *)(fp + key)]'s field; clobbers r0-r5. */
  count(field: 'assigned' | 'noSocket' | 'refused'): void;
  /** Where to go when the port is not least-loaded or the pick found no socket: the bucket table. r6 only is kept. */
  fallback: string;
  /** Where to go once a socket is assigned (and counted), with its slot at fp + key: emitCountPending's place. */
  assigned: string;
  /** Where to go when done. */
  pass: string;
}

/** Stack bytes emitLeastLoaded uses below `scratch`. */
export const STACK_NEEDED = 160;

/**
 * Emits r1 = the current window, reading the clock only when site.window is
 * still 0: one helper call per lookup, not one for the pick and another for
 * the pending count (about 25 ns a connection, kernel.bpf_stats_enabled on
 * kvm-clock). Clobbers r0-r5.
 */
function emitWindow(a: Assembler, site: LeastLoadedSite): void {
  const known = `window_${a.length}`;
  a.ldx('dw', R1, R10, site.window).jmp('ne', R1, 0, known);
  a.call(Helper.ktimeGetNs).alu64('rsh', R0, WINDOW_SHIFT).stx('dw', R10, site.window, R0).mov64(R1, R0);
  a.label(known);
}

/**
 * r3 = the load of the `loads` value at r0: active + the pending of this
 * window and the one before, never below 0 (the counts race). Clobbers r1, r4, r5.
 */
function emitLoadSum(a: Assembler, site: LeastLoadedSite, prefix: string): void {
  a.ldx('dw', R3, R0, LOAD_ACTIVE).ldx('dw', R4, R0, LOAD_WINDOW).ldx('dw', R5, R10, site.window);
  a.jmp('eq', R4, R5, `${prefix}_both`);
  a.alu64('add', R4, 1).jmp('ne', R4, R5, `${prefix}_sum`);
  a.ldx('dw', R1, R0, LOAD_CURRENT).alu64('add', R3, R1).ja(`${prefix}_sum`);
  a.label(`${prefix}_both`);
  a.ldx('dw', R1, R0, LOAD_CURRENT).alu64('add', R3, R1).ldx('dw', R1, R0, LOAD_PREVIOUS).alu64('add', R3, R1);
  a.label(`${prefix}_sum`);
  a.jmp('sge', R3, 0, `${prefix}_positive`).mov64(R3, 0);
  a.label(`${prefix}_positive`);
}

/**
 * Emits r2 = the port's next turn (its `turns` before this one), which goes
 * up by one: an atomic fetch-and-add, or, without BPF_FETCH (Linux before
 * 5.12), a load and an add, so that two lookups at the same instant may take
 * one turn. No entry (never, for a port index in range): the flow hash.
 * Clobbers r0-r5.
 */
export function emitTurn(a: Assembler, maps: LeastLoadedMaps, site: TurnSite): void {
  const done = `turn_${a.length}`;
  a.ldx('w', R1, R10, site.index).stx('w', R10, site.key, R1);
  a.ldMapFd(R1, maps.turns).mov64(R2, R10).alu64('add', R2, site.key).call(Helper.mapLookupElem);
  a.ldx('w', R2, R10, site.hash).jmp('eq', R0, 0, done);
  a.mov64(R2, 1);
  if (site.atomicFetch) a.atomic('add', 'dw', R0, 0, R2, true);
  else a.ldx('dw', R3, R0, 0).atomic('add', 'dw', R0, 0, R2).mov64(R2, R3);
  a.label(done);
}

/** What emitTurn needs of the program: fp offsets of the port index (u32), the flow hash (u32) and a free u32 map key; BPF_FETCH or not. */
export type TurnSite = Pick<LeastLoadedSite, 'index' | 'hash' | 'key' | 'atomicFetch'>;

/**
 * The member of the CPU that took a SYN: with n members over `cpus` CPUs,
 * member i belongs to CPU i mod cpus, and the flow hash picks one of a CPU's
 * ceil(n / cpus). A least-loaded scan starts there while that member is busy,
 * so a tie between busy daemons goes to a daemon of the SYN's CPU, which the
 * scheduler then keeps waking there: that CPU runs the accept too. Measured
 * in bench:e2e (new connections, wlc over two nginx on two CPUs): 0.88–0.92×
 * SO_REUSEPORT with every tie by hash, 0.98–1.04× with exact ties to the
 * CPU's member, 1.08–1.16× with loads within a sixteenth counted as ties
 * (an eighth did as well, and split 32 keep-alive connections 18/15 where a
 * sixteenth splits them 17/16), the split between the daemons within 10%.
 */
export function cpuGroupStart(cpu: number, hash: number, n: number, cpus: number): number {
  if (n <= cpus) return cpu % n;
  const groups = Math.ceil(n / cpus);
  const start = (cpu % cpus) + cpus * ((hash >>> 0) % groups);
  // Past the last member (a short last group): the same CPU's member one group earlier.
  return start < n ? start : start - cpus;
}

/** cpuGroupStart in the program: fp + idx = the member for n at fp + nAt (u64). Clobbers r0-r5. */
function emitCpuGroupStart(a: Assembler, site: LeastLoadedSite, nAt: number, idx: number): void {
  const cpus = Math.max(1, Math.floor(site.cpus));
  const id = a.length;
  a.call(Helper.getSmpProcessorId);
  a.ldx('dw', R1, R10, nAt).jmp('gt', R1, cpus, `cpu_groups_${id}`);
  a.alu64('mod', R0, R1).ja(`cpu_start_${id}`);
  a.label(`cpu_groups_${id}`);
  // groups = ceil(n / cpus); start = cpu mod cpus + cpus * (h mod groups); past n: one group earlier.
  a.alu64('mod', R0, cpus);
  a.mov64(R2, R1).alu64('add', R2, cpus - 1).alu64('div', R2, cpus);
  a.ldx('w', R3, R10, site.hash).alu64('mod', R3, R2).alu64('mul', R3, cpus).alu64('add', R0, R3);
  a.jmp('lt', R0, R1, `cpu_start_${id}`).alu64('sub', R0, cpus);
  a.label(`cpu_start_${id}`);
  a.stx('dw', R10, idx, R0);
}

/**
 * Emits the least-loaded pick (header comment), given the port's `members`
 * value in r7 (a map value pointer, or null when there is none): the caller
 * has looked it up already, for the port's mode. Jumps to `fallback` or
 * `pass`; never falls through. Uses r7-r9 and the scratch stack.
 */
export function emitLeastLoaded(a: Assembler, maps: LeastLoadedMaps, site: LeastLoadedSite): void {
  const s = site.scratch;
  const N = s - 64;
  const LIMIT = s - 72;
  const STEP = s - 80;
  const IDX = s - 96;
  const BEST_SLOT = s - 104;
  const BEST_LOAD = s - 112;
  const BEST_WEIGHT = s - 120;
  const CAND_SLOT = s - 128;
  const CAND_WEIGHT = s - 136;
  const MODE = s - 144;
  const CPU_IDX = s - 152;

  // No members entry, a bucket mode, or no member → the bucket table.
  a.jmp('eq', R7, 0, site.fallback);
  a.ldx('w', R2, R7, 4).stx('dw', R10, MODE, R2);
  a.jmp('eq', R2, PortMode.least, 'll_members').jmp('ne', R2, PortMode.twoChoices, site.fallback);
  a.label('ll_members');
  a.ldx('w', R1, R7, 0).jmp('eq', R1, 0, site.fallback).jmp('gt', R1, MAX_MEMBERS, site.fallback);
  a.stx('dw', R10, N, R1).stx('dw', R10, LIMIT, R1).st('dw', R10, STEP, 1);
  // The first member looked at, which wins ties: the SYN's CPU's member while it is busy, else h mod n.
  emitWindow(a, site);
  emitCpuGroupStart(a, site, N, CPU_IDX);
  a.ldx('dw', R8, R10, CPU_IDX).alu64('and', R8, MAX_MEMBERS - 1).alu64('lsh', R8, 3);
  a.mov64(R9, R7).alu64('add', R9, R8);
  a.ldx('w', R1, R9, MEMBERS_HEADER).ldx('w', R2, R9, MEMBERS_HEADER + 4).jmp('eq', R2, 0, 'll_hash_start');
  a.stx('w', R10, site.key, R1);
  a.ldMapFd(R1, maps.loads).mov64(R2, R10).alu64('add', R2, site.key).call(Helper.mapLookupElem);
  a.jmp('eq', R0, 0, 'll_hash_start');
  emitLoadSum(a, site, 'll_cpu');
  a.jmp('sle', R3, 0, 'll_hash_start');
  a.ldx('dw', R1, R10, CPU_IDX).stx('dw', R10, IDX, R1).ja('ll_start');
  a.label('ll_hash_start');
  // Idle (or no CPU member): the port's next turn.
  emitTurn(a, maps, site);
  a.ldx('dw', R1, R10, N).alu64('mod', R2, R1).stx('dw', R10, IDX, R2);
  a.label('ll_start');
  a.ldx('dw', R1, R10, N).ldx('w', R2, R10, site.hash);
  // p2c: two members, the second 1..n-1 after the first (the hash's upper bits).
  a.ldx('dw', R4, R10, MODE).jmp('ne', R4, PortMode.twoChoices, 'll_ready').jmp('lt', R1, 2, 'll_ready');
  a.st('dw', R10, LIMIT, 2);
  a.alu64('rsh', R2, 8).mov64(R3, R1).alu64('sub', R3, 1).alu64('mod', R2, R3).alu64('add', R2, 1).stx('dw', R10, STEP, R2);
  a.label('ll_ready');
  emitWindow(a, site);
  a.st('dw', R10, BEST_SLOT, 0).st('dw', R10, BEST_LOAD, 0).st('dw', R10, BEST_WEIGHT, 0);

  for (let i = 0; i < MAX_MEMBERS; i++) {
    const next = `ll_next_${i}`;
    const take = `ll_take_${i}`;
    a.ldx('dw', R1, R10, LIMIT).jmp('le', R1, i, 'll_done');
    a.ldx('dw', R8, R10, IDX).alu64('and', R8, MAX_MEMBERS - 1).alu64('lsh', R8, 3);
    a.mov64(R9, R7).alu64('add', R9, R8);
    a.ldx('w', R1, R9, MEMBERS_HEADER).ldx('w', R2, R9, MEMBERS_HEADER + 4);
    a.stx('dw', R10, CAND_SLOT, R1).stx('dw', R10, CAND_WEIGHT, R2);
    a.jmp('eq', R2, 0, next);
    a.stx('w', R10, site.key, R1);
    a.ldMapFd(R1, maps.loads).mov64(R2, R10).alu64('add', R2, site.key).call(Helper.mapLookupElem);
    a.jmp('eq', R0, 0, next);
    emitLoadSum(a, site, `ll_${i}`);
    // Better when (load + 1) / weight < 15/16 × (best load + 1) / best weight, without division: loads
    // within a sixteenth are a tie, which the start (the SYN's CPU's member, when busy) keeps — without it,
    // loads that differ by one under steady load moved every other connection off the SYN's CPU.
    a.ldx('dw', R1, R10, BEST_SLOT).jmp('eq', R1, 0, take);
    a.mov64(R4, R3).alu64('add', R4, 1).ldx('dw', R1, R10, BEST_WEIGHT).alu64('mul', R4, R1).alu64('lsh', R4, 4);
    a.ldx('dw', R5, R10, BEST_LOAD).alu64('add', R5, 1).ldx('dw', R1, R10, CAND_WEIGHT).alu64('mul', R5, R1).alu64('mul', R5, 15);
    a.jmp('ge', R4, R5, next);
    a.label(take);
    a.ldx('dw', R1, R10, CAND_SLOT).stx('dw', R10, BEST_SLOT, R1);
    a.stx('dw', R10, BEST_LOAD, R3);
    a.ldx('dw', R1, R10, CAND_WEIGHT).stx('dw', R10, BEST_WEIGHT, R1);
    a.label(next);
    a.ldx('dw', R1, R10, IDX).ldx('dw', R2, R10, STEP).alu64('add', R1, R2);
    a.ldx('dw', R2, R10, N).jmp('lt', R1, R2, `ll_wrapped_${i}`).alu64('sub', R1, R2);
    a.label(`ll_wrapped_${i}`);
    a.stx('dw', R10, IDX, R1);
  }

  a.label('ll_done');
  a.ldx('dw', R1, R10, BEST_SLOT).jmp('eq', R1, 0, site.fallback);
  a.stx('w', R10, site.key, R1);
  a.ldMapFd(R1, maps.sockets).mov64(R2, R10).alu64('add', R2, site.key).call(Helper.mapLookupElem);
  a.jmp('ne', R0, 0, 'll_socket');
  site.count('noSocket');
  a.ja(site.fallback);
  a.label('ll_socket');
  a.mov64(R9, R0);
  a.mov64(R1, site.ctx).mov64(R2, R9).mov64(R3, 0).call(Helper.skAssign);
  a.stx('dw', R10, site.result, R0);
  a.mov64(R1, R9).call(Helper.skRelease);
  a.ldx('dw', R1, R10, site.result).jmp('eq', R1, 0, 'll_assigned');
  site.count('refused');
  a.ja(site.fallback);
  a.label('ll_assigned');
  site.count('assigned');
  a.ja(site.assigned);
}

/**
 * Emits the pending count of a TCP connection just handed to the slot at
 * fp + site.key (header comment: in the current window), for every port,
 * whatever picked the slot: the counts are also every daemon's active
 * connections for hostlb. A UDP datagram is not counted (no handshake would
 * ever end its pending). Jumps to site.pass.
 */
export function emitCountPending(a: Assembler, maps: LeastLoadedMaps, site: LeastLoadedSite): void {
  a.ldx('w', R1, site.ctx, SK_LOOKUP_PROTOCOL).jmp32('ne', R1, IPPROTO_TCP, site.pass);
  emitWindow(a, site);
  a.ldMapFd(R1, maps.loads).mov64(R2, R10).alu64('add', R2, site.key).call(Helper.mapLookupElem);
  a.jmp('eq', R0, 0, site.pass);
  // A new window: the current one becomes the previous (or, after a gap, nothing does). A count
  // below zero (handshakes that ended after their SYN's window turned) starts the previous at zero.
  a.ldx('dw', R3, R0, LOAD_WINDOW).ldx('dw', R4, R10, site.window);
  a.jmp('eq', R3, R4, 'pending_count');
  a.mov64(R5, 0).alu64('add', R3, 1).jmp('ne', R3, R4, 'pending_rotate');
  a.ldx('dw', R5, R0, LOAD_CURRENT).jmp('sge', R5, 0, 'pending_rotate').mov64(R5, 0);
  a.label('pending_rotate');
  a.stx('dw', R0, LOAD_PREVIOUS, R5).st('dw', R0, LOAD_CURRENT, 0).stx('dw', R0, LOAD_WINDOW, R4);
  a.label('pending_count');
  a.mov64(R1, 1).atomic('add', 'dw', R0, LOAD_CURRENT, R1);
  a.ja(site.pass);
}

/** The maps the SOCK_OPS program counts in. */
export interface CountMaps {
  loads: number;
  slots: number;
}

/** The SOCK_OPS program (header comment), assembled. Pure. */
export function buildCountProgram(maps: CountMaps): Uint8Array {
  const a = new Assembler();
  const SLOT = -8;
  // r0 = the socket's `slots` value, or out when it has none.
  const storage = (): void => {
    a.ldx('dw', R2, R6, SOCK_OPS_SK).jmp('eq', R2, 0, 'out');
    a.ldMapFd(R1, maps.slots).mov64(R3, 0).mov64(R4, 0).call(Helper.skStorageGet);
    a.jmp('eq', R0, 0, 'out');
  };
  const lookupLoads = (): void => {
    a.stx('w', R10, SLOT, R7);
    a.ldMapFd(R1, maps.loads).mov64(R2, R10).alu64('add', R2, SLOT).call(Helper.mapLookupElem);
    a.jmp('eq', R0, 0, 'out');
  };
  // Out unless the `loads` value at r0 and the `slots` value at r9 name one generation.
  const sameGeneration = (): void => {
    a.ldx('dw', R1, R0, LOAD_GENERATION).ldx('dw', R2, R9, SLOT_GENERATION).jmp('ne', R1, R2, 'out');
  };

  a.mov64(R6, R1);
  a.ldx('w', R2, R6, SOCK_OPS_OP);
  a.jmp('eq', R2, SOCK_OPS_PASSIVE_ESTABLISHED, 'established');
  a.jmp('ne', R2, SOCK_OPS_STATE, 'out');
  a.ldx('w', R2, R6, SOCK_OPS_NEW_STATE).jmp('ne', R2, TCP_CLOSE, 'out');

  // Closed: a counted connection leaves its slot's `active` (once: the mark is taken off),
  // unless the slot has had another owner since.
  storage();
  a.ldx('w', R1, R0, SLOT_COUNTED).jmp('eq', R1, 0, 'out');
  a.st('w', R0, SLOT_COUNTED, 0).ldx('w', R7, R0, 0).mov64(R9, R0);
  lookupLoads();
  sameGeneration();
  a.mov64(R1, -1).atomic('add', 'dw', R0, LOAD_ACTIVE, R1);
  a.ja('out');

  // Established: a connection of a daemon's socket moves from its slot's pending to active,
  // when the socket was marked for the slot's present owner.
  a.label('established');
  storage();
  a.ldx('w', R1, R0, SLOT_COUNTED).jmp('ne', R1, 0, 'out');
  a.ldx('w', R7, R0, 0).mov64(R9, R0);
  lookupLoads();
  sameGeneration();
  a.st('w', R9, SLOT_COUNTED, 1);
  a.mov64(R8, R0);
  a.mov64(R1, 1).atomic('add', 'dw', R8, LOAD_ACTIVE, R1);
  // Its SYN was counted in this window or the one before, both summed as pending while
  // `window` is at most one behind now: take one off `current` (a sum below zero reads as 0).
  a.ldx('dw', R1, R8, LOAD_CURRENT).jmp('sle', R1, 0, 'est_watch');
  a.call(Helper.ktimeGetNs).alu64('rsh', R0, WINDOW_SHIFT);
  a.ldx('dw', R1, R8, LOAD_WINDOW).alu64('add', R1, 1).jmp('lt', R1, R0, 'est_watch');
  a.mov64(R1, -1).atomic('add', 'dw', R8, LOAD_CURRENT, R1);
  a.label('est_watch');
  // Its close must call back: state changes on, the socket's other callbacks kept.
  a.ldx('w', R2, R6, SOCK_OPS_CB_FLAGS).alu32('or', R2, SOCK_OPS_STATE_CB_FLAG);
  a.mov64(R1, R6).call(Helper.sockOpsCbFlagsSet);

  a.label('out');
  a.mov64(R0, 1).exit();
  return a.assemble();
}

/** The `slots` value hostlb writes on the listening socket of the daemon in `slot`, of the slot's `generation` (not yet counted). */
export function encodeSlotValue(slot: number, generation: bigint): Uint8Array {
  const bytes = new Uint8Array(SLOT_VALUE_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, slot, true);
  view.setBigUint64(SLOT_GENERATION, BigInt.asUintN(64, generation), true);
  return bytes;
}

/** A `loads` value for a slot's new owner: no connection counted, generation `generation`. */
export function encodeFreshLoad(generation: bigint): Uint8Array {
  const bytes = new Uint8Array(LOAD_SIZE);
  new DataView(bytes.buffer).setBigUint64(LOAD_GENERATION, BigInt.asUintN(64, generation), true);
  return bytes;
}

/** One member of a least-loaded port. */
export interface Member {
  slot: number;
  weight: number;
}

/** The `members` value for a port: its mode and up to MAX_MEMBERS members (weights clamped to 1..2^31-1). */
export function encodeMembers(mode: PortModeValue, members: readonly Member[]): Uint8Array {
  const bytes = new Uint8Array(MEMBERS_SIZE);
  const view = new DataView(bytes.buffer);
  const n = Math.min(members.length, MAX_MEMBERS);
  view.setUint32(0, n, true);
  view.setUint32(4, mode, true);
  for (let i = 0; i < n; i++) {
    view.setUint32(MEMBERS_HEADER + 8 * i, members[i].slot, true);
    view.setUint32(MEMBERS_HEADER + 8 * i + 4, Math.max(1, Math.min(0x7fffffff, Math.round(members[i].weight))), true);
  }
  return bytes;
}

/** The members value of a port in mode sequence: the first `length` buckets in turn. */
export function encodeSequence(length: number): Uint8Array {
  const bytes = encodeMembers(PortMode.sequence, []);
  new DataView(bytes.buffer).setUint32(0, length, true);
  return bytes;
}

/** A slot's counts as `loads` holds them. */
export interface SlotLoad {
  /** Connections established through the dispatch and still open. */
  active: number;
  /** Handed over, handshake not complete, in the last two windows. */
  pending: number;
  /** Which owner of the slot these are for (starts at 0, one more per releaseSlot). */
  generation: bigint;
}

/** Reads a `loads` value; `nowWindow` is the current window (ktime >> 30), or null to count every pending field. */
export function decodeLoad(bytes: Uint8Array, nowWindow: bigint | null): SlotLoad {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const active = Number(view.getBigInt64(LOAD_ACTIVE, true));
  const current = Number(view.getBigInt64(LOAD_CURRENT, true));
  const previous = Number(view.getBigInt64(LOAD_PREVIOUS, true));
  const window = view.getBigUint64(LOAD_WINDOW, true);
  let pending = current + previous;
  if (nowWindow !== null) pending = window === nowWindow ? current + previous : window + 1n === nowWindow ? current : 0;
  return { active: Math.max(0, active), pending: Math.max(0, pending), generation: view.getBigUint64(LOAD_GENERATION, true) };
}

/** The current window as the programs compute it (CLOCK_MONOTONIC is ktime_get_ns). */
export function nowWindow(): bigint {
  return process.hrtime.bigint() >> BigInt(WINDOW_SHIFT);
}
