// The composefs dumpfile: the line-per-file text format that `mkcomposefs --from-file` reads and
// `composefs-info dump` prints (reference: composefs-erofs.md §2, all of §2.1–§2.5; the hardlink and xattr
// limits of §1.10–§1.11 that the C parser enforces while reading).
//
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [KEY=VALUE …]
//
// Pure: `parseDumpfile` turns bytes into a tree (src/tree/tree.ts) with the rules of mkcomposefs 1.0.8 —
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
import {
  Directory,
  FileSystem,
  Leaf,
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
  newStat,
  type ByteString,
  type Inode,
  type LeafContent,
} from "../tree/tree.ts";

// The composefs input limits live with the image format; the parser enforces them and re-exports them.
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
export {
  FILE_SIZE_MAX,
  INLINE_CONTENT_MAX,
  NAME_MAX,
  PATH_MAX,
  XATTR_INODE_BUDGET,
  XATTR_NAME_MAX,
  XATTR_TEXT_MAX,
  XATTR_VALUE_MAX,
};

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
  line: number;
  /** Target path (unescaped), or null for a `-` PAYLOAD. */
  target: ByteString | null;
  parent: Directory;
  name: ByteString;
}

interface Located {
  node: Inode;
  parent: Directory | null;
  name: ByteString;
}

/** Per-inode xattr bookkeeping mirroring lcfs_node_set_xattr's budget. */
interface XattrBudget {
  size: number;
}

/**
 * Parse a dumpfile into a tree with mkcomposefs 1.0.8's rules (composefs-erofs.md §2.1–§2.5). `strict` is
 * mkcomposefs's `CFS_PARSE_STRICT=1`: a trailing newline, symlink SIZE equal to the target length, no CONTENT
 * on symlinks, RDEV 0 on non-devices. Throws DumpfileError naming the line.
 */
export function parseDumpfile(input: Buffer, opts: { strict?: boolean } = {}): FileSystem {
  const strict = opts.strict ?? false;
  const text = input.toString("latin1");
  let root: Directory | null = null;
  const fixups = new Map<Leaf, HardlinkFixup>();
  const parentCache: ParentCache = { prefix: null, parent: null };

  let lineNo = 0;
  let pos = 0;
  while (pos < text.length) {
    lineNo++;
    let nl = text.indexOf("\n", pos);
    if (nl < 0) {
      if (strict) throw new DumpfileError(lineNo, "missing trailing newline (required in strict mode)");
      nl = text.length;
    }
    const line = text.slice(pos, nl);
    pos = nl + 1;
    root = parseLine(line, lineNo, strict, root, fixups, parentCache);
  }
  if (root === null) throw new DumpfileError(Math.max(lineNo, 1), "no root directory line (empty input)");
  resolveHardlinks(root, fixups);
  return new FileSystem(root);
}

/**
 * The parent found for the previous line, keyed by the raw path text before its last `/`. Dumpfiles list entries
 * depth-first, so consecutive lines mostly share it; the tree only grows, so a cached lookup stays right.
 */
interface ParentCache {
  prefix: string | null;
  parent: Inode | null;
}

function parseLine(
  line: string,
  lineNo: number,
  strict: boolean,
  root: Directory | null,
  fixups: Map<Leaf, HardlinkFixup>,
  parentCache: ParentCache,
): Directory {
  const fail = (problem: string): never => {
    throw new DumpfileError(lineNo, problem);
  };
  const nul = line.indexOf("\0");
  if (nul >= 0) fail(`embedded NUL byte at column ${nul + 1}`);

  // The 11 fixed fields, split at single spaces; missing trailing fields are empty.
  const fields: string[] = [];
  let p = 0;
  for (let i = 0; i < 11; i++) {
    const sp = line.indexOf(" ", p);
    if (sp < 0) {
      fields.push(line.slice(p));
      p = line.length;
    } else {
      fields.push(line.slice(p, sp));
      p = sp + 1;
    }
  }
  const rest = line.slice(p);
  const [fPath, fSize, fMode, fNlink, fUid, fGid, fRdev, fMtime, fPayload, fContent, fDigest] = fields;

  const unescape = (field: string, what: string): ByteString => {
    const r = unescapeField(field);
    if (typeof r !== "string") return fail(`${what}: ${r.error}`);
    return r;
  };
  const unescapeOptional = (field: string, what: string): ByteString | null =>
    field === "-" ? null : unescape(field, what);

  const path = cString(unescape(fPath, "PATH"));
  if (path === "") fail("empty PATH");

  let modeField = fMode;
  const isHardlink = modeField.startsWith("@");
  if (isHardlink) modeField = modeField.slice(1);
  let mode = plainNumber(modeField, 8);
  if (mode === null || mode > 0xffffffff) {
    const modeBig = parseCUnsigned(modeField, 8);
    if (modeBig === null) return fail(`invalid MODE ${JSON.stringify(fMode)} (octal expected)`);
    mode = Number(modeBig & 0xffffffffn);
  }
  if (!validType(mode)) fail(`invalid MODE ${mode.toString(8)}: not a known file type`);
  const type = mode & S_IFMT;

  // Attach the new entry (the tree_add_node step). For hardlinks a placeholder leaf holds the place until the
  // target is resolved at the end.
  const stat = newStat({ mode: mode & 0o7777 });
  let node: Inode;
  if (type === S_IFDIR) node = new Directory(stat);
  else node = new Leaf(stat, { type: "reg", size: 0 });
  let parent: Directory | null = null;
  let name: ByteString = "";
  if (path === "/") {
    if (!isDirectory(node)) fail("the root must be a directory");
    if (root !== null) fail("a second root line");
    root = node as Directory;
  } else {
    if (root === null) return fail(`root line missing: the first line must be "/", not ${jsonPath(path)}`);
    const slash = path.lastIndexOf("/");
    const prefix = slash < 0 ? "" : path.slice(0, slash);
    let at: { parent: Inode; name: ByteString } | null;
    if (parentCache.parent !== null && parentCache.prefix === prefix)
      at = { parent: parentCache.parent, name: path.slice(slash + 1) };
    else {
      at = lookupParent(root, path);
      if (at !== null) {
        parentCache.prefix = prefix;
        parentCache.parent = at.parent;
      }
    }
    if (at === null) return fail(`parent directory missing for ${jsonPath(path)}`);
    if (!isDirectory(at.parent)) return fail(`parent of ${jsonPath(path)} is not a directory`);
    parent = at.parent;
    name = at.name;
    if (name === "." || name === "..") fail(`invalid . or .. in path ${jsonPath(path)}`);
    if (name === "") fail(`empty file name in path ${jsonPath(path)}`);
    if (name.length > NAME_MAX) fail(`file name longer than ${NAME_MAX} bytes in path ${jsonPath(path)}`);
    if (parent.entries.has(name)) fail(`duplicate path ${jsonPath(path)}`);
    parent.entries.set(name, node);
  }

  if (isHardlink) {
    if (type === S_IFDIR) fail("directories can't be hardlinked");
    const target = unescapeOptional(fPayload, "PAYLOAD");
    // `parent` is non-null: a hardlink is never the root (the root is a directory).
    fixups.set(node as Leaf, {
      line: lineNo,
      target: target === null ? null : cString(target),
      parent: parent as Directory,
      name,
    });
    return root;
  }

  const num = (field: string, what: string): bigint => {
    const v = parseCUnsigned(field, 10);
    if (v === null) return fail(`invalid ${what} ${JSON.stringify(field)}`);
    return v;
  };
  /** A field truncated to 32 bits, as C stores it. */
  const u32 = (field: string, what: string): number => {
    const v = plainNumber(field, 10);
    return v !== null && v <= 0xffffffff ? v : Number(num(field, what) & 0xffffffffn);
  };
  const sizePlain = plainNumber(fSize, 10);
  const size = sizePlain !== null ? BigInt(sizePlain) : num(fSize, "SIZE");
  const nlink = u32(fNlink, "NLINK");
  const uid = u32(fUid, "UID");
  const gid = u32(fGid, "GID");
  const rdev = u32(fRdev, "RDEV");

  const dot = fMtime.indexOf(".");
  const secField = dot < 0 ? fMtime : fMtime.slice(0, dot);
  const nsecField = dot < 0 ? "" : fMtime.slice(dot + 1);
  const secPlain = plainNumber(secField, 10);
  const sec = secPlain !== null ? secPlain : Number(BigInt.asIntN(64, num(secField, "MTIME seconds")));
  const nsecPlain = plainNumber(nsecField, 10);
  const nsec = nsecPlain !== null ? nsecPlain : num(nsecField, "MTIME nanoseconds");
  if (!Number.isSafeInteger(sec)) fail(`MTIME seconds ${JSON.stringify(fMtime)} out of range`);
  if (nsec >= 1000000000) fail(`MTIME nanoseconds ${JSON.stringify(fMtime)} must be below 10^9`);
  stat.mtimeSec = sec;
  stat.mtimeNsec = Number(nsec);
  stat.uid = uid;
  stat.gid = gid;

  const payloadRaw = unescapeOptional(fPayload, "PAYLOAD");
  const payload = payloadRaw === null ? null : cString(payloadRaw);
  const content = unescapeOptional(fContent, "CONTENT");
  if (content !== null && BigInt(content.length) !== size)
    fail(`CONTENT is ${content.length} bytes but SIZE is ${size}`);
  const digestField = unescapeOptional(fDigest, "DIGEST");
  let digest: string | undefined;
  if (digestField !== null && digestField !== "") {
    if (!/^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.test(digestField))
      fail(`invalid DIGEST ${JSON.stringify(digestField)}: expected 64 (sha256) or 128 (sha512) hex digits`);
    digest = digestField.toLowerCase();
  }

  if (type === S_IFCHR || type === S_IFBLK) {
    // rdev is kept below
  } else if (strict && rdev !== 0) {
    fail(`non-zero RDEV ${rdev} on a non-device (strict mode)`);
  }

  if (type === S_IFLNK) {
    if (payload === null || payload === "") fail("symlink target is empty");
    const target = payload as string;
    if (target.length >= PATH_MAX) fail(`symlink target is ${target.length} bytes, limit ${PATH_MAX - 1}`);
    if (strict && size !== BigInt(target.length))
      fail(`symlink SIZE ${size} differs from the target length ${target.length} (strict mode)`);
    if (strict && content !== null && content.length > 0) fail("symlink cannot have CONTENT (strict mode)");
  } else {
    if (payload !== null && payload.length >= PATH_MAX)
      fail(`PAYLOAD is ${payload.length} bytes, limit ${PATH_MAX - 1}`);
    if (content !== null && content.length > INLINE_CONTENT_MAX)
      fail(`inline content size ${content.length} exceeds maximum ${INLINE_CONTENT_MAX}`);
  }
  // An empty CONTENT is no content (lcfs_node_set_content stores NULL for 0 bytes).
  const inline = content !== null && content.length > 0 ? content : null;
  if (type === S_IFREG && inline === null && size > BigInt(FILE_SIZE_MAX))
    fail(`file too large: SIZE ${size} exceeds ${FILE_SIZE_MAX}`);

  if (rest.length > XATTR_TEXT_MAX)
    fail(`too many xattrs: ${rest.length} bytes after DIGEST, limit ${XATTR_TEXT_MAX}`);
  const budget: XattrBudget = { size: 0 };
  let r = 0;
  while (r < rest.length) {
    let sp = rest.indexOf(" ", r);
    if (sp < 0) sp = rest.length;
    parseXattr(rest.slice(r, sp), stat.xattrs, budget, fail, unescape);
    r = sp + 1;
  }

  if (!isDirectory(node)) {
    node.nlink = nlink;
    node.content = leafContent(type, Number(size), inline, payload, digest, rdev);
  }
  return root;
}

function leafContent(
  type: number,
  size: number,
  inline: ByteString | null,
  payload: ByteString | null,
  digest: string | undefined,
  rdev: number,
): LeafContent {
  switch (type) {
    case S_IFREG: {
      const c: LeafContent = { type: "reg", size: inline !== null ? inline.length : size };
      if (inline !== null) c.inline = Buffer.from(inline, "latin1");
      if (digest !== undefined) c.digest = digest;
      if (payload !== null && payload !== "") c.payload = payload;
      return c;
    }
    case S_IFLNK:
      return { type: "symlink", target: payload as ByteString };
    case S_IFCHR:
      return { type: "chr", rdev };
    case S_IFBLK:
      return { type: "blk", rdev };
    case S_IFIFO:
      return { type: "fifo" };
    default:
      return { type: "sock" };
  }
}

function parseXattr(
  token: string,
  xattrs: Map<ByteString, Buffer>,
  budget: XattrBudget,
  fail: (problem: string) => never,
  unescape: (field: string, what: string) => ByteString,
): void {
  const eq = token.indexOf("=");
  if (eq < 0) fail(`missing = in xattr ${JSON.stringify(token)}`);
  const key = cString(unescape(token.slice(0, eq), "xattr key"));
  const value = unescape(token.slice(eq + 1), "xattr value");
  if (key === "") fail("empty xattr key");
  if (key.length > XATTR_NAME_MAX) fail(`xattr key is ${key.length} bytes, limit ${XATTR_NAME_MAX}`);
  if (value.length > XATTR_VALUE_MAX)
    fail(`xattr ${escapeField(key)} value is ${value.length} bytes, limit ${XATTR_VALUE_MAX}`);
  // lcfs_node_set_xattr: replacing a key first removes the old entry; each entry costs 7 + key + value bytes
  // (worst-case padding), the first one also the 12-byte body header.
  const old = xattrs.get(key);
  if (old !== undefined) {
    xattrs.delete(key);
    budget.size = xattrs.size > 0 ? budget.size - (7 + key.length + old.length) : 0;
  }
  const cost = 7 + key.length + value.length + (xattrs.size === 0 ? 12 : 0);
  if (budget.size + cost > XATTR_INODE_BUDGET)
    fail(`xattrs exceed the per-inode limit of ${XATTR_INODE_BUDGET} bytes at ${escapeField(key)}`);
  budget.size += cost;
  xattrs.set(key, Buffer.from(value, "latin1"));
}

function jsonPath(path: ByteString): string {
  return JSON.stringify(escapeField(path));
}

/**
 * mkcomposefs's lookup_parent_path: leading and repeated slashes are skipped, every component but the last must
 * exist, the last component (possibly empty after a trailing slash) is the new name.
 */
function lookupParent(root: Directory, path: ByteString): { parent: Inode; name: ByteString } | null {
  let node: Inode = root;
  let i = 0;
  for (;;) {
    while (path[i] === "/") i++;
    const slash = path.indexOf("/", i);
    if (slash < 0) return { parent: node, name: path.slice(i) };
    const child: Inode | undefined = isDirectory(node) ? node.entries.get(path.slice(i, slash)) : undefined;
    if (child === undefined) return null;
    node = child;
    i = slash;
  }
}

/** mkcomposefs's lookup_path (hardlink targets): slashes skipped, every component must exist. */
function lookupPath(root: Directory, path: ByteString): Located | null {
  let cur: Located = { node: root, parent: null, name: "" };
  let i = 0;
  for (;;) {
    while (path[i] === "/") i++;
    if (i >= path.length) return cur;
    let slash = path.indexOf("/", i);
    if (slash < 0) slash = path.length;
    const name = path.slice(i, slash);
    const child = isDirectory(cur.node) ? cur.node.entries.get(name) : undefined;
    if (child === undefined) return null;
    cur = { node: child, parent: cur.node as Directory, name };
    i = slash;
  }
}

/**
 * Point every `@` entry at its target's leaf (following `@` chains), after the whole file is read. The target
 * keeps its own NLINK; the leaf records the non-`@` entry as its primary.
 */
function resolveHardlinks(root: Directory, fixups: Map<Leaf, HardlinkFixup>): void {
  const resolved = new Map<Leaf, Located>();
  const resolve = (start: Leaf): Located => {
    const done = resolved.get(start);
    if (done) return done;
    const chain = new Set<Leaf>();
    let cur = start;
    let result: Located;
    for (;;) {
      const fix = fixups.get(cur) as HardlinkFixup;
      const fail = (problem: string): never => {
        throw new DumpfileError(fix.line, problem);
      };
      chain.add(cur);
      if (fix.target === null) return fail("hardlink without a target path (PAYLOAD is -)");
      const t = lookupPath(root, fix.target);
      if (t === null) return fail(`hardlink target ${jsonPath(fix.target)} does not exist`);
      if (t.node === cur) return fail(`self-referential hardlink ${jsonPath(fix.target)}`);
      if (isDirectory(t.node)) return fail(`hardlink target ${jsonPath(fix.target)} is a directory`);
      const known = resolved.get(t.node);
      if (known) {
        result = known;
        break;
      }
      if (!fixups.has(t.node)) {
        result = t;
        break;
      }
      if (chain.has(t.node)) return fail(`hardlink cycle through ${jsonPath(fix.target)}`);
      cur = t.node;
    }
    for (const l of chain) resolved.set(l, result);
    return result;
  };
  // Resolve everything first: lookups must see the placeholders, not leaves already linked under @ names.
  const targets = [...fixups.keys()].map((placeholder) => resolve(placeholder));
  let i = 0;
  for (const fix of fixups.values()) {
    const target = targets[i++];
    const leaf = target.node as Leaf;
    fix.parent.entries.set(fix.name, leaf);
    leaf.primary = { parent: target.parent as Directory, name: target.name };
  }
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
