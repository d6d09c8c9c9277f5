export * from './action.js';
export * from './messages.js';
export * from './codec.js';
export * from './safetensors.js';
export * from './trace.js';
export * from './nonfinite.js';
