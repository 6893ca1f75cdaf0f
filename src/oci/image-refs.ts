// Names of OCI images in the repository (reference: composefs-repository.md §3): the stream names of layers,
// configs and manifests, the tags under `streams/refs/oci/`, the config's named refs to EROFS images, and finding
// an image by tag or digest. Nothing here parses an image's JSON (src/oci/image-store.ts does), so `mount`, `tag`
// and friends load only this.

import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { ContentType } from "../format/splitstream.ts";
import type { Repository } from "../repo/repository.ts";

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
