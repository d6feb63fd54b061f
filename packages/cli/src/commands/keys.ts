import { parseArgs } from "node:util";
import { createApiKey, loadConfig, type KeyScope } from "@kiln/shared";
import { openPorts } from "../stack.js";

/** `kiln keys create --name NAME [--scopes render,admin]` prints the new key alone on its last stdout line. */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    options: { name: { type: "string" }, scopes: { type: "string", default: "render" }, json: { type: "boolean", default: false } },
    allowPositionals: true,
  });
  const ports = openPorts(loadConfig());
  try {
    switch (action) {
      case "create": {
        if (!values.name) throw new Error("kiln keys create needs --name NAME (a label for whoever uses the key)");
        const scopes = values.scopes!.split(",").map((s) => s.trim()) as KeyScope[];
        const bad = scopes.filter((s) => s !== "render" && s !== "admin");
        if (bad.length) throw new Error(`unknown scope(s) ${bad.join(", ")}; use render and/or admin`);
        const { key, record } = await createApiKey(ports.keys, { name: values.name, scopes });
        console.error(`Created key ${record.id} (${record.name}, scopes ${scopes.join(",")}). It is shown once; store it now.`);
        console.log(key);
        break;
      }
      case "list": {
        const keys = await ports.keys.list();
        if (values.json) console.log(JSON.stringify(keys.map(({ hash: _hash, ...k }) => k), null, 2));
        else for (const k of keys) console.log(`${k.id}\tkiln_${k.prefix}_…\t${k.name}\t${k.scopes.join(",")}\t${k.revokedAt ? `revoked ${k.revokedAt}` : "active"}`);
        break;
      }
      case "revoke": {
        const id = positionals[0];
        if (!id) throw new Error("kiln keys revoke needs the key id (see kiln keys list)");
        if (!(await ports.keys.revoke(id, new Date().toISOString()))) throw new Error(`no active key ${id}`);
        console.error(`Revoked ${id}.`);
        break;
      }
      default:
        throw new Error("usage: kiln keys create --name NAME [--scopes render,admin] | kiln keys list [--json] | kiln keys revoke KEY_ID");
    }
  } finally {
    await ports.close();
  }
}
