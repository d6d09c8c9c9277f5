import { expect } from 'vitest';
import { DataError } from '../src/data/index.js';

/** Runs fn, expects a DataError, returns it. */
export function dataError(fn: () => unknown): DataError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return e as DataError;
  }
  throw new Error('expected a DataError, nothing was thrown');
}
