import type { SdxlModel } from "../../src/engine/sdxl-model.js";

/**
 * Records the batch size (rows of `sample`) of every call of the model's UNet session, which still runs as it
 * does: the tests see how stages were batched without replacing anything.
 */
export function recordUnetRows(model: SdxlModel): number[] {
  const seen: number[] = [];
  const session = model.unet.session as unknown as {
    run: (feeds: Record<string, { dims: readonly number[] }>, ...rest: unknown[]) => unknown;
  };
  const run = session.run.bind(session);
  session.run = (feeds, ...rest) => {
    seen.push(feeds.sample!.dims[0]!);
    return run(feeds, ...rest);
  };
  return seen;
}
