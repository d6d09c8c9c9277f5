/**
 * Trained models that outlive the run: a directory holding
 *
 *   model.safetensors  the weights (parameters and buffers, by name: `0.weight`, `2.runningMean`),
 *                      with the spec, the input transform and the training metadata as JSON
 *                      strings in its `__metadata__` (`format: chainrule-model`, `version: 1`);
 *                      it alone is enough to load the model
 *   model.json         the same spec, transform and metadata, for people and tools to read
 *
 * Both are written to temporary files, fsynced and renamed into place, so a crash leaves the
 * old model or the new one, never a torn file. Loading checks everything against the spec and
 * names the file and what is wrong.
 */
import { fsyncDir, writeDurable } from './durable.js';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChainruleError } from '../src/errors.js';
import { Tensor, fmtShape, sameShape, sizeOf } from '../src/tensor/tensor.js';
import { noGrad } from '../src/autograd/index.js';
import { MetricSums, Sequential, getLoss, taskOf, validateModelSpec, type Metrics, type ModelSpec } from '../src/nn/index.js';
import {
  DataError, evalBatches, hasTargets, readCsvInputs, readIdxImages, transformInputs, validateTransformSpec,
  type Dataset, type TransformSpec,
} from '../src/data/index.js';
import { decodeSafetensors, encodeSafetensors, type StageState, type StoredTensor } from '../src/wire/index.js';
import { OptionError } from './options.js';

export const MODEL_FORMAT = 'chainrule-model';
export const MODEL_VERSION = 1;
export const WEIGHTS_FILE = 'model.safetensors';
export const SPEC_FILE = 'model.json';

/** A saved model that cannot be read or does not fit its spec; the message names the file. */
export class SavedModelError extends ChainruleError {
  constructor(code: 'MODEL_NOT_FOUND' | 'BAD_MODEL' | 'BAD_SPEC' | 'MODEL_MISMATCH' | 'BAD_INPUT' | 'NOT_A_CLASSIFIER' | 'WRITE_FAILED', message: string, hint?: string) {
    super(code, message, { hint });
  }
}

/** What `saveModel` writes. */
export interface ModelToSave {
  spec: ModelSpec;
  /** Every parameter of the model, by name (`0.weight`), as `Sequential.parameters()` names them. */
  params: Record<string, Tensor>;
  /**
   * Every buffer (non-trainable state such as BatchNorm's running statistics), by name
   * (`2.runningMean`); required when the model has any, since eval mode uses them.
   */
  buffers?: Record<string, Tensor>;
  /** The input transform fitted on the training split; `predict` applies it first. */
  transform?: TransformSpec;
  /** Anything JSON-serializable about the training (epochs, seed, optimizer, accuracy...). */
  metadata?: Record<string, unknown>;
}

let version: string | undefined;

/** chainrule's version, from the package.json above this file (in the sources and in dist/). */
export function chainruleVersion(): string {
  if (version !== undefined) return version;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'chainrule' && typeof pkg.version === 'string') return (version = pkg.version);
    } catch {
      // not here: look one level up
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return (version = 'unknown');
}

interface Expected { shape: readonly number[]; kind: 'parameter' | 'buffer' }

/** The tensors a model built from the spec has, by name, parameters first. */
function expectedTensors(model: Sequential): Map<string, Expected> {
  const out = new Map<string, Expected>();
  for (const [name, p] of model.parameters()) out.set(name, { shape: p.shape, kind: 'parameter' });
  for (const [i, layer] of model.layers.entries()) {
    for (const [name, b] of layer.buffers) out.set(`${model.offset + i}.${name}`, { shape: b.shape, kind: 'buffer' });
  }
  return out;
}

const list = (names: string[], max = 6): string => (names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`);

/**
 * Checks that `given` holds exactly the model's tensors, each a float tensor of the right shape.
 * `where` starts the message; `source` says where the tensors came from ('the file', 'params').
 */
function checkTensors(expected: Map<string, Expected>, given: Record<string, StoredTensor>, where: string, source: string, hint?: string): void {
  for (const [name, e] of expected) {
    const t = Object.prototype.hasOwnProperty.call(given, name) ? given[name] : undefined;
    if (t === undefined) {
      const missing = [...expected.keys()].filter((n) => !Object.prototype.hasOwnProperty.call(given, n));
      throw new SavedModelError('MODEL_MISMATCH', `${where}: ${e.kind} '${name}' ${fmtShape(e.shape)} of the spec's model is missing from ${source} (missing: ${list(missing)})`, hint);
    }
    if (!(t instanceof Tensor)) throw new SavedModelError('MODEL_MISMATCH', `${where}: ${e.kind} '${name}' in ${source} is ${t?.dtype === 'int32' ? 'I32' : 'not a tensor'}; it must be F32 or F64`, hint);
    if (!sameShape(t.shape, e.shape)) {
      throw new SavedModelError('MODEL_MISMATCH', `${where}: ${e.kind} '${name}' is ${fmtShape(t.shape)} in ${source}, but the spec's model has ${fmtShape(e.shape)}`, hint);
    }
  }
  const extra = Object.keys(given).filter((n) => !expected.has(n));
  if (extra.length > 0) {
    throw new SavedModelError('MODEL_MISMATCH', `${where}: ${source} holds ${extra.length === 1 ? 'a tensor' : 'tensors'} the spec's model does not have: ${list(extra)} (the model has ${list([...expected.keys()])})`, hint);
  }
}

function checkTransform(transform: unknown, spec: ModelSpec, where: string, code: 'BAD_INPUT' | 'BAD_MODEL'): TransformSpec {
  try {
    validateTransformSpec(transform);
  } catch (e) {
    throw new SavedModelError(code, `${where}: ${(e as Error).message}`);
  }
  const features = sizeOf(spec.inputShape);
  if (transform.kind !== 'none' && transform.features !== features) {
    throw new SavedModelError('MODEL_MISMATCH', `${where}: the transform was fitted on samples of ${transform.features} features, but the model takes ${features} (input shape ${fmtShape(spec.inputShape)})`);
  }
  return transform;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/** Builds the spec's model, naming `where` when it does not build. */
function build(spec: unknown, where: string, code: 'BAD_SPEC' | 'BAD_MODEL'): { spec: ModelSpec; model: Sequential } {
  try {
    const s = validateModelSpec(spec, `${where}: spec`);
    return { spec: s, model: Sequential.fromSpec(s, 0, 0, s.layers.length) };
  } catch (e) {
    if (e instanceof SavedModelError) throw e;
    const msg = (e as Error).message;
    throw new SavedModelError(code, msg.startsWith(where) ? msg : `${where}: the spec does not build a model: ${msg}`);
  }
}

/** Writes `bytes` to a temporary file beside `path`, fsynced; returns the temporary's path. */
function writeTemp(path: string, bytes: Uint8Array): string {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  writeDurable(tmp, bytes);
  return tmp;
}


/**
 * Saves a trained model to `dir` (created if needed): `model.safetensors` and `model.json`.
 * Everything is checked against the spec first, so nothing unloadable is ever written.
 * @example
 * saveModel('out/mnist-mlp', { spec, params: await coordinator.parameters(), transform, metadata: { epochs: 10 } });
 */
export function saveModel(dir: string, model: ModelToSave): void {
  const where = `saveModel(${JSON.stringify(dir)})`;
  if (typeof dir !== 'string' || dir.length === 0) throw new SavedModelError('BAD_INPUT', `saveModel: dir must be a non-empty path, got ${JSON.stringify(dir)}`);
  if (!isPlainObject(model)) throw new SavedModelError('BAD_INPUT', `${where}: model must be an object with spec and params`);
  for (const key of Object.keys(model)) {
    if (!['spec', 'params', 'buffers', 'transform', 'metadata'].includes(key)) {
      throw new SavedModelError('BAD_INPUT', `${where}: unknown field ${JSON.stringify(key)}`, 'the fields are spec, params, buffers, transform and metadata');
    }
  }
  const { spec, model: built } = build(model.spec, where, 'BAD_SPEC');
  const expected = expectedTensors(built);
  const buffers = [...expected].filter(([, e]) => e.kind === 'buffer').map(([n]) => n);
  for (const field of ['params', 'buffers'] as const) {
    const v = model[field];
    if (v !== undefined && !isPlainObject(v)) throw new SavedModelError('BAD_INPUT', `${where}: model.${field} must be an object of name → Tensor`);
  }
  if (model.params === undefined) throw new SavedModelError('BAD_INPUT', `${where}: model.params is missing`);
  const tensors: Record<string, Tensor> = { ...model.params };
  for (const [name, t] of Object.entries(model.buffers ?? {})) {
    if (Object.prototype.hasOwnProperty.call(tensors, name)) throw new SavedModelError('BAD_INPUT', `${where}: '${name}' is in both model.params and model.buffers`);
    tensors[name] = t;
  }
  const hint = buffers.length > 0 && model.buffers === undefined
    ? `the model has buffers (${list(buffers)}): pass them as model.buffers (a stage's getState() holds them)`
    : undefined;
  checkTensors(expected, tensors, where, model.buffers === undefined ? 'model.params' : 'model.params and model.buffers', hint);
  const transform = model.transform === undefined ? undefined : checkTransform(model.transform, spec, `${where}: model.transform`, 'BAD_INPUT');
  let metadataJson: string | undefined;
  if (model.metadata !== undefined) {
    if (!isPlainObject(model.metadata)) throw new SavedModelError('BAD_INPUT', `${where}: model.metadata must be a plain object`);
    try {
      metadataJson = JSON.stringify(model.metadata);
    } catch (e) {
      throw new SavedModelError('BAD_INPUT', `${where}: model.metadata is not JSON-serializable (${(e as Error).message})`);
    }
  }

  const version = chainruleVersion();
  const meta: Record<string, string> = { format: MODEL_FORMAT, version: String(MODEL_VERSION), chainrule: version, spec: JSON.stringify(spec) };
  if (transform !== undefined) meta.transform = JSON.stringify(transform);
  if (metadataJson !== undefined) meta.metadata = metadataJson;
  const weights = encodeSafetensors(tensors, meta);
  const readable = {
    format: MODEL_FORMAT,
    version: MODEL_VERSION,
    chainrule: version,
    weights: WEIGHTS_FILE,
    spec,
    ...(transform === undefined ? {} : { transform }),
    ...(metadataJson === undefined ? {} : { metadata: JSON.parse(metadataJson) as unknown }),
    tensors: Object.fromEntries([...expected].map(([name, e]) => [name, { kind: e.kind, dtype: tensors[name]!.dtype === 'float64' ? 'F64' : 'F32', shape: e.shape }])),
  };

  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new SavedModelError('WRITE_FAILED', `${where}: cannot create the directory: ${(e as Error).message}`);
  }
  const temps: string[] = [];
  try {
    const wTmp = writeTemp(join(dir, WEIGHTS_FILE), weights);
    temps.push(wTmp);
    const sTmp = writeTemp(join(dir, SPEC_FILE), new TextEncoder().encode(`${JSON.stringify(readable, null, 2)}\n`));
    temps.push(sTmp);
    // The weights carry everything; model.json is renamed second, and loading checks the two agree.
    renameSync(wTmp, join(dir, WEIGHTS_FILE));
    renameSync(sTmp, join(dir, SPEC_FILE));
    temps.length = 0;
    fsyncDir(dir);
  } catch (e) {
    for (const t of temps) {
      try { unlinkSync(t); } catch { /* already gone */ }
    }
    throw new SavedModelError('WRITE_FAILED', `${where}: cannot write the model: ${(e as Error).message}`);
  }
}

/** JSON with sorted keys: two values are equal iff their canonical texts are. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function parseMetaJson(meta: Record<string, string>, key: string, file: string): unknown {
  try {
    return JSON.parse(meta[key]!);
  } catch (e) {
    throw new SavedModelError('BAD_MODEL', `${file}: __metadata__ ${JSON.stringify(key)} is not valid JSON (${(e as Error).message})`, 'the file is corrupt: save the model again');
  }
}

/**
 * The state a run starts from with `init` (fine-tuning): the saved model's weights and
 * buffers, no optimizer slots; a model of another spec than the run's is refused.
 * @example await group.setState(initialState('models/mlp', spec))
 */
export function initialState(dir: string, spec: ModelSpec): StageState {
  const saved = loadModel(dir);
  if (JSON.stringify(saved.spec) !== JSON.stringify(spec)) {
    throw new OptionError(`options.init: the model saved in ${dir} has another spec than this run's model`, 'train the same --model, or save the model you want to start from');
  }
  return { params: saved.parameters(), buffers: saved.buffers(), optimizer: null, lastStep: -1 };
}

/**
 * Loads a model saved by `saveModel`. Weights stored as F64 are rounded into the model's
 * float32 parameters; I32 weights are refused.
 * @example
 * const m = loadModel('out/mnist-mlp');
 * const classes = m.predictClasses(readPredictInput('digits.csv', m.spec.inputShape));
 */
export function loadModel(dir: string): SavedModel {
  if (typeof dir !== 'string' || dir.length === 0) throw new SavedModelError('BAD_INPUT', `loadModel: dir must be a non-empty path, got ${JSON.stringify(dir)}`);
  const saveHint = 'give the directory a model was saved to (chainrule train --save DIR)';
  try {
    if (!statSync(dir).isDirectory()) {
      throw new SavedModelError('MODEL_NOT_FOUND', `${dir} is not a directory`, `pass the directory that holds ${WEIGHTS_FILE}, not a file`);
    }
  } catch (e) {
    if (e instanceof SavedModelError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new SavedModelError('MODEL_NOT_FOUND', code === 'ENOENT' ? `model directory not found: ${dir}` : `cannot read model directory ${dir}: ${(e as Error).message}`, saveHint);
  }
  const file = join(dir, WEIGHTS_FILE);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SavedModelError('MODEL_NOT_FOUND', code === 'ENOENT' ? `${dir} holds no ${WEIGHTS_FILE}` : `cannot read ${file}: ${(e as Error).message}`, saveHint);
  }
  // A malformed file throws a SafetensorsError naming the file, the tensor and the field.
  const decoded = decodeSafetensors(bytes, file);
  const { tensors, metadata: meta } = decoded;
  if (meta.format !== MODEL_FORMAT) {
    throw new SavedModelError('BAD_MODEL',
      `${file} is a safetensors file but not a chainrule model (__metadata__ format is ${meta.format === undefined ? 'missing' : JSON.stringify(meta.format)}, expected ${JSON.stringify(MODEL_FORMAT)})`,
      'it was written by another tool; chainrule loads the models it saved itself');
  }
  if (meta.version !== String(MODEL_VERSION)) {
    throw new SavedModelError('BAD_MODEL', `${file}: model format version ${JSON.stringify(meta.version)} is not supported; this chainrule (${chainruleVersion()}) reads version ${MODEL_VERSION}`,
      meta.chainrule ? `it was written by chainrule ${meta.chainrule}: load it with that version` : undefined);
  }
  if (meta.spec === undefined) throw new SavedModelError('BAD_MODEL', `${file}: __metadata__ has no "spec"`, 'the file is corrupt: save the model again');
  const { spec, model } = build(parseMetaJson(meta, 'spec', file), file, 'BAD_MODEL');
  const transform = meta.transform === undefined ? undefined : checkTransform(parseMetaJson(meta, 'transform', file), spec, `${file}: transform`, 'BAD_MODEL');
  let metadata: Record<string, unknown> = {};
  if (meta.metadata !== undefined) {
    const m = parseMetaJson(meta, 'metadata', file);
    if (!isPlainObject(m)) throw new SavedModelError('BAD_MODEL', `${file}: __metadata__ "metadata" must be a JSON object`);
    metadata = m;
  }
  const expected = expectedTensors(model);
  checkTensors(expected, tensors, file, 'the file');
  const own = new Map<string, Tensor>(model.parameters());
  for (const [i, layer] of model.layers.entries()) for (const [name, b] of layer.buffers) own.set(`${model.offset + i}.${name}`, b);
  for (const [name, t] of own) t.data.set((tensors[name] as Tensor).data);

  // model.json is for reading; if it is there it must tell the same story as the weights.
  const readable = join(dir, SPEC_FILE);
  let text: string | undefined;
  try {
    text = readFileSync(readable, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new SavedModelError('BAD_MODEL', `cannot read ${readable}: ${(e as Error).message}`);
  }
  if (text !== undefined) {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new SavedModelError('BAD_MODEL', `${readable} is not valid JSON (${(e as Error).message})`, `delete it (${WEIGHTS_FILE} alone holds the model) or save the model again`);
    }
    const r = isPlainObject(j) ? j : {};
    if (canonical(r.spec) !== canonical(spec) || canonical(r.transform ?? null) !== canonical(transform ?? null)) {
      throw new SavedModelError('MODEL_MISMATCH', `${readable} and ${file} disagree on the ${canonical(r.spec) !== canonical(spec) ? 'spec' : 'transform'}: one of them was replaced or edited`,
        `${WEIGHTS_FILE} is the model: delete ${SPEC_FILE} or save the model again`);
    }
  }
  return new SavedModel(dir, spec, model, transform, metadata, meta.chainrule ?? 'unknown');
}

/** Options of `predict` and `evaluate`. */
export interface PredictOptions {
  /** Rows per forward pass (default 256): bounds the memory, not the result. */
  batchSize?: number;
}

const isClassifier = (spec: ModelSpec): boolean => taskOf(spec) === 'classification';

/** A loaded model, ready to predict. Made by `loadModel`. */
export class SavedModel {
  /** @internal use loadModel */
  constructor(
    readonly dir: string,
    readonly spec: ModelSpec,
    /** The whole model, built from the spec with the saved weights. */
    readonly model: Sequential,
    /** The saved input transform; `predict` applies it first. */
    readonly transform: TransformSpec | undefined,
    /** The training metadata given to `saveModel`. */
    readonly metadata: Record<string, unknown>,
    /** The chainrule version that saved it. */
    readonly savedBy: string,
  ) {}

  get inputShape(): number[] { return [...this.spec.inputShape]; }
  get outputShape(): number[] { return [...this.model.outputShape]; }
  get isClassifier(): boolean { return isClassifier(this.spec); }

  /** Copies of the parameters, by name (`0.weight`), in the model's order. */
  parameters(): Record<string, Tensor> {
    return Object.fromEntries(this.model.parameters().map(([name, p]) => [name, p.clone()]));
  }

  /** Copies of the buffers (e.g. BatchNorm's running statistics), by name. */
  buffers(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [i, layer] of this.model.layers.entries()) for (const [name, b] of layer.buffers) out[`${i}.${name}`] = b.clone();
    return out;
  }

  /** `x` checked and viewed as [n, ...inputShape]; [n, features] is accepted too. */
  private batchOf(x: Tensor, where: string): Tensor {
    if (!(x instanceof Tensor)) throw new SavedModelError('BAD_INPUT', `${where}: x must be a Tensor, got ${typeof x}`);
    const want = this.spec.inputShape;
    const features = sizeOf(want);
    const n = x.shape[0];
    const ok = n !== undefined && (sameShape(x.shape.slice(1), want) || (x.rank === 2 && x.shape[1] === features));
    if (!ok) {
      throw new SavedModelError('BAD_INPUT', `${where}: x has shape ${fmtShape(x.shape)}, but the model takes [batch, ${want.join(', ')}]${want.length > 1 ? ` or [batch, ${features}]` : ''}`);
    }
    for (let i = 0; i < x.size; i++) {
      if (!Number.isFinite(x.data[i]!)) throw new SavedModelError('BAD_INPUT', `${where}: value ${x.data[i]} of sample ${Math.floor(i / features)} (feature ${i % features}) is not finite`);
    }
    return x;
  }

  /** Forward in batches; `transformed` says the saved transform was already applied to x. */
  private forward(x: Tensor, options: PredictOptions, aux: Tensor[] | undefined, where: string, transformed = false): Tensor {
    const { batchSize = 256 } = options ?? {};
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new SavedModelError('BAD_INPUT', `${where}: options.batchSize must be a positive integer, got ${JSON.stringify(batchSize)}`);
    const want = this.spec.inputShape;
    const features = sizeOf(want);
    const n = x.shape[0]!;
    const outShape = this.model.outputShape;
    const outPer = sizeOf(outShape);
    const dtype = this.model.parameters()[0]?.[1].dtype ?? 'float32';
    const out = dtype === 'float64' ? new Float64Array(n * outPer) : new Float32Array(n * outPer);
    for (let start = 0; start < n; start += batchSize) {
      const rows = Math.min(batchSize, n - start);
      let data: Float32Array | Float64Array = x.data.subarray(start * features, (start + rows) * features);
      if (this.transform && !transformed) data = transformInputs(this.transform, data instanceof Float32Array ? data : Float32Array.from(data), want);
      let h = new Tensor(data, [rows, ...want]);
      if (h.dtype !== dtype) h = h.to(dtype);
      const y = noGrad(() => this.model.forward(h, { training: false, seed: 0, step: 0, microBatch: 0, auxLosses: aux ?? [] }));
      out.set(y.data, start * outPer);
    }
    return new Tensor(out, [n, ...outShape]);
  }

  /**
   * The whole model's forward in eval mode, without a tape, after the saved input transform.
   * @example const logits = m.predict(x); // x [n, 784] → [n, 10]
   */
  predict(x: Tensor, options: PredictOptions = {}): Tensor {
    return this.forward(this.batchOf(x, 'predict'), options, undefined, 'predict');
  }

  /** The arg-max class of each row (the first on ties), for classifiers. */
  predictClasses(x: Tensor, options: PredictOptions = {}): Int32Array {
    this.requireClassifier('predictClasses');
    const y = this.predict(x, options);
    const [n, c] = [y.shape[0]!, y.shape[1]!];
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let j = 1; j < c; j++) if (y.data[i * c + j]! > y.data[i * c + best]!) best = j;
      out[i] = best;
    }
    return out;
  }

  private requireClassifier(where: string): void {
    if (!this.isClassifier || this.model.outputShape.length !== 1) {
      throw new SavedModelError('NOT_A_CLASSIFIER', `${where}: the model in ${this.dir} is not a classifier (loss ${this.spec.loss ?? 'softmaxCrossEntropy'}${this.spec.autoencoder ? ', autoencoder' : ''}, output ${fmtShape(this.model.outputShape)})`,
        'use predict for its raw outputs');
    }
  }

  /**
   * Mean loss (with auxiliary terms such as a VAE's KL) and the metrics that fit the model
   * (accuracy for classifiers, MSE/MAE for regression, per-label accuracy for multi-label)
   * over a dataset of raw inputs (the saved transform is applied), computed as the Coordinator does.
   * @example const { loss, accuracy } = loadModel('out/m').evaluate(loadMnist().test);
   */
  evaluate(ds: Dataset, options: PredictOptions = {}): { loss: number; samples: number } & Metrics {
    const features = sizeOf(this.spec.inputShape);
    if (sizeOf(ds.inputShape) !== features) {
      throw new SavedModelError('BAD_INPUT', `evaluate: dataset ${JSON.stringify(ds.name)} has samples of shape ${fmtShape(ds.inputShape)}, but the model takes ${fmtShape(this.spec.inputShape)}`);
    }
    const task = taskOf(this.spec);
    const out = this.model.outputShape;
    const where = `evaluate: dataset ${JSON.stringify(ds.name)}`;
    if (task === 'classification') {
      if (hasTargets(ds)) throw new SavedModelError('BAD_INPUT', `${where} has float targets of shape ${fmtShape(ds.targetShape)}, but the model is a classifier`, 'evaluate it on class labels (--label-column)');
      if (ds.numClasses > out[0]!) throw new SavedModelError('BAD_INPUT', `${where} has ${ds.numClasses} classes, but the model outputs ${out[0]}`);
    } else if (task !== 'autoencoder') {
      if (!hasTargets(ds)) throw new SavedModelError('BAD_INPUT', `${where} has integer class labels, but the model (loss ${this.spec.loss}) compares its output with float targets`, 'load float targets (--target-columns)');
      if (!sameShape(ds.targetShape, out)) throw new SavedModelError('BAD_INPUT', `${where} has targets of shape ${fmtShape(ds.targetShape)}, but the model outputs ${fmtShape(out)}`);
    }
    const lossFn = getLoss(this.spec.loss ?? 'softmaxCrossEntropy');
    const metrics = new MetricSums(this.spec);
    const batchSize = options.batchSize ?? 256;
    let total = 0;
    for (const { x, y } of evalBatches(ds, batchSize)) {
      const aux: Tensor[] = [];
      const n = x.shape[0]!;
      const xt = this.transform ? new Tensor(transformInputs(this.transform, x.data as Float32Array, this.spec.inputShape), [n, ...this.spec.inputShape]) : x.view([n, ...this.spec.inputShape]);
      const h = this.forward(this.batchOf(xt, 'evaluate'), { batchSize: n }, aux, 'evaluate', true);
      for (const a of aux) total += a.item();
      const t = this.spec.autoencoder ? xt : y;
      total += noGrad(() => lossFn.compute(h, t, 'sum')).item();
      metrics.add(h, t);
    }
    return { loss: total / ds.size, ...metrics.result(), samples: ds.size };
  }
}

/** The first bytes of a file (fewer if it is shorter). */
function head(path: string, n: number): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataError('FILE_NOT_FOUND', `input file not found: ${path}`, 'check the path (relative paths are from the working directory)');
    throw new DataError('FILE_UNREADABLE', `cannot read input file ${path}: ${err.message}`);
  }
  try {
    const buf = new Uint8Array(n);
    const got = readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

type InputFormat = 'csv' | 'json' | 'idx';

function formatOf(path: string): InputFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.csv' || ext === '.txt') return 'csv';
  const b = head(path, 16);
  if (b.length >= 2 && ((b[0] === 0x1f && b[1] === 0x8b) || (b[0] === 0 && b[1] === 0))) return 'idx';
  const first = new TextDecoder().decode(b).trimStart()[0];
  return first === '[' || first === '{' ? 'json' : 'csv';
}

function jsonRows(path: string, features: number): { inputs: Float32Array; n: number; width: number } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataError('FILE_NOT_FOUND', `input file not found: ${path}`, 'check the path (relative paths are from the working directory)');
    throw new DataError('FILE_UNREADABLE', `cannot read input file ${path}: ${err.message}`);
  }
  const form = 'an array of samples, each an array of numbers ([[0.1, 0.2], ...]), or {"inputs": [[...], ...]}';
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DataError('BAD_DATASET', `${path} is not valid JSON (${(e as Error).message})`, `give ${form}`);
  }
  if (isPlainObject(v)) {
    const extra = Object.keys(v).filter((k) => k !== 'inputs');
    if (!('inputs' in v) || extra.length > 0) {
      throw new DataError('BAD_DATASET', `${path}: a JSON object must have exactly one field, "inputs"; found ${Object.keys(v).map((k) => JSON.stringify(k)).join(', ') || 'none'}`, `give ${form}`);
    }
    v = v.inputs;
  }
  if (!Array.isArray(v)) throw new DataError('BAD_DATASET', `${path}: expected ${form}, got ${v === null ? 'null' : typeof v}`);
  if (v.length === 0) throw new DataError('EMPTY_FILE', `${path} holds no samples`);
  const width = Array.isArray(v[0]) ? (v[0] as unknown[]).length : -1;
  const inputs = new Float32Array(v.length * Math.max(width, 0));
  for (let r = 0; r < v.length; r++) {
    const row = v[r] as unknown;
    if (!Array.isArray(row)) throw new DataError('BAD_DATASET', `${path}: sample ${r} must be an array of numbers, got ${row === null ? 'null' : typeof row}`, `give ${form}`);
    if (row.length !== width) throw new DataError('RAGGED_ROW', `${path}: sample ${r} has ${row.length} values, sample 0 has ${width}`);
    if (width !== features) break; // reported with the feature count below
    for (let c = 0; c < width; c++) {
      const x = row[c] as unknown;
      if (typeof x !== 'number' || !Number.isFinite(x)) {
        throw new DataError('NOT_A_NUMBER', `${path}: sample ${r}, value ${c} must be a finite number, got ${JSON.stringify(x) ?? typeof x}`,
          Array.isArray(x) ? `flatten each sample to ${features} numbers` : undefined);
      }
      inputs[r * width + c] = x;
    }
  }
  return { inputs, n: v.length, width };
}

/**
 * Reads inputs to predict on, as a tensor [n, ...inputShape]: a numeric CSV file (a header
 * line allowed, no label column: every column is a feature), an IDX images file (ubyte pixels
 * scaled to [0, 1] as in training), or JSON (an array of samples, each an array of numbers, or
 * `{ "inputs": [[...], ...] }`). The format comes from the extension (.csv, .txt, .json), else
 * from the content. Raw values: `predict` applies the model's saved transform.
 * @example const x = readPredictInput('digits.csv', model.spec.inputShape);
 */
export function readPredictInput(path: string, inputShape: readonly number[]): Tensor {
  if (typeof path !== 'string' || path.length === 0) throw new DataError('BAD_OPTION', `readPredictInput: path must be a non-empty string, got ${JSON.stringify(path)}`);
  if (!Array.isArray(inputShape) || inputShape.length === 0 || !inputShape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new DataError('BAD_OPTION', `readPredictInput: inputShape must be a non-empty array of positive integers, got ${JSON.stringify(inputShape)}`);
  }
  const features = sizeOf(inputShape);
  const format = formatOf(path);
  let inputs: Float32Array;
  let n: number;
  let width: number;
  let hint: string | undefined;
  if (format === 'csv') {
    const csv = readCsvInputs(path);
    ({ inputs, rows: n, columns: width } = csv);
    if (width === features + 1) hint = 'a predict CSV has no label column (every column is a feature): drop the label column';
  } else if (format === 'idx') {
    ({ inputs, n, features: width } = readIdxImages(path));
    hint = `the images must have the size the model was trained on (${features} values each)`;
  } else {
    ({ inputs, n, width } = jsonRows(path, features));
  }
  if (width !== features) {
    throw new DataError('BAD_SHAPE', `${path}: each sample has ${width} ${format === 'idx' ? 'values' : 'features'}, but the model takes ${features} (input shape ${fmtShape(inputShape)})`, hint);
  }
  if (n === 0) throw new DataError('EMPTY_FILE', `${path} holds no samples`);
  return new Tensor(inputs, [n, ...inputShape]);
}
