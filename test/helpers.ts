import { expect } from 'vitest';
import { DataError, loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { formatAction, type NamedTensors, type Schedule } from '../src/wire/index.js';
import { ScheduleError } from '../coordinator/schedules/index.js';
import { Coordinator, type CoordinatorOptions, type TrainSummary } from '../coordinator/index.js';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';

/** A Coordinator with these options, trained and closed: its summary. */
export async function trainClosed(o: CoordinatorOptions): Promise<TrainSummary> {
  const c = new Coordinator(o);
  try {
    return await c.train();
  } finally {
    await c.close();
  }
}

/** Runs fn, expects it to throw an instance of `cls`, returns that error. */
function thrown<E extends Error>(fn: () => unknown, cls: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(cls);
    return e as E;
  }
  throw new Error(`expected a ${cls.name}, nothing was thrown`);
}

/** Runs fn, expects a DataError, returns it. */
export const dataError = (fn: () => unknown): DataError => thrown(fn, DataError);

/**
 * The largest relative error ‖a−b‖/‖a‖ over the tensors of two parameter sets, and which
 * tensor has it: two runs "agree to 1e-5" when every tensor does.
 */
export function worstRelativeError(a: NamedTensors, b: NamedTensors): { value: number; name: string } {
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  let worst = { value: 0, name: '' };
  for (const name of Object.keys(a)) {
    const x = a[name]!.data;
    const y = b[name]!.data;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += x[i]! ** 2; }
    const value = Math.sqrt(num / den);
    if (value >= worst.value) worst = { value, name };
  }
  return worst;
}

/** The tests' small classifier: 784-32-10 with ReLU, softmax cross-entropy. */
export const tinySpec: ModelSpec = {
  inputShape: [784],
  layers: [{ type: 'dense', inputs: 784, units: 32, init: 'he' }, { type: 'relu' }, { type: 'dense', inputs: 32, units: 10, init: 'xavier' }],
  loss: 'softmaxCrossEntropy',
};

/** The first `train` training and `test` test digits of the built-in MNIST. */
export function firstDigits(train = 256, test = 64): { train: Dataset; test: Dataset } {
  const m = loadMnist();
  return { train: subset(m.train, Array.from({ length: train }, (_, i) => i)), test: subset(m.test, Array.from({ length: test }, (_, i) => i)) };
}

/** The CLI's entry, run from source through tsx by the tests that start real processes. */
export const chainruleBin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');

export interface Finished { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/**
 * `node --import tsx FILE ...args` in a process of its own, its output read while this process
 * goes on (a child's node processes can be read meanwhile); resolves once it has closed.
 */
export function runTsx(file: string, args: string[] = [], o: { cwd?: string } = {}): Promise<Finished> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', file, ...args], { stdio: 'pipe', cwd: o.cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    p.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

export interface NodeProcess {
  child: ChildProcessWithoutNullStreams;
  address: string;
  exited: Promise<number | null>;
  /** Its stdout (where it listens) and stderr (its log) so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves once its stderr matches `re`. */
  waitFor(re: RegExp): Promise<void>;
}

/**
 * A real `chainrule node ...args` process, once it says where it listens. `wrap` goes before
 * Node (e.g. `ip netns exec NS`). Rejects with its log if it exits first.
 * @example const n = await startNodeProcess(['--port', '0']);
 */
export async function startNodeProcess(args: string[], wrap: string[] = []): Promise<NodeProcess> {
  const argv = [process.execPath, '--import', 'tsx', chainruleBin, 'node', ...args];
  const all = [...wrap, ...argv];
  const child = spawn(all[0]!, all.slice(1), { stdio: 'pipe' });
  let err = '';
  const watchers: { re: RegExp; resolve: () => void }[] = [];
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of [...watchers]) if (w.re.test(err)) { watchers.splice(watchers.indexOf(w), 1); w.resolve(); }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let out = '';
  const address = await new Promise<string>((resolve, reject) => {
    // Once the whole line is in (it may go on with the health port).
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); const hit = /listening on ([^\s,]+)[^\n]*\n/.exec(out); if (hit) resolve(hit[1]!); });
    void exited.then((code) => reject(new Error(`chainrule node exited with ${code}: ${err}`)));
  });
  return {
    child, address, exited, stdout: () => out, stderr: () => err,
    waitFor: (re) => (re.test(err) ? Promise.resolve() : new Promise<void>((resolve) => watchers.push({ re, resolve }))),
  };
}

/** A loopback port nothing listens on (it was free a moment ago). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

/** The lists of a schedule as text, one line per stage or device: `0F0 0F1 0B0 ...`. */
export const scheduleText = (s: Schedule): string[] => s.map((list) => list.map(formatAction).join(' '));

/** Runs fn, expects a ScheduleError, returns it. */
export const scheduleError = (fn: () => unknown): ScheduleError => thrown(fn, ScheduleError);
