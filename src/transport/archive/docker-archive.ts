// `docker-archive:FILE[:REF|:@N]`: an image from a `docker save` / `podman save` tar, read in place by offset
// (docs/pull.md "Archives, layouts and daemons"). The archive's `manifest.json` (an array of {Config, RepoTags,
// Layers, LayerSources?}, written last by both daemons) picks the image; its files are found through the tar
// index, links resolved inside the archive (tar-index.ts). Layouts handled:
//
//   - Docker ≤ 24: `<v1id>/layer.tar` (a repeated layer is a symlink to the first copy), `<imageid>.json`.
//   - podman / skopeo (containers/image): `<diffid>.tar` at the root, `<v1id>/layer.tar` symlinks to them.
//   - Docker 25+ and Docker with the containerd image store: an OCI layout (`oci-layout`, `index.json`,
//     `blobs/sha256/…`) next to `manifest.json`. The real OCI manifest whose config is the selected image's
//     config is served as it is (through a nested index too); when there is none (or it lists no layers, or
//     names a missing blob: moby#47065, moby#49473) the manifest is synthesized as for the older layouts.
//
// A synthesized manifest is Docker schema 2 (config `application/vnd.docker.container.image.v1+json`, layers
// `…rootfs.diff.tar` or `…rootfs.diff.tar.gzip` by the layer file's magic bytes) or, when a layer is zstd, OCI
// (Docker schema 2 has no zstd type). Its JSON is compact with containers/image's key order, so the same archive
// always gives the same manifest digest. Each distinct layer file is hashed once (sha256, streaming), cached
// per archive file and member path.

import { createHash } from "node:crypto";
import { StratumError } from "../../errors.ts";
import type { Compression } from "../../oci/layer-ingest.ts";
import {
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
  parseImageConfig,
  parseManifest,
} from "../../oci/manifest.ts";
import { manifestKind, MediaType } from "../../oci/media-types.ts";
import {
  type ArchiveSelector,
  checkDigest,
  DockerArchiveSource,
  type ImageName,
  parseImageName,
} from "../../oci/reference.ts";
import type { BlobOptions, ImageSource, SourceManifest } from "../source.ts";
import { sniffCompression, TarIndex, type TarIndexEntry } from "./tar-index.ts";

/** Largest `manifest.json` / `index.json` read into memory. */
const MAX_MANIFEST_JSON = 16 << 20;
/** Largest image config read into memory. */
const MAX_CONFIG = 32 << 20;
/** Largest OCI manifest or index blob read into memory. */
const MAX_MANIFEST_BLOB = 8 << 20;
/** Index blobs read while looking for the OCI manifest of a Docker 25+ archive. */
const MAX_OCI_WALK = 256;

/** One element of `manifest.json`. */
export interface DockerArchiveImage {
  /** Position in manifest.json (what `@N` names). */
  readonly index: number;
  /** Archive path of the config JSON. */
  readonly config: string;
  /** Names as written (`busybox:latest`, `docker.io/library/busybox:latest`, `localhost/x:1`); may be empty. */
  readonly repoTags: string[];
  /** Archive paths of the layer tars, base first. */
  readonly layers: string[];
  /** Docker's foreign-layer descriptors by diff_id (Windows base layers). */
  readonly layerSources: Record<string, unknown>;
}

export interface DockerArchiveOptions {
  /** Replaces the default description (`docker-archive:FILE[:REF]`). */
  description?: string;
}

function bad(file: string, why: string): StratumError {
  return new StratumError("E_BAD_INPUT", `${file}: ${why}`);
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Parse `manifest.json`: E_BAD_INPUT naming `label` and the field for anything malformed. */
export function parseDockerArchiveManifest(bytes: Buffer, label: string): DockerArchiveImage[] {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8")) as unknown;
  } catch (err) {
    throw new StratumError(
      "E_BAD_INPUT",
      `${label}: manifest.json is not valid JSON: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  if (!Array.isArray(doc))
    throw new StratumError("E_BAD_INPUT", `${label}: manifest.json is not a JSON array`);
  if (doc.length === 0) throw new StratumError("E_BAD_INPUT", `${label}: manifest.json lists no images`);
  return doc.map((v: unknown, index): DockerArchiveImage => {
    const where = `${label}: manifest.json[${index}]`;
    if (typeof v !== "object" || v === null || Array.isArray(v))
      throw new StratumError("E_BAD_INPUT", `${where}: expected an object`);
    const o = v as Record<string, unknown>;
    if (typeof o.Config !== "string" || o.Config === "")
      throw new StratumError("E_BAD_INPUT", `${where}.Config: expected a path`);
    const strings = (key: string, required: boolean): string[] => {
      const a = o[key];
      if (a === undefined || a === null) {
        if (required) throw new StratumError("E_BAD_INPUT", `${where}.${key}: expected an array of paths`);
        return [];
      }
      if (!Array.isArray(a) || !a.every((s) => typeof s === "string" && s !== ""))
        throw new StratumError("E_BAD_INPUT", `${where}.${key}: expected an array of strings`);
      return a as string[];
    };
    const ls = o.LayerSources;
    if (ls !== undefined && ls !== null && (typeof ls !== "object" || Array.isArray(ls)))
      throw new StratumError("E_BAD_INPUT", `${where}.LayerSources: expected an object`);
    return {
      index,
      config: o.Config,
      repoTags: strings("RepoTags", false),
      layers: strings("Layers", true),
      layerSources: (ls ?? {}) as Record<string, unknown>,
    };
  });
}

function tagMatches(repoTag: string, want: string): boolean {
  try {
    return parseImageName(repoTag).toString() === want;
  } catch {
    return false;
  }
}

function imageLabel(img: DockerArchiveImage): string {
  return `@${img.index} ${img.repoTags.length > 0 ? img.repoTags.join(", ") : `(untagged, config ${img.config})`}`;
}

/**
 * Choose the image `select` names: by tag (each RepoTags entry normalised as Docker does, so `debian` matches
 * `docker.io/library/debian:latest`; a short name also matches podman's `localhost/NAME:TAG`), by position, or
 * the only one. E_NOT_FOUND / E_USAGE list what the archive holds.
 */
export function selectDockerArchiveImage(
  images: DockerArchiveImage[],
  select: ArchiveSelector<ImageName>,
  label: string,
): DockerArchiveImage {
  const listing = (): string => images.map(imageLabel).join("; ");
  if (select === undefined) {
    if (images.length === 1) return images[0];
    throw new StratumError(
      "E_USAGE",
      `${label}: the archive holds ${images.length} images; name one with :TAG or :@N (${listing()})`,
    );
  }
  if ("index" in select) {
    const img = images[select.index];
    if (img === undefined)
      throw new StratumError(
        "E_NOT_FOUND",
        `${label}: no image @${select.index}; the archive holds ${images.length} (${listing()})`,
      );
    return img;
  }
  const want = select.name.toString();
  let found = images.find((img) => img.repoTags.some((t) => tagMatches(t, want)));
  // podman names local images localhost/NAME and resolves a short NAME to them.
  if (
    found === undefined &&
    select.name.registry === "docker.io" &&
    select.name.repository.startsWith("library/")
  ) {
    const local = `localhost/${select.name.repository.slice(8)}:${select.name.tag ?? "latest"}`;
    found = images.find((img) => img.repoTags.some((t) => tagMatches(t, local)));
  }
  if (found === undefined)
    throw new StratumError(
      "E_NOT_FOUND",
      `${label}: no image tagged ${want} (the archive holds: ${listing()})`,
    );
  return found;
}

interface LayerFile {
  entry: TarIndexEntry;
  digest: string;
  compression: Compression;
}

/** Layer digests and compressions already computed, by archive file identity and member offset. */
const layerCache = new Map<string, { digest: string; compression: Compression }>();
const LAYER_CACHE_MAX = 4096;

function cacheLayer(key: string, v: { digest: string; compression: Compression }): void {
  if (layerCache.size >= LAYER_CACHE_MAX) {
    const oldest = layerCache.keys().next();
    if (oldest.done !== true) layerCache.delete(oldest.value);
  }
  layerCache.set(key, v);
}

/** Serialise a manifest the way containers/image does (compact, fixed key order). */
function serializeManifest(mediaType: string, config: Descriptor, layers: Descriptor[]): Buffer {
  const d = (x: Descriptor): { mediaType: string; size: number; digest: string } => ({
    mediaType: x.mediaType,
    size: x.size,
    digest: x.digest,
  });
  return Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType, config: d(config), layers: layers.map(d) }),
  );
}

/** An image of a docker-archive tar file, read in place. */
export class DockerArchiveImageSource implements ImageSource {
  readonly concurrency = 2;
  private resolved: Promise<SourceManifest> | undefined;
  /** Blobs this source serves, by digest (config and layers once known). */
  private readonly blobs = new Map<string, TarIndexEntry>();

  private constructor(
    readonly description: string,
    /** The archive file. */
    readonly file: string,
    private readonly tar: TarIndex,
    /** The selected element of manifest.json. */
    readonly image: DockerArchiveImage,
    configEntry: TarIndexEntry,
    /** The config's exact bytes and their digest (the classic image ID). */
    private readonly configBytes: Buffer,
    readonly configDigest: string,
    private readonly layerEntries: TarIndexEntry[],
    /** True when the archive also holds an OCI layout (`index.json`: Docker 25+). */
    readonly hasOciLayout: boolean,
  ) {
    this.blobs.set(configDigest, configEntry);
  }

  /** Open `docker-archive:FILE[:REF]` as parsed by parsePullSource. */
  static openSource(
    src: DockerArchiveSource,
    opts: DockerArchiveOptions = {},
  ): Promise<DockerArchiveImageSource> {
    return DockerArchiveImageSource.open(src.path, src.select, {
      description: src.toString(),
      ...opts,
    });
  }

  /**
   * Index `file`, read its manifest.json, select the image and check that its config and layer files are there.
   * Layer files are hashed later, by the first manifest() call.
   */
  static async open(
    file: string,
    select: ArchiveSelector<ImageName>,
    opts: DockerArchiveOptions = {},
  ): Promise<DockerArchiveImageSource> {
    const tar = await TarIndex.open(file);
    try {
      const mj = tar.lookup("manifest.json", "manifest.json");
      if (mj === undefined) {
        const oci = tar.lookup("index.json", "index.json") !== undefined;
        throw bad(
          file,
          "no manifest.json: not a docker-archive (docker save) tar" +
            (oci ? "; it holds an OCI layout (index.json): use oci-archive:" : ""),
        );
      }
      const images = parseDockerArchiveManifest(await tar.readAll(mj, MAX_MANIFEST_JSON), file);
      const image = selectDockerArchiveImage(images, select, file);
      const where = `manifest.json[${image.index}]`;
      const configEntry = tar.resolve(image.config, `${where}.Config`);
      const configBytes = await tar.readAll(configEntry, MAX_CONFIG);
      const config = parseImageConfig(configBytes, `${file}: ${image.config}`);
      const layerEntries = image.layers.map((l, i) => tar.resolve(l, `${where}.Layers[${i}]`));
      if (config.diffIds.length !== layerEntries.length)
        throw bad(
          file,
          `${where} lists ${layerEntries.length} layers but its config ${image.config} has ` +
            `${config.diffIds.length} diff_ids`,
        );
      for (const id of config.diffIds)
        if (image.layerSources[id] !== undefined)
          throw new StratumError(
            "E_UNSUPPORTED",
            `${file}: ${where}: layer ${id} is a foreign layer (LayerSources); foreign layers are not supported`,
          );
      const description = opts.description ?? new DockerArchiveSource(file, select).toString();
      return new DockerArchiveImageSource(
        description,
        file,
        tar,
        image,
        configEntry,
        configBytes,
        sha256(configBytes),
        layerEntries,
        tar.lookup("index.json", "index.json") !== undefined,
      );
    } catch (err) {
      await tar.close();
      throw err;
    }
  }

  /** The image's manifest; the platform is not consulted (a manifest.json entry is one image). */
  manifest(_platform: Platform): Promise<SourceManifest> {
    this.resolved ??= this.resolve();
    return this.resolved;
  }

  private async resolve(): Promise<SourceManifest> {
    const oci = await this.findOciManifest();
    if (oci !== undefined) return oci;
    return this.synthesize();
  }

  /** The entry `blobs/<alg>/<hex>` of a digest, if the archive has it. */
  private blobEntry(digest: string): TarIndexEntry | undefined {
    const d = checkDigest(digest, "E_BAD_INPUT", `${this.file}: blob`);
    const [alg, hex] = d.split(":");
    return this.tar.lookup(`blobs/${alg}/${hex}`, `blob ${d}`);
  }

  private async readVerifiedBlob(d: Descriptor): Promise<Buffer | undefined> {
    const e = this.blobEntry(d.digest);
    if (e === undefined || e.size !== d.size || d.size > MAX_MANIFEST_BLOB) return undefined;
    const bytes = await this.tar.readAll(e, MAX_MANIFEST_BLOB);
    const alg = d.digest.startsWith("sha512:") ? "sha512" : "sha256";
    const got = `${alg}:${createHash(alg).update(bytes).digest("hex")}`;
    if (got !== d.digest)
      throw new StratumError("E_CORRUPT", `${this.file}: blob ${d.digest} has digest ${got}`);
    return bytes;
  }

  /**
   * Docker 25+ archives carry an OCI layout: find the image manifest whose config is the selected image's
   * config (following nested indexes), usable only when it lists as many layers as manifest.json and the
   * archive holds every blob it names.
   */
  private async findOciManifest(): Promise<SourceManifest | undefined> {
    const ie = this.tar.lookup("index.json", "index.json");
    if (ie === undefined) return undefined;
    let top: ImageManifest | ImageIndex;
    try {
      top = parseManifest(
        await this.tar.readAll(ie, MAX_MANIFEST_JSON),
        undefined,
        `${this.file}: index.json`,
      );
    } catch (err) {
      if (err instanceof StratumError && (err.code === "E_BAD_INPUT" || err.code === "E_UNSUPPORTED"))
        return undefined; // manifest.json is what a docker-archive is read by
      throw err;
    }
    if (top.kind !== "index") return undefined;
    const queue: { d: Descriptor; via: string | undefined }[] = top.manifests.map((d) => ({
      d,
      via: undefined,
    }));
    let reads = 0;
    while (queue.length > 0 && reads < MAX_OCI_WALK) {
      const item = queue.shift();
      if (item === undefined) break;
      const kind = manifestKind(item.d.mediaType);
      if (kind === undefined) continue;
      reads++;
      const bytes = await this.readVerifiedBlob(item.d);
      if (bytes === undefined) continue; // another platform's manifest, not saved
      let doc: ImageManifest | ImageIndex;
      try {
        doc = parseManifest(bytes, undefined, `${this.file}: blob ${item.d.digest}`);
      } catch (err) {
        if (err instanceof StratumError && (err.code === "E_BAD_INPUT" || err.code === "E_UNSUPPORTED"))
          continue;
        throw err;
      }
      if (doc.kind === "index") {
        for (const d of doc.manifests) queue.push({ d, via: item.via ?? item.d.digest });
        continue;
      }
      if (doc.config.digest !== this.configDigest) continue;
      if (doc.layers.length === 0 || doc.layers.length !== this.layerEntries.length) continue;
      if (!doc.layers.every((l) => this.blobEntry(l.digest)?.size === l.size)) continue;
      return {
        bytes,
        digest: item.d.digest,
        manifest: doc,
        ...(item.via !== undefined ? { indexDigest: item.via } : {}),
      };
    }
    return undefined;
  }

  private async layerFile(entry: TarIndexEntry, what: string): Promise<LayerFile> {
    const key = `${this.tar.identity}:${entry.offset}`;
    let known = layerCache.get(key);
    if (known === undefined) {
      const magic = sniffCompression(await this.tar.head(entry, 8));
      if (magic === "bzip2" || magic === "xz")
        throw new StratumError(
          "E_UNSUPPORTED",
          `${this.file}: ${what} "${entry.name}" is ${magic}-compressed`,
        );
      known = { digest: await this.tar.digest(entry), compression: magic ?? "none" };
      cacheLayer(key, known);
    }
    return { entry, ...known };
  }

  private async synthesize(): Promise<SourceManifest> {
    const layers: LayerFile[] = [];
    for (const [i, entry] of this.layerEntries.entries())
      layers.push(await this.layerFile(entry, `manifest.json[${this.image.index}].Layers[${i}]`));
    const oci = layers.some((l) => l.compression === "zstd");
    const layerType = (c: Compression): string =>
      oci
        ? { none: MediaType.ociLayer, gzip: MediaType.ociLayerGzip, zstd: MediaType.ociLayerZstd }[c]
        : c === "gzip"
          ? MediaType.dockerLayerGzip
          : MediaType.dockerLayer;
    const config: Descriptor = {
      mediaType: oci ? MediaType.ociConfig : MediaType.dockerConfig,
      size: this.configBytes.length,
      digest: this.configDigest,
    };
    const descs: Descriptor[] = layers.map((l) => ({
      mediaType: layerType(l.compression),
      size: l.entry.size,
      digest: l.digest,
    }));
    for (const l of layers) this.blobs.set(l.digest, l.entry);
    const mediaType = oci ? MediaType.ociManifest : MediaType.dockerManifest;
    const bytes = serializeManifest(mediaType, config, descs);
    const manifest = parseManifest(bytes, mediaType, `${this.file}: synthesized manifest`) as ImageManifest;
    return { bytes, digest: sha256(bytes), manifest, synthesized: true };
  }

  get imageName(): string | undefined {
    return this.image.repoTags[0];
  }

  async *blob(descriptor: Descriptor, opts: BlobOptions = {}): AsyncGenerator<Buffer> {
    const entry = this.blobs.get(descriptor.digest) ?? this.blobEntry(descriptor.digest);
    if (entry === undefined)
      throw new StratumError("E_NOT_FOUND", `${this.file}: no blob ${descriptor.digest} in the archive`);
    if (entry.size !== descriptor.size)
      throw new StratumError(
        "E_CORRUPT",
        `${this.file}: blob ${descriptor.digest} ("${entry.name}") is ${entry.size} bytes, the descriptor says ${descriptor.size}`,
      );
    yield* this.tar.stream(entry, opts);
  }

  async close(): Promise<void> {
    await this.tar.close();
  }
}
