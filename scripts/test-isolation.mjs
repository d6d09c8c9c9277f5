#!/usr/bin/env node
/**
 * Proves that the tests do not depend on each other: runs every test file on its own, then
 * single tests on their own (`-t`, anchored to the test's full name), and fails if any of
 * them fails alone, if a pattern does not select exactly that one test, or if two tests of a
 * file share a name.
 *
 *   node scripts/test-isolation.mjs                          # every file alone, and 5 random tests of each file alone
 *   node scripts/test-isolation.mjs --all pipeline,ops,grpc  # ... and every test of these files alone
 *   node scripts/test-isolation.mjs --sample 0 --files ops   # only test/ops.test.ts, file alone
 *   options: --sample N (random tests per file, default 5), --seed S (of the sample, default 1),
 *            --files a,b (only these files), --no-files (skip the whole-file runs)
 *
 * One vitest process at a time (the tests themselves start threads and sockets); a full run of
 * every test alone takes hours on two cores, so the default is a seeded sample.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    all: { type: 'string', default: '' }, files: { type: 'string', default: '' },
    sample: { type: 'string', default: '5' }, seed: { type: 'string', default: '1' }, 'no-files': { type: 'boolean', default: false },
  },
});
const short = (file) => basename(file).replace(/\.test\.ts$/, '');
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const all = new Set(list(args.all));
const only = new Set(list(args.files));
const sample = Number(args.sample);

const root = join(import.meta.dirname, '..');
const vitest = join(root, 'node_modules', '.bin', 'vitest');
const tmp = mkdtempSync(join(tmpdir(), 'chainrule-isolation-'));

/** Runs vitest with the JSON reporter: the per-test statuses, keyed by 'suite > test'. */
function vitestRun(extra) {
  const out = join(tmp, 'r.json');
  rmSync(out, { force: true });
  const r = spawnSync(vitest, ['run', ...extra, '--reporter=json', `--outputFile=${out}`], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26 });
  let statuses = new Map();
  let messages = [];
  try {
    const report = JSON.parse(readFileSync(out, 'utf8'));
    const results = report.testResults.flatMap((f) => f.assertionResults);
    statuses = new Map(results.map((a) => [[...a.ancestorTitles, a.title].join(' > '), a.status]));
    messages = [...report.testResults.map((f) => f.message), ...results.flatMap((a) => a.failureMessages)].filter(Boolean);
  } catch { messages = [`no report: ${r.stderr.slice(-1500)}`]; }
  // The first lines of each failure: enough to see what broke.
  const why = messages.map((m) => m.split('\n').slice(0, 3).join('\n')).join('\n');
  return { code: r.status, statuses, why };
}

/** A -t pattern matching exactly the test whose full name is `name` ('a > b' → 'a b' in vitest). */
const pattern = (name) => `(^| )${name.split(' > ').join(' ').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;

/** A small seeded generator, so a sample can be re-run. */
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

const listed = spawnSync(vitest, ['list', '--json'], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26 });
if (listed.status !== 0) { console.error(listed.stderr); process.exit(1); }
const byFile = new Map();
for (const { name, file } of JSON.parse(listed.stdout)) {
  if (only.size > 0 && !only.has(short(file))) continue;
  if (!byFile.has(file)) byFile.set(file, []);
  byFile.get(file).push(name);
}

const failures = [];
// Two tests of one name cannot be run, or told apart in a report, alone.
for (const [file, names] of byFile) {
  const twice = [...new Set(names.filter((n, i) => names.indexOf(n) !== i))];
  for (const n of twice) failures.push(`test/${basename(file)}: more than one test is named ${JSON.stringify(n)}`);
}
let runs = 0;
const random = rng(Number(args.seed));
for (const [file, names] of byFile) {
  const rel = `test/${basename(file)}`;
  if (!args['no-files']) {
    const r = vitestRun([rel]);
    runs++;
    const bad = [...r.statuses].filter(([, s]) => s === 'failed').map(([n]) => n);
    const ok = r.code === 0 && bad.length === 0;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${rel} alone (${r.statuses.size} tests)`);
    if (!ok) failures.push(`${rel} alone: ${bad.join('; ')}\n${r.why}`);
  }
  let chosen = names;
  if (!all.has(short(file))) {
    const pool = [...names];
    chosen = [];
    while (chosen.length < sample && pool.length > 0) chosen.push(pool.splice(Math.floor(random() * pool.length), 1)[0]);
  }
  for (const name of chosen) {
    const r = vitestRun([rel, '-t', pattern(name)]);
    runs++;
    const ran = [...r.statuses].filter(([, s]) => s !== 'skipped' && s !== 'pending');
    const status = r.statuses.get(name);
    // A test skipped by its own condition (it.skipIf) is fine; anything else must pass, alone.
    const ok = r.code === 0 && (status === 'passed' ? ran.length === 1 : status === 'skipped' && ran.length === 0);
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${rel} -t ${JSON.stringify(name)}${status === 'skipped' ? ' (skipped by its condition)' : ''}`);
    if (!ok) failures.push(`${rel} -t ${JSON.stringify(name)}: ${status ?? 'not selected'}, ${ran.length} ran\n${r.why}`);
  }
}
rmSync(tmp, { recursive: true, force: true });
console.log(`\n${runs} runs, ${failures.length} failed`);
for (const f of failures) console.log(`\n${f}`);
process.exit(failures.length === 0 ? 0 : 1);
