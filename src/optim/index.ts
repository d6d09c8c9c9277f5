import { describeValue, lookup } from '../errors.js';
import { OptimizerError, type ElementwiseOptimizer, type OptimizerSpec } from './optimizer.js';
import { SGD } from './sgd.js';
import { Momentum, Nesterov } from './momentum.js';
import { Adam, AdamW } from './adam.js';
import { RMSProp } from './rmsprop.js';

export * from './optimizer.js';
export { SGD } from './sgd.js';
export { Momentum, Nesterov } from './momentum.js';
export { Adam, AdamW } from './adam.js';
export { RMSProp } from './rmsprop.js';
export * from './schedules.js';
export * from './clip.js';
export * from './fullbatch/index.js';

/** Element-wise optimizers by name: a new one is one file plus one line here. */
export const optimizers: Record<string, (spec: OptimizerSpec) => ElementwiseOptimizer> = {
  sgd: (s) => new SGD(s),
  momentum: (s) => new Momentum(s),
  nesterov: (s) => new Nesterov(s),
  adam: (s) => new Adam(s),
  adamw: (s) => new AdamW(s),
  rmsprop: (s) => new RMSProp(s),
};

/**
 * Builds an optimizer from its spec, validating the name and every hyperparameter.
 * @example createOptimizer({ type: 'adamw', lr: 1e-3, weightDecay: 0.01 })
 */
export function createOptimizer(spec: OptimizerSpec): ElementwiseOptimizer {
  const type: unknown = (spec as { type?: unknown } | null)?.type;
  const make = lookup(optimizers, type);
  if (!make) throw new OptimizerError(`unknown optimizer ${typeof type === 'string' ? `'${type}'` : describeValue(type, 80)}; known optimizers: ${Object.keys(optimizers).join(', ')}`);
  return make(spec);
}
