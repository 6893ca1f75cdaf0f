// Splitstreams stored in the repository: writing one (inline bytes + references to objects, compressed stream
// spooled so memory stays bounded, then stored as an object itself) and reading one back (header, references,
// named refs, chunk iteration, reassembly with every external object's digest checked).
// Byte format: src/format/splitstream.ts; reference: composefs-repository.md §2.

import * as fs from "node:fs";
import type { Writable } from "node:stream";
import { StratumError, ioError } from "../errors.ts";
import { FsVerityHasher } from "../format/fsverity.ts";
import type { ObjectId } from "../format/object-id.ts";
import {
  ChunkDecoder,
  SplitStreamWriter,
  contentTypeName,
  parseDigests,
  parseHeader,
  parseNamedRefs,
  type SplitStreamHeader,
} from "../format/splitstream.ts";
import { ZstdDecoder, zstdDecompress } from "../format/zstd.ts";
import type { ObjectStore, StoredObject } from "./objects.ts";

const READ_SIZE = 1 << 20;
const SPOOL_MEMORY_LIMIT = 4 << 20;

/** Holds compressed stream bytes: in memory while small, then in an unlinked temporary file. */
class Spool {
  private readonly mem: Buffer[] = [];
  private memLength = 0;
  private file: { fd: number; tmpPath: string | null } | null = null;
  private fileLength = 0;

  constructor(private readonly store: ObjectStore) {}

  write(data: Buffer): void {
    if (!this.file && this.memLength + data.length <= SPOOL_MEMORY_LIMIT) {
      this.mem.push(data);
      this.memLength += data.length;
      return;
    }
    if (!this.file) {
      this.file = this.store.openTemp();
      for (const m of this.mem.splice(0)) this.append(m);
      this.memLength = 0;
    }
    this.append(data);
  }

  private append(data: Buffer): void {
    const f = this.file as { fd: number };
    let off = 0;
    while (off < data.length) off += fs.writeSync(f.fd, data, off, data.length - off, this.fileLength + off);
    this.fileLength += data.length;
  }

  /** Copy everything spooled into `sink`. */
  drainTo(sink: (b: Buffer) => void): void {
    for (const m of this.mem) sink(m);
    if (!this.file) return;
    const buf = Buffer.allocUnsafe(READ_SIZE);
    for (let pos = 0; pos < this.fileLength;) {
      const n = fs.readSync(this.file.fd, buf, 0, buf.length, pos);
      if (n === 0) throw new StratumError("E_IO", "stream spool file is shorter than written");
      sink(buf.subarray(0, n));
      pos += n;
    }
  }

  close(): void {
    if (!this.file) return;
    fs.closeSync(this.file.fd);
    if (this.file.tmpPath) fs.rmSync(this.file.tmpPath, { force: true });
    this.file = null;
  }
}

/** Builds a splitstream in the repository. `finish()` stores it as an object; naming it is the caller's step. */
export class StreamWriter {
  private readonly spool: Spool;
  private readonly writer: SplitStreamWriter;

  constructor(
    private readonly store: ObjectStore,
    contentType: bigint,
  ) {
    this.spool = new Spool(store);
    this.writer = new SplitStreamWriter(store.algorithm, contentType, (c) => this.spool.write(c));
  }

  writeInline(data: Buffer): void {
    this.writer.writeInline(data);
  }

  /** Reference an object already stored in the repository as the next `size` bytes of the stream. */
  writeExternal(id: ObjectId, size: number): void {
    this.writer.writeExternal(id, size);
  }

  /** Store `data` as an object and reference it as the next part of the stream. */
  writeExternalBuffer(data: Buffer): StoredObject {
    const obj = this.store.writeBuffer(data);
    this.writer.writeExternal(obj.id, obj.size);
    return obj;
  }

  addNamedRef(name: string, id: ObjectId): void {
    this.writer.addNamedRef(name, id);
  }

  /** Store the splitstream as an object and return it. */
  finish(): StoredObject & { streamSize: number; objectRefs: readonly ObjectId[] } {
    try {
      const res = this.writer.finish();
      const ow = this.store.createWriter();
      ow.write(res.prefix);
      this.spool.drainTo((b) => ow.write(b));
      return { ...ow.finish(), streamSize: res.streamSize, objectRefs: res.objectRefs };
    } finally {
      this.spool.close();
    }
  }

  abort(): void {
    this.spool.close();
  }
}

/** A splitstream opened for reading. `file` is the object path, `label` names it in messages. */
export class StreamReader {
  readonly header: SplitStreamHeader;
  readonly streamRefs: ObjectId[];
  readonly objectRefs: ObjectId[];
  private named: Map<string, ObjectId> | null = null;

  private constructor(
    private readonly fd: number,
    readonly size: number,
    readonly label: string,
    private readonly store: ObjectStore,
  ) {
    const head = this.pread(0, Math.min(size, 4096));
    this.header = parseHeader(head, size, label);
    if (this.header.algorithm !== store.algorithm)
      throw new StratumError(
        "E_CORRUPT",
        `${label}: splitstream uses ${this.header.algorithm.hash}, the repository ${store.algorithm.hash}`,
      );
    this.streamRefs = parseDigests(this.readRange(this.header.streamRefs), store.algorithm);
    this.objectRefs = parseDigests(this.readRange(this.header.objectRefs), store.algorithm);
  }

  static open(store: ObjectStore, id: ObjectId, label: string, expectedContentType?: bigint): StreamReader {
    const file = store.path(id);
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch (err) {
      throw ioError(err, `${label}: cannot open object ${id}`);
    }
    try {
      const r = new StreamReader(fd, fs.fstatSync(fd).size, label, store);
      if (expectedContentType !== undefined && r.header.contentType !== expectedContentType)
        throw new StratumError(
          "E_CORRUPT",
          `${label}: content type is ${contentTypeName(r.header.contentType)}, expected ${contentTypeName(expectedContentType)}`,
        );
      return r;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get contentType(): bigint {
    return this.header.contentType;
  }

  /** Named references (`config:…`, `<diff_id>`, `composefs.image.v1`, …) → object IDs. */
  namedRefs(): Map<string, ObjectId> {
    if (!this.named) {
      const r = this.header.namedRefs;
      let raw: Buffer = Buffer.alloc(0);
      if (r.end > r.start) {
        try {
          raw = zstdDecompress(this.readRange(r));
        } catch (err) {
          throw new StratumError("E_CORRUPT", `${this.label}: named refs section: ${(err as Error).message}`);
        }
      }
      this.named = parseNamedRefs(raw, this.streamRefs, this.label);
    }
    return this.named;
  }

  /** Iterate the chunks of the stream in order; external chunks are resolved to object IDs. */
  *chunks(): Generator<{ inline: Buffer } | { external: ObjectId }> {
    const dec = new ZstdDecoder();
    const chunkDec = new ChunkDecoder(this.label);
    const { start, end } = this.header.stream;
    const buf = Buffer.allocUnsafe(READ_SIZE);
    for (let pos = start; pos < end;) {
      const n = fs.readSync(this.fd, buf, 0, Math.min(buf.length, end - pos), pos);
      if (n === 0) throw new StratumError("E_CORRUPT", `${this.label}: file ends inside its stream section`);
      pos += n;
      let parts: Buffer[];
      try {
        parts = dec.push(buf.subarray(0, n));
      } catch (err) {
        throw new StratumError("E_CORRUPT", `${this.label}: stream section: ${(err as Error).message}`);
      }
      for (const p of parts) {
        for (const c of chunkDec.push(p)) {
          if (c.kind === "inline") yield { inline: c.data };
          else {
            const id = this.objectRefs[c.index];
            if (id === undefined)
              throw new StratumError(
                "E_CORRUPT",
                `${this.label}: chunk refers to object #${c.index}, only ${this.objectRefs.length} listed`,
              );
            yield { external: id };
          }
        }
      }
    }
    try {
      dec.end();
    } catch (err) {
      throw new StratumError("E_CORRUPT", `${this.label}: stream section: ${(err as Error).message}`);
    }
    chunkDec.end();
  }

  /**
   * Reassemble the stream into `out`, checking every external object against its digest as it is copied.
   * Returns the number of bytes written, which must equal the header's stream size.
   */
  async cat(out: Writable): Promise<number> {
    let total = 0;
    const write = async (b: Buffer): Promise<void> => {
      total += b.length;
      if (!out.write(b)) await new Promise<void>((resolve) => out.once("drain", resolve));
    };
    for (const c of this.chunks()) {
      if ("inline" in c) await write(Buffer.from(c.inline));
      else await this.copyObject(c.external, write);
    }
    if (total !== this.header.streamSize)
      throw new StratumError(
        "E_CORRUPT",
        `${this.label}: reassembled ${total} bytes, header says ${this.header.streamSize}`,
      );
    return total;
  }

  private async copyObject(id: ObjectId, write: (b: Buffer) => Promise<void>): Promise<void> {
    let fd: number;
    try {
      fd = fs.openSync(this.store.path(id), "r");
    } catch (err) {
      throw new StratumError("E_CORRUPT", `${this.label}: referenced object ${id} is missing`, {
        cause: err,
      });
    }
    try {
      const h = new FsVerityHasher(this.store.algorithm);
      for (;;) {
        const buf = Buffer.allocUnsafe(READ_SIZE);
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        await write(buf.subarray(0, n));
      }
      if (h.digestHex() !== id)
        throw new StratumError("E_CORRUPT", `object ${id} (in ${this.label}) does not match its digest`);
    } finally {
      fs.closeSync(fd);
    }
  }

  private readRange(r: { start: number; end: number }): Buffer {
    return this.pread(r.start, r.end - r.start);
  }

  private pread(pos: number, len: number): Buffer {
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = fs.readSync(this.fd, buf, got, len - got, pos + got);
      if (n === 0) throw new StratumError("E_CORRUPT", `${this.label}: file is truncated`);
      got += n;
    }
    return buf;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
