// Locates the shared conformance vectors (../shared/conformance beside the project checkout).

import * as fs from "node:fs";
import * as path from "node:path";
import { PROJECT_ROOT } from "./cli.ts";

export const CONFORMANCE_DIR = path.resolve(PROJECT_ROOT, "../shared/conformance/composefs");

export interface Vectors {
  fsverity: { data_utf8: string; fsverity_sha256: string }[];
}

export function loadVectors(): Vectors {
  return JSON.parse(fs.readFileSync(path.join(CONFORMANCE_DIR, "vectors.json"), "utf8")) as Vectors;
}
