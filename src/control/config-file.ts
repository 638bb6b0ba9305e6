// Reading the configuration file: YAML in, a validated HostlbConfig out, or
// its problems, each with the file, the line, the key and what was expected
// (config-check.ts finds them; this file puts them on lines). Nothing is set
// up until a whole file has passed.

import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isNode, isScalar, isSeq, type Document } from 'yaml';
import { ConfigError, type ConfigProblem } from '../errors.js';
import { collectFindings, formatPath, thisHost, type Finding, type HostView } from './config-check.js';
import type { HostlbConfig } from './config-schema.js';

export { formatPath };

/** A problem as `hostlb check` prints it: `file:line: key.path: message` (a warning says so after the key). */
export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}${p.line !== undefined ? `:${p.line}` : ''}: ${p.path ? `${p.path}: ` : ''}${p.warning ? 'warning: ' : ''}${p.message}`;
}

/** The first error of `problems` as the ConfigError to throw, carrying them all; `file` puts file and line in its message. */
function firstError(problems: ConfigProblem[], file?: string, code = 'CONFIG_INVALID'): ConfigError {
  const first = problems.find((p) => !p.warning)!;
  const err = new ConfigError(first.path, first.message, code);
  if (file !== undefined) {
    err.message = formatProblem(file, first);
    err.file = file;
    err.line = first.line;
  }
  err.problems = problems;
  return err;
}

const problemOf = (f: Finding, line?: number): ConfigProblem => ({
  path: formatPath(f.keys), ...(line !== undefined ? { line } : {}), message: f.message, ...(f.warning ? { warning: true } : {}),
});

/**
 * Validates a configuration given as a plain object (from the admin API).
 * Throws ConfigError whose `path` names the key of the first problem and
 * whose `problems` lists them all.
 */
export function validateConfig(raw: unknown): HostlbConfig {
  const { config, findings } = collectFindings(raw);
  if (config !== null) return config;
  throw firstError(findings.map((f) => problemOf(f)));
}

/** A file's configuration (null when any problem is an error) and every problem, by line, then key path. */
export interface FileCheck {
  config: HostlbConfig | null;
  problems: ConfigProblem[];
  /** The YAML itself does not parse: `problems` are its syntax errors only. */
  syntax: boolean;
}

/** Checks a configuration given as text; `host`: the host checks too (hostlb check). */
function checkText(text: string, host?: HostView): FileCheck {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return { config: null, syntax: true, problems: doc.errors.map((e) => ({
      path: '',
      line: e.linePos?.[0].line,
      // The line is in front already; prettyErrors' "at line 2, column 1:" would say it twice.
      message: e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, ''),
    })) };
  }
  const { config, findings } = collectFindings(doc.toJS() ?? {}, host);
  const problems = findings.map((f) => problemOf(f, lineOf(doc, lineCounter, f)));
  problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { config, problems, syntax: false };
}

/**
 * The line of the deepest node on `f.keys` the document has: the value's
 * line (a list written below its key is found there), or the key's own for an
 * unknown key. undefined for an empty document.
 */
function lineOf(doc: Document, lineCounter: LineCounter, f: Finding): number | undefined {
  const lineAt = (node: unknown): number | undefined => (isNode(node) && node.range ? lineCounter.linePos(node.range[0]).line : undefined);
  let node: unknown = doc.contents;
  let line = lineAt(node);
  for (const [i, k] of f.keys.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(k));
      if (pair === undefined) break;
      node = pair.value;
      line = (f.atKey && i === f.keys.length - 1 ? undefined : lineAt(node)) ?? lineAt(pair.key) ?? line;
    } else if (isSeq(node) && typeof k === 'number' && k < node.items.length) {
      node = node.items[k];
      line = lineAt(node) ?? line;
    } else {
      break;
    }
  }
  return line;
}

/**
 * Validates a configuration given as text. `file` names it in errors. Throws
 * ConfigError (code CONFIG_INVALID, or CONFIG_SYNTAX for bad YAML) for the
 * first problem by line, with the line of its key when it can be found, and
 * every problem in `problems`.
 */
export function parseConfig(text: string, file = '<config>'): HostlbConfig {
  const { config, problems, syntax } = checkText(text);
  if (config !== null) return config;
  throw firstError(problems, file, syntax ? 'CONFIG_SYNTAX' : 'CONFIG_INVALID');
}

function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const err = new ConfigError('', `cannot read configuration file ${file}: ${(e as Error).message}`, 'CONFIG_UNREADABLE');
    err.file = file;
    throw err;
  }
}

/** Reads and validates a configuration file. Throws as parseConfig does, or ConfigError CONFIG_UNREADABLE when it cannot be read. */
export function loadConfig(file: string): HostlbConfig {
  return parseConfig(readConfigFile(file), file);
}

/**
 * What `hostlb check` says of a file: every problem (the host checks
 * included: daemons the plane cannot reach, a token file it cannot read),
 * never thrown. Throws ConfigError CONFIG_UNREADABLE when the file cannot be
 * read. `host` defaults to this one.
 */
export function checkConfigFile(file: string, host: HostView = thisHost()): FileCheck {
  return checkText(readConfigFile(file), host);
}

/** checkConfigFile for text already read (tests, and callers that hold the text). */
export function checkConfigText(text: string, host: HostView = thisHost()): FileCheck {
  return checkText(text, host);
}
