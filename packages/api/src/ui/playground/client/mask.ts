import { $, h } from "./dom.js";

/**
 * Image input: a dropped (or chosen) picture and a mask painted over it. The mask is kept in its
 * own canvas at the picture's size — white where the model repaints, black where it keeps, as
 * Kiln's `mask` field expects — and shown as a translucent overlay.
 */
export class ImageInput {
  private image?: HTMLImageElement;
  private readonly view: HTMLCanvasElement;
  private readonly mask = document.createElement("canvas");
  private painted = false;

  constructor(
    private readonly root: HTMLElement,
    private readonly onChange: () => void,
  ) {
    this.view = h("canvas", { id: "image-canvas", class: "image-canvas" });
    const file = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", id: "image-file" });
    const clear = h("button", { type: "button", id: "mask-clear", text: "Clear mask" });
    const remove = h("button", { type: "button", id: "image-remove", text: "Remove image" });
    const brush = h("input", { type: "range", id: "brush", min: "4", max: "128", value: "32" });
    const drop = h("div", { class: "drop", id: "image-drop" }, "Drop a picture here, or ", file);
    root.append(drop, this.view, h("div", { class: "row" }, h("label", {}, "Brush ", brush), clear, remove));
    file.onchange = () => {
      if (file.files?.[0]) void this.load(file.files[0]);
    };
    drop.ondragover = (e) => {
      e.preventDefault();
      drop.classList.add("over");
    };
    drop.ondragleave = () => drop.classList.remove("over");
    drop.ondrop = (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer?.files[0];
      if (f) void this.load(f);
    };
    clear.onclick = () => this.resetMask();
    remove.onclick = () => {
      this.image = undefined;
      this.painted = false;
      this.view.width = this.view.height = 0;
      this.onChange();
    };
    let down = false;
    const paint = (e: PointerEvent) => {
      if (!down || !this.image) return;
      const r = this.view.getBoundingClientRect();
      const x = ((e.clientX - r.left) / r.width) * this.mask.width;
      const y = ((e.clientY - r.top) / r.height) * this.mask.height;
      const ctx = this.mask.getContext("2d")!;
      ctx.fillStyle = "#fff";
      ctx.beginPath();
      ctx.arc(x, y, ((Number(brush.value) / r.width) * this.mask.width) / 2, 0, Math.PI * 2);
      ctx.fill();
      this.painted = true;
      this.draw();
    };
    this.view.onpointerdown = (e) => {
      down = true;
      this.view.setPointerCapture(e.pointerId);
      paint(e);
    };
    this.view.onpointermove = paint;
    this.view.onpointerup = () => {
      down = false;
      this.onChange();
    };
  }

  get hasImage(): boolean {
    return !!this.image;
  }
  get hasMask(): boolean {
    return this.painted;
  }

  async load(file: Blob): Promise<void> {
    const img = new Image();
    img.src = URL.createObjectURL(file);
    await img.decode();
    this.image = img;
    this.view.width = this.mask.width = img.naturalWidth;
    this.view.height = this.mask.height = img.naturalHeight;
    this.resetMask();
  }

  private resetMask(): void {
    const ctx = this.mask.getContext("2d")!;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.mask.width, this.mask.height);
    this.painted = false;
    this.draw();
    this.onChange();
  }

  private draw(): void {
    if (!this.image) return;
    const ctx = this.view.getContext("2d")!;
    ctx.globalAlpha = 1;
    ctx.drawImage(this.image, 0, 0);
    ctx.globalAlpha = 0.45;
    ctx.globalCompositeOperation = "screen";
    ctx.drawImage(this.mask, 0, 0);
    ctx.globalCompositeOperation = "source-over";
    ctx.globalAlpha = 1;
  }

  /** The picture and (when painted) the mask as PNG data URLs at the requested size. */
  encode(width: number, height: number): { image?: string; mask?: string } {
    if (!this.image) return {};
    const out = (src: CanvasImageSource) => {
      const c = document.createElement("canvas");
      c.width = width;
      c.height = height;
      c.getContext("2d")!.drawImage(src, 0, 0, width, height);
      return c.toDataURL("image/png");
    };
    return { image: out(this.image), ...(this.painted ? { mask: out(this.mask) } : {}) };
  }

  /** Mount point, for show/hide by the feature check. */
  get element(): HTMLElement {
    return this.root;
  }
}

export const imagePanel = () => $("image-panel");
