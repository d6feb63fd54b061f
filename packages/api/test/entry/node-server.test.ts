import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";

import type { ServerType } from "@hono/node-server";

import { closeServer, serveOnNode } from "../../src/entry/node.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

/** Sends raw bytes (requests no HTTP client would form) and returns the whole answer. */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(request));
    let out = "";
    socket.on("data", (d) => (out += d.toString("latin1")));
    socket.on("close", () => resolve(out));
    socket.on("error", reject);
  });
}

describe("the Node server answers what it refuses with problem+json", () => {
  let f: AppFixture;
  let server: ServerType;
  let port: number;
  before(async () => {
    f = openAppFixture();
    ({ server, port } = await serveOnNode(f.app, { port: 0, host: "127.0.0.1" }));
  });
  after(async () => {
    await closeServer(server);
    await f.close();
  });

  it("a backslash in the path is 400 bad_request", async () => {
    const res = await raw(port, "GET /v1/re\\nders HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    assert.match(res, /^HTTP\/1\.1 400/);
    assert.match(res, /content-type: application\/problem\+json/i);
    assert.match(res, /"code":"bad_request"/);
  });

  it("headers over Node's limit are 431 headers_too_large", async () => {
    const res = await raw(port, `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${"a".repeat(20_000)}\r\n\r\n`);
    assert.match(res, /^HTTP\/1\.1 431/);
    assert.match(res, /"code":"headers_too_large"/);
  });

  it("garbage that is not HTTP is 400", async () => {
    const res = await raw(port, "HELLO\r\n\r\n");
    assert.match(res, /^HTTP\/1\.1 400/);
    assert.match(res, /application\/problem\+json/);
  });

  it("still serves ordinary requests", async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200);
  });
});
