// The composefs EROFS image writer: a FileSystem tree in, an image byte-identical to C mkcomposefs 1.0.8 out
// (reference: composefs-erofs.md §1; our description: docs/erofs.md; constants and struct encoders:
// format.ts).
//
// Two passes. layoutErofs() walks the tree once breadth-first, records every directory entry and every inode
// in flat arrays (inode index = BFS index = i_ino), computes the overlay rewrites of §1.4 (escaped
// trusted.overlay.* xattrs, metacopy/redirect, escaped whiteouts, the root's opaque marker, the 00…ff stubs,
// `.`/`..`) into its own per-inode records, interns every (key, value) xattr pair to pick the shared ones,
// and places inodes, the shared-xattr table and data blocks. emitErofs() then writes the bytes into one
// zero-filled Buffer. The input tree is never modified.

import { StratumError } from "../../errors.ts";
import {
  FlatTree,
  T_BLK,
  T_CHR,
  T_DIR,
  T_FIFO,
  T_LNK,
  T_REG,
  T_SOCK,
  findChild,
  fromFileSystem,
  type ChildIndex,
} from "../../tree/flat.ts";
import type { FileSystem } from "../../tree/tree.ts";
import {
  FILE_SIZE_MAX,
  NAME_MAX,
  BLOCK_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  COMPOSEFS_FLAG_HAS_ACL,
  DIRENT_SIZE,
  FT_BLKDEV,
  FT_CHRDEV,
  FT_DIR,
  FT_FIFO,
  FT_REG_FILE,
  FT_SOCK,
  FT_SYMLINK,
  INODE_COMPACT_SIZE,
  INODE_EXTENDED_SIZE,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
  MAX_SHARED_XATTRS_PER_INODE,
  SLOT_SIZE,
  SUPER_OFFSET,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE,
  roundUp,
  writeComposefsHeader,
  writeDirent,
  writeInodeCompact,
  writeInodeExtended,
  writeSuperblock,
  putLatin1,
  putU16,
  putU32,
  xattrEntrySize,
  xattrPrefix,
  type InodeFields,
} from "./format.ts";
import { isAnyObjectId } from "../object-id.ts";
import { xxh32ByteString } from "./xxhash32.ts";

export interface ErofsOptions {
  /** Lowest composefs format version to write (default 0). */
  minVersion?: 0 | 1;
  /** Highest version allowed (default 1); 1 is chosen only when the tree has a whiteout (chardev 0:0). */
  maxVersion?: 0 | 1;
}

// Inode kinds (after rewriting: an escaped whiteout is REG_EMPTY, a stub is CHR).
const K_DIR = 0;
const K_REG_EMPTY = 1;
const K_REG_INLINE = 2;
const K_REG_EXTERNAL = 3;
const K_SYMLINK = 4;
const K_CHR = 5;
const K_BLK = 6;
const K_FIFO = 7;
const K_SOCK = 8;

const FILE_TYPE = [
  FT_DIR,
  FT_REG_FILE,
  FT_REG_FILE,
  FT_REG_FILE,
  FT_SYMLINK,
  FT_CHRDEV,
  FT_BLKDEV,
  FT_FIFO,
  FT_SOCK,
];
const TYPE_BITS = [0o040000, 0o100000, 0o100000, 0o100000, 0o120000, 0o020000, 0o060000, 0o010000, 0o140000];

const TRUSTED_OVERLAY = "trusted.overlay.";
const ESCAPED_PREFIX = "trusted.overlay.overlay.";
const METACOPY = "trusted.overlay.metacopy";
const REDIRECT = "trusted.overlay.redirect";
const OPAQUE = "trusted.overlay.opaque";
const ESCAPED_WHITEOUT = "trusted.overlay.overlay.whiteout";
const ESCAPED_WHITEOUTS = "trusted.overlay.overlay.whiteouts";
const ESCAPED_OPAQUE = "trusted.overlay.overlay.opaque";
const USER_WHITEOUT = "user.overlay.whiteout";
const USER_WHITEOUTS = "user.overlay.whiteouts";
const USER_OPAQUE = "user.overlay.opaque";
const ACL_ACCESS = "system.posix_acl_access";
const ACL_DEFAULT = "system.posix_acl_default";
const SELINUX = "security.selinux";
/**
 * Version 0, length 4 + digest size, flags 0, hash algorithm (1 sha256 as C writes it; 2 sha512 for SHA-512
 * repositories, as composefs-rs writes it); the fs-verity digest follows.
 */
const METACOPY_SHA256_HEADER = "\x00\x24\x00\x01";
const METACOPY_SHA512_HEADER = "\x00\x44\x00\x02";

const POW2: number[] = Array.from({ length: 64 }, (_, i) => 2 ** i);

/** The result of pass 1: everything needed to emit the image, in flat per-inode and per-entry arrays. */
export interface ErofsPlan {
  /** Image size in bytes (a multiple of 4096). */
  readonly totalSize: number;
  /** composefs format version written (0 or 1). */
  readonly version: 0 | 1;
  /** Number of inodes (BFS count; includes the 256 stubs, excludes hard-link aliases). */
  readonly inodeCount: number;
  readonly rootNid: number;
  /** Byte offset where the inode area ends and the shared xattr table starts. */
  readonly inodesEnd: number;
  /** Byte offset of the first data block. */
  readonly dataStart: number;
  readonly dataBlocks: number;
  /** @internal */
  readonly _l: Layout;
}

/** The inode fields, one column per field, indexed by inode number (= breadth-first index). */
interface InodeColumns {
  /** Symlink target or inline content. */
  data: (string | undefined)[];
  kind: Uint8Array;
  mode: Uint16Array;
  nlink: Uint32Array;
  uid: Uint32Array;
  gid: Uint32Array;
  mtSec: Float64Array;
  mtNsec: Uint32Array;
  size: Float64Array;
  rdev: Uint32Array;
}

interface Layout extends InodeColumns, PlacementColumns {
  version: 0 | 1;
  hasAcl: boolean;
  minSec: number;
  minNsec: number;
  // Entries, flat, directory by directory in BFS order, each directory's names sorted.
  entName: string[];
  entTarget: Int32Array;
  entStart: Int32Array;
  entEnd: Int32Array;
  xaStart: Int32Array;
  xaIds: Int32Array;
  // Distinct xattr (key, value) pairs.
  dKey: string[];
  dVal: string[];
  dEnc: number[];
  dIndex: Uint8Array;
  dPrefixLen: Uint16Array;
  dBit: Uint8Array;
  dShared: Uint8Array;
  dOffset: Int32Array;
  shared: number[];
  sharedSize: number;
}

function bad(message: string): StratumError {
  return new StratumError("E_BAD_INPUT", `EROFS writer: ${message}`);
}

/** floor(log2(x)) for an integer x ≥ 1 up to 2^53; 0 for x = 0 (like the C ilog2 of 0 used here). */
function ilog2(x: number): number {
  if (x < 1) return 0;
  if (x < 0x100000000) return 31 - Math.clz32(x);
  return 32 + 31 - Math.clz32(Math.floor(x / 0x100000000));
}

function checkName(name: string): void {
  const n = name.length;
  let ok = n > 0 && n <= NAME_MAX && name !== "." && name !== "..";
  for (let i = 0; ok && i < n; i++) {
    const c = name.charCodeAt(i);
    ok = c !== 0x2f && c !== 0;
  }
  if (!ok) throw bad(`invalid file name ${JSON.stringify(name)}`);
}

const STUB_NAMES: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Pass 1: lay the image out. The returned plan holds compact arrays proportional to the metadata; emit it
 * with emitErofs(). Throws StratumError E_BAD_INPUT for trees that cannot be written (invalid names,
 * too-large files or attrs, shared or cyclic directories).
 */
export function layoutErofs(input: FileSystem | FlatTree, opts: ErofsOptions = {}): ErofsPlan {
  const t = input instanceof FlatTree ? input : fromFileSystem(input);
  const minVersion = opts.minVersion ?? 0;
  const maxVersion = Math.max(opts.maxVersion ?? 1, minVersion);
  if (t.length === 0 || t.type[0] !== T_DIR) throw bad("the root must be a directory");
  const index = t.childIndex();
  if (index.duplicate >= 0) throw bad(`duplicate name ${JSON.stringify(t.path(index.duplicate))}`);
  checkNames(t);

  const order = orderInodes(t, index);
  let version: 0 | 1 = minVersion;
  if (version < 1 && maxVersion >= 1 && order.anyWhiteout) version = 1;
  const attrs = inodeAttributes(t, order, version);
  const place = placeInodes(order, attrs);
  if (place.nid[0] >= 0x10000) throw bad("root nid does not fit in 16 bits");

  const { xa } = attrs;
  const layout: Layout = {
    version,
    hasAcl: attrs.hasAcl,
    minSec: attrs.minSec,
    minNsec: attrs.minNsec,
    entName: order.entName,
    entTarget: order.entTarget,
    data: attrs.data,
    kind: attrs.kind,
    mode: attrs.mode,
    nlink: attrs.nlink,
    uid: attrs.uid,
    gid: attrs.gid,
    mtSec: attrs.mtSec,
    mtNsec: attrs.mtNsec,
    size: attrs.size,
    rdev: attrs.rdev,
    entStart: order.entStart,
    entEnd: order.entEnd,
    xaStart: attrs.xaStart,
    xaIds: attrs.xaIds,
    nid: place.nid,
    nBlocks: place.nBlocks,
    tail: place.tail,
    compact: place.compact,
    xsz: place.xsz,
    relBlock: place.relBlock,
    chunkFormat: place.chunkFormat,
    dKey: xa.keys,
    dVal: xa.vals,
    dEnc: xa.enc,
    dIndex: xa.dIndex,
    dPrefixLen: xa.dPrefixLen,
    dBit: xa.dBit,
    dShared: xa.dShared,
    dOffset: xa.dOffset,
    shared: xa.shared,
    sharedSize: xa.sharedSize,
  };
  return {
    totalSize: place.totalSize,
    version,
    inodeCount: order.n,
    rootNid: place.nid[0],
    inodesEnd: place.inodesEnd,
    dataStart: place.dataStart,
    dataBlocks: place.dataBlocks,
    _l: layout,
  };
}

function checkNames(t: FlatTree): void {
  for (let r = 1; r < t.length; r++) checkName(t.name[r]);
}

/** What pass 1 step A decides: inode numbers and every directory's entries. */
interface InodeOrder {
  /** Number of inodes. */
  n: number;
  /** Per inode: its row in the flat tree, or -1 for a 00…ff stub. */
  inoRow: Int32Array;
  entStart: Int32Array;
  entEnd: Int32Array;
  /** Per directory inode: 2 + its subdirectories. */
  nlinkDir: Uint32Array;
  hasWhiteoutChild: Uint8Array;
  entName: string[];
  entTarget: Int32Array;
  anyWhiteout: boolean;
}

/**
 * Step A: inode order (breadth-first, each directory's entries sorted) and directory entries, which are the
 * children merged with "." and ".." (and, in the root, the 00…ff stubs). A hard link's entry points at the
 * inode of the row owning it, placed where that row's entry is.
 */
function orderInodes(t: FlatTree, index: ChildIndex): InodeOrder {
  const rows = t.length;
  const { start: childStart, list: children } = index;
  // Directory entries are the children merged with "." and ".." (and, in the root, the 00…ff stubs).
  const maxInodes = rows + STUB_NAMES.length;
  const inoRow = new Int32Array(maxInodes).fill(-1);
  const rowIno = new Int32Array(rows).fill(-1);
  const entStart = new Int32Array(maxInodes).fill(-1);
  const entEnd = new Int32Array(maxInodes).fill(-1);
  const nlinkDir = new Uint32Array(maxInodes);
  const hasWhiteoutChild = new Uint8Array(maxInodes);
  const nDirs = countDirectories(t);
  const maxEnt = rows - 1 + 2 * nDirs + STUB_NAMES.length;
  const entName: string[] = [];
  const entTarget = new Int32Array(maxEnt);
  const entLink = new Int32Array(maxEnt).fill(-1);
  const queue = new Int32Array(nDirs);
  let qEnd = 0;
  queue[qEnd++] = 0;
  inoRow[0] = 0;
  rowIno[0] = 0;
  let n = 1;
  let anyWhiteout = false;
  let anyLink = false;
  const specials: string[] = [];

  for (let q = 0; q < qEnd; q++) {
    const d = queue[q];
    const di = rowIno[d];
    const a = childStart[d];
    const b = childStart[d + 1];
    specials.length = 0;
    specials.push(".", "..");
    if (d === 0) for (const s of STUB_NAMES) if (findChild(t, index, 0, s) < 0) specials.push(s);
    entStart[di] = entName.length;
    let subdirs = 0;
    let c = a;
    let s = 0;
    while (c < b || s < specials.length) {
      const e = entName.length;
      if (s < specials.length && (c >= b || specials[s] < t.name[children[c]])) {
        const name = specials[s++];
        entName.push(name);
        if (name === ".") entTarget[e] = di;
        else if (name === "..") entTarget[e] = d === 0 ? di : rowIno[t.parent[d]];
        else entTarget[e] = n++; // a stub: inoRow stays -1
        continue;
      }
      const row = children[c++];
      entName.push(t.name[row]);
      const owner = t.link[row];
      if (owner !== -1) {
        // A hard link: its inode is placed at the owning entry; resolved once every inode has its index.
        entLink[e] = owner;
        anyLink = true;
        continue;
      }
      entTarget[e] = n;
      inoRow[n] = row;
      rowIno[row] = n;
      n++;
      const type = t.type[row];
      if (type === T_DIR) {
        queue[qEnd++] = row;
        subdirs++;
      } else if (type === T_CHR && t.rdev[row] === 0) {
        hasWhiteoutChild[di] = 1;
        anyWhiteout = true;
      }
    }
    entEnd[di] = entName.length;
    nlinkDir[di] = 2 + subdirs;
  }
  if (qEnd !== nDirs) throw bad("a directory is not reachable from the root");
  if (anyLink) resolveLinks(entName, entTarget, entLink, rowIno);
  return { n, inoRow, entStart, entEnd, nlinkDir, hasWhiteoutChild, entName, entTarget, anyWhiteout };
}

function countDirectories(t: FlatTree): number {
  let nDirs = 0;
  for (let r = 0; r < t.length; r++) if (t.type[r] === T_DIR) nDirs++;
  return nDirs;
}

function resolveLinks(
  entName: string[],
  entTarget: Int32Array,
  entLink: Int32Array,
  rowIno: Int32Array,
): void {
  for (let e = 0; e < entName.length; e++) {
    if (entLink[e] === -1) continue;
    const target = rowIno[entLink[e]];
    if (target < 0) throw bad(`hard link ${JSON.stringify(entName[e])} to an entry outside the tree`);
    entTarget[e] = target;
  }
}

/** What step B computes per inode: the inode fields and the rewritten, interned xattrs. */
interface InodeAttributes extends InodeColumns {
  xa: XattrTable;
  xaStart: Int32Array;
  xaIds: Int32Array;
  hasAcl: boolean;
  minSec: number;
  minNsec: number;
}

/**
 * Step B: per-inode attributes and the overlay rewrites of §1.4 (escaped trusted.overlay.* keys,
 * metacopy/redirect, escaped whiteouts, the whiteout-directory and root markers), with every (key, value) pair
 * interned and counted to pick the shared ones.
 */
function inodeAttributes(t: FlatTree, order: InodeOrder, version: 0 | 1): InodeAttributes {
  const { n, inoRow, nlinkDir, hasWhiteoutChild } = order;
  const kind = new Uint8Array(n);
  const mode = new Uint16Array(n);
  const nlink = new Uint32Array(n);
  const uid = new Uint32Array(n);
  const gid = new Uint32Array(n);
  const mtSec = new Float64Array(n);
  const mtNsec = new Uint32Array(n);
  const size = new Float64Array(n);
  const rdev = new Uint32Array(n);
  const data: (string | undefined)[] = new Array<string | undefined>(n);

  const xa = new XattrTable();
  const fromSource = new Int32Array(t.pairKey.length).fill(-1);
  const byDigest = new DigestIndex(n);
  const redirectIds = new Map<string, number>();
  const fixed = (key: string, value: string): number => xa.intern(key, value);
  const opaqueRoot = fixed(OPAQUE, "y");
  const whiteoutMarks = [fixed(ESCAPED_WHITEOUT, ""), fixed(USER_WHITEOUT, "")];
  const whiteoutDirMarks = [fixed(ESCAPED_WHITEOUTS, ""), fixed(USER_WHITEOUTS, "")];
  const opaqueDirMarks = [fixed(ESCAPED_OPAQUE, "x"), fixed(USER_OPAQUE, "x")];
  const metacopyEmpty = fixed(METACOPY, "");
  const xaStart = new Int32Array(n + 1);
  let xaIds = new Int32Array(Math.max(1024, n * 2));
  let xaLen = 0;
  const ids: number[] = [];

  // Stubs carry the root's SELinux label, if any.
  let stubLabel = -1;
  for (let j = t.xattrStart[0], end = j + t.xattrCount[0]; j < end; j++) {
    const p = t.pairs[j];
    if (t.pairKey[p] === SELINUX) stubLabel = xa.intern(SELINUX, t.pairValue[p]);
  }
  let minSec = t.mtimeSec[0];
  let minNsec = t.mtimeNsec[0];
  let hasAcl = false;

  for (let i = 0; i < n; i++) {
    const row = inoRow[i];
    ids.length = 0;
    let k: number;
    const st = row < 0 ? 0 : row;
    if (row < 0) {
      // A 00…ff stub: chardev 0:0, mode 0644, the root's owner and mtime (and SELinux label).
      k = K_CHR;
      mode[i] = 0o020644;
      nlink[i] = 1;
      if (stubLabel >= 0) ids.push(stubLabel);
    } else {
      for (let j = t.xattrStart[row], end = j + t.xattrCount[row]; j < end; j++) {
        const p = t.pairs[j];
        let id = fromSource[p];
        if (id < 0) {
          const key = t.pairKey[p];
          if (key.length === 0) throw bad("empty xattr key");
          id = xa.intern(
            key.startsWith(TRUSTED_OVERLAY) ? ESCAPED_PREFIX + key.slice(TRUSTED_OVERLAY.length) : key,
            t.pairValue[p],
          );
          fromSource[p] = id;
        }
        ids.push(id);
      }
      const type = t.type[row];
      switch (type) {
        case T_DIR:
          k = K_DIR;
          nlink[i] = nlinkDir[i];
          if (hasWhiteoutChild[i]) {
            setXattr(ids, xa, whiteoutDirMarks[0]);
            setXattr(ids, xa, whiteoutDirMarks[1]);
            if (version >= 1) {
              setXattr(ids, xa, opaqueDirMarks[0]);
              setXattr(ids, xa, opaqueDirMarks[1]);
            }
          }
          if (i === 0) setXattr(ids, xa, opaqueRoot);
          break;
        case T_REG: {
          const fileSize = t.size[row];
          const inline = t.data[row];
          if (inline !== undefined) {
            if (inline.length !== fileSize)
              throw bad(`inline content of ${inline.length} bytes but size ${fileSize}`);
            k = fileSize > 0 ? K_REG_INLINE : K_REG_EMPTY;
            if (fileSize > 0) data[i] = inline;
          } else if (fileSize > 0) {
            if (!Number.isSafeInteger(fileSize) || fileSize > FILE_SIZE_MAX) throw bad("file too large");
            k = K_REG_EXTERNAL;
            const digest = t.digest[row];
            const payload = t.payload[row];
            let mc = metacopyEmpty;
            let entry = -1;
            if (digest !== undefined) {
              entry = byDigest.find(digest);
              if (entry < 0) {
                if (!isAnyObjectId(digest)) throw bad(`invalid digest ${digest}`);
                entry = byDigest.add(digest, xa.addMetacopy(digest));
              }
              mc = byDigest.metacopy[entry];
            }
            setXattr(ids, xa, mc);
            if (payload !== undefined && payload.length > 0) {
              let rd: number | undefined;
              // The usual payload is the object path of the digest: its redirect pair is the digest's.
              if (entry >= 0 && isObjectPath(payload, digest as string)) {
                rd = byDigest.redirect[entry];
                if (rd < 0) rd = byDigest.redirect[entry] = xa.addRedirect(payload);
              } else {
                rd = redirectIds.get(payload);
                if (rd === undefined) {
                  rd = xa.addRedirect(payload);
                  redirectIds.set(payload, rd);
                }
              }
              setXattr(ids, xa, rd);
            }
          } else {
            k = K_REG_EMPTY;
          }
          size[i] = fileSize;
          break;
        }
        case T_LNK: {
          const target = t.data[row];
          if (target === undefined || target.length === 0) throw bad("empty symlink target");
          k = K_SYMLINK;
          size[i] = target.length;
          data[i] = target;
          break;
        }
        case T_CHR:
          if (t.rdev[row] === 0) {
            // A user whiteout: written as an empty regular file carrying the escaped marker.
            k = K_REG_EMPTY;
            setXattr(ids, xa, whiteoutMarks[0]);
            setXattr(ids, xa, whiteoutMarks[1]);
          } else {
            k = K_CHR;
            rdev[i] = t.rdev[row];
          }
          break;
        case T_BLK:
          k = K_BLK;
          rdev[i] = t.rdev[row];
          break;
        case T_FIFO:
          k = K_FIFO;
          break;
        case T_SOCK:
          k = K_SOCK;
          break;
        default:
          throw bad(`unknown file type ${type} at ${JSON.stringify(t.path(row))}`);
      }
      if (type !== T_DIR) nlink[i] = t.nlink[row];
      mode[i] = TYPE_BITS[k] | (t.perm[row] & 0o7777);
    }
    kind[i] = k;
    uid[i] = t.uid[st];
    gid[i] = t.gid[st];
    const s = t.mtimeSec[st];
    const ns = t.mtimeNsec[st];
    mtSec[i] = s;
    mtNsec[i] = ns;
    if (s < minSec || (s === minSec && ns < minNsec)) {
      minSec = s;
      minNsec = ns;
    }

    xaStart[i] = xaLen;
    const nx = ids.length;
    if (nx > 0) {
      if (nx > 1) sortIds(ids, xa.keys);
      if (xaLen + nx > xaIds.length) {
        const grown = new Int32Array(Math.max(xaIds.length * 2, xaLen + nx));
        grown.set(xaIds);
        xaIds = grown;
      }
      for (let j = 0; j < nx; j++) {
        const id = ids[j];
        if (!hasAcl && xa.isAcl(id)) hasAcl = true;
        xa.use(id);
        xaIds[xaLen++] = id;
      }
    }
  }
  xaStart[n] = xaLen;
  xa.finish();
  return {
    kind,
    mode,
    nlink,
    uid,
    gid,
    mtSec,
    mtNsec,
    size,
    rdev,
    data,
    xa,
    xaStart,
    xaIds,
    hasAcl,
    minSec,
    minNsec,
  };
}

/** Where step C puts every inode: one column per field, indexed by inode number. */
interface PlacementColumns {
  nid: Float64Array;
  nBlocks: Int32Array;
  tail: Int32Array;
  compact: Uint8Array;
  xsz: Int32Array;
  relBlock: Int32Array;
  chunkFormat: Uint8Array;
}

/** Where step C puts every inode and data block. */
interface Placement extends PlacementColumns {
  inodesEnd: number;
  dataStart: number;
  dataBlocks: number;
  totalSize: number;
}

/** Step C: placement (§1.5–§1.8): compact or extended inodes, xattr bodies, inline tails, data blocks. */
function placeInodes(order: InodeOrder, attrs: InodeAttributes): Placement {
  const { n, entStart, entEnd, entName } = order;
  const { kind, nlink, uid, gid, mtSec, mtNsec, size, xa, xaStart, xaIds, minSec, minNsec } = attrs;
  const nid = new Float64Array(n);
  const nBlocks = new Int32Array(n);
  const tail = new Int32Array(n);
  const compact = new Uint8Array(n);
  const xsz = new Int32Array(n);
  const relBlock = new Int32Array(n);
  const chunkFormat = new Uint8Array(n);
  const { dShared, dEntrySize } = xa;
  let pos = SUPER_OFFSET + 128;
  let dataBlocks = 0;

  for (let i = 0; i < n; i++) {
    const k = kind[i];
    let nb = 0;
    let tl = 0;
    let sz = size[i];
    if (k === K_DIR) {
      let chunk = 0;
      for (let e = entStart[i], end = entEnd[i]; e < end; e++) {
        const len = DIRENT_SIZE + entName[e].length;
        if (chunk + len > BLOCK_SIZE) {
          nb++;
          chunk = 0;
        }
        chunk += len;
      }
      if (chunk > BLOCK_SIZE / 2) {
        nb++;
        chunk = 0;
      }
      tl = chunk;
      sz = nb * BLOCK_SIZE + tl;
    } else if (k === K_SYMLINK) {
      tl = sz;
    } else if (k === K_REG_INLINE) {
      nb = Math.floor(sz / BLOCK_SIZE);
      tl = sz % BLOCK_SIZE;
      if (tl > BLOCK_SIZE / 2) {
        nb++;
        tl = 0;
      }
    } else if (k === K_REG_EXTERNAL) {
      let bits = ilog2(sz - 1) + 1;
      if (bits < 12) bits = 12;
      if (bits - 12 > CHUNK_FORMAT_BLKBITS_MASK) bits = CHUNK_FORMAT_BLKBITS_MASK + 12;
      chunkFormat[i] = bits - 12;
      tl = Math.ceil(sz / POW2[bits]) * 4;
    }
    const isCompact =
      mtSec[i] === minSec &&
      mtNsec[i] === minNsec &&
      nlink[i] <= 0xffff &&
      uid[i] <= 0xffff &&
      gid[i] <= 0xffff &&
      sz <= 0xffffffff;
    compact[i] = isCompact ? 1 : 0;
    const isz = isCompact ? INODE_COMPACT_SIZE : INODE_EXTENDED_SIZE;

    // Xattr body size.
    let xs = 0;
    const a = xaStart[i];
    const b = xaStart[i + 1];
    if (b > a) {
      let nShared = 0;
      let inline = 0;
      for (let j = a; j < b; j++) {
        const id = xaIds[j];
        if (dShared[id] && nShared < MAX_SHARED_XATTRS_PER_INODE) nShared++;
        else inline += dEntrySize[id];
      }
      xs = XATTR_IBODY_HEADER_SIZE + 4 * nShared + inline;
      if ((xs - XATTR_IBODY_HEADER_SIZE) / 4 + 1 > 0xffff) throw bad("too many xattrs on one inode");
    }
    xsz[i] = xs;

    pos = roundUp(pos, SLOT_SIZE);
    // Padding so that the inline tail does not cross a block boundary (§1.8).
    if (k === K_SYMLINK) {
      const total = isz + xs + tl;
      if (total >= BLOCK_SIZE) {
        nb = 1;
        tl = 0;
      }
      if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE))
        pos = roundUp(pos, BLOCK_SIZE);
    } else if (tl > 0) {
      const rem = BLOCK_SIZE - ((pos + isz + xs) % BLOCK_SIZE);
      if (rem < tl) {
        const pad = roundUp(rem, SLOT_SIZE);
        const rem2 = BLOCK_SIZE - ((pos + isz + xs + pad) % BLOCK_SIZE);
        if (tl <= rem2) {
          pos += pad;
        } else {
          // Not inlined after all: one data block (the huge-file chunk table quirk).
          nb++;
          tl = 0;
          pos = roundUp(pos, BLOCK_SIZE);
        }
      }
    }
    nid[i] = pos / SLOT_SIZE;
    nBlocks[i] = nb;
    tail[i] = tl;
    relBlock[i] = dataBlocks;
    dataBlocks += nb;
    pos += isz + xs + tl;
  }

  const inodesEnd = roundUp(pos, SLOT_SIZE);
  const dataStart = roundUp(inodesEnd + xa.sharedSize, BLOCK_SIZE);
  const totalSize = dataStart + dataBlocks * BLOCK_SIZE;

  return {
    nid,
    nBlocks,
    tail,
    compact,
    xsz,
    relBlock,
    chunkFormat,
    inodesEnd,
    dataStart,
    dataBlocks,
    totalSize,
  };
}

/** Add pair `id` to an inode's list, replacing a pair with the same key (lcfs_node_set_xattr semantics). */
function setXattr(ids: number[], xa: XattrTable, id: number): void {
  const key = xa.keys[id];
  for (let j = 0; j < ids.length; j++) {
    if (xa.keys[ids[j]] === key) {
      ids[j] = id;
      return;
    }
  }
  ids.push(id);
}

/** Insertion sort of pair ids by key (bytewise; an inode's keys are unique). Xattr lists are short. */
function sortIds(ids: number[], keys: string[]): void {
  for (let i = 1; i < ids.length; i++) {
    const id = ids[i];
    const k = keys[id];
    let j = i - 1;
    while (j >= 0 && keys[ids[j]] > k) {
      ids[j + 1] = ids[j];
      j--;
    }
    ids[j + 1] = id;
  }
}

// How a pair's value is held: the bytes themselves (as a byte string), a metacopy value given by its digest in
// hex, or a redirect given by its payload (the value is `/` + payload).
const V_PLAIN = 0;
const V_METACOPY = 1;
const V_REDIRECT = 2;

function valueLength(value: string, enc: number): number {
  if (enc === V_METACOPY) return 4 + value.length / 2;
  if (enc === V_REDIRECT) return 1 + value.length;
  return value.length;
}

/** The value's bytes as a byte string (only for the rare comparison across encodings). */
function valueBytes(value: string, enc: number): string {
  if (enc === V_METACOPY)
    return metacopyHeader(value.length / 2) + Buffer.from(value, "hex").toString("latin1");
  if (enc === V_REDIRECT) return "/" + value;
  return value;
}

/** The value of a lowercase hex digit (validated by isAnyObjectId before it gets here). */
function hexDigit(c: number): number {
  return c <= 0x39 ? c - 0x30 : c - 0x57;
}

function metacopyHeader(digestSize: number): string {
  return digestSize === 32 ? METACOPY_SHA256_HEADER : METACOPY_SHA512_HEADER;
}

/** `ab/cdef…` for digest `abcdef…`: the payload of a file stored in the object store. */
function isObjectPath(payload: string, digest: string): boolean {
  if (payload.length !== digest.length + 1 || payload.charCodeAt(2) !== 0x2f) return false;
  if (payload.charCodeAt(0) !== digest.charCodeAt(0) || payload.charCodeAt(1) !== digest.charCodeAt(1))
    return false;
  for (let i = 2; i < digest.length; i++)
    if (payload.charCodeAt(i + 1) !== digest.charCodeAt(i)) return false;
  return true;
}

/**
 * External files by digest, with their metacopy pair and (for files stored under their object path) redirect
 * pair: an open-addressing table keyed by the digest's first hex digits, so deduplicating 40k digests costs
 * no string hashing.
 */
class DigestIndex {
  readonly digests: string[] = [];
  readonly metacopy: number[] = [];
  readonly redirect: number[] = [];
  private slots: Int32Array;
  private mask: number;

  constructor(expected: number) {
    let size = 1024;
    while (size < expected * 2) size *= 2;
    this.slots = new Int32Array(size).fill(-1);
    this.mask = size - 1;
  }

  private static hash(digest: string): number {
    let h = 0;
    for (let i = 0; i < 7; i++)
      h = (h << 4) | ((digest.charCodeAt(i) & 0x0f) + (digest.charCodeAt(i) >> 6) * 9);
    return h;
  }

  find(digest: string): number {
    for (let s = DigestIndex.hash(digest) & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[s];
      if (e < 0 || this.digests[e] === digest) return e;
    }
  }

  add(digest: string, metacopyPair: number): number {
    if (this.digests.length * 2 >= this.slots.length) this.grow();
    const e = this.digests.length;
    this.digests.push(digest);
    this.metacopy.push(metacopyPair);
    this.redirect.push(-1);
    this.place(e);
    return e;
  }

  private place(e: number): void {
    let s = DigestIndex.hash(this.digests[e]) & this.mask;
    while (this.slots[s] >= 0) s = (s + 1) & this.mask;
    this.slots[s] = e;
  }

  private grow(): void {
    this.slots = new Int32Array(this.slots.length * 2).fill(-1);
    this.mask = this.slots.length - 1;
    for (let e = 0; e < this.digests.length; e++) this.place(e);
  }
}

/**
 * Distinct (key, value) xattr pairs with their use counts, entry sizes, filter bits and shared-table offsets.
 */
class XattrTable {
  readonly keys: string[] = [];
  /** Values, encoded as `enc` says. */
  readonly vals: string[] = [];
  /** Per pair: V_PLAIN, V_METACOPY or V_REDIRECT. */
  readonly enc: number[] = [];
  /** key → (value → pair id); two levels so that no combined string is built per lookup. */
  private readonly byKey = new Map<string, { info: number; ids: Map<string, number> }>();
  private readonly counts: number[] = [];
  /** Per pair: filter bit | prefix index << 5 | prefix length << 8 (a property of the key). */
  private readonly info: number[] = [];
  dIndex = new Uint8Array(0);
  dPrefixLen = new Uint16Array(0);
  dBit = new Uint8Array(0);
  dEntrySize = new Int32Array(0);
  dShared = new Uint8Array(0);
  dOffset = new Int32Array(0);
  /** Shared pair ids in table order. */
  shared: number[] = [];
  sharedSize = 0;

  private keyEntry(key: string): { info: number; ids: Map<string, number> } {
    let k = this.byKey.get(key);
    if (k === undefined) {
      const { index, prefixLen } = xattrPrefix(key);
      if (key.length - prefixLen > 255) throw bad(`xattr key too long: ${key.length} bytes`);
      const bit = xxh32ByteString(key, XATTR_FILTER_SEED + index, prefixLen) & 31;
      k = { info: bit | (index << 5) | (prefixLen << 8), ids: new Map() };
      this.byKey.set(key, k);
    }
    return k;
  }

  private push(key: string, info: number, value: string, enc = V_PLAIN): number {
    if (valueLength(value, enc) > 0xffff) throw bad(`xattr value too long: ${value.length} bytes`);
    const id = this.keys.length;
    this.keys.push(key);
    this.vals.push(value);
    this.enc.push(enc);
    this.counts.push(0);
    this.info.push(info);
    return id;
  }

  /** The id of a (key, value) pair, interned on first use (not yet counted as used: see use()). */
  intern(key: string, value: string): number {
    const k = this.keyEntry(key);
    const id = k.ids.get(value);
    if (id !== undefined) return id;
    const newId = this.push(key, k.info, value);
    k.ids.set(value, newId);
    return newId;
  }

  /**
   * New per-file pairs, which the caller deduplicates (by digest, by payload) and which are distinct from every
   * other pair, so they skip the lookup; their values are built only when written.
   */
  addMetacopy(digestHex: string): number {
    return this.push(METACOPY, this.keyEntry(METACOPY).info, digestHex, V_METACOPY);
  }

  addRedirect(payload: string): number {
    return this.push(REDIRECT, this.keyEntry(REDIRECT).info, payload, V_REDIRECT);
  }

  /** Count one inode using pair `id`; pairs used more than once go to the shared table. */
  use(id: number): void {
    this.counts[id]++;
  }

  isAcl(id: number): boolean {
    const key = this.keys[id];
    return key === ACL_ACCESS || key === ACL_DEFAULT;
  }

  /** Pick the shared pairs (used by more than one inode) and lay out the table in its (descending) order. */
  finish(): void {
    const m = this.keys.length;
    this.dIndex = new Uint8Array(m);
    this.dPrefixLen = new Uint16Array(m);
    this.dBit = new Uint8Array(m);
    this.dEntrySize = new Int32Array(m);
    this.dShared = new Uint8Array(m);
    this.dOffset = new Int32Array(m);
    const shared: number[] = [];
    for (let id = 0; id < m; id++) {
      const info = this.info[id];
      this.dBit[id] = info & 31;
      this.dIndex[id] = (info >> 5) & 7;
      const prefixLen = info >> 8;
      this.dPrefixLen[id] = prefixLen;
      this.dEntrySize[id] = xattrEntrySize(
        this.keys[id].length - prefixLen,
        valueLength(this.vals[id], this.enc[id]),
      );
      if (this.counts[id] > 1) {
        this.dShared[id] = 1;
        shared.push(id);
      }
    }
    const { keys, vals, enc } = this;
    // Key descending, then longer value first, then value bytes descending (the C comparator, reversed). Equal
    // encodings of equal length compare like their bytes (hex digests in lowercase; redirects after the `/`).
    shared.sort((a, b) => {
      const ka = keys[a];
      const kb = keys[b];
      if (ka !== kb) return ka < kb ? 1 : -1;
      let va = vals[a];
      let vb = vals[b];
      const la = valueLength(va, enc[a]);
      const lb = valueLength(vb, enc[b]);
      if (la !== lb) return lb - la;
      if (enc[a] !== enc[b]) {
        va = valueBytes(va, enc[a]);
        vb = valueBytes(vb, enc[b]);
      }
      return va < vb ? 1 : va > vb ? -1 : 0;
    });
    let off = 0;
    for (const id of shared) {
      this.dOffset[id] = off;
      off += this.dEntrySize[id];
    }
    this.shared = shared;
    this.sharedSize = off;
    this.byKey.clear();
  }
}

/**
 * ass 2: write the planned image into `out` (at least plan.totalSize bytes; its first totalSize bytes are
 * verwritten) or into a new Buffer, and return that buffer. The plan refers to the tree's symlink targets
 * and nline contents, so the tree must not change between layoutErofs() and emitErofs().
 */
export function emitErofs(plan: ErofsPlan, out?: Buffer): Buffer {
  const L = plan._l;
  if (out !== undefined && out.length < plan.totalSize)
    throw new RangeError("emitErofs: output buffer too small");
  const buf = out === undefined ? Buffer.alloc(plan.totalSize) : out.fill(0, 0, plan.totalSize);
  const { dataStart, inodesEnd } = plan;
  const n = plan.inodeCount;
  const { kind, nid, nBlocks, tail, compact, xsz, xaStart, xaIds, entStart, entEnd, entName, entTarget } = L;
  const { dKey, dVal, dEnc, dIndex, dPrefixLen, dBit, dShared, dOffset } = L;
  const sharedBase = inodesEnd % BLOCK_SIZE;
  const dataBlock0 = dataStart / BLOCK_SIZE;
  const f: InodeFields = {
    layout: 0,
    xattrIcount: 0,
    mode: 0,
    nlink: 0,
    size: 0,
    u: 0,
    ino: 0,
    uid: 0,
    gid: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
  };

  writeComposefsHeader(buf, L.hasAcl ? COMPOSEFS_FLAG_HAS_ACL : 0, L.version);
  writeSuperblock(buf, {
    rootNid: nid[0],
    inos: n,
    buildTime: L.minSec,
    buildTimeNsec: L.minNsec,
    blocks: dataBlock0 + plan.dataBlocks,
    xattrBlkaddr: Math.floor(inodesEnd / BLOCK_SIZE),
  });

  for (let i = 0; i < n; i++) {
    const k = kind[i];
    const nb = nBlocks[i];
    const tl = tail[i];
    const blkaddr = nb > 0 ? dataBlock0 + L.relBlock[i] : 0;
    const blockOff = blkaddr * BLOCK_SIZE;
    let off = nid[i] * SLOT_SIZE;
    const xs = xsz[i];

    f.layout = tl > 0 ? LAYOUT_FLAT_INLINE : LAYOUT_FLAT_PLAIN;
    f.xattrIcount = xs === 0 ? 0 : (xs - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
    f.mode = L.mode[i];
    f.nlink = L.nlink[i];
    f.ino = i;
    f.uid = L.uid[i];
    f.gid = L.gid[i];
    f.mtimeSec = L.mtSec[i];
    f.mtimeNsec = L.mtNsec[i];
    f.u = blkaddr;
    switch (k) {
      case K_DIR:
        f.size = nb * BLOCK_SIZE + tl;
        break;
      case K_REG_EXTERNAL:
        f.size = L.size[i];
        f.layout = LAYOUT_CHUNK_BASED;
        // i_u is the chunk format; with a spilled chunk table the block address keeps its high 16 bits.
        f.u = ((blkaddr & 0xffff0000) | L.chunkFormat[i]) >>> 0;
        break;
      case K_CHR:
      case K_BLK:
        f.size = 0;
        f.u = L.rdev[i];
        break;
      case K_FIFO:
      case K_SOCK:
        f.size = 0;
        break;
      default:
        f.size = L.size[i];
    }
    if (compact[i]) {
      writeInodeCompact(buf, off, f);
      off += INODE_COMPACT_SIZE;
    } else {
      writeInodeExtended(buf, off, f);
      off += INODE_EXTENDED_SIZE;
    }

    // Xattr body: header with the name filter, shared ids, then inline entries (ascending key order).
    if (xs > 0) {
      const a = xaStart[i];
      const b = xaStart[i + 1];
      let filter = 0;
      let nShared = 0;
      let p = off + XATTR_IBODY_HEADER_SIZE;
      for (let j = a; j < b; j++) {
        const id = xaIds[j];
        filter |= 1 << dBit[id];
        if (dShared[id] && nShared < MAX_SHARED_XATTRS_PER_INODE) {
          putU32(buf, p, (sharedBase + dOffset[id]) / 4);
          p += 4;
          nShared++;
        }
      }
      putU32(buf, off, ~filter >>> 0);
      buf[off + 4] = nShared;
      let shareable = nShared;
      for (let j = a; j < b; j++) {
        const id = xaIds[j];
        if (dShared[id] && shareable > 0) {
          shareable--;
          continue;
        }
        p = writeXattrEntry(buf, p, dKey[id], dPrefixLen[id], dIndex[id], dVal[id], dEnc[id]);
      }
      off += xs;
    }

    // Inline tail and data blocks.
    switch (k) {
      case K_DIR:
        emitDirents(buf, entStart[i], entEnd[i], nb, off, blockOff, entName, entTarget, nid, kind);
        break;
      case K_SYMLINK:
        putLatin1(buf, nb > 0 ? blockOff : off, L.data[i] ?? "", 0);
        break;
      case K_REG_INLINE: {
        const data = L.data[i] ?? "";
        const blockBytes = Math.min(data.length, nb * BLOCK_SIZE);
        if (blockBytes > 0) buf.write(data.slice(0, blockBytes), blockOff, "latin1");
        if (tl > 0) putLatin1(buf, off, data, data.length - tl);
        break;
      }
      case K_REG_EXTERNAL:
        // Null chunk addresses: inline, or a whole 0xFF block when the table was spilled.
        if (nb > 0) buf.fill(0xff, blockOff, blockOff + BLOCK_SIZE);
        else if (tl > 0) buf.fill(0xff, off, off + tl);
        break;
    }
  }

  // Shared xattr table, packed, at inodesEnd.
  let p = inodesEnd;
  for (const id of L.shared)
    p = writeXattrEntry(buf, p, dKey[id], dPrefixLen[id], dIndex[id], dVal[id], dEnc[id]);
  return buf;
}

function writeXattrEntry(
  buf: Buffer,
  p: number,
  key: string,
  prefixLen: number,
  index: number,
  value: string,
  enc: number,
): number {
  const suffixLen = key.length - prefixLen;
  const length = valueLength(value, enc);
  buf[p] = suffixLen;
  buf[p + 1] = index;
  putU16(buf, p + 2, length);
  let q = p + 4;
  if (suffixLen > 0) q = putLatin1(buf, q, key, prefixLen);
  if (enc === V_METACOPY) {
    q = putLatin1(buf, q, metacopyHeader(value.length / 2), 0);
    for (let i = 0; i < value.length; i += 2)
      buf[q++] = (hexDigit(value.charCodeAt(i)) << 4) | hexDigit(value.charCodeAt(i + 1));
  } else if (enc === V_REDIRECT) {
    buf[q] = 0x2f; // "/"
    putLatin1(buf, q + 1, value, 0);
  } else if (length > 0) putLatin1(buf, q, value, 0);
  return p + xattrEntrySize(suffixLen, length);
}

/** Write a directory's dirent chunks: full chunks to its data blocks, the last one inline or as a block. */
function emitDirents(
  buf: Buffer,
  start: number,
  end: number,
  nBlocks: number,
  tailOff: number,
  blockOff: number,
  entName: string[],
  entTarget: Int32Array,
  nid: Float64Array,
  kind: Uint8Array,
): void {
  let chunk = 0;
  let first = start;
  let written = 0;
  for (let e = start; e < end; e++) {
    const len = DIRENT_SIZE + entName[e].length;
    if (chunk + len > BLOCK_SIZE) {
      writeChunk(buf, blockOff + written * BLOCK_SIZE, first, e, entName, entTarget, nid, kind);
      written++;
      chunk = 0;
      first = e;
    }
    chunk += len;
  }
  if (first < end) {
    const at = written < nBlocks ? blockOff + written * BLOCK_SIZE : tailOff;
    writeChunk(buf, at, first, end, entName, entTarget, nid, kind);
  }
}

function writeChunk(
  buf: Buffer,
  off: number,
  first: number,
  end: number,
  entName: string[],
  entTarget: Int32Array,
  nid: Float64Array,
  kind: Uint8Array,
): void {
  let nameoff = (end - first) * DIRENT_SIZE;
  let d = off;
  for (let e = first; e < end; e++) {
    const t = entTarget[e];
    writeDirent(buf, d, nid[t], nameoff, FILE_TYPE[kind[t]]);
    d += DIRENT_SIZE;
    nameoff += entName[e].length;
  }
  for (let e = first; e < end; e++) d = putLatin1(buf, d, entName[e], 0);
}

/**
 * Write `fs` as a composefs EROFS image (byte-identical to mkcomposefs 1.0.8 for the same tree and versions).
 */
export function writeErofs(fs: FileSystem | FlatTree, opts: ErofsOptions = {}): Buffer {
  return emitErofs(layoutErofs(fs, opts));
}
