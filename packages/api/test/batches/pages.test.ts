/**
 * `GET /v1/batches` and `GET /v1/manifests` page like `GET /v1/renders`: `limit`, an opaque
 * `cursor`, `{data, next_cursor, links.next}`; runs newest first, manifests by id; a run stored
 * before the run index existed still appears in its place.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { batchKeys, type BatchRun, readJson, writeJson } from "../../src/batches/run-record.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

interface PageBody {
  data: { id: string }[];
  next_cursor?: string;
  links: { next?: string };
}

describe("batch and manifest pages", () => {
  let fx: AppFixture;
  let auth: Record<string, string>;
  let clock = Date.parse("2026-12-01T00:00:00Z");

  before(async () => {
    fx = openAppFixture({ now: () => new Date(clock) });
    auth = await fx.keyHeaders();
  });
  after(() => fx.close());

  const manifest = (id: string) => ({
    id,
    defaults: { steps: 2, width: 64, height: 64, mode: "base" },
    prompts: [`${id} prompt`],
  });

  /** Follows `links.next` from `path` to the end, returning every page's ids. */
  async function walk(path: string): Promise<string[][]> {
    const pages: string[][] = [];
    let url: string | undefined = path;
    while (url) {
      const res = await fx.app.request(url.replace("http://kiln.test", ""), { headers: auth });
      assert.equal(res.status, 200, await res.clone().text());
      const body = (await res.json()) as PageBody;
      pages.push(body.data.map((d) => d.id));
      assert.equal(Boolean(body.next_cursor), Boolean(body.links.next), "next_cursor and links.next go together");
      url = body.links.next;
      assert.ok(pages.length < 20, "pages end");
    }
    return pages;
  }

  it("runs come newest first, two a page, each once; an old unindexed run keeps its place", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      clock += 60_000;
      const res = await fx.app.request("/v1/batches", {
        method: "POST",
        headers: auth,
        body: JSON.stringify(manifest(`m${i}`)),
      });
      assert.equal(res.status, 202);
      ids.push(((await res.json()) as { id: string }).id);
    }
    // A run as stored before the index: its record only, dated between the 2nd and 3rd.
    const keyId = (await fx.ports.keys.list()).find((k) => !k.revokedAt)!.id;
    const template = (await readJson<BatchRun>(fx.ports.blobs, batchKeys.run(keyId, ids[0]!)))!;
    const old: BatchRun = {
      ...template,
      id: "run_0000000000000old",
      createdAt: new Date(clock - 150_000).toISOString(),
    };
    await writeJson(fx.ports.blobs, batchKeys.run(keyId, old.id), old);

    const pages = await walk("/v1/batches?limit=2");
    assert.deepEqual(pages, [
      [ids[4], ids[3]],
      [ids[2], old.id],
      [ids[1], ids[0]],
    ]);
  });

  it("manifests page by id", async () => {
    for (const id of ["c-three", "a-one", "b-two"]) {
      const res = await fx.app.request(`/v1/manifests/${id}`, {
        method: "PUT",
        headers: auth,
        body: JSON.stringify(manifest(id)),
      });
      assert.equal(res.status, 201);
    }
    assert.deepEqual(await walk("/v1/manifests?limit=2"), [["a-one", "b-two"], ["c-three"]]);
    assert.deepEqual(await walk("/v1/manifests"), [["a-one", "b-two", "c-three"]]);
  });

  it("a bad cursor or limit is a 400 naming the parameter", async () => {
    for (const [query, field] of [
      ["cursor=not-ours", "cursor"],
      ["limit=0", "limit"],
      ["limit=101", "limit"],
    ] as const) {
      for (const path of ["/v1/batches", "/v1/manifests"]) {
        const res = await fx.app.request(`${path}?${query}`, { headers: auth });
        assert.equal(res.status, 400, `${path}?${query}`);
        const body = (await res.json()) as { code: string; errors: { field: string }[] };
        assert.equal(body.code, "invalid_request");
        assert.deepEqual(
          body.errors.map((e) => e.field),
          [field],
        );
      }
    }
  });
});
