// Image manifests, indexes and configs (OCI image-spec v1.1 manifest.md, image-index.md, config.md, and Docker
// image manifest v2 schema 2): JSON bytes validated into typed objects, the manifest media type detected when the
// Content-Type does not say, and the platform an index entry is chosen by (docs/pull.md "Platforms"). Malformed
// documents are E_BAD_INPUT naming the document and the field; schema 1 and other valid-but-foreign documents
// are E_UNSUPPORTED.

import * as os from "node:os";
import { StratumError } from "../errors.ts";
import { essence, isSchema1, manifestKind, MediaType } from "./media-types.ts";
import { checkDigest } from "./reference.ts";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  osVersion?: string;
  osFeatures?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  /** Embedded content, base64, as given. */
  data?: string;
}

export interface ImageManifest {
  kind: "manifest";
  /** The manifest's media type (OCI or Docker v2s2), from the document or its Content-Type. */
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  kind: "index";
  /** OCI image index or Docker manifest list. */
  mediaType: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** How to run the image (config.md "config"); Docker's `null`s read as absent. */
export interface ExecConfig {
  user?: string;
  env: string[];
  entrypoint?: string[];
  cmd?: string[];
  workingDir?: string;
  /** Keys of `Volumes`: container paths. */
  volumes: string[];
  /** Keys of `ExposedPorts`: `port/proto`. */
  exposedPorts: string[];
  labels: Record<string, string>;
  stopSignal?: string;
}

export interface HistoryEntry {
  created?: string;
  createdBy?: string;
  author?: string;
  comment?: string;
  /** True for steps that made no layer (Docker's `ENV`, `CMD`, …); such entries have no diff_id. */
  emptyLayer: boolean;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  osVersion?: string;
  created?: string;
  author?: string;
  config: ExecConfig;
  /** `rootfs.diff_ids`: sha256 of each uncompressed layer tar, base layer first. */
  diffIds: string[];
  history: HistoryEntry[];
}

// ---- JSON field readers -------------------------------------------------------------------------------------

type JsonObject = Record<string, unknown>;

function bad(where: string, problem: string): StratumError {
  return new StratumError("E_BAD_INPUT", `${where}: ${problem}`);
}

function parseJson(bytes: Uint8Array | string, label: string): unknown {
  const text = typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new StratumError("E_BAD_INPUT", `${label}: not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function object(v: unknown, where: string): JsonObject {
  if (!isObject(v)) throw bad(where, "expected a JSON object");
  return v;
}

/** A field that may be absent; JSON `null` counts as absent. */
function present(o: JsonObject, key: string): unknown {
  const v = o[key];
  return v === null ? undefined : v;
}

function optString(o: JsonObject, key: string, where: string): string | undefined {
  const v = present(o, key);
  if (v !== undefined && typeof v !== "string") throw bad(`${where}.${key}`, "expected a string");
  return v;
}

function reqString(o: JsonObject, key: string, where: string): string {
  const v = optString(o, key, where);
  if (v === undefined || v === "") throw bad(`${where}.${key}`, "required");
  return v;
}

function optStringArray(o: JsonObject, key: string, where: string): string[] | undefined {
  const v = present(o, key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string"))
    throw bad(`${where}.${key}`, "expected an array of strings");
  return v;
}

function optStringMap(o: JsonObject, key: string, where: string): Record<string, string> | undefined {
  const v = present(o, key);
  if (v === undefined) return undefined;
  if (!isObject(v) || !Object.values(v).every((s) => typeof s === "string"))
    throw bad(`${where}.${key}`, "expected an object of strings");
  return { ...(v as Record<string, string>) };
}

/** `{"/data": {}, …}` → ["/data", …] (Volumes, ExposedPorts). */
function optKeys(o: JsonObject, key: string, where: string): string[] {
  const v = present(o, key);
  if (v === undefined) return [];
  if (!isObject(v)) throw bad(`${where}.${key}`, "expected an object");
  return Object.keys(v);
}

function reqArray(o: JsonObject, key: string, where: string): unknown[] {
  const v = present(o, key);
  if (!Array.isArray(v)) throw bad(`${where}.${key}`, "expected an array");
  return v;
}

// ---- descriptors and platforms ------------------------------------------------------------------------------

const MEDIA_TYPE_RE = /^[A-Za-z0-9][\w!#$&^.+-]{0,126}\/[A-Za-z0-9][\w!#$&^.+-]{0,126}$/;

function parsePlatformObject(v: unknown, where: string): Platform {
  const o = object(v, where);
  const p: Platform = { os: reqString(o, "os", where), architecture: reqString(o, "architecture", where) };
  const variant = optString(o, "variant", where);
  const osVersion = optString(o, "os.version", where);
  const osFeatures = optStringArray(o, "os.features", where);
  if (variant !== undefined && variant !== "") p.variant = variant;
  if (osVersion !== undefined) p.osVersion = osVersion;
  if (osFeatures !== undefined) p.osFeatures = osFeatures;
  return p;
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  const o = object(v, where);
  const mediaType = reqString(o, "mediaType", where);
  if (!MEDIA_TYPE_RE.test(mediaType)) throw bad(`${where}.mediaType`, `"${mediaType}" is not a media type`);
  const digest = checkDigest(reqString(o, "digest", where), "E_BAD_INPUT", `${where}.digest`);
  const size = o.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0)
    throw bad(`${where}.size`, "expected a non-negative integer");
  const d: Descriptor = { mediaType, digest, size };
  const urls = optStringArray(o, "urls", where);
  const annotations = optStringMap(o, "annotations", where);
  const artifactType = optString(o, "artifactType", where);
  const data = optString(o, "data", where);
  if (urls !== undefined) d.urls = urls;
  if (annotations !== undefined) d.annotations = annotations;
  if (present(o, "platform") !== undefined) d.platform = parsePlatformObject(o.platform, `${where}.platform`);
  if (artifactType !== undefined) d.artifactType = artifactType;
  if (data !== undefined) d.data = data;
  return d;
}

// ---- manifests and indexes ----------------------------------------------------------------------------------

function schema1(label: string): StratumError {
  return new StratumError(
    "E_UNSUPPORTED",
    `${label}: Docker image manifest schema 1 is not supported (it is deprecated; push the image again ` +
      "with a current client to get a schema 2 or OCI manifest)",
  );
}

/** The manifest media type of a parsed document, from its Content-Type if that is specific, else its content. */
function detectMediaType(o: JsonObject, contentType: string | undefined, label: string): string {
  const declared = essence(contentType);
  const inBody = typeof o.mediaType === "string" ? o.mediaType : undefined;
  if (isSchema1(declared) || o.schemaVersion === 1 || (inBody !== undefined && isSchema1(inBody)))
    throw schema1(label);
  if (o.schemaVersion !== 2) throw bad(`${label}.schemaVersion`, "expected 2");
  if (manifestKind(declared) !== undefined) {
    if (inBody !== undefined && inBody !== declared)
      throw bad(label, `served as ${declared} but the document says mediaType ${inBody}`);
    return declared;
  }
  // Any other vendor type is a document we do not handle; a generic or absent type says nothing.
  if (declared.startsWith("application/vnd."))
    throw new StratumError("E_UNSUPPORTED", `${label}: ${declared} is not an image manifest or index`);
  if (inBody !== undefined) {
    if (manifestKind(inBody) === undefined)
      throw new StratumError("E_UNSUPPORTED", `${label}: ${inBody} is not an image manifest or index`);
    return inBody;
  }
  if (Array.isArray(o.manifests)) return MediaType.ociIndex;
  if (isObject(o.config) && Array.isArray(o.layers)) return MediaType.ociManifest;
  throw bad(label, "neither an image manifest (config, layers) nor an index (manifests)");
}

/** Detect a manifest's media type from its bytes when the Content-Type is missing or generic. */
export function detectManifestMediaType(
  bytes: Uint8Array | string,
  contentType: string | undefined,
  label: string,
): string {
  return detectMediaType(object(parseJson(bytes, label), label), contentType, label);
}

/**
 * Parse a manifest or index: `bytes` as served, `contentType` as the registry sent it (or undefined for files
 * in a layout or archive), `label` naming it in errors (e.g. "docker.io/library/debian:bookworm manifest").
 */
export function parseManifest(
  bytes: Uint8Array | string,
  contentType: string | undefined,
  label: string,
): ImageManifest | ImageIndex {
  const o = object(parseJson(bytes, label), label);
  const mediaType = detectMediaType(o, contentType, label);
  const common: Pick<ImageManifest, "subject" | "artifactType" | "annotations"> = {};
  if (present(o, "subject") !== undefined) common.subject = parseDescriptor(o.subject, `${label}.subject`);
  const artifactType = optString(o, "artifactType", label);
  const annotations = optStringMap(o, "annotations", label);
  if (artifactType !== undefined) common.artifactType = artifactType;
  if (annotations !== undefined) common.annotations = annotations;
  if (manifestKind(mediaType) === "index") {
    const manifests = reqArray(o, "manifests", label).map((m, i) =>
      parseDescriptor(m, `${label}.manifests[${i}]`),
    );
    return { kind: "index", mediaType, manifests, ...common };
  }
  const config = parseDescriptor(o.config, `${label}.config`);
  const layers = reqArray(o, "layers", label).map((l, i) => parseDescriptor(l, `${label}.layers[${i}]`));
  return { kind: "manifest", mediaType, config, layers, ...common };
}

// ---- image config -------------------------------------------------------------------------------------------

function parseExecConfig(v: unknown, where: string): ExecConfig {
  const o = v === undefined ? {} : object(v, where);
  const c: ExecConfig = {
    env: optStringArray(o, "Env", where) ?? [],
    volumes: optKeys(o, "Volumes", where),
    exposedPorts: optKeys(o, "ExposedPorts", where),
    labels: optStringMap(o, "Labels", where) ?? {},
  };
  const user = optString(o, "User", where);
  const entrypoint = optStringArray(o, "Entrypoint", where);
  const cmd = optStringArray(o, "Cmd", where);
  const workingDir = optString(o, "WorkingDir", where);
  const stopSignal = optString(o, "StopSignal", where);
  if (user !== undefined && user !== "") c.user = user;
  if (entrypoint !== undefined) c.entrypoint = entrypoint;
  if (cmd !== undefined) c.cmd = cmd;
  if (workingDir !== undefined && workingDir !== "") c.workingDir = workingDir;
  if (stopSignal !== undefined && stopSignal !== "") c.stopSignal = stopSignal;
  return c;
}

function parseHistory(v: unknown, where: string): HistoryEntry {
  const o = object(v, where);
  const empty = present(o, "empty_layer");
  if (empty !== undefined && typeof empty !== "boolean")
    throw bad(`${where}.empty_layer`, "expected a boolean");
  const h: HistoryEntry = { emptyLayer: empty === true };
  const created = optString(o, "created", where);
  const createdBy = optString(o, "created_by", where);
  const author = optString(o, "author", where);
  const comment = optString(o, "comment", where);
  if (created !== undefined) h.created = created;
  if (createdBy !== undefined) h.createdBy = createdBy;
  if (author !== undefined) h.author = author;
  if (comment !== undefined) h.comment = comment;
  return h;
}

/** Parse an image config (OCI `application/vnd.oci.image.config.v1+json` or Docker's container image JSON). */
export function parseImageConfig(bytes: Uint8Array | string, label: string): ImageConfig {
  const o = object(parseJson(bytes, label), label);
  const rootfs = object(present(o, "rootfs"), `${label}.rootfs`);
  if (rootfs.type !== "layers") throw bad(`${label}.rootfs.type`, `expected "layers"`);
  const diffIds = reqArray(rootfs, "diff_ids", `${label}.rootfs`).map((d, i) => {
    const where = `${label}.rootfs.diff_ids[${i}]`;
    if (typeof d !== "string") throw bad(where, "expected a digest string");
    return checkDigest(d, "E_BAD_INPUT", where);
  });
  const history = present(o, "history");
  if (history !== undefined && !Array.isArray(history)) throw bad(`${label}.history`, "expected an array");
  const c: ImageConfig = {
    architecture: reqString(o, "architecture", label),
    os: reqString(o, "os", label),
    config: parseExecConfig(present(o, "config"), `${label}.config`),
    diffIds,
    history: (history ?? []).map((h, i) => parseHistory(h, `${label}.history[${i}]`)),
  };
  const variant = optString(o, "variant", label);
  const osVersion = optString(o, "os.version", label);
  const created = optString(o, "created", label);
  const author = optString(o, "author", label);
  if (variant !== undefined && variant !== "") c.variant = variant;
  if (osVersion !== undefined) c.osVersion = osVersion;
  if (created !== undefined) c.created = created;
  if (author !== undefined) c.author = author;
  return c;
}

/**
 * A config belongs to a manifest: one diff_id per manifest layer, in the same order. (History entries are not
 * checked: `empty_layer` steps have no layer, and some builders write no history at all.)
 */
export function checkConfigMatchesManifest(
  manifest: ImageManifest,
  config: ImageConfig,
  label: string,
): void {
  if (config.diffIds.length !== manifest.layers.length)
    throw bad(
      label,
      `the manifest has ${manifest.layers.length} layers but the config lists ${config.diffIds.length} diff_ids`,
    );
}

// ---- platforms ----------------------------------------------------------------------------------------------

/** `os/arch[/variant]`, e.g. `linux/arm/v7`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant !== undefined ? `/${p.variant}` : ""}`;
}

const ARCH_ALIASES: Partial<Record<string, { architecture: string; variant?: string }>> = {
  x86_64: { architecture: "amd64" },
  "x86-64": { architecture: "amd64" },
  aarch64: { architecture: "arm64" },
  armhf: { architecture: "arm", variant: "v7" },
  armel: { architecture: "arm", variant: "v6" },
  i386: { architecture: "386" },
  i686: { architecture: "386" },
};

/**
 * GOARCH names and the default variant of each: arm64 `v8` and amd64 `v1` mean no variant; arm without a
 * variant means `v7`; a bare digit variant gets its `v`. Only the fields that decide matching are kept.
 */
export function normalizePlatform(p: Platform): Platform {
  const osName = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  const alias = ARCH_ALIASES[architecture];
  if (alias !== undefined) {
    architecture = alias.architecture;
    variant ??= alias.variant;
  }
  if (variant !== undefined && /^\d+$/.test(variant)) variant = `v${variant}`;
  if ((architecture === "arm64" && variant === "v8") || (architecture === "amd64" && variant === "v1"))
    variant = undefined;
  if (architecture === "arm" && variant === undefined) variant = "v7";
  return variant === undefined ? { os: osName, architecture } : { os: osName, architecture, variant };
}

const PLATFORM_PART_RE = /^[A-Za-z0-9_.-]+$/;

/** Parse `--platform`: `os/arch[/variant]`, or just `arch` for Linux. Returned normalized. */
export function parsePlatform(text: string): Platform {
  const parts = text.split("/");
  if (parts.length > 3 || !parts.every((s) => PLATFORM_PART_RE.test(s)))
    throw new StratumError(
      "E_USAGE",
      `invalid platform "${text}": expected OS/ARCH[/VARIANT], e.g. linux/arm64`,
    );
  const [a, b, c] = parts;
  const p: Platform = parts.length === 1 ? { os: "linux", architecture: a } : { os: a, architecture: b };
  if (c !== undefined) p.variant = c;
  return normalizePlatform(p);
}

export interface HostProbe {
  arch: string; // process.arch
  endianness: "BE" | "LE";
  armVersion?: string; // process.config.variables.arm_version
}

function defaultProbe(): HostProbe {
  const vars = process.config.variables as unknown as Record<string, unknown>;
  const armVersion = vars.arm_version;
  return {
    arch: process.arch,
    endianness: os.endianness(),
    ...(typeof armVersion === "string" || typeof armVersion === "number"
      ? { armVersion: String(armVersion) }
      : {}),
  };
}

const NODE_TO_GOARCH: Partial<Record<string, string>> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  s390x: "s390x",
  riscv64: "riscv64",
  loong64: "loong64",
  mips: "mips",
  mipsel: "mipsle",
};

/** The platform of this machine as an image index names it (always Linux: stratum runs nowhere else). */
export function hostPlatform(probe: HostProbe = defaultProbe()): Platform {
  let architecture = NODE_TO_GOARCH[probe.arch];
  if (probe.arch === "ppc64") architecture = probe.endianness === "LE" ? "ppc64le" : "ppc64";
  if (architecture === undefined)
    throw new StratumError(
      "E_UNSUPPORTED",
      `no image platform known for Node architecture "${probe.arch}"; give one with --platform`,
    );
  const p: Platform = { os: "linux", architecture };
  if (architecture === "arm" && probe.armVersion !== undefined) p.variant = `v${probe.armVersion}`;
  return normalizePlatform(p);
}

/** Attestation and other non-image entries buildx and Docker Hub add to indexes. */
export function isAttestation(d: Descriptor): boolean {
  return (
    d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest" ||
    (d.platform?.os === "unknown" && d.platform.architecture === "unknown")
  );
}

function variantNumber(v: string | undefined): number | undefined {
  const m = v === undefined ? null : /^v(\d+)$/.exec(v);
  return m === null ? undefined : Number(m[1]);
}

/**
 * How well an entry's platform serves the wanted one (both normalized): 0 exact; for arm and amd64 an older
 * variant the wanted one runs, 1 + the distance (arm v7 runs v6 and v5; amd64 v3 runs v2 and v1, which is amd64
 * without a variant); for other architectures 1 when the entry names no variant; undefined when it cannot run.
 */
function matchRank(want: Platform, have: Platform): number | undefined {
  if (want.os !== have.os || want.architecture !== have.architecture) return undefined;
  if (want.variant === have.variant) return 0;
  if (want.architecture === "arm" || want.architecture === "amd64") {
    const w = variantNumber(want.variant) ?? 1;
    const h = variantNumber(have.variant) ?? 1;
    return h < w ? 1 + (w - h) : undefined;
  }
  return have.variant === undefined ? 1 : undefined;
}

/** Rank of an entry that names no platform: usable, but only if nothing names a matching one. */
const NO_PLATFORM_RANK = 1000;

/**
 * Pick the image manifest for `platform` from an index: the best-ranked match, the first of equals; attestation
 * entries and entries that are not image manifests are skipped. An entry without a platform matches only when
 * nothing better does (check the config's platform after fetching it). E_NOT_FOUND lists what is there.
 */
export function selectManifest(index: ImageIndex, platform: Platform, label: string): Descriptor {
  const want = normalizePlatform(platform);
  let best: Descriptor | undefined;
  let bestRank = Infinity;
  const available: string[] = [];
  for (const d of index.manifests) {
    if (manifestKind(d.mediaType) !== "manifest" || isAttestation(d)) continue;
    let rank: number | undefined = NO_PLATFORM_RANK;
    if (d.platform !== undefined) {
      const have = normalizePlatform(d.platform);
      available.push(formatPlatform(have));
      rank = matchRank(want, have);
    }
    if (rank !== undefined && rank < bestRank) {
      best = d;
      bestRank = rank;
    }
  }
  if (best !== undefined) return best;
  throw new StratumError(
    "E_NOT_FOUND",
    `${label}: no image for ${formatPlatform(want)}; ` +
      (available.length > 0
        ? `available: ${[...new Set(available)].join(", ")}`
        : "the index lists no images"),
  );
}
