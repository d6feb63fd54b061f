/**
 * Which addresses a webhook may be delivered to. Web-standard (no `node:net`): the API checks the
 * URL at submit time on any runtime; the Node dispatcher checks every resolved address again at
 * delivery, so a name that resolved to a public address at submit and to a private one later
 * (DNS rebinding) is still refused.
 */
export interface WebhookPolicy {
  /** Deliver to private, loopback and link-local addresses too. */
  allowPrivate: boolean;
  /** Lower-case host names, IP addresses or CIDR ranges allowed even when private. */
  allowedHosts: readonly string[];
}

interface Ip {
  version: 4 | 6;
  /** The address as an unsigned integer (32 or 128 bits). */
  value: bigint;
}

interface Range {
  base: Ip;
  bits: number;
  kind: string;
}

/** Strict dotted-quad IPv4 (URL parsing already normalises hex, octal and short forms to this). */
function parseIpv4(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return null;
    value = (value << 8n) | BigInt(Number(part));
  }
  return value;
}

function parseIpv6(text: string): bigint | null {
  let body = text.toLowerCase();
  const zone = body.indexOf("%");
  if (zone >= 0) body = body.slice(0, zone);
  let tail: bigint | null = null;
  const lastColon = body.lastIndexOf(":");
  if (body.includes(".", lastColon)) {
    // An embedded IPv4 tail (`::ffff:127.0.0.1`) stands for the last two groups.
    tail = parseIpv4(body.slice(lastColon + 1));
    if (tail === null) return null;
    body = `${body.slice(0, lastColon + 1)}0:0`;
  }
  const halves = body.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0]!);
  const rest = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  let value = 0n;
  for (const group of all) {
    if (!/^[0-9a-f]{1,4}$/.test(group)) return null;
    value = (value << 16n) | BigInt(parseInt(group, 16));
  }
  if (tail !== null) value = (value & ~0xffffffffn) | tail;
  return value;
}

/** An IP address in any usual textual form (IPv6 with or without brackets), or null. */
export function parseIp(text: string): Ip | null {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseIpv4(bare);
  if (v4 !== null) return { version: 4, value: v4 };
  const v6 = bare.includes(":") ? parseIpv6(bare) : null;
  return v6 === null ? null : { version: 6, value: v6 };
}

function cidr(text: string, kind: string): Range {
  const [address, bits] = text.split("/");
  const base = parseIp(address!);
  if (!base) throw new Error(`bad range ${text}`);
  return { base, bits: Number(bits), kind };
}

function inRange(ip: Ip, range: Range): boolean {
  if (ip.version !== range.base.version) return false;
  const width = ip.version === 4 ? 32n : 128n;
  const shift = width - BigInt(range.bits);
  return ip.value >> shift === range.base.value >> shift;
}

/** IANA special-purpose ranges a webhook must not reach (RFC 6890 and successors). */
const FORBIDDEN: readonly Range[] = [
  cidr("0.0.0.0/8", '"this network"'),
  cidr("10.0.0.0/8", "private"),
  cidr("100.64.0.0/10", "shared (carrier-grade NAT)"),
  cidr("127.0.0.0/8", "loopback"),
  cidr("169.254.0.0/16", "link-local (cloud metadata)"),
  cidr("172.16.0.0/12", "private"),
  cidr("192.0.0.0/24", "IETF protocol assignment"),
  cidr("192.0.2.0/24", "documentation"),
  cidr("192.88.99.0/24", "6to4 relay"),
  cidr("192.168.0.0/16", "private"),
  cidr("198.18.0.0/15", "benchmarking"),
  cidr("198.51.100.0/24", "documentation"),
  cidr("203.0.113.0/24", "documentation"),
  cidr("224.0.0.0/4", "multicast"),
  cidr("240.0.0.0/4", "reserved"),
  cidr("::/128", "unspecified"),
  cidr("::1/128", "loopback"),
  cidr("64:ff9b:1::/48", "local-use NAT64"),
  cidr("100::/64", "discard-only"),
  cidr("2001::/32", "Teredo"),
  cidr("2001:db8::/32", "documentation"),
  cidr("fc00::/7", "unique local (private)"),
  cidr("fe80::/10", "link-local"),
  cidr("fec0::/10", "site-local"),
  cidr("ff00::/8", "multicast"),
];

/** IPv6 forms that carry an IPv4 address: judged by that address. */
const EMBEDDING: readonly { range: Range; v4: (value: bigint) => bigint }[] = [
  { range: cidr("::ffff:0:0/96", "IPv4-mapped"), v4: (v) => v & 0xffffffffn },
  { range: cidr("::/96", "IPv4-compatible"), v4: (v) => v & 0xffffffffn },
  { range: cidr("64:ff9b::/96", "NAT64"), v4: (v) => v & 0xffffffffn },
  { range: cidr("2002::/16", "6to4"), v4: (v) => (v >> 80n) & 0xffffffffn },
];

/** What kind of non-public address this is ("loopback", "private" …), or null for a public one. */
export function forbiddenKind(address: string): string | null {
  const ip = parseIp(address);
  if (!ip) return "unparseable";
  return kindOf(ip);
}

function kindOf(ip: Ip): string | null {
  const direct = FORBIDDEN.find((r) => inRange(ip, r));
  if (direct) return direct.kind;
  if (ip.version === 6) {
    const embedding = EMBEDDING.find((e) => inRange(ip, e.range));
    if (embedding) return kindOf({ version: 4, value: embedding.v4(ip.value) });
  }
  return null;
}

function allowlisted(host: string, ip: Ip | null, policy: WebhookPolicy): boolean {
  return policy.allowedHosts.some((entry) => {
    if (entry === host) return true;
    if (!ip) return false;
    if (entry.includes("/")) {
      const [address, bits] = entry.split("/");
      const base = parseIp(address!);
      const n = Number(bits);
      return (
        base !== null &&
        Number.isInteger(n) &&
        n >= 0 &&
        n <= (base.version === 4 ? 32 : 128) &&
        inRange(ip, { base, bits: n, kind: "" })
      );
    }
    const listed = parseIp(entry);
    return listed !== null && listed.version === ip.version && listed.value === ip.value;
  });
}

/** The URL's host as DNS and the allowlist see it: lower case, IPv6 without brackets. */
export function hostOf(url: URL): string {
  const host = url.hostname.toLowerCase();
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

const HOW_TO_ALLOW = "set KILN_WEBHOOK_ALLOW_PRIVATE=true or list the host in KILN_WEBHOOK_ALLOWED_HOSTS to allow it";

/**
 * Why `address` (which `host` resolved to, or `host` itself when it is an IP) must not receive a
 * webhook, or null when it may.
 */
export function addressRefusal(host: string, address: string, policy: WebhookPolicy): string | null {
  if (policy.allowPrivate) return null;
  const ip = parseIp(address);
  if (allowlisted(host, ip, policy)) return null;
  const kind = ip ? kindOf(ip) : "unparseable";
  if (!kind) return null;
  const where = host === address ? address : `${host} (${address})`;
  return `${where} is a ${kind} address; Kiln does not deliver webhooks to private, loopback, link-local or metadata addresses (${HOW_TO_ALLOW})`;
}

/** Checks what can be checked without DNS: the scheme and an IP-literal host. */
export function webhookUrlRefusal(url: URL, policy: WebhookPolicy): string | null {
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return `${url.protocol} URLs are not delivered to; use http or https`;
  if (url.username || url.password)
    return "a webhook URL must not carry credentials; put a token in the path or query instead";
  const host = hostOf(url);
  return parseIp(host) ? addressRefusal(host, host, policy) : null;
}

// ---------------------------------------------------------------------------------------------
// Fetching a user-given URL (image inputs): the same policy, checked at every redirect hop, with size and time
// limits. Web-standard fetch, so it runs wherever the API does.

export interface OutboundFetchPolicy extends WebhookPolicy {
  /** The host's addresses (`[]` when the name does not exist); absent on runtimes without DNS. */
  resolveHost?: (host: string) => Promise<string[]>;
}

export interface FetchLimits {
  maxBytes: number;
  /** For the whole exchange, every redirect and the body included. */
  timeoutMs: number;
  maxRedirects?: number;
}

/** A fetch Kiln will not make or could not complete: 400 (refused, failed, too slow) or 413 (too large). */
export class FetchRefusedError extends Error {
  constructor(
    readonly status: 400 | 413,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Why Kiln will not fetch `url`, or null: https only (plain http only to a host the policy allows privately), no
 * credentials, and no private, loopback, link-local or metadata address — by literal, or by what DNS answers.
 */
export async function fetchUrlRefusal(url: URL, policy: OutboundFetchPolicy): Promise<string | null> {
  const host = hostOf(url);
  // A refused address is the more useful answer than a refused scheme, so it is checked first.
  const literal = parseIp(host) ? fetchAddressRefusal(host, host, policy) : null;
  if (literal) return literal;
  const allowedPlain = policy.allowPrivate || allowlisted(host, parseIp(host), policy);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && allowedPlain))
    return `${url.protocol}//${host} is not fetched; use an https URL`;
  if (url.username || url.password) return "a URL must not carry credentials";
  if (parseIp(host)) return null;
  if (policy.allowPrivate || !policy.resolveHost) return null;
  let addresses: string[];
  try {
    addresses = await policy.resolveHost(host);
  } catch {
    return `${host} could not be resolved; check the URL`;
  }
  if (addresses.length === 0) return `${host} does not resolve to any address`;
  return addresses.map((a) => fetchAddressRefusal(host, a, policy)).find((r) => r !== null) ?? null;
}

function fetchAddressRefusal(host: string, address: string, policy: WebhookPolicy): string | null {
  const reason = addressRefusal(host, address, policy);
  return reason && reason.replace("does not deliver webhooks to", "does not fetch from");
}

/**
 * GETs a user-given URL under the policy: redirects are followed by hand (at most `maxRedirects`), each hop
 * checked before it is requested, so a redirect to 127.0.0.1 or the metadata service is refused; the body is
 * read up to `maxBytes`; everything within `timeoutMs`. Name-based hops are checked by DNS before the request;
 * the connection itself resolves again, so a name that changes its answer in between (DNS rebinding) is not
 * caught here — deployments that fetch from untrusted names should also egress through a filtering proxy.
 */
export async function fetchWithPolicy(
  raw: string,
  policy: OutboundFetchPolicy,
  limits: FetchLimits,
  fetchImpl: typeof fetch = fetch,
): Promise<{ bytes: Uint8Array; contentType: string | null }> {
  const deadline = AbortSignal.timeout(limits.timeoutMs);
  const seconds = limits.timeoutMs / 1000;
  const slow = () =>
    new FetchRefusedError(
      400,
      `the URL did not answer in full within ${seconds} s; host the file somewhere faster or upload it`,
    );
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FetchRefusedError(400, "not an absolute URL");
  }
  for (let hop = 0; ; hop++) {
    const refusal = await fetchUrlRefusal(url, policy);
    if (refusal) throw new FetchRefusedError(400, hop === 0 ? refusal : `it redirects to ${url.href}: ${refusal}`);
    let response: Response;
    try {
      response = await fetchImpl(url, { redirect: "manual", signal: deadline, headers: { accept: "image/*" } });
    } catch (e) {
      if (deadline.aborted) throw slow();
      throw new FetchRefusedError(400, `fetching ${url.host} failed (${e instanceof Error ? e.message : String(e)})`);
    }
    if (response.status >= 300 && response.status < 400 && response.headers.get("location")) {
      await response.body?.cancel().catch(() => undefined);
      if (hop >= (limits.maxRedirects ?? 3)) throw new FetchRefusedError(400, "the URL redirects too many times");
      url = new URL(response.headers.get("location")!, url);
      continue;
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw new FetchRefusedError(400, `the URL answered HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get("content-length") ?? NaN);
    if (declared > limits.maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw new FetchRefusedError(413, `the file is ${declared} bytes; at most ${limits.maxBytes} are accepted`);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = response.body?.getReader();
    try {
      while (reader) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > limits.maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw new FetchRefusedError(413, `the file is over ${limits.maxBytes} bytes, the most accepted`);
        }
        chunks.push(value);
      }
    } catch (e) {
      if (e instanceof FetchRefusedError) throw e;
      if (deadline.aborted) throw slow();
      throw new FetchRefusedError(
        400,
        `reading from ${url.host} failed (${e instanceof Error ? e.message : String(e)})`,
      );
    }
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const c of chunks) {
      bytes.set(c, o);
      o += c.length;
    }
    return { bytes, contentType: response.headers.get("content-type") };
  }
}
