export { ACCUMULATED, Tape, activeTape, apply, backward, isGradEnabled, noGrad, zeroGrad, type OpDef, type OpContext } from './tape.js';
export { opRegistry, getOp, defineOp, type CheckCase, type Domain, type RegisteredOp } from './registry.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './gradcheck.js';
export * from './ops/index.js';
export { SharedWeight } from './shared-weight.js';
