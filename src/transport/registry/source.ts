// The registry transport (`docker://…`, docs/pull.md "Registries"): an ImageSource over RegistryClient. The
// reference resolves to one image manifest; when it names an index or a Docker manifest list, the entry for the
// wanted platform is chosen (selectManifest) and fetched by digest, and the index's digest is kept. Schema 1
// manifests, nested indexes and non-image entries are refused (parseManifest, E_UNSUPPORTED). Blobs stream with
// the client's retries and Range resume; the pipeline verifies their digests.

import { StratumError } from "../../errors.ts";
import { parseManifest, selectManifest, type Descriptor, type Platform } from "../../oci/manifest.ts";
import type { RegistrySource } from "../../oci/reference.ts";
import type { BlobOptions, ImageSource, SourceManifest } from "../source.ts";
import { RegistryClient, type RegistryClientOptions } from "./client.ts";

export const DEFAULT_REGISTRY_CONCURRENCY = 3;

export interface RegistryImageSourceOptions extends RegistryClientOptions {
  /** Blobs served at once (default 3). */
  concurrency?: number;
  /**
   * A client to share (its connections and tokens) instead of a new one; it must be for the source's registry.
   * close() then leaves it open.
   */
  client?: RegistryClient;
}

export class RegistryImageSource implements ImageSource {
  readonly description: string;
  readonly concurrency: number;
  readonly client: RegistryClient;
  readonly #ownsClient: boolean;

  constructor(
    readonly source: RegistrySource,
    opts: RegistryImageSourceOptions = {},
  ) {
    this.description = source.toString();
    const concurrency = opts.concurrency ?? DEFAULT_REGISTRY_CONCURRENCY;
    if (!Number.isSafeInteger(concurrency) || concurrency < 1)
      throw new StratumError(
        "E_USAGE",
        `registry concurrency must be a positive integer, not ${concurrency}`,
      );
    this.concurrency = concurrency;
    if (opts.client !== undefined) {
      if (opts.client.registry !== source.image.registry)
        throw new StratumError(
          "E_USAGE",
          `${this.description}: the client given is for registry ${opts.client.registry}`,
        );
      this.client = opts.client;
      this.#ownsClient = false;
    } else {
      const username = opts.username ?? source.user;
      this.client = new RegistryClient(source.image.registry, {
        ...opts,
        ...(username !== undefined ? { username } : {}),
      });
      this.#ownsClient = true;
    }
  }

  get #repository(): string {
    return this.source.image.repository;
  }

  async manifest(platform: Platform, opts: { signal?: AbortSignal } = {}): Promise<SourceManifest> {
    const label = this.source.image.toString();
    const top = await this.client.manifest(this.#repository, this.source.image.manifestReference, {
      ...opts,
      what: label,
    });
    const parsed = parseManifest(top.bytes, top.contentType, `${label} manifest`);
    if (parsed.kind === "manifest") return { bytes: top.bytes, digest: top.digest, manifest: parsed };

    const entry = selectManifest(parsed, platform, label);
    const what = `${label} (${entry.digest}, chosen from the index)`;
    const child = await this.client.manifest(this.#repository, entry.digest, { ...opts, what });
    if (child.bytes.length !== entry.size)
      throw new StratumError(
        "E_CORRUPT",
        `${what}: the manifest has ${child.bytes.length} bytes but the index says ${entry.size}`,
      );
    const manifest = parseManifest(child.bytes, child.contentType ?? entry.mediaType, `${what} manifest`);
    if (manifest.kind !== "manifest")
      throw new StratumError("E_UNSUPPORTED", `${what}: an index inside an index is not supported`);
    return { bytes: child.bytes, digest: child.digest, manifest, indexDigest: top.digest };
  }

  blob(descriptor: Descriptor, opts: BlobOptions = {}): AsyncIterable<Buffer> {
    return this.client.blob(this.#repository, descriptor.digest, {
      size: descriptor.size,
      what: `${this.source.image.registry}/${this.#repository}@${descriptor.digest}`,
      ...(opts.onBytes !== undefined ? { onBytes: opts.onBytes } : {}),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
  }

  async close(): Promise<void> {
    if (this.#ownsClient) await this.client.close();
  }
}

/** The ImageSource for `docker://…`. */
export function openRegistrySource(
  source: RegistrySource,
  opts: RegistryImageSourceOptions = {},
): RegistryImageSource {
  return new RegistryImageSource(source, opts);
}
