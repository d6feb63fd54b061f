import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { addressRefusal, forbiddenKind, parseIp, webhookUrlRefusal } from "../../src/outbound/address-policy.js";

const strict = { allowPrivate: false, allowedHosts: [] as string[] };

describe("webhook address policy", () => {
  it("parses IPv4 and IPv6 in their usual forms", () => {
    assert.deepEqual(parseIp("127.0.0.1"), { version: 4, value: 0x7f000001n });
    assert.deepEqual(parseIp("::1"), { version: 6, value: 1n });
    assert.deepEqual(parseIp("[::1]"), { version: 6, value: 1n });
    assert.deepEqual(parseIp("::ffff:127.0.0.1"), parseIp("::ffff:7f00:1"));
    assert.deepEqual(parseIp("fe80::1%eth0"), parseIp("fe80::1"));
    assert.equal(parseIp("2001:db8::1")?.value, (0x20010db8n << 96n) | 1n);
    for (const bad of ["256.0.0.1", "1.2.3", "example.com", "1::2::3", "12345::", "::g", "1:2:3:4:5:6:7:8:9", ""])
      assert.equal(parseIp(bad), null, bad);
  });

  it("names the non-public ranges, including IPv4 hidden in IPv6 forms", () => {
    const cases: [string, string | null][] = [
      ["127.0.0.1", "loopback"],
      ["127.255.0.9", "loopback"],
      ["10.1.2.3", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["172.32.0.1", null],
      ["192.168.1.1", "private"],
      ["169.254.169.254", "link-local (cloud metadata)"],
      ["100.64.0.1", "shared (carrier-grade NAT)"],
      ["0.0.0.0", '"this network"'],
      ["224.0.0.1", "multicast"],
      ["255.255.255.255", "reserved"],
      ["8.8.8.8", null],
      ["93.184.216.34", null],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["fd00:ec2::254", "unique local (private)"],
      ["fe80::1", "link-local"],
      ["ff02::1", "multicast"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:a9fe:a9fe", "link-local (cloud metadata)"],
      ["64:ff9b::a00:1", "private"],
      ["2002:7f00:1::", "loopback"],
      ["2002:808:808::", null],
      ["2606:4700:4700::1111", null],
      ["::ffff:8.8.8.8", null],
    ];
    for (const [address, kind] of cases) assert.equal(forbiddenKind(address), kind, address);
  });

  it("refuses literal private hosts and odd URLs before any DNS, and allows public ones", () => {
    for (const url of [
      "http://127.0.0.1:8080/x",
      "http://10.0.0.5/",
      "http://169.254.169.254/latest/meta-data/",
      "http://[::1]/",
      "http://0x7f.1/",
      "http://2130706433/",
    ]) {
      assert.match(webhookUrlRefusal(new URL(url), strict) ?? "", /address; Kiln does not deliver/, url);
    }
    assert.match(webhookUrlRefusal(new URL("ftp://example.com/x"), strict) ?? "", /use http or https/);
    assert.match(webhookUrlRefusal(new URL("https://user:pw@example.com/x"), strict) ?? "", /credentials/);
    assert.equal(webhookUrlRefusal(new URL("https://93.184.216.34/hook"), strict), null);
    assert.equal(
      webhookUrlRefusal(new URL("https://hooks.example.com/hook"), strict),
      null,
      "names are judged after DNS",
    );
  });

  it("lets the configuration allow private targets wholesale or by host, address or range", () => {
    assert.equal(addressRefusal("127.0.0.1", "127.0.0.1", { allowPrivate: true, allowedHosts: [] }), null);
    assert.equal(
      addressRefusal("hooks.internal", "10.0.0.7", { allowPrivate: false, allowedHosts: ["hooks.internal"] }),
      null,
    );
    assert.equal(
      addressRefusal("other.internal", "10.0.0.7", { allowPrivate: false, allowedHosts: ["10.0.0.0/24"] }),
      null,
    );
    assert.match(
      addressRefusal("other.internal", "10.0.1.7", { allowPrivate: false, allowedHosts: ["10.0.0.0/24"] }) ?? "",
      /other\.internal \(10\.0\.1\.7\) is a private address/,
    );
    assert.equal(addressRefusal("::1", "::1", { allowPrivate: false, allowedHosts: ["::1"] }), null);
    assert.match(
      addressRefusal("a.example", "127.0.0.1", { allowPrivate: false, allowedHosts: ["b.example"] }) ?? "",
      /loopback/,
    );
  });
});
