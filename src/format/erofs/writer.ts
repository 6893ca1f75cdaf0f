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
import { Directory, Leaf, type FileSystem, type Inode } from "../../tree/tree.ts";
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

// Directory entry kinds.
const E_CHILD = 0;
const E_DOT = 1;
const E_DOTDOT = 2;
const E_STUB = 3;

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

interface Layout {
  version: 0 | 1;
  hasAcl: boolean;
  minSec: number;
  minNsec: number;
  // Entries, flat, directory by directory in BFS order, each directory's names sorted.
  entName: string[];
  entTarget: Int32Array;
  // Per inode (index = BFS index).
  obj: (Inode | null)[];
  kind: Uint8Array;
  mode: Uint16Array;
  nlink: number[];
  uid: number[];
  gid: number[];
  mtSec: number[];
  mtNsec: number[];
  size: number[];
  rdev: number[];
  entStart: Int32Array;
  entEnd: Int32Array;
  xaStart: Int32Array;
  xaIds: Int32Array;
  nid: Float64Array;
  nBlocks: Int32Array;
  tail: Int32Array;
  compact: Uint8Array;
  xsz: Int32Array;
  relBlock: Int32Array;
  chunkFormat: Uint8Array;
  // Distinct xattr (key, value) pairs.
  dKey: string[];
  dVal: string[];
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
  if (name.length === 0 || name.length > NAME_MAX || name === "." || name === "..")
    throw bad(`invalid file name ${JSON.stringify(name)}`);
  if (name.indexOf("/") !== -1 || name.indexOf("\0") !== -1)
    throw bad(`invalid file name ${JSON.stringify(name)}`);
}

const STUB_NAMES: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * ass 1: lay the image out. The returned plan holds compact arrays proportional to the metadata; emit it
 * with mitErofs(). Throws StratumError E_BAD_INPUT for trees that cannot be written (invalid names,
 * too-large files or attrs, shared or cyclic directories).
 */
export function layoutErofs(fs: FileSystem, opts: ErofsOptions = {}): ErofsPlan {
  const root = fs.root;
  const minVersion = opts.minVersion ?? 0;
  const maxVersion = Math.max(opts.maxVersion ?? 1, minVersion);

  // ---- A: breadth-first walk over directories, recording sorted entries -----------------------------------
  const dirs: Directory[] = [root];
  const dirOrd = new Map<Directory, number>([[root, 0]]);
  const dirParent: number[] = [0];
  const dirEntStart: number[] = [];
  const dirEntEnd: number[] = [];
  const dirSubdirs: number[] = [];
  const entName: string[] = [];
  const entObj: (Inode | null)[] = [];
  const entKind: number[] = [];
  // Every leaf once; leaves met more than once (hard links) also get a count in leafCount.
  const leaves = new Set<Leaf>();
  const leafCount = new Map<Leaf, number>();
  let anyHardlink = false;
  let anyWhiteout = false;

  for (let d = 0; d < dirs.length; d++) {
    const dir = dirs[d];
    const names = Array.from(dir.entries.keys());
    for (const n of names) checkName(n);
    names.push(".", "..");
    if (d === 0) for (const s of STUB_NAMES) if (!dir.entries.has(s)) names.push(s);
    names.sort();
    dirEntStart.push(entName.length);
    let subdirs = 0;
    for (const name of names) {
      const obj = dir.entries.get(name);
      entName.push(name);
      if (obj === undefined) {
        entObj.push(null);
        entKind.push(name === "." ? E_DOT : name === ".." ? E_DOTDOT : E_STUB);
      } else {
        entObj.push(obj);
        entKind.push(E_CHILD);
        if (obj instanceof Directory) {
          if (dirOrd.has(obj)) throw bad("a directory appears more than once in the tree");
          dirOrd.set(obj, dirs.length);
          dirs.push(obj);
          dirParent.push(d);
          subdirs++;
        } else {
          const before = leaves.size;
          leaves.add(obj);
          if (leaves.size !== before) {
            if (!anyWhiteout && obj.isWhiteout) anyWhiteout = true;
          } else {
            leafCount.set(obj, (leafCount.get(obj) ?? 1) + 1);
            anyHardlink = true;
          }
        }
      }
    }
    dirEntEnd.push(entName.length);
    dirSubdirs.push(subdirs);
  }
  const nEnt = entName.length;
  leaves.clear();

  let version: 0 | 1 = minVersion;
  if (version < 1 && maxVersion >= 1 && anyWhiteout) version = 1;

  // ---- hard links: which entry owns the inode -------------------------------------------------------------
  // For a leaf in leafCount, the primary entry is leaf.primary when that names an entry of this tree holding
  // the leaf, otherwise the leaf's first occurrence in depth-first sorted order.
  let primaryEntry: Map<Leaf, number> | null = null;
  if (anyHardlink) {
    primaryEntry = new Map();
    let needDfs = false;
    for (const leaf of leafCount.keys()) {
      const hint = leaf.primary;
      const ord = hint ? dirOrd.get(hint.parent) : undefined;
      if (hint && ord !== undefined && hint.parent.entries.get(hint.name) === leaf) {
        for (let e = dirEntStart[ord]; e < dirEntEnd[ord]; e++)
          if (entName[e] === hint.name) primaryEntry.set(leaf, e);
      } else {
        needDfs = true;
      }
    }
    if (needDfs) {
      const stackDir: number[] = [0];
      const stackPos: number[] = [dirEntStart[0]];
      while (stackDir.length) {
        const top = stackDir.length - 1;
        const d = stackDir[top];
        const e = stackPos[top];
        if (e >= dirEntEnd[d]) {
          stackDir.pop();
          stackPos.pop();
          continue;
        }
        stackPos[top] = e + 1;
        const obj = entObj[e];
        if (obj === null) continue;
        if (obj instanceof Directory) {
          const sub = dirOrd.get(obj) as number;
          stackDir.push(sub);
          stackPos.push(dirEntStart[sub]);
        } else if (!primaryEntry.has(obj) && leafCount.has(obj)) {
          primaryEntry.set(obj, e);
        }
      }
    }
  }

  // ---- B: inode order (BFS), entry targets ----------------------------------------------------------------
  const obj: (Inode | null)[] = [root];
  const entTarget = new Int32Array(nEnt);
  const dirIdx = new Int32Array(dirs.length);
  const linkIdx = new Map<Leaf, number>();
  const whiteoutParents: number[] = [];
  let nextDir = 1;
  for (let d = 0; d < dirs.length; d++) {
    const di = dirIdx[d];
    for (let e = dirEntStart[d]; e < dirEntEnd[d]; e++) {
      switch (entKind[e]) {
        case E_DOT:
          entTarget[e] = di;
          break;
        case E_DOTDOT:
          entTarget[e] = dirIdx[dirParent[d]];
          break;
        case E_STUB:
          entTarget[e] = obj.length;
          obj.push(null);
          break;
        default: {
          const o = entObj[e] as Inode;
          if (o instanceof Directory) {
            dirIdx[nextDir++] = obj.length;
          } else if (primaryEntry !== null && leafCount.has(o)) {
            if (primaryEntry.get(o) !== e) {
              entTarget[e] = -1; // resolved below
              break;
            }
            linkIdx.set(o, obj.length);
          }
          if (o instanceof Leaf && o.isWhiteout) whiteoutParents.push(di);
          entTarget[e] = obj.length;
          obj.push(o);
        }
      }
    }
  }
  if (anyHardlink) {
    for (let e = 0; e < nEnt; e++)
      if (entTarget[e] === -1) entTarget[e] = linkIdx.get(entObj[e] as Leaf) as number;
  }
  const n = obj.length;
  const hasWhiteoutChild = new Uint8Array(n);
  for (const p of whiteoutParents) hasWhiteoutChild[p] = 1;

  // ---- C: per-inode attributes and rewritten xattrs -------------------------------------------------------
  const kind = new Uint8Array(n);
  const mode = new Uint16Array(n);
  const nlink: number[] = new Array<number>(n);
  const uid: number[] = new Array<number>(n);
  const gid: number[] = new Array<number>(n);
  const mtSec: number[] = new Array<number>(n);
  const mtNsec: number[] = new Array<number>(n);
  const size: number[] = new Array<number>(n).fill(0);
  const rdev: number[] = new Array<number>(n).fill(0);
  const entStart = new Int32Array(n).fill(-1);
  const entEnd = new Int32Array(n).fill(-1);
  for (let d = 0; d < dirs.length; d++) {
    entStart[dirIdx[d]] = dirEntStart[d];
    entEnd[dirIdx[d]] = dirEntEnd[d];
  }

  const xa = new XattrTable();
  const xaStart = new Int32Array(n + 1);
  const xaIdsList: number[] = [];
  const rootSelinux = root.stat.xattrs.get(SELINUX);
  const rootSelinuxStr = rootSelinux === undefined ? null : rootSelinux.toString("latin1");
  let minSec = root.stat.mtimeSec;
  let minNsec = root.stat.mtimeNsec;
  let hasAcl = false;
  const keys: string[] = [];
  const vals: string[] = [];

  for (let i = 0; i < n; i++) {
    const o = obj[i];
    keys.length = 0;
    vals.length = 0;
    const st = o === null ? root.stat : o.stat;
    let k: number;
    if (o === null) {
      // A 00…ff stub: chardev 0:0, mode 0644, the root's owner and mtime (and SELinux label).
      k = K_CHR;
      mode[i] = 0o020644;
      nlink[i] = 1;
      if (rootSelinuxStr !== null) {
        keys.push(SELINUX);
        vals.push(rootSelinuxStr);
      }
    } else {
      if (st.xattrs.size > 0) {
        for (const [key, value] of st.xattrs) {
          if (key.length === 0) throw bad("empty xattr key");
          keys.push(
            key.startsWith(TRUSTED_OVERLAY) ? ESCAPED_PREFIX + key.slice(TRUSTED_OVERLAY.length) : key,
          );
          vals.push(value.length === 0 ? "" : value.toString("latin1"));
        }
      }
      if (o instanceof Directory) {
        k = K_DIR;
        nlink[i] = 2 + dirSubdirs[dirOrd.get(o) as number];
        if (hasWhiteoutChild[i]) {
          setXattr(keys, vals, ESCAPED_WHITEOUTS, "");
          setXattr(keys, vals, USER_WHITEOUTS, "");
          if (version >= 1) {
            setXattr(keys, vals, ESCAPED_OPAQUE, "x");
            setXattr(keys, vals, USER_OPAQUE, "x");
          }
        }
        if (i === 0) setXattr(keys, vals, OPAQUE, "y");
      } else {
        nlink[i] = o.nlink;
        const c = o.content;
        switch (c.type) {
          case "reg":
            if (c.inline !== undefined) {
              if (c.inline.length !== c.size)
                throw bad(`inline content of ${c.inline.length} bytes but size ${c.size}`);
              k = c.size > 0 ? K_REG_INLINE : K_REG_EMPTY;
            } else if (c.size > 0) {
              if (!Number.isSafeInteger(c.size) || c.size > FILE_SIZE_MAX) throw bad("file too large");
              k = K_REG_EXTERNAL;
              let mc = "";
              if (c.digest !== undefined) {
                const digest = Buffer.from(c.digest, "hex");
                if (!(
                  (digest.length === 32 || digest.length === 64) &&
                  c.digest.length === 2 * digest.length
                ))
                  throw bad(`invalid digest ${c.digest}`);
                mc =
                  (digest.length === 32 ? METACOPY_SHA256_HEADER : METACOPY_SHA512_HEADER) +
                  digest.toString("latin1");
              }
              setXattr(keys, vals, METACOPY, mc);
              if (c.payload !== undefined && c.payload.length > 0)
                setXattr(keys, vals, REDIRECT, "/" + c.payload);
            } else {
              k = K_REG_EMPTY;
            }
            size[i] = c.size;
            break;
          case "symlink":
            if (c.target.length === 0) throw bad("empty symlink target");
            k = K_SYMLINK;
            size[i] = c.target.length;
            break;
          case "chr":
            if (c.rdev === 0) {
              // A user whiteout: written as an empty regular file carrying the escaped marker.
              k = K_REG_EMPTY;
              setXattr(keys, vals, ESCAPED_WHITEOUT, "");
              setXattr(keys, vals, USER_WHITEOUT, "");
            } else {
              k = K_CHR;
              rdev[i] = c.rdev;
            }
            break;
          case "blk":
            k = K_BLK;
            rdev[i] = c.rdev;
            break;
          case "fifo":
            k = K_FIFO;
            break;
          case "sock":
            k = K_SOCK;
            break;
        }
      }
      mode[i] = TYPE_BITS[k] | (st.mode & 0o7777);
    }
    kind[i] = k;
    uid[i] = st.uid;
    gid[i] = st.gid;
    const s = st.mtimeSec;
    const ns = st.mtimeNsec;
    mtSec[i] = s;
    mtNsec[i] = ns;
    if (s < minSec || (s === minSec && ns < minNsec)) {
      minSec = s;
      minNsec = ns;
    }

    xaStart[i] = xaIdsList.length;
    const nx = keys.length;
    if (nx > 0) {
      if (nx > 1) sortPairs(keys, vals);
      for (let j = 0; j < nx; j++) {
        const key = keys[j];
        if (!hasAcl && (key === ACL_ACCESS || key === ACL_DEFAULT)) hasAcl = true;
        xaIdsList.push(xa.intern(key, vals[j]));
      }
    }
  }
  xaStart[n] = xaIdsList.length;
  const xaIds = Int32Array.from(xaIdsList);
  xa.finish();

  // ---- D: placement (§1.5–§1.8) ---------------------------------------------------------------------------
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
  if (nid[0] >= 0x10000) throw bad("root nid does not fit in 16 bits");

  const layout: Layout = {
    version,
    hasAcl,
    minSec,
    minNsec,
    entName,
    entTarget,
    obj,
    kind,
    mode,
    nlink,
    uid,
    gid,
    mtSec,
    mtNsec,
    size,
    rdev,
    entStart,
    entEnd,
    xaStart,
    xaIds,
    nid,
    nBlocks,
    tail,
    compact,
    xsz,
    relBlock,
    chunkFormat,
    dKey: xa.keys,
    dVal: xa.vals,
    dIndex: xa.dIndex,
    dPrefixLen: xa.dPrefixLen,
    dBit: xa.dBit,
    dShared,
    dOffset: xa.dOffset,
    shared: xa.shared,
    sharedSize: xa.sharedSize,
  };
  return {
    totalSize,
    version,
    inodeCount: n,
    rootNid: nid[0],
    inodesEnd,
    dataStart,
    dataBlocks,
    _l: layout,
  };
}

/**
 * Set key=value in parallel key/value arrays, replacing an existing value (lcfs_node_set_xattr semantics).
 */
function setXattr(keys: string[], vals: string[], key: string, value: string): void {
  const i = keys.indexOf(key);
  if (i === -1) {
    keys.push(key);
    vals.push(value);
  } else {
    vals[i] = value;
  }
}

/** Insertion sort of parallel arrays by key (bytewise; keys are unique). Xattr lists are short. */
function sortPairs(keys: string[], vals: string[]): void {
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i];
    const v = vals[i];
    let j = i - 1;
    while (j >= 0 && keys[j] > k) {
      keys[j + 1] = keys[j];
      vals[j + 1] = vals[j];
      j--;
    }
    keys[j + 1] = k;
    vals[j + 1] = v;
  }
}

/**
 * Distinct (key, value) xattr pairs with their use counts, entry sizes, filter bits and shared-table offsets.
 */
class XattrTable {
  readonly keys: string[] = [];
  readonly vals: string[] = [];
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

  intern(key: string, value: string): number {
    let k = this.byKey.get(key);
    if (k === undefined) {
      const { index, prefixLen } = xattrPrefix(key);
      if (key.length - prefixLen > 255) throw bad(`xattr key too long: ${key.length} bytes`);
      const bit = xxh32ByteString(key, XATTR_FILTER_SEED + index, prefixLen) & 31;
      k = { info: bit | (index << 5) | (prefixLen << 8), ids: new Map() };
      this.byKey.set(key, k);
    }
    const id = k.ids.get(value);
    if (id !== undefined) {
      this.counts[id]++;
      return id;
    }
    if (value.length > 0xffff) throw bad(`xattr value too long: ${value.length} bytes`);
    const newId = this.keys.length;
    this.keys.push(key);
    this.vals.push(value);
    this.counts.push(1);
    this.info.push(k.info);
    k.ids.set(value, newId);
    return newId;
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
      this.dEntrySize[id] = xattrEntrySize(this.keys[id].length - prefixLen, this.vals[id].length);
      if (this.counts[id] > 1) {
        this.dShared[id] = 1;
        shared.push(id);
      }
    }
    const { keys, vals } = this;
    // Key descending, then longer value first, then value bytes descending (the C comparator, reversed).
    shared.sort((a, b) => {
      const ka = keys[a];
      const kb = keys[b];
      if (ka !== kb) return ka < kb ? 1 : -1;
      const va = vals[a];
      const vb = vals[b];
      if (va.length !== vb.length) return vb.length - va.length;
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
  const { dKey, dVal, dIndex, dPrefixLen, dBit, dShared, dOffset } = L;
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
        p = writeXattrEntry(buf, p, dKey[id], dPrefixLen[id], dIndex[id], dVal[id]);
      }
      off += xs;
    }

    // Inline tail and data blocks.
    switch (k) {
      case K_DIR:
        emitDirents(buf, entStart[i], entEnd[i], nb, off, blockOff, entName, entTarget, nid, kind);
        break;
      case K_SYMLINK: {
        const o = L.obj[i] as Leaf;
        const target = o.content.type === "symlink" ? o.content.target : "";
        putLatin1(buf, nb > 0 ? blockOff : off, target, 0);
        break;
      }
      case K_REG_INLINE: {
        const o = L.obj[i] as Leaf;
        const data = o.content.type === "reg" ? o.content.inline : undefined;
        if (data === undefined) break;
        const blockBytes = Math.min(data.length, nb * BLOCK_SIZE);
        if (blockBytes > 0) data.copy(buf, blockOff, 0, blockBytes);
        if (tl > 0) data.copy(buf, off, data.length - tl);
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
  for (const id of L.shared) p = writeXattrEntry(buf, p, dKey[id], dPrefixLen[id], dIndex[id], dVal[id]);
  return buf;
}

function writeXattrEntry(
  buf: Buffer,
  p: number,
  key: string,
  prefixLen: number,
  index: number,
  value: string,
): number {
  const suffixLen = key.length - prefixLen;
  buf[p] = suffixLen;
  buf[p + 1] = index;
  putU16(buf, p + 2, value.length);
  let q = p + 4;
  if (suffixLen > 0) q = putLatin1(buf, q, key, prefixLen);
  if (value.length > 0) putLatin1(buf, q, value, 0);
  return p + xattrEntrySize(suffixLen, value.length);
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
export function writeErofs(fs: FileSystem, opts: ErofsOptions = {}): Buffer {
  return emitErofs(layoutErofs(fs, opts));
}
