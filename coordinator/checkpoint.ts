/**
 * The checkpoint file: everything a deterministic resume needs (the data order and the
 * dropout streams follow from seed, epoch and step), with the state merged by parameter
 * name so that any placement, stage or replica count can resume any other's.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { encodeValue, decodeValue, type StageState } from '../src/wire/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { OptimizerSpec } from '../src/optim/index.js';
import { OptionError } from './options.js';

export interface Checkpoint {
  format: 'chainrule-checkpoint';
  version: 1;
  model: ModelSpec;
  seed: number;
  optimizer: OptimizerSpec;
  epochsDone: number;
  stepCount: number;
  state: StageState;
}

export function writeCheckpoint(path: string, cp: Omit<Checkpoint, 'format' | 'version'>): void {
  // Write then rename: a crash mid-write never leaves a torn checkpoint in place.
  writeFileSync(`${path}.tmp`, encodeValue({ format: 'chainrule-checkpoint', version: 1, ...cp } satisfies Checkpoint));
  renameSync(`${path}.tmp`, path);
}

/** Reads a checkpoint and checks that it belongs to this run's model, seed and optimizer. */
export function readCheckpoint(path: string, expect: { model: ModelSpec; seed: number; optimizer: string }): Checkpoint {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new OptionError(`cannot read checkpoint ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const cp = decodeValue(bytes, { actor: `checkpoint ${path}` }) as Checkpoint;
  if (cp?.format !== 'chainrule-checkpoint' || cp.version !== 1) throw new OptionError(`${path} is not a chainrule checkpoint (version 1)`);
  if (JSON.stringify(cp.model) !== JSON.stringify(expect.model)) throw new OptionError(`${path} was written for another model; use the same --model`);
  if (cp.seed !== expect.seed || cp.optimizer?.type !== expect.optimizer) {
    throw new OptionError(`${path} was written with seed ${cp.seed} and optimizer ${cp.optimizer?.type}; resume with the same (now seed ${expect.seed}, ${expect.optimizer})`);
  }
  return cp;
}
