import { OptimizerError, type ElementwiseOptimizer, type OptimizerSpec } from './optimizer.js';
import { SGD } from './sgd.js';

export * from './optimizer.js';
export { SGD } from './sgd.js';

/** Element-wise optimizers by name: a new one is one file plus one line here. */
export const optimizers: Record<string, (spec: OptimizerSpec) => ElementwiseOptimizer> = {
  sgd: (s) => new SGD(s),
};

export function createOptimizer(spec: OptimizerSpec): ElementwiseOptimizer {
  const make = optimizers[spec.type];
  if (!make) throw new OptimizerError(`unknown optimizer '${spec.type}'; known optimizers: ${Object.keys(optimizers).join(', ')}`);
  return make(spec);
}
