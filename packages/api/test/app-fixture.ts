import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { createApiKey, type KeyLimits, type KeyScope, type Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import { createApp, type KilnApp } from "../src/app.js";
import type { ApiDeps } from "../src/deps.js";

/** Kiln's app in process on a fresh local family (real SQLite and files), as Hono's own tests use `app.request`. */
export interface AppFixture {
  app: KilnApp;
  ports: Ports;
  /** The family's data directory (kiln.db and the blobs). */
  dataDir: string;
  /** A new key's bearer header (and JSON content type). */
  keyHeaders(options?: { scopes?: KeyScope[]; limits?: KeyLimits }): Promise<Record<string, string>>;
  close(): Promise<void>;
}

export function openAppFixture(overrides: Partial<ApiDeps> = {}): AppFixture {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-app-"));
  const ports = openLocalPorts({
    dataDir: dir,
    publicBaseUrl: "http://kiln.test",
    urlSecret: "s".repeat(32),
    maxReceives: 3,
  });
  const app = createApp({
    ports,
    publicUrl: "http://kiln.test",
    limits: { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 },
    maxBodyBytes: 65536,
    downloadUrlSeconds: 600,
    retentionHours: 1,
    ...overrides,
  });
  return {
    app,
    ports,
    dataDir: dir,
    async keyHeaders(options = {}) {
      const { key } = await createApiKey(ports.keys, {
        name: "test",
        scopes: options.scopes ?? ["render"],
        limits: options.limits,
      });
      return { authorization: `Bearer ${key}`, "content-type": "application/json" };
    },
    async close() {
      try {
        await ports.close();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
