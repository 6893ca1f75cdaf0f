// The flat tree: a filesystem tree as a table of directory entries in compact parallel arrays, the form the
// dumpfile parser produces and the EROFS writer lays out (composefs-erofs.md §1.4–§1.11, §2). It holds what
// tree.ts's object graph holds — names, stat, xattrs, content, hard links — without an object per entry, so a
// 64k-entry tree costs a few megabytes and almost no garbage-collector time.
//
// Row 0 is the root directory. Every other row is one directory entry: its parent row, its name, and either its
// own inode attributes or, for a hard link, `link` = the row that owns the shared inode (that row's `link` is -1;
// the attribute columns of a linking row are unused). Xattrs are (key, value) pairs interned once per tree;
// each row lists its pair ids. Names, symlink targets, inline contents and xattr keys and values are byte
// strings (tree.ts). `fromFileSystem` / `toFileSystem` convert to and from the object tree.

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
  S_IFREG,
  S_IFSOCK,
  isDirectory,
  newStat,
  type ByteString,
  type LeafContent,
} from "./tree.ts";

/** File type of a row: S_IFMT bits shifted right by 12. */
export const T_FIFO = S_IFIFO >> 12;
export const T_CHR = S_IFCHR >> 12;
export const T_DIR = S_IFDIR >> 12;
export const T_BLK = S_IFBLK >> 12;
export const T_REG = S_IFREG >> 12;
export const T_LNK = S_IFLNK >> 12;
export const T_SOCK = S_IFSOCK >> 12;

function growInt32(a: Int32Array, n: number): Int32Array {
  const b = new Int32Array(n);
  b.set(a);
  return b;
}

/** Children of every directory row, sorted bytewise by name, in CSR form. */
export interface ChildIndex {
  /** Children of row d are list[start[d] .. start[d + 1]). */
  readonly start: Int32Array;
  readonly list: Int32Array;
  /** A row whose name repeats an earlier sibling's (-1: none): the later of the two rows. */
  readonly duplicate: number;
}

export class FlatTree {
  /** Number of rows. */
  length = 0;
  parent: Int32Array;
  name: ByteString[] = [];
  /** -1, or the row owning the inode this row is a hard link to. */
  link: Int32Array;
  /** File type (S_IFMT >> 12): T_DIR, T_REG, … */
  type: Uint8Array;
  /** Permission and special bits (mode & 0o7777). */
  perm: Uint16Array;
  nlink: Uint32Array;
  uid: Uint32Array;
  gid: Uint32Array;
  rdev: Uint32Array;
  mtimeSec: Float64Array;
  mtimeNsec: Uint32Array;
  /** Regular files: the size; others 0 (symlinks: the target length). */
  size: Float64Array;
  /** Symlink target, or a regular file's inline content; undefined otherwise. */
  data: (ByteString | undefined)[] = [];
  /** A regular file's backing path relative to the object store; undefined when none. */
  payload: (ByteString | undefined)[] = [];
  /** A regular file's fs-verity digest, lowercase hex; undefined when none. */
  digest: (string | undefined)[] = [];
  /** Row's xattr pair ids: pairs[xattrStart[i] .. xattrStart[i] + xattrCount[i]). */
  xattrStart: Int32Array;
  xattrCount: Uint16Array;
  pairs: Int32Array = new Int32Array(1024);
  pairsLength = 0;
  /** Interned xattr pairs. */
  readonly pairKey: ByteString[] = [];
  readonly pairValue: ByteString[] = [];
  private readonly pairIds = new Map<ByteString, Map<ByteString, number>>();
  private capacity: number;
  private childIndexCache: ChildIndex | null = null;

  constructor(capacity = 1024) {
    this.capacity = Math.max(capacity, 16);
    const c = this.capacity;
    this.parent = new Int32Array(c);
    this.link = new Int32Array(c);
    this.type = new Uint8Array(c);
    this.perm = new Uint16Array(c);
    this.nlink = new Uint32Array(c);
    this.uid = new Uint32Array(c);
    this.gid = new Uint32Array(c);
    this.rdev = new Uint32Array(c);
    this.mtimeSec = new Float64Array(c);
    this.mtimeNsec = new Uint32Array(c);
    this.size = new Float64Array(c);
    this.xattrStart = new Int32Array(c);
    this.xattrCount = new Uint16Array(c);
  }

  private grow(): void {
    const c = this.capacity * 2;
    const copy = <T extends { set(a: ArrayLike<number>): void }>(a: T, make: (n: number) => T): T => {
      const b = make(c);
      b.set(a as unknown as ArrayLike<number>);
      return b;
    };
    this.parent = growInt32(this.parent, c);
    this.link = growInt32(this.link, c);
    this.type = copy(this.type, (n) => new Uint8Array(n));
    this.perm = copy(this.perm, (n) => new Uint16Array(n));
    this.nlink = copy(this.nlink, (n) => new Uint32Array(n));
    this.uid = copy(this.uid, (n) => new Uint32Array(n));
    this.gid = copy(this.gid, (n) => new Uint32Array(n));
    this.rdev = copy(this.rdev, (n) => new Uint32Array(n));
    this.mtimeSec = copy(this.mtimeSec, (n) => new Float64Array(n));
    this.mtimeNsec = copy(this.mtimeNsec, (n) => new Uint32Array(n));
    this.size = copy(this.size, (n) => new Float64Array(n));
    this.xattrStart = growInt32(this.xattrStart, c);
    this.xattrCount = copy(this.xattrCount, (n) => new Uint16Array(n));
    this.capacity = c;
  }

  /**
   * Append a row with the given parent row (-1 for the root), name and file type; every other column is zero
   * or absent. Returns the row.
   */
  add(parent: number, name: ByteString, type: number): number {
    if (this.length === this.capacity) this.grow();
    const i = this.length++;
    this.parent[i] = parent;
    this.name.push(name);
    this.link[i] = -1;
    this.type[i] = type;
    this.data.push(undefined);
    this.payload.push(undefined);
    this.digest.push(undefined);
    this.xattrStart[i] = this.pairsLength;
    this.childIndexCache = null;
    return i;
  }

  /** The id of a (key, value) pair, interning it on first use. */
  internPair(key: ByteString, value: ByteString): number {
    let byValue = this.pairIds.get(key);
    if (byValue === undefined) {
      byValue = new Map();
      this.pairIds.set(key, byValue);
    }
    let id = byValue.get(value);
    if (id === undefined) {
      id = this.pairKey.length;
      this.pairKey.push(key);
      this.pairValue.push(value);
      byValue.set(value, id);
    }
    return id;
  }

  /** Set the xattrs of the last row added (pair ids; keys must be distinct). */
  setXattrs(row: number, ids: ArrayLike<number>, count: number): void {
    if (row !== this.length - 1) throw new RangeError("FlatTree.setXattrs: only the last row");
    while (this.pairsLength + count > this.pairs.length)
      this.pairs = growInt32(this.pairs, this.pairs.length * 2);
    this.xattrStart[row] = this.pairsLength;
    for (let j = 0; j < count; j++) this.pairs[this.pairsLength++] = ids[j];
    this.xattrCount[row] = count;
  }

  /** The children of every directory, sorted by name (computed once, until the next add). */
  childIndex(): ChildIndex {
    if (this.childIndexCache !== null) return this.childIndexCache;
    const start = childOffsets(this.parent, this.length);
    const list = childList(this.parent, this.length, start);
    const duplicate = sortSiblings(list, start, this.name, this.length);
    this.childIndexCache = { start, list, duplicate };
    return this.childIndexCache;
  }

  /** The path of a row ("/" for the root), for messages. */
  path(row: number): ByteString {
    if (row === 0) return "/";
    const parts: ByteString[] = [];
    for (let r = row; r > 0; r = this.parent[r]) parts.push(this.name[r]);
    return "/" + parts.reverse().join("/");
  }
}

/** The row of `name` among `dir`'s children (binary search in the sorted child index), or -1. */
export function findChild(t: FlatTree, index: ChildIndex, dir: number, name: ByteString): number {
  let lo = index.start[dir];
  let hi = index.start[dir + 1] - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const row = index.list[mid];
    const n = t.name[row];
    if (n === name) return row;
    if (n < name) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

// childIndex's steps, one loop each (small functions optimise early and stay optimised).

/** start[d] .. start[d + 1]: where row d's children go in the child list. */
function childOffsets(parent: Int32Array, n: number): Int32Array {
  const start = new Int32Array(n + 1);
  for (let i = 1; i < n; i++) start[parent[i] + 1]++;
  for (let i = 0; i < n; i++) start[i + 1] += start[i];
  return start;
}

function childList(parent: Int32Array, n: number, start: Int32Array): Int32Array {
  const fill = start.slice(0, n);
  const list = new Int32Array(Math.max(n - 1, 0));
  for (let i = 1; i < n; i++) list[fill[parent[i]]++] = i;
  return list;
}

/** Sort each directory's children by name (they usually are already); the later row of a repeated name, or -1. */
function sortSiblings(list: Int32Array, start: Int32Array, names: ByteString[], n: number): number {
  let duplicate = -1;
  for (let d = 0; d < n; d++) {
    const a = start[d];
    const b = start[d + 1];
    if (b - a < 2 || isSorted(list, a, b, names)) continue;
    const sub = Array.from(list.subarray(a, b)).sort((x, y) =>
      names[x] < names[y] ? -1 : names[x] > names[y] ? 1 : x - y,
    );
    list.set(sub, a);
    for (let j = a + 1; j < b; j++) {
      if (names[list[j - 1]] === names[list[j]]) {
        const later = list[j];
        if (duplicate === -1 || later < duplicate) duplicate = later;
      }
    }
  }
  return duplicate;
}

/** Strictly increasing names in list[a, b). */
function isSorted(list: Int32Array, a: number, b: number, names: ByteString[]): boolean {
  for (let j = a + 1; j < b; j++) if (!(names[list[j - 1]] < names[list[j]])) return false;
  return true;
}

function bad(message: string): StratumError {
  return new StratumError("E_BAD_INPUT", message);
}

function typeOf(content: LeafContent): number {
  switch (content.type) {
    case "reg":
      return T_REG;
    case "symlink":
      return T_LNK;
    case "chr":
      return T_CHR;
    case "blk":
      return T_BLK;
    case "fifo":
      return T_FIFO;
    case "sock":
      return T_SOCK;
  }
}

/**
 * Flatten an object tree. Rows follow a depth-first walk with sorted children. A leaf under several names is
 * owned by its `primary` entry when that names an entry of this tree holding the leaf, otherwise by its first
 * name in that walk; its other names become links. Throws E_BAD_INPUT for a directory that appears twice.
 */
export function fromFileSystem(fs: FileSystem): FlatTree {
  const t = new FlatTree(4096);
  const rowOfDir = new Map<Directory, number>();
  const rowsOfLeaf = new Map<Leaf, number | number[]>();
  let shared: Leaf[] | null = null;
  const ids: number[] = [];

  const setStat = (row: number, inode: Directory | Leaf): void => {
    const st = inode.stat;
    t.perm[row] = st.mode & 0o7777;
    t.uid[row] = st.uid;
    t.gid[row] = st.gid;
    t.mtimeSec[row] = st.mtimeSec;
    t.mtimeNsec[row] = st.mtimeNsec;
    ids.length = 0;
    for (const [key, value] of st.xattrs) ids.push(t.internPair(key, value.toString("latin1")));
    t.setXattrs(row, ids, ids.length);
  };

  const stack: [Directory, number][] = [];
  const root = t.add(-1, "", T_DIR);
  setStat(root, fs.root);
  rowOfDir.set(fs.root, root);
  stack.push([fs.root, root]);
  while (stack.length > 0) {
    const [dir, dirRow] = stack.pop() as [Directory, number];
    const children = dir.sorted();
    const subdirs: [Directory, number][] = [];
    for (const [name, inode] of children) {
      if (isDirectory(inode)) {
        if (rowOfDir.has(inode)) throw bad("EROFS writer: a directory appears more than once in the tree");
        const row = t.add(dirRow, name, T_DIR);
        setStat(row, inode);
        rowOfDir.set(inode, row);
        subdirs.push([inode, row]);
        continue;
      }
      const c = inode.content;
      const row = t.add(dirRow, name, typeOf(c));
      const seen = rowsOfLeaf.get(inode);
      if (seen !== undefined) {
        const first = typeof seen === "number" ? seen : seen[0];
        t.link[row] = first;
        if (typeof seen === "number") {
          rowsOfLeaf.set(inode, [seen, row]);
          (shared ??= []).push(inode);
        } else seen.push(row);
        continue;
      }
      rowsOfLeaf.set(inode, row);
      setStat(row, inode);
      t.nlink[row] = inode.nlink;
      switch (c.type) {
        case "reg":
          t.size[row] = c.size;
          if (c.inline !== undefined) t.data[row] = c.inline.toString("latin1");
          if (c.payload !== undefined && c.payload !== "") t.payload[row] = c.payload;
          if (c.digest !== undefined) t.digest[row] = c.digest.toLowerCase();
          break;
        case "symlink":
          t.size[row] = c.target.length;
          t.data[row] = c.target;
          break;
        case "chr":
        case "blk":
          t.rdev[row] = c.rdev;
          break;
        default:
          break;
      }
    }
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]);
  }

  // Hard links whose hint names another of their entries: that entry owns the inode.
  if (shared !== null) {
    for (const leaf of shared) {
      const rows = rowsOfLeaf.get(leaf) as number[];
      const hint = leaf.primary;
      if (hint === null || hint.parent.entries.get(hint.name) !== leaf) continue;
      const parentRow = rowOfDir.get(hint.parent);
      const owner = rows.find((r) => t.parent[r] === parentRow && t.name[r] === hint.name);
      if (owner === undefined || owner === rows[0]) continue;
      moveInode(t, rows[0], owner);
      for (const r of rows) t.link[r] = r === owner ? -1 : owner;
    }
  }
  return t;
}

/** Copy the inode columns of row `from` to row `to` (for re-homing a hard-linked inode). */
function moveInode(t: FlatTree, from: number, to: number): void {
  t.perm[to] = t.perm[from];
  t.nlink[to] = t.nlink[from];
  t.uid[to] = t.uid[from];
  t.gid[to] = t.gid[from];
  t.rdev[to] = t.rdev[from];
  t.mtimeSec[to] = t.mtimeSec[from];
  t.mtimeNsec[to] = t.mtimeNsec[from];
  t.size[to] = t.size[from];
  t.data[to] = t.data[from];
  t.payload[to] = t.payload[from];
  t.digest[to] = t.digest[from];
  t.xattrStart[to] = t.xattrStart[from];
  t.xattrCount[to] = t.xattrCount[from];
}

function leafContent(t: FlatTree, row: number): LeafContent {
  switch (t.type[row]) {
    case T_REG: {
      const data = t.data[row];
      const c: LeafContent = { type: "reg", size: data !== undefined ? data.length : t.size[row] };
      if (data !== undefined) c.inline = Buffer.from(data, "latin1");
      const digest = t.digest[row];
      if (digest !== undefined) c.digest = digest;
      const payload = t.payload[row];
      if (payload !== undefined) c.payload = payload;
      return c;
    }
    case T_LNK:
      return { type: "symlink", target: t.data[row] ?? "" };
    case T_CHR:
      return { type: "chr", rdev: t.rdev[row] };
    case T_BLK:
      return { type: "blk", rdev: t.rdev[row] };
    case T_FIFO:
      return { type: "fifo" };
    default:
      return { type: "sock" };
  }
}

/**
 * Build the object tree of a flat tree. Rows must have their parents before them (as every producer writes
 * them) and hard links must point at owning rows. A leaf with links records its owning row as `primary`.
 */
export function toFileSystem(t: FlatTree): FileSystem {
  const n = t.length;
  const nodes: (Directory | Leaf)[] = new Array<Directory | Leaf>(n);
  const stat = (row: number) => {
    const xattrs = new Map<ByteString, Buffer>();
    const a = t.xattrStart[row];
    for (let j = a, b = a + t.xattrCount[row]; j < b; j++) {
      const id = t.pairs[j];
      xattrs.set(t.pairKey[id], Buffer.from(t.pairValue[id], "latin1"));
    }
    return newStat({
      mode: t.perm[row],
      uid: t.uid[row],
      gid: t.gid[row],
      mtimeSec: t.mtimeSec[row],
      mtimeNsec: t.mtimeNsec[row],
      xattrs,
    });
  };
  for (let i = 0; i < n; i++) {
    if (t.link[i] !== -1) continue;
    if (t.type[i] === T_DIR) nodes[i] = new Directory(stat(i));
    else {
      const leaf = new Leaf(stat(i), leafContent(t, i));
      leaf.nlink = t.nlink[i];
      nodes[i] = leaf;
    }
  }
  for (let i = 0; i < n; i++) {
    const owner = t.link[i];
    if (owner !== -1) {
      const leaf = nodes[owner] as Leaf;
      nodes[i] = leaf;
      leaf.primary = { parent: nodes[t.parent[owner]] as Directory, name: t.name[owner] };
    }
  }
  for (let i = 1; i < n; i++) (nodes[t.parent[i]] as Directory).entries.set(t.name[i], nodes[i]);
  return new FileSystem(nodes[0] as Directory);
}
