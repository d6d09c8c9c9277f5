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

/** A registry by name: a plain table or a Map. */
export type Registry<T> = Readonly<Record<string, T>> | ReadonlyMap<string, T>;

/** The names a registry holds, in its order. */
export function namesOf(table: Registry<unknown>): string[] {
  return table instanceof Map ? [...table.keys()] : Object.keys(table);
}

/**
 * `table[name]` only for the table's own entries: `lookup(losses, 'toString')` is undefined,
 * not Object.prototype.toString. Every registry goes through this.
 */
export function lookup<T>(table: Registry<T>, name: unknown): T | undefined {
  if (typeof name !== 'string') return undefined;
  if (table instanceof Map) return (table as ReadonlyMap<string, T>).get(name);
  const t = table as Readonly<Record<string, T>>;
  return Object.prototype.hasOwnProperty.call(t, name) ? t[name] : undefined;
}

/** The registry's entry, or a user error naming the field, the bad name and the valid choices. */
export function choose<T>(table: Registry<T>, name: unknown, field: string, code = 'UNKNOWN_NAME'): T {
  const hit = lookup(table, name);
  if (hit === undefined) {
    throw new ChainruleError(code, `${field} must be one of ${namesOf(table).join(', ')}, got ${describeValue(name)}`);
  }
  return hit;
}

/**
 * A short, never-throwing rendering of any value for error messages: JSON-like, but BigInt,
 * NaN, cycles and symbols print instead of throwing, and only the first `max` characters are
 * built, so a hostile ten-million-element array costs nothing to describe.
 * @example describeValue([1, NaN, 2n ** 70n]) // '[1,NaN,1180591620717411303424n]'
 */
export function describeValue(value: unknown, max = 200): string {
  let out = '';
  const seen = new Set<object>();
  // Returns false once the budget is spent, which stops every walk above it.
  const put = (s: string): boolean => {
    out += s;
    return out.length <= max;
  };
  const walk = (v: unknown): boolean => {
    if (typeof v === 'string') return put(JSON.stringify(v.length > max ? v.slice(0, max) : v));
    if (typeof v === 'bigint') return put(`${v}n`);
    if (typeof v !== 'object' || v === null) return put(String(v));
    if (seen.has(v)) return put('[Circular]');
    seen.add(v);
    const done = walkObject(v);
    seen.delete(v);
    return done;
  };
  const walkObject = (v: object): boolean => {
    if (Array.isArray(v)) {
      if (!put('[')) return false;
      for (let i = 0; i < v.length; i++) if (!((i === 0 || put(',')) && walk(v[i]))) return false;
      return put(']');
    }
    if (ArrayBuffer.isView(v)) return put(`${Object.prototype.toString.call(v).slice(8, -1)}(${(v as { length?: number }).length ?? v.byteLength})`);
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return put(Object.prototype.toString.call(v));
    if (!put('{')) return false;
    let first = true;
    for (const k of Object.keys(v)) {
      if (!((first || put(',')) && put(`${JSON.stringify(k)}:`) && walk((v as Record<string, unknown>)[k]))) return false;
      first = false;
    }
    return put('}');
  };
  walk(value);
  return out.length > max ? `${out.slice(0, max)}…` : out;
}
