/** Seeded initializers. Each layer draws from its own stream, derived from (seed, layer index). */
import type { Rng } from '../tensor/rng.js';
import { describeValue, lookup } from '../errors.js';
import { SpecError } from './spec.js';

export type InitName = 'he' | 'xavier' | 'zeros';

type Initializer = (data: Float32Array, fanIn: number, fanOut: number, rng: Rng) => void;

/** Initializers by name: He (Kaiming) normal, std √(2/fanIn), for ReLU layers; Xavier (Glorot) uniform ±√(6/(fanIn+fanOut)). */
export const initializers: { readonly [K in InitName]: Initializer } = {
  he(data, fanIn, _fanOut, rng) {
    const std = Math.sqrt(2 / fanIn);
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
  },
  xavier(data, fanIn, fanOut, rng) {
    const a = Math.sqrt(6 / (fanIn + fanOut));
    for (let i = 0; i < data.length; i++) data[i] = (rng.float() * 2 - 1) * a;
  },
  zeros(data) {
    data.fill(0);
  },
};

export const initNames = Object.keys(initializers) as readonly InitName[];

/**
 * Fills `data` with the named initializer and returns it.
 * @example initialize(new Float32Array(784 * 256), 'he', 784, 256, rng)
 */
export function initialize(data: Float32Array, kind: InitName, fanIn: number, fanOut: number, rng: Rng): Float32Array {
  const init = lookup<Initializer>(initializers, kind);
  if (init === undefined) throw new SpecError(`unknown initializer ${typeof kind === 'string' ? `'${kind}'` : describeValue(kind, 80)}; known initializers: ${initNames.join(', ')}`);
  init(data, fanIn, fanOut, rng);
  return data;
}
