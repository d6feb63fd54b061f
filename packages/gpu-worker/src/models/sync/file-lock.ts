import fs from "node:fs";
import os from "node:os";

/**
 * A lock file shared by the containers of one instance (a host directory mounted in each). Process
 * ids mean nothing across PID namespaces, so liveness is a heartbeat: the holder touches the file
 * every `beatMs`; a lock untouched for `staleMs` belongs to a process that died (kill -9, OOM) and
 * is broken by renaming it away — atomic, so of two waiters only one breaks it.
 */
export interface HeldLock {
  release(): void;
}

export interface LockOptions {
  beatMs?: number;
  staleMs?: number;
}

export function tryLock(file: string, options: LockOptions = {}): HeldLock | undefined {
  const beatMs = options.beatMs ?? 2_000;
  const staleMs = options.staleMs ?? 15_000;
  let fd: number;
  try {
    fd = fs.openSync(file, "wx");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    let age: number;
    try {
      age = Date.now() - fs.statSync(file).mtimeMs;
    } catch {
      return tryLock(file, options); // released between our open and stat
    }
    if (age < staleMs) return undefined;
    const aside = `${file}.stale-${process.pid}-${Date.now()}`;
    try {
      fs.renameSync(file, aside);
      fs.rmSync(aside, { force: true });
    } catch {
      return undefined; // another waiter broke it first
    }
    return tryLock(file, options);
  }
  fs.writeSync(fd, JSON.stringify({ host: os.hostname(), pid: process.pid, at: new Date().toISOString() }));
  fs.closeSync(fd);
  const beat = setInterval(() => {
    const now = new Date();
    try {
      fs.utimesSync(file, now, now);
    } catch {
      // broken as stale by another process: it owns the work now; ours will fail its own checks.
    }
  }, beatMs);
  beat.unref();
  return {
    release() {
      clearInterval(beat);
      fs.rmSync(file, { force: true });
    },
  };
}
