/**
 * A node's log: one line per event (a connection, a run opened or ended, a refusal, an
 * error), to stderr unless told otherwise, each with the time and the node's address.
 *
 * @example
 * 2026-12-01T14:51:00.156Z chainrule node 127.0.0.1:7001 refused 127.0.0.1:53164 (CN=chainrule coordinator): Call: wrong bearer token
 */
export type LogSink = (line: string) => void;

export type LogKind = 'listening' | 'connection' | 'run' | 'refused' | 'error' | 'warning' | 'draining' | 'stopped';

/** Refusals are what a stranger can provoke at will: at most this many lines per window. */
const REFUSALS_PER_WINDOW = 100;
const WINDOW_MS = 10_000;

export class NodeLog {
  private windowStart = 0;
  private refusals = 0;
  private suppressed = 0;

  constructor(private readonly sink: LogSink | null, private readonly where: () => string) {}

  line(kind: LogKind, text: string): void {
    if (!this.sink) return;
    if (kind === 'refused') {
      const now = Date.now();
      if (now - this.windowStart > WINDOW_MS) {
        if (this.suppressed > 0) this.write('refused', `${this.suppressed} more refusals in the last ${WINDOW_MS / 1000} s were not logged`);
        this.windowStart = now;
        this.refusals = 0;
        this.suppressed = 0;
      }
      if (++this.refusals > REFUSALS_PER_WINDOW) { this.suppressed++; return; }
    }
    this.write(kind, text);
  }

  private write(kind: LogKind, text: string): void {
    // One event, one line, whatever the message holds.
    const flat = text.replace(/\s*\r?\n\s*/g, ' | ');
    try {
      this.sink!(`${new Date().toISOString()} chainrule node ${this.where()} ${kind} ${flat}`);
    } catch { /* a broken log must not break the node */ }
  }
}

export const stderrSink: LogSink = (line) => { process.stderr.write(line + '\n'); };
