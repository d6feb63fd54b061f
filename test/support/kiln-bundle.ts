/**
 * The `kiln` command as one ESM bundle, for fault tests that restart processes many times: a
 * restart through tsx evaluates thousands of modules (seconds of CPU each time); the bundle is
 * Kiln's same code, built once per test process with esbuild, as the Lambda bundle is. Native and
 * test-only packages stay external and resolve from the repository's node_modules, so the bundle
 * is written under node_modules/.cache.
 */
import fs from "node:fs";
import path from "node:path";

import { build } from "esbuild";

const ROOT = path.resolve(import.meta.dirname, "../..");

export async function bundleKiln(): Promise<{ file: string; remove(): void }> {
  // A fresh clone's node_modules has no .cache yet.
  fs.mkdirSync(path.join(ROOT, "node_modules/.cache"), { recursive: true });
  const outdir = fs.mkdtempSync(path.join(ROOT, "node_modules/.cache/kiln-bundle-"));
  await build({
    entryPoints: { kiln: path.join(ROOT, "packages/cli/src/main.ts") },
    bundle: true,
    minify: true,
    platform: "node",
    target: "node20",
    format: "esm",
    outdir,
    outExtension: { ".js": ".mjs" },
    // Some bundled CommonJS (the AWS SDK's dependencies) calls require() for Node built-ins.
    banner: {
      js: "import { createRequire as __kilnCreateRequire } from 'node:module'; const require = __kilnCreateRequire(import.meta.url);",
    },
    external: [
      "better-sqlite3",
      "onnxruntime-node",
      "sharp",
      "fauxqs",
      "dynalite",
      "playwright-core",
      "esbuild",
      "tsx",
    ],
    logLevel: "warning",
  });
  return {
    file: path.join(outdir, "kiln.mjs"),
    remove: () => fs.rmSync(outdir, { recursive: true, force: true }),
  };
}
