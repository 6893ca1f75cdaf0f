// Pull: an image from an ImageSource of whichever kind (src/transport/source.ts) into the repository
// (reference: composefs-repository.md §3–§4; our description: docs/pull.md). One pass per layer — download →
// verify the blob digest → decompress → diff_id → tar split → objects + splitstream — several layers at once;
// a layer whose `oci-layer-<diff_id>` stream exists is not downloaded. The image's composefs EROFS is built from
// the layers' entries, collected in that same pass; the config and manifest streams are written once every
// layer and the EROFS are stored, and the tag last, so an interrupted pull leaves no tag and a re-run reuses
// every completed layer. Everything a pull writes happens while it holds the repository's shared lock, so a
// concurrent gc waits for it.

import { createHash } from "node:crypto";
import { StratumError } from "../errors.ts";
import type { Repository } from "../repo/repository.ts";
import type { BlobOptions, ImageSource } from "../transport/source.ts";
import { buildImage, storeImage } from "../repo/images.ts";
import { transformForBoot } from "./boot.ts";
import { readJsonStream, sha256Digest, writeImageStreams } from "./image-store.ts";
import { BOOT_EROFS_REF, EROFS_REF, configStreamName, layerStreamName, tagImage } from "./image-refs.ts";
import { LayerEntryBuilder, readLayerEntries, type LayerEntry } from "./layer-tree.ts";
import { mergeLayers } from "./merge.ts";
import { ingestLayer } from "./layer-ingest.ts";
import {
  checkConfigMatchesManifest,
  hostPlatform,
  parseImageConfig,
  type Descriptor,
  type ImageConfig,
  type Platform,
} from "./manifest.ts";
import { layerCompression } from "./media-types.ts";
import { ContentType } from "../format/splitstream.ts";

/** Annotation skopeo and podman put on zstd:chunked layers. */
const ZSTD_CHUNKED_ANNOTATION = "io.github.containers.zstd-chunked.manifest-checksum";
const ZSTD_CHUNKED_ANNOTATION_OLD = "io.containers.zstd-chunked.manifest-checksum";
/** Configs larger than this are refused (they are JSON; real ones are kilobytes). */
const CONFIG_SIZE_MAX = 16 << 20;

/**
 * waiting: queued; downloading: bytes arriving (and being decompressed, hashed and split as they come);
 * verifying: all bytes in, digests being checked and the layer made durable; done; present: already stored.
 */
export type LayerState = "waiting" | "downloading" | "verifying" | "done" | "present";

export type PullEvent =
  | { kind: "resolved"; manifestDigest: string; configDigest: string; layers: number }
  | { kind: "layer"; index: number; digest: string; diffId: string; size: number; state: LayerState }
  | { kind: "progress"; index: number; bytes: number; size: number }
  | { kind: "image"; erofs: string; built: boolean; boot?: boolean }
  | { kind: "committed"; tag: string };

export interface PullOptions {
  /** Platform to choose from a multi-platform index (default: this machine). */
  platform?: Platform;
  /** Name to tag the image with (`streams/refs/oci/<name>`); none when undefined. */
  tag?: string;
  /** Layers in flight at once (default: what the source suggests). */
  concurrency?: number;
  onEvent?: (e: PullEvent) => void;
  /** Keep `user.*` xattrs in the image tree (besides `security.capability`). */
  keepUserXattrs?: boolean;
  /**
   * Build the image's composefs EROFS (default true). false stores layers, config and manifest only, leaving
   * the image unmountable until a later pull builds it; the benchmark uses it to measure the EROFS step.
   */
  erofs?: boolean;
  /** Also build the boot variant (`composefs.image.boot.v1`; src/oci/boot.ts). */
  bootable?: boolean;
}

/** The EROFS images a pull built (undefined: already stored, or not wanted). */
interface BuiltImages {
  image?: Buffer;
  boot?: Buffer;
}

export interface PulledLayer {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
  /** Already in the repository: nothing downloaded. */
  present: boolean;
  /** Bytes of the decompressed tar (0 when present). */
  tarSize: number;
  /** File objects new to the repository. */
  newObjects: number;
  restoredZeros: number;
}

export interface PullResult {
  source: string;
  manifestDigest: string;
  configDigest: string;
  indexDigest?: string;
  platform: string;
  tag?: string;
  layers: PulledLayer[];
  /** Compressed bytes downloaded. */
  downloaded: number;
  /** Object ID of the image's composefs EROFS (the config's `composefs.image.v1` ref); null when skipped. */
  erofs: string | null;
  /** With `bootable`: the boot variant's EROFS (the config's `composefs.image.boot.v1` ref). */
  bootErofs?: string | null;
  timings: PullTimings;
}

/** Where a pull's time went, in milliseconds (from pullImage's start; the process's own start-up excluded). */
export interface PullTimings {
  total: number;
  /** The EROFS build (merge, layout, emit; both images with --bootable), on the main thread. 0 when not built. */
  erofsBuild: number;
  /**
   * What the EROFS step added to the pull: from the moment the last downloaded layer was durable (its syncfs
   * returned, as timed on the syncfs thread) to the moment the images were stored. The build overlaps that
   * syncfs, so this is less than erofsBuild; with no layer downloaded, it is the whole step.
   */
  erofsAdded: number;
}

/** What verifiedBlob found wrong, for whoever reads its errors second-hand; and who to tell when it ends. */
interface BlobCheck {
  error?: StratumError;
  /** Called once every byte has arrived, before the digest is checked. */
  onEnd?: () => void;
}

/**
 * Wrap a blob stream: count and hash it, and fail at its end unless digest and size match the descriptor (also
 * recording the failure in `check`).
 */
async function* verifiedBlob(
  source: ImageSource,
  d: Descriptor,
  label: string,
  opts: BlobOptions,
  check: BlobCheck = {},
): AsyncGenerator<Buffer> {
  const fail = (message: string): never => {
    check.error = new StratumError("E_CORRUPT", message);
    throw check.error;
  };
  const m = /^(sha256|sha512):([0-9a-f]+)$/.exec(d.digest);
  if (!m) throw new StratumError("E_BAD_INPUT", `${label}: unsupported digest ${d.digest}`);
  const hash = createHash(m[1]);
  let size = 0;
  for await (const chunk of source.blob(d, opts)) {
    size += chunk.length;
    if (size > d.size) fail(`${label}: more than the ${d.size} bytes the manifest gives`);
    hash.update(chunk);
    yield chunk;
  }
  check.onEnd?.();
  if (size !== d.size) fail(`${label}: ${size} bytes, the manifest gives ${d.size} (truncated?)`);
  const got = `${m[1]}:${hash.digest("hex")}`;
  if (got !== d.digest) fail(`${label}: digest mismatch: the blob is ${got}, the manifest says ${d.digest}`);
}

/**
 * Run `consume` over a verified blob. When it fails (a decompressor or the tar parser choking on corrupt
 * bytes), read the rest of the blob: if the blob does not match its digest, that is the error to report — the
 * data was damaged in transit or at rest, not a bad image.
 */
async function ingestBlameBlob<T>(
  blob: AsyncGenerator<Buffer>,
  check: BlobCheck,
  consume: (input: AsyncIterable<Buffer>) => Promise<T>,
): Promise<T> {
  const input: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]: () => ({
      next: () => blob.next(),
      // Not closing `blob` here lets the catch below drain it.
      return: () => Promise.resolve({ done: true as const, value: undefined }),
    }),
  };
  try {
    return await consume(input);
  } catch (err) {
    if (check.error === undefined) {
      try {
        while (!(await blob.next()).done);
      } catch {
        // reported through check.error, or not about the blob's integrity
      }
    }
    throw check.error ?? err;
  } finally {
    await blob.return(undefined);
  }
}

async function fetchConfig(source: ImageSource, d: Descriptor): Promise<Buffer> {
  if (d.size > CONFIG_SIZE_MAX)
    throw new StratumError(
      "E_BAD_INPUT",
      `config ${d.digest} is ${d.size} bytes; configs are limited to 16 MiB`,
    );
  const parts: Buffer[] = [];
  for await (const chunk of verifiedBlob(source, d, `config ${d.digest}`, {})) parts.push(chunk);
  return Buffer.concat(parts);
}

function isZstdChunked(d: Descriptor): boolean {
  const a = d.annotations ?? {};
  return ZSTD_CHUNKED_ANNOTATION in a || ZSTD_CHUNKED_ANNOTATION_OLD in a;
}

/** Run `tasks` with at most `limit` in flight; every task settles before the first error is thrown. */
async function runPool(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (next < tasks.length && failure === null) {
      const task = tasks[next++];
      try {
        await task();
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, worker));
  if (failure !== null) throw (failure as { err: unknown }).err;
}

/** Pull the image `source` names into `repo` and tag it. */
export async function pullImage(
  repo: Repository,
  source: ImageSource,
  opts: PullOptions = {},
): Promise<PullResult> {
  repo.checkWritable();
  const startedAt = nowMs();
  const emit = opts.onEvent ?? (() => {});
  const platform = opts.platform ?? hostPlatform();
  const sm = await source.manifest(platform);
  const manifest = sm.manifest;
  const configDigest = manifest.config.digest;

  // The config: from the repository when an earlier pull stored it, else downloaded and verified.
  let configBytes: Buffer;
  const configName = configStreamName(configDigest);
  if (repo.hasStream(configName)) configBytes = readJsonStream(repo, configName, ContentType.ociConfig).bytes;
  else configBytes = await fetchConfig(source, manifest.config);
  if (sha256Digest(configBytes) !== configDigest && configDigest.startsWith("sha256:"))
    throw new StratumError("E_CORRUPT", `config ${configDigest}: the bytes do not hash to the digest`);
  const config: ImageConfig = parseImageConfig(configBytes, `config ${configDigest}`);
  checkConfigMatchesManifest(manifest, config, `${source.description}`);
  const diffIds = config.diffIds;
  emit({ kind: "resolved", manifestDigest: sm.digest, configDigest, layers: manifest.layers.length });

  // Layers: each distinct diff_id once, skipping those already stored.
  const layers: PulledLayer[] = manifest.layers.map((d, i) => ({
    digest: d.digest,
    diffId: diffIds[i],
    size: d.size,
    mediaType: d.mediaType,
    present: false,
    tarSize: 0,
    newObjects: 0,
    restoredZeros: 0,
  }));
  let downloaded = 0;
  const firstIndex = new Map<string, number>();
  // Each layer's entries for the image tree, collected while the layer is split (no second read).
  const layerEntries = new Map<string, LayerEntry[]>();
  // The composefs EROFS: kept when the config stream already links one that exists, else built from the
  // layers' entries (read back from the stored splitstreams for layers this pull does not download). The build
  // starts as soon as the last downloaded layer is verified, so it runs while that layer's syncfs does (on a
  // worker thread) instead of after it.
  // With --bootable, also the boot variant (src/oci/boot.ts), transformed from the same merged tree.
  const linked = linkedErofs(repo, configName);
  let erofs = opts.erofs === false ? null : linked(EROFS_REF);
  let bootErofs = opts.bootable ? linked(BOOT_EROFS_REF) : null;
  const needBuild = erofs === undefined || bootErofs === undefined;
  const storedErofs = erofs ?? undefined;
  const storedBoot = bootErofs ?? undefined;
  let imageBuild: Promise<BuiltImages> | undefined;
  let buildStart = 0;
  let buildEnd = 0;
  let layersDurableAt: number | undefined;
  const startImageBuild = (): void => {
    imageBuild = new Promise<BuiltImages>((resolve, reject) => {
      setImmediate(() => {
        buildStart = nowMs();
        try {
          const tree = mergeLayers(
            diffIds.map((d) => layerEntries.get(d) ?? readLayerEntries(repo, d)),
            { keepUserXattrs: opts.keepUserXattrs },
          );
          layerEntries.clear();
          const image = erofs === undefined ? buildImage(repo, tree) : undefined;
          const boot =
            bootErofs === undefined
              ? buildImage(
                  repo,
                  transformForBoot(tree, {
                    readFile: (id) => repo.objects.read(id),
                    label: source.description,
                  }),
                )
              : undefined;
          buildEnd = nowMs();
          resolve({ image, boot });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    imageBuild.catch(() => {}); // awaited after the layers; a failing pull must not leave it unobserved
  };
  const tasks: (() => Promise<void>)[] = [];
  let unverified = 0;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const d = manifest.layers[i];
    const compression = layerCompression(d.mediaType, `layer ${d.digest}`); // refuses non-tar layers
    const state = (s: LayerState): void =>
      emit({ kind: "layer", index: i, digest: d.digest, diffId: layer.diffId, size: d.size, state: s });
    if (repo.hasStream(layerStreamName(layer.diffId)) || firstIndex.has(layer.diffId)) {
      layer.present = true;
      state("present");
      continue;
    }
    firstIndex.set(layer.diffId, i);
    unverified++;
    state("waiting");
    tasks.push(async () => {
      state("downloading");
      let bytes = 0;
      const label = `layer ${d.digest}`;
      const check: BlobCheck = {};
      const onBytes = (n: number): void => {
        bytes += n;
        downloaded += n;
        emit({ kind: "progress", index: i, bytes, size: d.size });
      };
      check.onEnd = () => state("verifying");
      const blob = verifiedBlob(source, d, label, { onBytes }, check);
      const entries = new LayerEntryBuilder(label);
      const onVerified = (): void => {
        layerEntries.set(layer.diffId, entries.finish());
        if (--unverified === 0 && needBuild) startImageBuild();
      };
      const r = await ingestBlameBlob(blob, check, (input) =>
        ingestLayer(repo, input, {
          entries,
          onVerified,
          expectedDiffId: layer.diffId,
          label,
          restoreTrailingZeros: isZstdChunked(d),
          expectedCompression: compression,
          confinePaths: true,
        }),
      );
      if (r.durableAtMs !== undefined && (layersDurableAt === undefined || r.durableAtMs > layersDurableAt))
        layersDurableAt = r.durableAtMs;
      layer.tarSize = r.tarSize;
      layer.newObjects = r.newObjects;
      layer.restoredZeros = r.restoredZeros;
      state("done");
    });
  }
  await runPool(tasks, opts.concurrency ?? source.concurrency);

  if (needBuild) {
    if (imageBuild === undefined) startImageBuild(); // every layer was already stored
    const built = await (imageBuild as Promise<BuiltImages>);
    if (built.image !== undefined) {
      erofs = storeImage(repo, built.image).id;
      emit({ kind: "image", erofs, built: true });
    }
    if (built.boot !== undefined) {
      bootErofs = storeImage(repo, built.boot).id;
      emit({ kind: "image", erofs: bootErofs, built: true, boot: true });
    }
  }
  const imagesStoredAt = nowMs();
  if (storedErofs !== undefined) emit({ kind: "image", erofs: storedErofs, built: false });
  if (storedBoot !== undefined) emit({ kind: "image", erofs: storedBoot, built: false, boot: true });
  layerEntries.clear();

  // Config and manifest streams (the rewrite cascade), then the tag.
  writeImageStreams(repo, {
    manifestDigest: sm.digest,
    manifestBytes: sm.bytes,
    configDigest,
    configBytes,
    diffIds,
    erofs: erofs ?? undefined,
    bootErofs: bootErofs ?? undefined,
  });
  if (opts.tag !== undefined) {
    tagImage(repo, opts.tag, sm.digest);
    emit({ kind: "committed", tag: opts.tag });
  }
  return {
    source: source.description,
    manifestDigest: sm.digest,
    configDigest,
    indexDigest: sm.indexDigest,
    platform: [config.os, config.architecture, config.variant].filter(Boolean).join("/"),
    tag: opts.tag,
    layers,
    downloaded,
    erofs: erofs ?? null,
    ...(opts.bootable ? { bootErofs: bootErofs ?? null } : {}),
    timings: {
      total: ms(nowMs() - startedAt),
      erofsBuild: ms(buildEnd - buildStart),
      erofsAdded: !needBuild
        ? 0
        : ms(
            imagesStoredAt -
              (layersDurableAt !== undefined && layersDurableAt > buildStart ? layersDurableAt : buildStart),
          ),
    },
  };
}

/** Now, in milliseconds on process.hrtime's clock (the clock syncfsAsync reports on). */
function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** A duration rounded to 0.1 ms, never negative. */
function ms(d: number): number {
  return d > 0 ? Math.round(d * 10) / 10 : 0;
}

/** The EROFS images an existing config stream links, by ref name: each when the config links one that is stored. */
function linkedErofs(repo: Repository, configName: string): (ref: string) => string | undefined {
  let refs = new Map<string, string>();
  if (repo.hasStream(configName)) {
    const reader = repo.openStream(configName, ContentType.ociConfig);
    try {
      refs = reader.namedRefs();
    } finally {
      reader.close();
    }
  }
  return (ref) => {
    const id = refs.get(ref);
    return id !== undefined && repo.objects.has(id) ? id : undefined;
  };
}
