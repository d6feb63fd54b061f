import { createApiKey, type KeyLimits, type KeyScope, loadConfig } from "@kiln/shared";

import { CliError, parseFlags, UsageError } from "../cli/args.js";
import { openPorts } from "../stack.js";

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
  if (!["create", "list", "revoke", "webhook-secret"].includes(action ?? ""))
    throw new UsageError(
      action
        ? `unknown action "${action}"; use create, list, revoke or webhook-secret`
        : "say create, list, revoke or webhook-secret",
    );
  const { values, positionals } = parseFlags(
    rest,
    {
      name: { type: "string" },
      scopes: { type: "string", default: "render" },
      json: { type: "boolean", default: false },
      ...Object.fromEntries(LIMIT_FLAGS.map(([flag]) => [flag, { type: "string" as const }])),
    },
    true,
  );
  const ports = openPorts(loadConfig());
  try {
    switch (action) {
      case "create": {
        if (!values.name) throw new UsageError("create needs --name NAME (a label for whoever uses the key)");
        const scopes = String(values.scopes)
          .split(",")
          .map((s) => s.trim()) as KeyScope[];
        const bad = scopes.filter((s) => s !== "render" && s !== "admin");
        if (bad.length) throw new UsageError(`unknown scope(s) ${bad.join(", ")}; use render and/or admin`);
        const limits: KeyLimits = {};
        for (const [flag, field] of LIMIT_FLAGS) {
          const raw = values[flag as keyof typeof values];
          if (typeof raw !== "string") continue;
          const n = Number(raw);
          if (raw.trim() === "" || !Number.isFinite(n))
            throw new UsageError(`--${flag} must be a number (got ${JSON.stringify(raw)})`);
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
        if (!id) throw new UsageError("revoke needs the key id (see kiln keys list)");
        if (!(await ports.keys.revoke(id, new Date().toISOString()))) throw new CliError(`no active key ${id}`);
        console.error(`Revoked ${id}.`);
        break;
      }
      case "webhook-secret": {
        const id = positionals[0];
        if (!id) throw new UsageError("webhook-secret needs the key id (see kiln keys list)");
        const key = await ports.keys.get(id);
        if (!key) throw new CliError(`no key ${id}`);
        if (!key.webhookSecret)
          throw new CliError(`key ${id} predates webhooks and has no webhook secret; create a new key`);
        console.log(key.webhookSecret);
        break;
      }
    }
  } finally {
    await ports.close();
  }
}
