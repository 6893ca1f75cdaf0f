// An index of a tar FILE built by seeking (docs/pull.md "Archives, layouts and daemons"): every header is read
// with a positional read and every payload skipped, so indexing costs one small read per entry and memory in
// proportion to the number of entries, whatever the archive's size. Entries are then read back by offset
// (`stream`, `readAll`) without extracting anything.
//
// Header decoding is src/format/tar.ts's (`parseHeader`, `parsePaxRecords`): ustar prefixes, GNU `L`/`K` long
// names, PAX `path`/`linkpath`/`size` (local and global), base-256 sizes. Names are normalised lexically
// (`./a//b/` → `a/b`); an absolute name or one whose `..` climbs above the archive root makes the whole archive
// E_UNSAFE_PATH. Symbolic and hard links are resolved inside the archive only (podman writes its legacy
// `<id>/layer.tar` entries as symlinks to `../<diffid>.tar`; dockerd links a repeated layer to its first copy): a
// link target that is absolute or climbs out of the archive is E_UNSAFE_PATH, and so is a loop.

import { createHash } from "node:crypto";
import * as fsp from "node:fs/promises";
import { isErrno, ioError, StratumError } from "../../errors.ts";
import {
  BLOCK_SIZE,
  MAX_EXTENSION_SIZE,
  parseHeader,
  parsePaxRecords,
  TarFormatError,
  type PaxRecord,
  type TarHeader,
} from "../../format/tar.ts";

export type TarEntryKind = "file" | "dir" | "symlink" | "hardlink" | "other";

export interface TarIndexEntry {
  /** Normalised name: no leading `./` or `/`, no empty, `.` or `..` components, no trailing `/`. */
  readonly name: string;
  readonly kind: TarEntryKind;
  /** The header's typeflag character. */
  readonly typeflag: string;
  /** Archive offset of the entry's first header block (extension headers included). */
  readonly headerOffset: number;
  /** Archive offset of the payload. */
  readonly offset: number;
  /** Payload size in bytes. */
  readonly size: number;
  /** Link target as written (symlinks: relative to the link's directory; hard links: to the archive root). */
  readonly linkTarget?: string;
}

export interface ReadRangeOptions {
  /** Called after each chunk with its length. */
  onBytes?: (n: number) => void;
  /** Stops the read; the iterator then throws the signal's reason. */
  signal?: AbortSignal;
  /** Largest chunk yielded (default 1 MiB). */
  chunkSize?: number;
}

/** Symlink and hard-link hops allowed while resolving one name (Linux allows 40). */
const MAX_LINK_HOPS = 40;
const DEFAULT_CHUNK = 1 << 20;
/** Header reads go through a window of this size, so runs of small entries cost one read. */
const WINDOW = 64 << 10;

function padding(size: number): number {
  return (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
}

/**
 * Lexically normalise a name inside an archive: `./a//b/` → `a/b`, `a/../b` → `b`. Returns undefined when the
 * name is absolute or its `..` components climb above the root. The root itself is "".
 */
export function normalizeArchivePath(name: string): string | undefined {
  if (name.startsWith("/")) return undefined;
  const out: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) return undefined;
      out.pop();
    } else out.push(part);
  }
  return out.join("/");
}

/**
 * Read `length` bytes at `start` of an open file as a stream of chunks (each a fresh Buffer). A file that ends
 * early is E_BAD_INPUT naming `label`.
 */
export async function* readFileRange(
  fh: fsp.FileHandle,
  start: number,
  length: number,
  label: string,
  opts: ReadRangeOptions = {},
): AsyncGenerator<Buffer> {
  const chunk = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK);
  let pos = start;
  const end = start + length;
  while (pos < end) {
    opts.signal?.throwIfAborted();
    const want = Math.min(chunk, end - pos);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      let n: number;
      try {
        ({ bytesRead: n } = await fh.read(buf, got, want - got, pos + got));
      } catch (err) {
        throw ioError(err, `${label}: read at offset ${pos + got}`);
      }
      if (n === 0)
        throw new StratumError(
          "E_BAD_INPUT",
          `${label}: the file ends at offset ${pos + got}, ${end - pos - got} bytes short (truncated or changed while reading)`,
        );
      got += n;
    }
    pos += want;
    opts.onBytes?.(want);
    yield buf;
  }
}

/** "<algorithm>:<hex>" of a file range, read in 1 MiB chunks. */
export async function hashFileRange(
  fh: fsp.FileHandle,
  start: number,
  length: number,
  label: string,
  algorithm: "sha256" | "sha512" = "sha256",
): Promise<string> {
  const h = createHash(algorithm);
  for await (const chunk of readFileRange(fh, start, length, label)) h.update(chunk);
  return `${algorithm}:${h.digest("hex")}`;
}

/** Read a whole small file range into memory; E_BAD_INPUT when it is larger than `max`. */
export async function readRangeAll(
  fh: fsp.FileHandle,
  start: number,
  length: number,
  max: number,
  label: string,
): Promise<Buffer> {
  if (length > max)
    throw new StratumError("E_BAD_INPUT", `${label}: ${length} bytes, more than the ${max} allowed`);
  const parts: Buffer[] = [];
  for await (const c of readFileRange(fh, start, length, label)) parts.push(c);
  return Buffer.concat(parts);
}

/** Reads a file by offset through a small window (for headers). */
class WindowReader {
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly fh: fsp.FileHandle,
    private readonly fileSize: number,
    private readonly label: string,
  ) {}

  /** `n` bytes at `offset` (the caller checked they are inside the file); a view valid until the next call. */
  async read(offset: number, n: number): Promise<Buffer> {
    if (offset >= this.start && offset + n <= this.start + this.buf.length)
      return this.buf.subarray(offset - this.start, offset - this.start + n);
    const len = Math.min(Math.max(n, WINDOW), this.fileSize - offset);
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      let r: number;
      try {
        ({ bytesRead: r } = await this.fh.read(buf, got, len - got, offset + got));
      } catch (err) {
        throw ioError(err, `${this.label}: read at offset ${offset + got}`);
      }
      if (r === 0) break;
      got += r;
    }
    if (got < n)
      throw new StratumError(
        "E_BAD_INPUT",
        `${this.label}: the file ends at offset ${offset + got} (changed while reading?)`,
      );
    this.buf = buf.subarray(0, got);
    this.start = offset;
    return this.buf.subarray(0, n);
  }
}

function kindOf(typeflag: string, sparse: boolean): TarEntryKind {
  if (sparse) return "other";
  switch (typeflag) {
    case "0":
    case "\0":
    case "7":
      return "file";
    case "1":
      return "hardlink";
    case "2":
      return "symlink";
    case "5":
      return "dir";
    default:
      return "other";
  }
}

/** The compression a file's first bytes announce (gzip, zstd, bzip2, xz), or undefined for none of them. */
export function sniffCompression(head: Buffer): "gzip" | "zstd" | "bzip2" | "xz" | undefined {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 3 && head.toString("latin1", 0, 3) === "BZh") return "bzip2";
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])))
    return "xz";
  return undefined;
}

/** An indexed tar file; entries are read back by offset from one open file handle until close(). */
export class TarIndex {
  private constructor(
    /** The file as named by the caller (used in messages). */
    readonly file: string,
    /** The file's size in bytes when it was indexed. */
    readonly fileSize: number,
    /** `dev:ino:size:mtime` of the file when indexed: keys caches of what was computed from it. */
    readonly identity: string,
    private readonly fh: fsp.FileHandle,
    private readonly byName: Map<string, TarIndexEntry>,
  ) {}

  /**
   * Index the tar file `file`. Errors: E_NOT_FOUND (no such file), E_USAGE (a directory), E_UNSUPPORTED (a
   * compressed tar: seeking needs a plain one), E_BAD_INPUT (not a tar, a bad header, truncated), E_UNSAFE_PATH
   * (an entry named outside the archive). Every message names the file.
   */
  static async open(file: string): Promise<TarIndex> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, "r");
    } catch (err) {
      if (isErrno(err, "ENOENT"))
        throw new StratumError("E_NOT_FOUND", `${file}: no such file`, { cause: err });
      throw ioError(err, `${file}: open`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (st.isDirectory()) throw new StratumError("E_USAGE", `${file}: is a directory, not a tar archive`);
      if (!st.isFile()) throw new StratumError("E_USAGE", `${file}: not a regular file`);
      const size = Number(st.size);
      const byName = await indexEntries(fh, size, file);
      const identity = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      return new TarIndex(file, size, identity, fh, byName);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Number of distinct names. */
  get size(): number {
    return this.byName.size;
  }

  /** Every entry (for a name written more than once, the last one, at its position), in archive order. */
  entries(): IterableIterator<TarIndexEntry> {
    return this.byName.values();
  }

  /** The entry of exactly this (normalised) name, links not followed. */
  entry(name: string): TarIndexEntry | undefined {
    const n = normalizeArchivePath(name);
    return n === undefined ? undefined : this.byName.get(n);
  }

  /**
   * Follow `name` through symbolic links (of any component) and hard links to a regular file inside the archive.
   * Returns undefined when nothing of that name exists. E_UNSAFE_PATH for a name or link leading outside the
   * archive, or a loop; E_BAD_INPUT when the name is a directory or a special file. `what` describes the name
   * in messages (e.g. `manifest.json Layers[2]`).
   */
  lookup(name: string, what = `"${name}"`): TarIndexEntry | undefined {
    const unsafe = (why: string): StratumError =>
      new StratumError("E_UNSAFE_PATH", `${this.file}: ${what}: ${why}`);
    const start = normalizeArchivePath(name);
    if (start === undefined) throw unsafe(`"${name}" points outside the archive`);
    let pending = start === "" ? [] : start.split("/");
    let hops = 0;
    for (;;) {
      // Walk component by component so a symlinked directory on the way is followed too.
      const done: string[] = [];
      let restarted = false;
      for (let i = 0; i < pending.length; i++) {
        done.push(pending[i]);
        const e = this.byName.get(done.join("/"));
        if (e === undefined) continue;
        const last = i === pending.length - 1;
        if (e.kind === "symlink") {
          if (++hops > MAX_LINK_HOPS) throw unsafe("too many levels of symbolic links (a loop?)");
          const target = e.linkTarget ?? "";
          if (target.startsWith("/"))
            throw unsafe(
              `symbolic link "${e.name}" → "${target}" is absolute: it points outside the archive`,
            );
          const joined = normalizeArchivePath([...done.slice(0, -1), target].join("/"));
          if (joined === undefined)
            throw unsafe(`symbolic link "${e.name}" → "${target}" points outside the archive`);
          pending = [...(joined === "" ? [] : joined.split("/")), ...pending.slice(i + 1)];
          restarted = true;
          break;
        }
        if (last && e.kind === "hardlink") {
          if (++hops > MAX_LINK_HOPS) throw unsafe("too many levels of links (a loop?)");
          const target = e.linkTarget ?? "";
          const t = normalizeArchivePath(target);
          if (t === undefined || target.startsWith("/"))
            throw unsafe(`hard link "${e.name}" → "${target}" points outside the archive`);
          pending = t === "" ? [] : t.split("/");
          restarted = true;
          break;
        }
      }
      if (restarted) continue;
      const e = this.byName.get(pending.join("/"));
      if (e === undefined) return undefined;
      if (e.kind === "file") return e;
      throw new StratumError(
        "E_BAD_INPUT",
        `${this.file}: ${what}: "${e.name}" is ${e.kind === "dir" ? "a directory" : "not a regular file"}`,
      );
    }
  }

  /** As lookup(), but a missing name is E_BAD_INPUT ("… is missing from the archive"). */
  resolve(name: string, what = `"${name}"`): TarIndexEntry {
    const e = this.lookup(name, what);
    if (e === undefined)
      throw new StratumError("E_BAD_INPUT", `${this.file}: ${what}: "${name}" is missing from the archive`);
    return e;
  }

  /** The entry's payload as chunks of at most `opts.chunkSize` (1 MiB). */
  stream(entry: TarIndexEntry, opts: ReadRangeOptions = {}): AsyncGenerator<Buffer> {
    return readFileRange(this.fh, entry.offset, entry.size, `${this.file}: "${entry.name}"`, opts);
  }

  /** The first `n` bytes of the payload (fewer when it is shorter). */
  async head(entry: TarIndexEntry, n: number): Promise<Buffer> {
    return readRangeAll(this.fh, entry.offset, Math.min(n, entry.size), n, `${this.file}: "${entry.name}"`);
  }

  /** The whole payload, at most `max` bytes (E_BAD_INPUT beyond). */
  async readAll(entry: TarIndexEntry, max: number): Promise<Buffer> {
    return readRangeAll(this.fh, entry.offset, entry.size, max, `${this.file}: "${entry.name}"`);
  }

  /** "sha256:<hex>" (or sha512) of the payload. */
  async digest(entry: TarIndexEntry, algorithm: "sha256" | "sha512" = "sha256"): Promise<string> {
    return hashFileRange(this.fh, entry.offset, entry.size, `${this.file}: "${entry.name}"`, algorithm);
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

async function indexEntries(
  fh: fsp.FileHandle,
  fileSize: number,
  file: string,
): Promise<Map<string, TarIndexEntry>> {
  const reader = new WindowReader(fh, fileSize, file);
  const byName = new Map<string, TarIndexEntry>();
  const bad = (why: string): StratumError => new StratumError("E_BAD_INPUT", `${file}: ${why}`);
  const globalPax = new Map<string, Buffer>();
  let localPax: Map<string, Buffer> | null = null;
  let longName: Buffer | null = null;
  let longLink: Buffer | null = null;
  let entryStart = -1;
  let off = 0;
  if (fileSize === 0) throw bad("empty file, not a tar archive");
  for (;;) {
    if (off >= fileSize) {
      if (entryStart >= 0)
        throw bad(`truncated tar: EOF after the extension headers at offset ${entryStart}`);
      break; // no end-of-archive blocks: tolerated
    }
    if (fileSize - off < BLOCK_SIZE)
      throw bad(`truncated tar: EOF at offset ${fileSize} inside the header block at offset ${off}`);
    const block = await reader.read(off, BLOCK_SIZE);
    if (block.every((b) => b === 0)) {
      if (entryStart >= 0) throw bad(`end-of-archive block at offset ${off} follows extension headers`);
      break;
    }
    let h: TarHeader;
    try {
      h = parseHeader(block, off);
    } catch (err) {
      if (off === 0 && err instanceof TarFormatError) {
        const magic = sniffCompression(block);
        if (magic !== undefined)
          throw new StratumError(
            "E_UNSUPPORTED",
            `${file}: a ${magic}-compressed file; archives are read by seeking, so decompress it first`,
            { cause: err },
          );
        throw bad("not a tar archive (the first block is not a tar header)");
      }
      if (err instanceof TarFormatError) throw bad(err.message);
      throw err;
    }
    if (entryStart < 0) entryStart = off;
    const dataOff = off + BLOCK_SIZE;
    const t = h.type;
    if (t === "x" || t === "X" || t === "g" || t === "L" || t === "K") {
      if (h.size > MAX_EXTENSION_SIZE)
        throw bad(`tar extension header at offset ${off} is too large (${h.size} bytes)`);
      if (dataOff + h.size > fileSize)
        throw bad(`truncated tar: EOF at offset ${fileSize} inside the extension header at offset ${off}`);
      const data = Buffer.from(await reader.read(dataOff, h.size));
      if (t === "L" || t === "K") {
        const nul = data.indexOf(0);
        const value = nul < 0 ? data : data.subarray(0, nul);
        if (t === "L") longName = value;
        else longLink = value;
      } else {
        let records: PaxRecord[];
        try {
          records = parsePaxRecords(data, dataOff);
        } catch (err) {
          if (err instanceof TarFormatError) throw bad(err.message);
          throw err;
        }
        if (t === "g") {
          for (const r of records) {
            if (r.value.length === 0) globalPax.delete(r.key);
            else globalPax.set(r.key, r.value);
          }
        } else {
          localPax ??= new Map<string, Buffer>();
          for (const r of records) localPax.set(r.key, r.value);
        }
      }
      off = dataOff + h.size + padding(h.size);
      if (t === "g") entryStart = -1;
      continue;
    }
    const pax = (key: string): Buffer | undefined => {
      const v = localPax?.get(key) ?? globalPax.get(key);
      return v !== undefined && v.length > 0 ? v : undefined;
    };
    const rawName = (pax("path") ?? longName ?? h.name).toString("utf8");
    const rawLink = (pax("linkpath") ?? longLink ?? h.linkName).toString("utf8");
    let size = h.size;
    const paxSize = pax("size");
    if (paxSize !== undefined) {
      const s = paxSize.toString("latin1");
      if (!/^\d{1,15}$/.test(s)) throw bad(`malformed PAX size "${s}" for the entry at offset ${entryStart}`);
      size = Number(s);
    }
    let sparse = t === "S";
    for (const k of [...(localPax?.keys() ?? []), ...globalPax.keys()])
      if (k.startsWith("GNU.sparse.")) sparse = true;
    const name = normalizeArchivePath(rawName);
    if (name === undefined)
      throw new StratumError(
        "E_UNSAFE_PATH",
        `${file}: the entry "${rawName}" at offset ${entryStart} is named outside the archive (absolute or "..")`,
      );
    if (dataOff + size > fileSize)
      throw bad(
        `truncated tar: EOF at offset ${fileSize} inside the payload of "${rawName}" ` +
          `(header at offset ${entryStart}, ${dataOff + size - fileSize} more bytes expected)`,
      );
    const kind = kindOf(t, sparse);
    if (name !== "") {
      const e: TarIndexEntry = {
        name,
        kind,
        typeflag: t,
        headerOffset: entryStart,
        offset: dataOff,
        size,
        ...(kind === "symlink" || kind === "hardlink" ? { linkTarget: rawLink } : {}),
      };
      // A later entry of the same name replaces the earlier one, as extraction would.
      byName.delete(name);
      byName.set(name, e);
    }
    localPax = null;
    longName = null;
    longLink = null;
    entryStart = -1;
    off = dataOff + size + padding(size);
  }
  return byName;
}
