/**
 * Crash-safe checkpoints: `--checkpoint DIR` commits `DIR/step-N/` directories, and
 * `--resume DIR` takes the newest one after verifying every byte of it.
 *
 * A checkpoint directory holds (format `chainrule-checkpoint`, version 2):
 *
 *   weights.safetensors    every parameter, by name ('0.weight', ...)
 *   buffers.safetensors    non-trainable state, by name ('4.runningMean', ...)
 *   optimizer.safetensors  the optimizer's slots, as 'PARAM/SLOT' ('0.weight/m', ...)
 *   state.json             the counters: step, epoch, the next minibatch in it, the resumed
 *                          epoch's loss so far, the optimizer's step count t, and what the run
 *                          must share with the one that wrote it (model, seed, optimizer,
 *                          batch size, training set); with early stopping its state too (the
 *                          best epoch, its validation loss and report, the epochs since)
 *   best-*.safetensors     with early stopping, when the best epoch is not this step: its
 *                          weights, buffers and optimizer slots, which a stop restores
 *   manifest.json          each file's size and SHA-256, and its own SHA-256
 *
 * Writing: the files go into `DIR/.tmp-step-N-<random>/`, each fsynced; the manifest last;
 * then that directory is fsynced, renamed to `step-N` (atomic) and DIR is fsynced. So a
 * crash at any moment leaves either no `step-N` or a complete one; at most a temporary
 * directory, which readers ignore and the next commit deletes. After the commit, all but the
 * newest `keep` checkpoints are retired (renamed to `.old-step-N-<random>`, then deleted).
 *
 * Everything a bit-exact resume needs follows from these counters: epoch e's order is
 * the Batcher's shuffle of (seed, e), minibatch b's augmentation is `augmentStream(seed, e, b)`,
 * dropout and sampling are drawn from (seed, layer, step, micro-batch), and the learning rate
 * is a pure function of the step (the VAE's KL warm-up too). The state is merged by name, so
 * any placement, stage count and replica count resumes any other's. NOTE: with replicas, each
 * keeps BatchNorm running statistics of its own shard; the checkpoint holds replica 0's (the
 * ones evaluation uses), and a resume gives them to every replica. Weights never depend on them.
 * What is not kept: the bubble meter and throughput figures, which cover the resumed part only.
 *
 * @example
 * writeCheckpoint('runs/a', content, { keep: 3 });          // → { path: 'runs/a/step-120', ... }
 * const { path, content } = readCheckpoint('runs/a', expect); // the newest, verified
 */
import { fsyncDir, writeDurable } from './durable.js';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { ChainruleError } from '../src/errors.js';
import { Tensor } from '../src/tensor/tensor.js';
import { decodeSafetensors, encodeSafetensors, type StoredTensor } from '../src/wire/safetensors.js';
import type { NamedTensors, StageState } from '../src/wire/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { LrScheduleSpec, OptimizerSpec } from '../src/optim/index.js';
import type { EarlyStopState } from './early-stop.js';
import type { EpochReport } from './summary.js';

export const CHECKPOINT_FORMAT = 'chainrule-checkpoint';
export const CHECKPOINT_VERSION = 2;

/** The files of a checkpoint besides its manifest, in the manifest's order. */
export const CHECKPOINT_FILES = ['buffers.safetensors', 'optimizer.safetensors', 'state.json', 'weights.safetensors'] as const;
/** The best epoch's state (early stopping), all three or none: absent when it is the checkpoint's own. */
export const BEST_STATE_FILES = ['best-buffers.safetensors', 'best-optimizer.safetensors', 'best-weights.safetensors'] as const;
type FileName = (typeof CHECKPOINT_FILES)[number] | (typeof BEST_STATE_FILES)[number];
type CheckpointFiles = Record<(typeof CHECKPOINT_FILES)[number], Uint8Array> & Partial<Record<(typeof BEST_STATE_FILES)[number], Uint8Array>>;
const MANIFEST = 'manifest.json';
/** JSON files above this are refused before they are read (a spec and counters are far smaller). */
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const STEP_DIR = /^step-(0|[1-9]\d{0,15})$/;
const TEMP_PREFIXES = ['.tmp-', '.old-'];

/** A checkpoint that cannot be written, found, verified or used: a user error naming the file. */
export class CheckpointError extends ChainruleError {
  constructor(code: 'BAD_CHECKPOINT' | 'NO_CHECKPOINT' | 'CHECKPOINT_MISMATCH' | 'WRITE_FAILED', message: string, hint?: string) {
    super(code, message, { hint });
  }
}

/** What a resumed run must share with the run that wrote the checkpoint. */
export interface RunIdentity {
  model: ModelSpec;
  seed: number;
  optimizer: OptimizerSpec;
  batchSize: number;
  /** Training samples, and a SHA-256 of their inputs and labels (after the transform). */
  trainSize: number;
  trainSha256: string;
}

export interface CheckpointContent {
  run: RunIdentity;
  /** Optimizer steps done. */
  step: number;
  /** Where training goes on: epoch (0-based) and the next minibatch in it (batchesPerEpoch: that epoch's evaluation is still due). */
  epoch: number;
  batch: number;
  batchesPerEpoch: number;
  droppedPerEpoch: number;
  /** The epoch under way: its summed loss and samples so far, so that its report covers all of it. */
  epochLossSum: number;
  epochSamples: number;
  /** For the record: the schedule the rate came from (a pure function of the step) and who wrote it. */
  lrSchedule: LrScheduleSpec | null;
  writtenBy: { placement: string; replicas: number; stages: number; microBatches: number };
  state: StageState;
  /** With early stopping: its state at this step (null or absent: none recorded). */
  earlyStop?: EarlyStopState | null;
}

export interface CheckpointRef { step: number; path: string }

/** Complete checkpoints in `dir` (directories named step-N), oldest first; [] if dir does not exist. */
export function listCheckpoints(dir: string): CheckpointRef[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CheckpointError('NO_CHECKPOINT', `cannot read checkpoint directory ${dir}: ${errCode(e)}`);
  }
  const out: CheckpointRef[] = [];
  for (const name of names) {
    const m = STEP_DIR.exec(name);
    if (m && isDir(join(dir, name))) out.push({ step: Number(m[1]), path: join(dir, name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Leftovers of interrupted writes or deletions in `dir` (ignored by readers, deleted by the next commit). */
export function unfinishedEntries(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => TEMP_PREFIXES.some((p) => n.startsWith(p))).sort();
  } catch {
    return [];
  }
}

/**
 * Commits `content` as `dir/step-N` (N = content.step), then keeps the newest `keep` checkpoints.
 * @returns the committed directory and the retired ones
 * @throws CheckpointError WRITE_FAILED naming the path and the system's code (ENOSPC, EACCES, ...)
 */
export function writeCheckpoint(dir: string, content: CheckpointContent, opts: { keep: number }): { path: string; removed: string[] } {
  const files = encodeCheckpoint(content);
  const name = `step-${content.step}`;
  const final = join(dir, name);
  const tmp = join(dir, `.tmp-${name}-${randomBytes(6).toString('hex')}`);
  try {
    // A directory made here must itself survive a crash: its parent's entry is fsynced too.
    const made = mkdirSync(dir, { recursive: true });
    if (made !== undefined) fsyncDir(dirname(made));
    mkdirSync(tmp);
    const entries: Record<string, ManifestEntry> = {};
    for (const file of [...CHECKPOINT_FILES, ...BEST_STATE_FILES]) {
      const bytes = files[file];
      if (bytes === undefined) continue;
      writeDurable(join(tmp, file), bytes);
      entries[file] = { bytes: bytes.length, sha256: sha256(bytes) };
    }
    // Last: a directory with a valid manifest has every file the manifest lists.
    writeDurable(join(tmp, MANIFEST), new TextEncoder().encode(manifestText({ format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step: content.step, files: entries })));
    fsyncDir(tmp);
    // The same step again (a run resumed at an epoch's end checkpoints it once more): the new one replaces it.
    if (isDir(final)) renameSync(final, join(dir, `.old-${name}-${randomBytes(6).toString('hex')}`));
    renameSync(tmp, final);
    fsyncDir(dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof ChainruleError) throw e;
    throw new CheckpointError('WRITE_FAILED', `cannot write checkpoint ${final}: ${errCode(e)}`, 'check that the directory is writable and the disk has room');
  }
  const removed: string[] = [];
  const complete = listCheckpoints(dir);
  for (const old of complete.slice(0, Math.max(0, complete.length - opts.keep))) {
    // Renamed first, so that a crash mid-delete never leaves a half-deleted step-N behind.
    const retired = join(dir, `.old-step-${old.step}-${randomBytes(6).toString('hex')}`);
    renameSync(old.path, retired);
    removed.push(old.path);
  }
  // Ours and those of interrupted runs: nothing but a commit in progress may use them, and ours is done.
  for (const n of unfinishedEntries(dir)) rmSync(join(dir, n), { recursive: true, force: true });
  return { path: final, removed };
}

/**
 * Refuses to write into `dir` when it already holds a checkpoint past `step`: the rotation
 * would delete this run's own checkpoints first (a stale directory of another run).
 */
export function checkCheckpointTarget(dir: string, step: number, flag = '--checkpoint'): void {
  const later = listCheckpoints(dir).filter((c) => c.step > step);
  if (later.length > 0) {
    throw new CheckpointError('CHECKPOINT_MISMATCH', `${flag} ${dir} already holds ${later.at(-1)!.path}, past this run's step ${step}`,
      `resume from it (--resume ${dir}) or write to another directory`);
  }
}

export interface LoadedCheckpoint {
  /** The checkpoint directory read (DIR/step-N). */
  path: string;
  content: CheckpointContent;
  /** Leftovers of interrupted writes that were passed over. */
  ignored: string[];
}

/**
 * The newest complete checkpoint in `dir` (or `dir` itself when it is one), verified byte
 * for byte against its manifest and checked against this run. A corrupt newest checkpoint
 * is refused, not passed over: the hint names the one before it.
 * @throws CheckpointError naming the file and what is wrong with it
 */
export function readCheckpoint(dir: string, expect: RunIdentity): LoadedCheckpoint {
  let st: Stats;
  try {
    st = statSync(dir);
  } catch (e) {
    throw new CheckpointError('NO_CHECKPOINT', `cannot read checkpoint directory ${dir}: ${errCode(e)}`);
  }
  if (!st.isDirectory()) {
    throw new CheckpointError('NO_CHECKPOINT', `${dir} is a file, not a checkpoint directory`, `--resume takes the directory that --checkpoint DIR wrote (it holds step-N/ directories)`);
  }
  let path = dir;
  let before: CheckpointRef | undefined;
  const ignored = unfinishedEntries(dir);
  if (!isFile(join(dir, MANIFEST))) {
    const all = listCheckpoints(dir);
    if (all.length === 0) {
      const why = ignored.length > 0 ? ` (only ${ignored.join(', ')}, left by interrupted writes)` : '';
      throw new CheckpointError('NO_CHECKPOINT', `${dir} holds no complete checkpoint${why}`, 'start without --resume, or point it at the directory given to --checkpoint');
    }
    path = all.at(-1)!.path;
    before = all.at(-2);
  }
  let content: CheckpointContent;
  try {
    content = decodeCheckpoint(verifyCheckpoint(path), path);
  } catch (e) {
    if (before && e instanceof CheckpointError && e.code === 'BAD_CHECKPOINT') {
      throw new CheckpointError('BAD_CHECKPOINT', e.message.split('\nHow to fix:')[0]!,
        `${e.hint ? `${e.hint}. ` : ''}An older checkpoint is never used in place of the newest: to resume from the one before it, remove ${path} (or pass --resume ${before.path})`);
    }
    throw e;
  }
  checkIdentity(content.run, expect, path);
  return { path, content, ignored };
}

interface ManifestEntry { bytes: number; sha256: string }
interface Manifest { format: string; version: number; step: number; files: Record<string, ManifestEntry> }

/** The manifest as written: its fields in a fixed order, then a SHA-256 of them, so that any change shows. */
function manifestText(m: Manifest): string {
  const body: Manifest = { format: m.format, version: m.version, step: m.step, files: Object.fromEntries(Object.keys(m.files).sort().map((k) => [k, { bytes: m.files[k]!.bytes, sha256: m.files[k]!.sha256 }])) };
  return `${JSON.stringify({ ...body, sha256: sha256(new TextEncoder().encode(JSON.stringify(body))) }, null, 2)}\n`;
}

/**
 * Checks a checkpoint directory against its manifest: the manifest's own hash, no file
 * missing, none extra, each one's size and SHA-256.
 * @returns every file's bytes, by name
 * @throws CheckpointError BAD_CHECKPOINT naming the file and what differs
 */
export function verifyCheckpoint(path: string): CheckpointFiles {
  const bad = (what: string, hint?: string): never => { throw new CheckpointError('BAD_CHECKPOINT', `checkpoint ${path}: ${what}`, hint); };
  const manifestPath = join(path, MANIFEST);
  if (!isFile(manifestPath)) bad(`${MANIFEST} is missing: not a complete checkpoint`);
  const text = readBounded(manifestPath, MAX_JSON_BYTES, bad);
  let m: Manifest & { sha256?: unknown };
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch (e) {
    return bad(`${MANIFEST} is not valid JSON (${(e as Error).message}): the file was altered or torn`);
  }
  if (m === null || typeof m !== 'object' || m.format !== CHECKPOINT_FORMAT) bad(`${MANIFEST} is not a chainrule checkpoint manifest`);
  if (m.version !== CHECKPOINT_VERSION) bad(`${MANIFEST} has version ${JSON.stringify(m.version)}; this chainrule reads version ${CHECKPOINT_VERSION}`);
  if (!Number.isSafeInteger(m.step) || m.step < 0) bad(`${MANIFEST}: step must be a non-negative integer, got ${JSON.stringify(m.step)}`);
  const files = m.files;
  if (files === null || typeof files !== 'object' || Array.isArray(files)) bad(`${MANIFEST}: files must be an object`);
  const known: readonly string[] = [...CHECKPOINT_FILES, ...BEST_STATE_FILES];
  for (const name of Object.keys(files)) {
    if (!known.includes(name)) bad(`${MANIFEST} lists ${JSON.stringify(name)}, which is not a checkpoint file (${known.join(', ')})`);
    const f = files[name]!;
    if (f === null || typeof f !== 'object' || !Number.isSafeInteger(f.bytes) || f.bytes < 0 || typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256)) {
      bad(`${MANIFEST}: the entry of ${name} must be { bytes, sha256 }`);
    }
  }
  for (const name of CHECKPOINT_FILES) if (!Object.hasOwn(files, name)) bad(`${MANIFEST} does not list ${name}`);
  const best = BEST_STATE_FILES.filter((n) => Object.hasOwn(files, n));
  if (best.length > 0 && best.length < BEST_STATE_FILES.length) bad(`${MANIFEST} lists ${best.join(', ')} but not ${BEST_STATE_FILES.filter((n) => !best.includes(n)).join(', ')}: the best epoch's state comes whole`);
  if (new TextDecoder().decode(text) !== manifestText(m)) bad(`${MANIFEST} does not match its own SHA-256: the file was altered`);
  const want = m.step;
  const dirName = path.split(/[\\/]/).filter(Boolean).at(-1)!;
  const named = STEP_DIR.exec(dirName);
  if (named && Number(named[1]) !== want) bad(`${MANIFEST} is for step ${want}, but the directory is ${dirName}`);
  for (const name of readdirSync(path)) {
    if (name !== MANIFEST && !Object.hasOwn(files, name)) bad(`holds ${name}, which its manifest does not list`, `a checkpoint directory holds only ${[...CHECKPOINT_FILES, MANIFEST].join(', ')} (and ${BEST_STATE_FILES.join(', ')} with early stopping); it was altered`);
  }
  const out = {} as CheckpointFiles;
  for (const name of [...CHECKPOINT_FILES, ...best]) {
    const p = join(path, name);
    const entry = files[name]!;
    let size: number;
    try {
      const s = statSync(p);
      if (!s.isFile()) bad(`${name} is not a file`);
      size = s.size;
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      return bad(`${name} is missing (${errCode(e)})`);
    }
    if (size !== entry.bytes) bad(`${name} is ${size} bytes, the manifest says ${entry.bytes}${size < entry.bytes ? ': truncated' : ': grown'}`);
    const bytes = readBounded(p, entry.bytes, bad);
    const got = sha256(bytes);
    if (got !== entry.sha256) bad(`${name} has SHA-256 ${got.slice(0, 16)}…, the manifest says ${entry.sha256.slice(0, 16)}…: the file was altered or torn`);
    out[name] = bytes;
  }
  return out;
}

/** The files of a checkpoint (all but the manifest). */
function encodeCheckpoint(c: CheckpointContent): CheckpointFiles {
  const meta = { format: CHECKPOINT_FORMAT, version: String(CHECKPOINT_VERSION) };
  const encode = (st: StageState) => {
    const slots: Record<string, StoredTensor> = {};
    for (const [param, s] of Object.entries(st.optimizer?.slots ?? {})) {
      for (const [slot, t] of Object.entries(s)) slots[`${param}/${slot}`] = t;
    }
    return { weights: encodeSafetensors(st.params, meta), buffers: encodeSafetensors(st.buffers, meta), optimizer: encodeSafetensors(slots, meta) };
  };
  const best = c.earlyStop?.best ?? null;
  // The best epoch's state is stored only when the actors no longer hold it at this step.
  const bestState = best && best.heldAt !== c.step ? best.state : null;
  const earlyStop = c.earlyStop ? {
    wait: c.earlyStop.wait,
    best: best ? {
      epoch: best.epoch, valLoss: jsonNumber(best.valLoss), report: best.report, stored: bestState !== null,
      ...(bestState ? { optimizerState: bestState.optimizer ? { type: bestState.optimizer.type, t: bestState.optimizer.t } : null, lastStep: bestState.lastStep } : {}),
    } : null,
  } : null;
  const own = encode(c.state);
  const kept = bestState ? encode(bestState) : null;
  const state = {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION,
    step: c.step, epoch: c.epoch, batch: c.batch, batchesPerEpoch: c.batchesPerEpoch, droppedPerEpoch: c.droppedPerEpoch,
    epochLossSum: jsonNumber(c.epochLossSum), epochSamples: c.epochSamples,
    optimizerState: c.state.optimizer ? { type: c.state.optimizer.type, t: c.state.optimizer.t } : null,
    lastStep: c.state.lastStep,
    run: c.run, lrSchedule: c.lrSchedule, writtenBy: c.writtenBy, earlyStop, writtenAt: new Date().toISOString(),
  };
  return {
    'weights.safetensors': own.weights,
    'buffers.safetensors': own.buffers,
    'optimizer.safetensors': own.optimizer,
    'state.json': new TextEncoder().encode(`${JSON.stringify(state, null, 1)}\n`),
    ...(kept ? { 'best-weights.safetensors': kept.weights, 'best-buffers.safetensors': kept.buffers, 'best-optimizer.safetensors': kept.optimizer } : {}),
  };
}

/** Decodes verified files; their contents are still checked, as a foreign writer may have made them. */
function decodeCheckpoint(files: CheckpointFiles, path: string): CheckpointContent {
  const bad = (file: string, what: string): never => { throw new CheckpointError('BAD_CHECKPOINT', `checkpoint ${path}: ${file}: ${what}`); };
  let s: Record<string, unknown>;
  try {
    s = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(files['state.json']));
  } catch (e) {
    return bad('state.json', `not valid JSON (${(e as Error).message})`);
  }
  if (s === null || typeof s !== 'object' || s['format'] !== CHECKPOINT_FORMAT || s['version'] !== CHECKPOINT_VERSION) bad('state.json', `not a chainrule checkpoint state (version ${CHECKPOINT_VERSION})`);
  const int = (k: string, min = 0): number => {
    const v = s[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) bad('state.json', `${k} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const step = int('step');
  const epoch = int('epoch');
  const batchesPerEpoch = int('batchesPerEpoch', 1);
  const batch = int('batch');
  if (batch > batchesPerEpoch) bad('state.json', `batch ${batch} is past the epoch's ${batchesPerEpoch} minibatches`);
  const epochLossSum = fromJsonNumber(s['epochLossSum']);
  if (epochLossSum === undefined) bad('state.json', `epochLossSum must be a number, got ${JSON.stringify(s['epochLossSum'])}`);
  const lastStep = int('lastStep', -1);
  const run = s['run'] as RunIdentity;
  if (run === null || typeof run !== 'object' || typeof run.model !== 'object' || typeof run.seed !== 'number' || typeof run.optimizer?.type !== 'string'
    || !Number.isSafeInteger(run.batchSize) || !Number.isSafeInteger(run.trainSize) || typeof run.trainSha256 !== 'string') {
    bad('state.json', 'run must hold model, seed, optimizer, batchSize, trainSize and trainSha256');
  }
  const optimizerState = (v: unknown, where: string): { type: string; t: number } | null => {
    const opt = v as { type?: unknown; t?: unknown } | null;
    if (opt !== null && (typeof opt !== 'object' || typeof opt.type !== 'string' || !Number.isSafeInteger(opt.t) || (opt.t as number) < 0)) bad('state.json', `${where} must be null or { type, t }`);
    return opt as { type: string; t: number } | null;
  };
  const state = decodeState(files, '', optimizerState(s['optimizerState'], 'optimizerState'), lastStep, bad, path);

  // Early stopping's state: absent in checkpoints of runs without it.
  let earlyStop: EarlyStopState | null = null;
  const es = s['earlyStop'] as { wait?: unknown; best?: Record<string, unknown> | null } | null | undefined;
  if (es !== undefined && es !== null) {
    if (typeof es !== 'object' || !Number.isSafeInteger(es.wait) || (es.wait as number) < 0) bad('state.json', 'earlyStop must be null or { wait, best }');
    const b = es.best;
    const storedFiles = files['best-weights.safetensors'] !== undefined;
    if (b === null || b === undefined) {
      if (storedFiles) bad('best-weights.safetensors', 'holds a best epoch, but state.json records none');
      earlyStop = { wait: es.wait as number, best: null };
    } else {
      const valLoss = fromJsonNumber(b['valLoss']);
      if (typeof b !== 'object' || !Number.isSafeInteger(b['epoch']) || (b['epoch'] as number) < 1 || valLoss === undefined
        || b['report'] === null || typeof b['report'] !== 'object' || typeof b['stored'] !== 'boolean') {
        bad('state.json', 'earlyStop.best must be { epoch, valLoss, report, stored }');
      }
      if (b['stored'] !== storedFiles) bad('state.json', `earlyStop.best says its state is ${b['stored'] ? '' : 'not '}stored, but the best-*.safetensors files are ${storedFiles ? '' : 'not '}there`);
      const bestState = storedFiles
        ? decodeState(files, 'best-', optimizerState(b['optimizerState'] ?? null, 'earlyStop.best.optimizerState'), Number.isSafeInteger(b['lastStep']) ? b['lastStep'] as number : -1, bad, path)
        : state;
      earlyStop = {
        wait: es.wait as number,
        best: { epoch: b['epoch'] as number, valLoss: valLoss!, report: b['report'] as unknown as EpochReport, state: bestState, heldAt: storedFiles ? -1 : step },
      };
    }
  }
  return {
    run, step, epoch, batch, batchesPerEpoch, droppedPerEpoch: int('droppedPerEpoch'), epochLossSum: epochLossSum!, epochSamples: int('epochSamples'),
    lrSchedule: (s['lrSchedule'] ?? null) as LrScheduleSpec | null, writtenBy: s['writtenBy'] as CheckpointContent['writtenBy'],
    state, earlyStop,
  };
}

/** One state from its three files (`prefix` '' for the checkpoint's own, 'best-' for the best epoch's). */
function decodeState(files: CheckpointFiles, prefix: '' | 'best-', opt: { type: string; t: number } | null, lastStep: number,
  bad: (file: string, what: string) => never, path: string): StageState {
  const tensors = (kind: 'weights' | 'buffers' | 'optimizer'): Record<string, Tensor> => {
    const file = `${prefix}${kind}.safetensors` as FileName;
    let decoded: ReturnType<typeof decodeSafetensors>;
    try {
      decoded = decodeSafetensors(files[file]!, `checkpoint ${path}: ${file}`);
    } catch (e) {
      throw new CheckpointError('BAD_CHECKPOINT', (e as Error).message);
    }
    for (const [name, t] of Object.entries(decoded.tensors)) if (!(t instanceof Tensor)) bad(file, `tensor ${JSON.stringify(name)} is ${t.dtype}, expected F32 or F64`);
    return decoded.tensors as Record<string, Tensor>;
  };
  const params: NamedTensors = tensors('weights');
  const buffers: NamedTensors = tensors('buffers');
  const flat = tensors('optimizer');
  let optimizer: StageState['optimizer'] = null;
  if (opt) {
    const slots: Record<string, Record<string, Tensor>> = Object.create(null);
    for (const [key, t] of Object.entries(flat)) {
      const cut = key.lastIndexOf('/');
      const param = key.slice(0, cut);
      const slot = key.slice(cut + 1);
      if (cut <= 0 || slot === '' || !Object.hasOwn(params, param) || Object.hasOwn(Object.prototype, slot)) bad(`${prefix}optimizer.safetensors`, `slot ${JSON.stringify(key)} is not PARAM/SLOT of a parameter in ${prefix}weights.safetensors`);
      (slots[param] ??= {})[slot] = t;
    }
    optimizer = { type: opt.type, t: opt.t, slots: { ...slots } };
  } else if (Object.keys(flat).length > 0) {
    bad(`${prefix}optimizer.safetensors`, 'holds slots, but state.json has no optimizer state');
  }
  return { params, buffers, optimizer, lastStep };
}

function checkIdentity(got: RunIdentity, want: RunIdentity, path: string): void {
  const refuse = (what: string, hint: string): never => { throw new CheckpointError('CHECKPOINT_MISMATCH', `checkpoint ${path} ${what}`, hint); };
  if (JSON.stringify(got.model) !== JSON.stringify(want.model)) refuse('was written for another model', 'use the same --model');
  if (got.seed !== want.seed || got.optimizer.type !== want.optimizer.type) {
    refuse(`was written with seed ${got.seed} and optimizer ${got.optimizer.type}; this run has seed ${want.seed} and ${want.optimizer.type}`, 'resume with the same --seed and --optimizer');
  }
  if (got.batchSize !== want.batchSize) refuse(`was written with batch size ${got.batchSize}; this run's is ${want.batchSize}`, 'its position within the epoch counts minibatches: resume with the same --batch-size');
  if (got.trainSize !== want.trainSize || got.trainSha256 !== want.trainSha256) {
    refuse(`was written for another training set (${got.trainSize} samples, SHA-256 ${got.trainSha256.slice(0, 12)}…; this run has ${want.trainSize}, ${want.trainSha256.slice(0, 12)}…)`, 'resume with the same --dataset, --transform, --label-column and --validation-split');
  }
}

/**
 * Checks a decoded state against the model's (names and sizes of parameters, buffers and
 * slots), so that nothing is silently left at its initial value or read past its end.
 */
export function checkStateFits(got: StageState, model: StageState, slotNames: readonly string[], path: string): void {
  const bad = (file: string, what: string): never => { throw new CheckpointError('BAD_CHECKPOINT', `checkpoint ${path}: ${file}: ${what}`); };
  const same = (file: string, a: NamedTensors, b: NamedTensors) => {
    for (const [name, t] of Object.entries(b)) {
      const g = a[name];
      if (!Object.hasOwn(a, name) || !g) bad(file, `${name} is missing`);
      if (g!.shape.join('x') !== t.shape.join('x')) bad(file, `${name} has shape [${g!.shape.join(', ')}], the model's is [${t.shape.join(', ')}]`);
    }
    for (const name of Object.keys(a)) if (!Object.hasOwn(b, name)) bad(file, `${name} is not in the model`);
  };
  same('weights.safetensors', got.params, model.params);
  same('buffers.safetensors', got.buffers, model.buffers);
  for (const [param, slots] of Object.entries(got.optimizer?.slots ?? {})) {
    const size = model.params[param]!.size;
    for (const name of slotNames) {
      if (!Object.hasOwn(slots, name)) bad('optimizer.safetensors', `${param}/${name} is missing`);
      if (slots[name]!.size !== size) bad('optimizer.safetensors', `${param}/${name} has ${slots[name]!.size} values, the parameter ${size}`);
    }
    for (const name of Object.keys(slots)) if (!slotNames.includes(name)) bad('optimizer.safetensors', `${param}/${name} is not a slot of this optimizer (${slotNames.join(', ') || 'none'})`);
  }
}

/** SHA-256 over a training set's shape, inputs and labels: tells datasets apart for a resume. */
export function datasetSha256(ds: { inputShape: readonly number[]; size: number; inputs: Float32Array; labels?: Int32Array; targets?: Float32Array }): string {
  const h = createHash('sha256');
  h.update(`${ds.size}:${ds.inputShape.join('x')};`);
  h.update(new Uint8Array(ds.inputs.buffer, ds.inputs.byteOffset, ds.inputs.byteLength));
  // Labels for classification, float targets otherwise: whichever the dataset holds.
  const y = ds.labels ?? ds.targets;
  if (y) h.update(new Uint8Array(y.buffer, y.byteOffset, y.byteLength));
  return h.digest('hex');
}



function readBounded(path: string, max: number, bad: (what: string) => never): Uint8Array {
  const name = path.split(/[\\/]/).at(-1)!;
  try {
    const size = statSync(path).size;
    if (size > max) bad(`${name} is ${size} bytes, over the ${max} expected`);
    return readFileSync(path);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    return bad(`cannot read ${name}: ${errCode(e)}`);
  }
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const errCode = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? (e as Error).message;
const isDir = (p: string): boolean => { try { return statSync(p).isDirectory(); } catch { return false; } };
const isFile = (p: string): boolean => { try { return statSync(p).isFile(); } catch { return false; } };
/** A loss that overflowed is kept too: JSON has no NaN or Infinity, so those go as strings. */
const jsonNumber = (x: number): number | string => (Number.isFinite(x) ? x : String(x));
function fromJsonNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
  return undefined;
}
