/**
 * Pipeline actions and schedules as plain data, shared by the stage runtime (node/) and the
 * coordinator. A schedule names, per stage, the ordered actions that stage runs in one
 * optimizer step; one executor runs any schedule.
 *
 * Imports nothing of ours: it travels on the wire as text such as `1F0`.
 */

/**
 * Forward (`F`), backward (`B`), or weight gradient (`W`). A schedule without `W` actions runs
 * each stage's weight gradients after its last action of the step; one with them splits the
 * backward as zero-bubble schedules do: `B` is the input gradient (what the previous stage
 * waits for) and `W` the weight gradient of that micro-batch, which nothing downstream waits for.
 */
export type ActionKind = 'F' | 'B' | 'W';

/** One unit of pipeline work: `stage` runs `kind` for `microBatch` (all 0-based). */
export type Action = { stage: number; kind: ActionKind; microBatch: number };

/**
 * Index = stage; each entry is the ordered list of actions that stage executes in one
 * optimizer step. Example (GPipe, 2 stages, 2 micro-batches):
 * `[[0F0, 0F1, 0B0, 0B1], [1F0, 1F1, 1B0, 1B1]]`.
 */
export type Schedule = Action[][];

/**
 * The compact text of an action: stage, kind, micro-batch.
 * @example formatAction({ stage: 1, kind: 'F', microBatch: 0 }) // '1F0'
 */
export function formatAction(a: Action): string {
  return `${a.stage}${a.kind}${a.microBatch}`;
}

// Canonical form only (no signs, no leading zeros), so parse(format(a)) and format(parse(s)) are inverses.
const ACTION_TEXT = /^(0|[1-9][0-9]*)([FBW])(0|[1-9][0-9]*)$/;

/**
 * Parses the text written by {@link formatAction}.
 * @example parseAction('1B3') // { stage: 1, kind: 'B', microBatch: 3 }
 * @example parseAction('1W3') // { stage: 1, kind: 'W', microBatch: 3 }
 * @throws Error when the text is not `<stage><F|B|W><microBatch>` with non-negative integers.
 */
export function parseAction(text: string): Action {
  const m = typeof text === 'string' ? ACTION_TEXT.exec(text) : null;
  const stage = m ? Number(m[1]) : NaN;
  const microBatch = m ? Number(m[3]) : NaN;
  if (!m || !Number.isSafeInteger(stage) || !Number.isSafeInteger(microBatch)) {
    throw new Error(
      `parseAction: ${JSON.stringify(text)} is not an action; expected <stage><F|B|W><microBatch> ` +
        `with non-negative integers and no leading zeros, e.g. "1F0" (stage 1, forward, micro-batch 0), "2B3" or "2W3"`,
    );
  }
  return { stage, kind: m[2] as ActionKind, microBatch };
}
