/** One option table behind the API and the CLI: validation where options enter, generated help, no prototype names. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, createTransport, getSchedule, optionTable, resolveOptions } from '../coordinator/index.js';
import { parseCliOptions, trainUsage, flagOf } from '../coordinator/options.js';
import { availableBackends } from '../src/tensor/select.js';
import { loadMnist, subset } from '../src/data/index.js';

const bin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');
const chainrule = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('the option table', () => {
  it('generates a --help line for every flag, with its choices from the registries', () => {
    const help = trainUsage();
    for (const [key, d] of Object.entries(optionTable)) {
      if ((d as { only?: string }).only === 'api') continue;
      expect(help, key).toContain(flagOf(key));
    }
    expect(help).toMatch(/--placement KIND +where the stage actors run \(local \| threads \| grpc\); default local/);
    expect(help).toMatch(/--lr X +learning rate; default the optimizer's/);
  });

  it('names a bad API option, its field and what is allowed', () => {
    expect(() => resolveOptions({ epochs: 0 })).toThrow(/^options.epochs must be a positive integer, got 0$/);
    expect(() => resolveOptions({ backend: 'cuda' })).toThrow(/options.backend must be one of js, wasm, native, got 'cuda'/);
    expect(() => resolveOptions({ epoch: 3 } as never)).toThrow(/options.epoch is not an option; did you mean epochs\?/);
    expect(() => resolveOptions(JSON.parse('{"__proto__": {"epochs": 0}}'))).toThrow(/options.__proto__ is not an option/);
    expect(() => resolveOptions({ gamma: 0.5 })).toThrow(/options.gamma is only used with options.lrSchedule NAME/);
    expect(() => resolveOptions({ nodes: ['127.0.0.1:7001'] })).toThrow(/options.nodes is only used with options.placement grpc/);
  });

  it('parses flags by their kind and names the flag in errors', () => {
    expect(parseCliOptions(['--epochs', '3', '--partition', '2,3', '--json']).options).toEqual({ epochs: 3, partition: [2, 3] });
    expect(() => parseCliOptions(['--epochs', 'two'])).toThrow(/--epochs must be an integer, got 'two'/);
    expect(() => parseCliOptions(['--replicas', '0'])).toThrow(/--replicas must be a positive integer, got 0/);
  });

  it('--commit-every takes N or auto, and says so when given neither', () => {
    expect(parseCliOptions(['--commit-every', 'auto']).options.commitEvery).toBe('auto');
    expect(parseCliOptions(['--commit-every', '4']).options.commitEvery).toBe(4);
    expect(() => parseCliOptions(['--commit-every', 'often'])).toThrow(/^--commit-every must be an integer or auto, got 'often'$/);
    expect(() => resolveOptions({ commitEvery: -1 })).toThrow(/^options\.commitEvery must be an integer >= 0 or auto, got -1$/);
    expect(() => resolveOptions({ commitEvery: 'never' as never })).toThrow(/^options\.commitEvery must be a non-negative integer or auto, got 'never'$/);
  });

  it('reads a config file, flags overriding it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-config-'));
    const f = join(dir, 'run.json');
    writeFileSync(f, JSON.stringify({ epochs: 2, 'batch-size': 128, lrSchedule: 'cosine', placement: 'threads' }));
    expect(parseCliOptions(['--config', f, '--placement', 'local']).options).toEqual({ epochs: 2, batchSize: 128, lrSchedule: 'cosine', placement: 'local' });
    writeFileSync(f, JSON.stringify({ 'batch-sise': 128 }));
    expect(() => parseCliOptions(['--config', f])).toThrow(/'batch-sise' is not an option/);
    expect(() => parseCliOptions(['--config', join(dir, 'none.json')])).toThrow(/--config .*none\.json: cannot read it as JSON \(ENOENT\)/);
  });

  it('registries refuse prototype names', () => {
    for (const name of ['toString', 'constructor', '__proto__']) {
      expect(() => createTransport(name)).toThrow(/unknown placement/);
      expect(() => getSchedule(name)).toThrow(/unknown schedule/);
      expect(() => resolveOptions({ placement: name })).toThrow(/must be one of local, threads, grpc/);
      expect(() => resolveOptions({ schedule: name })).toThrow(/must be one of gpipe, 1f1b/);
      expect(() => resolveOptions({ model: name })).toThrow(/must be one of mlp, cnn, lstm, vae/);
    }
  });
});

describe('the command line', () => {
  for (const [flag, value, choices] of [['--backend', 'bogus', 'js, wasm, native'], ['--placement', 'nowhere', 'local, threads, grpc'], ['--model', 'toString', 'mlp, cnn, lstm, vae']] as const) {
    it(`${flag} ${value} exits 2 with one line naming the flag and the choices`, () => {
      const r = chainrule('train', flag, value);
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`${flag} must be one of ${choices}`);
    });
  }

  it('--version prints the version', () => {
    const v = chainrule('--version');
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^chainrule \d+\.\d+\.\d+ \(Node \d+/);
  });
});

describe('backends are per Coordinator, never swapped under a running one', () => {
  const m = loadMnist();
  const data = { train: subset(m.train, Array.from({ length: 64 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 32 }, (_, i) => i)) };
  const other = Object.entries(availableBackends()).filter(([n, ok]) => ok === true && n !== 'js').map(([n]) => n)[0];

  it.skipIf(other === undefined)('a second Coordinator with another backend is refused while the first lives, allowed after it closes', async () => {
    const a = new Coordinator({ model: 'mlp', dataset: data, batchSize: 32, epochs: 1, backend: 'js' });
    const before = await a.weightsSha256();
    expect(() => new Coordinator({ model: 'mlp', dataset: data, batchSize: 32, backend: other })).toThrow(/backend '.*' was asked for, but this process already runs on backend 'js'/);
    const same = new Coordinator({ model: 'mlp', dataset: data, batchSize: 32, backend: 'js' });
    await same.close();
    const s = await a.train();
    expect(s.backend).toBe('js');
    expect(before).not.toBe(s.weightsSha256);
    await a.close();
    const b = new Coordinator({ model: 'mlp', dataset: data, batchSize: 32, epochs: 1, backend: other });
    expect((await b.train()).backend).toBe(other);
    await b.close();
  });
});
