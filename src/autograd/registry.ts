/**
 * The op registry. Every op registers here with the cases it is gradient-checked on,
 * so a new op is checked by test/ops.test.ts without anyone remembering to add a test.
 */
import { apply, type OpDef } from './tape.js';
import type { Tensor } from '../tensor/tensor.js';
import { choose } from '../errors.js';

/** Where an input's random test values are drawn from (kinks and poles avoided). */
export type Domain = 'any' | 'positive' | 'awayFromZero';

export interface CheckCase<A = unknown> {
  label: string;
  shapes: number[][];
  /** Attributes, or a function of the inputs' shapes (e.g. random labels). */
  attrs?: A | ((shapes: number[][]) => A);
  domain?: Domain | Domain[];
}

export interface RegisteredOp<A = unknown, S = unknown> {
  def: OpDef<A, S>;
  checks: CheckCase<A>[];
}

export const opRegistry = new Map<string, RegisteredOp<any, any>>();

/** Registers an op and returns a callable that applies it. */
export function defineOp<A, S>(def: OpDef<A, S>, checks: CheckCase<A>[]): (inputs: Tensor[], attrs: A) => Tensor {
  if (opRegistry.has(def.name)) throw new Error(`defineOp: an op named '${def.name}' is already registered`);
  opRegistry.set(def.name, { def, checks });
  return (inputs, attrs) => apply(def, inputs, attrs);
}

/**
 * The registered op of that name; a user error listing the ops for any other name.
 * @example getOp('matmul').def.forward
 */
export function getOp(name: string): RegisteredOp<any, any> {
  return choose(opRegistry, name, 'op name', 'UNKNOWN_OP');
}

/** Shapes every element-wise unary op is checked on: scalar, vector, batched. */
export const unaryShapes = (domain: Domain = 'any'): CheckCase<undefined>[] => [
  { label: 'scalar', shapes: [[]], domain },
  { label: 'vector', shapes: [[5]], domain },
  { label: 'batched', shapes: [[3, 4]], domain },
];

/** Shapes every broadcasting binary op is checked on. */
export const binaryShapes = (domain: Domain | Domain[] = 'any'): CheckCase<undefined>[] => [
  { label: 'scalar', shapes: [[], []], domain },
  { label: 'same', shapes: [[3, 4], [3, 4]], domain },
  { label: 'broadcast row', shapes: [[3, 4], [4]], domain },
  { label: 'broadcast both', shapes: [[3, 1], [1, 4]], domain },
  { label: 'scalar with matrix', shapes: [[], [2, 3]], domain },
  { label: 'batched', shapes: [[2, 3, 4], [3, 4]], domain },
];
