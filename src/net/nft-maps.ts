// The state half of the netfilter data plane's nftables table: which mark is
// which daemon, and which daemon each fallback bucket sends new connections
// to while hostlb is away. Rewritten whole, in one nft transaction, whenever
// daemons or effective weights change — so a new connection sees either the
// old maps or the new ones, never a mix, and conntrack keeps established
// flows where they are whatever the maps say.

import { execFileSync } from 'node:child_process';
import { NetError } from './net-error.js';
import { FALLBACK_BUCKETS, hex, portObjectName, REJECT_ID } from './netfilter-plan.js';

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
  /** Daemons that take new flows, with their effective weights (> 0). */
  daemons: Array<{ id: number; weight: number }>;
}

/** Bucket b's daemon: weighted rendezvous hashing, so a weight change moves few buckets. */
export function fallbackBuckets(daemons: ReadonlyArray<{ id: number; weight: number }>, buckets = FALLBACK_BUCKETS): number[] {
  const out: number[] = [];
  for (let b = 0; b < buckets; b++) {
    let best = REJECT_ID;
    let bestScore = -Infinity;
    for (const d of daemons) {
      if (!(d.weight > 0)) continue;
      // u in (0, 1) from a hash of (bucket, daemon); score = -w / ln(u) (higher wins).
      const u = (mix(b * 0x9e3779b1 + d.id * 0x85ebca6b + 1) + 0.5) / 4294967296;
      const score = -d.weight / Math.log(u);
      if (score > bestScore) {
        bestScore = score;
        best = d.id;
      }
    }
    out.push(best);
  }
  return out;
}

function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
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
    const buckets = fallbackBuckets(p.daemons);
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
