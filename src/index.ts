// The stratum library API. The CLI (src/cli) is a thin layer over these exports.

export { StratumError, type ErrorCode } from "./errors.ts";
export { FsVerityHasher, fsverityDigest } from "./format/fsverity.ts";
export { SHA256, SHA512, parseAlgorithm, type Algorithm, type ObjectId } from "./format/object-id.ts";
export {
  ContentType,
  SplitStreamWriter,
  ChunkDecoder,
  parseHeader as parseSplitStreamHeader,
  type SplitStreamHeader,
} from "./format/splitstream.ts";
export { TarSplitter, TarFormatError, type TarEntry, type TarEvent } from "./format/tar.ts";
export {
  Repository,
  defaultRepoPath,
  type InitOptions,
  type OpenOptions,
  type RefEntry,
} from "./repo/repository.ts";
export { ObjectStore, ObjectWriter, type VerityMode, type StoredObject } from "./repo/objects.ts";
export { StreamReader, StreamWriter } from "./repo/streams.ts";
export { gc, reachableObjects, type GcOptions, type GcResult } from "./repo/gc.ts";
export { fsck, type FsckReport, type FsckProblem } from "./repo/fsck.ts";
export { ingestLayer, detectCompression, type LayerIngestResult } from "./oci/layer-ingest.ts";
export { layerStreamName } from "./oci/image-refs.ts";
export { transformForBoot, type BootTransformOptions } from "./oci/boot.ts";
export { digestFile, digestFd } from "./repo/file-digest.ts";
export { buildImage, storeImage, commitImage, imageObjectIds, imageFormatVersion } from "./repo/images.ts";
export {
  FileSystem,
  Directory,
  Leaf,
  newStat,
  byteString,
  bytes,
  type ByteString,
  type Stat,
  type LeafContent,
  type Inode,
} from "./tree/tree.ts";
export { readDirectory, type DirImportOptions, type ObjectSink } from "./tree/from-dir.ts";
export { parseDumpfile, parseDumpfileFlat, writeDumpfile, DumpfileError } from "./format/dumpfile.ts";
export { FlatTree, fromFileSystem, toFileSystem, type ChildIndex } from "./tree/flat.ts";
export { writeErofs, layoutErofs, emitErofs, type ErofsOptions } from "./format/erofs/writer.ts";
export { readErofs, imageObjects } from "./format/erofs/reader.ts";
export { mountComposefs, unmountComposefs, type ComposefsMountOptions } from "./mount/composefs.ts";
export {
  mountImage,
  unmountImage,
  type MountImageOptions,
  type MountedImage,
  type UnmountedImage,
} from "./mount/image-mount.ts";
export { liveMountImages } from "./mount/records.ts";
