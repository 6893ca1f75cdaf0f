// Media types of OCI image-spec v1.1 and Docker image manifest v2 schema 2 (docs/pull.md "Media types"), the
// manifest Accept header (node-ecosystem.md §5), and what a layer's media type says about its compression.
// Foreign, non-distributable and encrypted layers are valid but unsupported (E_UNSUPPORTED).

import { StratumError } from "../errors.ts";
import type { Compression } from "./layer-ingest.ts";

export const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayerNondistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  ociLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  ociLayerNondistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  dockerSchema1Manifest: "application/vnd.docker.distribution.manifest.v1+json",
  dockerSchema1SignedManifest: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

/** The manifest media types a pull asks a registry for, most preferred first. */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerManifestList,
  MediaType.dockerManifest,
].join(", ");

export type ManifestKind = "index" | "manifest";

const MANIFEST_KINDS: Partial<Record<string, ManifestKind>> = {
  [MediaType.ociIndex]: "index",
  [MediaType.dockerManifestList]: "index",
  [MediaType.ociManifest]: "manifest",
  [MediaType.dockerManifest]: "manifest",
};

/** "index" or "manifest" for the four supported manifest media types, undefined otherwise. */
export function manifestKind(mediaType: string): ManifestKind | undefined {
  return MANIFEST_KINDS[mediaType];
}

export function isSchema1(mediaType: string): boolean {
  return mediaType === MediaType.dockerSchema1Manifest || mediaType === MediaType.dockerSchema1SignedManifest;
}

export function isImageConfig(mediaType: string): boolean {
  return mediaType === MediaType.ociConfig || mediaType === MediaType.dockerConfig;
}

/** `type/subtype` of a Content-Type header, lowercased, parameters dropped; "" when absent. */
export function essence(contentType: string | undefined | null): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

const LAYER_COMPRESSION: Partial<Record<string, Compression>> = {
  [MediaType.ociLayer]: "none",
  [MediaType.ociLayerGzip]: "gzip",
  [MediaType.ociLayerZstd]: "zstd",
  [MediaType.dockerLayer]: "none",
  [MediaType.dockerLayerGzip]: "gzip",
};

const NOT_DISTRIBUTABLE = new Set<string>([
  MediaType.ociLayerNondistributable,
  MediaType.ociLayerNondistributableGzip,
  MediaType.ociLayerNondistributableZstd,
  MediaType.dockerForeignLayerGzip,
]);

/**
 * The compression a layer media type declares. `what` names the layer in errors. Foreign/non-distributable,
 * encrypted and unknown layer types are E_UNSUPPORTED. (Ingest detects compression from the bytes anyway;
 * this tells a pull which layers it can take at all.)
 */
export function layerCompression(mediaType: string, what: string): Compression {
  const c = LAYER_COMPRESSION[mediaType];
  if (c !== undefined) return c;
  if (NOT_DISTRIBUTABLE.has(mediaType))
    throw new StratumError(
      "E_UNSUPPORTED",
      `${what}: foreign (non-distributable) layers are not supported (media type ${mediaType})`,
    );
  if (mediaType.endsWith("+encrypted"))
    throw new StratumError("E_UNSUPPORTED", `${what}: encrypted layers are not supported (${mediaType})`);
  throw new StratumError(
    "E_UNSUPPORTED",
    `${what}: layer media type "${mediaType}" is not a supported tar layer`,
  );
}
