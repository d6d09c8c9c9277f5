/**
 * Numeric CSV files: one sample per line, comma-separated numbers, and either one column of
 * integer class labels (classification) or one or more target columns of floats (regression,
 * multi-label). Errors name the file, the line and the column.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Rng } from '../tensor/rng.js';
import { type Dataset, type LabeledDataset, type TargetDataset, subset } from './dataset.js';
import { DataError, describe } from './errors.js';
import { describeValue } from '../errors.js';

export interface CsvOptions {
  /** The label column: a 0-based index or a header name. Default: the last column. */
  labelColumn?: number | string;
  /**
   * Float target columns instead of a label column (0-based indices or header names), in
   * target order: the datasets get `targets` of shape `[targetColumns.length]`.
   */
  targetColumns?: readonly (number | string)[];
  /** Whether the first line is a header; 'auto' (default) treats it as one if any cell is not a number. */
  header?: 'auto' | boolean;
  /** Fraction of the rows held out for `test`, in [0, 1). Default 0.2. */
  testFraction?: number;
  /** Seed of the train/test shuffle. Default 0. */
  seed?: number;
}

export interface CsvSplit<D extends Dataset = Dataset> {
  train: D;
  test: D;
  /** Header names of the input columns (`col<i>` when there is no header), in input order. */
  featureNames: string[];
  /** Header names of the target columns, in target order (with `targetColumns`). */
  targetNames?: string[];
}

/** Keys the CSV split's stream apart from other uses of the same seed. */
export const CSV_SPLIT_STREAM = 0x637376; // 'csv'

// Plain decimals only: Number() would also take '', ' ', '0x1f', 'Infinity'.
// NOTE: one way to match each string: `\d+\.?\d*` backtracks quadratically on a long digit run.
const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function parseCell(text: string): number {
  return NUMBER.test(text) ? Number(text) : NaN;
}

function unquote(cell: string): string {
  const t = cell.trim();
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1).replace(/""/g, '"') : t;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataError('FILE_NOT_FOUND', `CSV file not found: ${path}`, 'check the path (relative paths are from the working directory)');
    throw new DataError('FILE_UNREADABLE', `cannot read CSV file ${path}: ${err.message}`);
  }
}

/** The non-blank lines of CSV text split into trimmed cells, with their physical line numbers. */
function splitRows(text: string, path: string): { line: number; cells: string[] }[] {
  if (typeof text !== 'string') throw new DataError('BAD_OPTION', `CSV ${path}: the text must be a string, got ${describe(text)}`);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);

  // Physical line numbers are kept for messages; blank lines are skipped.
  const lines = text.split(/\r?\n/);
  const rows: { line: number; cells: string[] }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.trim() === '') continue;
    rows.push({ line: i + 1, cells: l.split(',').map((c) => c.trim()) });
  }
  if (rows.length === 0) throw new DataError('EMPTY_FILE', `CSV file ${path} is empty (no non-blank lines)`);
  return rows;
}

/** The inputs of a label-free CSV file: every column is a feature. */
export interface CsvInputs {
  inputs: Float32Array;
  rows: number;
  columns: number;
  /** Header names (`col<i>` when there is no header). */
  featureNames: string[];
}

/**
 * Reads a numeric CSV file with no label column (inputs to predict on): one sample per
 * line, every column a feature; a header line is allowed ('auto' treats the first line as
 * one if any cell is not a number).
 * @example const { inputs, rows, columns } = readCsvInputs('new-flowers.csv');
 */
export function readCsvInputs(path: string, options: Pick<CsvOptions, 'header'> = {}): CsvInputs {
  checkInputsOptions(options);
  return parseCsvInputs(readText(path), path, options);
}

function checkInputsOptions(options: Pick<CsvOptions, 'header'>): void {
  if (options === null || typeof options !== 'object') throw new DataError('BAD_OPTION', `readCsvInputs: options must be an object, got ${describe(options)}`);
  const { header = 'auto' } = options;
  if (header !== 'auto' && header !== true && header !== false) {
    throw new DataError('BAD_OPTION', `readCsvInputs: options.header must be 'auto', true or false, got ${describe(header)}`);
  }
}

/**
 * Parses label-free CSV text as `readCsvInputs` parses a file; `path` names the source in messages.
 * @example const { rows, columns } = parseCsvInputs('1,2\n3,4\n', 'inline.csv'); // 2, 2
 */
export function parseCsvInputs(text: string, path: string, options: Pick<CsvOptions, 'header'> = {}): CsvInputs {
  checkInputsOptions(options);
  const { header = 'auto' } = options;
  const rows = splitRows(text, path);
  const first = rows[0]!;
  const hasHeader = header === 'auto' ? first.cells.some((c) => Number.isNaN(parseCell(c))) : header;
  const columns = first.cells.length;
  const names = hasHeader ? first.cells.map(unquote) : first.cells.map((_, i) => `col${i}`);
  const body = hasHeader ? rows.slice(1) : rows;
  if (body.length === 0) throw new DataError('EMPTY_FILE', `CSV file ${path} has a header (line ${first.line}) but no data rows`);
  const inputs = new Float32Array(body.length * columns);
  for (let r = 0; r < body.length; r++) {
    const { line, cells } = body[r]!;
    if (cells.length !== columns) {
      throw new DataError('RAGGED_ROW', `${path}:${line}: expected ${columns} columns, found ${cells.length}`,
        hasHeader ? `the header on line ${first.line} has ${columns}` : `line ${first.line} has ${columns}`);
    }
    for (let c = 0; c < columns; c++) {
      const v = parseCell(cells[c]!);
      if (!Number.isFinite(v)) {
        throw new DataError('NOT_A_NUMBER', `${path}:${line}:${c + 1}: column${hasHeader ? ` (${describeValue(names[c], 60)})` : ''} is not a number: ${describeValue(cells[c], 60)}`);
      }
      inputs[r * columns + c] = v;
    }
  }
  return { inputs, rows: body.length, columns, featureNames: names };
}

/** Resolves a column given by index or header name; `what` names the option in messages. */
function columnIndex(col: number | string, what: string, path: string, names: string[], hasHeader: boolean): number {
  if (typeof col === 'number') {
    if (!Number.isSafeInteger(col) || col < 0) throw new DataError('BAD_OPTION', `loadCsv: ${what} must be a non-negative integer or a header name, got ${describe(col)}`);
    if (col >= names.length) {
      throw new DataError('BAD_OPTION', `loadCsv: ${what} ${col} is out of range: ${path} has ${names.length} columns (0..${names.length - 1})`);
    }
    return col;
  }
  if (typeof col !== 'string') throw new DataError('BAD_OPTION', `loadCsv: ${what} must be a non-negative integer or a header name, got ${describe(col)}`);
  if (!hasHeader) {
    throw new DataError('BAD_OPTION', `loadCsv: ${what} ${JSON.stringify(col)} is a name, but ${path} has no header`,
      'give the column index instead, or set header: true');
  }
  const i = names.indexOf(col);
  if (i < 0) {
    throw new DataError('BAD_OPTION', `loadCsv: ${what} ${JSON.stringify(col)} is not a column of ${path}; columns are ${names.slice(0, 20).map((n) => describeValue(n, 60)).join(', ')}${names.length > 20 ? `, … (${names.length} in all)` : ''}`);
  }
  return i;
}

/**
 * Loads a numeric CSV file and splits it (seeded shuffle) into train and test. With
 * `targetColumns`, those columns are float targets (regression, multi-label) and every other
 * column an input; otherwise one column holds integer class labels.
 * @example const { train, test } = loadCsv('iris.csv', { labelColumn: 'species', testFraction: 0.25, seed: 7 });
 * @example const { train } = loadCsv('houses.csv', { targetColumns: ['price'] }); // train.targetShape = [1]
 */
export function loadCsv(path: string, options: CsvOptions & { targetColumns: readonly (number | string)[] }): CsvSplit<TargetDataset>;
export function loadCsv(path: string, options?: CsvOptions & { targetColumns?: undefined }): CsvSplit<LabeledDataset>;
export function loadCsv(path: string, options?: CsvOptions): CsvSplit;
export function loadCsv(path: string, options: CsvOptions = {}): CsvSplit {
  checkOptions(options);
  return parseCsv(readText(path), path, options);
}

function checkOptions(options: CsvOptions): void {
  if (options === null || typeof options !== 'object') throw new DataError('BAD_OPTION', `loadCsv: options must be an object, got ${describe(options)}`);
  const { labelColumn, targetColumns, header = 'auto', testFraction = 0.2, seed = 0 } = options;
  if (header !== 'auto' && header !== true && header !== false) {
    throw new DataError('BAD_OPTION', `loadCsv: options.header must be 'auto', true or false, got ${describe(header)}`);
  }
  if (typeof testFraction !== 'number' || !(testFraction >= 0 && testFraction < 1)) {
    throw new DataError('BAD_OPTION', `loadCsv: options.testFraction must be a number in [0, 1), got ${describe(testFraction)}`);
  }
  if (typeof seed !== 'number' || !Number.isFinite(seed)) {
    throw new DataError('BAD_OPTION', `loadCsv: options.seed must be a finite number, got ${describe(seed)}`);
  }
  if (labelColumn !== undefined && typeof labelColumn !== 'string' &&
      (typeof labelColumn !== 'number' || !Number.isSafeInteger(labelColumn) || labelColumn < 0)) {
    throw new DataError('BAD_OPTION', `loadCsv: options.labelColumn must be a non-negative integer or a header name, got ${describe(labelColumn)}`);
  }
  if (targetColumns !== undefined) {
    if (!Array.isArray(targetColumns) || targetColumns.length === 0) {
      throw new DataError('BAD_OPTION', `loadCsv: options.targetColumns must be a non-empty array of column indices or header names, got ${describe(targetColumns)}`);
    }
    if (labelColumn !== undefined) {
      throw new DataError('BAD_OPTION', 'loadCsv: options.labelColumn and options.targetColumns exclude each other',
        'give labelColumn for classification (integer labels) or targetColumns for float targets');
    }
  }
}

/**
 * Parses CSV text as `loadCsv` parses a file; `path` names the source in messages and
 * (its base name) the datasets.
 * @example const { train } = parseCsv('x,y,label\n1,2,0\n3,4,1\n', 'inline.csv', { testFraction: 0 });
 */
export function parseCsv(text: string, path: string, options: CsvOptions & { targetColumns: readonly (number | string)[] }): CsvSplit<TargetDataset>;
export function parseCsv(text: string, path: string, options?: CsvOptions & { targetColumns?: undefined }): CsvSplit<LabeledDataset>;
export function parseCsv(text: string, path: string, options?: CsvOptions): CsvSplit;
export function parseCsv(text: string, path: string, options: CsvOptions = {}): CsvSplit {
  checkOptions(options);
  const { labelColumn, targetColumns, header = 'auto', testFraction = 0.2, seed = 0 } = options;
  const rows = splitRows(text, path);
  const first = rows[0]!;
  const hasHeader = header === 'auto' ? first.cells.some((c) => Number.isNaN(parseCell(c))) : header;
  const columns = first.cells.length;
  const names = hasHeader ? first.cells.map(unquote) : first.cells.map((_, i) => `col${i}`);
  const body = hasHeader ? rows.slice(1) : rows;
  if (body.length === 0) throw new DataError('EMPTY_FILE', `CSV file ${path} has a header (line ${first.line}) but no data rows`);
  if (columns < 2) {
    throw new DataError('BAD_HEADER', `${path}:${first.line}: found ${columns} column, need at least 2 (inputs and a ${targetColumns ? 'target' : 'label'})`);
  }

  // Each column's role: an input, the label, or target number t.
  const targetIdx = targetColumns?.map((c, i) => columnIndex(c, `options.targetColumns[${i}]`, path, names, hasHeader));
  const labelIdx = targetIdx ? -1 : labelColumn === undefined ? columns - 1 : columnIndex(labelColumn, 'options.labelColumn', path, names, hasHeader);
  const targetOf = new Int32Array(columns).fill(-1);
  for (const [t, c] of (targetIdx ?? []).entries()) {
    if (targetOf[c] !== -1) throw new DataError('BAD_OPTION', `loadCsv: options.targetColumns names column ${c}${hasHeader ? ` (${describeValue(names[c], 60)})` : ''} twice`);
    targetOf[c] = t;
  }
  const nTargets = targetIdx?.length ?? 0;
  const features = columns - (targetIdx ? nTargets : 1);
  if (features === 0) throw new DataError('BAD_OPTION', `loadCsv: options.targetColumns takes every column of ${path}; no input columns are left`);

  const n = body.length;
  const inputs = new Float32Array(n * features);
  const labels = targetIdx ? null : new Int32Array(n);
  const targets = targetIdx ? new Float32Array(n * nTargets) : null;
  let maxLabel = 0;
  const colName = (c: number): string => (hasHeader ? ` (${describeValue(names[c], 60)})` : '');
  for (let r = 0; r < n; r++) {
    const { line, cells } = body[r]!;
    if (cells.length !== columns) {
      throw new DataError('RAGGED_ROW', `${path}:${line}: expected ${columns} columns, found ${cells.length}`,
        hasHeader ? `the header on line ${first.line} has ${columns}` : `line ${first.line} has ${columns}`);
    }
    let k = r * features;
    for (let c = 0; c < columns; c++) {
      const cell = cells[c]!;
      const v = parseCell(cell);
      if (c === labelIdx) {
        if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
          throw new DataError('BAD_LABEL', `${path}:${line}:${c + 1}: label${colName(c)} must be a non-negative integer, got ${describeValue(cell, 60)}`,
            'map class names to 0, 1, 2, … before loading, or load float targets with targetColumns');
        }
        labels![r] = v;
        if (v > maxLabel) maxLabel = v;
      } else if (!Number.isFinite(v)) {
        throw new DataError('NOT_A_NUMBER', `${path}:${line}:${c + 1}: ${targetOf[c]! >= 0 ? 'target ' : ''}column${colName(c)} is not a number: ${describeValue(cell, 60)}`);
      } else if (targetOf[c]! >= 0) {
        targets![r * nTargets + targetOf[c]!] = v;
      } else {
        inputs[k++] = v;
      }
    }
  }

  const file = basename(path);
  const all: Dataset = targets
    ? { name: file, inputShape: [features], targetShape: [nTargets], size: n, inputs, targets }
    : { name: file, inputShape: [features], numClasses: maxLabel + 1, size: n, inputs, labels: labels! };
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  Rng.derive(seed, CSV_SPLIT_STREAM).shuffle(order);
  const nTest = Math.round(n * testFraction);
  if (n - nTest <= 0) {
    throw new DataError('BAD_OPTION', `loadCsv: options.testFraction ${testFraction} leaves no training rows out of ${n} in ${path}`);
  }
  return {
    train: subset(all, order.subarray(0, n - nTest), `${file}/train`),
    test: subset(all, order.subarray(n - nTest), `${file}/test`),
    featureNames: names.filter((_, c) => c !== labelIdx && targetOf[c] === -1),
    ...(targetIdx ? { targetNames: targetIdx.map((c) => names[c]!) } : {}),
  };
}
