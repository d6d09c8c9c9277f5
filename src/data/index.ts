export { DataError, type DataErrorCode } from './errors.js';
export {
  type Dataset, type LabeledDataset, type TargetDataset, type Targets, type TargetsOf, type Batch,
  makeDataset, validateDataset, hasTargets, sampleSize, targetSize, targetRows, subset, batchOf,
} from './dataset.js';
export { type MnistSplit, loadMnist, mnistDigitsDir, parseDigitFile, MNIST_PIXELS, MNIST_CLASSES, MNIST_TEST_SIZE, MNIST_SPLIT_SEED } from './mnist.js';
export { type CsvOptions, type CsvSplit, type CsvInputs, loadCsv, parseCsv, readCsvInputs, parseCsvInputs, CSV_SPLIT_STREAM } from './csv.js';
export { type BatcherOptions, type IndexedBatch, Batcher, evalBatches, BATCHER_STREAM } from './batcher.js';
export { type MicroBatch, splitMicroBatches, mergeMicroBatches } from './microbatch.js';
export { checkFinite } from './check.js';
export {
  type TransformKind, type TransformSpec, type NoTransformSpec, type MinMaxSpec, type StandardizeSpec, type FitOptions,
  fitTransform, applyTransform, transformInputs, parseTransformSpec, validateTransformSpec, TRANSFORM_KINDS, DEFAULT_SCALE_FLOOR,
} from './transforms.js';
export { type AugmentOptions, augmentBatch, augmentStream, augmentEpoch, imageGeometry, validateAugmentOptions, AUGMENT_STREAM } from './augment.js';
export { type IdxData, type IdxFile, type IdxSplit, type IdxDirOptions, readIdx, readIdxImages, parseIdx, decodeIdx, MAX_IDX_BYTES, loadIdxDir, idxCandidates } from './idx.js';
