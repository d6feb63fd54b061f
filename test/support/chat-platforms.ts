import http from "node:http";

/** One request a platform stand-in got, with its body decoded the way the platform reads it. */
export interface PlatformCall {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** JSON body, `payload_json` of a multipart body, or the form fields of a form body. */
  json?: any;
  form?: Record<string, string>;
  files: { field: string; filename: string; type: string; bytes: Buffer }[];
  raw: Buffer;
  status: number;
}

type Reply = { status: number; body?: unknown; headers?: Record<string, string> };
type Route = (call: PlatformCall, url: URL) => Reply | undefined;

export interface PlatformStandIn {
  url: string;
  calls: PlatformCall[];
  /** Answers the next request matching `pattern` (method + " " + path) with `reply` instead of the route. */
  failNext(pattern: RegExp, reply: Reply, times?: number): void;
  /** Resolves with the first call (in order, from `from`) for which `match` holds. */
  waitFor(match: (c: PlatformCall) => boolean, timeoutMs?: number): Promise<PlatformCall>;
  close(): Promise<void>;
}

/** A loopback HTTP server playing one platform's endpoints; faults are injected per request pattern. */
async function startStandIn(route: Route): Promise<PlatformStandIn> {
  const calls: PlatformCall[] = [];
  const faults: { pattern: RegExp; reply: Reply; left: number }[] = [];
  const waiters = new Set<() => void>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const url = new URL(req.url ?? "/", "http://standin");
      const call: PlatformCall = {
        method: req.method ?? "GET",
        path: url.pathname,
        headers: req.headers,
        files: [],
        raw,
        status: 0,
      };
      const type = String(req.headers["content-type"] ?? "");
      try {
        if (type.startsWith("multipart/form-data")) {
          const form = await new Request("http://standin/", {
            method: "POST",
            headers: { "content-type": type },
            body: raw,
          }).formData();
          for (const [field, value] of form.entries()) {
            if (typeof value === "string") {
              if (field === "payload_json") call.json = JSON.parse(value);
              else (call.form ??= {})[field] = value;
            } else {
              call.files.push({
                field,
                filename: value.name,
                type: value.type,
                bytes: Buffer.from(await value.arrayBuffer()),
              });
            }
          }
        } else if (type.startsWith("application/json")) {
          call.json = raw.length ? JSON.parse(raw.toString("utf8")) : undefined;
        } else if (type.startsWith("application/x-www-form-urlencoded")) {
          call.form = Object.fromEntries(new URLSearchParams(raw.toString("utf8")));
        }
      } catch {
        // Unparseable bodies are kept raw; the test decides.
      }
      const key = `${call.method} ${call.path}`;
      const fault = faults.find((f) => f.left > 0 && f.pattern.test(key));
      let reply: Reply;
      if (fault) {
        fault.left--;
        reply = fault.reply;
      } else reply = route(call, url) ?? { status: 404, body: { message: "Unknown route", code: 0 } };
      call.status = reply.status;
      calls.push(call);
      const body =
        reply.body === undefined ? "" : typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
      res
        .writeHead(reply.status, {
          "content-type": typeof reply.body === "string" ? "text/plain" : "application/json",
          ...reply.headers,
        })
        .end(body);
      for (const w of [...waiters]) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    failNext(pattern, reply, times = 1) {
      faults.push({ pattern, reply, left: times });
    },
    async waitFor(match, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = calls.find(match);
        if (found) return found;
        if (Date.now() > deadline)
          throw new Error(
            `no matching platform call within ${timeoutMs} ms; got ${calls.map((c) => `${c.method} ${c.path} ${c.status}`).join(", ")}`,
          );
        await new Promise<void>((resolve) => {
          const done = () => {
            waiters.delete(done);
            resolve();
          };
          waiters.add(done);
          setTimeout(done, 200);
        });
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Discord's REST endpoints an HTTP-interactions bot uses: interaction webhooks (edit `@original`,
 * follow-ups and their edits), channel messages with a bot token, and command bulk overwrite.
 * Tokens in `expired` answer 401 code 50027 ("Invalid Webhook Token"), as Discord does after 15 minutes.
 */
export async function startDiscordStandIn(options: { applicationId: string; botToken: string }) {
  const expired = new Set<string>();
  let nextMessage = 1000;
  const stand = await startStandIn((call) => {
    const hook = /^\/webhooks\/(\d+)\/([^/]+)(?:\/messages\/([^/]+))?$/.exec(call.path);
    if (hook) {
      if (hook[1] !== options.applicationId) return { status: 404, body: { message: "Unknown Webhook", code: 10015 } };
      if (expired.has(hook[2]!)) return { status: 401, body: { message: "Invalid Webhook Token", code: 50027 } };
      if (call.method === "POST" && !hook[3])
        return { status: 200, body: { id: String(nextMessage++), content: call.json?.content } };
      if (call.method === "PATCH" && hook[3])
        return { status: 200, body: { id: hook[3] === "@original" ? "1" : hook[3], content: call.json?.content } };
    }
    const authorized = call.headers.authorization === `Bot ${options.botToken}`;
    if (/^\/channels\/\d+\/messages$/.test(call.path) && call.method === "POST")
      return authorized
        ? { status: 200, body: { id: String(nextMessage++) } }
        : { status: 401, body: { message: "401: Unauthorized", code: 0 } };
    if (/^\/applications\/\d+(\/guilds\/\d+)?\/commands$/.test(call.path) && call.method === "PUT")
      return authorized
        ? { status: 200, body: call.json }
        : { status: 401, body: { message: "401: Unauthorized", code: 0 } };
    return undefined;
  });
  return Object.assign(stand, { expire: (token: string) => expired.add(token) });
}

/**
 * Slack's response_url (5 uses, then `used_url`), and the Web API methods Kiln calls:
 * files.getUploadURLExternal → POST to the upload URL → files.completeUploadExternal,
 * chat.postMessage, chat.postEphemeral.
 */
export async function startSlackStandIn(options: { botToken: string }) {
  const uses = new Map<string, number>();
  const uploads = new Map<string, { filename: string; bytes?: Buffer }>();
  let nextFile = 1;
  let base = "";
  const stand = await startStandIn((call) => {
    const hook = /^\/response\/([\w-]+)$/.exec(call.path);
    if (hook) {
      const n = (uses.get(hook[1]!) ?? 0) + 1;
      uses.set(hook[1]!, n);
      return n > 5 ? { status: 404, body: { ok: false, error: "used_url" } } : { status: 200, body: "ok" };
    }
    const upload = /^\/upload\/(F\d+)$/.exec(call.path);
    if (upload && uploads.has(upload[1]!)) {
      const file = uploads.get(upload[1]!)!;
      file.bytes = call.files[0]?.bytes ?? call.raw;
      return { status: 200, body: `OK - ${file.bytes.length}` };
    }
    const method = /^\/api\/([\w.]+)$/.exec(call.path)?.[1];
    if (!method) return undefined;
    const token = String(call.headers.authorization ?? "").replace(/^Bearer /, "") || call.form?.token;
    if (token !== options.botToken) return { status: 200, body: { ok: false, error: "invalid_auth" } };
    const args = call.form ?? call.json ?? {};
    switch (method) {
      case "files.getUploadURLExternal": {
        const id = `F${nextFile++}`;
        uploads.set(id, { filename: args.filename });
        return { status: 200, body: { ok: true, upload_url: `${base}/upload/${id}`, file_id: id } };
      }
      case "files.completeUploadExternal": {
        const files = JSON.parse(args.files ?? "[]") as { id: string }[];
        if (files.some((f) => !uploads.get(f.id)?.bytes))
          return { status: 200, body: { ok: false, error: "file_not_found" } };
        return { status: 200, body: { ok: true, files: files.map((f) => ({ id: f.id })) } };
      }
      case "chat.postMessage":
      case "chat.postEphemeral":
        return { status: 200, body: { ok: true, ts: "1.0001", channel: args.channel } };
    }
    return { status: 200, body: { ok: false, error: "unknown_method" } };
  });
  base = stand.url;
  return Object.assign(stand, {
    uploads,
    responseUrl: (id: string) => `${stand.url}/response/${id}`,
    apiUrl: `${stand.url}/api/`,
  });
}
