/**
 * IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST, plain or gzipped.
 *
 * Layout (all big-endian): two zero bytes, a type byte (0x08 ubyte, 0x09 sbyte, 0x0B int16,
 * 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one uint32 per
 * dimension, then the values in row-major order.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { constants as zlibConstants, gunzipSync } from 'node:zlib';
import { checkFinite } from './check.js';
import { type LabeledDataset, makeDataset } from './dataset.js';
import { DataError, describe } from './errors.js';

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxFile {
  dims: number[];
  data: IdxData;
}

export interface IdxSplit {
  train: LabeledDataset;
  test: LabeledDataset;
}

export interface IdxDirOptions {
  /**
   * The number of classes; labels must lie in [0, numClasses). Default: the largest label in
   * train or test, plus one.
   */
  numClasses?: number;
  /** Prefix of the datasets' names (default: the directory's name), giving `<name>/train` and `<name>/test`. */
  name?: string;
}

interface IdxType {
  name: string;
  bytes: number;
  read: (view: DataView, at: number) => number;
  make: (n: number) => IdxData;
}

const TYPES: Record<number, IdxType> = {
  0x08: { name: 'ubyte', bytes: 1, read: (v, a) => v.getUint8(a), make: (n) => new Uint8Array(n) },
  0x09: { name: 'sbyte', bytes: 1, read: (v, a) => v.getInt8(a), make: (n) => new Int8Array(n) },
  0x0b: { name: 'int16', bytes: 2, read: (v, a) => v.getInt16(a, false), make: (n) => new Int16Array(n) },
  0x0c: { name: 'int32', bytes: 4, read: (v, a) => v.getInt32(a, false), make: (n) => new Int32Array(n) },
  0x0d: { name: 'float32', bytes: 4, read: (v, a) => v.getFloat32(a, false), make: (n) => new Float32Array(n) },
  0x0e: { name: 'float64', bytes: 8, read: (v, a) => v.getFloat64(a, false), make: (n) => new Float64Array(n) },
};

const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;

/** The largest IDX payload (gunzipped) accepted: EMNIST ByClass's training images are 547 MB. */
export const MAX_IDX_BYTES = 1024 * 1024 * 1024;

/** Compressed bytes inflated first to read the header: at most ~1 MB of output (deflate's ratio is at most ~1032:1). */
const GZIP_PREFIX = 1024;

function readBytes(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataError('FILE_NOT_FOUND', `IDX file not found: ${path}`, 'check the path (relative paths are from the working directory)');
    throw new DataError('FILE_UNREADABLE', `cannot read IDX file ${path}: ${err.message}`);
  }
}

interface IdxHeader {
  type: IdxType;
  dims: number[];
  /** Values, and header bytes then total bytes the header calls for. */
  count: number;
  header: number;
  expected: number;
}

/** Reads and checks the magic number and dimensions; `bytes` may stop after the header. */
function readHeader(bytes: Uint8Array, file: string): IdxHeader {
  if (bytes.length === 0) throw new DataError('EMPTY_FILE', `${file}: the IDX file is empty`);
  if (bytes.length < 4) {
    throw new DataError('BAD_SHAPE', `${file}: truncated IDX header: expected at least 4 bytes, found ${bytes.length}`, 'download the file again');
  }
  const type = TYPES[bytes[2]!];
  if (bytes[0] !== 0 || bytes[1] !== 0 || type === undefined) {
    const found = Array.from(bytes.subarray(0, 4), hex).join(' ');
    throw new DataError('BAD_HEADER',
      `${file}: not an IDX file: the magic number is ${found}, expected 0x00 0x00 then a type byte (0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e) and the number of dimensions`,
      'is it an IDX file (e.g. train-images-idx3-ubyte), and not HTML or a different format?');
  }
  const rank = bytes[3]!;
  if (rank === 0) throw new DataError('BAD_HEADER', `${file}: IDX header gives 0 dimensions; at least 1 is needed`);
  const header = 4 + 4 * rank;
  if (bytes.length < header) {
    throw new DataError('BAD_SHAPE', `${file}: truncated IDX header: ${rank} dimensions need ${header} header bytes, found ${bytes.length}`,
      'download the file again');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let count = 1;
  for (let d = 0; d < rank; d++) {
    const n = view.getUint32(4 + 4 * d, false);
    dims.push(n);
    count *= n;
  }
  return { type, dims, count, header, expected: header + count * type.bytes };
}

/**
 * Decodes IDX bytes, gunzipping them first when they start with the gzip magic 1f 8b.
 * The header is inflated first, so the size it gives is checked against MAX_IDX_BYTES, and
 * inflating stops there, before a gzip bomb can allocate more than the file claims.
 * @example const { dims } = decodeIdx(readFileSync('t10k-labels-idx1-ubyte.gz'), 't10k-labels-idx1-ubyte.gz'); // [10000]
 */
export function decodeIdx(bytes: Uint8Array, file: string): IdxFile {
  if (!(bytes instanceof Uint8Array)) throw new DataError('BAD_OPTION', `decodeIdx: ${file}: bytes must be a Uint8Array, got ${describe(bytes)}`);
  if (!(bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b)) return parseIdx(bytes, file);
  const corrupt = (e: unknown): DataError =>
    new DataError('FILE_UNREADABLE', `${file}: gzip data is corrupt or truncated (${(e as Error).message}); ${bytes.length} compressed bytes`,
      'download the file again');
  let limit = MAX_IDX_BYTES;
  // A short input inflates to at most ~1 MB in one go; a longer one has its header read from a prefix first.
  if (bytes.length > GZIP_PREFIX) {
    let head: Uint8Array;
    try {
      head = gunzipSync(bytes.subarray(0, GZIP_PREFIX), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
    } catch (e) {
      throw corrupt(e);
    }
    // A header longer than the prefix gave (a gzip with a long file name, say) is read after the capped inflate.
    if (head.length >= 4 + 4 * (head[3] ?? 0)) {
      const { dims, type, expected } = readHeader(head, file);
      if (expected > MAX_IDX_BYTES) {
        throw new DataError('BAD_SHAPE', `${file}: dims [${dims.join(', ')}] of ${type.name} need ${expected} bytes, more than the cap of ${MAX_IDX_BYTES}`);
      }
      limit = expected;
    }
  }
  let raw: Uint8Array;
  try {
    raw = gunzipSync(bytes, { maxOutputLength: limit });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DataError('BAD_SHAPE', `${file}: IDX file is corrupt: it inflates to more than the ${limit} bytes ${limit === MAX_IDX_BYTES ? 'accepted' : 'its header gives'}`,
        'download the file again');
    }
    throw corrupt(e);
  }
  return parseIdx(raw, file);
}

/**
 * Parses IDX bytes (already gunzipped); `file` names the source in messages.
 * The result owns its buffer.
 */
export function parseIdx(bytes: Uint8Array, file: string): IdxFile {
  const { type, dims, count, header, expected } = readHeader(bytes, file);
  if (bytes.length !== expected) {
    const what = bytes.length < expected ? 'truncated' : 'corrupt (extra bytes after the data)';
    throw new DataError('BAD_SHAPE',
      `${file}: IDX file is ${what}: dims [${dims.join(', ')}] of ${type.name} need ${expected} bytes (${header} header + ${count} × ${type.bytes}), found ${bytes.length}`,
      'download the file again');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const data = type.make(count);
  if (type.bytes === 1) {
    // Bytes need no swapping: copy them in one go.
    new Uint8Array(data.buffer).set(bytes.subarray(header, expected));
  } else {
    for (let i = 0, at = header; i < count; i++, at += type.bytes) data[i] = type.read(view, at);
  }
  return { dims, data };
}

/**
 * Reads an IDX file, gzipped or not.
 * @example const { dims, data } = readIdx('data/train-images-idx3-ubyte.gz'); // dims [60000, 28, 28], Uint8Array
 */
export function readIdx(path: string): IdxFile {
  return decodeIdx(readBytes(path), path);
}

/** The file names tried, in order, for one of the four MNIST-layout files. */
export function idxCandidates(prefix: 'train' | 't10k', kind: 'images' | 'labels'): string[] {
  const k = kind === 'images' ? 3 : 1;
  const stems = [`${prefix}-${kind}-idx${k}-ubyte`, `${prefix}-${kind}.idx${k}-ubyte`];
  return stems.flatMap((s) => [s, `${s}.gz`]);
}

function findFile(dir: string, entries: Set<string>, prefix: 'train' | 't10k', kind: 'images' | 'labels'): string {
  const tried = idxCandidates(prefix, kind);
  const found = tried.find((name) => entries.has(name));
  if (found === undefined) {
    throw new DataError('FILE_NOT_FOUND', `no ${prefix} ${kind} file in ${dir}: tried ${tried.join(', ')}`,
      'download the four IDX files (e.g. MNIST or Fashion-MNIST) into that directory, keeping their names');
  }
  return join(dir, found);
}

function toInputs(img: IdxFile, file: string): { inputs: Float32Array; n: number; features: number } {
  if (img.dims.length < 2) {
    throw new DataError('BAD_SHAPE', `${file}: images must have at least 2 dimensions (count, then pixels), found dims [${img.dims.join(', ')}]`);
  }
  const n = img.dims[0]!;
  const features = img.dims.slice(1).reduce((a, b) => a * b, 1);
  if (features === 0) throw new DataError('BAD_SHAPE', `${file}: images of dims [${img.dims.join(', ')}] hold no pixels`);
  const inputs = new Float32Array(img.data.length);
  if (img.data instanceof Uint8Array) {
    // NOTE: ubyte pixels are scaled to [0, 1] like the built-in digits; other types are kept as stored.
    for (let i = 0; i < inputs.length; i++) inputs[i] = img.data[i]! / 255;
  } else {
    inputs.set(img.data);
  }
  return { inputs, n, features };
}

/**
 * The images of one IDX file as flat float inputs, scaled as `loadIdxDir` scales them
 * (ubyte pixels to [0, 1], other types kept): the first dimension counts the images.
 * @example const { inputs, n, features } = readIdxImages('t10k-images-idx3-ubyte.gz'); // n 10000, features 784
 */
export function readIdxImages(path: string): { inputs: Float32Array; n: number; features: number; dims: number[] } {
  const img = readIdx(path);
  const { inputs, n, features } = toInputs(img, path);
  for (let i = 0; i < inputs.length; i++) {
    if (!Number.isFinite(inputs[i]!)) {
      throw new DataError('NOT_A_NUMBER', `${path}: value ${inputs[i]} of image ${Math.floor(i / features)} (element ${i % features}) is not finite`);
    }
  }
  return { inputs, n, features, dims: img.dims };
}

function toLabels(lab: IdxFile, file: string): Int32Array {
  if (lab.dims.length !== 1) {
    throw new DataError('BAD_SHAPE', `${file}: labels must have 1 dimension, found dims [${lab.dims.join(', ')}]`);
  }
  const labels = new Int32Array(lab.data.length);
  for (let i = 0; i < labels.length; i++) {
    const v = lab.data[i]!;
    if (!Number.isInteger(v) || v < 0) {
      throw new DataError('BAD_LABEL', `${file}: label ${v} of sample ${i} is not a non-negative integer`);
    }
    labels[i] = v;
  }
  return labels;
}

/**
 * Loads the four MNIST-layout IDX files of `dir` (gzipped or not; `train-images-idx3-ubyte`
 * or `train-images.idx3-ubyte`, and likewise `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
 * `t10k-labels-idx1-ubyte`). Images become inputShape `[rows × cols]` (784 for 28 × 28), ubyte
 * pixels scaled to [0, 1]; numClasses is the largest label plus one unless given.
 * @example const { train, test } = loadIdxDir('data/fashion'); // train.size 60000, inputShape [784]
 */
export function loadIdxDir(dir: string, options: IdxDirOptions = {}): IdxSplit {
  if (options === null || typeof options !== 'object') {
    throw new DataError('BAD_OPTION', `loadIdxDir: options must be an object, got ${describe(options)}`);
  }
  const { numClasses, name = basename(dir) } = options;
  if (numClasses !== undefined && (typeof numClasses !== 'number' || !Number.isSafeInteger(numClasses) || numClasses <= 0)) {
    throw new DataError('BAD_OPTION', `loadIdxDir: options.numClasses must be a positive integer, got ${describe(numClasses)}`);
  }
  if (typeof name !== 'string') throw new DataError('BAD_OPTION', `loadIdxDir: options.name must be a string, got ${describe(name)}`);

  let entries: Set<string>;
  try {
    entries = new Set(readdirSync(dir));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataError('FILE_NOT_FOUND', `IDX directory not found: ${dir}`, 'check the path (relative paths are from the working directory)');
    throw new DataError('FILE_UNREADABLE', `cannot list IDX directory ${dir}: ${err.message}`);
  }
  // Find all four before reading any, so a missing one is reported before a long read.
  const files = {
    trainImages: findFile(dir, entries, 'train', 'images'),
    trainLabels: findFile(dir, entries, 'train', 'labels'),
    testImages: findFile(dir, entries, 't10k', 'images'),
    testLabels: findFile(dir, entries, 't10k', 'labels'),
  };

  const parts = (['train', 'test'] as const).map((split) => {
    const imgFile = split === 'train' ? files.trainImages : files.testImages;
    const labFile = split === 'train' ? files.trainLabels : files.testLabels;
    const { inputs, n, features } = toInputs(readIdx(imgFile), imgFile);
    const labels = toLabels(readIdx(labFile), labFile);
    if (labels.length !== n) {
      throw new DataError('BAD_DATASET', `${split} split of ${dir}: ${imgFile} holds ${n} images but ${labFile} holds ${labels.length} labels`,
        'the two files must come from the same release');
    }
    return { split, imgFile, labFile, inputs, labels, features };
  });

  if (parts[0]!.features !== parts[1]!.features) {
    throw new DataError('BAD_SHAPE',
      `${dir}: train images have ${parts[0]!.features} pixels each (${parts[0]!.imgFile}), test images ${parts[1]!.features} (${parts[1]!.imgFile})`);
  }
  let maxLabel = -1;
  for (const p of parts) for (const l of p.labels) if (l > maxLabel) maxLabel = l;
  const classes = numClasses ?? maxLabel + 1;
  if (classes <= 0) throw new DataError('BAD_DATASET', `${dir}: both splits are empty; there are no labels to count classes from`);
  for (const p of parts) {
    for (let i = 0; i < p.labels.length; i++) {
      if (p.labels[i]! >= classes) {
        throw new DataError('BAD_LABEL', `${p.labFile}: label ${p.labels[i]} of sample ${i} is outside [0, ${classes}) (options.numClasses = ${classes})`,
          'give the right numClasses, or leave it out to use the largest label + 1');
      }
    }
  }

  const [train, test] = parts.map((p) => {
    const ds = makeDataset({ name: `${name}/${p.split}`, inputShape: [p.features], numClasses: classes, inputs: p.inputs, labels: p.labels });
    checkFinite(ds, p.imgFile);
    return ds;
  });
  return { train: train!, test: test! };
}
