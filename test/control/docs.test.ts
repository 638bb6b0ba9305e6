// The docs against the code. Every `hostlb` command and option that
// docs/*.md and README.md show, every configuration key (key tables, YAML
// examples, key paths in code spans), API endpoint, metric name, drop reason,
// event type and error code they name must exist in the code; each failure
// names the page, the line and what is missing. The code is read from where it
// lives: the CLI from its own --help (commander, run as a child: main.ts parses
// argv when imported), keys from the zod schema, endpoints from routes.ts's
// router, metrics from the registry metrics.ts builds, error codes from the
// string literals under src/ and native/.
//
// Only what reads as a reference is checked: a `hostlb` at the start of a
// command (or after sudo, npx, $, &&, |), code spans and fenced blocks, tables
// by their header (`option`, `key`, `code`, `codes`, `method`). Prose is not.
// api.md's JSON examples are compared with a running instance's answers (over
// a MemoryLink): every key they show must be answered, and the counters
// example must show every section and drop reason.

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ApiError } from '../../src/control/api/api-error.js';
import { route } from '../../src/control/api/routes.js';
import { EVENT_TYPES } from '../../src/control/cli/commands.js';
import { configSchema } from '../../src/control/config-schema.js';
import { createMetrics, type MetricsSource } from '../../src/control/metrics.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { startMemoryHostlb } from '../support/memory-hostlb.js';

/** dist/test/control/ → the repository. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(REPO, 'dist/src/control/cli/main.js');

// ---------------------------------------------------------------------------
// The pages

interface Page { name: string; lines: string[] }
interface Fence { page: Page; lang: string; first: number; lines: string[] }
interface Table { page: Page; heading: string; header: string[]; rows: { line: number; cells: string[] }[] }

function pages(): Page[] {
  const docs = readdirSync(join(REPO, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
  return [...docs, 'README.md'].map((name) => ({ name, lines: readFileSync(join(REPO, name), 'utf8').split('\n') }));
}

const FENCE = /^\s*```/;

/** Fenced blocks, with the line number (1-based) of their first content line. */
function fences(page: Page): Fence[] {
  const out: Fence[] = [];
  let open: Fence | null = null;
  page.lines.forEach((line, i) => {
    if (FENCE.test(line)) {
      if (open) {
        out.push(open);
        open = null;
      } else {
        open = { page, lang: line.trim().slice(3).trim(), first: i + 2, lines: [] };
      }
    } else if (open) {
      open.lines.push(line);
    }
  });
  return out;
}

/** Lines outside fenced blocks, with their 1-based numbers. */
function prose(page: Page): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let inFence = false;
  page.lines.forEach((text, i) => {
    if (FENCE.test(text)) inFence = !inFence;
    else if (!inFence) out.push({ line: i + 1, text });
  });
  return out;
}

/** The code spans of a line of Markdown. */
function spans(text: string): string[] {
  return [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
}

/** A table row's cells; `\|` stays inside its cell (as `|`). */
function cells(line: string): string[] {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Tables outside fenced blocks, each with the heading it sits under. */
function tables(page: Page): Table[] {
  const out: Table[] = [];
  let heading = '';
  let current: Table | null = null;
  for (const { line, text } of prose(page)) {
    if (/^#{1,6} /.test(text)) heading = text;
    if (!text.trim().startsWith('|')) {
      current = null;
      continue;
    }
    if (!current) {
      current = { page, heading, header: cells(text).map((c) => c.toLowerCase()), rows: [] };
      out.push(current);
    } else if (!/^\|?[\s:|-]+\|?$/.test(text.trim())) {
      current.rows.push({ line, cells: cells(text) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The CLI, read from its --help

interface CliOption { flags: string[]; takesValue: boolean }
interface CliCommand { path: string[]; options: CliOption[]; commands: Map<string, CliCommand> }

let children = 0;
const waiting: (() => void)[] = [];

async function help(path: string[]): Promise<string> {
  if (children >= 4) await new Promise<void>((resolve) => waiting.push(resolve));
  else children++;
  try {
    return await new Promise<string>((resolve, reject) => {
      const env = { ...process.env, HOSTLB_SOCKET: undefined, HOSTLB_TOKEN: undefined };
      const child = spawn(process.execPath, [MAIN, ...path, '--help'], { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`hostlb ${path.join(' ')} --help exited ${code}: ${err}`))));
    });
  } finally {
    const next = waiting.shift();
    if (next) next();
    else children--;
  }
}

/** The entries of a help section ("Options", "Commands"): each line that starts at two spaces. */
function section(text: string, name: string): string[] {
  const m = new RegExp(`\\n${name}:\\n((?: {2,}.*\\n?)*)`).exec(text);
  return m ? m[1].split('\n').filter((l) => /^ {2}\S/.test(l)).map((l) => l.trim()) : [];
}

async function readCli(path: string[] = []): Promise<CliCommand> {
  const text = await help(path);
  const options = section(text, 'Options').map((entry) => {
    const term = entry.split(/ {2,}/)[0];
    const parts = term.split(', ');
    return { flags: parts.map((p) => p.split(' ')[0]), takesValue: /[<[]/.test(term) };
  });
  const names = section(text, 'Commands').map((entry) => entry.split(/\s/)[0]).filter((n) => n !== 'help');
  const commands = new Map<string, CliCommand>();
  for (const sub of await Promise.all(names.map((n) => readCli([...path, n])))) commands.set(sub.path.at(-1)!, sub);
  return { path, options, commands };
}

function option(cmd: CliCommand, flag: string): CliOption | undefined {
  return cmd.options.find((o) => o.flags.includes(flag));
}

/** Words that may stand before `hostlb` when it starts a command. */
const BEFORE_COMMAND = new Set(['$', '#', 'sudo', 'npx', '&&', '||', ';', '|', '(', '$(', 'then', 'do', 'exec', 'time', 'watch']);
/** Words that end a command line. */
const AFTER_COMMAND = new Set(['|', '||', '&&', ';', '&', '>', '>>', '<', '2>', '2>&1', ')', '#']);

/** Each `hostlb ...` command in `text` (a code span or a line of a block), as the words after `hostlb`. */
function commandsIn(text: string): string[][] {
  const words = text.replace(/(^|\s)#\s.*$/, '').split(/\s+/).filter(Boolean);
  const out: string[][] = [];
  words.forEach((w, j) => {
    if (w !== 'hostlb' || (j > 0 && !BEFORE_COMMAND.has(words[j - 1]))) return;
    // Output, not a command: "hostlb run: 4 × python3 ...", "hostlb check: data plane ...".
    if (words[j + 1]?.endsWith(':')) return;
    const args: string[] = [];
    let depth = 0;
    for (const word of words.slice(j + 1)) {
      if (depth === 0 && (AFTER_COMMAND.has(word) || /^\d?>/.test(word))) break;
      depth += (word.match(/\[/g) ?? []).length - (word.match(/\]/g) ?? []).length;
      const ends = word.endsWith(';');
      args.push(ends ? word.slice(0, -1) : word);
      if (ends) break;
    }
    out.push(args);
  });
  return out;
}

/** A word of a synopsis without the brackets and quotes around it: `[--json]` → `--json`. */
function bare(word: string): string {
  return word.replace(/^[[('"]+/, '').replace(/[\])'",.:]+$/, '');
}

/** Placeholders stand for a value: FILE, <port>, <address...>, ..., [options]. */
function placeholder(word: string): boolean {
  return word === '' || word === '...' || word === 'options' || /^[A-Z][A-Z_]*$/.test(word) || word.startsWith('<') || word.startsWith('{');
}

/**
 * Walks `args` through the CLI: commands and subcommands must exist, and
 * every option must be one of the command's (or a global one). Returns the
 * problem, or null; `node` is where the walk ended.
 */
function walk(root: CliCommand, args: string[]): { problem: string | null; node: CliCommand } {
  let node = root;
  for (let i = 0; i < args.length; i++) {
    const raw = args[i];
    if (raw === '--') break;
    if (raw === '|') continue; // inside brackets: `[--socket PATH | --url URL]`
    const word = bare(raw);
    if (/^--?[A-Za-z]/.test(word)) {
      const flag = word.split('=')[0];
      const found = option(node, flag) ?? option(root, flag);
      if (!found) return { problem: `hostlb ${[...node.path, flag].join(' ')}: no such option`, node };
      if (found.takesValue && !word.includes('=')) i++;
      continue;
    }
    if (node.commands.size === 0) continue; // an argument
    if (placeholder(word)) break;
    const sub = node.commands.get(word);
    if (!sub) return { problem: `hostlb ${[...node.path, word].join(' ')}: no such command`, node };
    node = sub;
  }
  return { problem: null, node };
}

// ---------------------------------------------------------------------------
// The configuration schema

type Schema = z.ZodType;
interface Def { type: string; innerType?: Schema; in?: Schema; shape?: Record<string, Schema>; element?: Schema; options?: Schema[]; getter?: () => Schema }

function def(s: Schema): Def {
  return (s as unknown as { _zod: { def: Def } })._zod.def;
}

/** The schema under optional, default, transform and the like. */
function unwrap(s: Schema): Schema {
  for (;;) {
    const d = def(s);
    if (d.innerType) s = d.innerType;
    else if (d.type === 'pipe' && d.in) s = d.in;
    else if (d.type === 'lazy' && d.getter) s = d.getter();
    else return s;
  }
}

/**
 * The schema at `path` (keys; `[]` steps into a list), or null when a key is
 * not there. `*` accepts any key of an object; a record accepts any key and
 * ends the check.
 */
function at(path: string[], from: Schema = configSchema): Schema | null | 'any' {
  let s = unwrap(from);
  for (const key of path) {
    const d = def(s);
    if (key === '[]') {
      if (d.type !== 'array' || !d.element) return null;
      s = unwrap(d.element);
    } else if (d.type === 'record') {
      return 'any';
    } else if (d.type === 'object' && d.shape) {
      if (key === '*') return 'any';
      if (!(key in d.shape)) return null;
      s = unwrap(d.shape[key]);
    } else {
      return null;
    }
  }
  return s;
}

const PORT_PATH = ['clusters', '[]', 'ports', '[]'];

/** `clusters[0].ports[j].supervise.cwd` → ['clusters', '[]', 'ports', '[]', 'supervise', 'cwd']. */
function keyPath(text: string): string[] {
  return text.split('.').flatMap((part) => {
    const m = /^([A-Za-z*]*)((?:\[[^\]]*\])*)$/.exec(part);
    if (!m) return [part];
    return [...(m[1] ? [m[1]] : []), ...Array.from({ length: (m[2].match(/\[/g) ?? []).length }, () => '[]')];
  });
}

/** A key path from the top, or else from a port (`supervise.cwd`, `advisor.rise`). */
function resolveKey(path: string[], base: string[] = []): boolean {
  return at([...base, ...path]) !== null || at([...PORT_PATH, ...base, ...path]) !== null;
}

/** Every key of `value` (a YAML example) that the schema at `schema` does not have. */
function unknownKeys(value: unknown, schema: Schema | 'any', where: string): string[] {
  if (schema === 'any' || value === null || typeof value !== 'object') return [];
  const d = def(unwrap(schema));
  if (Array.isArray(value)) return d.type === 'array' && d.element ? value.flatMap((v, i) => unknownKeys(v, d.element!, `${where}[${i}]`)) : [`${where}: not a list in the schema`];
  if (d.type === 'record') return [];
  if (d.type === 'union' && d.options) return d.options.some((o) => unknownKeys(value, o, where).length === 0) ? [] : [`${where}: matches no form the schema allows`];
  if (d.type !== 'object' || !d.shape) return [`${where}: not an object in the schema`];
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => (k in d.shape! ? unknownKeys(v, d.shape![k], where ? `${where}.${k}` : k) : [`${where ? `${where}.` : ''}${k}: no such key`]));
}

// ---------------------------------------------------------------------------
// Error codes: string literals under src/ and native/

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const path = join(dir, f);
    if (statSync(path).isDirectory()) return f === 'build' || f === 'node_modules' ? [] : sourceFiles(path);
    return /\.(ts|cc|cpp|h)$/.test(f) ? [path] : [];
  });
}

function codesInCode(): { literals: Set<string>; prefixes: string[] } {
  const literals = new Set<string>();
  const prefixes: string[] = [];
  for (const file of [...sourceFiles(join(REPO, 'src')), ...sourceFiles(join(REPO, 'native'))]) {
    // Comments may name codes that are gone; only code counts.
    const code = readFileSync(file, 'utf8').split('\n').filter((l) => !/^\s*(\/\/|\*|\/\*)/.test(l)).join('\n');
    for (const m of code.matchAll(/['"]([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)['"]/g)) literals.add(m[1]);
    for (const m of code.matchAll(/`([A-Z][A-Z0-9_]*_)\$\{/g)) prefixes.push(m[1]);
  }
  return { literals, prefixes };
}

/** A code as documented (`NET_*`, `HTTP_<status>`, `HTTP_408`, `DAEMON_NOT_FOUND`) that the code can produce. */
function codeExists(doc: string, code: { literals: Set<string>; prefixes: string[] }): boolean {
  const wild = /^([A-Z][A-Z0-9_]*_)(\*|<[a-z]+>)$/.exec(doc);
  if (wild) return code.prefixes.includes(wild[1]) || [...code.literals].some((l) => l.startsWith(wild[1]));
  if (code.literals.has(doc)) return true;
  return code.prefixes.some((p) => doc.startsWith(p) && /^[A-Z0-9_]+$/.test(doc.slice(p.length)));
}

/** A code span that is an error code alone: `DAEMON_NOT_FOUND`, `INTERNAL`, `NET_*`, `HTTP_<status>`. */
const CODE_SPAN = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*(?:_\*|_<[a-z]+>)?$/;

// ---------------------------------------------------------------------------
// JSON examples against answers

/** The first ```json block after the line that starts with `heading`. */
function jsonExample(page: Page, heading: string): unknown {
  const start = page.lines.findIndex((l) => l.startsWith(heading));
  assert.ok(start >= 0, `${page.name} has a section ${heading}`);
  const fence = fences(page).find((f) => f.first > start && f.lang === 'json');
  assert.ok(fence, `${page.name}: ${heading} has a JSON example`);
  return JSON.parse(fence.lines.join('\n')) as unknown;
}

/**
 * Keys of the example `doc` the answer `real` lacks (and, with `both`, keys of
 * the answer the example lacks). Objects keyed by name (`dynamic` paths, such
 * as the counters' daemons) compare their first values only; lists their
 * first items.
 */
function shapeProblems(doc: unknown, real: unknown, path: string, both: boolean, dynamic: RegExp): string[] {
  if (Array.isArray(doc)) return Array.isArray(real) && doc.length > 0 && real.length > 0 ? shapeProblems(doc[0], real[0], `${path}[]`, both, dynamic) : [];
  if (doc === null || typeof doc !== 'object' || real === null || typeof real !== 'object') return [];
  const d = doc as Record<string, unknown>;
  const r = real as Record<string, unknown>;
  if (dynamic.test(path)) {
    const [dv, rv] = [Object.values(d)[0], Object.values(r)[0]];
    return dv !== undefined && rv !== undefined ? shapeProblems(dv, rv, `${path}.*`, both, dynamic) : [];
  }
  const out = Object.keys(d).filter((k) => !(k in r)).map((k) => `${path}.${k}: documented, not in the answer`);
  if (both) out.push(...Object.keys(r).filter((k) => !(k in d)).map((k) => `${path}.${k}: in the answer, not documented`));
  for (const k of Object.keys(d)) if (k in r) out.push(...shapeProblems(d[k], r[k], `${path}.${k}`, both, dynamic));
  return out;
}

// ---------------------------------------------------------------------------

const where = (page: Page, line: number): string => `${page.name}:${line}`;

describe('the docs match the code', () => {
  const all = pages();
  let cli: CliCommand;
  before(async () => { cli = await readCli(); });

  it('every `hostlb` command and option shown exists, and each option table lists options of its command', () => {
    const problems: string[] = [];
    let checked = 0;
    for (const page of all) {
      const check = (text: string, line: number): void => {
        for (const args of commandsIn(text)) {
          checked++;
          const { problem } = walk(cli, args);
          if (problem) problems.push(`${where(page, line)}: ${problem} (in "${text.trim()}")`);
        }
      };
      for (const { line, text } of prose(page)) for (const span of spans(text)) check(span, line);
      for (const fence of fences(page)) {
        // Untagged blocks hold commands or output; `text` blocks only output.
        if (!['', 'sh', 'bash', 'shell', 'console'].includes(fence.lang)) continue;
        // A block with `$ ` prompts shows output too: only the prompted lines are commands.
        const prompted = fence.lines.some((l) => l.startsWith('$ '));
        fence.lines.forEach((l, i) => { if (!prompted || l.startsWith('$ ')) check(l, fence.first + i); });
      }
      for (const table of tables(page)) {
        if (table.header[0] !== 'option') continue;
        // The command whose section this is (`### \`hostlb daemon add ...\``), or the program itself.
        const head = spans(table.heading).find((s) => commandsIn(s).length > 0);
        const node = head ? walk(cli, commandsIn(head)[0]).node : cli;
        for (const row of table.rows) {
          for (const span of spans(row.cells[0])) {
            for (const flag of span.match(/(?<![\w-])--?[A-Za-z][\w-]*/g) ?? []) {
              checked++;
              if (!option(node, flag)) problems.push(`${where(page, row.line)}: hostlb ${[...node.path, flag].join(' ')}: no such option (option table under "${table.heading}")`);
            }
          }
        }
      }
    }
    assert.ok(checked > 150, `only ${checked} commands and options found: is the parser still reading the docs?`);
    assert.deepEqual(problems, []);
  });

  it('every configuration key in a key table, a YAML example or a key path exists in the schema, and full YAML examples validate', () => {
    const problems: string[] = [];
    let checked = 0;
    for (const page of all) {
      for (const table of tables(page)) {
        if (table.header[0] !== 'key') continue;
        // The section's key (`### \`admin\``, `## \`clusters[].ports[]\``), or the top level. Outside
        // configuration.md a `key` column may mean something else (the keys of hostlb top): only a section
        // named after a configuration key counts there.
        const head = spans(table.heading)[0];
        const base = head ? keyPath(head) : [];
        const reference = page.name === 'docs/configuration.md';
        if (!reference && (!head || !resolveKey([], base))) continue;
        if (head && !resolveKey([], base)) problems.push(`${where(table.page, table.rows[0]?.line ?? 0)}: section "${table.heading}" names no key of the schema`);
        for (const row of table.rows) {
          for (const key of spans(row.cells[0])) {
            checked++;
            if (!resolveKey(keyPath(key), base)) problems.push(`${where(page, row.line)}: ${[...base, key].join('.')}: no such key in src/control/config-schema.ts`);
          }
        }
      }
      for (const fence of fences(page)) {
        if (fence.lang !== 'yaml' && fence.lang !== 'yml') continue;
        const value = parseYaml(fence.lines.join('\n')) as unknown;
        // Prometheus's scrape configuration (metrics.md) is not hostlb's.
        if (value && typeof value === 'object' && 'scrape_configs' in value) continue;
        checked++;
        // A whole file, a list of ports, or a fragment of a port (`advisor: {...}`, indented as in a file).
        const isPortList = Array.isArray(value) && value.every((p) => p && typeof p === 'object' && 'port' in p);
        const portSchema = at(PORT_PATH);
        if (portSchema === null || portSchema === 'any') throw new Error('the schema has no clusters[].ports[]');
        const isPortPart = !isPortList && value !== null && typeof value === 'object' && !Array.isArray(value)
          && !('clusters' in value) && Object.keys(value).every((k) => k in def(portSchema).shape!);
        const schema = isPortList ? at(['clusters', '[]', 'ports']) as Schema : isPortPart ? portSchema : configSchema;
        for (const p of unknownKeys(value, schema, '')) problems.push(`${where(page, fence.first)}: YAML example: ${p}`);
        // Whole files and port lists must validate; a part of a port may leave out what a port needs.
        const parsed = isPortPart ? null : schema.safeParse(value);
        if (parsed && !parsed.success) problems.push(`${where(page, fence.first)}: YAML example does not validate: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      }
      // Key paths in code spans: `supervise.cwd`, `admin.token`, `clusters[0].ports[0].daemons[2].weight`.
      const roots = new Set([...Object.keys(def(unwrap(configSchema)).shape!), ...Object.keys(def(at(PORT_PATH) as Schema).shape!)]);
      for (const { line, text } of prose(page)) {
        for (const span of spans(text)) {
          const m = /^([a-z][A-Za-z]*)((?:\[[^\]]*\])*)((?:\.[A-Za-z]+(?:\[[^\]]*\])*)+)(\.\*)?$/.exec(span);
          // File names (`<device>.daemons.json`) are not keys.
          if (!m || !roots.has(m[1]) || /\.(json|ya?ml|[jt]s|sock|log|lock|table|md|node)$/.test(span)) continue;
          checked++;
          if (!resolveKey(keyPath(span))) problems.push(`${where(page, line)}: ${span}: no such key in src/control/config-schema.ts`);
        }
      }
    }
    assert.ok(checked > 100, `only ${checked} keys found: is the parser still reading the docs?`);
    assert.deepEqual(problems, []);
  });

  it('every API endpoint named exists in routes.ts', () => {
    const SAMPLE: Record<string, string> = { cluster: '198.18.100.1', port: '80', protocol: 'tcp', daemon: '198.18.2.1%3A8080', address: '198.18.2.1%3A8080' };
    // `.../daemons/{daemon}/drain` leaves out the start of the path: a cluster's, a port's or a daemon's.
    const STARTS = ['/v1/clusters/{cluster}', '/v1/clusters/{cluster}/ports/{port}/{protocol}', '/v1/clusters/{cluster}/ports/{port}/{protocol}/daemons/{daemon}'];
    const concrete = (path: string): string[] => (path.startsWith('...') ? STARTS.map((s) => s + path.slice(3)) : [path]).map((p) => p
      .replace(/[{<]([a-z]+)[}>]/g, (whole, name: string) => SAMPLE[name] ?? whole)
      .replace(/\?.*$/, '')
      .replace(/[.,:;]+$/, ''));
    /** Whether `method` (any, for '*') answers the path. */
    const exists = (method: string, path: string): boolean => concrete(path).some((p) => {
      try {
        route(method === '*' ? 'GET' : method, p);
        return true;
      } catch (e) {
        return e instanceof ApiError && e.code === 'METHOD_NOT_ALLOWED' && method === '*';
      }
    });
    const problems: string[] = [];
    let checked = 0;
    const PATH = String.raw`(\/v1\/[^\s\`|),'"]*|\/v1\b|\/metrics\b|\.\.\.\/[^\s\`|),'"]+)`;
    for (const page of all) {
      page.lines.forEach((text, i) => {
        for (const m of text.matchAll(new RegExp(String.raw`\b(GET|POST|PUT|DELETE)\`?\s+\`?${PATH}`, 'g'))) {
          checked++;
          if (!exists(m[1], m[2])) problems.push(`${where(page, i + 1)}: ${m[1]} ${m[2]}: no such endpoint in src/control/api/routes.ts`);
        }
        for (const m of text.matchAll(/https?:\/\/(?:hostlb|127\.0\.0\.1:\d+)(\/v1\/[^\s'"`]*|\/metrics)/g)) {
          const method = /-X\s+([A-Z]+)/.exec(text)?.[1] ?? 'GET';
          checked++;
          if (!exists(method, m[1])) problems.push(`${where(page, i + 1)}: ${method} ${m[1]}: no such endpoint in src/control/api/routes.ts`);
        }
      });
      for (const table of tables(page)) {
        const [method, path] = [table.header.indexOf('method'), table.header.indexOf('path')];
        if (method < 0 || path < 0) continue;
        for (const row of table.rows) {
          checked++;
          const p = spans(row.cells[path])[0] ?? row.cells[path];
          if (!exists(row.cells[method], p)) problems.push(`${where(page, row.line)}: ${row.cells[method]} ${p}: no such endpoint in src/control/api/routes.ts`);
        }
      }
      for (const { line, text } of prose(page)) {
        for (const span of spans(text)) {
          if (!/^\/v1\/\S*$/.test(span)) continue;
          checked++;
          if (!exists('*', span)) problems.push(`${where(page, line)}: ${span}: no such endpoint in src/control/api/routes.ts`);
        }
      }
    }
    assert.ok(checked > 50, `only ${checked} endpoints found: is the parser still reading the docs?`);
    assert.deepEqual(problems, []);
  });

  it('every metric name exists in the registry metrics.ts builds; every drop reason in metrics.md is the code\'s, and every one is there', () => {
    const source = { balancer: {}, plane: {} } as unknown as MetricsSource;
    const registry = createMetrics(source);
    const names = new Set<string>();
    for (const m of registry.getMetricsAsArray() as unknown as { name: string; constructor: { name: string } }[]) {
      names.add(m.name);
      // A histogram is also read as its parts.
      if (m.constructor.name === 'Histogram') for (const part of ['_bucket', '_sum', '_count']) names.add(`${m.name}${part}`);
    }
    const problems: string[] = [];
    let checked = 0;
    for (const page of all) {
      page.lines.forEach((text, i) => {
        for (const m of text.matchAll(/hostlb_[a-z0-9_]*(?:\{[^}\s]*\}[a-z0-9_]*)?/g)) {
          const next = text[m.index + m[0].length] ?? '';
          // Not metrics: hostlb_<device> and `inet hostlb_hlb0` (nft tables), hostlb_* (any such table),
          // hostlb_tun.node, the prefix alone.
          if (next === '<' || next === '*' || (next === '.' && /[a-z]/.test(text[m.index + m[0].length + 1] ?? '')) || m[0] === 'hostlb_') continue;
          if (/\binet $/.test(text.slice(0, m.index))) continue;
          const brace = /^([^{]*)\{([^}]*)\}(.*)$/.exec(m[0]);
          const expanded = brace && /^[a-z0-9_]+(,[a-z0-9_]+)+$/.test(brace[2]) ? brace[2].split(',').map((b) => `${brace[1]}${b}${brace[3]}`) : [brace ? brace[1] : m[0]];
          for (const name of expanded) {
            checked++;
            if (!names.has(name)) problems.push(`${where(page, i + 1)}: ${name}: no such metric (src/control/metrics.ts)`);
          }
        }
      });
    }
    const metrics = all.find((p) => p.name === 'docs/metrics.md')!;
    const reasons = tables(metrics).find((t) => t.header[0] === 'reason' && t.heading.includes('Drop reasons'));
    assert.ok(reasons, 'docs/metrics.md has a table of drop reasons');
    const documented = reasons.rows.map((r) => spans(r.cells[0])[0]);
    for (const r of documented) if (!DROP_REASON_NAMES.includes(r)) problems.push(`docs/metrics.md: drop reason ${r} is not in src/dispatch/drop-reason.ts`);
    for (const r of DROP_REASON_NAMES.slice(1)) if (!documented.includes(r)) problems.push(`docs/metrics.md: drop reason ${r} (src/dispatch/drop-reason.ts) is missing from the table`);
    assert.ok(checked > 40, `only ${checked} metric names found: is the parser still reading the docs?`);
    assert.deepEqual(problems, []);
  });

  it('the JSON examples of api.md have the keys the API answers with (the counters example all of them)', async () => {
    const api = all.find((p) => p.name === 'docs/api.md')!;
    const s = await startMemoryHostlb({ traffic: true });
    try {
      const problems: string[] = [];
      // [path, both ways]: the counters list every section and drop reason; the others may show a part.
      for (const [path, both] of [['/v1/status', false], ['/v1/clusters', false], ['/v1/counters', true], ['/v1/connections', false]] as const) {
        const answer = await s.call('GET', path);
        assert.equal(answer.status, 200, path);
        problems.push(...shapeProblems(jsonExample(api, `### \`GET ${path}\``), answer.body, path, both, /^\/v1\/counters\.daemons$|\.ports\[\]\.drops$/));
      }
      assert.deepEqual(problems, []);
    } finally {
      await s.close();
    }
  });

  it('the event types api.md lists are exactly those the health layer emits', () => {
    const api = all.find((p) => p.name === 'docs/api.md')!;
    const start = api.lines.findIndex((l) => l.startsWith('### `GET /v1/events`'));
    assert.ok(start >= 0, 'docs/api.md has a section GET /v1/events');
    const end = api.lines.findIndex((l, i) => i > start && l.startsWith('### '));
    const listed = new Set(api.lines.slice(start, end).flatMap(spans).filter((s) => /^(daemon_[a-z_]+|weight_changed)$/.test(s)));
    assert.deepEqual([...listed].sort(), [...EVENT_TYPES].sort());
  });

  it('every error code in an error table, an HTTP status or a printed error exists in the code', () => {
    const code = codesInCode();
    assert.ok(code.literals.has('DAEMON_NOT_FOUND') && code.prefixes.includes('HTTP_'), 'the code\'s error codes were read');
    const problems: string[] = [];
    let checked = 0;
    const check = (doc: string, page: Page, line: number, how: string): void => {
      checked++;
      if (!codeExists(doc, code)) problems.push(`${where(page, line)}: ${doc} (${how}) is no error code the code produces`);
    };
    for (const page of all) {
      for (const table of tables(page)) {
        const columns = table.header.flatMap((h, i) => (h === 'code' || h === 'codes' ? [i] : []));
        for (const row of table.rows) for (const c of columns) for (const s of spans(row.cells[c] ?? '')) if (CODE_SPAN.test(s)) check(s, page, row.line, `a ${table.header[c]} column`);
      }
      page.lines.forEach((text, i) => {
        // `404 DAEMON_NOT_FOUND`, 409 `NOT_SUPERVISED`, 500 `RESTART_FAILED`
        for (const m of text.matchAll(/\b[1-5]\d\d`? `?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b/g)) check(m[1], page, i + 1, 'after an HTTP status');
        // hostlb: port 80/tcp has no daemon 198.18.9.9:1 (DAEMON_NOT_FOUND)
        const printed = /hostlb: .*\(([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\)`?\s*$/.exec(text);
        if (printed) check(printed[1], page, i + 1, 'in a printed error');
      });
    }
    assert.ok(checked > 100, `only ${checked} error codes found: is the parser still reading the docs?`);
    assert.deepEqual(problems, []);
  });
});
