/**
 * The tape: a stack of recorded ops. `backward` pops it in reverse and applies the chain rule.
 *
 * Semantics, fixed up front (micrograd's trap): gradients of leaves ACCUMULATE into `.grad`
 * until `zeroGrad()`; running backward twice over the same tape adds the same gradients
 * twice; intermediate gradients live only for the duration of one backward pass.
 */
import { Tensor, fmtShape, sameShape } from '../tensor/tensor.js';
import { binaryRaw, ShapeError } from '../tensor/functional.js';

export interface OpContext<A = unknown, S = unknown> {
  inputs: Tensor[];
  out: Tensor;
  saved: S;
  attrs: A;
  /** needsGrad[i]: whether input i wants a gradient (skip work when not). */
  needsGrad: boolean[];
  /**
   * During backward: input i's own `.grad` buffer (zeros if it had none) when input i is a
   * leaf that wants a gradient, else null. An op may add its gradient into it directly (a
   * weight gradient straight from the matmul kernel, with no temporary) and return
   * ACCUMULATED for that input.
   */
  leafGrad?: (i: number) => Tensor | null;
}

/** Returned by a backward for an input whose gradient it already added into `leafGrad(i)`. */
export const ACCUMULATED: Tensor = new Tensor(new Float32Array(0), [0]);

export interface OpDef<A = unknown, S = unknown> {
  readonly name: string;
  forward(inputs: Tensor[], attrs: A): { out: Tensor; saved: S };
  /** Gradients for each input (null where not needed), each of that input's shape. */
  backward(gy: Tensor, ctx: OpContext<A, S>): (Tensor | null)[];
}

interface Entry {
  op: OpDef<any, any>;
  ctx: OpContext<any, any>;
}

export class Tape {
  private entries: Entry[] = [];

  get length(): number { return this.entries.length; }

  record(op: OpDef<any, any>, ctx: OpContext<any, any>): void {
    this.entries.push({ op, ctx });
  }

  /** Runs fn with this tape recording (fn must be synchronous). */
  run<T>(fn: () => T): T {
    const prev = state.tape;
    state.tape = this;
    try {
      return fn();
    } finally {
      state.tape = prev;
    }
  }

  /**
   * Backpropagates from `root`. `seed` is d(objective)/d(root); it defaults to ones
   * (so a scalar loss gets 1). Leaves that require grad receive (accumulate) `.grad`.
   */
  backward(root: Tensor, seed?: Tensor): void {
    this.backwardFrom([[root, seed]]);
  }

  /** Backpropagates from several roots at once (e.g. an output gradient plus auxiliary losses). */
  backwardFrom(roots: [Tensor, Tensor | undefined][]): void {
    const grads = new Map<Tensor, Tensor>();
    for (const [root, seed] of roots) {
      const g0 = seed ?? Tensor.ones(root.shape, root.dtype);
      if (!sameShape(g0.shape, root.shape)) {
        throw new ShapeError(`backward: seed shape ${fmtShape(g0.shape)} != root shape ${fmtShape(root.shape)}`);
      }
      const prev = grads.get(root);
      grads.set(root, prev === undefined ? g0 : binaryRaw('add', prev, g0));
    }
    const prevEnabled = state.enabled;
    state.enabled = false; // backward formulas are not themselves recorded
    try {
      for (const [root] of roots) if (root.producer === null && grads.has(root)) { accumulateLeaf(root, grads.get(root)!); grads.delete(root); }
      for (let i = this.entries.length - 1; i >= 0; i--) {
        const { op, ctx } = this.entries[i]!;
        const gy = grads.get(ctx.out);
        if (gy === undefined) continue;
        grads.delete(ctx.out); // free as soon as it has been used
        ctx.leafGrad = leafGradOf(ctx.inputs);
        const gin = op.backward(gy, ctx);
        ctx.leafGrad = undefined;
        for (let j = 0; j < ctx.inputs.length; j++) {
          const x = ctx.inputs[j]!;
          const gx = gin[j];
          if (!x.requiresGrad || gx == null || gx === ACCUMULATED) continue;
          if (!sameShape(gx.shape, x.shape)) {
            throw new ShapeError(`${op.name} backward: grad shape must match input ${j} shape, ${fmtShape(gx.shape)} != ${fmtShape(x.shape)}`);
          }
          if (x.producer === null) {
            accumulateLeaf(x, gx);
          } else {
            const prev = grads.get(x);
            // A tensor used twice (a branch) sums the gradients of its uses.
            grads.set(x, prev === undefined ? gx : binaryRaw('add', prev, gx));
          }
        }
      }
    } finally {
      state.enabled = prevEnabled;
    }
  }

  /** Drops every record (and so every saved activation). */
  clear(): void { this.entries = []; }
}

function leafGradOf(inputs: Tensor[]): (i: number) => Tensor | null {
  return (i) => {
    const x = inputs[i];
    if (!x || !x.requiresGrad || x.producer !== null) return null;
    x.grad ??= x.zeroedGradBuffer();
    return x.grad;
  };
}

function accumulateLeaf(x: Tensor, g: Tensor): void {
  if (x.grad === null) {
    // Own the buffer (g may alias another gradient): a copy into the one zeroGrad released.
    x.gradToOverwrite().data.set(g.data);
    return;
  }
  const acc = x.grad.data;
  const d = g.data;
  for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + d[i]!;
}

const state = { tape: new Tape(), enabled: true };

/** The tape ops record on right now (a process-wide default unless `tape.run` set one). */
export function activeTape(): Tape { return state.tape; }

export function isGradEnabled(): boolean { return state.enabled; }

/** Runs fn without recording anything (evaluation). */
export function noGrad<T>(fn: () => T): T {
  const prev = state.enabled;
  state.enabled = false;
  try {
    return fn();
  } finally {
    state.enabled = prev;
  }
}

/** Backpropagates from root over the active tape. */
export function backward(root: Tensor, seed?: Tensor): void {
  state.tape.backward(root, seed);
}

/** Runs an op: forward now, recorded on the active tape when any input requires grad. */
export function apply<A, S>(op: OpDef<A, S>, inputs: Tensor[], attrs: A): Tensor {
  const r = op.forward(inputs, attrs);
  // An op may hand back an input unchanged (a sum over nothing): record a fresh view.
  const out = inputs.includes(r.out) ? new Tensor(r.out.data, r.out.shape) : r.out;
  const saved = r.saved;
  if (state.enabled) {
    const needsGrad = inputs.map((t) => t.requiresGrad);
    if (needsGrad.some(Boolean)) {
      out.requiresGrad = true;
      out.producer = op.name;
      state.tape.record(op, { inputs, out, saved, attrs, needsGrad });
    }
  }
  return out;
}

/** Clears the gradients of the given tensors. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.zeroGrad();
}
