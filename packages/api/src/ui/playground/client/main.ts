import { ApiError, call, dataUrlOf, type RenderView, streamEvents, url } from "./api.js";
import { $, h, input, select } from "./dom.js";
import { ImageInput, imagePanel } from "./mask.js";

/**
 * Kiln's playground: a form over `POST /v1/renders`, live progress and latent previews from the
 * render's event stream, results with their parameters, and a gallery of the key's renders.
 * Everything goes through the public API with the key the user types (kept in localStorage).
 */

const KEY_STORE = "kiln.playground.key";
const PARAMS_STORE = "kiln.playground.params.";
/** SDXL's training buckets (width × height), then small sizes for test models and quick looks. */
const SIZES: [number, number][] = [
  [1024, 1024],
  [1152, 896],
  [896, 1152],
  [1216, 832],
  [832, 1216],
  [1344, 768],
  [768, 1344],
  [1536, 640],
  [640, 1536],
  [512, 512],
  [256, 256],
];

type Params = Record<string, unknown> & { prompt: string; width: number; height: number };

let imageModes = false;
let images: ImageInput | undefined;
let running: AbortController | undefined;

const key = () => input("key").value.trim();

function showError(e: unknown): void {
  const box = $("error");
  box.replaceChildren();
  box.hidden = false;
  if (e instanceof ApiError) {
    const p = e.problem;
    box.append(
      h("strong", { text: `${p.status} ${p.title ?? ""}`.trim() }),
      h("p", { class: "detail", text: p.detail ?? "" }),
    );
    if (p.errors?.length)
      box.append(h("ul", {}, ...p.errors.map((x) => h("li", {}, h("code", { text: x.field }), `: ${x.message}`))));
    if (p.code) box.append(h("p", { class: "muted", text: `code: ${p.code}` }));
  } else {
    box.append(h("strong", { text: "Could not reach Kiln" }), h("p", { class: "detail", text: String(e) }));
  }
}
const clearError = () => ($("error").hidden = true);

function sizeValue(): [number, number] {
  const v = select("size").value;
  if (v === "custom") return [Number(input("width").value), Number(input("height").value)];
  const [w, h] = v.split("x").map(Number);
  return [w!, h!];
}

/** The request the form describes; fields left at "model default" are not sent. */
function formParams(): Params {
  const [width, height] = sizeValue();
  const p: Params = { prompt: input("prompt").value, width, height, mode: select("mode").value };
  const negative = input("negative").value.trim();
  if (negative) p.negative_prompt = negative;
  p.steps = Number(input("steps").value);
  p.guidance_scale = Number(input("guidance").value);
  if (select("scheduler").value) p.scheduler = select("scheduler").value;
  p.n = Number(input("n").value);
  if (input("seed-lock").checked && input("seed").value !== "") p.seed = Number(input("seed").value);
  if (imageModes && images?.hasImage && ["img2img", "inpaint"].includes(String(p.mode))) {
    Object.assign(p, images.encode(width, height));
    p.strength = Number(input("strength").value);
  }
  return p;
}

async function submit(params: Params): Promise<void> {
  clearError();
  running?.abort();
  running = new AbortController();
  const button = $("render") as HTMLButtonElement;
  button.disabled = true;
  $("previews").replaceChildren();
  setProgress("submitting…", 0);
  try {
    const job = await call<RenderView>(key(), "v1/renders", { method: "POST", body: JSON.stringify(params) });
    const { image: _i, mask: _m, ...kept } = params;
    localStorage.setItem(PARAMS_STORE + job.id, JSON.stringify(kept));
    input("seed").value = String(job.seed);
    setProgress(`${job.id} queued`, 0);
    let final: RenderView | undefined;
    await streamEvents(
      key(),
      job.id,
      (e) => {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- event JSON, shaped by its event name (docs/api.md)
        const d = e.data as Record<string, any>;
        if (e.event === "position")
          setProgress(
            `queued, position ${d.position ?? "?"}${d.waiting_reason ? ` — ${d.waiting_reason.message}` : ""}`,
            0,
          );
        else if (e.event === "stage") setProgress(`stage ${d.stage + 1}/${d.stages} ${d.kind}`, 0);
        else if (e.event === "progress")
          setProgress(`stage ${d.stage + 1} ${d.kind}: step ${d.step}/${d.steps}`, d.steps ? d.step / d.steps : 0);
        else if (e.event === "preview")
          $("previews").append(
            ...(d.images as string[]).map((src) =>
              h("img", { src, class: "preview", alt: `latent preview after stage ${d.stage + 1}` }),
            ),
          );
        else if (["succeeded", "failed", "canceled", "expired"].includes(e.event)) final = d as RenderView;
      },
      running.signal,
    );
    final ??= await call<RenderView>(key(), `v1/renders/${job.id}`);
    setProgress(`${final.id} ${final.status}`, final.status === "succeeded" ? 1 : 0);
    if (final.status !== "succeeded")
      showError(
        new ApiError({
          status: 200,
          title: `Render ${final.status}`,
          detail: final.error?.message,
          code: final.error?.code,
        }),
      );
    showResult(final);
    void loadGallery();
  } catch (e) {
    if ((e as Error).name !== "AbortError") showError(e);
    setProgress("", 0);
  } finally {
    button.disabled = false;
  }
}

function setProgress(text: string, fraction: number): void {
  $("progress-text").textContent = text;
  ($("progress-bar") as HTMLProgressElement).value = fraction;
}

function showResult(job: RenderView): void {
  const stored = localStorage.getItem(PARAMS_STORE + job.id);
  const params = stored ? (JSON.parse(stored) as Params) : undefined;
  const card = h("article", { class: "result", "data-render": job.id });
  const facts = [
    ["render", job.id],
    ["status", job.status],
    ["mode", job.mode],
    ["size", `${job.width}×${job.height}`],
    ["seed", String(job.seed)],
    ...(params
      ? Object.entries(params)
          .filter(([k]) => !["width", "height", "mode", "seed"].includes(k))
          .map(([k, v]) => [k, String(v)])
      : []),
  ];
  card.append(
    h(
      "dl",
      { class: "params" },
      ...facts.flatMap(([k, v]) => [h("dt", { text: k! }), h("dd", { text: v!, "data-field": k! })]),
    ),
  );
  for (const image of job.images) {
    const actions = h("div", { class: "actions" });
    const ext = image.format === "jpeg" ? "jpg" : image.format;
    actions.append(
      h("a", { href: image.url, download: `${job.id}-${image.seed}.${ext}`, class: "button", text: "Download" }),
      button("Use this seed", "use-seed", () => {
        input("seed").value = String(image.seed);
        input("seed-lock").checked = true;
        if (params) fillForm(params);
      }),
      button("Variations", "variations", () => variations(params, image.url, image.seed)),
    );
    if (imageModes) actions.append(button("Upscale ×2", "upscale", () => upscale(params, job, image.url)));
    card.append(
      h(
        "figure",
        {},
        h("img", { src: image.url, class: "result-image", alt: `seed ${image.seed}`, width: String(image.width) }),
        h("figcaption", { text: `seed ${image.seed}` }),
        actions,
      ),
    );
  }
  if (job.error) card.append(h("p", { class: "error-text", text: `${job.error.code}: ${job.error.message}` }));
  $("results").prepend(card);
}

const button = (text: string, cls: string, onclick: () => void) => {
  const b = h("button", { type: "button", class: cls, text });
  b.onclick = onclick;
  return b;
};

function fillForm(p: Params): void {
  input("prompt").value = p.prompt;
  input("negative").value = String(p.negative_prompt ?? "");
  if (p.mode) select("mode").value = String(p.mode);
  const preset = `${p.width}x${p.height}`;
  if ([...select("size").options].some((o) => o.value === preset)) select("size").value = preset;
  else {
    select("size").value = "custom";
    input("width").value = String(p.width);
    input("height").value = String(p.height);
  }
  toggleCustom();
  if (p.steps) input("steps").value = String(p.steps);
  if (p.guidance_scale !== undefined) input("guidance").value = String(p.guidance_scale);
  select("scheduler").value = String(p.scheduler ?? "");
}

/** Same prompt, new seeds; with image input, an img2img pass over the picture at medium strength. */
async function variations(params: Params | undefined, imageUrl: string, seed: number): Promise<void> {
  const base = params ?? formParams();
  if (imageModes)
    return submit({ ...base, mode: "img2img", image: await dataUrlOf(imageUrl), strength: 0.6, seed: seed + 1000 });
  return submit({ ...base, seed: Math.floor(Math.random() * 2 ** 31), n: Math.max(2, Number(base.n ?? 1)) });
}

/** Twice the size through img2img at low strength (SDXL renders detail at the larger size). */
async function upscale(params: Params | undefined, job: RenderView, imageUrl: string): Promise<void> {
  const base = params ?? formParams();
  const { mask: _m, ...rest } = base;
  return submit({
    ...rest,
    mode: "img2img",
    image: await dataUrlOf(imageUrl),
    strength: 0.35,
    width: job.width * 2,
    height: job.height * 2,
    seed: job.seed,
    n: 1,
  });
}

let galleryCursor: string | undefined;
async function loadGallery(more = false): Promise<void> {
  if (!key()) return;
  const q = new URLSearchParams({ limit: "24" });
  if (select("gallery-status").value) q.set("status", select("gallery-status").value);
  if (more && galleryCursor) q.set("cursor", galleryCursor);
  try {
    const page = await call<{ data: RenderView[]; next_cursor?: string }>(key(), `v1/renders?${q}`);
    galleryCursor = page.next_cursor;
    ($("gallery-more") as HTMLButtonElement).hidden = !galleryCursor;
    const mode = select("gallery-mode").value;
    const items = page.data
      .filter((r) => !mode || r.mode === mode)
      .map((r) => {
        const stored = localStorage.getItem(PARAMS_STORE + r.id);
        const prompt = stored ? (JSON.parse(stored) as Params).prompt : "";
        const thumb = r.images[0]
          ? h("img", { src: r.images[0].url, alt: r.id, loading: "lazy" })
          : h("div", { class: "thumb-empty", text: r.status });
        const item = h(
          "button",
          { type: "button", class: "gallery-item", "data-render": r.id, title: prompt || r.id },
          thumb,
          h("span", { text: `${r.status} · ${r.mode} · ${r.width}×${r.height} · seed ${r.seed}` }),
        );
        item.onclick = async () => {
          try {
            clearError();
            showResult(await call<RenderView>(key(), `v1/renders/${r.id}`));
            $("results").scrollIntoView({ behavior: "smooth" });
          } catch (e) {
            showError(e);
          }
        };
        return item;
      });
    if (more) $("gallery-items").append(...items);
    else $("gallery-items").replaceChildren(...items);
  } catch (e) {
    showError(e);
  }
}

function toggleCustom(): void {
  $("custom-size").hidden = select("size").value !== "custom";
}

/** Image modes appear only when this Kiln's API takes image input (its OpenAPI document says so). */
async function detectImageInput(): Promise<void> {
  try {
    const doc = (await (await fetch(url("openapi.json"))).json()) as {
      components?: { schemas?: Record<string, { properties?: Record<string, unknown> }> };
    };
    imageModes = !!doc.components?.schemas?.RenderRequest?.properties?.image;
  } catch {
    imageModes = false;
  }
  imagePanel().hidden = !imageModes;
  if (imageModes) {
    for (const m of ["img2img", "inpaint"]) select("mode").append(h("option", { value: m, text: m }));
    images = new ImageInput($("image-input"), () => undefined);
  }
}

function init(): void {
  for (const [w, hgt] of SIZES)
    select("size").append(
      h("option", { value: `${w}x${hgt}`, text: `${w} × ${hgt}${w === 1024 && hgt === 1024 ? " (SDXL)" : ""}` }),
    );
  select("size").append(h("option", { value: "custom", text: "custom…" }));
  select("size").onchange = toggleCustom;
  toggleCustom();
  input("key").value = localStorage.getItem(KEY_STORE) ?? "";
  input("key").onchange = () => {
    localStorage.setItem(KEY_STORE, key());
    void loadGallery();
  };
  $("show-key").onclick = () => {
    input("key").type = input("key").type === "password" ? "text" : "password";
  };
  $("dice").onclick = () => {
    input("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  };
  ($("form") as HTMLFormElement).onsubmit = (e) => {
    e.preventDefault();
    void submit(formParams());
  };
  $("reroll").onclick = () => {
    if (!input("seed-lock").checked) input("seed").value = "";
    void submit(formParams());
  };
  select("gallery-status").onchange = () => void loadGallery();
  select("gallery-mode").onchange = () => void loadGallery();
  $("gallery-more").onclick = () => void loadGallery(true);
  $("gallery-refresh").onclick = () => void loadGallery();
  void detectImageInput();
  void loadGallery();
}

init();
