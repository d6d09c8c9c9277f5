/** Seeded initializers. Each layer draws from its own stream, derived from (seed, layer index). */
import type { Rng } from '../tensor/rng.js';

export type InitName = 'he' | 'xavier' | 'zeros';
export const initNames: readonly InitName[] = ['he', 'xavier', 'zeros'];

/** He (Kaiming) normal, std √(2/fanIn), for ReLU layers; Xavier (Glorot) uniform ±√(6/(fanIn+fanOut)). */
export function initialize(data: Float32Array, kind: InitName, fanIn: number, fanOut: number, rng: Rng): Float32Array {
  if (kind === 'he') {
    const std = Math.sqrt(2 / fanIn);
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
  } else if (kind === 'xavier') {
    const a = Math.sqrt(6 / (fanIn + fanOut));
    for (let i = 0; i < data.length; i++) data[i] = (rng.float() * 2 - 1) * a;
  } else {
    data.fill(0);
  }
  return data;
}
