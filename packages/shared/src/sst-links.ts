import { KilnError } from "./errors.js";
import { queueLinkNames } from "./queues/registry.js";

/**
 * SST resource links, read without the `sst` package. SST's `Resource.<Name>` reads the JSON in
 * the environment variable `SST_RESOURCE_<Name>` (`{"name": …}` for a Bucket or Dynamo table,
 * `{"url": …}` for a Queue); the infra sets the same variables on the GPU task definition, which
 * SST does not manage. Explicit `KILN_*` settings win over links.
 */
export const SST_LINKS = {
  bucket: "KilnBucket",
  table: "KilnTable",
  /** Logical queue name → link name, for every queue in the registry and its dead-letter queue. */
  queues: queueLinkNames(),
} as const;

export interface SstLinks {
  bucket?: string;
  table?: string;
  queueUrls: Record<string, string>;
}

export function readSstLinks(env: Record<string, string | undefined>): SstLinks {
  const queueUrls: Record<string, string> = {};
  for (const [queue, link] of Object.entries(SST_LINKS.queues)) {
    const url = linkField(env, link, "url");
    if (url) queueUrls[queue] = url;
  }
  return {
    bucket: linkField(env, SST_LINKS.bucket, "name"),
    table: linkField(env, SST_LINKS.table, "name"),
    queueUrls,
  };
}

function linkField(env: Record<string, string | undefined>, link: string, field: "name" | "url"): string | undefined {
  const variable = `SST_RESOURCE_${link}`;
  const raw = env[variable];
  if (raw === undefined || raw === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new KilnError(
      "config_invalid",
      `${variable} is not JSON; SST sets it to the linked resource's properties, e.g. {"${field}":"…"}.`,
    );
  }
  const value = (parsed as Record<string, unknown> | null)?.[field];
  if (typeof value !== "string" || value === "") {
    throw new KilnError(
      "config_invalid",
      `${variable} has no "${field}" string; SST links a ${field === "url" ? 'Queue as {"url":…}' : 'Bucket or Dynamo table as {"name":…}'}.`,
    );
  }
  return value;
}
