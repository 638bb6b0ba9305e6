// The TUN data plane: hostlb's own dispatcher behind a TUN device. The host
// routes cluster traffic and daemon replies into the device (host-plan.ts);
// the pump reads batches, the Dispatcher translates them against its
// connection table, and the pump writes them back. The table is checkpointed
// to a file in stateDir, so a restarted or taking-over hostlb keeps its flows.

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BaseLogger as Logger } from 'pino';
import type { HostlbConfig } from '../../control/config-schema.js';
import { restoreTable, snapshotTable } from '../../dispatch/checkpoint.js';
import { Dispatcher } from '../../dispatch/dispatcher.js';
import { listConnections, type ConnectionFilter, type ConnectionPage } from '../../dispatch/record-view.js';
import type { Link } from '../../link/link.js';
import { hugePageAllocator } from '../../native/addon.js';
import { TunLink } from '../../link/tun-link.js';
import type { HostFacts } from '../../net/host-facts.js';
import type { HostSpec } from '../../net/host-spec.js';
import type { NetStep } from '../../net/net-step.js';
import { writeFileAtomic } from '../../net/state-files.js';
import type { DataPlane, FlowTable, PlaneContext, PlaneCounter } from '../data-plane.js';
import { writeCheckpointFile } from './checkpoint-file.js';
import { installConnectionLog } from './connection-log.js';
import { planTunSetup } from './host-plan.js';
import { TunPump } from './pump.js';

/** The table checkpoint of the instance whose device is `device`, in `stateDir`. */
export function checkpointPath(config: Pick<HostlbConfig, 'stateDir' | 'device'>): string {
  return join(config.stateDir, `${config.device}.table`);
}

export class TunPlane implements DataPlane {
  readonly kind = 'tun' as const;
  readonly dispatcher: Dispatcher;
  private link: Link | null;
  private pump: TunPump | null = null;
  /** The device when this plane opened it (not a link it was given). */
  private device: TunLink | null = null;
  private config: HostlbConfig;
  private checkpointTimer: NodeJS.Timeout | null = null;
  /** A checkpoint is being written slice by slice. */
  private checkpointing = false;
  private stopped = false;

  private constructor(config: HostlbConfig, dispatcher: Dispatcher, private readonly logger: Logger, link: Link | null) {
    this.config = config;
    this.dispatcher = dispatcher;
    this.link = link;
  }

  /** Null when the kernel offers TUN devices (/dev/net/tun), else why not. */
  static support(): string | null {
    return existsSync('/dev/net/tun') ? null : '/dev/net/tun does not exist: this kernel (or container) offers no TUN devices';
  }

  static fromConfig(config: HostlbConfig, context: PlaneContext): TunPlane {
    const dispatcher = new Dispatcher({
      balancer: context.balancer,
      capacity: config.table.capacity, timeouts: config.table.timeouts, seed: config.seed, hashSeed: config.seed,
      // Huge pages for the table of a real device; a memory link (tests) needs no addon.
      allocate: context.link ? undefined : hugePageAllocator,
      passUnmatchedReplies: true,
    });
    return new TunPlane(config, dispatcher, context.logger, context.link ?? null);
  }

  checkTools(): void {
    // iproute2 only, which every plan needs (NET_PROBE_FAILED says so when it is missing).
  }

  plan(spec: HostSpec, baseline: HostFacts): NetStep[] {
    return planTunSetup(spec, baseline);
  }

  /**
   * Opens the device, persistent: if this process dies, the device and its
   * routes stay, so daemon replies go nowhere rather than leaking out
   * untranslated (DESIGN.md). Throws LinkError (TUN_*).
   */
  open(): void {
    if (this.link !== null) return;
    this.device = TunLink.open(this.config.device, { persist: true, offloads: this.config.tun.offloads, ioUring: this.config.tun.ioUring });
    this.logger.info({ event: 'tun_offloads', device: this.device.name, offloads: this.device.offloads, ioUring: this.device.ioUring },
      `${this.device.offloads.length > 0 ? `offloads on ${this.device.name}: ${this.device.offloads.join(', ')}` : `no offloads on ${this.device.name}: one packet per read`}; ` +
      (this.device.ioUring ? 'batches through io_uring' : 'one system call per packet'));
    if (this.device.ioUringRefused !== null) {
      this.logger.warn({ event: 'io_uring_unavailable', device: this.device.name, problem: this.device.ioUringRefused },
        `io_uring refused (${this.device.ioUringRefused}); ${this.device.name} is read and written one system call per packet. Set tun.ioUring: false to say so on purpose`);
    }
    this.link = this.device;
  }

  start(adopt: boolean): void {
    const file = checkpointPath(this.config);
    if (!adopt) {
      rmSync(file, { force: true });
    } else if (existsSync(file)) {
      try {
        const { restored, skipped } = restoreTable(this.dispatcher, readFileSync(file), Date.now());
        this.logger.info({ event: 'table_restored', restored, skipped }, 'connection table restored from its checkpoint');
      } catch (e) {
        // Only an optimisation: without it flows recover through a consistent-hash scheduler, or end.
        this.logger.warn({ event: 'checkpoint_invalid', file, err: (e as Error).message }, 'the table checkpoint cannot be restored; starting with an empty table');
      }
    }
    installConnectionLog(this.dispatcher, this.config.log.connections, this.logger);
    this.pump = new TunPump(this.link!, this.dispatcher);
    this.pump.start();
    this.startCheckpoints();
  }

  follow(config: HostlbConfig): void {
    this.config = config;
    this.dispatcher.setTimeouts(config.table.timeouts);
    installConnectionLog(this.dispatcher, config.log.connections, this.logger);
  }

  hostRepaired(): void {
    // Routes and rules are all the host holds for this plane: putting them back was the whole repair.
  }

  resetDaemonFlows(id: number): number {
    return this.dispatcher.resetDaemonFlows(id, Date.now());
  }

  nothingLive(): boolean {
    // Every flow the table carries is counted.
    return true;
  }

  daemonsHeld(): ReadonlySet<number> {
    return this.dispatcher.daemonsNamed();
  }

  connections(filter: ConnectionFilter): ConnectionPage {
    return listConnections(this.dispatcher, filter);
  }

  table(): FlowTable {
    const t = this.dispatcher.table;
    return { records: t.size, capacity: t.capacity, limit: t.capacity, evictions: t.evictions };
  }

  counter(name: PlaneCounter): number | null {
    const pump = this.pump;
    switch (name) {
      case 'link.read': return pump?.packetsRead ?? 0;
      case 'link.written': return pump?.packetsWritten ?? 0;
      case 'link.refused': return pump?.writeShortfall ?? 0;
      case 'link.superPackets': return this.dispatcher.balancer.stats.superPackets;
      default: return null;
    }
  }

  /**
   * Writes the table checkpoint slice by slice between packets
   * (checkpoint-file.ts). Resolves with the records written, or null when one
   * is already being written or the plane stopped meanwhile (the old file stays).
   */
  async checkpointInSlices(): Promise<number | null> {
    if (this.checkpointing) return null;
    this.checkpointing = true;
    try {
      return await writeCheckpointFile(checkpointPath(this.config), this.dispatcher, { proceed: () => !this.stopped });
    } finally {
      this.checkpointing = false;
    }
  }

  private startCheckpoints(): void {
    const seconds = this.config.table.checkpoint;
    if (seconds <= 0) return;
    this.checkpointTimer = setInterval(() => {
      this.checkpointInSlices().catch((e: unknown) => this.logger.error({ err: e }, 'table checkpoint failed'));
    }, seconds * 1000);
    this.checkpointTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.checkpointTimer !== null) clearInterval(this.checkpointTimer);
    this.checkpointTimer = null;
    this.pump?.stop();
  }

  close(undone: boolean): void {
    // Nothing to adopt after a deliberate stop: its flows ended with the set-up.
    if (undone) rmSync(checkpointPath(this.config), { force: true });
    this.device?.setPersist(false);
    this.device?.close();
  }

  handOver(): void {
    this.stop();
    // All at once, now that packets have stopped; no fsync, as for the periodic
    // checkpoint (checkpoint-file.ts): it is for the next process, not the next boot.
    writeFileAtomic(checkpointPath(this.config), snapshotTable(this.dispatcher), { sync: false });
    // The device stays persistent for the next owner.
    this.device?.close();
  }
}
