export * from './objective.js';
export { strongWolfe, cubicMin, lineSearchOptions, type LinePoint, type LineSearchResult } from './linesearch.js';
export { minimizeCG, type CGOptions } from './cg.js';
export { minimizeLBFGS, type LBFGSOptions } from './lbfgs.js';
export { minimizeNewton, minimizeNewtonCG, type NewtonOptions, type NewtonCGOptions } from './newton.js';
