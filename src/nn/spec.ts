/** Small validators for JSON specs: errors name the layer and the field. */
import { ChainruleError, describeValue } from '../errors.js';
export interface LayerSpec { type: string; [field: string]: unknown }

export class SpecError extends ChainruleError {
  constructor(message: string, hint?: string) {
    super('BAD_SPEC', message, { hint });
  }
}

export function positiveInt(spec: LayerSpec, field: string, where: string, fallback?: number): number {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw new SpecError(`${where}: '${field}' must be a positive integer, got ${describeValue(spec[field], 80)}`);
  }
  return v;
}

export function nonNegativeInt(spec: LayerSpec, field: string, where: string, fallback?: number): number {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new SpecError(`${where}: '${field}' must be a non-negative integer, got ${describeValue(spec[field], 80)}`);
  }
  return v;
}

export function finiteNumber(spec: LayerSpec, field: string, where: string, fallback?: number): number {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new SpecError(`${where}: '${field}' must be a finite number, got ${describeValue(spec[field], 80)}`);
  }
  return v;
}

export function oneOf<T extends string>(spec: LayerSpec, field: string, choices: readonly T[], where: string, fallback?: T): T {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'string' || !choices.includes(v as T)) {
    throw new SpecError(`${where}: '${field}' must be one of ${choices.join(', ')}, got ${describeValue(spec[field], 80)}`);
  }
  return v as T;
}
