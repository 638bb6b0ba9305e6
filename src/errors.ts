// Errors of the control path. Each has a stable `code` scripts can match and a
// message that tells a person what to change. The packet path never throws;
// it counts drops instead (see dispatch/drop-reason.ts).

export class HostlbError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A configuration that cannot be used. `path` names the key, e.g.
 * `clusters[0].ports[1].daemons[2].address`; `file` and `line` are set when it
 * came from a file.
 */
export class ConfigError extends HostlbError {
  readonly path: string;
  file?: string;
  line?: number;
  /** Every problem found, in the order `hostlb check` prints them; this error is the first of them. */
  problems?: ConfigProblem[];
  constructor(path: string, message: string, code = 'CONFIG_INVALID') {
    super(code, path ? `${path}: ${message}` : message);
    this.path = path;
  }
}

/**
 * One problem of a configuration: the key path (as ConfigError.path), its
 * line when it came from a file, and what to change. A warning leaves the
 * configuration usable.
 */
export interface ConfigProblem {
  path: string;
  line?: number;
  message: string;
  warning?: boolean;
}
