/**
 * Runs a fuzz target over generated inputs and checks the properties every decoder owes us:
 * it returns a valid result or throws a ChainruleError with a code and a message naming where;
 * it finishes within a time bound; it allocates no more than a small multiple of its input
 * (caps come before allocation); and it leaves the built-in prototypes alone.
 */
import fc from 'fast-check';
import { ChainruleError, describeValue } from '../../src/errors.js';
import type { FuzzTarget } from './targets.js';

export interface FuzzBounds {
  /** An input taking longer than this is a hang. */
  hangMs: number;
  /** ArrayBuffer growth allowed per input, on top of `perInputByte` times its size. */
  memorySlackBytes: number;
  perInputByte: number;
}

export const defaultBounds: FuzzBounds = { hangMs: 1000, memorySlackBytes: 64 << 20, perInputByte: 32 };

export interface Failure {
  kind: 'crash' | 'hang';
  /** The input's index in the run: with the seed, enough to generate it again (`inputAt`). */
  index: number;
  reason: string;
  input: string;
}

export interface FuzzStats {
  name: string;
  inputs: number;
  accepted: number;
  crashes: number;
  hangs: number;
  slowestMs: number;
  /** The first few failures, in order. */
  failures: Failure[];
}

/** Inputs are generated in chunks, each from its own seed, so any one can be generated again alone. */
export const CHUNK = 500;
const chunkSeed = (seed: number, chunk: number): number => (seed + chunk * 7919) | 0;

/** The input at `index` of a run with `seed`, for reproducing a failure. */
export function inputAt<T>(target: FuzzTarget<T>, seed: number, index: number): T {
  const chunk = Math.floor(index / CHUNK);
  return fc.sample(target.arbitrary, { seed: chunkSeed(seed, chunk), numRuns: index % CHUNK + 1 })[index % CHUNK]!;
}

/** A short rendering of an input for a failure report: bytes in hex, anything else bounded. */
export function show(input: unknown): string {
  const hex = (b: Uint8Array): string => `${b.length} bytes: ${Buffer.from(b.subarray(0, 48)).toString('hex')}${b.length > 48 ? '…' : ''}`;
  if (input instanceof Uint8Array) return hex(input);
  const bytes = (input as { bytes?: unknown } | null)?.bytes;
  if (bytes instanceof Uint8Array) {
    const rest: Record<string, unknown> = { ...(input as object) };
    delete rest['bytes'];
    return `${describeValue(rest, 100)} ${hex(bytes)}`;
  }
  return describeValue(input, 300);
}

const prototypes = [Object.prototype, Array.prototype, Function.prototype, String.prototype, Number.prototype];
const protoShape = (): string => prototypes.map((p) => Object.getOwnPropertyNames(p).length).join(',');

/** Decodes one input and checks every property; returns the time taken and the failure, if any. */
export function checkOne<T>(target: FuzzTarget<T>, input: T, bounds: FuzzBounds = defaultBounds): { ms: number; accepted: boolean; failure?: { kind: 'crash' | 'hang'; reason: string } } {
  const protoBefore = protoShape();
  const memBefore = process.memoryUsage().arrayBuffers;
  let result: unknown;
  let error: unknown;
  let threw = false;
  const t0 = performance.now();
  try {
    result = target.run(input);
  } catch (e) {
    threw = true;
    error = e;
  }
  const ms = performance.now() - t0;
  const grew = process.memoryUsage().arrayBuffers - memBefore;
  const fail = (kind: 'crash' | 'hang', reason: string) => ({ ms, accepted: !threw, failure: { kind, reason } });

  if (protoShape() !== protoBefore) return fail('crash', 'a built-in prototype gained or lost properties');
  const left = target.after?.();
  if (left) return fail('crash', left);
  if (threw) {
    if (!(error instanceof ChainruleError)) {
      const e = error as Error | undefined;
      return fail('crash', `threw ${e?.constructor?.name ?? typeof error}, not a ChainruleError: ${String(e?.message ?? error).slice(0, 200)}`);
    }
    if (typeof error.code !== 'string' || error.code === '') return fail('crash', `a ChainruleError without a code: ${error.message}`);
    if (!target.where.test(error.message)) return fail('crash', `the message does not say where (${target.where}): ${error.message.slice(0, 200)}`);
  } else {
    const problem = target.validate(result, input);
    if (problem) return fail('crash', `accepted, but ${problem}`);
  }
  const budget = bounds.memorySlackBytes + bounds.perInputByte * target.size(input);
  if (grew > budget) return fail('crash', `allocated ${grew} bytes of ArrayBuffers for a ${target.size(input)}-unit input (budget ${budget})`);
  if (ms > bounds.hangMs) return fail('hang', `took ${ms.toFixed(0)} ms (bound ${bounds.hangMs} ms)`);
  return { ms, accepted: !threw };
}

export interface FuzzRunOptions {
  runs: number;
  seed: number;
  /** First input index (a restarted run resumes after the input that hung). */
  start?: number;
  bounds?: FuzzBounds;
  /** Called before each input with its index (the watchdog's heartbeat). */
  onInput?: (index: number) => void;
  /** Failures kept in detail. */
  keep?: number;
  /** Indices not to run (inputs that already hung or killed a worker). */
  skip?: ReadonlySet<number>;
  /** Called after each chunk with the stats so far and the next index to run. */
  onChunk?: (stats: FuzzStats, next: number) => void;
}

/** Generates `runs` inputs for the target and checks each. */
export function fuzz<T>(target: FuzzTarget<T>, options: FuzzRunOptions): FuzzStats {
  const { runs, seed, start = 0, bounds = defaultBounds, onInput, keep = 5, skip, onChunk } = options;
  const stats: FuzzStats = { name: target.name, inputs: 0, accepted: 0, crashes: 0, hangs: 0, slowestMs: 0, failures: [] };
  for (let chunk = Math.floor(start / CHUNK); chunk * CHUNK < runs; chunk++) {
    const first = chunk * CHUNK;
    const inputs = fc.sample(target.arbitrary, { seed: chunkSeed(seed, chunk), numRuns: Math.min(CHUNK, runs - first) });
    for (let j = Math.max(0, start - first); j < inputs.length; j++) {
      const index = first + j;
      if (skip?.has(index)) continue;
      onInput?.(index);
      const r = checkOne(target, inputs[j]!, bounds);
      stats.inputs++;
      if (r.accepted) stats.accepted++;
      if (r.ms > stats.slowestMs) stats.slowestMs = r.ms;
      if (r.failure) {
        if (r.failure.kind === 'hang') stats.hangs++;
        else stats.crashes++;
        if (stats.failures.length < keep) stats.failures.push({ ...r.failure, index, input: show(inputs[j]) });
      }
    }
    onChunk?.(stats, first + inputs.length);
  }
  return stats;
}
