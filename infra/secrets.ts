/**
 * Secrets set per stage with `npx sst secret set <Name> <value> --stage <stage>`; nothing secret is
 * in the repository or the task definitions' plain environment.
 */

/** Signs the API's own short-lived URLs (the AWS family serves images through presigned S3 URLs). */
export const urlSecret = new sst.Secret("KilnUrlSecret");
