// Live reconfiguration of the host: given the plan a new configuration needs
// (made against the facts seen before hostlb changed anything), apply what the
// journal lacks and undo what the journal has but the plan no longer wants.

import { applyPlan, readJournal, undoSelected } from './apply.js';
import type { NetStep } from './net-step.js';

export interface ReconcileResult {
  applied: number;
  undone: number;
}

/** A step's identity: its apply command. */
export function stepKey(step: NetStep): string {
  return JSON.stringify(step.apply);
}

/** The steps of `desired` the journal lacks, and the journaled steps `desired` lacks. Pure. */
export function diffSteps(desired: readonly NetStep[], journaled: readonly NetStep[]): { add: NetStep[]; remove: NetStep[] } {
  const want = new Set(desired.map(stepKey));
  const have = new Set(journaled.map(stepKey));
  return {
    add: desired.filter((s) => !have.has(stepKey(s))),
    remove: journaled.filter((s) => !want.has(stepKey(s))),
  };
}

/**
 * Adds first (all or nothing: applyPlan rolls back on failure and throws),
 * so the caller can switch the dispatcher over; call `removeUnwanted` after
 * the switch, so nothing still in use loses its route.
 */
export function addMissing(desired: readonly NetStep[], journalPath: string): number {
  const { add } = diffSteps(desired, readJournal(journalPath)?.steps ?? []);
  if (add.length > 0) applyPlan(add, journalPath);
  return add.length;
}

/** Undoes journaled steps `desired` no longer contains. Returns how many. */
export function removeUnwanted(desired: readonly NetStep[], journalPath: string): number {
  const want = new Set(desired.map(stepKey));
  return undoSelected(journalPath, (s) => !want.has(stepKey(s)));
}
