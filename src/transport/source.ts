// The one interface every image transport implements (registry, daemon, docker-archive, oci-archive, oci
// layout), so the pull pipeline (src/oci/pull.ts) treats sources alike — the go-containerregistry model.
// A source resolves its reference to one image manifest (choosing a platform from an index) and serves blobs by
// descriptor as byte streams. Sources check what they can cheaply (the manifest's digest when the reference
// pins one); the pipeline verifies every blob's digest and size and every layer's diff_id itself, in the same
// pass that stores it, so no transport is trusted.

import type { Descriptor, ImageManifest, Platform } from "../oci/manifest.ts";

/** The image manifest a source resolved its reference to. */
export interface SourceManifest {
  /** The manifest's exact bytes: stored as they are, their sha256 is the manifest digest. */
  readonly bytes: Buffer;
  /** "sha256:<hex>" of `bytes`. */
  readonly digest: string;
  readonly manifest: ImageManifest;
  /** When the reference named an index (or manifest list): its digest; the manifest was chosen from it. */
  readonly indexDigest?: string;
  /**
   * True when the manifest was made up by the transport (docker-archive, daemon `save`): the archive has no
   * manifest of its own, so its digest names nothing outside this repository.
   */
  readonly synthesized?: boolean;
}

export interface BlobOptions {
  /** Called as compressed bytes arrive (progress); the total is the descriptor's size. */
  onBytes?: (n: number) => void;
  /** Aborts the transfer (the iterator then throws). */
  signal?: AbortSignal;
}

export interface ImageSource {
  /** The source as the user named it (canonical form), for messages and for recording where an image came from. */
  readonly description: string;
  /** Resolve the reference to one image manifest, choosing `platform` from an index. */
  manifest(platform: Platform): Promise<SourceManifest>;
  /**
   * A blob's bytes exactly as stored (layers still compressed). Transports retry and resume internally (a
   * registry resumes an interrupted download with a Range request), so the stream is the whole blob once.
   */
  blob(descriptor: Descriptor, opts?: BlobOptions): AsyncIterable<Buffer>;
  /**
   * The image's own name in the source when it records one: a docker-archive's first RepoTags entry, an OCI
   * layout's full `org.opencontainers.image.ref.name`. What a pull is tagged with when no name is given.
   */
  readonly imageName?: string;
  /** How many blobs this source can usefully serve at once (a registry: several; an archive file: one). */
  readonly concurrency: number;
  /** Release connections, temporary files, sockets. */
  close(): Promise<void>;
}
