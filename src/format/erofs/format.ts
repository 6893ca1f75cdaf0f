// On-disk constants and struct layouts of the composefs EROFS image, shared by the writer (writer.ts) and the
// reader (reader.ts) (reference: composefs-erofs.md §1.1–§1.10; docs/erofs.md). Everything is little-endian.
// Struct field offsets are given as `as const` objects so that both sides read and write the same bytes; the
// encoders below write one struct into a caller-provided Buffer that is already zero-filled (reserved fields
// are left untouched, i.e. zero).

/** EROFS block size (fixed: composefs always uses 4 KiB blocks). */
export const BLOCK_BITS = 12;
export const BLOCK_SIZE = 1 << BLOCK_BITS;
/** Inodes start on 32-byte slots; nid = byte offset / 32 (meta_blkaddr is 0). */
export const SLOT_BITS = 5;
export const SLOT_SIZE = 1 << SLOT_BITS;

// ---- composefs header (offset 0, 32 bytes) ----------------------------------------------------------------

export const COMPOSEFS_MAGIC = 0xd078629a;
/** Header-format version (LCFS_EROFS_VERSION); readers reject anything else. */
export const COMPOSEFS_HEADER_VERSION = 1;
/** Header flag: some inode has system.posix_acl_access or system.posix_acl_default. */
export const COMPOSEFS_FLAG_HAS_ACL = 1;
export const HEADER_SIZE = 32;
export const HDR = { magic: 0, version: 4, flags: 8, composefsVersion: 12 } as const;

export function writeComposefsHeader(buf: Buffer, flags: number, composefsVersion: number): void {
  putU32(buf, HDR.magic, COMPOSEFS_MAGIC);
  putU32(buf, HDR.version, COMPOSEFS_HEADER_VERSION);
  putU32(buf, HDR.flags, flags >>> 0);
  putU32(buf, HDR.composefsVersion, composefsVersion >>> 0);
}

// ---- EROFS superblock (offset 1024, 128 bytes) ------------------------------------------------------------

export const SUPER_OFFSET = 1024;
export const SUPER_SIZE = 128;
export const EROFS_SUPER_MAGIC = 0xe0f5e1e2;
export const FEATURE_COMPAT_SB_CHKSUM = 0x1;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;
/** Offsets relative to SUPER_OFFSET. Fields past xattrBlkaddr (uuid, volume name, incompat…) are always 0. */
export const SB = {
  magic: 0,
  checksum: 4,
  featureCompat: 8,
  blkszbits: 12,
  extslots: 13,
  rootNid: 14,
  inos: 16,
  buildTime: 24,
  buildTimeNsec: 32,
  blocks: 36,
  metaBlkaddr: 40,
  xattrBlkaddr: 44,
  featureIncompat: 80,
} as const;

export interface Superblock {
  rootNid: number;
  inos: number;
  buildTime: number;
  buildTimeNsec: number;
  blocks: number;
  xattrBlkaddr: number;
}

export function writeSuperblock(buf: Buffer, sb: Superblock): void {
  const o = SUPER_OFFSET;
  putU32(buf, o + SB.magic, EROFS_SUPER_MAGIC);
  putU32(buf, o + SB.featureCompat, FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER);
  buf[o + SB.blkszbits] = BLOCK_BITS;
  putU16(buf, o + SB.rootNid, sb.rootNid);
  writeU64(buf, o + SB.inos, sb.inos);
  writeU64(buf, o + SB.buildTime, sb.buildTime);
  putU32(buf, o + SB.buildTimeNsec, sb.buildTimeNsec >>> 0);
  putU32(buf, o + SB.blocks, sb.blocks >>> 0);
  putU32(buf, o + SB.xattrBlkaddr, sb.xattrBlkaddr >>> 0);
}

// ---- inodes -----------------------------------------------------------------------------------------------

/** Data layouts (i_format = layout << 1 | extended). */
export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_CHUNK_BASED = 4;
export const INODE_COMPACT_SIZE = 32;
export const INODE_EXTENDED_SIZE = 64;

/** Compact inode (32 bytes); there is no mtime: the kernel uses the superblock build_time. */
export const IC = {
  format: 0,
  xattrIcount: 2,
  mode: 4,
  nlink: 6,
  size: 8,
  u: 16,
  ino: 20,
  uid: 24,
  gid: 26,
} as const;

/** Extended inode (64 bytes). */
export const IE = {
  format: 0,
  xattrIcount: 2,
  mode: 4,
  size: 8,
  u: 16,
  ino: 20,
  uid: 24,
  gid: 28,
  mtime: 32,
  mtimeNsec: 40,
  nlink: 44,
} as const;

/**
 * The fields the writer puts in an inode header; `u` is the raw i_u word (block address, rdev or chunk info).
 */
export interface InodeFields {
  layout: number;
  xattrIcount: number;
  mode: number;
  nlink: number;
  size: number;
  u: number;
  ino: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
}

export function writeInodeCompact(buf: Buffer, off: number, f: InodeFields): void {
  putU16(buf, off + IC.format, f.layout << 1);
  putU16(buf, off + IC.xattrIcount, f.xattrIcount);
  putU16(buf, off + IC.mode, f.mode & 0xffff);
  putU16(buf, off + IC.nlink, f.nlink & 0xffff);
  putU32(buf, off + IC.size, f.size >>> 0);
  putU32(buf, off + IC.u, f.u >>> 0);
  putU32(buf, off + IC.ino, f.ino >>> 0);
  putU16(buf, off + IC.uid, f.uid & 0xffff);
  putU16(buf, off + IC.gid, f.gid & 0xffff);
}

export function writeInodeExtended(buf: Buffer, off: number, f: InodeFields): void {
  putU16(buf, off + IE.format, (f.layout << 1) | 1);
  putU16(buf, off + IE.xattrIcount, f.xattrIcount);
  putU16(buf, off + IE.mode, f.mode & 0xffff);
  writeU64(buf, off + IE.size, f.size);
  putU32(buf, off + IE.u, f.u >>> 0);
  putU32(buf, off + IE.ino, f.ino >>> 0);
  putU32(buf, off + IE.uid, f.uid >>> 0);
  putU32(buf, off + IE.gid, f.gid >>> 0);
  writeU64(buf, off + IE.mtime, f.mtimeSec);
  putU32(buf, off + IE.mtimeNsec, f.mtimeNsec >>> 0);
  putU32(buf, off + IE.nlink, f.nlink >>> 0);
}

/** Chunk-based inodes: i_u low 16 bits = chunkbits − 12 (at most 31); holes are EROFS_NULL_ADDR. */
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const NULL_ADDR = 0xffffffff;

// ---- directories ------------------------------------------------------------------------------------------

/** Dirent: nid u64, nameoff u16, file_type u8, reserved u8; names follow all dirents of a chunk, no NUL. */
export const DIRENT_SIZE = 12;
export const FT_UNKNOWN = 0;
export const FT_REG_FILE = 1;
export const FT_DIR = 2;
export const FT_CHRDEV = 3;
export const FT_BLKDEV = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_SYMLINK = 7;

/** EROFS dirent file type of a full st_mode. */
export function fileTypeOfMode(mode: number): number {
  switch (mode & 0o170000) {
    case 0o100000:
      return FT_REG_FILE;
    case 0o040000:
      return FT_DIR;
    case 0o020000:
      return FT_CHRDEV;
    case 0o060000:
      return FT_BLKDEV;
    case 0o010000:
      return FT_FIFO;
    case 0o140000:
      return FT_SOCK;
    case 0o120000:
      return FT_SYMLINK;
    default:
      return FT_UNKNOWN;
  }
}

export function writeDirent(buf: Buffer, off: number, nid: number, nameoff: number, fileType: number): void {
  putU32(buf, off, nid >>> 0);
  putU32(buf, off + 4, Math.floor(nid / 0x100000000));
  putU16(buf, off + 8, nameoff);
  buf[off + 10] = fileType;
}

// ---- xattrs -----------------------------------------------------------------------------------------------

/** In-inode xattr body header: h_name_filter u32, h_shared_count u8, 7 reserved bytes. */
export const XATTR_IBODY_HEADER_SIZE = 12;
/** Xattr entry header: e_name_len u8, e_name_index u8, e_value_size u16; then suffix, value, pad to 4. */
export const XATTR_ENTRY_SIZE = 4;
/** At most this many shared xattr ids per inode (EROFS_XATTR_LONG_PREFIX, 0x80); the rest go inline. */
export const MAX_SHARED_XATTRS_PER_INODE = 128;
/**
 * Bloom filter over xattr names: bit = xxh32(suffix, SEED + index) & 31; a set bit in h_name_filter = absent.
 */
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const XATTR_FILTER_BITS = 32;

export const XATTR_INDEX_USER = 1;
export const XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const XATTR_INDEX_TRUSTED = 4;
export const XATTR_INDEX_SECURITY = 6;

/**
 * Name prefixes in matching order (first match wins); anything else is index 0 with the whole key as suffix.
 */
export const XATTR_PREFIXES: readonly (readonly [prefix: string, index: number])[] = [
  ["user.", XATTR_INDEX_USER],
  ["system.posix_acl_access", XATTR_INDEX_POSIX_ACL_ACCESS],
  ["system.posix_acl_default", XATTR_INDEX_POSIX_ACL_DEFAULT],
  ["trusted.", XATTR_INDEX_TRUSTED],
  ["security.", XATTR_INDEX_SECURITY],
];

/** Prefix index of a key (byte string) and the length of the prefix it strips. */
export function xattrPrefix(key: string): { index: number; prefixLen: number } {
  for (const [prefix, index] of XATTR_PREFIXES) {
    if (key.startsWith(prefix)) return { index, prefixLen: prefix.length };
  }
  return { index: 0, prefixLen: 0 };
}

/** Size of one xattr entry on disk. */
export function xattrEntrySize(suffixLen: number, valueLen: number): number {
  return (XATTR_ENTRY_SIZE + suffixLen + valueLen + 3) & ~3;
}

// ---- helpers ----------------------------------------------------------------------------------------------

/** Write a u64 (two's complement for negative values) from a JS safe integer. */
export function writeU64(buf: Buffer, off: number, v: number): void {
  putU32(buf, off, v >>> 0);
  putU32(buf, off + 4, Math.floor(v / 0x100000000) >>> 0);
}

/** Little-endian stores without bounds checks or argument validation (the caller sized the buffer). */
export function putU16(buf: Buffer, off: number, v: number): void {
  buf[off] = v;
  buf[off + 1] = v >>> 8;
}

export function putU32(buf: Buffer, off: number, v: number): void {
  buf[off] = v;
  buf[off + 1] = v >>> 8;
  buf[off + 2] = v >>> 16;
  buf[off + 3] = v >>> 24;
}

/** Copy the byte string `s` from `start` into `buf` at `off` (one byte per char); returns the end offset. */
export function putLatin1(buf: Buffer, off: number, s: string, start: number): number {
  const n = s.length - start;
  if (n > 512) return off + buf.write(start === 0 ? s : s.slice(start), off, "latin1");
  for (let i = 0; i < n; i++) buf[off + i] = s.charCodeAt(start + i);
  return off + n;
}

export function roundUp(v: number, align: number): number {
  return Math.ceil(v / align) * align;
}

// ---- composefs limits (what C mkcomposefs 1.0.8 accepts; composefs-erofs.md §1.7, §1.10, §2.1) ----------

/** Largest inline CONTENT (LCFS_INLINE_CONTENT_MAX). */
export const INLINE_CONTENT_MAX = 5000;
/** Symlink targets and payloads must be shorter than this (PATH_MAX). */
export const PATH_MAX = 4096;
/** Longest file name (LCFS_MAX_NAME_LENGTH). */
export const NAME_MAX = 255;
/** Longest xattr key (XATTR_NAME_MAX). */
export const XATTR_NAME_MAX = 255;
/** Largest xattr value. */
export const XATTR_VALUE_MAX = 65535;
/** The text after DIGEST may be at most this long ("Too many xattrs"). */
export const XATTR_TEXT_MAX = 65535;
/** Per-inode xattr budget for dumpfile input: Σ(7 + len(key) + len(value)) + 12 ≤ this. */
export const XATTR_INODE_BUDGET = 32767;
/** Largest regular file mkcomposefs accepts (1024 chunks of 2^43 bytes). */
export const FILE_SIZE_MAX = 2 ** 53;
