/**
 * A real `chainrule node --port 0` in a process of its own, for the bench and the scripts
 * (bench/run.ts, scripts/plan-check.ts, scripts/soak.ts): started from source through tsx,
 * or from dist/ when compiled; ready once it says where it listens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface NodeProcess {
  address: string;
  pid: number;
  /** Null while it runs; else how it ended and its last log lines. */
  ended(): string | null;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** Flags for `node` itself, before the script (e.g. `--trace-gc`). */
  nodeFlags?: string[];
  /** The child's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Called with each whole line of its stdout (where `--trace-gc` writes). */
  onStdoutLine?: (line: string) => void;
}

export async function spawnNode(o: SpawnOptions = {}): Promise<NodeProcess> {
  const fromSource = import.meta.url.endsWith('.ts');
  const bin = fileURLToPath(new URL(`../coordinator/bin.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [...(o.nodeFlags ?? []), ...(fromSource ? ['--import', 'tsx'] : []), bin, 'node', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env });
  // The node logs one line per run and connection: kept (the last few) for an error, never let fill the pipe.
  let tail = '';
  child.stderr!.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-4000); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const address = await new Promise<string>((resolve, reject) => {
    // Whole lines only: the listening line, then whatever the caller reads.
    let partial = '';
    child.stdout!.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!.slice(-4000);
      for (const line of lines) {
        const m = /listening on (\S+)/.exec(line);
        if (m) resolve(m[1]!);
        o.onStdoutLine?.(line);
      }
    });
    child.once('exit', (code, signal) => reject(new Error(`chainrule node exited with ${code ?? signal} before listening: ${tail.trim()}`)));
  });
  return {
    address, pid: child.pid!,
    ended: () => (child.exitCode === null && child.signalCode === null ? null : `exited with ${child.exitCode ?? child.signalCode}: ${tail.trim().split('\n').slice(-3).join(' | ')}`),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
