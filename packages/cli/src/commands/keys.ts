import { parseArgs } from "node:util";

import { createApiKey, type KeyLimits, type KeyScope, loadConfig } from "@kiln/shared";

import { openPorts } from "../stack.js";

const USAGE = [
  "usage: kiln keys create --name NAME [--scopes render,admin] [--rps N] [--burst N] [--concurrent-jobs N] [--images-per-day N]",
  "       kiln keys list [--json]",
  "       kiln keys revoke KEY_ID",
  "       kiln keys webhook-secret KEY_ID",
].join("\n");

const LIMIT_FLAGS: [flag: string, field: keyof KeyLimits][] = [
  ["rps", "requestsPerSecond"],
  ["burst", "burst"],
  ["concurrent-jobs", "concurrentJobs"],
  ["images-per-day", "imagesPerDay"],
];

/**
 * `kiln keys create --name NAME [--scopes render,admin] [limits]` prints the new key alone on its
 * last stdout line (scripts capture it) and the webhook secret on stderr. Limits left out take the
 * server's defaults (KILN_RATE_LIMIT_RPS …); 0 means no limit.
 */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      name: { type: "string" },
      scopes: { type: "string", default: "render" },
      json: { type: "boolean", default: false },
      ...Object.fromEntries(LIMIT_FLAGS.map(([flag]) => [flag, { type: "string" as const }])),
    },
    allowPositionals: true,
  });
  const ports = openPorts(loadConfig());
  try {
    switch (action) {
      case "create": {
        if (!values.name) throw new Error("kiln keys create needs --name NAME (a label for whoever uses the key)");
        const scopes = String(values.scopes)
          .split(",")
          .map((s) => s.trim()) as KeyScope[];
        const bad = scopes.filter((s) => s !== "render" && s !== "admin");
        if (bad.length) throw new Error(`unknown scope(s) ${bad.join(", ")}; use render and/or admin`);
        const limits: KeyLimits = {};
        for (const [flag, field] of LIMIT_FLAGS) {
          const raw = values[flag as keyof typeof values];
          if (typeof raw !== "string") continue;
          const n = Number(raw);
          if (raw.trim() === "" || !Number.isFinite(n))
            throw new Error(`--${flag} must be a number (got ${JSON.stringify(raw)})`);
          limits[field] = n;
        }
        const { key, record } = await createApiKey(ports.keys, { name: String(values.name), scopes, limits });
        console.error(
          `Created key ${record.id} (${record.name}, scopes ${scopes.join(",")}). It is shown once; store it now.`,
        );
        console.error(`Webhook signing secret (also: kiln keys webhook-secret ${record.id}): ${record.webhookSecret}`);
        console.log(key);
        break;
      }
      case "list": {
        const keys = await ports.keys.list();
        if (values.json)
          console.log(
            JSON.stringify(
              keys.map(({ hash: _hash, webhookSecret: _secret, ...k }) => k),
              null,
              2,
            ),
          );
        else
          for (const k of keys) {
            const limits = k.limits
              ? Object.entries(k.limits)
                  .map(([f, v]) => `${f}=${v}`)
                  .join(",")
              : "default limits";
            console.log(
              `${k.id}\tkiln_${k.prefix}_…\t${k.name}\t${k.scopes.join(",")}\t${limits}\t${k.revokedAt ? `revoked ${k.revokedAt}` : "active"}`,
            );
          }
        break;
      }
      case "revoke": {
        const id = positionals[0];
        if (!id) throw new Error("kiln keys revoke needs the key id (see kiln keys list)");
        if (!(await ports.keys.revoke(id, new Date().toISOString()))) throw new Error(`no active key ${id}`);
        console.error(`Revoked ${id}.`);
        break;
      }
      case "webhook-secret": {
        const id = positionals[0];
        if (!id) throw new Error("kiln keys webhook-secret needs the key id (see kiln keys list)");
        const key = await ports.keys.get(id);
        if (!key) throw new Error(`no key ${id}`);
        if (!key.webhookSecret)
          throw new Error(`key ${id} predates webhooks and has no webhook secret; create a new key`);
        console.log(key.webhookSecret);
        break;
      }
      default:
        throw new Error(USAGE);
    }
  } finally {
    await ports.close();
  }
}
