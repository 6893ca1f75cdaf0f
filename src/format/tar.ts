// Sans-IO tar reader and the composefs tar splitter.
//
// Implements the split rule of composefs-rs `crates/composefs-oci/src/tar.rs::split_async`
// (shared/reference/composefs-repository.md §2.3) on top of an in-house tar reader covering what
// shared/reference/node-ecosystem.md §3 asks for: checksum check (unsigned and old signed sums), ustar prefix,
// GNU `L`/`K` long names, PAX `x`/`g` records kept as Buffers (`path linkpath size uid gid uname gname mtime`,
// `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`), GNU base-256 numbers, nanosecond PAX mtimes, and detection of GNU
// sparse entries (typeflag `S` with its extension blocks, PAX `GNU.sparse.*` 0.0/0.1/1.0). Sparse maps are not
// decoded: sparse entries are reported (`sparse: true`) and kept inline so the archive still round-trips.
//
// Pure byte code: no I/O and no Node streams. `TarSplitter.push()` takes whatever chunks the caller has and
// returns events whose buffers are views (`subarray`) of the pushed chunk — they are valid as long as the caller
// keeps that chunk unchanged. Only a header block that straddles two chunks and extension-header data (PAX,
// GNU long names, capped at MAX_EXTENSION_SIZE) are copied. Entry fields (path, xattrs, …) are independent copies.
//
// Payload sizes follow the header (or PAX `size`) for every typeflag, as GNU tar and tar-rs do: a hard link or
// device with a nonzero size is followed by that many payload bytes, which stay inline.

import { StratumError } from "../errors.ts";

export const BLOCK_SIZE = 512;
/** Regular-file payloads larger than this become external objects (composefs `INLINE_CONTENT_MAX_V0`). */
export const INLINE_CONTENT_MAX = 64;
/** Largest PAX / GNU long-name extension payload we buffer. */
export const MAX_EXTENSION_SIZE = 1 << 20;

/** A malformed or truncated tar archive. `offset` is the byte offset in the archive where the problem is. */
export class TarFormatError extends StratumError {
  readonly offset: number;

  constructor(message: string, offset: number) {
    super("E_BAD_INPUT", message);
    this.name = "TarFormatError";
    this.offset = offset;
  }
}

export interface TarEntry {
  /** Typeflag character: "0", "\0", "1" … "7", "S", "D", "V", … (extension types x/g/L/K never appear here). */
  type: string;
  /** Raw path bytes: PAX `path`, else GNU `L`, else ustar prefix + "/" + name. Sparse: GNU.sparse.name. */
  path: Buffer;
  /** Raw link target: PAX `linkpath`, else GNU `K`, else the header linkname. */
  linkPath: Buffer;
  /** Permission and special bits only (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Payload bytes that follow the header in the archive (PAX `size` wins). For sparse entries: stored bytes. */
  size: number;
  mtimeSec: number;
  /** 0..999999999, from the PAX `mtime` fraction (exact; negative times are normalised to sec - 1, 1e9 - ns). */
  mtimeNsec: number;
  uname: string;
  gname: string;
  /** Only parsed for character and block devices ("3", "4"); 0 otherwise. */
  devMajor: number;
  devMinor: number;
  /** From PAX `SCHILY.xattr.<name>` (raw bytes) and `LIBARCHIVE.xattr.<urlencoded name>` (base64). */
  xattrs: Map<string, Buffer>;
  /** GNU `S` typeflag or PAX `GNU.sparse.*` keys. The payload is then sparse data (and, for 1.0, its map). */
  sparse: boolean;
  /** Archive offset of this entry's first header block, extension headers (x, g, L, K) included. */
  headerOffset: number;
  /** Effective PAX records for this entry (global then local), values as raw bytes. Empty without PAX. */
  pax: Map<string, Buffer>;
}

export type TarEvent =
  | { kind: "inline"; data: Buffer }
  | { kind: "entry"; entry: TarEntry }
  | { kind: "external"; size: number }
  | { kind: "data"; data: Buffer }
  | { kind: "external-end" };

/** A header block decoded on its own (no extension headers applied). */
export interface TarHeader {
  type: string;
  /** name, joined with the ustar prefix when there is one. */
  name: Buffer;
  linkName: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  format: "ustar" | "gnu" | "v7";
  /** GNU `S` header whose sparse map continues in extension blocks. */
  gnuSparseExtended: boolean;
}

export interface PaxRecord {
  key: string;
  value: Buffer;
}

// ---------------------------------------------------------------------------------------------------------------
// Field helpers

const SPACE = 0x20;
const NUL = 0;

function nulEnd(buf: Buffer, start: number, end: number): number {
  for (let i = start; i < end; i++) if (buf[i] === NUL) return i;
  return end;
}

function copyBytes(buf: Buffer, start: number, end: number): Buffer {
  const out: Buffer = Buffer.allocUnsafe(end - start);
  buf.copy(out, 0, start, end);
  return out;
}

function allZero(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Decode a numeric header field: octal digits with optional leading spaces/NULs, ended by space, NUL or the end
 * of the field (GNU rule), or GNU base-256 (first byte 0x80 positive, 0xff negative, two's complement). Values
 * beyond 2^53 lose precision. Returns NaN for a malformed field.
 */
function numberAt(buf: Buffer, start: number, end: number): number {
  const first = buf[start];
  if (first & 0x80) {
    const negative = (first & 0x40) !== 0;
    let v = 0;
    for (let i = start; i < end; i++) {
      let b = i === start ? first & 0x7f : buf[i];
      if (negative) b = i === start ? ~b & 0x7f : ~b & 0xff;
      v = v * 256 + b;
    }
    return negative ? -(v + 1) : v;
  }
  let i = start;
  while (i < end && (buf[i] === SPACE || buf[i] === NUL)) i++;
  let v = 0;
  while (i < end) {
    const c = buf[i];
    if (c < 0x30 || c > 0x37) break;
    v = v * 8 + (c - 0x30);
    i++;
  }
  if (i < end && buf[i] !== SPACE && buf[i] !== NUL) return NaN;
  return v;
}

/** Decode a numeric tar header field (octal with spaces/NULs, or GNU base-256 including negative values). */
export function decodeNumber(field: Buffer, offset = 0): number {
  const v = field.length === 0 ? 0 : numberAt(field, 0, field.length);
  if (Number.isNaN(v)) {
    throw new TarFormatError(`invalid numeric field in tar header at offset ${offset}`, offset);
  }
  return v;
}

function fieldNumber(
  buf: Buffer,
  at: number,
  fieldStart: number,
  len: number,
  what: string,
  offset: number,
): number {
  const v = numberAt(buf, at + fieldStart, at + fieldStart + len);
  if (Number.isNaN(v))
    throw new TarFormatError(`invalid ${what} field in tar header at offset ${offset}`, offset);
  return v;
}

function checksumOk(buf: Buffer, at: number): boolean {
  let sum = 0;
  for (let i = at, e = at + BLOCK_SIZE; i < e; i++) sum += buf[i];
  let field = 0;
  for (let i = at + 148; i < at + 156; i++) field += buf[i];
  const stored = numberAt(buf, at + 148, at + 156);
  if (Number.isNaN(stored)) return false;
  const unsigned = sum - field + 8 * SPACE;
  if (stored === unsigned) return true;
  // Some old tars (and Sun's) summed signed chars.
  let signed = 0;
  for (let i = at, e = at + BLOCK_SIZE; i < e; i++) {
    if (i >= at + 148 && i < at + 156) signed += SPACE;
    else signed += (buf[i] << 24) >> 24;
  }
  return stored === signed;
}

/** True when the 512-byte header block's checksum matches its unsigned (or old-style signed) byte sum. */
export function checksumMatches(block: Buffer): boolean {
  if (block.length < BLOCK_SIZE) return false;
  return checksumOk(block, 0);
}

/** True for an all-zero 512-byte block (end-of-archive marker). */
export function isZeroBlock(block: Buffer): boolean {
  return block.length >= BLOCK_SIZE && allZero(block, 0, BLOCK_SIZE);
}

function formatAt(buf: Buffer, at: number): "ustar" | "gnu" | "v7" {
  const m = at + 257;
  if (
    buf[m] !== 0x75 ||
    buf[m + 1] !== 0x73 ||
    buf[m + 2] !== 0x74 ||
    buf[m + 3] !== 0x61 ||
    buf[m + 4] !== 0x72
  ) {
    return "v7";
  }
  if (buf[m + 5] === NUL) return "ustar";
  if (buf[m + 5] === SPACE && buf[m + 6] === SPACE && buf[m + 7] === NUL) return "gnu";
  return "v7";
}

function parseHeaderAt(buf: Buffer, at: number, offset: number): TarHeader {
  if (!checksumOk(buf, at)) throw new TarFormatError(`bad tar header checksum at offset ${offset}`, offset);
  const type = String.fromCharCode(buf[at + 156]);
  const format = formatAt(buf, at);
  const nameEnd = nulEnd(buf, at, at + 100);
  let name: Buffer;
  // ustar prefix (star archives end the prefix at 476 and put "tar\0" at 508). GNU uses that area for times.
  const prefixEnd =
    format !== "ustar"
      ? at + 345
      : nulEnd(
          buf,
          at + 345,
          buf[at + 508] === 0x74 && buf[at + 509] === 0x61 && buf[at + 510] === 0x72 && buf[at + 511] === 0
            ? at + 476
            : at + 500,
        );
  if (prefixEnd > at + 345) {
    name = Buffer.allocUnsafe(prefixEnd - (at + 345) + 1 + nameEnd - at);
    let n = buf.copy(name, 0, at + 345, prefixEnd);
    name[n++] = 0x2f;
    buf.copy(name, n, at, nameEnd);
  } else {
    name = copyBytes(buf, at, nameEnd);
  }
  const linkName = copyBytes(buf, at + 157, nulEnd(buf, at + 157, at + 257));
  const mode = fieldNumber(buf, at, 100, 8, "mode", offset);
  const uid = fieldNumber(buf, at, 108, 8, "uid", offset);
  const gid = fieldNumber(buf, at, 116, 8, "gid", offset);
  const size = fieldNumber(buf, at, 124, 12, "size", offset);
  const mtime = fieldNumber(buf, at, 136, 12, "mtime", offset);
  if (uid < 0 || gid < 0) {
    throw new TarFormatError(`negative uid/gid in tar header at offset ${offset}`, offset);
  }
  checkSize(size, offset);
  let uname = "";
  let gname = "";
  let devMajor = 0;
  let devMinor = 0;
  if (format !== "v7") {
    uname = buf.toString("utf8", at + 265, nulEnd(buf, at + 265, at + 297));
    gname = buf.toString("utf8", at + 297, nulEnd(buf, at + 297, at + 329));
    if (type === "3" || type === "4") {
      devMajor = fieldNumber(buf, at, 329, 8, "devmajor", offset);
      devMinor = fieldNumber(buf, at, 337, 8, "devminor", offset);
    }
  }
  const gnuSparseExtended = format === "gnu" && type === "S" && buf[at + 482] !== 0;
  return {
    type,
    name,
    linkName,
    mode: mode & 0o7777,
    uid,
    gid,
    size,
    mtime,
    uname,
    gname,
    devMajor,
    devMinor,
    format,
    gnuSparseExtended,
  };
}

function checkSize(size: number, offset: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new TarFormatError(`absurd entry size ${size} in tar header at offset ${offset}`, offset);
  }
}

/**
 * Decode one 512-byte header block after verifying its checksum; `offset` is its archive offset (for errors).
 * Throws TarFormatError on a bad checksum or malformed numeric field. Does not recognise end-of-archive blocks.
 */
export function parseHeader(block: Buffer, offset = 0): TarHeader {
  if (block.length < BLOCK_SIZE) {
    throw new TarFormatError(`truncated tar: short header at offset ${offset}`, offset);
  }
  return parseHeaderAt(block, 0, offset);
}

/**
 * Parse PAX extended-header records `"<len> <key>=<value>\n"`. `len` counts the whole record; it must land exactly
 * on the newline. Values are raw bytes; keys are decoded as UTF-8. Trailing NUL padding is tolerated. `offset` is
 * the archive offset of `data` (for errors).
 */
export function parsePaxRecords(data: Buffer, offset = 0): PaxRecord[] {
  const records: PaxRecord[] = [];
  let p = 0;
  while (p < data.length) {
    if (data[p] === NUL && allZero(data, p, data.length)) break;
    const bad = (why: string): TarFormatError =>
      new TarFormatError(`malformed PAX record at offset ${offset + p}: ${why}`, offset + p);
    let q = p;
    let len = 0;
    while (q < data.length && data[q] >= 0x30 && data[q] <= 0x39 && len <= data.length) {
      len = len * 10 + (data[q] - 0x30);
      q++;
    }
    if (q === p || q >= data.length || data[q] !== SPACE) throw bad("bad length field");
    const end = p + len;
    if (len <= q - p + 1 || end > data.length) throw bad(`length ${len} does not fit the data`);
    if (data[end - 1] !== 0x0a) throw bad("record does not end with a newline at its stated length");
    const keyStart = q + 1;
    let eq = keyStart;
    while (eq < end - 1 && data[eq] !== 0x3d) eq++;
    if (eq >= end - 1 || eq === keyStart) throw bad("missing key or '='");
    records.push({ key: data.toString("utf8", keyStart, eq), value: copyBytes(data, eq + 1, end - 1) });
    p = end;
  }
  return records;
}

/** Parse a PAX time value `[-]<sec>[.<fraction>]` exactly into seconds and nanoseconds (0..999999999). */
export function parsePaxTime(value: Buffer, offset = 0): { sec: number; nsec: number } {
  let i = 0;
  const negative = value[0] === 0x2d;
  if (negative) i++;
  let sec = 0;
  let intDigits = 0;
  while (i < value.length && value[i] >= 0x30 && value[i] <= 0x39) {
    sec = sec * 10 + (value[i] - 0x30);
    i++;
    intDigits++;
  }
  let nsec = 0;
  let fracDigits = 0;
  if (i < value.length && value[i] === 0x2e) {
    i++;
    while (i < value.length && value[i] >= 0x30 && value[i] <= 0x39) {
      if (fracDigits < 9) nsec = nsec * 10 + (value[i] - 0x30);
      fracDigits++;
      i++;
    }
    for (let k = fracDigits; k < 9; k++) nsec *= 10;
  }
  if (i !== value.length || intDigits + fracDigits === 0) {
    throw new TarFormatError(`malformed PAX time "${value.toString("latin1")}" at offset ${offset}`, offset);
  }
  if (!negative) return { sec, nsec };
  if (nsec === 0) return { sec: sec === 0 ? 0 : -sec, nsec: 0 };
  return { sec: -sec - 1, nsec: 1_000_000_000 - nsec };
}

function paxDecimal(value: Buffer, key: string, offset: number): number {
  let v = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c < 0x30 || c > 0x39) {
      throw new TarFormatError(
        `malformed PAX ${key} "${value.toString("latin1")}" at offset ${offset}`,
        offset,
      );
    }
    v = v * 10 + (c - 0x30);
  }
  if (value.length === 0 || !Number.isSafeInteger(v)) {
    throw new TarFormatError(`absurd PAX ${key} "${value.toString("latin1")}" at offset ${offset}`, offset);
  }
  return v;
}

function percentDecode(s: string): string {
  if (!s.includes("%")) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && i + 2 < s.length && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(s[i], "utf8")) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

const SCHILY_XATTR = "SCHILY.xattr.";
const LIBARCHIVE_XATTR = "LIBARCHIVE.xattr.";
const GNU_SPARSE = "GNU.sparse.";

/** GNU `L`/`K` payload: the name up to its first NUL. */
function longNameValue(data: Buffer): Buffer {
  return copyBytes(data, 0, nulEnd(data, 0, data.length));
}

function isRegularType(type: string): boolean {
  return type === "0" || type === "\0" || type === "7";
}

function padding(size: number): number {
  return (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
}

// ---------------------------------------------------------------------------------------------------------------
// The splitter

const ST_HEADER = 0;
const ST_SPARSE_EXT = 1;
const ST_EXT_DATA = 2;
const ST_DATA = 3;
const ST_SKIP = 4;
const ST_TRAILER = 5;

const EMPTY: Buffer = Buffer.alloc(0);

/**
 * Push parser that splits a tar stream by the composefs rule. Every input byte is emitted exactly once, in
 * order, in an `inline` event or (between `external` and `external-end`) a `data` event. Headers, extension
 * headers, small payloads, non-regular payloads, sparse entries, padding and everything from the first zero block
 * to EOF are inline; payloads of regular non-sparse files larger than INLINE_CONTENT_MAX are external.
 * Inline bytes are emitted as soon as they are consumed, so an `entry` event always follows all of its header
 * bytes. After a TarFormatError the splitter is unusable.
 */
export class TarSplitter {
  private state = ST_HEADER;
  /** Archive offset of the first byte of the chunk being pushed (= bytes consumed before it). */
  private base = 0;
  private readonly stage: Buffer = Buffer.alloc(BLOCK_SIZE);
  private staged = 0;
  private blockStart = 0;
  /** headerOffset of the entry being assembled, or -1 at an entry boundary. */
  private entryStart = -1;
  private localPending = false;
  private readonly globalPax = new Map<string, Buffer>();
  private localPax: Map<string, Buffer> | null = null;
  private longName: Buffer | null = null;
  private longLink: Buffer | null = null;
  private extType = "";
  private extBuf: Buffer = EMPTY;
  private extFill = 0;
  private extStart = 0;
  private remaining = 0;
  private padAfter = 0;
  private sparseEntry: TarEntry | null = null;
  private current: TarEntry | null = null;
  private ended = false;

  /** Number of bytes consumed so far. */
  get offset(): number {
    return this.base;
  }

  push(chunk: Buffer): TarEvent[] {
    if (this.ended) throw new Error("TarSplitter.push() called after end()");
    const events: TarEvent[] = [];
    const len = chunk.length;
    let pos = 0;
    let run = 0;
    while (pos < len) {
      switch (this.state) {
        case ST_TRAILER:
          pos = len;
          break;
        case ST_SKIP: {
          const n = Math.min(this.remaining, len - pos);
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = ST_HEADER;
          break;
        }
        case ST_DATA: {
          if (pos > run) events.push({ kind: "inline", data: chunk.subarray(run, pos) });
          const n = Math.min(this.remaining, len - pos);
          events.push({ kind: "data", data: chunk.subarray(pos, pos + n) });
          pos += n;
          run = pos;
          this.remaining -= n;
          if (this.remaining === 0) {
            events.push({ kind: "external-end" });
            this.skip(this.padAfter);
          }
          break;
        }
        case ST_EXT_DATA: {
          const n = Math.min(this.remaining, len - pos);
          const want = this.extBuf.length - this.extFill;
          if (want > 0) this.extFill += chunk.copy(this.extBuf, this.extFill, pos, pos + Math.min(n, want));
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.finishExtension();
            this.state = ST_HEADER;
          }
          break;
        }
        default: {
          let buf: Buffer;
          let at: number;
          if (this.staged === 0 && len - pos >= BLOCK_SIZE) {
            buf = chunk;
            at = pos;
            this.blockStart = this.base + pos;
            pos += BLOCK_SIZE;
          } else {
            if (this.staged === 0) this.blockStart = this.base + pos;
            const n = Math.min(BLOCK_SIZE - this.staged, len - pos);
            chunk.copy(this.stage, this.staged, pos, pos + n);
            this.staged += n;
            pos += n;
            if (this.staged < BLOCK_SIZE) break;
            this.staged = 0;
            buf = this.stage;
            at = 0;
          }
          const entry = this.state === ST_HEADER ? this.onHeader(buf, at) : this.onSparseExtension(buf, at);
          if (entry !== null) {
            if (pos > run) events.push({ kind: "inline", data: chunk.subarray(run, pos) });
            run = pos;
            events.push({ kind: "entry", entry });
            this.current = entry;
            const size = entry.size;
            if (isRegularType(entry.type) && !entry.sparse && size > INLINE_CONTENT_MAX) {
              events.push({ kind: "external", size });
              this.state = ST_DATA;
              this.remaining = size;
              this.padAfter = padding(size);
            } else {
              this.skip(size + padding(size));
            }
          }
        }
      }
    }
    if (pos > run) events.push({ kind: "inline", data: chunk.subarray(run, pos) });
    this.base += len;
    return events;
  }

  /** Signal EOF. Throws TarFormatError if the archive is truncated; otherwise returns no further events. */
  end(): TarEvent[] {
    if (this.ended) return [];
    this.ended = true;
    const eof = this.base;
    const truncated = (what: string): TarFormatError =>
      new TarFormatError(`truncated tar: EOF at offset ${eof} inside ${what}`, eof);
    switch (this.state) {
      case ST_TRAILER:
        return [];
      case ST_HEADER:
        if (this.staged > 0 && !allZero(this.stage, 0, this.staged)) {
          throw truncated(`the header block at offset ${this.blockStart} (${this.staged} of 512 bytes)`);
        }
        if (this.localPending) {
          throw truncated(`the entry whose extension headers start at offset ${this.entryStart}`);
        }
        return [];
      case ST_SPARSE_EXT:
        throw truncated(`the GNU sparse extension block at offset ${this.blockStart}`);
      case ST_EXT_DATA:
        throw truncated(
          `the data of the '${this.extType}' extension header at offset ${this.extStart} ` +
            `(${this.remaining} more bytes expected)`,
        );
      default: {
        const e = this.current;
        const name = e === null ? "?" : JSON.stringify(e.path.toString("utf8"));
        throw truncated(
          `the payload of entry ${name} with header at offset ${e?.headerOffset ?? -1} ` +
            `(${this.state === ST_DATA ? this.remaining + this.padAfter : this.remaining} more bytes expected)`,
        );
      }
    }
  }

  private skip(n: number): void {
    this.remaining = n;
    this.state = n === 0 ? ST_HEADER : ST_SKIP;
  }

  private onHeader(buf: Buffer, at: number): TarEntry | null {
    const offset = this.blockStart;
    if (buf[at] === 0 && allZero(buf, at, at + BLOCK_SIZE)) {
      if (this.localPending) {
        throw new TarFormatError(
          `end-of-archive block at offset ${offset} follows extension headers at offset ${this.entryStart}`,
          offset,
        );
      }
      this.state = ST_TRAILER;
      return null;
    }
    if (this.entryStart < 0) this.entryStart = offset;
    const typeByte = buf[at + 156];
    // x, X (old Solaris x), g, L, K
    if (
      typeByte === 0x78 ||
      typeByte === 0x58 ||
      typeByte === 0x67 ||
      typeByte === 0x4c ||
      typeByte === 0x4b
    ) {
      if (!checksumOk(buf, at))
        throw new TarFormatError(`bad tar header checksum at offset ${offset}`, offset);
      const size = fieldNumber(buf, at, 124, 12, "size", offset);
      checkSize(size, offset);
      if (size > MAX_EXTENSION_SIZE) {
        throw new TarFormatError(
          `tar extension header at offset ${offset} is too large (${size} bytes, limit ${MAX_EXTENSION_SIZE})`,
          offset,
        );
      }
      this.extType = String.fromCharCode(typeByte);
      this.extStart = offset;
      this.extBuf = size === 0 ? EMPTY : Buffer.allocUnsafe(size);
      this.extFill = 0;
      if (typeByte !== 0x67) this.localPending = true;
      const total = size + padding(size);
      if (total === 0) {
        this.finishExtension();
      } else {
        this.remaining = total;
        this.state = ST_EXT_DATA;
      }
      return null;
    }
    const h = parseHeaderAt(buf, at, offset);
    const entry = this.buildEntry(h, offset);
    if (h.gnuSparseExtended) {
      this.sparseEntry = entry;
      this.state = ST_SPARSE_EXT;
      return null;
    }
    return entry;
  }

  private onSparseExtension(buf: Buffer, at: number): TarEntry | null {
    if (buf[at + 504] !== 0) return null;
    const entry = this.sparseEntry;
    this.sparseEntry = null;
    this.state = ST_HEADER;
    return entry;
  }

  private finishExtension(): void {
    const data = this.extBuf;
    this.extBuf = EMPTY;
    const dataOffset = this.extStart + BLOCK_SIZE;
    switch (this.extType) {
      case "L":
        this.longName = longNameValue(data);
        break;
      case "K":
        this.longLink = longNameValue(data);
        break;
      case "g":
        for (const r of parsePaxRecords(data, dataOffset)) {
          if (r.value.length === 0) this.globalPax.delete(r.key);
          else this.globalPax.set(r.key, r.value);
        }
        break;
      default: {
        const local = (this.localPax ??= new Map<string, Buffer>());
        for (const r of parsePaxRecords(data, dataOffset)) local.set(r.key, r.value);
      }
    }
  }

  private buildEntry(h: TarHeader, offset: number): TarEntry {
    const local = this.localPax;
    let pax: Map<string, Buffer>;
    if (this.globalPax.size === 0) pax = local ?? new Map<string, Buffer>();
    else {
      pax = new Map(this.globalPax);
      if (local !== null) for (const [k, v] of local) pax.set(k, v);
    }
    const entry: TarEntry = {
      type: h.type,
      path: this.longName ?? h.name,
      linkPath: this.longLink ?? h.linkName,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      size: h.size,
      mtimeSec: h.mtime,
      mtimeNsec: 0,
      uname: h.uname,
      gname: h.gname,
      devMajor: h.devMajor,
      devMinor: h.devMinor,
      xattrs: new Map<string, Buffer>(),
      sparse: h.type === "S",
      headerOffset: this.entryStart,
      pax,
    };
    if (pax.size > 0) this.applyPax(entry, pax, offset);
    this.entryStart = -1;
    this.localPending = false;
    this.localPax = null;
    this.longName = null;
    this.longLink = null;
    return entry;
  }

  private applyPax(entry: TarEntry, pax: Map<string, Buffer>, offset: number): void {
    let sparseName: Buffer | undefined;
    let libarchiveXattrs: [string, Buffer][] | undefined;
    for (const [key, value] of pax) {
      // An empty local value means "use the header's value" (POSIX); empty xattrs are real, empty values.
      switch (key) {
        case "path":
          if (value.length > 0) entry.path = value;
          break;
        case "linkpath":
          if (value.length > 0) entry.linkPath = value;
          break;
        case "size":
          if (value.length > 0) entry.size = paxDecimal(value, key, offset);
          break;
        case "uid":
          if (value.length > 0) entry.uid = paxDecimal(value, key, offset);
          break;
        case "gid":
          if (value.length > 0) entry.gid = paxDecimal(value, key, offset);
          break;
        case "uname":
          if (value.length > 0) entry.uname = value.toString("utf8");
          break;
        case "gname":
          if (value.length > 0) entry.gname = value.toString("utf8");
          break;
        case "mtime":
          if (value.length > 0) {
            const t = parsePaxTime(value, offset);
            entry.mtimeSec = t.sec;
            entry.mtimeNsec = t.nsec;
          }
          break;
        default:
          if (key.startsWith(SCHILY_XATTR)) {
            entry.xattrs.set(key.slice(SCHILY_XATTR.length), value);
          } else if (key.startsWith(LIBARCHIVE_XATTR)) {
            (libarchiveXattrs ??= []).push([
              percentDecode(key.slice(LIBARCHIVE_XATTR.length)),
              Buffer.from(value.toString("latin1"), "base64"),
            ]);
          } else if (key.startsWith(GNU_SPARSE)) {
            entry.sparse = true;
            if (key === "GNU.sparse.name" && value.length > 0) sparseName = value;
          }
      }
    }
    if (libarchiveXattrs !== undefined) {
      // SCHILY.xattr (raw) wins when libarchive wrote both.
      for (const [name, value] of libarchiveXattrs)
        if (!entry.xattrs.has(name)) entry.xattrs.set(name, value);
    }
    if (sparseName !== undefined) entry.path = sparseName;
  }
}
