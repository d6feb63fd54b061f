import { z } from "@hono/zod-openapi";

/** `limit` and `cursor` as every list (renders, batches, manifests) takes them, in one OpenAPI shape. */
export const pageQuery = z.object({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(100)
    .default(20)
    .openapi({ param: { name: "limit", in: "query" }, description: "Page size, 1–100." }),
  cursor: z
    .string()
    .min(1)
    .max(1024)
    .optional()
    .openapi({ param: { name: "cursor", in: "query" }, description: "`next_cursor` of the previous page." }),
});
export type PageQuery = z.infer<typeof pageQuery>;
