import fs from "node:fs";
import path from "node:path";

import type { PausePoint } from "../orchestration/submit-outbox.js";

/**
 * Fault tests' pause points (KILN_TEST_HOOKS=<control dir>; unset in production, where no pause
 * point is installed and every call site skips it). A test arms a point by creating
 * `<dir>/<point>.arm`; the first process to reach it claims the file by renaming it (atomic, so
 * exactly one process pauses), writes `<point>.<pid>.paused` with what it was doing, and waits —
 * its event loop running, so heartbeats go on — until the test creates `<point>.<pid>.go`, or
 * kills it there. Kill points are then exact instead of raced against the clock.
 */
export function filePausePoints(dir: string, who: string): PausePoint {
  fs.mkdirSync(dir, { recursive: true });
  return async (point, info = {}, prepare) => {
    const name = fileNameOf(point);
    const paused = path.join(dir, `${name}.${process.pid}.paused`);
    try {
      fs.renameSync(path.join(dir, `${name}.arm`), paused);
    } catch {
      return; // not armed, or another process claimed it
    }
    await prepare?.();
    fs.writeFileSync(paused, JSON.stringify({ point, pid: process.pid, who, ...info }));
    const go = path.join(dir, `${name}.${process.pid}.go`);
    while (!fs.existsSync(go)) await new Promise((resolve) => setTimeout(resolve, 10));
    fs.rmSync(go, { force: true });
    fs.rmSync(paused, { force: true });
  };
}

/** Point names may hold `:`; file names keep to a portable set. */
export function fileNameOf(point: string): string {
  return point.replace(/[^A-Za-z0-9_.-]/g, "-");
}
