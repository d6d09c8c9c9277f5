// Importing a family registers its ops. One line per family.
export * from './elementwise.js';
export * from './activation.js';
export * from './reduce.js';
export * from './shape.js';
export * from './matmul.js';
export * from './loss.js';
export * from './sequence.js';
export * from './conv.js';
