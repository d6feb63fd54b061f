#!/usr/bin/env node
// `npm run infra:check`: type-checks sst.config.ts and infra/ against SST's generated platform
// types. The first run installs SST's platform (~300 MB from npm, ~40 s; FACTS.md's offline
// recipe); later runs only type-check. Not part of `npm test`: the offline infra tests
// (test/infra) are, and need none of this.
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";

const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const run = (cmd, args, env = {}) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

if (!existsSync(path.join(root, ".sst/platform/config.d.ts"))) {
  console.log("# installing SST's platform (first run only)");
  run("npx", ["--yes", "sst@4.17.1", "install", "--stage", "dev"], {
    SST_TELEMETRY_DISABLED: "1",
    SST_SKIP_DEPENDENCY_CHECK: "1",
    SST_NO_BUN: "1",
  });
}
console.log("# type-checking sst.config.ts and infra/");
run("npx", ["tsc", "-p", "infra/tsconfig.json"]);
console.log("# infra type-checks");
