// The state half of the netfilter data plane's nftables table: which mark is
// which daemon, and which daemon each fallback bucket sends new connections
// to while hostlb is away. Rewritten whole, in one nft transaction, whenever
// daemons or effective weights change — so a new connection sees either the
// old maps or the new ones, never a mix, and conntrack keeps established
// flows where they are whatever the maps say.

import { execFileSync } from 'node:child_process';
import type { Balancer } from '../../dispatch/balancer.js';
import type { Daemon } from '../../dispatch/config-tree.js';
import { NetError } from '../../net/net-error.js';
import { fallbackBuckets } from './fallback-buckets.js';
import { hex, portObjectName } from './host-plan.js';

export interface MapDaemon {
  id: number;
  family: 4 | 6;
  address: string;
  port: number;
}

export interface MapPort {
  address: string;
  protocol: string;
  port: number;
  /** The daemon id of each fallback bucket (REJECT_ID: none takes flows). */
  buckets: readonly number[];
}

/**
 * The maps' state for the Balancer as it stands: every daemon of the
 * configuration (and `kept`: retired ones whose flows still drain) by id, and
 * each cluster port's fallback buckets over the effective weights.
 */
export function mapState(balancer: Balancer, kept: readonly Daemon[]): { daemons: MapDaemon[]; ports: MapPort[] } {
  const daemons = new Map<number, MapDaemon>();
  const add = (d: Daemon): void => {
    daemons.set(d.id, { id: d.id, family: d.address.family, address: d.address.text, port: d.port });
  };
  const ports: MapPort[] = [];
  for (const cluster of balancer.tree.clusters) {
    for (const port of cluster.ports) {
      const live: Array<{ id: number; weight: number }> = [];
      for (const d of port.daemons) {
        add(d);
        const weight = balancer.effectiveWeight(port, d.id);
        if (weight > 0) live.push({ id: d.id, weight });
      }
      ports.push({ address: cluster.address.text, protocol: port.protocol, port: port.port, buckets: fallbackBuckets(live) });
    }
  }
  for (const d of kept) add(d);
  return { daemons: [...daemons.values()].sort((a, b) => a.id - b.id), ports };
}

/** The nft script that sets every map of `table` to the given state. Pure. */
export function mapScript(table: string, markBase: number, daemons: readonly MapDaemon[], ports: readonly MapPort[]): string {
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    lines.push(`flush map inet ${table} daemons${family}`);
    const elements = daemons.filter((d) => d.family === family).map((d) => `${hex(markBase | d.id)} : ${d.address} . ${d.port}`);
    if (elements.length > 0) lines.push(`add element inet ${table} daemons${family} { ${elements.join(', ')} }`);
  }
  for (const p of ports) {
    const name = portObjectName(p.address, p.protocol, p.port);
    const buckets = p.buckets;
    lines.push(`flush map inet ${table} ${name}`);
    lines.push(`add element inet ${table} ${name} { ${buckets.map((id, b) => `${b} : ${hex(markBase | id)}`).join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

/** Runs `script` as one nft transaction. Throws NetError naming what nft said. */
export function applyMapScript(script: string): void {
  try {
    execFileSync('nft', ['-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  } catch (cause) {
    const stderr = String((cause as { stderr?: unknown }).stderr ?? (cause as Error).message).trim();
    throw new NetError('NET_STEP_FAILED', `could not update the nftables maps: ${stderr}`, { cause, stderr });
  }
}
