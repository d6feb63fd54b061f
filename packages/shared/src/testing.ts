/**
 * Test helpers (`@kiln/shared/testing`, Node only): the local family on a fresh temporary data dir,
 * the setup every test of the API, the worker runtime and the ports repeats.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { type LocalPortsOptions, openLocalPorts } from "./adapters/local/index.js";
import type { Ports } from "./ports/index.js";

export interface TempLocalPorts {
  ports: Ports;
  /** The temporary data dir (`kiln.db`, `blobs/`). */
  dir: string;
  /** Closes the ports and deletes the data dir. */
  close(): Promise<void>;
}

export interface TempLocalPortsOptions extends Partial<Omit<LocalPortsOptions, "dataDir">> {
  /** Name prefix of the temporary dir, so a leftover one tells which test made it. */
  prefix?: string;
}

/** The local family on a new temporary dir; defaults suit tests that do not care about URLs or receives. */
export function openTempLocalPorts(options: TempLocalPortsOptions = {}): TempLocalPorts {
  const { prefix = "kiln-test-", ...rest } = options;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const ports = openLocalPorts({
    publicBaseUrl: "http://127.0.0.1:1",
    urlSecret: "s".repeat(32),
    maxReceives: 5,
    ...rest,
    dataDir: dir,
  });
  let closed: Promise<void> | undefined;
  return {
    ports,
    dir,
    close: () => (closed ??= ports.close().finally(() => fs.rmSync(dir, { recursive: true, force: true }))),
  };
}
