#!/usr/bin/env node
// Kiln's whole test suite: type-check, then every *.test.ts under packages/*/test and test/ on Node's
// test runner (through tsx). Node's own summary lines (# pass / # fail) are the result.
import { spawnSync } from "node:child_process";
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
  console.log("# type-checking (tsc --noEmit)");
  const tsc = spawnSync("npx", ["tsc", "-p", "tsconfig.json", "--noEmit"], { cwd: root, stdio: "inherit" });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
}

const result = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=600000", ...files],
  { cwd: root, stdio: "inherit", env: { ...process.env, KILN_LOG_LEVEL: process.env.KILN_LOG_LEVEL ?? "silent" } },
);
process.exit(result.status ?? 1);
