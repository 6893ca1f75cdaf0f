// `oci:DIR[:REF|:@N]` and `oci-archive:FILE[:REF|:@N]`: an image from an OCI image layout, as a directory or as
// a tar of one read in place by offset (tar-index.ts; nothing is extracted). See docs/pull.md "Archives,
// layouts and daemons".
//
// `index.json` lists the layout's images. REF matches an entry's `org.opencontainers.image.ref.name` annotation
// (skopeo and umoci write a tag, `latest`; podman writes a full name, `localhost/big:latest`) or Docker's
// `io.containerd.image.name`: an exact match first, then the same image name after Docker's normalisation
// (`test/x:1` = `docker.io/test/x:1`), then the tag of a full name (`latest` matches `localhost/big:latest`).
// An entry that is an index (a multi-platform image) is resolved for the wanted platform with selectManifest,
// through nested indexes; several matching entries that all name a platform are chosen between the same way.
// Blobs live at `blobs/<alg>/<hex>`; the digest is checked before it becomes a path, and a directory layout's
// blob must resolve (symlinks followed) to a file inside the layout. Manifests and indexes are checked against
// their descriptor's size and digest as they are read.

import { createHash } from "node:crypto";
import type { Stats } from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { isErrno, ioError, StratumError } from "../../errors.ts";
import {
  type Descriptor,
  type ImageIndex,
  type Platform,
  parseManifest,
  selectManifest,
} from "../../oci/manifest.ts";
import { manifestKind, MediaType } from "../../oci/media-types.ts";
import { type ArchiveSelector, checkDigest, OciLayoutSource, parseImageName } from "../../oci/reference.ts";
import type { BlobOptions, ImageSource, SourceManifest } from "../source.ts";
import { readFileRange, readRangeAll, TarIndex } from "./tar-index.ts";

const REF_NAME = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME = "io.containerd.image.name";
const MAX_INDEX_JSON = 16 << 20;
const MAX_MANIFEST_BLOB = 8 << 20;
/** Indexes followed below the entry REF named. */
const MAX_NESTING = 4;

/** Where a layout's files are: a directory or an indexed tar. */
interface LayoutStore {
  /** The directory or file, for messages. */
  readonly label: string;
  /** A top-level file (`index.json`, `oci-layout`); undefined when it does not exist. */
  readTop(name: string, max: number): Promise<Buffer | undefined>;
  /** The blob's size, or undefined when the layout lacks it. */
  blobSize(digest: string): Promise<number | undefined>;
  /** The blob's bytes as a stream (E_NOT_FOUND when missing). */
  streamBlob(digest: string, opts: BlobOptions): AsyncGenerator<Buffer>;
  /** The whole (small) blob. */
  readBlob(digest: string, max: number): Promise<Buffer>;
  close(): Promise<void>;
}

function blobName(digest: string, label: string): string {
  const d = checkDigest(digest, "E_BAD_INPUT", `${label}: blob`);
  const colon = d.indexOf(":");
  return `blobs/${d.slice(0, colon)}/${d.slice(colon + 1)}`;
}

function missingBlob(label: string, digest: string): StratumError {
  return new StratumError("E_NOT_FOUND", `${label}: blob ${digest} is missing from the layout`);
}

class DirectoryStore implements LayoutStore {
  private constructor(
    readonly label: string,
    private readonly rootReal: string,
  ) {}

  static async open(dir: string): Promise<DirectoryStore> {
    let st: Stats;
    try {
      st = await fsp.stat(dir);
    } catch (err) {
      if (isErrno(err, "ENOENT"))
        throw new StratumError("E_NOT_FOUND", `${dir}: no such directory`, { cause: err });
      throw ioError(err, `${dir}: stat`);
    }
    if (!st.isDirectory())
      throw new StratumError(
        "E_USAGE",
        `${dir}: not a directory; for a tar of an OCI layout use oci-archive:, for docker save output docker-archive:`,
      );
    return new DirectoryStore(dir, await fsp.realpath(dir));
  }

  /** The real path of `rel` if it exists, checked to be inside the layout. */
  private async locate(rel: string): Promise<string | undefined> {
    let real: string;
    try {
      real = await fsp.realpath(path.join(this.label, rel));
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return undefined;
      throw ioError(err, `${this.label}: ${rel}`);
    }
    const inside = path.relative(this.rootReal, real);
    if (inside === "" || inside === ".." || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside))
      throw new StratumError(
        "E_UNSAFE_PATH",
        `${this.label}: ${rel} resolves to ${real}, outside the layout`,
      );
    return real;
  }

  private async openFile(rel: string): Promise<{ fh: fsp.FileHandle; size: number } | undefined> {
    const real = await this.locate(rel);
    if (real === undefined) return undefined;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(real, "r");
    } catch (err) {
      if (isErrno(err, "ENOENT")) return undefined;
      throw ioError(err, `${this.label}: open ${rel}`);
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new StratumError("E_BAD_INPUT", `${this.label}: ${rel} is not a regular file`);
    }
    return { fh, size: st.size };
  }

  async readTop(name: string, max: number): Promise<Buffer | undefined> {
    const f = await this.openFile(name);
    if (f === undefined) return undefined;
    try {
      return await readRangeAll(f.fh, 0, f.size, max, `${this.label}: ${name}`);
    } finally {
      await f.fh.close();
    }
  }

  async blobSize(digest: string): Promise<number | undefined> {
    const real = await this.locate(blobName(digest, this.label));
    if (real === undefined) return undefined;
    const st = await fsp.stat(real);
    return st.isFile() ? st.size : undefined;
  }

  async *streamBlob(digest: string, opts: BlobOptions): AsyncGenerator<Buffer> {
    const rel = blobName(digest, this.label);
    const f = await this.openFile(rel);
    if (f === undefined) throw missingBlob(this.label, digest);
    try {
      yield* readFileRange(f.fh, 0, f.size, `${this.label}: ${rel}`, opts);
    } finally {
      await f.fh.close();
    }
  }

  async readBlob(digest: string, max: number): Promise<Buffer> {
    const rel = blobName(digest, this.label);
    const f = await this.openFile(rel);
    if (f === undefined) throw missingBlob(this.label, digest);
    try {
      return await readRangeAll(f.fh, 0, f.size, max, `${this.label}: ${rel}`);
    } finally {
      await f.fh.close();
    }
  }

  async close(): Promise<void> {
    // nothing held open between calls
  }
}

class ArchiveStore implements LayoutStore {
  private constructor(
    readonly label: string,
    private readonly tar: TarIndex,
  ) {}

  static async open(file: string): Promise<ArchiveStore> {
    const st = await fsp.stat(file).catch(() => undefined);
    if (st?.isDirectory() === true)
      throw new StratumError("E_USAGE", `${file}: is a directory; for an OCI layout directory use oci:`);
    return new ArchiveStore(file, await TarIndex.open(file));
  }

  readTop(name: string, max: number): Promise<Buffer | undefined> {
    const e = this.tar.lookup(name, name);
    return e === undefined ? Promise.resolve(undefined) : this.tar.readAll(e, max);
  }

  blobSize(digest: string): Promise<number | undefined> {
    const name = blobName(digest, this.label);
    return Promise.resolve(this.tar.lookup(name, `blob ${digest}`)?.size);
  }

  async *streamBlob(digest: string, opts: BlobOptions): AsyncGenerator<Buffer> {
    const name = blobName(digest, this.label);
    const e = this.tar.lookup(name, `blob ${digest}`);
    if (e === undefined) throw missingBlob(this.label, digest);
    yield* this.tar.stream(e, opts);
  }

  async readBlob(digest: string, max: number): Promise<Buffer> {
    const name = blobName(digest, this.label);
    const e = this.tar.lookup(name, `blob ${digest}`);
    if (e === undefined) throw missingBlob(this.label, digest);
    return this.tar.readAll(e, max);
  }

  close(): Promise<void> {
    return this.tar.close();
  }
}

/** The names an index.json entry is known by. */
function entryNames(d: Descriptor): string[] {
  const out: string[] = [];
  for (const k of [REF_NAME, CONTAINERD_NAME]) {
    const v = d.annotations?.[k];
    if (v !== undefined && v !== "") out.push(v);
  }
  return out;
}

function normalizedName(name: string): string | undefined {
  try {
    return parseImageName(name).toString();
  } catch {
    return undefined;
  }
}

/** The tag of a full image name (`localhost/big:latest` → `latest`), undefined for a bare tag. */
function tagOf(name: string): string | undefined {
  const colon = name.lastIndexOf(":");
  if (colon < 0 || colon < name.lastIndexOf("/") || name.includes("@")) return undefined;
  return name.slice(colon + 1);
}

function uniqueByDigest(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return ds.filter((d) => (seen.has(d.digest) ? false : (seen.add(d.digest), true)));
}

function entryLabel(d: Descriptor, i: number): string {
  const names = entryNames(d);
  return `@${i} ${names.length > 0 ? names.join(" = ") : `(unnamed ${d.digest})`}`;
}

/**
 * The index.json entries `select` names: one, or several that all name a platform (to choose from by
 * platform). E_NOT_FOUND / E_USAGE list what the layout holds.
 */
export function selectLayoutEntries(
  index: ImageIndex,
  select: ArchiveSelector<string>,
  label: string,
): Descriptor[] {
  const all = index.manifests;
  const listing = (): string => all.map(entryLabel).join("; ");
  if (all.length === 0) throw new StratumError("E_NOT_FOUND", `${label}: index.json lists no images`);
  const narrow = (matches: Descriptor[], what: string | undefined): Descriptor[] => {
    const unique = uniqueByDigest(matches);
    if (unique.length === 1 || unique.every((d) => d.platform !== undefined)) return unique;
    throw new StratumError(
      "E_USAGE",
      what === undefined
        ? `${label}: the layout holds ${unique.length} images; name one with :REF or :@N (${listing()})`
        : `${label}: ${what} names ${unique.length} images; name one with :@N (${listing()})`,
    );
  };
  if (select === undefined) return narrow(all, undefined);
  if ("index" in select) {
    const d = all[select.index];
    if (d === undefined)
      throw new StratumError("E_NOT_FOUND", `${label}: no image @${select.index} (${listing()})`);
    return [d];
  }
  const ref = select.name;
  const exact = all.filter((d) => entryNames(d).includes(ref));
  if (exact.length > 0) return narrow(exact, `"${ref}"`);
  const norm = normalizedName(ref);
  if (norm !== undefined) {
    const same = all.filter((d) => entryNames(d).some((n) => normalizedName(n) === norm));
    if (same.length > 0) return narrow(same, `"${ref}"`);
  }
  if (!ref.includes("/") && !ref.includes(":")) {
    const byTag = all.filter((d) => entryNames(d).some((n) => tagOf(n) === ref));
    if (byTag.length > 0) return narrow(byTag, `the tag "${ref}"`);
  }
  throw new StratumError("E_NOT_FOUND", `${label}: no image named "${ref}" (the layout holds: ${listing()})`);
}

export interface OciLayoutOptions {
  /** Replaces the default description (`oci:DIR[:REF]`, `oci-archive:FILE[:REF]`). */
  description?: string;
}

/** An image of an OCI layout directory or oci-archive tar. */
export class OciLayoutImageSource implements ImageSource {
  readonly concurrency = 2;

  /** The selected entry's ref.name when it is a full image name (podman writes one; skopeo, a bare tag). */
  get imageName(): string | undefined {
    const ref = this.entries[0]?.annotations?.["org.opencontainers.image.ref.name"];
    return ref !== undefined && /[/:]/.test(ref) ? ref : undefined;
  }

  private constructor(
    readonly description: string,
    private readonly store: LayoutStore,
    /** The index.json entries the reference selected (several only when they differ by platform). */
    readonly entries: Descriptor[],
  ) {}

  static openSource(src: OciLayoutSource, opts: OciLayoutOptions = {}): Promise<OciLayoutImageSource> {
    return OciLayoutImageSource.open(src.transport, src.path, src.select, {
      description: src.toString(),
      ...opts,
    });
  }

  /**
   * Open the layout at `location` (a directory for `oci`, a tar file for `oci-archive`), read `oci-layout` and
   * `index.json`, and select the entry `select` names. Platform choice waits for manifest().
   */
  static async open(
    transport: "oci" | "oci-archive",
    location: string,
    select: ArchiveSelector<string>,
    opts: OciLayoutOptions = {},
  ): Promise<OciLayoutImageSource> {
    const store =
      transport === "oci" ? await DirectoryStore.open(location) : await ArchiveStore.open(location);
    try {
      const label = store.label;
      const layoutFile = await store.readTop("oci-layout", 1 << 16);
      if (layoutFile !== undefined) {
        let version: unknown;
        try {
          version = (JSON.parse(layoutFile.toString("utf8")) as { imageLayoutVersion?: unknown })
            .imageLayoutVersion;
        } catch (err) {
          throw new StratumError("E_BAD_INPUT", `${label}: oci-layout is not valid JSON`, { cause: err });
        }
        if (typeof version !== "string")
          throw new StratumError("E_BAD_INPUT", `${label}: oci-layout has no imageLayoutVersion`);
        if (!version.startsWith("1."))
          throw new StratumError(
            "E_UNSUPPORTED",
            `${label}: OCI image layout version ${version} (1.x is supported)`,
          );
      }
      const indexBytes = await store.readTop("index.json", MAX_INDEX_JSON);
      if (indexBytes === undefined) {
        const docker = transport === "oci-archive" && (await store.readTop("manifest.json", MAX_INDEX_JSON));
        throw new StratumError(
          "E_BAD_INPUT",
          `${label}: no index.json: not an OCI image layout` +
            (docker ? "; it holds a manifest.json: use docker-archive:" : ""),
        );
      }
      const index = parseManifest(indexBytes, undefined, `${label}: index.json`);
      if (index.kind !== "index")
        throw new StratumError(
          "E_BAD_INPUT",
          `${label}: index.json is an image manifest, not an image index`,
        );
      const entries = selectLayoutEntries(index, select, label);
      const description = opts.description ?? new OciLayoutSource(transport, location, select).toString();
      return new OciLayoutImageSource(description, store, entries);
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  async manifest(platform: Platform): Promise<SourceManifest> {
    const label = this.store.label;
    let first = this.entries[0];
    if (this.entries.length > 1)
      first = selectManifest(
        { kind: "index", mediaType: MediaType.ociIndex, manifests: this.entries },
        platform,
        `${label}: index.json`,
      );
    return this.resolve(first, platform, undefined, 0);
  }

  /** Read a manifest or index blob, checked against its descriptor. */
  private async readDocument(d: Descriptor): Promise<Buffer> {
    const label = this.store.label;
    if (d.size > MAX_MANIFEST_BLOB)
      throw new StratumError("E_BAD_INPUT", `${label}: manifest ${d.digest} is ${d.size} bytes, too large`);
    const bytes = await this.store.readBlob(d.digest, MAX_MANIFEST_BLOB);
    const alg = d.digest.startsWith("sha512:") ? "sha512" : "sha256";
    const got = `${alg}:${createHash(alg).update(bytes).digest("hex")}`;
    if (got !== d.digest || bytes.length !== d.size)
      throw new StratumError(
        "E_CORRUPT",
        `${label}: blob ${d.digest} does not match its descriptor (${bytes.length} bytes, digest ${got})`,
      );
    return bytes;
  }

  private async resolve(
    d: Descriptor,
    platform: Platform,
    indexDigest: string | undefined,
    depth: number,
  ): Promise<SourceManifest> {
    const label = this.store.label;
    const kind = manifestKind(d.mediaType);
    if (kind === undefined)
      throw new StratumError(
        "E_UNSUPPORTED",
        `${label}: ${d.digest} is ${d.mediaType}, not an image manifest or index`,
      );
    const bytes = await this.readDocument(d);
    const doc = parseManifest(bytes, d.mediaType, `${label}: blob ${d.digest}`);
    if (doc.kind === "manifest")
      return {
        bytes,
        digest: d.digest,
        manifest: doc,
        ...(indexDigest !== undefined ? { indexDigest } : {}),
      };
    if (depth >= MAX_NESTING)
      throw new StratumError(
        "E_BAD_INPUT",
        `${label}: indexes nested more than ${MAX_NESTING} deep at ${d.digest}`,
      );
    const top = indexDigest ?? d.digest;
    let chosen: Descriptor;
    try {
      chosen = selectManifest(doc, platform, `${label}: index ${d.digest}`);
    } catch (err) {
      if (!(err instanceof StratumError) || err.code !== "E_NOT_FOUND") throw err;
      // selectManifest looks at image manifests only: try the nested indexes in order.
      for (const nested of doc.manifests) {
        if (manifestKind(nested.mediaType) !== "index") continue;
        try {
          return await this.resolve(nested, platform, top, depth + 1);
        } catch (inner) {
          if (!(inner instanceof StratumError) || inner.code !== "E_NOT_FOUND") throw inner;
        }
      }
      throw err;
    }
    return this.resolve(chosen, platform, top, depth + 1);
  }

  async *blob(descriptor: Descriptor, opts: BlobOptions = {}): AsyncGenerator<Buffer> {
    const size = await this.store.blobSize(descriptor.digest);
    if (size === undefined) throw missingBlob(this.store.label, descriptor.digest);
    if (size !== descriptor.size)
      throw new StratumError(
        "E_CORRUPT",
        `${this.store.label}: blob ${descriptor.digest} is ${size} bytes, the descriptor says ${descriptor.size}`,
      );
    yield* this.store.streamBlob(descriptor.digest, opts);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
