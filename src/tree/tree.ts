// The in-memory filesystem tree that dumpfiles, directory scans and OCI layers are read into and EROFS images are
// written from (reference: composefs-erofs.md §1.4, §1.11, §2; composefs-repository.md §5.1).
//
// Names, symlink targets and xattr keys are *byte strings*: JavaScript strings holding one byte per character
// (latin1), so any byte sequence round-trips, and ordinary string comparison (`<`) is exactly the bytewise
// `strcmp` order composefs sorts by. Use `bytes()` / `byteString()` to convert. Xattr values are Buffers.
// Hard links are one Leaf object referenced from several directories. Directories are never shared.

/** A string with one byte per character (latin1): names, link targets, xattr keys. */
export type ByteString = string;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export function byteString(b: Buffer | string): ByteString {
  return typeof b === "string" ? Buffer.from(b, "utf8").toString("latin1") : b.toString("latin1");
}

export function bytes(s: ByteString): Buffer {
  return Buffer.from(s, "latin1");
}

/** Bytewise comparison of byte strings (what composefs sorts names and xattr keys by). */
export function compareBytes(a: ByteString, b: ByteString): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A device number as the tree (and EROFS, `i_u`) stores it: the kernel's 32-bit "new" encoding of major and
 * minor (minor low 8 bits, major 12 bits, minor high bits above).
 */
export function makeRdev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export interface Stat {
  /** Permission and special bits only (mode & 0o7777); the file type comes from the node's kind. */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  /** 0 ≤ mtimeNsec < 1e9. */
  mtimeNsec: number;
  /** Extended attributes: key (byte string) → value. */
  xattrs: Map<ByteString, Buffer>;
}

export function newStat(partial: Partial<Stat> = {}): Stat {
  return {
    mode: partial.mode ?? 0o755,
    uid: partial.uid ?? 0,
    gid: partial.gid ?? 0,
    mtimeSec: partial.mtimeSec ?? 0,
    mtimeNsec: partial.mtimeNsec ?? 0,
    xattrs: partial.xattrs ?? new Map<ByteString, Buffer>(),
  };
}

/** What a non-directory holds. */
export type LeafContent =
  | {
      type: "reg";
      size: number;
      /** Inline content (stored in the image itself); its length equals size. */
      inline?: Buffer;
      /** fs-verity digest (hex) of the content, for external files. */
      digest?: string;
      /** Backing path relative to the object store (`ab/cdef…`), for external files. */
      payload?: ByteString;
    }
  | { type: "symlink"; target: ByteString }
  | { type: "chr"; rdev: number }
  | { type: "blk"; rdev: number }
  | { type: "fifo" }
  | { type: "sock" };

export class Leaf {
  readonly kind = "leaf";
  /**
   * Link count to record. Dumpfiles give it explicitly (mkcomposefs uses it as is); trees built otherwise set it
   * to the number of directory entries that reference this leaf.
   */
  nlink = 1;
  /**
   * For a hard-linked leaf, the entry that owns the inode (the dumpfile line without `@`): the image writer places
   * the inode at this entry's breadth-first position. null: the first occurrence in depth-first sorted order.
   */
  primary: { parent: Directory; name: ByteString } | null = null;

  constructor(
    public stat: Stat,
    public content: LeafContent,
  ) {}

  get fileType(): number {
    switch (this.content.type) {
      case "reg":
        return S_IFREG;
      case "symlink":
        return S_IFLNK;
      case "chr":
        return S_IFCHR;
      case "blk":
        return S_IFBLK;
      case "fifo":
        return S_IFIFO;
      case "sock":
        return S_IFSOCK;
    }
  }

  /** A character device 0:0: an overlay whiteout. */
  get isWhiteout(): boolean {
    return this.content.type === "chr" && this.content.rdev === 0;
  }
}

export class Directory {
  readonly kind = "dir";
  readonly entries = new Map<ByteString, Inode>();
  /**
   * The EROFS i_size of this directory when the tree was read from an image (composefs-info dump prints it as
   * the directory's SIZE); undefined for trees built otherwise. Writers ignore it.
   */
  imageSize?: number;

  constructor(public stat: Stat) {}

  get(name: ByteString): Inode | undefined {
    return this.entries.get(name);
  }

  /** Entries sorted bytewise by name. */
  sorted(): [ByteString, Inode][] {
    return [...this.entries].sort((a, b) => compareBytes(a[0], b[0]));
  }
}

export type Inode = Directory | Leaf;

export function isDirectory(i: Inode): i is Directory {
  return i.kind === "dir";
}

/** A filesystem: a root directory; leaves may appear under several names (hard links). */
export class FileSystem {
  constructor(public root: Directory = new Directory(newStat())) {}

  /** Look up an absolute or relative path ("/a/b", "a/b"); undefined when missing. */
  lookup(path: ByteString): Inode | undefined {
    let cur: Inode = this.root;
    for (const c of path.split("/")) {
      if (c === "" || c === ".") continue;
      if (!isDirectory(cur)) return undefined;
      const next = cur.get(c);
      if (!next) return undefined;
      cur = next;
    }
    return cur;
  }

  /**
   * Visit every entry depth-first, parents before children, children in bytewise order; the root is visited
   * first with path "/". Hard-linked leaves are visited once per name.
   */
  *walk(): Generator<{ path: ByteString; inode: Inode; parent: Directory | null }> {
    const stack: { path: ByteString; inode: Inode; parent: Directory | null }[] = [
      { path: "/", inode: this.root, parent: null },
    ];
    while (stack.length) {
      const cur = stack.pop() as { path: ByteString; inode: Inode; parent: Directory | null };
      yield cur;
      if (isDirectory(cur.inode)) {
        const children = cur.inode.sorted();
        const base = cur.path === "/" ? "/" : `${cur.path}/`;
        for (let i = children.length - 1; i >= 0; i--)
          stack.push({ path: base + children[i][0], inode: children[i][1], parent: cur.inode });
      }
    }
  }
}
