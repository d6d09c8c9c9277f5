/**
 * Small helpers shared by the benchmarks: a printed table of figures, an optional
 * machine-readable JSON line (`--json`), and a step timer.
 *
 * @example
 * const rows: Row[] = [
 *   { name: 'tfjs wasm mlp', value: 2000, unit: 'samples/s' },
 *   { name: 'chainrule mlp', value: 9000, unit: 'samples/s', ratio: { to: 'tfjs wasm mlp', value: 4.5 } },
 * ];
 * printTable(rows, 'Training throughput');
 * emitJson(rows); // prints one JSON line only when `--json` is in process.argv
 */

/** One measured figure; `ratio` says how it compares with another row's figure. */
export interface Row {
  name: string;
  value: number;
  unit: string;
  ratio?: { to: string; value: number };
}

/** True when `--json` is among the command-line arguments. */
export function wantsJson(argv: readonly string[] = process.argv): boolean {
  return argv.includes('--json');
}

/** Formats a figure with a sensible number of significant digits and thousands separators. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Builds a ratio row field `value / reference` (`{ to, value }`), or undefined if reference is not positive. */
export function ratioTo(value: number, to: string, reference: number): Row['ratio'] {
  return reference > 0 && Number.isFinite(reference) ? { to, value: value / reference } : undefined;
}

/** Renders rows as an aligned text table (name | value | unit | ratio). */
export function formatTable(rows: readonly Row[], title?: string): string {
  const cells = rows.map((r) => [
    r.name,
    formatValue(r.value),
    r.unit,
    r.ratio ? `${r.ratio.value.toFixed(2)}× ${r.ratio.to}` : '',
  ]);
  const header = ['name', 'value', 'unit', 'ratio'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string =>
    c.map((s, i) => (i === 1 ? s.padStart(widths[i]!) : s.padEnd(widths[i]!))).join('  ').trimEnd();
  const out: string[] = [];
  if (title) out.push(title);
  out.push(line(header), widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) out.push(line(c));
  return out.join('\n');
}

/** Prints a table to standard output (followed by a blank line). */
export function printTable(rows: readonly Row[], title?: string): void {
  process.stdout.write(formatTable(rows, title) + '\n\n');
}

/**
 * The JSON object for `--json`: every figure keyed by row name,
 * `{ [name]: { value, unit, ratio?: { to, value } } }`, plus optional extra fields.
 */
export function toJsonObject(rows: readonly Row[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const figures: Record<string, { value: number; unit: string; ratio?: { to: string; value: number } }> = {};
  for (const r of rows) figures[r.name] = r.ratio ? { value: r.value, unit: r.unit, ratio: r.ratio } : { value: r.value, unit: r.unit };
  return { ...extra, figures };
}

/**
 * When `--json` is among process.argv, writes ONE line holding a JSON object of every
 * figure (see toJsonObject). Call it last so that the line ends standard output.
 * Returns whether it wrote.
 */
export function emitJson(rows: readonly Row[], extra: Record<string, unknown> = {}, argv: readonly string[] = process.argv): boolean {
  if (!wantsJson(argv)) return false;
  process.stdout.write(JSON.stringify(toJsonObject(rows, extra)) + '\n');
  return true;
}

/** Result of timeIt: calls per second, and the calls and milliseconds measured. */
export interface Timing {
  perSecond: number;
  calls: number;
  ms: number;
}

/**
 * Runs `fn` `warmup` times untimed, then repeatedly for about `seconds` of wall time
 * (at least `minCalls` times) and returns the measured calls per second.
 */
export async function timeItDetailed(
  fn: () => unknown | Promise<unknown>,
  seconds: number,
  opts: { warmup?: number; minCalls?: number } = {},
): Promise<Timing> {
  const warmup = opts.warmup ?? 3;
  const minCalls = opts.minCalls ?? 1;
  for (let i = 0; i < warmup; i++) await fn();
  const budget = seconds * 1000;
  const t0 = performance.now();
  let calls = 0;
  let ms = 0;
  do {
    await fn();
    calls++;
    ms = performance.now() - t0;
  } while (ms < budget || calls < minCalls);
  return { perSecond: (calls * 1000) / ms, calls, ms };
}

/** Runs an async (or sync) step function for ~`seconds` after 3 warm-up calls; returns calls/s. */
export async function timeIt(fn: () => unknown | Promise<unknown>, seconds: number, warmup = 3): Promise<number> {
  return (await timeItDetailed(fn, seconds, { warmup })).perSecond;
}
