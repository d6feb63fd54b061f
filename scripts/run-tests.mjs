#!/usr/bin/env node
// Kiln's whole test suite: type-check, then every *.test.ts under packages/*/test and test/ on Node's
// test runner (through tsx). Node's own summary lines (# pass / # fail) are the result.
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";

const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const filter = process.argv.slice(2);

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...findTests(full));
    else if (name.endsWith(".test.ts")) out.push(path.relative(root, full));
  }
  return out;
}

const files = [...findTests(path.join(root, "packages")), ...findTests(path.join(root, "test"))]
  .filter((f) => filter.length === 0 || filter.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}

if (filter.length === 0) {
  // Static checks first: a type error, a lint error or unformatted code fails the suite before any test runs.
  for (const [what, args] of [
    ["type-checking (tsc --noEmit)", ["tsc", "-p", "tsconfig.json", "--noEmit"]],
    ["checking formatting (prettier --check)", ["prettier", "--check", "--log-level", "warn", "."]],
    ["linting (eslint)", ["eslint", "--max-warnings", "0", "."]],
  ]) {
    console.log(`# ${what}`);
    const check = spawnSync("npx", args, { cwd: root, stdio: "inherit" });
    if (check.status !== 0) {
      console.log(`0 passed, 1 failed, 0 skipped`);
      process.exit(check.status ?? 1);
    }
  }
}

// Tests that spawn worker processes and kill them mid-stage run in a second phase, so the rest of the
// suite's load on these 2-core machines cannot starve their mid-stage timing.
const isolated = (f) => f.includes(`${path.sep}durability`);
const phases = [files.filter((f) => !isolated(f)), files.filter(isolated)].filter((p) => p.length > 0);
const totals = { pass: 0, fail: 0, skipped: 0 };
let status = 0;
for (const phase of phases) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=1200000", ...phase],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, KILN_LOG_LEVEL: process.env.KILN_LOG_LEVEL ?? "silent" },
    },
  );
  let out = "";
  child.stdout.on("data", (chunk) => {
    process.stdout.write(chunk);
    out += chunk;
  });
  const code = await new Promise((resolve) => child.on("close", (c) => resolve(c ?? 1)));
  const count = (key) => Number(out.match(new RegExp(`^# ${key} (\\d+)$`, "m"))?.[1] ?? 0);
  totals.pass += count("pass");
  totals.skipped += count("skipped");
  // A test cancelled because its suite's hook failed did not pass: it counts as failed, and a phase that
  // exits non-zero with nothing counted (a file that cannot load) counts as one failure.
  const failed = count("fail") + count("cancelled");
  totals.fail += failed === 0 && code !== 0 ? 1 : failed;
  if (code !== 0) status = code;
}
// One closing line over both phases.
console.log(`${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped`);
process.exit(status !== 0 ? status : totals.pass === 0 ? 1 : 0);
