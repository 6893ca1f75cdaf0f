// OCI images in the repository (reference: composefs-repository.md §3): the manifest and config stored as
// splitstreams holding their exact JSON bytes as one external object each, named `oci-manifest-<digest>` and
// `oci-config-<digest>`, with named refs down the chain (manifest → `config:<digest>` and every layer by
// diff_id; config → every layer by diff_id), and tags as `streams/refs/oci/<encoded name>` pointing at the
// manifest stream. This module writes and reads that structure (the names and tags themselves are in
// src/oci/image-refs.ts); pull.ts fills it.

import { createHash } from "node:crypto";
import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { ContentType } from "../format/splitstream.ts";
import type { Repository } from "../repo/repository.ts";
import {
  BOOT_EROFS_REF,
  EROFS_REF,
  configStreamName,
  layerStreamName,
  manifestStreamName,
} from "./image-refs.ts";
import { parseImageConfig, parseManifest, type ImageConfig, type ImageManifest } from "./manifest.ts";

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
