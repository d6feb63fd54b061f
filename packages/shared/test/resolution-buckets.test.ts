import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  bucketId,
  bucketQueueDefinitions,
  chooseBucket,
  isKilnError,
  loadConfig,
  parseBucket,
  SDXL_BUCKETS,
} from "../src/index.js";

const sdxl = { buckets: SDXL_BUCKETS, strict: false };

describe("resolution buckets", () => {
  it("maps sizes: exact buckets kept, SDXL-scale sizes snapped by aspect ratio, small and huge kept", () => {
    const table: [number, number, string | undefined, number, number][] = [
      // exact buckets are kept
      [1024, 1024, "1024x1024", 1024, 1024],
      [832, 1216, "832x1216", 832, 1216],
      [1536, 640, "1536x640", 1536, 640],
      // snapped: nearest aspect ratio (4:3 → 1152×896, 16:9 → 1344×768, 3:2 → 1216×832, 1:1 → 1024²)
      [1024, 768, "1152x896", 1152, 896],
      [768, 1024, "896x1152", 896, 1152],
      [1280, 720, "1344x768", 1344, 768],
      [1200, 800, "1216x832", 1216, 832],
      [768, 768, "1024x1024", 1024, 1024],
      [1280, 1280, "1024x1024", 1024, 1024],
      [2048, 768, "1536x640", 1536, 640],
      // small sizes (tiny and reference models) and deliberate large renders keep their size, no bucket
      [64, 64, undefined, 64, 64],
      [256, 256, undefined, 256, 256],
      [512, 768, undefined, 512, 768],
      [1536, 1536, undefined, 1536, 1536],
      [2048, 2048, undefined, 2048, 2048],
    ];
    for (const [w, h, bucket, ow, oh] of table) {
      const c = chooseBucket(w, h, sdxl);
      assert.deepEqual([c.bucket, c.width, c.height], [bucket, ow, oh], `${w}×${h}`);
      assert.equal(c.snappedFrom !== undefined, bucket !== undefined && (w !== ow || h !== oh), `${w}×${h} snapped`);
    }
  });

  it("an aspect ratio between two buckets at the same distance goes to the larger one", () => {
    const c = chooseBucket(900, 900, {
      buckets: [
        { width: 960, height: 960 },
        { width: 1024, height: 1024 },
      ],
      strict: false,
    });
    assert.equal(c.bucket, "1024x1024");
  });

  it("strict: a size that is not a bucket is refused with the list; a bucket passes", () => {
    assert.equal(chooseBucket(1216, 832, { ...sdxl, strict: true }).bucket, "1216x832");
    for (const [w, h] of [
      [1024, 768],
      [64, 64],
    ] as const) {
      assert.throws(
        () => chooseBucket(w, h, { ...sdxl, strict: true }),
        (e: unknown) => {
          assert.ok(isKilnError(e));
          assert.equal(e.status, 400);
          assert.equal(e.code, "size_not_a_bucket");
          assert.match(
            e.message,
            /1024x1024, 1152x896, 896x1152, 1216x832, 832x1216, 1344x768, 768x1344, 1536x640, 640x1536/,
          );
          assert.equal((e.details?.buckets as unknown[]).length, 9);
          return true;
        },
      );
    }
  });

  it("parses bucket ids and names the bucket queues", () => {
    assert.deepEqual(parseBucket("1152x896"), { width: 1152, height: 896 });
    assert.deepEqual(parseBucket(" 896×1152 "), { width: 896, height: 1152 });
    assert.equal(parseBucket("1000x1001"), undefined);
    assert.equal(parseBucket("big"), undefined);
    assert.equal(bucketId({ width: 640, height: 1536 }), "640x1536");
    assert.deepEqual(
      bucketQueueDefinitions(["1024x1024"]).map((q) => [q.name, q.link]),
      [
        ["kiln-base-1024x1024", "KilnBaseB1024x1024"],
        ["kiln-refine-1024x1024", "KilnRefineB1024x1024"],
        ["kiln-base-batch-1024x1024", "KilnBaseBatchB1024x1024"],
        ["kiln-refine-batch-1024x1024", "KilnRefineBatchB1024x1024"],
      ],
    );
  });

  it("config: SDXL's set by default, KILN_BUCKETS overrides, bad values are named", () => {
    const d = loadConfig({});
    assert.deepEqual(d.buckets.list.map(bucketId), SDXL_BUCKETS.map(bucketId));
    assert.equal(d.buckets.strict, false);
    assert.equal(d.buckets.routing, "shared");
    assert.equal(d.buckets.worker, "all");
    const c = loadConfig({
      KILN_BUCKETS: "1024x1024, 1152x896",
      KILN_STRICT_BUCKETS: "true",
      KILN_BUCKET_ROUTING: "lanes",
      KILN_WORKER_BUCKETS: "1152x896",
    });
    assert.deepEqual(c.buckets.list.map(bucketId), ["1024x1024", "1152x896"]);
    assert.deepEqual([c.buckets.strict, c.buckets.routing, c.buckets.worker], [true, "lanes", ["1152x896"]]);
    assert.throws(
      () => loadConfig({ KILN_BUCKETS: "1024x1000x3" }),
      /KILN_BUCKETS="1024x1000x3": "1024x1000x3" is not/,
    );
    assert.throws(
      () => loadConfig({ KILN_BUCKETS: "1024x1024", KILN_WORKER_BUCKETS: "1152x896" }),
      /KILN_WORKER_BUCKETS lists 1152x896, which KILN_BUCKETS does not/,
    );
  });
});
