import path from "node:path";
import { fileURLToPath } from "node:url";

import { build, type BuildOptions, type Metafile, type Plugin } from "esbuild";

/**
 * The API's deployable bundles, built with esbuild so nothing is compiled at run time (no tsx)
 * and nothing native is shipped:
 * - `lambda`: entry/lambda.ts for Node 20 on AWS Lambda, as one ESM file. The AWS SDK v3 is
 *   bundled (not taken from the runtime) so its version is the one the tests ran.
 * - `edge`: entry/edge.ts as a Worker module for workerd (Cloudflare) — the SDK's browser builds,
 *   whose request handler is `fetch`.
 * `node src/entry/bundles.ts <target> [outdir]` writes one.
 */
export type BundleTarget = "lambda" | "edge";

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The SDK's browser build parses S3's XML with `DOMParser`, which workerd does not have; its Node
 * build has a parser of its own in plain JS, so the edge bundle takes that one.
 */
const xmlParserWithoutDom: Plugin = {
  name: "aws-sdk-xml-parser-without-dom",
  setup(b) {
    b.onResolve({ filter: /^\.\/xml-parser$/ }, (args) =>
      args.importer.includes(`${path.sep}@aws-sdk${path.sep}xml-builder${path.sep}`)
        ? { path: path.join(args.resolveDir, "xml-parser.js") }
        : undefined,
    );
  },
};

const TARGETS: Record<BundleTarget, BuildOptions> = {
  lambda: {
    entryPoints: { index: path.join(here, "lambda.ts") },
    platform: "node",
    target: "node20",
    format: "esm",
    // Some bundled CommonJS (the SDK's dependencies) calls require() for Node built-ins.
    banner: {
      js: "import { createRequire as __kilnCreateRequire } from 'node:module'; const require = __kilnCreateRequire(import.meta.url);",
    },
    outExtension: { ".js": ".mjs" },
  },
  edge: {
    entryPoints: { worker: path.join(here, "edge.ts") },
    platform: "browser",
    target: "es2022",
    format: "esm",
    conditions: ["workerd", "worker", "browser"],
    plugins: [xmlParserWithoutDom],
  },
};

export interface BundleResult {
  file: string;
  bytes: number;
  metafile: Metafile;
}

export async function bundleApi(target: BundleTarget, outdir: string): Promise<BundleResult> {
  const options = TARGETS[target];
  const result = await build({
    ...options,
    bundle: true,
    minify: true,
    treeShaking: true,
    sourcemap: false,
    legalComments: "none",
    outdir,
    metafile: true,
    logLevel: "warning",
  });
  const [file, out] = Object.entries(result.metafile.outputs).find(([f]) => /\.m?js$/.test(f))!;
  return { file: path.resolve(file), bytes: out.bytes, metafile: result.metafile };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const target = process.argv[2] as BundleTarget;
  if (!(target in TARGETS)) {
    console.error(`usage: bundles.ts <${Object.keys(TARGETS).join("|")}> [outdir]`);
    process.exit(2);
  }
  const { file, bytes } = await bundleApi(target, process.argv[3] ?? path.join("dist", target));
  console.log(`${file}: ${(bytes / 1024).toFixed(0)} KiB`);
}
