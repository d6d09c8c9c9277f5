// Importing a layer file registers its layers. One line per layer family.
import './dense.js';
import './activations.js';

export * from './layer.js';
export * from './spec.js';
export * from './init.js';
export * from './losses.js';
export * from './sequential.js';
export * from './models.js';
export { Dense } from './dense.js';
export { Activation } from './activations.js';
export * from './models-seq.js';
export * from './models-cnn.js';
export * from './metrics.js';
export * from './finite.js';
export * from './size.js';
