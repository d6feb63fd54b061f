import { problem } from "../http/problem.js";
import { MULTIPART_FILE } from "./image-inputs.js";

/** Text parts kept as strings; every other text part is read as JSON when it parses (numbers, booleans, objects). */
const STRING_FIELDS = new Set([
  "prompt",
  "negative_prompt",
  "prompt_2",
  "negative_prompt_2",
  "mode",
  "scheduler",
  "output_format",
  "resize",
  "refiner",
  "image",
  "mask",
]);

/**
 * A multipart/form-data render: text parts become the JSON body's fields (`steps=30` → 30, `expand={"right":64}`
 * → an object), `image` and `mask` file parts become bytes. A part given twice is refused, as JSON would be.
 */
export async function readMultipartRender(
  request: Request,
): Promise<{ fields: Record<string, unknown>; files: { image?: Uint8Array; mask?: Uint8Array } } | Response> {
  let form: FormData;
  try {
    form = await request.formData();
  } catch (e) {
    const message = `the multipart body could not be read (${e instanceof Error ? e.message : String(e)})`;
    return problem(400, "invalid_body", `The request body is invalid — ${message}.`, {
      errors: [{ field: "body", message }],
    });
  }
  const fields: Record<string, unknown> = {};
  const files: { image?: Uint8Array; mask?: Uint8Array } = {};
  for (const name of new Set(form.keys())) {
    const values = form.getAll(name);
    if (values.length > 1) {
      const message = `part "${name}" is given ${values.length} times; send it once`;
      return problem(400, "invalid_request", `The request body is invalid — ${message}.`, {
        errors: [{ field: name, message }],
      });
    }
    const value = values[0]!;
    if (typeof value !== "string") {
      if (name !== "image" && name !== "mask") {
        const message = `part "${name}" is a file; only image and mask may be files`;
        return problem(400, "invalid_request", `The request body is invalid — ${message}.`, {
          errors: [{ field: name, message }],
        });
      }
      files[name] = new Uint8Array(await value.arrayBuffer());
      fields[name] = MULTIPART_FILE;
    } else if (STRING_FIELDS.has(name)) fields[name] = value;
    else {
      try {
        fields[name] = JSON.parse(value);
      } catch {
        fields[name] = value;
      }
    }
  }
  return { fields, files };
}
