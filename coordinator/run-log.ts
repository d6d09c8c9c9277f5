/**
 * What `--log-dir DIR` keeps of a run, for `chainrule report DIR` and for other tools:
 *   metrics.jsonl  one JSON line per step ({"type":"step",...}) and per epoch ({"type":"epoch",...})
 *   trace.json     the traced steps in the Chrome trace event format (coordinator/trace.ts)
 *   summary.json   the run's summary: the very object `--json` prints and train() returns
 *   run.json       what the report needs besides: configuration, per-actor busy time, confusion matrix
 *
 * @example
 * const log = new RunLog('runs/a');         // creates the directory, truncates metrics.jsonl
 * log.step({ step: 1, epoch: 1, loss: 2.3, ... });
 * log.finish({ summary, trace, run });      // writes the other three files
 */
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ChainruleError } from '../src/errors.js';
import type { ModelSpec } from '../src/nn/index.js';
import { formatAction, type Schedule } from '../src/wire/index.js';
import type { EpochReport, StepInfo, TrainSummary } from './summary.js';
import { StepTracer, type ChromeTrace } from './trace.js';

export class RunLogError extends ChainruleError {
  constructor(code: 'WRITE_FAILED' | 'NO_RUN_LOG' | 'BAD_RUN_LOG', message: string, hint?: string) {
    super(code, message, { hint });
  }
}

export const runLogFiles = { metrics: 'metrics.jsonl', trace: 'trace.json', summary: 'summary.json', run: 'run.json' } as const;

/** One actor's share of the run: busy (computing, reducing) time against the steps' wall time. */
export interface ActorUsage { name: string; stage: number; replica: number; busyMs: number; wallMs: number }

/** run.json. */
export interface RunRecord {
  format: 'chainrule-run';
  version: 1;
  /** The resolved options that have a JSON form (functions, datasets and transports objects left out). */
  options: Record<string, unknown>;
  model: ModelSpec;
  /** Each stage's planned actions (`F0`, `B0`, ...), the schedule the actors ran. */
  schedule: string[][];
  actors: ActorUsage[];
  /** counts[true class][predicted class] on the test split; null for models that are not classifiers. */
  confusion: number[][] | null;
  /** The steps traced into trace.json: [first, last). */
  tracedSteps: [number, number];
}

export type StepLine = StepInfo & { stepMs: number };

export class RunLog {
  private fd: number | null;

  /** `append`: go on with metrics.jsonl (a Coordinator's train() called again) instead of starting it anew. */
  constructor(readonly dir: string, opts: { append?: boolean } = {}) {
    try {
      mkdirSync(dir, { recursive: true });
      this.fd = openSync(join(dir, runLogFiles.metrics), opts.append ? 'a' : 'w');
    } catch (e) {
      throw new RunLogError('WRITE_FAILED', `--log-dir ${dir}: cannot create the run log: ${(e as Error).message}`);
    }
  }

  private line(obj: object): void {
    if (this.fd === null) return;
    try {
      writeSync(this.fd, JSON.stringify(obj) + '\n');
    } catch (e) {
      throw new RunLogError('WRITE_FAILED', `cannot write ${join(this.dir, runLogFiles.metrics)}: ${(e as Error).message}`);
    }
  }

  step(s: StepLine): void {
    this.line({ type: 'step', ...s });
  }

  epoch(r: EpochReport): void {
    this.line({ type: 'epoch', ...r });
  }

  /** Writes trace.json, summary.json and run.json (each whole or not at all) and closes metrics.jsonl. */
  finish(parts: { summary: TrainSummary; trace: ChromeTrace; run: RunRecord }): void {
    this.close();
    const files: [string, unknown][] = [[runLogFiles.trace, parts.trace], [runLogFiles.summary, parts.summary], [runLogFiles.run, parts.run]];
    for (const [name, value] of files) {
      const path = join(this.dir, name);
      try {
        writeFileSync(`${path}.tmp`, JSON.stringify(value, null, name === runLogFiles.trace ? undefined : 2) + '\n');
        renameSync(`${path}.tmp`, path);
      } catch (e) {
        throw new RunLogError('WRITE_FAILED', `cannot write ${path}: ${(e as Error).message}`);
      }
    }
  }

  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    closeSync(fd);
  }
}

/** What the end of a run leaves in its log besides the summary. */
export interface RunEnd {
  summary: TrainSummary;
  /** The steps traced, if any. */
  tracer: StepTracer | null;
  /** Each actor's name, in actor order (replica-major), and its busy and wall time. */
  actorNames: readonly string[];
  usage: readonly { busyMs: number; wallMs: number }[];
  stages: number;
  replicas: number;
  options: Record<string, unknown>;
  model: ModelSpec;
  schedule: Schedule;
  confusion: number[][] | null;
}

/** Ends the run log: the summary as returned, the trace, and run.json. */
export function writeRunLog(log: RunLog, end: RunEnd): void {
  const { actorNames: names, stages: K, usage, tracer } = end;
  log.finish({
    summary: end.summary,
    trace: (tracer ?? new StepTracer(0, 0)).chromeTrace(names, { stages: K, replicas: end.replicas }),
    run: {
      format: 'chainrule-run', version: 1, options: jsonOptions(end.options), model: end.model,
      schedule: end.schedule.map((actions) => actions.map(formatAction)),
      actors: names.map((name, a) => ({ name, stage: a % K, replica: Math.floor(a / K), busyMs: usage[a]?.busyMs ?? 0, wallMs: usage[a]?.wallMs ?? 0 })),
      confusion: end.confusion,
      tracedSteps: tracer ? [tracer.first, tracer.last] : [0, 0],
    },
  });
}

/** The options as JSON: plain values kept, objects given in their place (a dataset, a transport) named by kind. */
export function jsonOptions(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || typeof v === 'function') continue;
    if (k === 'dataset' && typeof v === 'object') { out[k] = '(datasets given in the API)'; continue; }
    if (k === 'placement' && typeof v === 'object') { out[k] = (v as { kind?: string }).kind ?? '(a transport)'; continue; }
    out[k] = v;
  }
  return out;
}
