import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { type Browser, chromium, type Page } from "playwright-core";

import { api, type LocalStack, startLocalStack } from "../../support/local-stack.js";

/** Debian's Chromium (`apt-get install -y chromium`; .ci/run installs it). */
const CHROMIUM = process.env.KILN_TEST_CHROMIUM ?? "/usr/bin/chromium";
/** Screenshots land here (under .kiln/, which git ignores) for a person to look at. */
const OUTPUT_DIR = path.resolve(import.meta.dirname, "../../../.kiln/test-output/playground");

/**
 * The playground in a real browser against the real local stack (tiny models): submit, watch
 * progress and a latent preview, see the image, re-roll with the seed locked, open a render from
 * the gallery, and read an API error as Kiln words it.
 */
describe("the playground in Chromium", { skip: !fs.existsSync(CHROMIUM) && `no browser at ${CHROMIUM}` }, () => {
  let stack: LocalStack;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    stack = await startLocalStack();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    // Failed loads are listed by URL (the bad-size request's 400 is on purpose, and expected).
    page.on(
      "response",
      (r) => r.status() >= 400 && pageErrors.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`),
    );
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  const results = () => page.locator("#results article.result");

  it("renders with live progress and a latent preview, and shows the image with its parameters", async () => {
    const res = await page.goto(`${stack.url}/`);
    assert.equal(res?.status(), 200);
    assert.equal(res?.headers()["cache-control"], "no-cache");
    assert.equal(await page.locator("#key").getAttribute("type"), "password", "the key is masked");
    await page.fill("#key", stack.key);
    await page.locator("#key").dispatchEvent("change");
    // The key is kept for the next visit.
    assert.equal(await page.evaluate(() => localStorage.getItem("kiln.playground.key")), stack.key);

    await page.fill("#prompt", "a lighthouse on a cliff at dusk");
    await page.selectOption("#mode", "ensemble");
    await page.selectOption("#size", "256x256");
    await page.fill("#steps", "6");
    await page.selectOption("#scheduler", "euler");
    // Every text the progress line shows, including ones replaced before the test could look.
    await page.evaluate(() => {
      const seen: string[] = ((window as any).__progress = []);
      const el = document.getElementById("progress-text")!;
      new MutationObserver(() => seen.push(el.textContent ?? "")).observe(el, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    });
    await page.click("#render");

    const image = results().first().locator("img.result-image");
    await image.waitFor({ timeout: 120_000 });
    await page.waitForFunction(() => {
      const img = document.querySelector<HTMLImageElement>("#results img.result-image");
      return !!img && img.complete && img.naturalWidth === 256;
    });
    const progress = (await page.evaluate(() => (window as any).__progress)) as string[];
    assert.ok(
      progress.some((t) => /step \d+\/\d+/.test(t)),
      progress.join(" | "),
    );
    assert.ok(
      progress.some((t) => /succeeded$/.test(t)),
      progress.join(" | "),
    );
    // The ensemble's hand-over latents arrive as a preview: 256/8 = 32 px, shown scaled up.
    const preview = page.locator("#previews img.preview").first();
    assert.match((await preview.getAttribute("src")) ?? "", /^data:image\/png;base64,/);
    assert.equal(await preview.evaluate((img: HTMLImageElement) => img.naturalWidth), 32);

    const card = results().first();
    assert.equal(await card.locator('dd[data-field="status"]').textContent(), "succeeded");
    assert.equal(await card.locator('dd[data-field="size"]').textContent(), "256×256");
    assert.equal(await card.locator('dd[data-field="prompt"]').textContent(), "a lighthouse on a cliff at dusk");
    assert.equal(await card.locator('dd[data-field="steps"]').textContent(), "6");
    const download = card.locator("a", { hasText: "Download" });
    assert.match((await download.getAttribute("download")) ?? "", /^job_.+\.png$/);
    const bytes = await page.evaluate(
      async (href) => [...new Uint8Array(await (await fetch(href)).arrayBuffer()).slice(1, 4)],
      (await download.getAttribute("href"))!,
    );
    assert.deepEqual(bytes, [...Buffer.from("PNG")]);
    fs.mkdirSync(OUTPUT_DIR, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT_DIR, "render.png"), fullPage: true });
  });

  it("re-rolls with the seed locked: the same seed again", async () => {
    const first = results().first();
    const id = await first.getAttribute("data-render");
    const seed = await first.locator('dd[data-field="seed"]').textContent();
    assert.equal(await page.inputValue("#seed"), seed, "the seed field shows the render's seed");
    await page.check("#seed-lock");
    await page.click("#reroll");
    await page.waitForFunction(
      (prev) => {
        const card = document.querySelector("#results article.result");
        return (
          card &&
          card.getAttribute("data-render") !== prev &&
          card.querySelector('dd[data-field="status"]')?.textContent === "succeeded"
        );
      },
      id,
      { timeout: 120_000 },
    );
    assert.equal(await results().count(), 2);
    assert.equal(await results().first().locator('dd[data-field="seed"]').textContent(), seed);
    // Unlocked, a re-roll asks for a new seed.
    await page.uncheck("#seed-lock");
    await page.click("#reroll");
    await page.waitForFunction(
      () =>
        document.querySelectorAll("#results article.result").length === 3 &&
        document.querySelector('#results article.result dd[data-field="status"]')?.textContent === "succeeded",
      null,
      { timeout: 120_000 },
    );
    assert.notEqual(await results().first().locator('dd[data-field="seed"]').textContent(), seed);
  });

  it("lists the key's renders in the gallery, filters them, and opens one", async () => {
    const firstId = await results().last().getAttribute("data-render");
    await page.click("#gallery-refresh");
    const item = page.locator(`#gallery-items .gallery-item[data-render="${firstId}"]`);
    await item.waitFor();
    assert.equal(await page.locator("#gallery-items .gallery-item").count(), 3);
    await page.selectOption("#gallery-status", "failed");
    await page.waitForFunction(() => document.querySelectorAll("#gallery-items .gallery-item").length === 0);
    await page.selectOption("#gallery-status", "succeeded");
    await item.waitFor();
    await item.click();
    await page.waitForFunction(
      (id) => document.querySelector("#results article.result")?.getAttribute("data-render") === id,
      firstId,
    );
    assert.equal(await results().count(), 4);
  });

  it("shows an API error as the API words it", async () => {
    await page.selectOption("#size", "custom");
    await page.fill("#width", "65");
    await page.fill("#height", "256");
    await page.click("#render");
    const error = page.locator("#error");
    await error.waitFor({ state: "visible" });
    const direct = await api(stack, "POST", "/v1/renders", { prompt: "x", width: 65, height: 256 });
    assert.equal(direct.status, 400);
    assert.match((await error.locator("strong").textContent()) ?? "", /^400 /);
    assert.equal(await error.locator(".detail").textContent(), direct.json.detail);
    const fieldError = direct.json.errors.find((e: { field: string }) => e.field === "width");
    assert.ok(fieldError, JSON.stringify(direct.json));
    assert.match(
      (await error.locator("li").first().textContent()) ?? "",
      new RegExp(`^width: ${fieldError.message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
    );
    await page.screenshot({ path: path.join(OUTPUT_DIR, "error.png"), fullPage: true });
  });

  it("shows image input only when the API takes images, and raised no script errors", async () => {
    const doc = (await (await fetch(`${stack.url}/openapi.json`)).json()) as any;
    const takesImages = !!doc.components.schemas.RenderRequest.properties.image;
    assert.equal(await page.locator("#image-panel").isVisible(), takesImages);
    assert.deepEqual(pageErrors, ["400 POST /v1/renders"]);
  });
});
