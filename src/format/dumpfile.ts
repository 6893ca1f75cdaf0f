// The composefs dumpfile: the line-per-file text format that `mkcomposefs --from-file` reads and
// `composefs-info dump` prints (reference: composefs-erofs.md §2, all of §2.1–§2.5; the hardlink and xattr
// limits of §1.10–§1.11 that the C parser enforces while reading).
//
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [KEY=VALUE …]
//
// Pure: `parseDumpfileFlat` turns bytes into a flat tree (src/tree/flat.ts; `parseDumpfile` into the object tree of
// src/tree/tree.ts) with the rules of mkcomposefs 1.0.8 —
// including its quirks: numbers are read like C `strtoull` (optional leading white space and sign, wrap-around
// on `-`, saturation on overflow), C-string fields (path, payload, xattr key) end at an embedded `\x00`, hardlink
// (`@`) lines are resolved after the whole file is read and ignore every field but PATH, MODE and PAYLOAD.
// `writeDumpfile` prints a tree in the canonical `composefs-info dump` form: DFS pre-order with bytewise sorted
// children, the first path of a hard-linked leaf in that order is printed in full and the later ones as `@`
// lines pointing at it, xattrs sorted by key.
//
// Where we are stricter than C (on input C would turn into undefined or garbage values): DIGEST must be exactly
// 64 hex digits, or 128 for SHA-512 repositories (C ignores conversion errors and keeps uninitialised bytes); an
// empty DIGEST field (a line that stops early) means "no digest"; mtime nanoseconds must be < 10^9 and seconds
// a safe JS integer; a GID or RDEV that is not a number is an error even when UID is non-zero (C only checks
// them when UID is 0).

import { StratumError } from "../errors.ts";
import { isAnyObjectId } from "./object-id.ts";
import { FlatTree, T_BLK, T_CHR, T_DIR, T_LNK, T_REG, findChild, toFileSystem } from "../tree/flat.ts";
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  compareBytes,
  isDirectory,
  type ByteString,
  type FileSystem,
  type Inode,
  type Leaf,
} from "../tree/tree.ts";

// The composefs input limits live with the image format (erofs/format.ts); the parser enforces them.
import {
  FILE_SIZE_MAX,
  INLINE_CONTENT_MAX,
  NAME_MAX,
  PATH_MAX,
  XATTR_INODE_BUDGET,
  XATTR_NAME_MAX,
  XATTR_TEXT_MAX,
  XATTR_VALUE_MAX,
} from "./erofs/format.ts";

/** A dumpfile that mkcomposefs would reject. The message starts with `line N:`. */
export class DumpfileError extends StratumError {
  readonly line: number;

  constructor(line: number, problem: string) {
    super("E_BAD_INPUT", `line ${line}: ${problem}`);
    this.name = "DumpfileError";
    this.line = line;
  }
}

// ---- escaping --------------------------------------------------------------------------------------------------

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Decode `\\ \n \r \t \xHH` in a byte string; any other escape is an error (returned as a string). Every
 * other byte, `=` and bytes ≥ 0x80 included, is literal.
 */
export function unescapeField(s: ByteString): ByteString | { error: string } {
  if (!s.includes("\\")) return s;
  let out = "";
  let i = 0;
  while (i < s.length) {
    const bs = s.indexOf("\\", i);
    if (bs < 0) {
      out += s.slice(i);
      break;
    }
    out += s.slice(i, bs);
    if (bs + 1 >= s.length) return { error: "no character after escape \\" };
    const e = s[bs + 1];
    i = bs + 2;
    switch (e) {
      case "\\":
        out += "\\";
        break;
      case "n":
        out += "\n";
        break;
      case "r":
        out += "\r";
        break;
      case "t":
        out += "\t";
        break;
      case "x": {
        if (bs + 3 >= s.length) return { error: "no hex digits after escape \\x" };
        const h = hexValue(s.charCodeAt(bs + 2));
        const l = hexValue(s.charCodeAt(bs + 3));
        if (h < 0 || l < 0) return { error: `invalid hex digits in escape \\x${s.slice(bs + 2, bs + 4)}` };
        out += String.fromCharCode((h << 4) | l);
        i = bs + 4;
        break;
      }
      default:
        return { error: `unsupported escape \\${escapeField(e)}` };
    }
  }
  return out;
}

const NEEDS_ESCAPE = /[^\x21-\x7e]|\\/;
const NEEDS_ESCAPE_EQ = /[^\x21-\x7e]|[\\=]/;

/**
 * Escape a byte string the way `composefs-info dump` does: `\\`, `\n`, `\r`, `\t`, every other byte outside
 * 0x21–0x7e as `\xhh` (so a space is `\x20`), and `=` as `\x3d` when `escapeEquals` (xattr keys and values).
 */
export function escapeField(s: ByteString, escapeEquals = false): string {
  if (!(escapeEquals ? NEEDS_ESCAPE_EQ : NEEDS_ESCAPE).test(s)) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c < 0x21 || c > 0x7e || (escapeEquals && c === 0x3d))
      out += "\\x" + c.toString(16).padStart(2, "0");
    else out += s[i];
  }
  return out;
}

/** escapeField for raw bytes or a byte string (what `composefs-info ls` and `dump` print). */
export function escapeDumpField(value: Buffer | ByteString, escapeEquals = false): string {
  return escapeField(typeof value === "string" ? value : value.toString("latin1"), escapeEquals);
}

/** An optional field (PAYLOAD, CONTENT): `-` when absent, a literal lone `-` as `\x2d`. */
function escapeOptional(s: ByteString | undefined): string {
  if (s === undefined) return "-";
  if (s === "-") return "\\x2d";
  return escapeField(s);
}

// ---- parsing ---------------------------------------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;

/**
 * C `strtoull(s, &end, base)` with the check mkcomposefs makes (`*s != 0 && *end == 0`): optional leading
 * white space, an optional sign (`-` negates modulo 2^64), at least one digit, nothing after the digits;
 * values above 2^64−1 saturate. null when C reports "Invalid integer".
 */
function parseCUnsigned(s: string, base: 8 | 10): bigint | null {
  let i = 0;
  while (i < s.length && " \t\n\v\f\r".includes(s[i])) i++;
  let negative = false;
  if (s[i] === "+" || s[i] === "-") {
    negative = s[i] === "-";
    i++;
  }
  const start = i;
  const maxDigit = base === 8 ? 0x37 : 0x39;
  while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= maxDigit) i++;
  if (i === start || i !== s.length) return null;
  const digits = s.slice(start, i);
  const v = BigInt(base === 8 ? "0o" + digits : digits);
  if (v > U64_MAX) return U64_MAX;
  return negative ? -v & U64_MAX : v;
}

/**
 * The value of a field made only of digits of `base` (nearly every field), without BigInt; null when the field
 * needs the full strtoull rules of parseCUnsigned (signs, spaces, more than 15 digits, anything else).
 */
function plainNumber(s: string, base: 8 | 10): number | null {
  const n = s.length;
  if (n === 0 || n > 15) return null;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d >= base) return null;
    v = v * base + d;
  }
  return v;
}

/** Everything up to the first NUL: how C sees an unescaped string that it stores as a C string. */
function cString(s: ByteString): ByteString {
  const nul = s.indexOf("\0");
  return nul < 0 ? s : s.slice(0, nul);
}

function validType(mode: number): boolean {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFBLK:
    case S_IFCHR:
    case S_IFSOCK:
    case S_IFIFO:
      return true;
    default:
      return false;
  }
}

interface HardlinkFixup {
  row: number;
  line: number;
  /** Target path (unescaped), or null for a `-` PAYLOAD. */
  target: ByteString | null;
}

function fail(line: number, problem: string): never {
  throw new DumpfileError(line, problem);
}

function unescapeOrFail(field: string, what: string, line: number): ByteString {
  const r = unescapeField(field);
  if (typeof r !== "string") return fail(line, `${what}: ${r.error}`);
  return r;
}

/** `-` → null, anything else unescaped. */
function optionalField(field: string, what: string, line: number): ByteString | null {
  return field === "-" ? null : unescapeOrFail(field, what, line);
}

/** A full C strtoull of a decimal field, or the line's error. */
function cNumber(field: string, what: string, line: number): bigint {
  const v = parseCUnsigned(field, 10);
  if (v === null) return fail(line, `invalid ${what} ${JSON.stringify(field)}`);
  return v;
}

/** A decimal field truncated to 32 bits, as C stores it. */
function u32Field(field: string, what: string, line: number): number {
  const v = plainNumber(field, 10);
  return v !== null && v <= 0xffffffff ? v : Number(cNumber(field, what, line) & 0xffffffffn);
}

/** A path with a leading `/`, no empty components and no trailing `/`: its own key in the directory map. */
function isCanonical(path: string): boolean {
  return path.charCodeAt(0) === 0x2f && path.indexOf("//") < 0 && path.charCodeAt(path.length - 1) !== 0x2f;
}

/** "/" + the non-empty components of `path`, joined by "/" ("" for none). */
function canonical(path: string): string {
  const parts = path.split("/").filter((c) => c !== "");
  return parts.length === 0 ? "" : "/" + parts.join("/");
}

/** Parser state shared by the lines of one dumpfile. */
class DumpfileParser {
  readonly t: FlatTree;
  /** Directory rows by canonical path ("" is the root). */
  private readonly dirs = new Map<string, number>();
  /** Raw xattr token (`key=value` as written) → pair id, or the problem for a token already rejected. */
  private readonly tokens = new Map<string, number>();
  readonly fixups: HardlinkFixup[] = [];
  private readonly lineIds: number[] = [];
  private readonly lineKeys: string[] = [];
  private readonly fieldStart = new Int32Array(11);
  private readonly fieldEnd = new Int32Array(11);

  constructor(
    private readonly text: string,
    private readonly strict: boolean,
    lines: number,
  ) {
    this.t = new FlatTree(lines + 1);
  }

  /** The parent found for the previous line, by the path text before its last `/`. */
  private lastPrefix = "\0";
  private lastParent = -1;
  /** Where the next backslash in the text is (-1: none; before the current line: not looked up yet). */
  private nextBackslash = -2;
  /** The previous xattr token and its pair id (consecutive lines often repeat a label). */
  private lastToken = "";
  private lastTokenId = -1;

  private field(i: number): string {
    return this.text.slice(this.fieldStart[i], this.fieldEnd[i]);
  }

  /**
   * Field i read as plain digits of `base` (1–15 of them, nothing else), from `skip` characters in; -1 when it
   * needs the full strtoull rules.
   */
  private digits(i: number, base: number, skip = 0): number {
    const text = this.text;
    const a = this.fieldStart[i] + skip;
    const b = this.fieldEnd[i];
    if (b <= a || b - a > 15) return -1;
    let v = 0;
    for (let j = a; j < b; j++) {
      const d = text.charCodeAt(j) - 48;
      if (d < 0 || d >= base) return -1;
      v = v * base + d;
    }
    return v;
  }

  private isDash(i: number): boolean {
    return this.fieldEnd[i] - this.fieldStart[i] === 1 && this.text.charCodeAt(this.fieldStart[i]) === 0x2d;
  }

  /** A decimal field truncated to 32 bits, as C stores it. */
  private u32(i: number, what: string, lineNo: number): number {
    const v = this.digits(i, 10);
    return v >= 0 && v <= 0xffffffff ? v : u32Field(this.field(i), what, lineNo);
  }

  /** Parse the line text[start, end) (without its newline). */
  parseLine(start: number, end: number, lineNo: number): void {
    const { text, t, strict, fieldStart, fieldEnd } = this;
    // The 11 fixed fields, split at single spaces; missing trailing fields are empty.
    let p = start;
    for (let i = 0; i < 11; i++) {
      let sp = text.indexOf(" ", p);
      if (sp < 0 || sp > end) sp = end;
      fieldStart[i] = p;
      fieldEnd[i] = sp;
      p = sp < end ? sp + 1 : end;
    }
    const restStart = p;

    // PATH: taken from the text as it is when it has no escapes (the usual case), else unescaped.
    const pathStart = fieldStart[0];
    const pathEnd = fieldEnd[0];
    if (this.nextBackslash !== -1 && this.nextBackslash < pathStart)
      this.nextBackslash = text.indexOf("\\", pathStart);
    const plain = this.nextBackslash === -1 || this.nextBackslash >= pathEnd;
    let escapedPath: string | null = null;
    if (!plain) {
      escapedPath = cString(unescapeOrFail(this.field(0), "PATH", lineNo));
      if (escapedPath === "") fail(lineNo, "empty PATH");
    } else if (pathEnd === pathStart) fail(lineNo, "empty PATH");

    const isHardlink = text.charCodeAt(fieldStart[2]) === 0x40; // @
    let mode = this.digits(2, 8, isHardlink ? 1 : 0);
    if (mode < 0 || mode > 0xffffffff) {
      const fMode = this.field(2);
      const modeBig = parseCUnsigned(isHardlink ? fMode.slice(1) : fMode, 8);
      if (modeBig === null) return fail(lineNo, `invalid MODE ${JSON.stringify(fMode)} (octal expected)`);
      mode = Number(modeBig & 0xffffffffn);
    }
    if (!validType(mode)) fail(lineNo, `invalid MODE ${mode.toString(8)}: not a known file type`);
    const type = (mode & S_IFMT) >> 12;

    // Attach the new entry (the tree_add_node step).
    const row =
      plain && pathEnd - pathStart > 1 && text.charCodeAt(pathStart) === 0x2f && t.length > 0
        ? this.attachPlain(pathStart, pathEnd, type, isHardlink, lineNo)
        : this.attach(escapedPath ?? this.field(0), type, isHardlink, lineNo);
    t.perm[row] = mode & 0o7777;

    if (isHardlink) {
      if (type === T_DIR) fail(lineNo, "directories can't be hardlinked");
      const target = optionalField(this.field(8), "PAYLOAD", lineNo);
      this.fixups.push({ row, line: lineNo, target: target === null ? null : cString(target) });
      return;
    }

    const sizePlain = this.digits(1, 10);
    const size = sizePlain >= 0 ? sizePlain : cNumber(this.field(1), "SIZE", lineNo);
    const nlink = this.u32(3, "NLINK", lineNo);
    const uid = this.u32(4, "UID", lineNo);
    const gid = this.u32(5, "GID", lineNo);
    const rdev = this.u32(6, "RDEV", lineNo);

    // MTIME: sec.nsec; split the field at its dot for the fast path.
    const mtimeStart = fieldStart[7];
    const mtimeEnd = fieldEnd[7];
    let dot = text.indexOf(".", mtimeStart);
    if (dot < 0 || dot > mtimeEnd) dot = mtimeEnd;
    fieldEnd[7] = dot;
    let sec = this.digits(7, 10);
    fieldStart[7] = dot + 1;
    fieldEnd[7] = mtimeEnd;
    let nsec: number | bigint = dot < mtimeEnd ? this.digits(7, 10) : -1;
    if (sec < 0 || nsec < 0) {
      const fMtime = text.slice(mtimeStart, mtimeEnd);
      const d = fMtime.indexOf(".");
      const secField = d < 0 ? fMtime : fMtime.slice(0, d);
      const nsecField = d < 0 ? "" : fMtime.slice(d + 1);
      const secPlain = plainNumber(secField, 10);
      sec =
        secPlain !== null ? secPlain : Number(BigInt.asIntN(64, cNumber(secField, "MTIME seconds", lineNo)));
      const nsecPlain = plainNumber(nsecField, 10);
      nsec = nsecPlain !== null ? nsecPlain : cNumber(nsecField, "MTIME nanoseconds", lineNo);
      if (!Number.isSafeInteger(sec)) fail(lineNo, `MTIME seconds ${JSON.stringify(fMtime)} out of range`);
      if (nsec >= 1000000000) fail(lineNo, `MTIME nanoseconds ${JSON.stringify(fMtime)} must be below 10^9`);
    } else if (nsec >= 1000000000)
      fail(
        lineNo,
        `MTIME nanoseconds ${JSON.stringify(text.slice(mtimeStart, mtimeEnd))} must be below 10^9`,
      );

    const payloadRaw = this.isDash(8) ? null : unescapeOrFail(this.field(8), "PAYLOAD", lineNo);
    const payload = payloadRaw === null ? null : cString(payloadRaw);
    const content = this.isDash(9) ? null : optionalField(this.field(9), "CONTENT", lineNo);
    if (content !== null && content.length !== Number(size) && BigInt(content.length) !== BigInt(size))
      fail(lineNo, `CONTENT is ${content.length} bytes but SIZE is ${size}`);
    const fDigest = this.field(10);
    let digest: string | undefined;
    if (fDigest !== "-" && fDigest !== "") {
      const d = isAnyObjectId(fDigest) ? fDigest : unescapeOrFail(fDigest, "DIGEST", lineNo);
      if (d !== "") {
        if (!/^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.test(d))
          fail(
            lineNo,
            `invalid DIGEST ${JSON.stringify(d)}: expected 64 (sha256) or 128 (sha512) hex digits`,
          );
        digest = d.toLowerCase();
      }
    }

    if (type !== T_CHR && type !== T_BLK && strict && rdev !== 0)
      fail(lineNo, `non-zero RDEV ${rdev} on a non-device (strict mode)`);

    if (type === T_LNK) {
      if (payload === null || payload === "") fail(lineNo, "symlink target is empty");
      const target = payload;
      if (target.length >= PATH_MAX)
        fail(lineNo, `symlink target is ${target.length} bytes, limit ${PATH_MAX - 1}`);
      if (strict && BigInt(size) !== BigInt(target.length))
        fail(lineNo, `symlink SIZE ${size} differs from the target length ${target.length} (strict mode)`);
      if (strict && content !== null && content.length > 0)
        fail(lineNo, "symlink cannot have CONTENT (strict mode)");
    } else {
      if (payload !== null && payload.length >= PATH_MAX)
        fail(lineNo, `PAYLOAD is ${payload.length} bytes, limit ${PATH_MAX - 1}`);
      if (content !== null && content.length > INLINE_CONTENT_MAX)
        fail(lineNo, `inline content size ${content.length} exceeds maximum ${INLINE_CONTENT_MAX}`);
    }
    // An empty CONTENT is no content (lcfs_node_set_content stores NULL for 0 bytes).
    const inline = content !== null && content.length > 0 ? content : null;
    if (
      type === T_REG &&
      inline === null &&
      (typeof size === "bigint" ? size > BigInt(FILE_SIZE_MAX) : size > FILE_SIZE_MAX)
    )
      fail(lineNo, `file too large: SIZE ${size} exceeds ${FILE_SIZE_MAX}`);

    if (end - restStart > XATTR_TEXT_MAX)
      fail(lineNo, `too many xattrs: ${end - restStart} bytes after DIGEST, limit ${XATTR_TEXT_MAX}`);
    if (restStart < end) this.parseXattrs(row, restStart, end, lineNo);

    t.mtimeSec[row] = sec;
    t.mtimeNsec[row] = Number(nsec);
    t.uid[row] = uid;
    t.gid[row] = gid;
    if (type !== T_DIR) t.nlink[row] = nlink;
    switch (type) {
      case T_REG:
        t.size[row] = inline !== null ? inline.length : Number(size);
        if (inline !== null) t.data[row] = inline;
        if (digest !== undefined) t.digest[row] = digest;
        if (payload !== null && payload !== "") t.payload[row] = payload;
        break;
      case T_LNK:
        t.size[row] = (payload as string).length;
        t.data[row] = payload as string;
        break;
      case T_CHR:
      case T_BLK:
        t.rdev[row] = rdev;
        break;
      default:
        break;
    }
  }

  /** Attach a plain absolute path (no escapes, not the root) read straight from text[a, b). */
  private attachPlain(a: number, b: number, type: number, isHardlink: boolean, lineNo: number): number {
    const text = this.text;
    const slash = text.lastIndexOf("/", b - 1);
    let parent: number;
    const lastPrefix = this.lastPrefix;
    if (slash - a === lastPrefix.length && text.startsWith(lastPrefix, a)) parent = this.lastParent;
    else {
      const prefix = text.slice(a, slash);
      parent = this.findParent(text.slice(a, b), prefix, lineNo);
      this.lastPrefix = prefix;
      this.lastParent = parent;
    }
    const name = text.slice(slash + 1, b);
    this.checkName(name, text.slice(a, b), lineNo);
    const row = this.t.add(parent, name, type);
    if (type === T_DIR && !isHardlink) {
      const path = text.slice(a, b);
      this.dirs.set(isCanonical(path) ? path : canonical(path), row);
    }
    return row;
  }

  /** Attach any other path (unescaped): the root line, relative paths, repeated slashes. */
  private attach(path: string, type: number, isHardlink: boolean, lineNo: number): number {
    const t = this.t;
    if (path === "/") {
      if (type !== T_DIR) fail(lineNo, "the root must be a directory");
      if (t.length > 0) fail(lineNo, "a second root line");
      const row = t.add(-1, "", T_DIR);
      this.dirs.set("", row);
      return row;
    }
    if (t.length === 0)
      return fail(lineNo, `root line missing: the first line must be "/", not ${jsonPath(path)}`);
    const slash = path.lastIndexOf("/");
    const prefix = slash < 0 ? "" : path.slice(0, slash);
    const parent = this.findParent(path, prefix, lineNo);
    this.lastPrefix = "\0"; // a prefix of another spelling: do not let the plain path reuse it
    const name = path.slice(slash + 1);
    this.checkName(name, path, lineNo);
    const row = t.add(parent, name, type);
    if (type === T_DIR && !isHardlink) this.dirs.set(isCanonical(path) ? path : canonical(path), row);
    return row;
  }

  private checkName(name: string, path: string, lineNo: number): void {
    if (name === "." || name === "..") fail(lineNo, `invalid . or .. in path ${jsonPath(path)}`);
    if (name === "") fail(lineNo, `empty file name in path ${jsonPath(path)}`);
    if (name.length > NAME_MAX)
      fail(lineNo, `file name longer than ${NAME_MAX} bytes in path ${jsonPath(path)}`);
  }

  /**
   * mkcomposefs's lookup_parent_path: leading and repeated slashes are skipped, every component but the last
   * must exist, the last component (possibly empty after a trailing slash) is the new name.
   */
  private findParent(path: string, prefix: string, lineNo: number): number {
    const found = this.dirs.get(isCanonical(path) ? prefix : canonical(prefix));
    if (found !== undefined) return found;
    // Missing, or a component is not a directory: find out which, for the message.
    const key = canonical(prefix);
    const cut = key.lastIndexOf("/");
    const above = cut < 0 ? undefined : this.dirs.get(key.slice(0, cut));
    if (above !== undefined) {
      const last = key.slice(cut + 1);
      const t = this.t;
      for (let r = t.length - 1; r > 0; r--) {
        if (t.parent[r] === above && t.name[r] === last)
          return fail(lineNo, `parent of ${jsonPath(path)} is not a directory`);
      }
    }
    return fail(lineNo, `parent directory missing for ${jsonPath(path)}`);
  }

  /** The xattrs of one line, text[start, end): space-separated `key=value` tokens (lcfs_node_set_xattr). */
  private parseXattrs(row: number, start: number, end: number, lineNo: number): void {
    const { text, t, lineIds, lineKeys } = this;
    lineIds.length = 0;
    lineKeys.length = 0;
    let budget = 0;
    let r = start;
    while (r < end) {
      let sp = text.indexOf(" ", r);
      if (sp < 0 || sp > end) sp = end;
      let id: number;
      if (this.lastTokenId >= 0 && sp - r === this.lastToken.length && text.startsWith(this.lastToken, r))
        id = this.lastTokenId;
      else {
        const token = text.slice(r, sp);
        let known = this.tokens.get(token);
        if (known === undefined) {
          known = this.internToken(token, lineNo);
          this.tokens.set(token, known);
        }
        id = known;
        this.lastToken = token;
        this.lastTokenId = id;
      }
      r = sp + 1;
      const key = t.pairKey[id];
      const valueLength = t.pairValue[id].length;
      // Replacing a key first removes the old entry; each entry costs 7 + key + value bytes (worst-case
      // padding), the first one also the 12-byte body header.
      const old = lineKeys.indexOf(key);
      if (old >= 0) {
        const oldLength = t.pairValue[lineIds[old]].length;
        lineIds.splice(old, 1);
        lineKeys.splice(old, 1);
        budget = lineIds.length > 0 ? budget - (7 + key.length + oldLength) : 0;
      }
      const cost = 7 + key.length + valueLength + (lineIds.length === 0 ? 12 : 0);
      if (budget + cost > XATTR_INODE_BUDGET)
        fail(
          lineNo,
          `xattrs exceed the per-inode limit of ${XATTR_INODE_BUDGET} bytes at ${escapeField(key)}`,
        );
      budget += cost;
      lineIds.push(id);
      lineKeys.push(key);
    }
    t.setXattrs(row, lineIds, lineIds.length);
  }

  private internToken(token: string, lineNo: number): number {
    const eq = token.indexOf("=");
    if (eq < 0) fail(lineNo, `missing = in xattr ${JSON.stringify(token)}`);
    const key = cString(unescapeOrFail(token.slice(0, eq), "xattr key", lineNo));
    const value = unescapeOrFail(token.slice(eq + 1), "xattr value", lineNo);
    if (key === "") fail(lineNo, "empty xattr key");
    if (key.length > XATTR_NAME_MAX)
      fail(lineNo, `xattr key is ${key.length} bytes, limit ${XATTR_NAME_MAX}`);
    if (value.length > XATTR_VALUE_MAX)
      fail(lineNo, `xattr ${escapeField(key)} value is ${value.length} bytes, limit ${XATTR_VALUE_MAX}`);
    return this.t.internPair(key, value);
  }

  /**
   * Point every `@` row at the row owning its target's inode (following `@` chains), after the whole file is
   * read: mkcomposefs resolves hard links last, against the complete tree.
   */
  resolveHardlinks(): void {
    const t = this.t;
    const fixups = this.fixups;
    if (fixups.length === 0) return;
    const index = t.childIndex();
    const fixupOf = new Map<number, HardlinkFixup>();
    for (const f of fixups) fixupOf.set(f.row, f);
    const lookupPath = (path: ByteString): number => {
      let row = 0;
      let i = 0;
      for (;;) {
        while (path.charCodeAt(i) === 0x2f) i++;
        if (i >= path.length) return row;
        let slash = path.indexOf("/", i);
        if (slash < 0) slash = path.length;
        row = findChild(t, index, row, path.slice(i, slash));
        if (row < 0) return -1;
        i = slash;
      }
    };
    const resolved = new Map<number, number>();
    const owners: number[] = [];
    for (const start of fixups) {
      let owner = resolved.get(start.row);
      if (owner === undefined) {
        const chain = new Set<number>();
        let cur = start;
        for (;;) {
          chain.add(cur.row);
          if (cur.target === null) fail(cur.line, "hardlink without a target path (PAYLOAD is -)");
          const target = lookupPath(cur.target);
          if (target < 0) fail(cur.line, `hardlink target ${jsonPath(cur.target)} does not exist`);
          if (target === cur.row) fail(cur.line, `self-referential hardlink ${jsonPath(cur.target)}`);
          if (t.type[target] === T_DIR)
            fail(cur.line, `hardlink target ${jsonPath(cur.target)} is a directory`);
          const known = resolved.get(target);
          if (known !== undefined) {
            owner = known;
            break;
          }
          const next = fixupOf.get(target);
          if (next === undefined) {
            owner = target;
            break;
          }
          if (chain.has(target)) fail(cur.line, `hardlink cycle through ${jsonPath(cur.target)}`);
          cur = next;
        }
        for (const r of chain) resolved.set(r, owner);
      }
      owners.push(owner);
    }
    for (let i = 0; i < fixups.length; i++) {
      const row = fixups[i].row;
      t.link[row] = owners[i];
      t.type[row] = t.type[owners[i]];
    }
  }
}

/**
 * Parse a dumpfile into a flat tree (src/tree/flat.ts) with mkcomposefs 1.0.8's rules (composefs-erofs.md
 * §2.1–§2.5). `strict` is mkcomposefs's `CFS_PARSE_STRICT=1`: a trailing newline, symlink SIZE equal to the
 * target length, no CONTENT on symlinks, RDEV 0 on non-devices. Throws DumpfileError naming the line.
 */
export function parseDumpfileFlat(input: Buffer | ByteString, opts: { strict?: boolean } = {}): FlatTree {
  const strict = opts.strict ?? false;
  const text = typeof input === "string" ? input : input.toString("latin1");
  const lines = countLines(text);
  const parser = new DumpfileParser(text, strict, lines + 1);
  const nul = text.indexOf("\0");
  let lineNo = 0;
  let pos = 0;
  while (pos < text.length) {
    lineNo++;
    let nl = text.indexOf("\n", pos);
    if (nl < 0) {
      if (strict) fail(lineNo, "missing trailing newline (required in strict mode)");
      nl = text.length;
    }
    if (nul >= 0 && nul < nl) fail(lineNo, `embedded NUL byte at column ${nul - pos + 1}`);
    parser.parseLine(pos, nl, lineNo);
    pos = nl + 1;
  }
  const t = parser.t;
  if (t.length === 0) fail(Math.max(lineNo, 1), "no root directory line (empty input)");
  const duplicate = t.childIndex().duplicate;
  if (duplicate >= 0) fail(duplicate + 1, `duplicate path ${jsonPath(t.path(duplicate))}`);
  parser.resolveHardlinks();
  return t;
}

function countLines(text: string): number {
  let lines = 0;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lines++;
  return lines;
}

/** parseDumpfileFlat, as an object tree (src/tree/tree.ts). */
export function parseDumpfile(input: Buffer | ByteString, opts: { strict?: boolean } = {}): FileSystem {
  return toFileSystem(parseDumpfileFlat(input, opts));
}

function jsonPath(path: ByteString): string {
  return JSON.stringify(escapeField(path));
}

// ---- writing ---------------------------------------------------------------------------------------------------

function modeOf(inode: Inode): number {
  return (isDirectory(inode) ? S_IFDIR : inode.fileType) | (inode.stat.mode & 0o7777);
}

function xattrText(xattrs: Map<ByteString, Buffer>): string {
  if (xattrs.size === 0) return "";
  let out = "";
  for (const key of [...xattrs.keys()].sort(compareBytes)) {
    out +=
      " " + escapeField(key, true) + "=" + escapeField((xattrs.get(key) as Buffer).toString("latin1"), true);
  }
  return out;
}

/**
 * Print a tree as `composefs-info dump` prints the image built from it (composefs-erofs.md §2.2): one line per
 * entry in DFS pre-order with bytewise sorted children, the root first. A directory's SIZE is its `imageSize`
 * (set by the EROFS reader) or 0, its NLINK 2 + its subdirectories. A leaf reached a second time is printed as an
 * `@` line whose PAYLOAD is the first path; its other fields repeat the leaf's.
 */
export function writeDumpfile(fs: FileSystem): Buffer {
  const out: string[] = [];
  const firstPath = new Map<Leaf, ByteString>();
  const stack: { path: ByteString; inode: Inode }[] = [{ path: "/", inode: fs.root }];
  while (stack.length > 0) {
    const { path, inode } = stack.pop() as { path: ByteString; inode: Inode };
    const st = inode.stat;
    const mtime = `${st.mtimeSec}.${st.mtimeNsec}`;
    if (isDirectory(inode)) {
      const children = inode.sorted();
      let subdirs = 0;
      for (const [, c] of children) if (isDirectory(c)) subdirs++;
      out.push(
        `${escapeField(path)} ${inode.imageSize ?? 0} ${modeOf(inode).toString(8)} ${2 + subdirs} ` +
          `${st.uid} ${st.gid} 0 ${mtime} - - -${xattrText(st.xattrs)}\n`,
      );
      const base = path === "/" ? "/" : path + "/";
      for (let i = children.length - 1; i >= 0; i--)
        stack.push({ path: base + children[i][0], inode: children[i][1] });
      continue;
    }
    const c = inode.content;
    let size = 0;
    let rdev = 0;
    let payload: ByteString | undefined;
    let content: ByteString | undefined;
    let digest = "-";
    switch (c.type) {
      case "reg":
        size = c.size;
        payload = c.payload === "" ? undefined : c.payload;
        if (c.inline !== undefined && c.inline.length > 0) content = c.inline.toString("latin1");
        if (c.digest !== undefined) digest = c.digest.toLowerCase();
        break;
      case "symlink":
        size = c.target.length;
        payload = c.target;
        break;
      case "chr":
      case "blk":
        rdev = c.rdev;
        break;
      default:
        break;
    }
    const first = firstPath.get(inode);
    let modeText = modeOf(inode).toString(8);
    if (first !== undefined) {
      modeText = "@" + modeText;
      payload = first;
    } else {
      firstPath.set(inode, path);
    }
    out.push(
      `${escapeField(path)} ${size} ${modeText} ${inode.nlink} ${st.uid} ${st.gid} ${rdev} ${mtime} ` +
        `${escapeOptional(payload)} ${escapeOptional(content)} ${digest}${xattrText(st.xattrs)}\n`,
    );
  }
  return Buffer.from(out.join(""), "latin1");
}
