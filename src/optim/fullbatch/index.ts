export * from './objective.js';
export { strongWolfe, cubicMin, lineSearchOptions, type LinePoint, type LineSearchResult } from './linesearch.js';
export { minimizeCG, type CGOptions } from './cg.js';
export { minimizeLBFGS, type LBFGSOptions } from './lbfgs.js';
export { minimizeNewton, minimizeNewtonCG, type NewtonOptions, type NewtonCGOptions } from './newton.js';

import type { MinimizeOptions, MinimizeResult, Objective } from './objective.js';
import { minimizeCG } from './cg.js';
import { minimizeLBFGS } from './lbfgs.js';
import { minimizeNewton, minimizeNewtonCG } from './newton.js';

/** A full-batch method: minimizes an objective from x0. */
export type FullBatchMethod = (obj: Objective, x0: Float64Array, o: MinimizeOptions) => Promise<MinimizeResult>;

/** Methods that need the whole gradient vector (and run from the coordinator), by name. */
export const fullBatchMethods: Readonly<Record<string, FullBatchMethod>> = {
  cg: (obj, x0, o) => minimizeCG(obj, x0, { variant: 'PR+', ...o }),
  lbfgs: (obj, x0, o) => minimizeLBFGS(obj, x0, o),
  // Exact Newton for small models; Hessian-free Newton–CG beyond. Parameters are float32,
  // so the Hessian-vector differences need a coarser step than float64 would.
  newton: (obj, x0, o) => (obj.size <= 2000 ? minimizeNewton(obj, x0, { epsilon: 1e-3, ...o }) : minimizeNewtonCG(obj, x0, { epsilon: 1e-3, cgMaxIter: 20, damping: 0.01, ...o })),
};
