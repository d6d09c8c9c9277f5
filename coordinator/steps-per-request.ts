/**
 * How many training steps `stepsPerRequest: 'auto'` sends to the actors in one request: as
 * many as take about REQUEST_MS, so that a request's round trip (the coordinator's send, the
 * actors' wake-up, the replies) is paid once for several short steps; 1 for long steps. The
 * Coordinator applies it to the steps it timed, `chainrule plan` to the step it predicts.
 *
 * @example autoStepsPerRequest(40)   // 5
 */

/**
 * A request carries about this many milliseconds of steps... (on 2 cores, 6 steps of 8-13 ms a
 * request over gRPC ran 1.4-1.5x one; 4 CNN steps of 9 ms on thread replicas 1.07-1.28x; 3 of
 * the wide MLP's 50 ms steps on two gRPC stages 1.08-1.15x in two pairs of rounds, and no
 * gain in two later pairs (4 steps, auto); 5-6 of the wide MLP's 30 ms steps on two thread
 * replicas 1.06-1.08x. Ctrl-C and the progress
 * bar wait at most about this long.)
 */
export const REQUEST_MS = 200;
/** ...and at most this many steps. */
export const AUTO_MAX_STEPS_PER_REQUEST = 32;

/** Steps to a request for steps of `stepMs` (1 when not yet timed). */
export function autoStepsPerRequest(stepMs: number | null): number {
  if (stepMs === null || !(stepMs > 0)) return 1;
  return Math.max(1, Math.min(AUTO_MAX_STEPS_PER_REQUEST, Math.floor(REQUEST_MS / stepMs)));
}
