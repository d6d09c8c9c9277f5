/**
 * The data layer's one error class: a stable `code` to branch on, a message that says
 * what and where (file, line, column), and a hint on how to fix it.
 */
import { ChainruleError } from '../errors.js';
export type DataErrorCode =
  | 'FILE_NOT_FOUND'
  | 'FILE_UNREADABLE'
  | 'EMPTY_FILE'
  | 'RAGGED_ROW'
  | 'NOT_A_NUMBER'
  | 'BAD_LABEL'
  | 'BAD_HEADER'
  | 'BAD_OPTION'
  | 'BAD_INDEX'
  | 'BAD_DATASET'
  | 'BAD_SHAPE'
  | 'MNIST_MISSING'
  | 'MNIST_CORRUPT';

export class DataError extends ChainruleError {
  declare readonly code: DataErrorCode;

  constructor(code: DataErrorCode, message: string, hint?: string) {
    super(code, message, { hint });
  }
}

/** Throws `BAD_OPTION` unless `value` is a positive safe integer. */
export function checkPositiveInt(value: unknown, what: string, code: DataErrorCode = 'BAD_OPTION'): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new DataError(code, `${what} must be a positive integer, got ${describe(value)}`);
  }
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  try { return JSON.stringify(value) ?? String(value); } catch { return String(value); }
}
