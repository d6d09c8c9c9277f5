/** Files that survive a crash: written whole and fsynced, and directory entries made durable. */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

/** Writes `bytes` to a new file at `path` (never over an existing one) and fsyncs it. */
export function writeDurable(path: string, bytes: Uint8Array): void {
  const fd = openSync(path, 'wx', 0o644);
  try {
    for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at, bytes.length - at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes a directory's entries (a new file, a rename) durable. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (e) {
    // Windows cannot fsync a directory, and a few file systems refuse to: the renames stand regardless.
    const code = (e as NodeJS.ErrnoException).code;
    if (!(process.platform === 'win32' || code === 'EINVAL' || code === 'ENOTSUP' || code === 'EISDIR' || code === 'EPERM')) throw e;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
