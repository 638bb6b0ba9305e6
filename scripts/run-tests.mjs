// Runs every compiled test file under dist/test with Node's own test runner.
// Node 20's `--test` takes no globs, so the files are listed here.
// HOSTLB_TEST_FILTER=substring narrows the run (for a developer, never in CI).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

const filter = process.env.HOSTLB_TEST_FILTER ?? '';
const files = walk('dist/test', []).filter((f) => f.includes(filter)).sort();
if (files.length === 0) {
  console.error(`no test files found under dist/test${filter ? ` matching "${filter}"` : ''}`);
  process.exit(1);
}
// Integration tests share the host's network namespaces and devices: run files one at a time.
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
