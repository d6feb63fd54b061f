import { Hono } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { fail } from "../http/problem.js";

const CONTENT_TYPES: Record<string, string> = {
  png: "image/png",
  webp: "image/webp",
  jpeg: "image/jpeg",
  jpg: "image/jpeg",
};

/** Signed, expiring downloads from the BlobStore — the local family's stand-in for presigned S3 URLs. */
export function fileRoutes(deps: ApiDeps) {
  const app = new Hono<ApiEnv>();
  const serve = deps.serveFiles;
  if (!serve) return app;
  app.get("/v1/files/*", async (c) => {
    const key = decodePath(c.req.path.slice("/v1/files/".length));
    if (key === null) {
      const message = "contains a malformed percent-escape (e.g. `%zz`, a lone `%`, or bytes that are not UTF-8)";
      fail(400, "invalid_request", `The file path ${message}; use the download link exactly as given.`, {
        errors: [{ field: "path", message }],
      });
    }
    const expires = c.req.query("expires") ?? "";
    const sig = c.req.query("sig") ?? "";
    if (!(await serve.verify(key, expires, sig))) {
      fail(
        403,
        "download_url_invalid",
        "This download link is invalid or has expired; fetch the render again for a fresh link.",
      );
    }
    const bytes = await deps.ports.blobs.get(key);
    if (!bytes)
      fail(404, "not_found", "This file no longer exists (outputs are deleted after their retention period).");
    const ext = key.split(".").pop() ?? "";
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": CONTENT_TYPES[ext] ?? "application/octet-stream",
      "cache-control": "private, max-age=3600",
      "content-disposition": `inline; filename="${key.split("/").slice(-3).join("-")}"`,
    });
  });
  return app;
}

/** The path's percent-escapes decoded, or null when they are malformed (decodeURIComponent throws URIError). */
function decodePath(raw: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}
