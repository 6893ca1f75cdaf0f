// meta.json: the repository's format version, hash algorithm, feature flags and EROFS formats
// (reference: composefs-repository.md §1.3; docs/repository.md "meta.json"). Written pretty-printed with a
// trailing newline, exactly as composefs-rs writes it, so either tool can open the other's repositories.

import { StratumError } from "../errors.ts";
import { parseAlgorithm, type Algorithm } from "../format/object-id.ts";

export const REPO_VERSION = 1;

/** Feature flags this implementation understands. */
const KNOWN_INCOMPATIBLE: readonly string[] = [];
const KNOWN_RO_COMPATIBLE: readonly string[] = ["v1_erofs"];

export interface RepoMeta {
  version: number;
  algorithm: Algorithm;
  features: { compatible: string[]; readOnlyCompatible: string[]; incompatible: string[] };
  /** EROFS format versions: 0/1 = C-compatible (composefs "V0/V1"), 2 = legacy composefs-rs layout. */
  erofsFormats: { default: number; extra: number[] };
}

export function newMeta(algorithm: Algorithm): RepoMeta {
  return {
    version: REPO_VERSION,
    algorithm,
    features: { compatible: [], readOnlyCompatible: ["v1_erofs"], incompatible: [] },
    erofsFormats: { default: 1, extra: [] },
  };
}

export function serializeMeta(meta: RepoMeta): string {
  const formats: Record<string, unknown> = { default: meta.erofsFormats.default };
  if (meta.erofsFormats.extra.length) formats.extra = meta.erofsFormats.extra;
  const json = {
    version: meta.version,
    algorithm: meta.algorithm.name,
    features: {
      compatible: meta.features.compatible,
      "read-only-compatible": meta.features.readOnlyCompatible,
      incompatible: meta.features.incompatible,
    },
    erofs_formats: formats,
  };
  return JSON.stringify(json, null, 2) + "\n";
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringList(v: unknown, what: string, file: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string"))
    throw new StratumError("E_REPO_FORMAT", `${file}: "${what}" must be a list of strings`);
  return v;
}

/** Parse and validate meta.json. `file` names it in errors. */
export function parseMeta(text: string, file: string): RepoMeta {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StratumError("E_REPO_FORMAT", `${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!isRecord(raw)) throw new StratumError("E_REPO_FORMAT", `${file}: not a JSON object`);
  const version = raw.version;
  if (typeof version !== "number" || !Number.isInteger(version))
    throw new StratumError("E_REPO_FORMAT", `${file}: missing or invalid "version"`);
  if (version > REPO_VERSION)
    throw new StratumError(
      "E_REPO_FORMAT",
      `${file}: repository format version ${version} is newer than this stratum supports (${REPO_VERSION})`,
    );
  if (typeof raw.algorithm !== "string")
    throw new StratumError("E_REPO_FORMAT", `${file}: missing or invalid "algorithm"`);
  let algorithm: Algorithm;
  try {
    algorithm = parseAlgorithm(raw.algorithm);
  } catch (err) {
    throw new StratumError("E_REPO_FORMAT", `${file}: ${(err as Error).message}`);
  }
  const f = isRecord(raw.features) ? raw.features : {};
  const features = {
    compatible: stringList(f.compatible, "features.compatible", file),
    readOnlyCompatible: stringList(f["read-only-compatible"], "features.read-only-compatible", file),
    incompatible: stringList(f.incompatible, "features.incompatible", file),
  };
  const unknown = features.incompatible.filter((x) => !KNOWN_INCOMPATIBLE.includes(x));
  if (unknown.length)
    throw new StratumError(
      "E_REPO_FORMAT",
      `${file}: unsupported incompatible features: ${unknown.join(", ")}`,
    );
  let erofsFormats = {
    default: features.readOnlyCompatible.includes("v1_erofs") ? 1 : 2,
    extra: [] as number[],
  };
  if (isRecord(raw.erofs_formats)) {
    const d = raw.erofs_formats.default;
    const extra = raw.erofs_formats.extra ?? [];
    if (typeof d !== "number" || ![0, 1, 2].includes(d))
      throw new StratumError("E_REPO_FORMAT", `${file}: invalid erofs_formats.default`);
    if (!Array.isArray(extra) || !extra.every((x) => typeof x === "number" && [0, 1, 2].includes(x)))
      throw new StratumError("E_REPO_FORMAT", `${file}: invalid erofs_formats.extra`);
    erofsFormats = { default: d, extra: extra as number[] };
  }
  return { version, algorithm, features, erofsFormats };
}

/** Read-only-compatible features we do not know: the repository may be read but must not be written. */
export function unknownReadOnlyFeatures(meta: RepoMeta): string[] {
  return meta.features.readOnlyCompatible.filter((x) => !KNOWN_RO_COMPATIBLE.includes(x));
}
