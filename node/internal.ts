/**
 * Telling our errors from the engine's. A ChainruleError, or an error whose message starts the
 * way ours do (`softmaxCrossEntropy: label 12 at row 3 is out of range [0, 10)`,
 * `Tensor: data length ...`), is answered in its own words; anything else (`this.loss.compute
 * is not a function`, `Cannot read properties of undefined`) is a bug of ours, and is answered
 * as an INTERNAL error that names the actor, with the JavaScript text kept for the log.
 */
import { ChainruleError } from '../src/errors.js';

/** `name: text` or `name(): text`, the shape of every message our own code throws. */
const OURS = /^[A-Za-z_$][\w$.]*(\(\))?: \S/;

export function isOurError(e: unknown): boolean {
  if (e instanceof ChainruleError) return true;
  if (!(e instanceof Error)) return false;
  if (e instanceof SyntaxError || e instanceof ReferenceError) return false;
  return OURS.test(e.message);
}

/** The code to answer with: the error's own (ours), or INTERNAL. */
export function codeOf(e: unknown, fallback: string): string {
  if (!isOurError(e)) return 'INTERNAL';
  const c = (e as { code?: unknown }).code;
  return typeof c === 'string' ? c : fallback;
}
