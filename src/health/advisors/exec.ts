// The exec advisor: runs a command (no shell) as the advisor's user, with HOST
// and PORT naming the daemon on top of the few variables of hostlb's that
// children inherit (run-as.ts); exit status 0 means healthy. At the timeout or
// an abort the command's whole process group gets SIGKILL.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { childEnvironment } from '../run-as.js';
import { reasonFromError, runProbe, type Probe } from './advisor.js';

/**
 * Probe: ok on exit code 0; 'exit code N', 'killed by SIGTERM', 'command not
 * found: x' or 'timed out after N ms' otherwise. Output is discarded. The
 * command runs in a process group of its own (its PID is the group's id), so
 * the kill also reaches what it started, such as the `sleep` under `sh -c`.
 */
export const execProbe: Probe = (target, spec, signal) =>
  runProbe(spec, signal, (finish) => {
    const command = spec.command ?? '';
    if (command === '') {
      finish(false, 'no command');
      return;
    }
    const child = spawn(command, spec.args ?? [], {
      // Not hostlb's whole environment: it may hold HOSTLB_TOKEN and the like.
      env: childEnvironment({ HOST: target.address, PORT: String(target.port) }, spec.runAs),
      stdio: 'ignore',
      detached: true,
      ...(spec.runAs ? { uid: spec.runAs.uid, gid: spec.runAs.gid } : {}),
    });
    child.on('error', (err) => finish(false, spawnReason(command, err)));
    child.on('exit', (code, sig) => {
      if (code === 0) finish(true);
      else if (code !== null) finish(false, `exit code ${code}`);
      else finish(false, `killed by ${String(sig)}`);
    });
    return () => {
      const pid = child.pid;
      // Once the command has exited and been reaped its PID may belong to
      // someone else; only a command still running is ours to kill.
      if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // The group is gone but the leader not yet reaped: kill the PID alone.
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      // Waiting for 'exit' means the PID is reaped when the probe settles.
      return exited;
    };
  });

function spawnReason(command: string, err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'ENOENT') return `command not found: ${command}`;
  if (code === 'EACCES') return `permission denied: ${command}`;
  return reasonFromError(err);
}
