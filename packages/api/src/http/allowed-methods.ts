/**
 * The methods the app answers on `path`, so a request with another method gets 405 with `Allow`
 * instead of a bare 404. Reads Hono's own route table (`app.routes`); middleware (method ALL) is skipped.
 */
export function allowedMethods(routes: readonly { method: string; path: string }[], path: string): string[] {
  const found = new Set<string>();
  for (const r of routes) {
    if (r.method === "ALL" || r.path.endsWith("*")) continue;
    if (patternFor(r.path).test(path)) found.add(r.method);
  }
  if (found.has("GET")) found.add("HEAD");
  return [...found].sort();
}

const cache = new Map<string, RegExp>();
function patternFor(routePath: string): RegExp {
  let re = cache.get(routePath);
  if (!re) {
    const source = routePath
      .split("/")
      .map((part) => (part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("/");
    re = new RegExp(`^${source}$`);
    cache.set(routePath, re);
  }
  return re;
}
