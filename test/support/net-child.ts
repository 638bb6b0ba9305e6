// The host half of apply.test.ts, run inside a fresh network namespace with
// `ip netns exec <ns> node net-child.js <command> ...`: probes, plans, applies,
// undoes and cleans up there, and prints one JSON line. Not a test file itself.
//
//   plan <spec-json>                     -> { steps: NetStep[] }
//   apply <spec-json> <journal>          -> { applied: n }
//   apply-steps <steps-json> <journal>   -> { applied: n }   (steps given verbatim)
//   undo <journal>                       -> { undone: n }
//   crash <spec-json> <journal>          creates a persistent TUN device hlb0, applies,
//                                        then dies by SIGKILL without undoing
//   cleanup <device> <journal>           -> CleanupReport
//   privileges                           -> { message: checkNetAdmin() }
//   live <spec-json> <journal>           opens the TUN device, applies, makes local TCP
//                                        connections and reports the TCP packets that
//                                        reached the device -> { seen: string[] }, then undoes
// A failure prints { error: { code, message } } and exits 1.

import { execFileSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { createBatch } from '../../src/link/link.js';
import { TunLink } from '../../src/link/tun-link.js';
import { applyPlan, cleanupLeftovers, undoJournal } from '../../src/net/apply.js';
import type { HostSpec } from '../../src/net/host-spec.js';
import type { NetStep } from '../../src/net/net-step.js';
import { planTunSetup } from '../../src/dataplane/tun/host-plan.js';
import { checkNetAdmin } from '../../src/net/privileges.js';
import { probeHost } from '../../src/net/probe.js';

function plan(specJson: string): NetStep[] {
  const spec = JSON.parse(specJson) as HostSpec;
  return planTunSetup(spec, probeHost(spec.device));
}

/** "src:port -> dst:port SYN|SYN-ACK" for an IPv4 TCP packet with a 20-byte IP header. */
function describeTcp(p: Uint8Array): string {
  const flags = p[33] === 0x02 ? 'SYN' : p[33] === 0x12 ? 'SYN-ACK' : `flags ${p[33].toString(16)}`;
  return `${p.subarray(12, 16).join('.')}:${(p[20] << 8) | p[21]} -> ${p.subarray(16, 20).join('.')}:${(p[22] << 8) | p[23]} ${flags}`;
}

async function live(specJson: string, journal: string): Promise<{ seen: string[] }> {
  const spec = JSON.parse(specJson) as HostSpec;
  const link = TunLink.open(spec.device);
  const seen: string[] = [];
  const daemon = createServer();
  try {
    applyPlan(planTunSetup(spec, probeHost(spec.device)), journal);
    const batch = createBatch(16, 2048);
    link.onReadable(() => {
      const n = link.read(batch);
      for (let i = 0; i < n; i++) {
        const p = batch.buffer.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i]);
        if (p[0] === 0x45 && p[9] === 6) seen.push(describeTcp(p));
      }
    });
    // The daemon listens on its own address; nothing answers on the device, so
    // each client stops at its SYN and the daemon's SYN-ACK.
    await new Promise<void>((resolve) => daemon.listen(8080, '127.10.1.1', resolve));
    connect({ port: 80, host: '127.10.0.1' }).on('error', () => {});
    connect({ port: 8080, host: '127.10.1.1', localAddress: '127.0.0.1', localPort: 40000 }).on('error', () => {});
    // Ends as soon as both are seen; the bound only stops a broken run (a busy machine may take seconds).
    const deadline = Date.now() + 15_000;
    while (seen.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return { seen: seen.sort() };
  } finally {
    daemon.close();
    link.close();
    undoJournal(journal);
  }
}

async function main(argv: string[]): Promise<unknown> {
  const [command, a, b] = argv;
  switch (command) {
    case 'plan':
      return { steps: plan(a) };
    case 'apply': {
      const steps = plan(a);
      applyPlan(steps, b);
      return { applied: steps.length };
    }
    case 'apply-steps': {
      const steps = JSON.parse(a) as NetStep[];
      applyPlan(steps, b);
      return { applied: steps.length };
    }
    case 'undo':
      return { undone: undoJournal(a) };
    case 'crash': {
      execFileSync('ip', ['tuntap', 'add', 'dev', (JSON.parse(a) as HostSpec).device, 'mode', 'tun']);
      applyPlan(plan(a), b);
      process.kill(process.pid, 'SIGKILL');
      return null;
    }
    case 'cleanup':
      return cleanupLeftovers(a, { journalPath: b });
    case 'privileges':
      return { message: checkNetAdmin() };
    case 'live':
      return live(a, b);
    default:
      throw new Error(`unknown command ${command}`);
  }
}

try {
  process.stdout.write(`${JSON.stringify(await main(process.argv.slice(2)))}\n`);
} catch (error) {
  const e = error as { code?: string; message?: string };
  process.stdout.write(`${JSON.stringify({ error: { code: e.code, message: e.message } })}\n`);
  process.exitCode = 1;
}
