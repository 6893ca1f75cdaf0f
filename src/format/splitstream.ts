// Splitstream, header version 0: the composefs-rs container for a byte stream whose large pieces live in
// separate objects (reference: composefs-repository.md §2; our description: docs/splitstream.md).
//
//   0   11  magic "SplitStream"        16  16  info range [32, 112)
//   11   1  version 0                   32  80  info: stream_refs, object_refs, stream, named_refs ranges
//   12   2  flags (ignored)                      (u64 start, u64 end each), u64 content_type, u64 stream_size
//   14   1  algorithm 1 sha256, 2 sha512   112  stream_refs digests, object_refs digests, named_refs (zstd),
//   15   1  lg_blocksize 12                     stream (zstd)
//
// The stream section is a sequence of chunks, each an i64 LE: n < 0 means |n| inline bytes follow; n >= 0 means
// the whole content of object_refs[n]. The legacy layout (info at 0..16, magic at 18) is accepted on read.
// This module is pure: the writer hands compressed stream bytes to a sink and returns the prefix to put in
// front of them; the reader parses headers, reference arrays and the chunk sequence from bytes it is given.

import { StratumError } from "../errors.ts";
import { algorithmById, type Algorithm, type ObjectId } from "./object-id.ts";
import { ZstdEncoder, zstdCompress } from "./zstd.ts";

export const MAGIC = Buffer.from("SplitStream", "latin1");
export const HEADER_SIZE = 32;
export const INFO_SIZE = 80;
/** Inline runs longer than this are cut into several chunks so the writer's memory stays bounded. */
const MAX_PENDING_INLINE = 1 << 20;

/** Content-type tags used by the OCI layer: 8 ASCII bytes read as a little-endian u64. */
export const ContentType = {
  none: 0n,
  ociLayer: contentTypeTag("ocilayer"),
  ociConfig: contentTypeTag("ociconfg"),
  ociManifest: contentTypeTag("ocimanif"),
  ociBlob: contentTypeTag("oci_blob"),
} as const;

export function contentTypeTag(ascii8: string): bigint {
  const b = Buffer.from(ascii8, "latin1");
  if (b.length !== 8) throw new Error(`content type tag must be 8 bytes: ${ascii8}`);
  return b.readBigUInt64LE(0);
}

/** Printable name of a content type: the 8 ASCII bytes when they are printable, else the number. */
export function contentTypeName(tag: bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(tag);
  return /^[\x20-\x7e]{8}$/.test(b.toString("latin1")) ? b.toString("latin1") : tag.toString();
}

export interface FileRange {
  start: number;
  end: number;
}

export interface SplitStreamHeader {
  algorithm: Algorithm;
  /** True when the file uses the legacy (pre-repr(C)) header layout. */
  legacy: boolean;
  streamRefs: FileRange;
  objectRefs: FileRange;
  stream: FileRange;
  namedRefs: FileRange;
  contentType: bigint;
  /** Length of the reassembled stream. */
  streamSize: number;
}

function bad(file: string, problem: string): StratumError {
  return new StratumError("E_CORRUPT", `${file}: not a valid splitstream: ${problem}`);
}

/**
 * Parse the fixed header and info block. `head` holds at least the first 112 bytes of the file (more is fine),
 * `fileSize` the whole file's size; `file` names the file in error messages.
 */
export function parseHeader(head: Buffer, fileSize: number, file: string): SplitStreamHeader {
  if (head.length < HEADER_SIZE) throw bad(file, `file is ${head.length} bytes, shorter than the header`);
  let legacy = false;
  let base = 0; // offset of magic
  let infoAt = 16;
  if (!head.subarray(0, 11).equals(MAGIC)) {
    if (!head.subarray(18, 29).equals(MAGIC)) throw bad(file, "wrong magic");
    legacy = true;
    base = 18;
    infoAt = 0;
  }
  const version = head[base + 11];
  if (version !== 0) throw bad(file, `unknown header version ${version}`);
  const algorithm = algorithmById(head[legacy ? 30 : 14]);
  if (!algorithm) throw bad(file, `unknown algorithm ${head[legacy ? 30 : 14]}`);
  const lg = head[legacy ? 31 : 15];
  if (lg !== 12) throw bad(file, `unsupported block size 2^${lg}`);
  const info = readRange(head, infoAt, fileSize, file, "info");
  if (info.end - info.start < INFO_SIZE) throw bad(file, `info block is ${info.end - info.start} bytes`);
  if (head.length < info.start + INFO_SIZE) throw bad(file, "file is shorter than its info block");
  const at = info.start;
  const hdr: SplitStreamHeader = {
    algorithm,
    legacy,
    streamRefs: readRange(head, at, fileSize, file, "stream_refs"),
    objectRefs: readRange(head, at + 16, fileSize, file, "object_refs"),
    stream: readRange(head, at + 32, fileSize, file, "stream"),
    namedRefs: readRange(head, at + 48, fileSize, file, "named_refs"),
    contentType: head.readBigUInt64LE(at + 64),
    streamSize: safeNumber(head.readBigUInt64LE(at + 72), file, "stream_size"),
  };
  for (const [name, r] of [
    ["stream_refs", hdr.streamRefs],
    ["object_refs", hdr.objectRefs],
  ] as const) {
    if ((r.end - r.start) % algorithm.digestSize !== 0)
      throw bad(file, `${name} length ${r.end - r.start} is not a multiple of ${algorithm.digestSize}`);
  }
  return hdr;
}

function safeNumber(v: bigint, file: string, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(file, `${what} ${v} is too large`);
  return Number(v);
}

function readRange(buf: Buffer, at: number, fileSize: number, file: string, what: string): FileRange {
  const start = safeNumber(buf.readBigUInt64LE(at), file, `${what} start`);
  const end = safeNumber(buf.readBigUInt64LE(at + 8), file, `${what} end`);
  if (start > end || end > fileSize)
    throw bad(file, `${what} range [${start}, ${end}) lies outside the ${fileSize}-byte file`);
  return { start, end };
}

/** Split a flat array of raw digests into hex object IDs. */
export function parseDigests(buf: Buffer, algorithm: Algorithm): ObjectId[] {
  const ids: ObjectId[] = [];
  for (let o = 0; o + algorithm.digestSize <= buf.length; o += algorithm.digestSize)
    ids.push(buf.toString("hex", o, o + algorithm.digestSize));
  return ids;
}

/**
 * Parse the decompressed named_refs section: records `"<index>:<name>\0"`. Each index points into stream_refs.
 */
export function parseNamedRefs(
  buf: Buffer,
  streamRefs: readonly ObjectId[],
  file: string,
): Map<string, ObjectId> {
  const refs = new Map<string, ObjectId>();
  let o = 0;
  while (o < buf.length) {
    const nul = buf.indexOf(0, o);
    if (nul < 0) throw bad(file, "named ref record is not NUL-terminated");
    const rec = buf.toString("utf8", o, nul);
    const colon = rec.indexOf(":");
    const idx = colon > 0 ? Number(rec.slice(0, colon)) : NaN;
    if (!Number.isInteger(idx) || idx < 0 || idx >= streamRefs.length || !/^\d+$/.test(rec.slice(0, colon)))
      throw bad(file, `named ref record "${rec}" has no valid stream_refs index`);
    refs.set(rec.slice(colon + 1), streamRefs[idx]);
    o = nul + 1;
  }
  return refs;
}

export type Chunk = { kind: "inline"; data: Buffer } | { kind: "external"; index: number };

/**
 * Decodes the (decompressed) chunk sequence incrementally. Inline payloads are returned as they arrive, possibly
 * in several pieces; the caller resolves external indexes against object_refs.
 */
export class ChunkDecoder {
  private readonly head = Buffer.alloc(8);
  private headFill = 0;
  private inlineLeft = 0;
  private consumed = 0;

  constructor(private readonly file: string) {}

  push(data: Buffer): Chunk[] {
    const out: Chunk[] = [];
    let o = 0;
    while (o < data.length) {
      if (this.inlineLeft > 0) {
        const n = Math.min(this.inlineLeft, data.length - o);
        out.push({ kind: "inline", data: data.subarray(o, o + n) });
        this.inlineLeft -= n;
        o += n;
        continue;
      }
      const n = Math.min(8 - this.headFill, data.length - o);
      data.copy(this.head, this.headFill, o, o + n);
      this.headFill += n;
      o += n;
      if (this.headFill < 8) break;
      this.headFill = 0;
      const v = this.head.readBigInt64LE(0);
      if (v < 0n) {
        if (-v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(this.file, `inline chunk of ${-v} bytes`);
        this.inlineLeft = Number(-v);
      } else {
        if (v > 0xffffffffn) throw bad(this.file, `object reference index ${v} is out of range`);
        out.push({ kind: "external", index: Number(v) });
      }
    }
    this.consumed += data.length;
    return out;
  }

  end(): void {
    if (this.headFill !== 0 || this.inlineLeft !== 0)
      throw bad(this.file, `chunk stream is truncated after ${this.consumed} bytes`);
  }
}

/** Ordered set: first insertion fixes the index. */
class UniqueIds {
  readonly list: ObjectId[] = [];
  private readonly index = new Map<ObjectId, number>();

  add(id: ObjectId): number {
    let i = this.index.get(id);
    if (i === undefined) {
      i = this.list.length;
      this.list.push(id);
      this.index.set(id, i);
    }
    return i;
  }
}

export interface SplitStreamResult {
  /** Header, info, reference arrays and named refs: the bytes that go before the compressed stream. */
  prefix: Buffer;
  objectRefs: readonly ObjectId[];
  streamRefs: readonly ObjectId[];
  streamSize: number;
}

/**
 * Writes a splitstream incrementally. Compressed stream bytes go to `sink` as they are produced; `finish()`
 * returns the prefix. The final file is `prefix` followed by every buffer given to `sink`, in order.
 */
export class SplitStreamWriter {
  private readonly objectRefs = new UniqueIds();
  private readonly streamRefs = new UniqueIds();
  private readonly named = new Map<string, ObjectId>();
  private readonly encoder = new ZstdEncoder();
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private streamSize = 0;
  private compressedLength = 0;
  private finished = false;

  constructor(
    readonly algorithm: Algorithm,
    readonly contentType: bigint,
    private readonly sink: (compressed: Buffer) => void,
  ) {}

  /** Record a named reference to another stream or object (e.g. `config:sha256:…`, `composefs.image.v1`). */
  addNamedRef(name: string, id: ObjectId): void {
    if (name.includes("\0")) throw new Error("named ref names cannot contain NUL");
    this.named.set(name, id);
  }

  writeInline(data: Buffer): void {
    if (data.length === 0) return;
    this.streamSize += data.length;
    if (this.pendingLength + data.length > MAX_PENDING_INLINE) {
      this.flushInline();
      if (data.length > MAX_PENDING_INLINE) {
        this.emitInline([data], data.length);
        return;
      }
    }
    this.pending.push(data);
    this.pendingLength += data.length;
  }

  /** Reference an external object of `size` bytes holding the next part of the stream. */
  writeExternal(id: ObjectId, size: number): void {
    this.flushInline();
    const head = Buffer.alloc(8);
    head.writeBigInt64LE(BigInt(this.objectRefs.add(id)));
    this.compress(head);
    this.streamSize += size;
  }

  finish(): SplitStreamResult {
    if (this.finished) throw new Error("splitstream already finished");
    this.finished = true;
    this.flushInline();
    for (const c of this.encoder.end()) this.out(c);

    // Named refs sorted by name; their targets join stream_refs in that order, after any added before.
    const names = [...this.named.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const records = names.map((n) => `${this.streamRefs.add(this.named.get(n) as ObjectId)}:${n}\0`);
    const namedSection = names.length ? zstdCompress(Buffer.from(records.join(""), "utf8")) : Buffer.alloc(0);

    const ds = this.algorithm.digestSize;
    const srStart = HEADER_SIZE + INFO_SIZE;
    const orStart = srStart + this.streamRefs.list.length * ds;
    const nrStart = orStart + this.objectRefs.list.length * ds;
    const stStart = nrStart + namedSection.length;
    const prefix = Buffer.alloc(stStart);
    MAGIC.copy(prefix, 0);
    prefix[11] = 0;
    prefix[14] = this.algorithm.id;
    prefix[15] = this.algorithm.lgBlockSize;
    writeRange(prefix, 16, HEADER_SIZE, HEADER_SIZE + INFO_SIZE);
    writeRange(prefix, 32, srStart, orStart);
    writeRange(prefix, 48, orStart, nrStart);
    writeRange(prefix, 64, stStart, stStart + this.compressedLength);
    writeRange(prefix, 80, nrStart, stStart);
    prefix.writeBigUInt64LE(this.contentType, 96);
    prefix.writeBigUInt64LE(BigInt(this.streamSize), 104);
    this.streamRefs.list.forEach((id, i) => prefix.write(id, srStart + i * ds, "hex"));
    this.objectRefs.list.forEach((id, i) => prefix.write(id, orStart + i * ds, "hex"));
    namedSection.copy(prefix, nrStart);
    return {
      prefix,
      objectRefs: this.objectRefs.list,
      streamRefs: this.streamRefs.list,
      streamSize: this.streamSize,
    };
  }

  private flushInline(): void {
    if (this.pendingLength === 0) return;
    this.emitInline(this.pending, this.pendingLength);
    this.pending = [];
    this.pendingLength = 0;
  }

  private emitInline(parts: Buffer[], length: number): void {
    const head = Buffer.alloc(8);
    head.writeBigInt64LE(-BigInt(length));
    this.compress(head);
    for (const p of parts) this.compress(p);
  }

  private compress(data: Buffer): void {
    for (const c of this.encoder.push(data)) this.out(c);
  }

  private out(c: Buffer): void {
    this.compressedLength += c.length;
    this.sink(c);
  }
}

function writeRange(buf: Buffer, at: number, start: number, end: number): void {
  buf.writeBigUInt64LE(BigInt(start), at);
  buf.writeBigUInt64LE(BigInt(end), at + 8);
}
