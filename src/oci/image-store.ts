// OCI images in the repository (reference: composefs-repository.md §3): the manifest and config stored as
// splitstreams holding their exact JSON bytes as one external object each, named `oci-manifest-<digest>` and
// `oci-config-<digest>`, with named refs down the chain (manifest → `config:<digest>` and every layer by
// diff_id; config → every layer by diff_id), and tags as `streams/refs/oci/<encoded name>` pointing at the
// manifest stream. This module writes and reads that structure; pull.ts fills it.

import { createHash } from "node:crypto";
import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { ContentType } from "../format/splitstream.ts";
import type { Repository } from "../repo/repository.ts";
import { parseImageConfig, parseManifest, type ImageConfig, type ImageManifest } from "./manifest.ts";

export const TAG_PREFIX = "oci/";

export function manifestStreamName(manifestDigest: string): string {
  return `oci-manifest-${manifestDigest}`;
}

export function configStreamName(configDigest: string): string {
  return `oci-config-${configDigest}`;
}

/** The splitstream of a layer, named by the digest of its uncompressed tar. */
export function layerStreamName(diffId: string): string {
  return `oci-layer-${diffId}`;
}

/** A tag as one ref path component: `%` → `%25`, `/` → `%2F` (composefs-rs encode_tag). */
export function encodeTag(tag: string): string {
  return tag.replaceAll("%", "%25").replaceAll("/", "%2F");
}

export function decodeTag(encoded: string): string {
  return encoded.replace(/%(25|2F)/gi, (_, c: string) => (c === "25" ? "%" : "/"));
}

export function checkTag(tag: string): string {
  if (tag === "" || tag.startsWith("@"))
    throw new StratumError("E_USAGE", `invalid image name "${tag}": empty or starting with @`);
  if (tag.includes("\0") || Buffer.byteLength(encodeTag(tag)) > 255 || tag === "." || tag === "..")
    throw new StratumError("E_USAGE", `invalid image name "${tag}"`);
  return tag;
}

function tagRef(tag: string): string {
  return TAG_PREFIX + encodeTag(checkTag(tag));
}

export function sha256Digest(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Store JSON bytes as a one-object splitstream with named refs and publish it under `name`. */
export function writeJsonStream(
  repo: Repository,
  name: string,
  contentType: bigint,
  bytes: Buffer,
  namedRefs: [string, ObjectId][],
): ObjectId {
  const w = repo.createStream(contentType);
  try {
    for (const [ref, id] of [...namedRefs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)))
      w.addNamedRef(ref, id);
    w.writeExternalBuffer(bytes);
    const stored = w.finish();
    repo.publishStream(name, stored.id);
    return stored.id;
  } catch (err) {
    w.abort();
    throw err;
  }
}

/** The JSON bytes of a manifest or config stream, checked against the digest in its name. */
export function readJsonStream(
  repo: Repository,
  name: string,
  contentType: bigint,
): { bytes: Buffer; namedRefs: Map<string, ObjectId> } {
  const reader = repo.openStream(name, contentType);
  try {
    if (reader.objectRefs.length !== 1)
      throw new StratumError("E_CORRUPT", `stream ${name} holds ${reader.objectRefs.length} objects, not 1`);
    const bytes = repo.objects.read(reader.objectRefs[0]);
    const digest = name.slice(name.indexOf("sha256:"));
    if (digest.startsWith("sha256:") && sha256Digest(bytes) !== digest)
      throw new StratumError("E_CORRUPT", `stream ${name}: the JSON it holds does not hash to ${digest}`);
    return { bytes, namedRefs: reader.namedRefs() };
  } finally {
    reader.close();
  }
}

export interface StoredImage {
  manifestDigest: string;
  manifestBytes: Buffer;
  manifest: ImageManifest;
  configDigest: string;
  configBytes: Buffer;
  config: ImageConfig;
  /** Named refs of the config stream (layers by diff_id, EROFS images). */
  configRefs: Map<string, ObjectId>;
}

/** Read an image by manifest digest. */
export function readImage(repo: Repository, manifestDigest: string): StoredImage {
  const m = readJsonStream(repo, manifestStreamName(manifestDigest), ContentType.ociManifest);
  const manifest = parseManifest(m.bytes, undefined, `manifest ${manifestDigest}`);
  if (manifest.kind !== "manifest")
    throw new StratumError("E_CORRUPT", `manifest ${manifestDigest} is an index, not an image manifest`);
  const configDigest = manifest.config.digest;
  const c = readJsonStream(repo, configStreamName(configDigest), ContentType.ociConfig);
  const config = parseImageConfig(c.bytes, `config ${configDigest}`);
  return {
    manifestDigest,
    manifestBytes: m.bytes,
    manifest,
    configDigest,
    configBytes: c.bytes,
    config,
    configRefs: c.namedRefs,
  };
}

/**
 * The named refs of an image's config stream (layers by diff_id, EROFS images), found through the manifest
 * stream's `config:<digest>` ref without reading or parsing either JSON document: what mount needs.
 */
export function imageConfigRefs(repo: Repository, manifestDigest: string): Map<string, ObjectId> {
  const manifest = repo.openStream(manifestStreamName(manifestDigest), ContentType.ociManifest);
  let configDigest: string | undefined;
  try {
    for (const name of manifest.namedRefs().keys())
      if (name.startsWith("config:")) configDigest = name.slice("config:".length);
  } finally {
    manifest.close();
  }
  if (configDigest === undefined)
    throw new StratumError("E_CORRUPT", `manifest stream of ${manifestDigest} has no config: ref`);
  const config = repo.openStream(configStreamName(configDigest), ContentType.ociConfig);
  try {
    return config.namedRefs();
  } finally {
    config.close();
  }
}

/** The config named ref of the image's composefs EROFS (format 0 or 1; composefs-repository.md §3). */
export const EROFS_REF = "composefs.image.v1";

/** The config named ref of the image's boot variant (transform_for_boot; composefs-repository.md §8). */
export const BOOT_EROFS_REF = "composefs.image.boot.v1";

/**
 * Write the config and manifest streams of a pulled image whose layers are all stored; returns the manifest
 * stream's object ID. The config stream carries a named ref to every layer stream and, when `erofs` is given,
 * `composefs.image.v1` → that EROFS image (and `bootErofs` as `composefs.image.boot.v1`); other named refs of an
 * existing config stream (a boot image a later pull without --bootable does not rebuild) are kept.
 * The config stream is rewritten only when its refs change, and the manifest stream (its `config:` ref) whenever
 * the config stream did — the rewrite cascade; the JSON bytes, and so both digests, never change.
 */
export function writeImageStreams(
  repo: Repository,
  args: {
    manifestDigest: string;
    manifestBytes: Buffer;
    configDigest: string;
    configBytes: Buffer;
    diffIds: string[];
    erofs?: ObjectId;
    bootErofs?: ObjectId;
  },
): ObjectId {
  const layerRefs: [string, ObjectId][] = [];
  const seen = new Set<string>();
  for (const diffId of args.diffIds) {
    if (seen.has(diffId)) continue;
    seen.add(diffId);
    const id = repo.streamId(layerStreamName(diffId));
    if (id === undefined || !repo.objects.has(id))
      throw new StratumError("E_NOT_FOUND", `layer ${diffId} is not in the repository`);
    layerRefs.push([diffId, id]);
  }
  const configName = configStreamName(args.configDigest);
  let configId = repo.hasStream(configName) ? repo.streamId(configName) : undefined;
  const wanted = new Map<string, ObjectId>(layerRefs);
  if (configId !== undefined) {
    const existing = repo.openStream(configName, ContentType.ociConfig);
    let same: boolean;
    try {
      const refs = existing.namedRefs();
      for (const [name, id] of refs) if (!wanted.has(name) && !isLayerRef(name)) wanted.set(name, id);
      if (args.erofs !== undefined) wanted.set(EROFS_REF, args.erofs);
      if (args.bootErofs !== undefined) wanted.set(BOOT_EROFS_REF, args.bootErofs);
      same = refs.size === wanted.size && [...wanted].every(([name, id]) => refs.get(name) === id);
    } finally {
      existing.close();
    }
    if (!same) configId = undefined;
  } else {
    if (args.erofs !== undefined) wanted.set(EROFS_REF, args.erofs);
    if (args.bootErofs !== undefined) wanted.set(BOOT_EROFS_REF, args.bootErofs);
  }
  if (configId === undefined)
    configId = writeJsonStream(repo, configName, ContentType.ociConfig, args.configBytes, [...wanted]);

  const manifestName = manifestStreamName(args.manifestDigest);
  if (repo.hasStream(manifestName)) {
    const existing = repo.openStream(manifestName, ContentType.ociManifest);
    try {
      if (existing.namedRefs().get(`config:${args.configDigest}`) === configId)
        return repo.streamId(manifestName) as ObjectId;
    } finally {
      existing.close();
    }
  }
  return writeJsonStream(repo, manifestName, ContentType.ociManifest, args.manifestBytes, [
    [`config:${args.configDigest}`, configId],
    ...layerRefs,
  ]);
}

function isLayerRef(name: string): boolean {
  return /^sha(256|512):[0-9a-f]+$/.test(name);
}

/** Point the tag `name` at an image's manifest stream. */
export function tagImage(repo: Repository, name: string, manifestDigest: string): void {
  repo.setStreamRef(tagRef(name), manifestStreamName(manifestDigest));
}

export function untagImage(repo: Repository, name: string): void {
  try {
    repo.removeStreamRef(tagRef(name));
  } catch (err) {
    if (err instanceof StratumError && err.code === "E_NOT_FOUND")
      throw new StratumError("E_NOT_FOUND", `no image named ${name}`);
    throw err;
  }
}

export interface ImageTag {
  name: string;
  manifestDigest: string;
}

/** Every tagged image, sorted by name. */
export function listTags(repo: Repository): ImageTag[] {
  const out: ImageTag[] = [];
  for (const ref of repo.listStreamRefs()) {
    if (!ref.name.startsWith(TAG_PREFIX) || ref.name.slice(TAG_PREFIX.length).includes("/")) continue;
    const stream = ref.target.split("/").pop() ?? "";
    if (!stream.startsWith("oci-manifest-")) continue;
    out.push({ name: decodeTag(ref.name.slice(TAG_PREFIX.length)), manifestDigest: stream.slice(13) });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Find an image by tag, by manifest digest (`sha256:…`, `@sha256:…`) or by a unique prefix of 12+ hex digits
 * of its manifest digest.
 */
export function resolveImage(repo: Repository, ref: string): ImageTag {
  const tags = listTags(repo);
  const byName = tags.find((t) => t.name === ref);
  if (byName) return byName;
  const digest = ref.startsWith("@") ? ref.slice(1) : ref;
  if (/^sha256:[0-9a-f]{64}$/.test(digest)) {
    if (repo.hasStream(manifestStreamName(digest)))
      return { name: tags.find((t) => t.manifestDigest === digest)?.name ?? "", manifestDigest: digest };
  } else if (/^(sha256:)?[0-9a-f]{12,63}$/.test(digest)) {
    const hex = digest.replace(/^sha256:/, "");
    const matches = [...new Set(tags.map((t) => t.manifestDigest))].filter((d) => d.slice(7).startsWith(hex));
    if (matches.length === 1)
      return {
        name: tags.find((t) => t.manifestDigest === matches[0])?.name ?? "",
        manifestDigest: matches[0],
      };
    if (matches.length > 1)
      throw new StratumError("E_USAGE", `"${ref}" matches several images; give more digits`);
  }
  throw new StratumError("E_NOT_FOUND", `no image named ${ref} (see "stratum images")`);
}
