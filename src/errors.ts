/**
 * chainrule's one error family. Every error we throw is a ChainruleError with a stable
 * `code` to branch on and, where we know one, a `hint` on how to fix it. `user` says whose
 * move it is: a user error (a bad flag, file, spec or message) is printed as one line and
 * exits 2; anything else (a bug, a crashed actor) is internal and exits 1 with its stack.
 *
 * @example
 * throw new ChainruleError('BAD_OPTION', 'options.batchSize must be a positive integer, got 0', { hint: 'pass batchSize >= 1' });
 */
export interface ErrorDetails {
  /** How to fix it; shown after the message. */
  hint?: string;
  /** Whether the user can fix it (default true); internal errors exit 1 with the stack. */
  user?: boolean;
  cause?: unknown;
}

export class ChainruleError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly user: boolean;

  constructor(code: string, message: string, details: ErrorDetails = {}) {
    super(details.hint === undefined ? message : `${message}\nHow to fix: ${details.hint}`, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = details.hint;
    this.user = details.user ?? true;
  }
}

/** A broken invariant of ours: never the user's fault. */
export class InternalError extends ChainruleError {
  constructor(message: string, details: Omit<ErrorDetails, 'user'> = {}) {
    super('INTERNAL', message, { ...details, user: false });
  }
}

/** True for errors the user can fix (exit 2, one line); false for bugs and foreign errors (exit 1, stack). */
export function isUserError(e: unknown): e is ChainruleError {
  return e instanceof ChainruleError && e.user;
}

/**
 * `table[name]` only for the table's own entries: `lookup(losses, 'toString')` is undefined,
 * not Object.prototype.toString. Every registry goes through this.
 */
export function lookup<T>(table: Readonly<Record<string, T>>, name: unknown): T | undefined {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(table, name) ? table[name] : undefined;
}

/** The registry's entry, or a user error naming the field, the bad name and the valid choices. */
export function choose<T>(table: Readonly<Record<string, T>>, name: unknown, field: string, code = 'UNKNOWN_NAME'): T {
  const hit = lookup(table, name);
  if (hit === undefined) {
    throw new ChainruleError(code, `${field} must be one of ${Object.keys(table).join(', ')}, got ${JSON.stringify(name)}`);
  }
  return hit;
}
