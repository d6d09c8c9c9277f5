/**
 * `chainrule report DIR`: one self-contained DIR/report.html (inline CSS and SVG, no script,
 * nothing fetched) from the run log that `chainrule train --log-dir DIR` wrote: loss and
 * accuracy curves, the measured pipeline timeline of one traced step (one row per actor),
 * measured vs theoretical bubble, per-actor busy/idle, the confusion matrix on the test
 * split, and the run's configuration. Every figure comes from the files as written: the
 * measured bubble is summary.json's `bubbleFraction`, the very number the run returned.
 *
 * @example
 * writeReport('runs/a')   // 'runs/a/report.html'
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RunLogError, runLogFiles, type RunRecord } from './run-log.js';
import type { EpochReport, TrainSummary } from './summary.js';
import type { ChromeTrace, TraceEvent } from './trace.js';
import { bubbleFormula } from './schedules/index.js';

export interface RunLogContents {
  dir: string;
  summary: TrainSummary;
  run: RunRecord | null;
  steps: { step: number; epoch: number; loss: number; samplesPerSecond: number; lr?: number; gradNorm?: number }[];
  epochs: EpochReport[];
  trace: ChromeTrace | null;
}

function readJson(dir: string, name: string, required: boolean): unknown {
  const path = join(dir, name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new RunLogError('NO_RUN_LOG', `${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, `train with --log-dir ${dir} first, then run chainrule report ${dir}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new RunLogError('BAD_RUN_LOG', `${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** Reads what `--log-dir DIR` wrote; summary.json is required, the rest is shown when present. */
export function readRunLog(dir: string): RunLogContents {
  const summary = readJson(dir, runLogFiles.summary, true) as TrainSummary;
  if (summary === null || typeof summary !== 'object' || typeof summary.bubbleFraction !== 'number') {
    throw new RunLogError('BAD_RUN_LOG', `${join(dir, runLogFiles.summary)}: not a chainrule summary (no bubbleFraction)`);
  }
  const run = readJson(dir, runLogFiles.run, false) as RunRecord | null;
  const trace = readJson(dir, runLogFiles.trace, false) as ChromeTrace | null;
  const steps: RunLogContents['steps'] = [];
  const epochs: EpochReport[] = [];
  let lines: string[] = [];
  try {
    lines = readFileSync(join(dir, runLogFiles.metrics), 'utf8').split('\n');
  } catch {
    // no per-step metrics: the curves use the summary's history
  }
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let v: { type?: string } & Record<string, unknown>;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new RunLogError('BAD_RUN_LOG', `${join(dir, runLogFiles.metrics)} line ${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    if (v.type === 'step') steps.push(v as unknown as RunLogContents['steps'][number]);
    else if (v.type === 'epoch') epochs.push(v as unknown as EpochReport);
  }
  return { dir, summary, run, steps, epochs: epochs.length > 0 ? epochs : (summary.history ?? []), trace };
}

/** Writes DIR/report.html and returns its path. */
export function writeReport(dir: string): string {
  const html = renderReport(readRunLog(dir));
  const path = join(dir, 'report.html');
  try {
    writeFileSync(`${path}.tmp`, html);
    renameSync(`${path}.tmp`, path);
  } catch (e) {
    throw new RunLogError('WRITE_FAILED', `cannot write ${path}: ${(e as Error).message}`);
  }
  return path;
}

// ---------------------------------------------------------------- rendering

const esc = (v: unknown) => String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const pct = (x: number | null | undefined, digits = 1) => (typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '–');
const num = (x: unknown, digits = 4) => (typeof x === 'number' && Number.isFinite(x) ? (Number.isInteger(x) ? String(x) : x.toFixed(digits)) : x === null || x === undefined ? '–' : esc(typeof x === 'object' ? JSON.stringify(x) : x));

export const kindColors: Record<string, string> = {
  forward: '#4e79a7', backward: '#f28e2b', weight: '#edc948', wait: '#d9d9d9', send: '#b07aa1', reduce: '#e15759', optimizer: '#59a14f',
};
const kindLetter: Record<string, string> = { forward: 'F', backward: 'B', weight: 'W' };

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

interface Series { name: string; color: string; points: [number, number][]; width?: number; dots?: boolean; opacity?: number }

function lineChart(id: string, title: string, series: Series[], xLabel: string, yFormat: (v: number) => string = (v) => String(v)): string {
  const W = 500, H = 250, L = 56, R = 12, T = 14, B = 40;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) return `<p class="none">${esc(title)}: nothing recorded.</p>`;
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [`<svg id="${id}" class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`];
  for (const t of ticks(y0, y1)) parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}"/><text class="tick" x="${L - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end">${esc(yFormat(t))}</text>`);
  // Steps and epochs are whole numbers: no tick between them.
  const wholeX = pts.every(([x]) => Number.isInteger(x));
  for (const t of ticks(x0, x1, 6).filter((v) => !wholeX || Number.isInteger(v))) parts.push(`<text class="tick" x="${sx(t).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${esc(t)}</text>`);
  parts.push(`<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>`);
  parts.push(`<text class="label" x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel)}</text>`);
  for (const s of series) {
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (p.length === 0) continue;
    const d = p.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}" stroke-opacity="${s.opacity ?? 1}"><title>${esc(s.name)}</title></path>`);
    if (s.dots) for (const [x, y] of p) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"><title>${esc(`${s.name}: ${yFormat(y)}`)}</title></circle>`);
  }
  parts.push('</svg>');
  const legend = series.filter((s) => s.points.length > 0).map((s) => `<span class="key"><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join('');
  return `<figure><figcaption>${esc(title)}</figcaption>${parts.join('')}<div class="legend">${legend}</div></figure>`;
}

function curves(c: RunLogContents): string {
  const { steps, epochs } = c;
  // An epoch's figures sit at its last step; without step lines (full-batch), at the epoch.
  const lastStep = new Map<number, number>();
  for (const s of steps) lastStep.set(s.epoch, Math.max(lastStep.get(s.epoch) ?? 0, s.step));
  const xOf = (e: number) => (steps.length > 0 ? lastStep.get(e) ?? NaN : e);
  const xLabel = steps.length > 0 ? 'step' : 'epoch';
  const loss = lineChart('loss-chart', 'Loss', [
    { name: 'train loss per step', color: '#9ab3d5', width: 1, opacity: 0.8, points: steps.map((s) => [s.step, s.loss]) },
    { name: 'train loss per epoch', color: '#4e79a7', dots: true, points: epochs.map((e) => [xOf(e.epoch), e.trainLoss]) },
    { name: 'test loss', color: '#e15759', dots: true, points: epochs.map((e) => [xOf(e.epoch), e.testLoss]) },
  ], xLabel, (v) => v.toPrecision(3));
  const acc = epochs.some((e) => typeof e.testAccuracy === 'number')
    ? lineChart('accuracy-chart', 'Test accuracy', [{ name: 'test accuracy', color: '#59a14f', dots: true, points: epochs.filter((e) => typeof e.testAccuracy === 'number').map((e) => [xOf(e.epoch), e.testAccuracy!]) }], xLabel, (v) => `${(v * 100).toFixed(1)}%`)
    : '<p class="none">Accuracy: not a classifier.</p>';
  return `<section id="curves"><h2>Training curves</h2><div class="row">${loss}${acc}</div></section>`;
}

/** The traced step shown: the one of median duration (steady state, no outlier). */
export function chosenStep(trace: ChromeTrace): number | null {
  const steps = [...(trace.otherData?.steps ?? [])].sort((a, b) => a.wallMs - b.wallMs);
  return steps.length === 0 ? null : steps[Math.floor((steps.length - 1) / 2)]!.step;
}

function timeline(c: RunLogContents): string {
  const trace = c.trace;
  const actors = trace?.otherData?.actors ?? c.run?.actors.map((a) => a.name) ?? [];
  const step = trace ? chosenStep(trace) : null;
  const events = (trace?.traceEvents ?? []).filter((e): e is TraceEvent & { ts: number; dur: number } => e.ph === 'X' && (e.args as { step?: number } | undefined)?.step === step && typeof e.ts === 'number' && typeof e.dur === 'number');
  const own = events.filter((e) => e.pid >= 1 && e.pid <= actors.length);
  const stepEvent = events.find((e) => e.cat === 'step');
  const t0 = stepEvent?.ts ?? Math.min(...own.map((e) => e.ts), 0);
  const t1 = Math.max(stepEvent ? stepEvent.ts + stepEvent.dur : 0, ...own.map((e) => e.ts + e.dur), t0 + 1);
  const W = 1000, L = 190, R = 12, T = 8, rowH = 30, barH = 20, axisH = 34;
  const H = T + rowH * actors.length + axisH;
  const sx = (ts: number) => L + ((ts - t0) / (t1 - t0)) * (W - L - R);
  const parts: string[] = [`<svg id="timeline" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="measured pipeline timeline">`];
  for (const [a, name] of actors.entries()) {
    const y = T + a * rowH;
    const pid = a + 1;
    parts.push(`<g class="row" data-actor="${a}"><text class="actor" x="${L - 8}" y="${y + barH / 2 + 4}" text-anchor="end">${esc(name)}</text><rect class="lane" x="${L}" y="${y}" width="${W - L - R}" height="${barH + 5}"/>`);
    for (const e of own.filter((ev) => ev.pid === pid)) {
      const kind = e.cat ?? 'forward';
      const x = sx(e.ts);
      const w = Math.max(0.5, sx(e.ts + e.dur) - x);
      // Sends overlap the compute they follow: a thin strip under the row.
      const [yy, hh] = kind === 'send' ? [y + barH + 1, 4] : [y, barH];
      const mb = (e.args as { microBatch?: number } | undefined)?.microBatch ?? -1;
      parts.push(`<rect class="span ${esc(kind)}" data-kind="${esc(kind)}" x="${x.toFixed(2)}" y="${yy}" width="${w.toFixed(2)}" height="${hh}" fill="${kindColors[kind] ?? '#999'}"><title>${esc(`${name}: ${e.name} — ${(e.dur / 1000).toFixed(3)} ms`)}</title></rect>`);
      if (kindLetter[kind] && mb >= 0 && w > 14) parts.push(`<text class="mb" x="${(x + w / 2).toFixed(2)}" y="${y + barH / 2 + 4}" text-anchor="middle">${kindLetter[kind]}${mb}</text>`);
    }
    parts.push('</g>');
  }
  const axisY = T + rowH * actors.length + 4;
  parts.push(`<line class="axis" x1="${L}" x2="${W - R}" y1="${axisY}" y2="${axisY}"/>`);
  for (const t of ticks(0, (t1 - t0) / 1000, 8)) parts.push(`<text class="tick" x="${sx(t0 + t * 1000).toFixed(1)}" y="${axisY + 14}" text-anchor="middle">${esc(t)}</text>`);
  parts.push(`<text class="label" x="${(L + W - R) / 2}" y="${axisY + 29}" text-anchor="middle">ms from the coordinator's send</text></svg>`);
  // The weight key only where W spans are (zero-bubble schedules): elsewhere B includes it.
  const kinds = new Set(own.map((e) => e.cat));
  const legend = Object.entries(kindColors).filter(([k]) => k !== 'weight' || kinds.has('weight')).map(([k, col]) => `<span class="key"><i style="background:${col}"></i>${k === 'wait' ? 'receive (wait)' : k === 'weight' ? 'weight gradient (W)' : k}</span>`).join('');
  const offsets = trace?.otherData?.offsets ?? [];
  const applied = offsets.filter((o) => o.applied).length;
  const caption = step === null
    ? 'No step was traced (--trace-steps 0, or the run log has no trace.json): the rows are empty.'
    : `Step ${step} (median duration of ${trace!.otherData.steps.length} traced), ${((t1 - t0) / 1000).toFixed(2)} ms. Times are each actor's own clock (performance.timeOrigin + performance.now()); ${applied === 0 ? 'no clock offset was needed (all within their measurement bound)' : `${applied} actor clock(s) shifted by the offset measured from the traced round trips`}.`;
  return `<section id="pipeline"><h2>Measured pipeline timeline</h2><p>${esc(caption)}</p>${parts.join('')}<div class="legend">${legend}</div></section>`;
}

function bubble(c: RunLogContents): string {
  const s = c.summary;
  const bar = (id: string, label: string, v: number, color: string) =>
    `<div class="meter" id="${id}" data-value="${esc(String(v))}"><span class="name">${esc(label)}</span><span class="track"><span class="fill" style="width:${Math.max(0, Math.min(1, v)) * 100}%;background:${color}"></span></span><span class="val">${pct(v)}</span></div>`;
  const perEpoch = c.epochs.filter((e) => typeof e.bubbleFraction === 'number');
  const epochRows = perEpoch.map((e) => `<tr><td>${e.epoch}</td><td>${pct(e.bubbleFraction)}</td></tr>`).join('');
  return `<section id="bubble"><h2>Bubble: measured vs theoretical</h2>
${bar('measured-bubble', 'measured', s.bubbleFraction, '#e15759')}
${bar('theoretical-bubble', `theoretical ${bubbleFormula(s.schedule)}, K=${s.stages / (s.virtualStages ?? 1)}${(s.virtualStages ?? 1) > 1 ? `, V=${s.virtualStages}` : ''}, M=${s.microBatches}`, s.theoreticalBubbleFraction, '#bab0ac')}
<p class="note">Measured: the share of actor time in the run's steps not spent computing (forward, backward, weight gradient, replica reduce), against each step's slowest actor — the summary's <code>bubbleFraction</code>. The theory counts only pipeline fill and drain; the measurement adds transfer, waiting on a slower stage and the coordinator's round trip.</p>
${epochRows ? `<table class="small"><tr><th>epoch</th><th>measured bubble</th></tr>${epochRows}</table>` : ''}</section>`;
}

function busyIdle(c: RunLogContents): string {
  const actors = c.run?.actors ?? [];
  if (actors.length === 0) return '<section id="busy"><h2>Busy and idle per actor</h2><p class="none">Not recorded (no run.json).</p></section>';
  const rows = actors.map((a) => {
    const busy = a.wallMs > 0 ? Math.min(1, a.busyMs / a.wallMs) : 0;
    return `<div class="meter actor-usage" data-actor="${esc(a.name)}"><span class="name">${esc(a.name)}</span><span class="track"><span class="fill" style="width:${busy * 100}%;background:#4e79a7"></span><span class="fill idle" style="width:${(1 - busy) * 100}%"></span></span><span class="val">${pct(busy)} busy · ${pct(1 - busy)} idle</span></div>`;
  }).join('\n');
  return `<section id="busy"><h2>Busy and idle per actor</h2>${rows}<p class="note">Busy time summed over every step against the steps' wall time; the idle shares average to the measured bubble.</p></section>`;
}

function confusion(c: RunLogContents): string {
  const m = c.run?.confusion;
  if (!m || m.length === 0) return `<section id="confusion"><h2>Confusion matrix</h2><p class="none">${c.run ? 'Not a classifier.' : 'Not recorded (no run.json).'}</p></section>`;
  const n = m.length;
  const head = `<tr><th class="corner">true \\ predicted</th>${m.map((_, j) => `<th>${j}</th>`).join('')}<th>recall</th></tr>`;
  let total = 0, right = 0;
  const body = m.map((row, i) => {
    const sum = row.reduce((a, b) => a + b, 0);
    total += sum;
    right += row[i] ?? 0;
    const cells = row.map((v, j) => {
      const f = sum > 0 ? v / sum : 0;
      const bg = i === j ? `rgba(89,161,79,${(0.15 + 0.85 * f).toFixed(3)})` : v > 0 ? `rgba(225,87,89,${(0.1 + 0.9 * Math.min(1, f * 4)).toFixed(3)})` : 'transparent';
      return `<td style="background:${bg}" title="true ${i}, predicted ${j}: ${v}">${v}</td>`;
    }).join('');
    return `<tr><th>${i}</th>${cells}<td class="recall">${pct(sum > 0 ? (row[i] ?? 0) / sum : null)}</td></tr>`;
  }).join('');
  return `<section id="confusion"><h2>Confusion matrix (test split)</h2><table class="confusion" data-classes="${n}">${head}${body}</table><p class="note">${right} of ${total} test samples right (${pct(total > 0 ? right / total : null, 2)}).</p></section>`;
}

function configuration(c: RunLogContents): string {
  const s = c.summary;
  const facts: [string, unknown][] = [
    ['placement', s.placement], ['replicas × stages', `${s.replicas} × ${s.stages}`], ['layers per stage', s.partition?.join(', ')],
    ['micro-batches', s.microBatches], ['schedule', s.schedule], ['backend', s.backendKernel ? `${s.backend} (${s.backendKernel})` : s.backend],
    ['optimizer', `${s.optimizer}, lr ${s.lr}`], ['batch size', s.batchSize], ['seed', s.seed], ['parameters', s.parameters],
    ['epochs', s.epochs], ['samples/s', Math.round(s.samplesPerSecond)], ['wall time', typeof s.wallSeconds === 'number' ? `${s.wallSeconds.toFixed(2)} s` : undefined],
    ['weights sha256', s.weightsSha256], ['versions', s.versions ? `chainrule ${s.versions.chainrule}, Node ${s.versions.node}` : undefined],
  ];
  const opts = Object.entries(c.run?.options ?? {});
  const row = ([k, v]: [string, unknown]) => `<tr><th>${esc(k)}</th><td>${typeof v === 'string' ? esc(v) : num(v)}</td></tr>`;
  const layers = c.run?.model?.layers?.map((l, i) => `${i}: ${l.type}${typeof l.units === 'number' ? ` ${l.units}` : ''}`).join(' · ');
  return `<section id="config"><h2>Configuration</h2><div class="row"><table class="kv">${facts.filter(([, v]) => v !== undefined).map(row).join('')}</table>
<table class="kv options"><tr><th colspan="2">options</th></tr>${opts.map(([k, v]) => row([k, typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)])).join('')}</table></div>
${layers ? `<p class="note">Model: ${esc(layers)}</p>` : ''}</section>`;
}

function epochTable(c: RunLogContents): string {
  if (c.epochs.length === 0) return '';
  const rows = c.epochs.map((e) => `<tr><td>${e.epoch}</td><td>${num(e.trainLoss)}</td><td>${num(e.testLoss)}</td><td>${pct(e.testAccuracy, 2)}</td><td>${Math.round(e.samplesPerSecond)}</td><td>${num(e.seconds, 2)}</td></tr>`).join('');
  return `<table class="small epochs"><tr><th>epoch</th><th>train loss</th><th>test loss</th><th>test accuracy</th><th>samples/s</th><th>seconds</th></tr>${rows}</table>`;
}

const css = `
:root{--fg:#222;--mute:#666;--line:#ddd}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);margin:24px auto;max-width:1080px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
.sub{color:var(--mute);margin:0 0 12px}.figures{display:flex;gap:12px;flex-wrap:wrap}
.figure{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:130px}.figure b{display:block;font-size:20px}.figure span{color:var(--mute);font-size:12px}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}figure{margin:0}figcaption{font-weight:600;margin-bottom:2px}
svg text{font-family:inherit}.tick{font-size:11px;fill:#555}.label{font-size:12px;fill:#444}.grid{stroke:#eee}.axis{stroke:#888}
.actor{font-size:12px;fill:#222}.lane{fill:#fafafa;stroke:#eee}.mb{font-size:10px;fill:#fff;pointer-events:none}
.legend{display:flex;gap:12px;flex-wrap:wrap;font-size:12px;color:#444;margin-top:4px}.key i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
.meter{display:grid;grid-template-columns:300px 1fr 170px;gap:10px;align-items:center;margin:4px 0}.meter .name{text-align:right;color:#333}
.track{display:flex;height:16px;background:#f1f1f1;border-radius:3px;overflow:hidden}.fill{display:block;height:100%}.fill.idle{background:#e8e8e8}
.note{color:var(--mute);font-size:12.5px;max-width:900px}.none{color:var(--mute);font-style:italic}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid var(--line);padding:3px 8px;text-align:right}th{background:#f7f7f7;font-weight:600}
table.kv th{text-align:left}table.kv td{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-all;max-width:420px}
table.confusion td{min-width:42px;font-variant-numeric:tabular-nums}table.confusion .corner{font-size:11px;color:var(--mute)}
table.small{font-size:12.5px}code{font-size:12.5px;background:#f4f4f4;padding:0 3px;border-radius:3px}
`;

/** The whole report as one HTML string (no script, no external resource). */
export function renderReport(c: RunLogContents): string {
  const s = c.summary;
  const model = c.run ? (typeof c.run.options.model === 'string' ? c.run.options.model : 'a model spec') : 'model';
  const dataset = c.run && typeof c.run.options.dataset === 'string' ? c.run.options.dataset : 'data';
  const figure = (label: string, value: string) => `<div class="figure"><b>${esc(value)}</b><span>${esc(label)}</span></div>`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chainrule report — ${esc(model)} on ${esc(dataset)}</title>
<style>${css}</style></head><body>
<h1>chainrule run report</h1>
<p class="sub">${esc(model)} on ${esc(dataset)} · ${esc(s.placement)}, ${s.replicas > 1 ? `${s.replicas} replicas × ` : ''}${s.stages} stage(s), ${s.microBatches} micro-batch(es), ${esc(s.schedule)} · ${esc(c.dir)}</p>
<div class="figures">${figure('test accuracy', pct(s.testAccuracy, 2))}${figure('test loss', num(s.testLoss))}${figure('train loss', num(s.trainLoss))}${figure('samples/s', String(Math.round(s.samplesPerSecond)))}${figure('measured bubble', pct(s.bubbleFraction))}${figure('wall time', typeof s.wallSeconds === 'number' ? `${s.wallSeconds.toFixed(1)} s` : '–')}</div>
${curves(c)}
${epochTable(c)}
${timeline(c)}
${bubble(c)}
${busyIdle(c)}
${confusion(c)}
${configuration(c)}
</body></html>
`;
}
