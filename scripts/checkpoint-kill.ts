/**
 * Kills the trainer at random moments while it writes checkpoints, and checks every resume.
 *
 * Each round spawns `chainrule train ... --checkpoint DIR --checkpoint-every 1` (with
 * `--resume DIR` once DIR holds a checkpoint), waits until it has started training, and
 * SIGKILLs it: every other time after a random delay, else at a random moment of a
 * checkpoint write (0-25 ms after its temporary directory appears, while its files are
 * written). Before each round every committed checkpoint in DIR is verified against its
 * manifest, and the resumed child must say it loaded the newest one
 * (or refuse with exit 2, naming what is wrong). A last child runs to the end; its weights
 * must equal those of an uninterrupted run of the same flags (0 corrupt loads).
 *
 *   node --import tsx scripts/checkpoint-kill.ts [--kills 50] [--seed 1] [--max-delay-ms 400] [--epochs 40]
 *
 * test/checkpoint.test.ts runs a shorter loop through `killLoop`.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Coordinator } from '../coordinator/coordinator.js';
import { listCheckpoints, unfinishedEntries, verifyCheckpoint } from '../coordinator/checkpoint.js';
import { parseCliOptions } from '../coordinator/options.js';
import type { ModelSpec } from '../src/nn/index.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface KillOptions {
  /** Children to SIGKILL. */
  kills: number;
  /** The checkpoint directory (created). */
  dir: string;
  /** `chainrule train` flags without --checkpoint, --checkpoint-every, --keep and --resume. */
  train: string[];
  keep?: number;
  /** Each kill comes at a uniform random moment this long at most after the child starts training. */
  maxDelayMs?: number;
  /** Seeds the kill moments. */
  seed?: number;
  log?: (line: string) => void;
}

export interface KillFigures {
  kills: number;
  /** Kills that left an unfinished `.tmp-` directory: the child died while writing a checkpoint. */
  killedMidWrite: number;
  /** Children started with --resume, and of them: those that loaded the newest complete checkpoint, and those that refused. */
  resumes: number;
  loadedNewest: number;
  refused: number;
  refusals: string[];
  /** A child that loaded another checkpoint than the newest complete one, or a committed checkpoint failing verification, or final weights that differ. */
  corruptLoads: number;
  /** Committed checkpoints verified between rounds (each one, each round). */
  verified: number;
  /** Children that finished before their kill came. */
  finishedEarly: number;
  /** The most complete checkpoints seen in DIR at once (keep, or keep + 1 when a kill fell between a commit and the rotation). */
  maxComplete: number;
  finalSha256: string;
  referenceSha256: string;
  seconds: number;
}

/** A small seeded generator for the kill moments (mulberry32). */
function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Child {
  /** Resolves with the first stdout line matching, or null if the child exits first. */
  waitFor(re: RegExp): Promise<RegExpExecArray | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  kill(): void;
}

function startTrainer(args: string[]): Child {
  const p = spawn(process.execPath, ['--import', 'tsx', join(repo, 'coordinator/bin.ts'), 'train', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: { re: RegExp; resolve: (m: RegExpExecArray | null) => void }[] = [];
  p.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    for (const w of waiters.splice(0)) {
      const m = w.re.exec(stdout);
      if (m) w.resolve(m);
      else waiters.push(w);
    }
  });
  p.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    p.on('close', (code, signal) => {
      for (const w of waiters.splice(0)) w.resolve(w.re.exec(stdout));
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    waitFor: (re) => new Promise((resolve) => {
      const m = re.exec(stdout);
      if (m || p.exitCode !== null || p.signalCode !== null) resolve(m);
      else waiters.push({ re, resolve });
    }),
    exited,
    kill: () => { p.kill('SIGKILL'); },
  };
}

/** Runs the kill loop; see the file's comment. */
export async function killLoop(o: KillOptions): Promise<KillFigures> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const keep = o.keep ?? 3;
  const maxDelay = o.maxDelayMs ?? 400;
  const random = uniform(o.seed ?? 1);
  mkdirSync(o.dir, { recursive: true });
  const ckptArgs = ['--checkpoint', o.dir, '--checkpoint-every', '1', '--keep', String(keep)];
  const f: KillFigures = {
    kills: 0, killedMidWrite: 0, resumes: 0, loadedNewest: 0, refused: 0, refusals: [], corruptLoads: 0, verified: 0,
    finishedEarly: 0, maxComplete: 0, finalSha256: '', referenceSha256: '', seconds: 0,
  };

  const reference = new Coordinator(parseCliOptions(o.train).options);
  try {
    f.referenceSha256 = (await reference.train()).weightsSha256;
  } finally {
    await reference.close();
  }

  /** Verifies every committed checkpoint; returns the newest. */
  const survey = () => {
    const all = listCheckpoints(o.dir);
    f.maxComplete = Math.max(f.maxComplete, all.length);
    for (const c of all) {
      try {
        verifyCheckpoint(c.path);
        f.verified++;
      } catch (e) {
        f.corruptLoads++;
        log(`committed checkpoint ${c.path} fails verification: ${(e as Error).message}`);
      }
    }
    return all.at(-1);
  };

  /** Starts a child; for a resume, checks which checkpoint it loaded. Returns it once it trains, or null if it ended first. */
  const start = async (checkpoints = true): Promise<Child | null> => {
    const newest = survey();
    const child = startTrainer([...o.train, ...(checkpoints ? ckptArgs : []), ...(newest ? ['--resume', o.dir] : [])]);
    const started = await child.waitFor(newest ? /resumed from (\S+) \(step (\d+)/ : /^chainrule: training/m);
    if (newest) f.resumes++;
    if (!started) {
      const r = await child.exited;
      if (r.code === 2) {
        f.refused++;
        f.refusals.push(r.stderr.trim());
        log(`refused: ${r.stderr.trim()}`);
        return null;
      }
      throw new Error(`the trainer exited ${r.code ?? r.signal} before training:\n${r.stderr}`);
    }
    if (newest) {
      if (started[1] === newest.path) f.loadedNewest++;
      else {
        f.corruptLoads++;
        log(`loaded ${started[1]}, but the newest complete checkpoint is ${newest.path}`);
      }
    }
    return child;
  };

  while (f.kills < o.kills) {
    const before = new Set(unfinishedEntries(o.dir));
    const child = await start();
    if (!child) continue;
    // Every other kill is aimed: it waits for a checkpoint write to begin (a new temporary
    // directory), then comes within the time a write takes; the others fall anywhere.
    const aimed = f.kills % 2 === 1;
    let delay = random() * (aimed ? 25 : maxDelay);
    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    if (aimed) {
      let skip = Math.floor(random() * 4);
      watcher = watch(o.dir, (_event, name) => {
        if (!name?.startsWith('.tmp-') || before.has(name) || skip-- > 0) return;
        watcher?.close();
        timer = setTimeout(() => child.kill(), delay);
      });
    } else {
      timer = setTimeout(() => child.kill(), delay);
    }
    const r = await child.exited;
    watcher?.close();
    clearTimeout(timer);
    if (r.signal !== 'SIGKILL') {
      if (r.code !== 0) throw new Error(`the trainer exited ${r.code} (not killed):\n${r.stderr}`);
      f.finishedEarly++;
      log('finished before its kill: the run is over');
      break;
    }
    f.kills++;
    // Only this child's: an earlier one's leftovers stay until a commit deletes them.
    const left = unfinishedEntries(o.dir).filter((n) => n.startsWith('.tmp-') && !before.has(n));
    if (left.length > 0) f.killedMidWrite++;
    log(`kill ${f.kills} ${aimed ? `${delay.toFixed(0)} ms into a write` : `after ${delay.toFixed(0)} ms`}: ${listCheckpoints(o.dir).map((c) => `step-${c.step}`).join(' ')}${left.length ? `, left ${left.join(' ')}` : ''}`);
  }

  // The rest of the run, without writing checkpoints (a fast finish; the resume is what counts).
  const last = await start(false);
  if (last) {
    const r = await last.exited;
    if (r.code !== 0) throw new Error(`the last resume exited ${r.code ?? r.signal}:\n${r.stderr}`);
    f.finalSha256 = /weights sha256 ([0-9a-f]{64})/.exec(r.stdout)?.[1] ?? '';
  }
  if (f.finalSha256 !== f.referenceSha256) f.corruptLoads++;
  f.seconds = (performance.now() - t0) / 1000;
  return f;
}

/** A small model with every kind of state a resume must carry: dropout streams, BatchNorm buffers, Adam slots. */
export const killModel = (features: number, classes: number): ModelSpec => ({
  inputShape: [features],
  layers: [
    { type: 'dense', inputs: features, units: 64, init: 'he' }, { type: 'batchNorm', channels: 64 }, { type: 'relu' }, { type: 'dropout', rate: 0.2 },
    { type: 'dense', inputs: 64, units: classes, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
});

/** Writes a seeded synthetic classification CSV (features f0.., label last) and the model's JSON beside it; returns the train flags. */
export function killFixture(dir: string, opts: { rows?: number; features?: number; classes?: number; epochs?: number } = {}): string[] {
  const { rows = 400, features = 16, classes = 4, epochs = 10 } = opts;
  mkdirSync(dir, { recursive: true });
  const random = uniform(7);
  const lines = [[...Array.from({ length: features }, (_, i) => `f${i}`), 'label'].join(',')];
  for (let n = 0; n < rows; n++) {
    const y = Math.floor(random() * classes);
    lines.push([...Array.from({ length: features }, (_, i) => (((i % classes) === y ? 1 : 0) + random() - 0.5).toFixed(4)), y].join(','));
  }
  writeFileSync(join(dir, 'data.csv'), `${lines.join('\n')}\n`);
  writeFileSync(join(dir, 'model.json'), JSON.stringify(killModel(features, classes)));
  return [
    '--dataset', `csv:${join(dir, 'data.csv')}`, '--model', join(dir, 'model.json'), '--optimizer', 'adam', '--lr', '0.01',
    '--lr-schedule', 'exponential', '--gamma', '0.9', '--noise', '0.05', '--batch-size', '16', '--micro-batches', '2',
    '--epochs', String(epochs), '--seed', '3',
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { kills: { type: 'string', default: '50' }, seed: { type: 'string', default: '1' }, 'max-delay-ms': { type: 'string', default: '400' }, epochs: { type: 'string', default: '40' } } });
  const work = mkdtempSync(join(tmpdir(), 'chainrule-kill-'));
  try {
    const train = killFixture(work, { epochs: Number(values.epochs) });
    const f = await killLoop({ kills: Number(values.kills), dir: join(work, 'ckpt'), train, seed: Number(values.seed), maxDelayMs: Number(values['max-delay-ms']), log: (s) => console.log(s) });
    console.log(JSON.stringify(f, null, 2));
    process.exitCode = f.corruptLoads === 0 && f.loadedNewest + f.refused === f.resumes && f.finishedEarly === 0 ? 0 : 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
