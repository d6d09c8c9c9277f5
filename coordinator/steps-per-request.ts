/**
 * How many training steps `stepsPerRequest: 'auto'` sends to the actors in one request: as
 * many as take about REQUEST_MS, so that a request's round trip (the coordinator's send, the
 * actors' wake-up, the replies) is paid once for several short steps; 1 for long steps. The
 * Coordinator applies it to the steps it timed, `chainrule plan` to the step it predicts.
 *
 * @example autoStepsPerRequest(0.6)   // 16
 */

/** A request carries about this many milliseconds of steps... */
export const REQUEST_MS = 10;
/** ...and at most this many steps. */
export const AUTO_MAX_STEPS_PER_REQUEST = 32;

/** Steps to a request for steps of `stepMs` (1 when not yet timed). */
export function autoStepsPerRequest(stepMs: number | null): number {
  if (stepMs === null || !(stepMs > 0)) return 1;
  return Math.max(1, Math.min(AUTO_MAX_STEPS_PER_REQUEST, Math.floor(REQUEST_MS / stepMs)));
}
