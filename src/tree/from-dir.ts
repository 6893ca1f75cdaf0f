// Reading a directory into the tree (reference: composefs-erofs.md §3.1 "Directory mode"; composefs-repository.md
// §5.1 `read_container_root`). Every type (directories, regular files, symlinks, char/block devices, fifos,
// sockets), permission bits, uid/gid, nanosecond mtimes, xattrs (never following symlinks, any byte names) and
// hard links (one Leaf for all names of an inode — composefs-rs keeps them; C mkcomposefs loses them). Regular
// files of at most 64 bytes are inlined; larger ones get their fs-verity digest and the payload `xx/<rest>` and
// are handed to an optional object sink (a repository or a --digest-store directory) in the same read.

import * as fs from "node:fs";
import { StratumError, ioError } from "../errors.ts";
import { SHA256, objectRelPath, type Algorithm } from "../format/object-id.ts";
import { digestFd } from "../repo/file-digest.ts";
import { getXattr, listXattrs } from "../sys/native.ts";
import {
  Directory,
  FileSystem,
  Leaf,
  byteString,
  makeRdev,
  newStat,
  type LeafContent,
  type Stat,
} from "./tree.ts";

export const INLINE_CONTENT_MAX = 64;

/** Receives the content of each regular file that is stored externally; returns its fs-verity digest. */
export interface ObjectSink {
  readonly algorithm: Algorithm;
  /** Consume the file at `path` (open read-only as `fd`, `size` bytes); return its digest in hex. */
  storeFile(fd: number, size: number, path: Buffer): string;
}

export interface DirImportOptions {
  sink?: ObjectSink;
  /** Digest algorithm when there is no sink (default SHA-256, what composefs images reference). */
  algorithm?: Algorithm;
  /** Drop all xattrs (mkcomposefs --skip-xattrs). */
  skipXattrs?: boolean;
  /** Keep only user.* xattrs (mkcomposefs --user-xattrs). */
  userXattrsOnly?: boolean;
  /** Set every mtime to 0 (mkcomposefs --use-epoch). */
  useEpoch?: boolean;
  /** Leave out block and character devices (mkcomposefs --skip-devices). */
  skipDevices?: boolean;
  /** Inline regular files of at most this many bytes (default 64). */
  inlineMax?: number;
}

export interface DirImportStats {
  entries: number;
  regularFiles: number;
  externalFiles: number;
  externalBytes: number;
}

/** Convert a 64-bit glibc dev_t to the 32-bit "new" encoding EROFS stores. */
export function encodeRdev(rdev: bigint): number {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return makeRdev(major, minor);
}

export function readDirectory(
  root: string,
  opts: DirImportOptions = {},
): { fs: FileSystem; stats: DirImportStats } {
  const algorithm = opts.sink?.algorithm ?? opts.algorithm ?? SHA256;
  const inlineMax = opts.inlineMax ?? INLINE_CONTENT_MAX;
  const stats: DirImportStats = { entries: 0, regularFiles: 0, externalFiles: 0, externalBytes: 0 };
  const hardlinks = new Map<string, Leaf>();
  const rootPath = Buffer.from(root);

  let rootSt: fs.BigIntStats;
  try {
    rootSt = fs.statSync(rootPath, { bigint: true });
  } catch (err) {
    throw new StratumError("E_NOT_FOUND", ioError(err, `cannot read ${root}`).message);
  }
  if (!rootSt.isDirectory()) throw new StratumError("E_BAD_INPUT", `${root} is not a directory`);

  const statOf = (path: Buffer, st: fs.BigIntStats): Stat => {
    const mtimeNs = opts.useEpoch ? 0n : st.mtimeNs;
    let sec = mtimeNs / 1_000_000_000n;
    let nsec = mtimeNs % 1_000_000_000n;
    if (nsec < 0n) {
      nsec += 1_000_000_000n;
      sec -= 1n;
    }
    return newStat({
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeSec: Number(sec),
      mtimeNsec: Number(nsec),
      xattrs: opts.skipXattrs ? new Map() : readXattrs(path, opts.userXattrsOnly ?? false),
    });
  };

  const fileContent = (path: Buffer, size: number): LeafContent => {
    stats.regularFiles++;
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw ioError(err, `cannot read ${path.toString()}`);
    }
    try {
      if (size <= inlineMax) {
        const data = Buffer.alloc(size);
        let got = 0;
        while (got < size) {
          const n = fs.readSync(fd, data, got, size - got, got);
          if (n === 0) throw new StratumError("E_IO", `${path.toString()} shrank while being read`);
          got += n;
        }
        return size === 0 ? { type: "reg", size: 0 } : { type: "reg", size, inline: data };
      }
      const digest = opts.sink ? opts.sink.storeFile(fd, size, path) : digestFd(fd, algorithm).digest;
      stats.externalFiles++;
      stats.externalBytes += size;
      return { type: "reg", size, digest, payload: objectRelPath(digest) };
    } finally {
      fs.closeSync(fd);
    }
  };

  const walk = (dirPath: Buffer, dir: Directory): void => {
    let names: Buffer[];
    try {
      names = fs.readdirSync(dirPath, { encoding: "buffer" });
    } catch (err) {
      throw ioError(err, `cannot list ${dirPath.toString()}`);
    }
    for (const name of names) {
      const path = Buffer.concat([dirPath, Buffer.from("/"), name]);
      let st: fs.BigIntStats;
      try {
        st = fs.lstatSync(path, { bigint: true });
      } catch (err) {
        throw ioError(err, `cannot stat ${path.toString()}`);
      }
      stats.entries++;
      const key = byteString(name);
      if (st.isDirectory()) {
        const child = new Directory(statOf(path, st));
        dir.entries.set(key, child);
        walk(path, child);
        continue;
      }
      if ((st.isBlockDevice() || st.isCharacterDevice()) && opts.skipDevices) continue;
      const inodeKey = `${st.dev}:${st.ino}`;
      const existing = st.nlink > 1n ? hardlinks.get(inodeKey) : undefined;
      if (existing) {
        existing.nlink++;
        dir.entries.set(key, existing);
        continue;
      }
      let content: LeafContent;
      if (st.isFile()) content = fileContent(path, Number(st.size));
      else if (st.isSymbolicLink())
        content = { type: "symlink", target: byteString(fs.readlinkSync(path, { encoding: "buffer" })) };
      else if (st.isCharacterDevice()) content = { type: "chr", rdev: encodeRdev(st.rdev) };
      else if (st.isBlockDevice()) content = { type: "blk", rdev: encodeRdev(st.rdev) };
      else if (st.isFIFO()) content = { type: "fifo" };
      else if (st.isSocket()) content = { type: "sock" };
      else throw new StratumError("E_UNSUPPORTED", `${path.toString()}: unknown file type`);
      const leaf = new Leaf(statOf(path, st), content);
      dir.entries.set(key, leaf);
      if (st.nlink > 1n) hardlinks.set(inodeKey, leaf);
    }
  };

  const rootDir = new Directory(statOf(rootPath, rootSt));
  walk(rootPath, rootDir);
  return { fs: new FileSystem(rootDir), stats };
}

function readXattrs(path: Buffer, userOnly: boolean): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let names: Buffer[];
  try {
    names = listXattrs(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EOPNOTSUPP") return out;
    throw ioError(err, `cannot list xattrs of ${path.toString()}`);
  }
  for (const name of names) {
    const key = byteString(name);
    if (userOnly && !key.startsWith("user.")) continue;
    const value = getXattr(path, name);
    if (value !== null) out.set(key, value);
  }
  return out;
}
