/**
 * The test side of Kiln's pause points (KILN_TEST_HOOKS, packages/shared/src/testing/pause-points.ts):
 * arm a point, wait until a process is held there, then let it go or kill it. Kill points are
 * exact, so fault tests do not race the clock.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { fileNameOf } from "@kiln/shared/node";

export interface Paused {
  pid: number;
  point: string;
  info: Record<string, unknown>;
  /** Lets the held process go on (a no-op once it is dead). */
  release(): void;
}

export class PauseControl {
  readonly dir: string;

  constructor(dir?: string) {
    this.dir = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "kiln-hooks-"));
    fs.mkdirSync(this.dir, { recursive: true });
  }

  /** The environment that gives a child process these pause points. */
  get env(): Record<string, string> {
    return { KILN_TEST_HOOKS: this.dir };
  }

  /** The next process to reach `point` holds there. */
  arm(point: string): void {
    // A process killed while held leaves its `.paused` file behind: not this arm's.
    const name = fileNameOf(point);
    for (const file of fs.readdirSync(this.dir))
      if (file.startsWith(`${name}.`) && file.endsWith(".paused"))
        fs.rmSync(path.join(this.dir, file), { force: true });
    fs.writeFileSync(path.join(this.dir, `${fileNameOf(point)}.arm`), "");
  }

  /** Takes an arm back if nothing claimed it yet. */
  disarm(point: string): void {
    fs.rmSync(path.join(this.dir, `${fileNameOf(point)}.arm`), { force: true });
  }

  /** Waits (events, not a clock: a 10 ms poll of the control dir) until a process holds at `point`. */
  async paused(point: string, timeoutMs = 120_000): Promise<Paused> {
    const name = fileNameOf(point);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const file of fs.readdirSync(this.dir)) {
        const m = file.startsWith(`${name}.`) && /\.(\d+)\.paused$/.exec(file);
        if (!m) continue;
        let info: Record<string, unknown>;
        try {
          info = JSON.parse(fs.readFileSync(path.join(this.dir, file), "utf8")) as Record<string, unknown>;
        } catch {
          continue; // claimed, its details not yet written
        }
        const pid = Number(m[1]);
        return {
          pid,
          point,
          info,
          release: () => fs.writeFileSync(path.join(this.dir, `${name}.${pid}.go`), ""),
        };
      }
      if (Date.now() > deadline) throw new Error(`no process reached the pause point ${point} in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
