import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError, loadConfig, readSstLinks, SST_LINKS } from "@kiln/shared";
import { awsPortsOptionsFromConfig } from "@kiln/shared/aws";

describe("config for the AWS family", () => {
  it("reads per-service endpoints and queue URLs, and hands them to the AWS ports", () => {
    const config = loadConfig({
      KILN_BACKEND: "aws",
      KILN_BUCKET: "b",
      KILN_TABLE: "t",
      KILN_AWS_REGION: "eu-west-1",
      KILN_AWS_ENDPOINT: "http://127.0.0.1:4566",
      KILN_DYNAMO_ENDPOINT: "http://127.0.0.1:8000",
      KILN_QUEUE_PREFIX: "dev-",
      KILN_QUEUE_URLS:
        "kiln-base=https://sqs.eu-west-1.amazonaws.com/1/base, kiln-refine=https://sqs.eu-west-1.amazonaws.com/1/refine",
      KILN_MAX_RECEIVES: "4",
    });
    assert.deepEqual(awsPortsOptionsFromConfig(config), {
      region: "eu-west-1",
      endpoint: "http://127.0.0.1:4566",
      sqsEndpoint: undefined,
      s3Endpoint: undefined,
      dynamoEndpoint: "http://127.0.0.1:8000",
      queuePrefix: "dev-",
      queueUrls: {
        "kiln-base": "https://sqs.eu-west-1.amazonaws.com/1/base",
        "kiln-refine": "https://sqs.eu-west-1.amazonaws.com/1/refine",
      },
      bucket: "b",
      table: "t",
      maxReceives: 4,
    });
  });

  it("takes bucket, table and queue URLs from SST resource links; explicit settings win", () => {
    const links = {
      [`SST_RESOURCE_${SST_LINKS.bucket}`]: JSON.stringify({ name: "app-dev-kilnbucket-x1", type: "sst.aws.Bucket" }),
      [`SST_RESOURCE_${SST_LINKS.table}`]: JSON.stringify({ name: "app-dev-KilnTable-y2", type: "sst.aws.Dynamo" }),
      [`SST_RESOURCE_${SST_LINKS.queues["kiln-base"]}`]: JSON.stringify({ url: "https://sqs/1/base-linked" }),
      [`SST_RESOURCE_${SST_LINKS.queues["kiln-refine"]}`]: JSON.stringify({ url: "https://sqs/1/refine-linked" }),
    };
    const linked = loadConfig({ KILN_BACKEND: "aws", ...links });
    assert.equal(linked.aws.bucket, "app-dev-kilnbucket-x1");
    assert.equal(linked.aws.table, "app-dev-KilnTable-y2");
    assert.deepEqual(linked.aws.queueUrls, {
      "kiln-base": "https://sqs/1/base-linked",
      "kiln-refine": "https://sqs/1/refine-linked",
    });
    const explicit = loadConfig({
      KILN_BACKEND: "aws",
      ...links,
      KILN_BUCKET: "mine",
      KILN_QUEUE_URLS: "kiln-base=https://sqs/1/mine",
    });
    assert.equal(explicit.aws.bucket, "mine");
    assert.equal(explicit.aws.queueUrls["kiln-base"], "https://sqs/1/mine");
    assert.equal(explicit.aws.queueUrls["kiln-refine"], "https://sqs/1/refine-linked");
  });

  it("says which link is malformed", () => {
    assert.throws(
      () => readSstLinks({ SST_RESOURCE_KilnBucket: "{not json" }),
      (e: unknown) => e instanceof KilnError && /SST_RESOURCE_KilnBucket is not JSON/.test(e.message),
    );
    assert.throws(() => readSstLinks({ SST_RESOURCE_KilnBaseQueue: '{"name":"x"}' }), /no "url" string/);
  });

  it("names both ways to give a bucket and a table", () => {
    assert.throws(
      () => loadConfig({ KILN_BACKEND: "aws", KILN_BUCKET: "b" }),
      (e: unknown) =>
        e instanceof KilnError && /KILN_TABLE/.test(e.message) && /SST_RESOURCE_KilnTable/.test(e.message),
    );
  });

  it("rejects queue URLs that are not name=url pairs, and reads the event log path", () => {
    assert.throws(() => loadConfig({ KILN_QUEUE_URLS: "kiln-base" }), /KILN_QUEUE_URLS/);
    assert.equal(loadConfig({ KILN_EVENT_LOG: "/var/log/kiln/events.jsonl" }).eventLog, "/var/log/kiln/events.jsonl");
  });
});
