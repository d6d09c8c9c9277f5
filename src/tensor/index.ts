export * from './tensor.js';
export * from './backend.js';
export { Rng, hashSeed, type RngState } from './rng.js';
export * from './functional.js';
