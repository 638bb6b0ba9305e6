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
// A failure prints { error: { code, message } } and exits 1.

import { execFileSync } from 'node:child_process';
import { applyPlan, cleanupLeftovers, undoJournal } from '../../src/net/apply.js';
import type { HostSpec } from '../../src/net/host-spec.js';
import type { NetStep } from '../../src/net/net-step.js';
import { planHostSetup } from '../../src/net/plan.js';
import { checkNetAdmin } from '../../src/net/privileges.js';
import { probeHost } from '../../src/net/probe.js';

function plan(specJson: string): NetStep[] {
  const spec = JSON.parse(specJson) as HostSpec;
  return planHostSetup(spec, probeHost(spec.device));
}

function main(argv: string[]): unknown {
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
    default:
      throw new Error(`unknown command ${command}`);
  }
}

try {
  process.stdout.write(`${JSON.stringify(main(process.argv.slice(2)))}\n`);
} catch (error) {
  const e = error as { code?: string; message?: string };
  process.stdout.write(`${JSON.stringify({ error: { code: e.code, message: e.message } })}\n`);
  process.exitCode = 1;
}
