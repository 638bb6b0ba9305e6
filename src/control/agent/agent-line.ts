// What this host tells a front tier about one cluster port, in HAProxy's
// agent-check words (configuration.txt, "agent-check"): every answer is a
// complete state line — operating state, administrative state, weight and,
// when configured, maxconn — because HAProxy leaves whatever a line does not
// say as the last line set it, and only the agent can undo what it set.
//
//   up ready 67%                 two of three daemons' capacity takes new connections
//   up drain 100%                `hostlb port drain`: finish what you have, send nothing new
//   up maint 100%                hostlb is stopping: its rules go away in a moment
//   ready 0% down#no daemon takes new connections
//
// The weight is a bare percentage ("67%"): HAProxy 2.6 reads that word as a
// weight relative to the server's configured one; a "weight:" prefix is not a
// word it knows. A description follows '#' and runs to the end of the line,
// so "down#…" comes last. Pure.

export interface PortCapacity {
  /** Configured weights of the port's daemons (not removed ones). */
  configured: readonly number[];
  /** Effective weights now (0 for a daemon that takes no new connections), on the manager's scale: configured × 100 at full health. */
  effective: readonly number[];
}

export interface AgentInput {
  capacity: PortCapacity;
  /** The whole port is being drained (`hostlb port drain`). */
  draining: boolean;
  /** hostlb is stopping. */
  stopping: boolean;
  maxconn?: number;
}

export type AgentState = 'up' | 'drain' | 'maint' | 'down';

export interface AgentAnswer {
  state: AgentState;
  /** 0..100: the share of the port's configured capacity that takes new connections. */
  weightPercent: number;
  /** The line to send, without its newline. */
  line: string;
}

/** Σ effective over Σ configured × 100, as a whole percentage (at least 1 while any daemon takes connections, at most 100). */
export function healthyPercent(c: PortCapacity): number {
  const configured = c.configured.reduce((a, w) => a + Math.max(0, w), 0);
  const effective = c.effective.reduce((a, w) => a + Math.max(0, w), 0);
  if (configured <= 0 || effective <= 0) return 0;
  return Math.min(100, Math.max(1, Math.round(effective / configured)));
}

export function agentAnswer(input: AgentInput): AgentAnswer {
  const weightPercent = healthyPercent(input.capacity);
  const maxconn = input.maxconn !== undefined ? ` maxconn:${input.maxconn}` : '';
  const admin = input.stopping ? 'maint' : input.draining ? 'drain' : 'ready';
  const state: AgentState = input.stopping ? 'maint' : weightPercent === 0 ? 'down' : input.draining ? 'drain' : 'up';
  const line = weightPercent > 0
    ? `up ${admin} ${weightPercent}%${maxconn}`
    : `${admin} 0%${maxconn} down#no daemon takes new connections`;
  return { state, weightPercent, line };
}

/**
 * keepalived's MISC_CHECK with misc_dynamic reads the exit code: 0 up
 * (weight unchanged), 1 down, 2..255 up with weight (code − 2). The weight
 * becomes the percentage; drain is weight 0 (no new connections, existing
 * ones kept); maint and down are 1.
 */
export function miscCheckExitCode(answer: Pick<AgentAnswer, 'state' | 'weightPercent'>): number {
  switch (answer.state) {
    case 'up': return 2 + answer.weightPercent;
    case 'drain': return 2;
    case 'maint':
    case 'down': return 1;
  }
}
