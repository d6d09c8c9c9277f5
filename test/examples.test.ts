/**
 * The README's examples, run as a user would from the repository's root (here: a fresh
 * directory holding `examples/`, so that nothing is written into the repository): every
 * `npx chainrule` command on the example files, the console transcript of a refused spec, the
 * model spec, the API script (`node --import tsx examples/api.ts`) and the library snippet.
 * The README's blocks must equal the example files, so what it shows is what runs here.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const bin = join(root, 'coordinator', 'bin.ts');
// tsx from this package, and the repository's tsconfig (which maps 'chainrule' to the sources).
const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const env = { ...process.env, TSX_TSCONFIG_PATH: join(root, 'tsconfig.json') };
const cwd = mkdtempSync(join(tmpdir(), 'chainrule-examples-'));
symlinkSync(join(root, 'examples'), join(cwd, 'examples'));

/** The fenced code blocks of one language, in README order. */
function blocks(lang: string): string[] {
  return [...readme.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm'))].map((m) => m[1]!);
}

/** Runs a README command (`npx chainrule ...` or `node --import tsx FILE ...`) in `cwd`. */
function run(command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const words = command.trim().split(/\s+/);
  expect(command, 'README commands here take no quoting').not.toMatch(/["'\\]/);
  let args: string[];
  if (words[0] === 'npx' && words[1] === 'chainrule') args = ['--import', tsx, bin, ...words.slice(2)];
  else if (words.slice(0, 3).join(' ') === 'node --import tsx') args = ['--import', tsx, ...words.slice(3)];
  else throw new Error(`not a command this test knows how to run: ${command}`);
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { cwd, env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill(), 120_000);
    p.on('error', reject);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** The last epoch line's value after `label` (e.g. 'test mse'). */
function lastMetric(stdout: string, label: string): number {
  const line = stdout.split('\n').filter((l) => l.startsWith('epoch ')).at(-1)!;
  const m = new RegExp(`${label} ([0-9.e+-]+)`).exec(line);
  if (!m) throw new Error(`no '${label}' in ${JSON.stringify(line)}`);
  return Number(m[1]);
}

describe('the README examples', () => {
  it('the example CSV files are what examples/make-data.ts writes', async () => {
    const out = mkdtempSync(join(tmpdir(), 'chainrule-example-data-'));
    const r = await run(`node --import tsx examples/make-data.ts ${out}`);
    expect(r.stderr).toBe('');
    for (const f of ['blobs.csv', 'regression.csv', 'regression-inputs.csv']) {
      expect(readFileSync(join(out, f), 'utf8'), f).toBe(readFileSync(join(root, 'examples', f), 'utf8'));
    }
  });

  it('every npx chainrule command on the example files runs, in order, to the figures it should', async () => {
    const commands = [...new Set(blocks('sh').flatMap((b) => b.split('\n')).map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l.startsWith('npx chainrule') && l.includes('examples/')))];
    expect(commands.length).toBe(4);
    for (const command of commands) {
      const r = await run(command);
      expect(r.stderr, command).toBe('');
      expect(r.code, command).toBe(0);
      const what = command.split(' ')[2];
      if (what === 'train' && command.includes('blobs.csv')) expect(lastMetric(r.stdout, 'test acc')).toBeGreaterThan(90);
      if (what === 'train' && command.includes('--target-columns')) {
        expect(lastMetric(r.stdout, 'test mse')).toBeLessThan(0.05);
        expect(r.stdout).toMatch(/test mse [0-9.]+  mae [0-9.]+/);
      }
      if (what === 'predict') {
        // y = sin(x1) + x2·x3 / 2 at the three rows of regression-inputs.csv.
        const truth = [[0.5, 1, -1], [-1, 0, 2], [1.5, 1.5, 1.5]].map(([a, b, c]) => Math.sin(a!) + 0.5 * b! * c!);
        const got = r.stdout.trim().split('\n').map(Number);
        expect(got.length).toBe(3);
        got.forEach((v, i) => expect(Math.abs(v - truth[i]!)).toBeLessThan(0.3));
      }
      if (what === 'evaluate') expect(r.stdout).toMatch(/^test loss [0-9.]+  test mse [0-9.]+  mae [0-9.]+  \(80 samples\)\n$/);
    }
    expect(existsSync(join(cwd, 'out', 'regression', 'model.safetensors'))).toBe(true);
  });

  it('the model spec shown is examples/mlp.json, and the refused spec prints what the README says, exiting 2', async () => {
    expect(blocks('json')).toContain(readFileSync(join(root, 'examples', 'mlp.json'), 'utf8'));
    const spec = JSON.parse(readFileSync(join(root, 'examples', 'mlp.json'), 'utf8'));
    spec.layers[0].activation = 'relu';
    writeFileSync(join(cwd, 'my-model.json'), JSON.stringify(spec, null, 2));
    const transcripts = blocks('console');
    expect(transcripts.length).toBe(1);
    const [first, ...expected] = transcripts[0]!.trimEnd().split('\n');
    const r = await run(first!.replace(/^\$ /, ''));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual(expected);
  });

  it('the API example is examples/api.ts, and it trains, saves, loads and predicts what the live model does', async () => {
    const script = readFileSync(join(root, 'examples', 'api.ts'), 'utf8');
    expect(blocks('ts')).toContain(script.slice(script.indexOf('*/\n') + 3));
    const dir = join(cwd, 'api-model');
    const r = await run(`node --import tsx examples/api.ts ${dir}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('epoch ')).length).toBe(3);
    expect(Number(/^test mse ([0-9.]+)/.exec(lines.at(-2)!)![1])).toBeLessThan(0.05);
    const out = JSON.parse(lines.at(-1)!) as { dir: string; predictions: number[]; truth: number[]; sameAsLive: boolean };
    expect(out.dir).toBe(dir);
    expect(out.sameAsLive).toBe(true);
    out.predictions.forEach((v, i) => expect(Math.abs(v - out.truth[i]!)).toBeLessThan(0.2));
    expect(existsSync(join(dir, 'model.safetensors')) && existsSync(join(dir, 'model.json'))).toBe(true);
  });

  it("the library snippet runs and prints what its comments say (the mixed placement one needs a node on hostB, so it is not run)", async () => {
    const script = readFileSync(join(root, 'examples', 'api.ts'), 'utf8');
    const snippets = blocks('ts').filter((b) => b !== script.slice(script.indexOf('*/\n') + 3) && !b.includes('hostB'));
    expect(snippets.length).toBe(1);
    writeFileSync(join(cwd, 'snippet.ts'), snippets[0]!);
    const r = await run('node --import tsx snippet.ts');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('[ 2, 4, 6 ]\ntrue\n');
  });
});
