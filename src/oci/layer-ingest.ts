// Layer ingest: one pass from a (possibly compressed) tar byte stream to a layer splitstream in the repository
// (reference: composefs-repository.md §2.3 and §3). Compression is detected from the magic bytes (gzip, zstd,
// or plain tar); the diff_id (sha256 of the uncompressed tar) is computed in the same pass and checked when an
// expected value is given. Regular-file payloads over 64 bytes become objects as they stream by; everything else
// is stored inline, so reassembling the stream reproduces the tar byte for byte. The stream is named
// `oci-layer-sha256:<diff_id>`; a layer already present is not stored again.

import { createHash, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { ContentType } from "../format/splitstream.ts";
import { TarFormatError, TarSplitter, type TarEvent } from "../format/tar.ts";
import { ZstdDecoder } from "../format/zstd.ts";
import { layerStreamName } from "./image-refs.ts";
import type { ObjectWriter } from "../repo/objects.ts";
import type { Repository } from "../repo/repository.ts";
import type { LayerEntryBuilder } from "./layer-tree.ts";

export type Compression = "gzip" | "zstd" | "none";

export interface LayerIngestOptions {
  /** Expected sha256 of the uncompressed tar ("sha256:<hex>"); a mismatch fails the ingest before naming. */
  expectedDiffId?: string;
  /** Names the input in error messages (a file name, a blob digest). */
  label?: string;
  /**
   * The layer is zstd:chunked: its writer may have dropped the tar's trailing zero blocks, so the decompressed
   * stream hashes differently from the config's diff_id. When the stream ends short of `expectedDiffId`, try
   * appending up to one 10 KiB record of zeros; accept (and store the padded, original tar) only when that
   * reproduces `expectedDiffId` exactly (docs/pull.md "zstd:chunked").
   */
  restoreTrailingZeros?: boolean;
  /** The compression the layer's media type declares; magic bytes that say otherwise fail the ingest. */
  expectedCompression?: Compression;
  /**
   * Refuse entries that could land outside the root when the layer is unpacked: an absolute path or a `..`
   * component in an entry's path or in a hard link's target (symlink targets are data, resolved at use).
   */
  confinePaths?: boolean;
  /** Also collect the layer's entries (for the image tree) from the same tar events, in the same pass. */
  entries?: LayerEntryBuilder;
  /**
   * Called once the whole input is read and its diff_id checked, before the stream is stored and made durable
   * (the syncfs that follows runs on a worker thread, so work this schedules can overlap it).
   */
  onVerified?: () => void;
}

/** Why a tar path could leave the root, or null when it cannot. */
export function unsafeTarPath(p: Buffer): string | null {
  const s = p.toString("latin1");
  if (s.startsWith("/")) return "is absolute";
  for (const c of s.split("/")) if (c === "..") return 'has a ".." component';
  return null;
}

export interface LayerIngestResult {
  diffId: string;
  compression: Compression;
  streamName: string;
  /** Object ID of the layer splitstream. */
  streamId: ObjectId;
  /** False when the layer was already in the repository. */
  stored: boolean;
  /** Zero bytes appended to restore a zstd:chunked layer's original tar (0 normally). */
  restoredZeros: number;
  /**
   * When the stored layer became durable: milliseconds on process.hrtime's clock (hrtime.bigint() / 1e6);
   * absent when it was already stored.
   */
  durableAtMs?: number;
  tarSize: number;
  entries: number;
  externalObjects: number;
  newObjects: number;
  inlineBytes: number;
}

/** Input is handed to the decompressor in pieces of at least this many bytes. */
const COALESCE_BYTES = 1 << 20;

export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  return "none";
}

/** Decompress an async byte source according to its magic bytes. */
async function* decompress(
  source: AsyncIterable<Buffer>,
  onDetect: (c: Compression) => void,
): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let headLen = 0;
  let done = false;
  while (headLen < 4) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head.push(r.value);
    headLen += r.value.length;
  }
  const first = Buffer.concat(head);
  const compression = detectCompression(first);
  onDetect(compression);
  // The rest of the input in pieces of at least COALESCE_BYTES: network sources deliver 16-64 KiB at a time, and
  // every piece costs a round through the decompressor's stream machinery.
  async function* rest(): AsyncGenerator<Buffer> {
    let parts: Buffer[] = first.length ? [first] : [];
    let size = first.length;
    while (!done) {
      const r = await it.next();
      if (r.done) break;
      parts.push(r.value);
      size += r.value.length;
      if (size >= COALESCE_BYTES) {
        yield parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
        parts = [];
        size = 0;
      }
    }
    if (size > 0) yield parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
  }
  if (compression === "none") {
    yield* rest();
  } else if (compression === "zstd") {
    const dec = new ZstdDecoder();
    for await (const chunk of rest()) for (const out of dec.push(chunk)) yield out;
    dec.end();
  } else {
    const gunzip = createGunzip({ chunkSize: 256 << 10 });
    const input = Readable.from(rest());
    input.on("error", (err) => gunzip.destroy(err)); // a failing source fails the iteration below
    input.pipe(gunzip);
    for await (const out of gunzip as AsyncIterable<Buffer>) yield out;
  }
}

/** Read a tar layer from `source` into the repository as a layer splitstream. */
export async function ingestLayer(
  repo: Repository,
  source: AsyncIterable<Buffer>,
  opts: LayerIngestOptions = {},
): Promise<LayerIngestResult> {
  repo.checkWritable();
  const label = opts.label ?? "layer";
  const diff = createHash("sha256");
  const splitter = new TarSplitter();
  const stream = repo.createStream(ContentType.ociLayer);
  // The object being written for the current external payload; a box so the catch below sees closure writes.
  const current: { obj: ObjectWriter | null } = { obj: null };
  let compression: Compression = "none";
  let restoredZeros = 0;
  const stats = { tarSize: 0, entries: 0, externalObjects: 0, newObjects: 0, inlineBytes: 0 };

  const entries = opts.entries;
  const handle = (events: TarEvent[]): void => {
    for (const ev of events) {
      handleOne(ev);
      // The image tree sees every event but payload data; external-end goes with its object ID (handleOne).
      if (entries !== undefined && ev.kind !== "external-end" && ev.kind !== "data") entries.push(ev);
    }
  };
  const handleOne = (ev: TarEvent): void => {
    switch (ev.kind) {
      case "inline":
        stats.inlineBytes += ev.data.length;
        stream.writeInline(ev.data);
        break;
      case "entry":
        stats.entries++;
        if (opts.confinePaths) {
          const e = ev.entry;
          const why = unsafeTarPath(e.path) ?? (e.type === "1" ? unsafeTarPath(e.linkPath) : null);
          if (why !== null) {
            const which = unsafeTarPath(e.path) !== null ? "entry" : "hard link target";
            const name = (unsafeTarPath(e.path) !== null ? e.path : e.linkPath).toString("utf8");
            throw new StratumError("E_UNSAFE_PATH", `${label}: ${which} ${JSON.stringify(name)} ${why}`);
          }
        }
        break;
      case "external":
        current.obj = repo.objects.createWriter();
        break;
      case "data":
        current.obj?.write(ev.data);
        break;
      case "external-end": {
        const o = current.obj?.finish();
        current.obj = null;
        if (!o) throw new Error("tar splitter ended an external payload that never started");
        stats.externalObjects++;
        if (o.stored) stats.newObjects++;
        stream.writeExternal(o.id, o.size);
        entries?.push(ev, o.id);
        break;
      }
    }
  };

  try {
    const onDetect = (c: Compression): void => {
      compression = c;
      if (opts.expectedCompression !== undefined && c !== opts.expectedCompression)
        throw new StratumError(
          "E_BAD_INPUT",
          `${label}: the media type says ${opts.expectedCompression === "none" ? "uncompressed tar" : opts.expectedCompression}, the data is ${c === "none" ? "not compressed" : c}`,
        );
    };
    for await (const chunk of decompress(source, onDetect)) {
      diff.update(chunk);
      stats.tarSize += chunk.length;
      handle(splitter.push(chunk));
    }
    if (opts.restoreTrailingZeros && opts.expectedDiffId) {
      restoredZeros = trailingZerosFor(diff, opts.expectedDiffId);
      if (restoredZeros > 0) {
        const zeros = Buffer.alloc(restoredZeros);
        diff.update(zeros);
        stats.tarSize += restoredZeros;
        handle(splitter.push(zeros));
      }
    }
    handle(splitter.end());
  } catch (err) {
    current.obj?.abort();
    stream.abort();
    if (err instanceof TarFormatError)
      throw new StratumError("E_BAD_INPUT", `${label}: not a valid tar archive: ${err.message}`);
    if (err instanceof StratumError) throw err;
    throw new StratumError(
      "E_BAD_INPUT",
      `${label}: cannot read ${compression} data: ${(err as Error).message}`,
    );
  }

  const diffId = `sha256:${diff.digest("hex")}`;
  if (opts.expectedDiffId && opts.expectedDiffId !== diffId) {
    stream.abort();
    throw new StratumError(
      "E_BAD_INPUT",
      `${label}: diff_id mismatch: the uncompressed tar is ${diffId}, expected ${opts.expectedDiffId}`,
    );
  }
  try {
    opts.onVerified?.();
  } catch (err) {
    stream.abort();
    throw err;
  }
  const streamName = layerStreamName(diffId);
  const existing = repo.hasStream(streamName) ? repo.streamId(streamName) : undefined;
  if (existing) {
    stream.abort();
    return { diffId, compression, streamName, streamId: existing, stored: false, restoredZeros, ...stats };
  }
  const written = stream.finish();
  const durableAtMs = Number(await repo.publishStreamAsync(streamName, written.id)) / 1e6;
  return {
    diffId,
    compression,
    streamName,
    streamId: written.id,
    stored: true,
    restoredZeros,
    durableAtMs,
    ...stats,
  };
}

/**
 * How many zero bytes (a multiple of 512, at most one 10240-byte record) make the hashed stream hash to
 * `expected`; 0 when it already does or when no padding does.
 */
function trailingZerosFor(hash: Hash, expected: string): number {
  if (`sha256:${hash.copy().digest("hex")}` === expected) return 0;
  const zeros = Buffer.alloc(512);
  const h = hash.copy();
  for (let n = 512; n <= 10240; n += 512) {
    h.update(zeros);
    if (`sha256:${h.copy().digest("hex")}` === expected) return n;
  }
  return 0;
}
