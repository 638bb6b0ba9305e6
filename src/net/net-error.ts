// Errors of host network set-up and teardown, each with a stable code and a
// message that says which step failed and what ip(8) or the kernel said.
// Planning errors name the spec key; apply errors name the command.

import { HostlbError } from '../errors.js';
import type { NetStep } from './net-step.js';

export type NetErrorCode =
  /** The HostSpec cannot be set up (bad address, family mix, reserved table). */
  | 'NET_SPEC_INVALID'
  /** The host lacks something the plan needs (IPv6 disabled: no /proc/sys/net/ipv6). */
  | 'NET_FACTS_INCOMPLETE'
  /** Reading the host's addresses, rules, routes or sysctls failed. */
  | 'NET_PROBE_FAILED'
  /** A step failed; the steps applied before it were undone. */
  | 'NET_STEP_FAILED'
  /** A step failed and undoing the earlier ones failed too; the journal keeps what is left. */
  | 'NET_ROLLBACK_FAILED'
  /** Undoing a journal left some steps in place; the journal keeps them. */
  | 'NET_UNDO_FAILED'
  /** The journal file cannot be read, parsed or written. */
  | 'NET_JOURNAL_INVALID'
  /** The journal holds a step hostlb does not write (journal-shape.ts): nothing is replayed. */
  | 'NET_JOURNAL_FOREIGN'
  /** The state directory is not owned by root (or hostlb's user), or others may write to it. */
  | 'NET_STATE_DIR_UNSAFE'
  /** The baseline (the host before hostlb changed it) of a crashed run cannot be read. */
  | 'NET_BASELINE_INVALID'
  /** Another live process owns the journal or the device. */
  | 'NET_INSTANCE_RUNNING';

export class NetError extends HostlbError {
  declare readonly code: NetErrorCode;
  /** The step that failed, when one did. */
  readonly step?: NetStep;
  /** What the command printed on stderr (or the system error's message). */
  readonly stderr?: string;

  constructor(code: NetErrorCode, message: string, options: { cause?: unknown; step?: NetStep; stderr?: string } = {}) {
    super(code, message, { cause: options.cause });
    this.step = options.step;
    this.stderr = options.stderr;
  }
}
