/**
 * `GET /docs`: an API reference that renders `/openapi.json` in the browser and can send requests
 * ("Try it"), in one self-contained page. It loads nothing from the internet: Kiln runs in places
 * without it, and hosted reference UIs (Scalar and the like) fetch their code from a CDN.
 */
export const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kiln API reference</title>
<style>
  :root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --accent: #c2410c; --bg2: #f6f6f4; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e8e8e6; --muted: #aaa; --line: #3a3a3a; --bg2: #232323; } body { background: #161616; } }
  body { font: 15px/1.5 system-ui, sans-serif; color: var(--fg); margin: 0; display: grid; grid-template-columns: 260px 1fr; min-height: 100vh; }
  nav { border-right: 1px solid var(--line); padding: 16px; position: sticky; top: 0; height: 100vh; overflow: auto; box-sizing: border-box; }
  nav a { display: block; color: inherit; text-decoration: none; padding: 3px 0; font-size: 14px; }
  main { padding: 24px 32px; max-width: 980px; }
  .op { border-top: 1px solid var(--line); padding: 20px 0; }
  .m { font: 600 12px ui-monospace, monospace; padding: 2px 6px; border-radius: 4px; background: var(--accent); color: #fff; text-transform: uppercase; }
  code, pre, textarea, input { font: 13px ui-monospace, monospace; }
  pre { background: var(--bg2); padding: 10px; overflow: auto; border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 480px; }
  main { min-width: 0; }
  img { max-width: 100%; }
  table { border-collapse: collapse; width: 100%; font-size: 14px; }
  td, th { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
  .muted { color: var(--muted); }
  details { margin: 8px 0; }
  textarea { width: 100%; min-height: 120px; box-sizing: border-box; }
  input[type=text], input[type=password] { width: 100%; box-sizing: border-box; }
  button { margin-top: 6px; }
</style>
</head>
<body>
<nav><strong>Kiln API</strong><div id="toc" class="muted">loading…</div>
<p><label>API key<br><input type="password" id="token" placeholder="kiln_…" autocomplete="off" spellcheck="false"></label></p></nav>
<main id="main"><p class="muted">Loading /openapi.json…</p></main>
<script>
"use strict";
const $ = (tag, attrs = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) k === "text" ? (el.textContent = v) : el.setAttribute(k, v);
  for (const kid of kids) if (kid != null) el.append(kid);
  return el;
};
let spec;
const deref = (s) => {
  while (s && s.$ref) s = s.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return s || {};
};
function typeOf(s) {
  s = deref(s);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeOf).join(" | ");
  if (s.type === "array") return typeOf(s.items) + "[]";
  const t = Array.isArray(s.type) ? s.type.join(" | ") : s.type || "object";
  const rules = [];
  for (const k of ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern"]) if (s[k] !== undefined) rules.push(k + " " + s[k]);
  if (s.default !== undefined) rules.push("default " + JSON.stringify(s.default));
  return t + (rules.length ? " (" + rules.join(", ") + ")" : "");
}
function schemaTable(s, depth = 0) {
  s = deref(s);
  if (s.type === "array") return schemaTable(s.items, depth);
  if (!s.properties || depth > 3) return $("code", { text: typeOf(s) });
  const req = new Set(s.required || []);
  const t = $("table", {}, $("tr", {}, $("th", { text: "field" }), $("th", { text: "type" }), $("th", { text: "description" })));
  for (const [name, p] of Object.entries(s.properties)) {
    const d = deref(p);
    const nested = d.properties || (d.items && deref(d.items).properties) ? $("details", {}, $("summary", { text: "fields" }), schemaTable(d, depth + 1)) : null;
    t.append($("tr", {}, $("td", {}, $("code", { text: name + (req.has(name) ? "" : "?") })), $("td", { text: typeOf(p) }), $("td", {}, d.description || "", nested)));
  }
  return t;
}
function example(s, depth = 0) {
  s = deref(s);
  if (s.example !== undefined) return s.example;
  if (s.default !== undefined) return s.default;
  if (s.enum) return s.enum[0];
  if (s.type === "object" || s.properties) {
    const o = {};
    for (const k of s.required || []) o[k] = depth < 3 ? example(s.properties[k], depth + 1) : null;
    return o;
  }
  return { string: "", integer: 0, number: 0, boolean: false, array: [] }[s.type] ?? null;
}
function tryIt(path, method, op) {
  const params = (op.parameters || []).map(deref);
  const inputs = {};
  const box = $("div");
  for (const p of params) {
    inputs[p.in + ":" + p.name] = $("input", { type: "text", placeholder: p.in + " " + p.name });
    box.append($("label", {}, p.name + " (" + p.in + ")", inputs[p.in + ":" + p.name]));
  }
  const bodySchema = op.requestBody && op.requestBody.content["application/json"] && op.requestBody.content["application/json"].schema;
  const body = bodySchema ? $("textarea", {}, JSON.stringify(example(bodySchema), null, 2)) : null;
  const out = $("pre", { class: "muted", text: "" });
  const send = $("button", { text: "Send" });
  send.onclick = async () => {
    let url = path.replace(/\\{(\\w+)\\}/g, (_, n) => encodeURIComponent(inputs["path:" + n].value));
    const q = new URLSearchParams();
    const headers = {};
    for (const p of params) {
      const v = inputs[p.in + ":" + p.name].value;
      if (!v) continue;
      if (p.in === "query") q.set(p.name, v);
      if (p.in === "header") headers[p.name] = v;
    }
    if (q.toString()) url += "?" + q;
    const token = document.getElementById("token").value.trim();
    if (token) headers.authorization = "Bearer " + token;
    if (body) headers["content-type"] = "application/json";
    out.textContent = method.toUpperCase() + " " + url + " …";
    try {
      const res = await fetch(url, { method: method.toUpperCase(), headers, body: body ? body.value : undefined });
      out.textContent = res.status + " " + res.statusText + "\\n" + [...res.headers].map(([k, v]) => k + ": " + v).join("\\n") + "\\n\\n";
      if (!res.body) return;
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        out.textContent += dec.decode(value, { stream: true });
      }
    } catch (e) {
      out.textContent += "\\n" + e;
    }
  };
  return $("details", {}, $("summary", { text: "Try it" }), box, body, send, out);
}
async function main() {
  // Relative to the page, minus its own name, so /docs, /docs/ and a stage prefix (/prod/docs) all find it.
  spec = await (await fetch(location.pathname.replace(/\\/docs\\/?$/, "/") + "openapi.json")).json();
  const main = document.getElementById("main");
  const toc = document.getElementById("toc");
  main.textContent = "";
  toc.textContent = "";
  main.append($("h1", { text: spec.info.title + " " + spec.info.version }), $("p", { text: spec.info.description || "" }));
  let n = 0;
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const id = "op" + n++;
      toc.append($("a", { href: "#" + id }, $("span", { class: "m", text: method }), " " + path));
      const sec = $("section", { class: "op", id }, $("h2", {}, $("span", { class: "m", text: method }), " ", $("code", { text: path })));
      if (op.summary) sec.append($("p", {}, $("strong", { text: op.summary })));
      if (op.description) sec.append($("pre", { text: op.description }));
      if (op.security && op.security.length) sec.append($("p", { class: "muted", text: "Needs Authorization: Bearer <API key>." }));
      const params = (op.parameters || []).map(deref);
      if (params.length) {
        const t = $("table", {}, $("tr", {}, $("th", { text: "parameter" }), $("th", { text: "in" }), $("th", { text: "type" }), $("th", { text: "description" })));
        for (const p of params) t.append($("tr", {}, $("td", {}, $("code", { text: p.name + (p.required ? "" : "?") })), $("td", { text: p.in }), $("td", { text: typeOf(p.schema) }), $("td", { text: p.description || deref(p.schema).description || "" })));
        sec.append($("h3", { text: "Parameters" }), t);
      }
      if (op.requestBody) {
        for (const [type, media] of Object.entries(op.requestBody.content)) sec.append($("h3", { text: "Body (" + type + ")" }), schemaTable(media.schema));
      }
      sec.append($("h3", { text: "Responses" }));
      for (const [status, r] of Object.entries(op.responses || {})) {
        const resp = deref(r);
        const d = $("details", {}, $("summary", {}, $("code", { text: status }), " " + (resp.description || "")));
        for (const [type, media] of Object.entries(resp.content || {})) d.append($("p", { class: "muted", text: type }), schemaTable(media.schema));
        sec.append(d);
      }
      sec.append(tryIt(path, method, op));
      main.append(sec);
    }
  }
}
main().catch((e) => (document.getElementById("main").textContent = "Could not load /openapi.json: " + e));
</script>
</body>
</html>
`;
