import { expect } from 'vitest';
import { DataError } from '../src/data/index.js';
import type { NamedTensors } from '../src/wire/index.js';

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

/**
 * The largest relative error ‖a−b‖/‖a‖ over the tensors of two parameter sets, and which
 * tensor has it: two runs "agree to 1e-5" when every tensor does.
 */
export function worstRelativeError(a: NamedTensors, b: NamedTensors): { value: number; name: string } {
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  let worst = { value: 0, name: '' };
  for (const name of Object.keys(a)) {
    const x = a[name]!.data;
    const y = b[name]!.data;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += x[i]! ** 2; }
    const value = Math.sqrt(num / den);
    if (value >= worst.value) worst = { value, name };
  }
  return worst;
}
