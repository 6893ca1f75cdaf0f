// Reader for composefs EROFS images (reference: composefs-erofs.md §1 for the layout, §2.5 for how
// `composefs-info dump` turns an image back into a tree). Reads images written by C mkcomposefs and by
// writer.ts. The input is untrusted: every offset and size is bounds-checked, every nid is decoded at most once,
// a directory reached twice (a loop or a hard-linked directory) is an error, and the total amount of metadata
// decoded may not exceed the image size (in a valid image inodes, directory blocks and shared xattrs are disjoint),
// so the work is linear in the image size and a crafted image cannot make us loop or blow up. Errors are
// StratumError E_CORRUPT whose message starts with the image label.
//
// composefs conventions undone (as composefs-info does):
// - `trusted.overlay.overlay.X` → `trusted.overlay.X`; every other `trusted.overlay.*` is dropped (the root's
//   `opaque=y`, metacopy, redirect);
// - `trusted.overlay.redirect` of a regular file → `payload` (without the leading `/`; C's reader has an
//   off-by-one here that we do not copy), a 36-byte (sha256) or 68-byte (sha512) `trusted.overlay.metacopy` → `digest`;
// - a regular file carrying the escaped `trusted.overlay.overlay.whiteout` → a whiteout (chardev 0:0); the
//   marker xattrs `trusted.overlay.overlay.whiteouts`, `user.overlay.whiteout(s)` are dropped (v1's
//   `opaque=x` markers are kept, as composefs-info keeps them);
// - chardev(0,0) entries of the root (the 00–ff stubs) are skipped;
// - several dirents with one nid are one Leaf; the first path in DFS sorted order is its `primary`.

import { StratumError } from "../../errors.ts";
import {
  Directory,
  FileSystem,
  Leaf,
  S_IFBLK as T_IFBLK,
  S_IFCHR as T_IFCHR,
  S_IFDIR as T_IFDIR,
  S_IFIFO as T_IFIFO,
  S_IFLNK as T_IFLNK,
  S_IFMT as T_IFMT,
  S_IFREG as T_IFREG,
  S_IFSOCK as T_IFSOCK,
  newStat,
  type ByteString,
  type LeafContent,
} from "../../tree/tree.ts";
import * as F from "./format.ts";

// Local copies of the constants used on hot paths (imported bindings cost a getter call per use under tsx).
const S_IFMT = T_IFMT;
const S_IFREG = T_IFREG;
const S_IFDIR = T_IFDIR;
const S_IFLNK = T_IFLNK;
const S_IFCHR = T_IFCHR;
const S_IFBLK = T_IFBLK;
const S_IFIFO = T_IFIFO;
const S_IFSOCK = T_IFSOCK;
const BLOCK_BITS = F.BLOCK_BITS;
const BLOCK_SIZE = F.BLOCK_SIZE;
const SLOT_SIZE = F.SLOT_SIZE;
const HDR = { ...F.HDR };
const SB = { ...F.SB };
const IC = { ...F.IC };
const IE = { ...F.IE };
const SUPER_OFFSET = F.SUPER_OFFSET;
const SUPER_SIZE = F.SUPER_SIZE;
const DIRENT_SIZE = F.DIRENT_SIZE;
const INODE_COMPACT_SIZE = F.INODE_COMPACT_SIZE;
const INODE_EXTENDED_SIZE = F.INODE_EXTENDED_SIZE;
const LAYOUT_FLAT_PLAIN = F.LAYOUT_FLAT_PLAIN;
const LAYOUT_FLAT_INLINE = F.LAYOUT_FLAT_INLINE;
const LAYOUT_CHUNK_BASED = F.LAYOUT_CHUNK_BASED;
const XATTR_ENTRY_SIZE = F.XATTR_ENTRY_SIZE;
const XATTR_IBODY_HEADER_SIZE = F.XATTR_IBODY_HEADER_SIZE;

/** EROFS_FEATURE_INCOMPAT_CHUNKED_FILE: the only incompat feature a composefs image may announce. */
const FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;
/** composefs image format versions we understand (composefs_version in the header). */
const MAX_COMPOSEFS_VERSION = 1;
// The composefs limits (src/format/erofs/format.ts), copied into locals because they are read in loops.
const { INLINE_CONTENT_MAX, PATH_MAX, NAME_MAX, XATTR_NAME_MAX, FILE_SIZE_MAX } = F;

const OVERLAY_PREFIX = "trusted.overlay.";
const OVERLAY_ESCAPE_PREFIX = "trusted.overlay.overlay.";
const XATTR_REDIRECT = "trusted.overlay.redirect";
const XATTR_METACOPY = "trusted.overlay.metacopy";
const XATTR_ESCAPED_WHITEOUT = "trusted.overlay.overlay.whiteout";
const XATTR_DROPPED = new Set([
  "trusted.overlay.overlay.whiteouts",
  "user.overlay.whiteout",
  "user.overlay.whiteouts",
]);

/** Xattr name prefix by e_name_index (§1.10); 0 = the whole name is stored. */
const PREFIXES: (string | undefined)[] = [];
PREFIXES[0] = "";
for (const [prefix, index] of F.XATTR_PREFIXES) PREFIXES[index] = prefix;

/** One decoded inode header. */
interface RawInode {
  nid: number;
  /** Byte offset of the inode in the image. */
  off: number;
  layout: number;
  /** Full 16-bit i_mode. */
  mode: number;
  nlink: number;
  size: number;
  /** Raw i_u: block address, rdev or chunk info. */
  u: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Inode header size (32 or 64). */
  isz: number;
  /** Size of the in-inode xattr body. */
  xsz: number;
}

class Image {
  readonly buf: Buffer;
  readonly label: string;
  readonly rootNid: number;
  readonly composefsVersion: number;
  private readonly buildTime: number;
  private readonly buildTimeNsec: number;
  private readonly xattrBase: number;
  private readonly sharedCache = new Map<number, [ByteString, Buffer]>();
  private readonly sharedRedirect = new Map<number, ByteString | null>();
  /** Bytes of metadata decoded so far; bounded by the image size (see the header comment). */
  private decoded = 0;

  constructor(buf: Buffer, label: string) {
    this.buf = buf;
    this.label = label;
    if (buf.length < BLOCK_SIZE) this.fail(`image too small (${buf.length} bytes, at least ${BLOCK_SIZE})`);
    if (buf.readUInt32LE(HDR.magic) !== F.COMPOSEFS_MAGIC)
      this.fail("not a composefs image (bad composefs header magic)");
    const hv = buf.readUInt32LE(HDR.version);
    if (hv !== F.COMPOSEFS_HEADER_VERSION) this.fail(`unsupported composefs header version ${hv}`);
    this.composefsVersion = buf.readUInt32LE(HDR.composefsVersion);
    if (this.composefsVersion > MAX_COMPOSEFS_VERSION)
      this.fail(`unsupported composefs format version ${this.composefsVersion}`);

    const s = SUPER_OFFSET;
    if (buf.readUInt32LE(s + SB.magic) !== F.EROFS_SUPER_MAGIC) this.fail("bad EROFS superblock magic");
    if (buf[s + SB.blkszbits] !== BLOCK_BITS)
      this.fail(`unsupported EROFS block size 2^${buf[s + SB.blkszbits]} (only 4096 is used by composefs)`);
    if (buf[s + SB.extslots] !== 0) this.fail("unsupported EROFS superblock extension slots");
    const incompat = buf.readUInt32LE(s + SB.featureIncompat);
    if ((incompat & ~FEATURE_INCOMPAT_CHUNKED_FILE) !== 0)
      this.fail(`unsupported EROFS incompatible features 0x${incompat.toString(16)} (compression or other)`);
    if (buf.readUInt32LE(s + SB.metaBlkaddr) !== 0) this.fail("EROFS meta_blkaddr is not 0");
    const blocks = buf.readUInt32LE(s + SB.blocks);
    if (blocks * BLOCK_SIZE > buf.length)
      this.fail(`image truncated: the superblock counts ${blocks} blocks, the image has ${buf.length} bytes`);
    this.rootNid = buf.readUInt16LE(s + SB.rootNid);
    this.buildTime = Number(buf.readBigInt64LE(s + SB.buildTime));
    this.buildTimeNsec = buf.readUInt32LE(s + SB.buildTimeNsec);
    this.xattrBase = buf.readUInt32LE(s + SB.xattrBlkaddr) * BLOCK_SIZE;
  }

  fail(problem: string): never {
    throw new StratumError("E_CORRUPT", `${this.label}: ${problem}`);
  }

  /** Account for `n` more bytes of decoded metadata. */
  private charge(n: number, what: () => string): void {
    this.decoded += n;
    if (this.decoded > this.buf.length)
      this.fail(`${what()}: more metadata than the image holds (overlapping inodes or blocks)`);
  }

  /** Check that [off, off+len) lies inside the image. */
  private check(off: number, len: number, where: () => string, what: string): void {
    if (!(off >= 0 && len >= 0 && off + len <= this.buf.length))
      this.fail(
        `${where()}: ${what} out of range (bytes ${off}..${off + len} of a ${this.buf.length}-byte image)`,
      );
  }

  private readU64(off: number, where: () => string, what: string): number {
    const hi = this.buf.readUInt32LE(off + 4);
    if (hi >= 0x200000) this.fail(`${where()}: ${what} ${this.buf.readBigUInt64LE(off)} out of range`);
    return hi * 0x100000000 + this.buf.readUInt32LE(off);
  }

  inode(nid: number, path: string): RawInode {
    const where = (): string => `inode ${nid} (${path})`;
    const off = nid * SLOT_SIZE;
    if (off < SUPER_OFFSET + SUPER_SIZE) this.fail(`${where()}: nid points into the image header`);
    this.check(off, INODE_COMPACT_SIZE, where, "nid");
    const b = this.buf;
    const format = b.readUInt16LE(off);
    const extended = (format & 1) === 1;
    const layout = (format >> 1) & 7;
    if (format >> 4 !== 0) this.fail(`${where()}: unknown i_format bits 0x${format.toString(16)}`);
    const isz = extended ? INODE_EXTENDED_SIZE : INODE_COMPACT_SIZE;
    this.check(off, isz, where, "inode");
    const icount = b.readUInt16LE(off + 2);
    const xsz = icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4;
    this.check(off + isz, xsz, where, "xattr body");
    this.charge(isz + xsz, where);
    let ino: RawInode;
    if (extended) {
      ino = {
        nid,
        off,
        layout,
        mode: b.readUInt16LE(off + IE.mode),
        nlink: b.readUInt32LE(off + IE.nlink),
        size: this.readU64(off + IE.size, where, "i_size"),
        u: b.readUInt32LE(off + IE.u),
        uid: b.readUInt32LE(off + IE.uid),
        gid: b.readUInt32LE(off + IE.gid),
        mtimeSec: Number(b.readBigInt64LE(off + IE.mtime)),
        mtimeNsec: b.readUInt32LE(off + IE.mtimeNsec),
        isz,
        xsz,
      };
      if (!Number.isSafeInteger(ino.mtimeSec)) this.fail(`${where()}: mtime out of range`);
    } else {
      ino = {
        nid,
        off,
        layout,
        mode: b.readUInt16LE(off + IC.mode),
        nlink: b.readUInt16LE(off + IC.nlink),
        size: b.readUInt32LE(off + IC.size),
        u: b.readUInt32LE(off + IC.u),
        uid: b.readUInt16LE(off + IC.uid),
        gid: b.readUInt16LE(off + IC.gid),
        mtimeSec: this.buildTime,
        mtimeNsec: this.buildTimeNsec,
        isz,
        xsz,
      };
      if (!Number.isSafeInteger(ino.mtimeSec)) this.fail(`${where()}: superblock build_time out of range`);
    }
    if (ino.mtimeNsec >= 1e9) this.fail(`${where()}: mtime nanoseconds ${ino.mtimeNsec} out of range`);
    switch (ino.mode & S_IFMT) {
      case S_IFREG:
      case S_IFDIR:
      case S_IFLNK:
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK:
        break;
      default:
        this.fail(`${where()}: invalid file type in mode 0${ino.mode.toString(8)}`);
    }
    return ino;
  }

  /**
   * The data of a flat (plain or inline) inode as a list of pieces: full blocks at i_u, then the inline tail
   * right after the xattr body. Each piece is a view of the image.
   */
  flatData(ino: RawInode, path: string): Buffer[] {
    const where = (): string => `inode ${ino.nid} (${path})`;
    const pieces: Buffer[] = [];
    if (ino.layout !== LAYOUT_FLAT_PLAIN && ino.layout !== LAYOUT_FLAT_INLINE)
      this.fail(`${where()}: unexpected data layout ${ino.layout}`);
    const inline = ino.layout === LAYOUT_FLAT_INLINE;
    const tail = inline ? ino.size % BLOCK_SIZE : 0;
    if (inline && tail === 0 && ino.size > 0) this.fail(`${where()}: inline layout without an inline tail`);
    const blockBytes = ino.size - tail;
    if (blockBytes > 0) {
      const start = ino.u * BLOCK_SIZE;
      this.check(start, blockBytes, where, "data blocks");
      this.charge(blockBytes, where);
      for (let o = 0; o < blockBytes; o += BLOCK_SIZE)
        pieces.push(this.buf.subarray(start + o, start + Math.min(o + BLOCK_SIZE, blockBytes)));
    }
    if (tail > 0) {
      const start = ino.off + ino.isz + ino.xsz;
      this.check(start, tail, where, "inline data");
      if ((start % BLOCK_SIZE) + tail > BLOCK_SIZE)
        this.fail(`${where()}: inline data crosses a block boundary`);
      this.charge(tail, where);
      pieces.push(this.buf.subarray(start, start + tail));
    }
    return pieces;
  }

  /** Directory entries (without `.` and `..`), in on-disk order, which must be strictly sorted. */
  dirents(ino: RawInode, path: string): { name: ByteString; nid: number }[] {
    const where = (): string => `directory inode ${ino.nid} (${path})`;
    const out: { name: ByteString; nid: number }[] = [];
    let prev: ByteString | null = null;
    for (const chunk of this.flatData(ino, path)) {
      if (chunk.length < DIRENT_SIZE) this.fail(`${where()}: directory chunk of ${chunk.length} bytes`);
      const first = chunk.readUInt16LE(8);
      if (first < DIRENT_SIZE || first % DIRENT_SIZE !== 0 || first > chunk.length)
        this.fail(`${where()}: bad first name offset ${first}`);
      const n = first / DIRENT_SIZE;
      for (let i = 0; i < n; i++) {
        const d = i * DIRENT_SIZE;
        const nameoff = chunk.readUInt16LE(d + 8);
        let end: number;
        if (i + 1 < n) {
          end = chunk.readUInt16LE(d + DIRENT_SIZE + 8);
        } else {
          const nul = nameoff < chunk.length ? chunk.indexOf(0, nameoff) : -1;
          end = nul < 0 ? chunk.length : nul;
        }
        if (nameoff < first || nameoff >= chunk.length || end <= nameoff || end > chunk.length)
          this.fail(`${where()}: dirent ${i} name offset ${nameoff}..${end} out of range`);
        const name = chunk.toString("latin1", nameoff, end);
        if (name.length > NAME_MAX) this.fail(`${where()}: name longer than ${NAME_MAX} bytes`);
        if (name.includes("\0") || name.includes("/"))
          this.fail(`${where()}: invalid file name ${JSON.stringify(name)}`);
        if (prev !== null && !(prev < name))
          this.fail(`${where()}: entries not in strictly sorted order at ${JSON.stringify(name)}`);
        prev = name;
        if (name === "." || name === "..") continue;
        const nid = chunk.readUInt32LE(d + 4) * 0x100000000 + chunk.readUInt32LE(d);
        if (nid > this.buf.length) this.fail(`${where()}: ${JSON.stringify(name)} has nid out of range`);
        out.push({ name, nid });
      }
    }
    return out;
  }

  /** Decode one xattr entry at `off`; returns the key, the value view and the entry size. */
  private xattrEntry(off: number, limit: number, where: () => string): [ByteString, Buffer, number] {
    if (off + XATTR_ENTRY_SIZE > limit) this.fail(`${where()}: xattr entry out of range`);
    const b = this.buf;
    const nameLen = b[off];
    const index = b[off + 1];
    const valueLen = b.readUInt16LE(off + 2);
    const size = (XATTR_ENTRY_SIZE + nameLen + valueLen + 3) & ~3;
    if (off + XATTR_ENTRY_SIZE + nameLen + valueLen > limit)
      this.fail(`${where()}: xattr entry out of range`);
    const prefix = PREFIXES[index];
    if (prefix === undefined) this.fail(`${where()}: unknown xattr name index ${index}`);
    const key = prefix + b.toString("latin1", off + 4, off + 4 + nameLen);
    if (key === "" || key.includes("\0")) this.fail(`${where()}: invalid xattr name ${JSON.stringify(key)}`);
    const value = b.subarray(off + 4 + nameLen, off + 4 + nameLen + valueLen);
    return [key, value, size];
  }

  /**
   * The payload of a regular file's `trusted.overlay.redirect`, or null: like xattrs() but without decoding the
   * other entries (imageObjects).
   */
  redirect(ino: RawInode, path: string): ByteString | null {
    if (ino.xsz === 0) return null;
    const where = (): string => `inode ${ino.nid} (${path})`;
    const b = this.buf;
    const start = ino.off + ino.isz;
    const end = start + ino.xsz;
    const shared = b[start + 4];
    if (XATTR_IBODY_HEADER_SIZE + shared * 4 > ino.xsz)
      this.fail(`${where()}: ${shared} shared xattrs do not fit the xattr body`);
    let p = start + XATTR_IBODY_HEADER_SIZE + shared * 4;
    while (p < end) {
      const [key, value, size] = this.xattrEntry(p, end, where);
      if (key === XATTR_REDIRECT) return payloadOfRedirect(value);
      p += size;
    }
    for (let i = 0; i < shared; i++) {
      const id = b.readUInt32LE(start + XATTR_IBODY_HEADER_SIZE + i * 4);
      let e = this.sharedRedirect.get(id);
      if (e === undefined) {
        const off = this.xattrBase + id * 4;
        const [key, value, size] = this.xattrEntry(off, b.length, () => `${where()}: shared xattr ${id}`);
        this.charge(size, () => `${where()}: shared xattr ${id}`);
        e = key === XATTR_REDIRECT ? payloadOfRedirect(value) : null;
        this.sharedRedirect.set(id, e);
      }
      if (e !== null) return e;
    }
    return null;
  }

  /** The raw xattrs of an inode: inline entries first, then shared ones (the order C's reader uses). */
  xattrs(ino: RawInode, path: string): [ByteString, Buffer][] {
    if (ino.xsz === 0) return [];
    const where = (): string => `inode ${ino.nid} (${path})`;
    const start = ino.off + ino.isz;
    const end = start + ino.xsz;
    const shared = this.buf[start + 4];
    if (XATTR_IBODY_HEADER_SIZE + shared * 4 > ino.xsz)
      this.fail(`${where()}: ${shared} shared xattrs do not fit the xattr body`);
    const out: [ByteString, Buffer][] = [];
    let p = start + XATTR_IBODY_HEADER_SIZE + shared * 4;
    while (p < end) {
      const [key, value, size] = this.xattrEntry(p, end, where);
      out.push([key, value]);
      p += size;
    }
    for (let i = 0; i < shared; i++) {
      const id = this.buf.readUInt32LE(start + XATTR_IBODY_HEADER_SIZE + i * 4);
      let e = this.sharedCache.get(id);
      if (e === undefined) {
        const off = this.xattrBase + id * 4;
        const [key, value, size] = this.xattrEntry(
          off,
          this.buf.length,
          () => `${where()}: shared xattr ${id}`,
        );
        this.charge(size, () => `${where()}: shared xattr ${id}`);
        e = [key, value];
        this.sharedCache.set(id, e);
      }
      out.push(e);
    }
    return out;
  }
}

/** The payload a redirect value stands for: the value without one leading `/`, up to a NUL (C strndup). */
function payloadOfRedirect(value: Buffer): ByteString {
  let s = value.toString("latin1");
  if (s.length > 1 && s.startsWith("/")) s = s.slice(1);
  const nul = s.indexOf("\0");
  return nul < 0 ? s : s.slice(0, nul);
}

/** Turn one raw inode into a tree node: a Directory (without its entries) or a Leaf; null for a root stub. */
function buildNode(img: Image, ino: RawInode, path: string, atRoot: boolean): Directory | Leaf | null {
  const where = (): string => `inode ${ino.nid} (${path})`;
  const type = ino.mode & S_IFMT;
  if (atRoot && type === S_IFCHR && ino.u === 0) return null;
  const stat = newStat({
    mode: ino.mode & 0o7777,
    uid: ino.uid,
    gid: ino.gid,
    mtimeSec: ino.mtimeSec,
    mtimeNsec: ino.mtimeNsec,
  });
  let payload: ByteString | undefined;
  let digest: string | undefined;
  let whiteout = false;
  for (const [rawKey, value] of img.xattrs(ino, path)) {
    let key = rawKey;
    if (key === XATTR_REDIRECT) {
      if (type === S_IFREG) payload = payloadOfRedirect(value);
      continue;
    }
    if (key === XATTR_METACOPY) {
      // Version 0, length, flags, algorithm (1 sha256, 2 sha512), then the digest.
      if (
        type === S_IFREG &&
        ((value.length === 36 && value[3] === 1) || (value.length === 68 && value[3] === 2))
      )
        digest = value.toString("hex", 4);
      continue;
    }
    if (key === XATTR_ESCAPED_WHITEOUT && type === S_IFREG) {
      whiteout = true;
      continue;
    }
    if (XATTR_DROPPED.has(key)) continue;
    if (key.startsWith(OVERLAY_PREFIX)) {
      if (!key.startsWith(OVERLAY_ESCAPE_PREFIX)) continue;
      key = OVERLAY_PREFIX + key.slice(OVERLAY_ESCAPE_PREFIX.length);
    }
    if (key.length > XATTR_NAME_MAX) img.fail(`${where()}: xattr name longer than ${XATTR_NAME_MAX} bytes`);
    stat.xattrs.set(key, Buffer.from(value));
  }

  if (type === S_IFDIR) {
    const dir = new Directory(stat);
    dir.imageSize = ino.size;
    return dir;
  }
  let content: LeafContent;
  if (whiteout) {
    content = { type: "chr", rdev: 0 };
  } else if (type === S_IFREG) {
    content = { type: "reg", size: ino.size };
    if (ino.size > 0) {
      if (ino.layout === LAYOUT_CHUNK_BASED) {
        if (ino.size > FILE_SIZE_MAX) img.fail(`${where()}: file size ${ino.size} out of range`);
        if (digest !== undefined) content.digest = digest;
        if (payload !== undefined && payload !== "") content.payload = payload;
      } else {
        if (ino.size > INLINE_CONTENT_MAX)
          img.fail(`${where()}: inline file content of ${ino.size} bytes (at most ${INLINE_CONTENT_MAX})`);
        content.inline = Buffer.concat(img.flatData(ino, path));
        if (payload !== undefined && payload !== "") content.payload = payload;
      }
    }
  } else if (type === S_IFLNK) {
    if (ino.size === 0 || ino.size >= PATH_MAX)
      img.fail(`${where()}: symlink target length ${ino.size} (must be 1..${PATH_MAX - 1})`);
    const target = Buffer.concat(img.flatData(ino, path)).toString("latin1");
    if (target.includes("\0")) img.fail(`${where()}: symlink target contains a NUL byte`);
    content = { type: "symlink", target };
  } else if (type === S_IFCHR) {
    content = { type: "chr", rdev: ino.u };
  } else if (type === S_IFBLK) {
    content = { type: "blk", rdev: ino.u };
  } else if (type === S_IFIFO) {
    content = { type: "fifo" };
  } else {
    content = { type: "sock" };
  }
  const leaf = new Leaf(stat, content);
  leaf.nlink = ino.nlink;
  return leaf;
}

interface Pending {
  parent: Directory;
  name: ByteString;
  nid: number;
  path: string;
}

function childPath(dirPath: string, name: ByteString): string {
  return (dirPath === "/" ? "/" : dirPath + "/") + name;
}

/**
 * Read a composefs image into a tree, undoing the composefs conventions the way `composefs-info dump` does
 * (composefs-erofs.md §2.5). `label` names the image in error messages (E_CORRUPT).
 */
export function readErofs(image: Buffer, label: string): FileSystem {
  const img: Image = new Image(image, label);
  const rootIno = img.inode(img.rootNid, "/");
  if ((rootIno.mode & S_IFMT) !== S_IFDIR) img.fail("the root inode is not a directory");
  const root = buildNode(img, rootIno, "/", false) as Directory;
  const seen = new Map<number, Directory | Leaf>([[img.rootNid, root]]);
  const links = new Map<Leaf, { parent: Directory; name: ByteString; count: number }>();
  const stack: Pending[] = [];
  const pushEntries = (dir: Directory, ino: RawInode, path: string): void => {
    const entries = img.dirents(ino, path);
    for (let i = entries.length - 1; i >= 0; i--) {
      const { name, nid } = entries[i];
      stack.push({ parent: dir, name, nid, path: childPath(path, name) });
    }
  };
  pushEntries(root, rootIno, "/");
  while (stack.length > 0) {
    const { parent, name, nid, path } = stack.pop() as Pending;
    const known = seen.get(nid);
    if (known !== undefined) {
      if (known.kind === "dir")
        img.fail(`${path}: directory inode ${nid} is reached twice (a directory loop or hard link)`);
      parent.entries.set(name, known);
      (links.get(known) as { count: number }).count++;
      continue;
    }
    const ino = img.inode(nid, path);
    const node = buildNode(img, ino, path, parent === root);
    if (node === null) continue;
    seen.set(nid, node);
    parent.entries.set(name, node);
    if (node.kind === "dir") pushEntries(node, ino, path);
    else links.set(node, { parent, name, count: 1 });
  }
  for (const [leaf, l] of links) if (l.count > 1) leaf.primary = { parent: l.parent, name: l.name };
  return new FileSystem(root);
}

/**
 * The payload paths (`ab/cdef…`) of the image's external files, sorted bytewise and unique — what
 * `composefs-info objects` prints. Walks the directories without building a tree; decodes xattrs only of
 * regular files.
 */
export function imageObjects(image: Buffer, label: string): string[] {
  const img: Image = new Image(image, label);
  const rootIno = img.inode(img.rootNid, "/");
  if ((rootIno.mode & S_IFMT) !== S_IFDIR) img.fail("the root inode is not a directory");
  const seen = new Set<number>([img.rootNid]);
  const dirs = new Set<number>([img.rootNid]);
  const objects = new Set<string>();
  const stack: { nid: number; path: string }[] = [];
  const pushEntries = (ino: RawInode, path: string): void => {
    const entries = img.dirents(ino, path);
    for (let i = entries.length - 1; i >= 0; i--)
      stack.push({ nid: entries[i].nid, path: childPath(path, entries[i].name) });
  };
  pushEntries(rootIno, "/");
  while (stack.length > 0) {
    const { nid, path } = stack.pop() as { nid: number; path: string };
    if (seen.has(nid)) {
      if (dirs.has(nid))
        img.fail(`${path}: directory inode ${nid} is reached twice (a directory loop or hard link)`);
      continue;
    }
    seen.add(nid);
    const ino = img.inode(nid, path);
    const type = ino.mode & S_IFMT;
    if (type === S_IFDIR) {
      dirs.add(nid);
      pushEntries(ino, path);
    } else if (type === S_IFREG) {
      const payload = img.redirect(ino, path);
      if (payload !== null && payload !== "") objects.add(payload);
    }
  }
  // Byte strings: UTF-16 code unit order is byte order.
  return [...objects].sort();
}
