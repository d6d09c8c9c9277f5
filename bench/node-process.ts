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

export async function spawnNode(): Promise<NodeProcess> {
  const fromSource = import.meta.url.endsWith('.ts');
  const bin = fileURLToPath(new URL(`../coordinator/bin.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), bin, 'node', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  // The node logs one line per run and connection: kept (the last few) for an error, never let fill the pipe.
  let tail = '';
  child.stderr!.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-4000); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
      if (out.length > 4000) out = out.slice(-200);
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
