// Typed wrapper around stratum's native addon (native/stratum_sys.c, built by node-gyp into
// build/Release/stratum_sys.node): the Linux syscalls Node's fs module lacks — flock(2), syncfs(2), fs-verity
// enable/measure ioctls, linkat(2) of an O_TMPFILE descriptor, no-follow xattrs, mount(2) and umount2(2) — plus
// the O_TMPFILE open flag. The addon is
// loaded on first use, so importing this module never fails; a missing build surfaces as a clear Error then.
// Syscall failures throw Node-style errors (see SysError); argument misuse throws TypeError or RangeError.

import { constants, existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** flock(2) operation: shared, exclusive, or unlock. */
export type FlockOp = "sh" | "ex" | "un";

/** fs-verity hash algorithm numbers (linux/fsverity.h). */
export const FS_VERITY_HASH_ALG_SHA256 = 1;
export const FS_VERITY_HASH_ALG_SHA512 = 2;
export type FsverityHashAlgorithm = typeof FS_VERITY_HASH_ALG_SHA256 | typeof FS_VERITY_HASH_ALG_SHA512;

/** Result of FS_IOC_MEASURE_VERITY: the algorithm number and the raw fs-verity file digest. */
export interface FsverityMeasurement {
  algorithm: number;
  digest: Buffer;
}

/** Error thrown by a failing syscall: code is the errno name ("EEXIST"), errno its negative number. */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/**
 * open(2) flag for an unnamed file in a directory (__O_TMPFILE | O_DIRECTORY; 0o20200000 on x86_64 and
 * aarch64). Node's fs.constants lacks it; pass `O_TMPFILE | O_RDWR` (or O_WRONLY) to fs.openSync(dir, …).
 */
export const O_TMPFILE: number = 0o20000000 | constants.O_DIRECTORY;

interface Addon {
  flock(fd: number, op: FlockOp, nonblock: boolean): boolean;
  syncfs(fd: number): void;
  syncfsAsync(fd: number): Promise<bigint>;
  fsverityEnable(fd: number, hashAlgorithm: FsverityHashAlgorithm): void;
  fsverityMeasure(fd: number): FsverityMeasurement;
  linkFd(fd: number, newPath: string): void;
  llistxattr(path: Buffer): Buffer;
  lgetxattr(path: Buffer, name: Buffer): Buffer | null;
  lsetxattr(path: Buffer, name: Buffer, value: Buffer): void;
  mount(source: string, target: string, fstype: string, flags: number, data: string | null): void;
  umount2(target: string, flags: number): void;
}

/** The project root: the nearest directory above this file holding package.json (src/sys or dist/src/sys). */
function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`stratum: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

let cached: Addon | undefined;

function addon(): Addon {
  if (cached !== undefined) return cached;
  const file = path.join(projectRoot(), "build", "Release", "stratum_sys.node");
  try {
    cached = createRequire(import.meta.url)(file) as Addon;
  } catch (cause) {
    throw new Error(
      `stratum: the native addon is not built or cannot be loaded (${file}); ` +
        "run `npm ci` (or `npx node-gyp rebuild`, or `npm run install`) in the project root to build it",
      { cause },
    );
  }
  return cached;
}

/** flock(2) on fd. Returns true when the lock is taken; false only when nonblock and it is held elsewhere. */
export function flock(fd: number, op: FlockOp, nonblock: boolean): boolean {
  return addon().flock(fd, op, nonblock);
}

/** syncfs(2): flush the whole filesystem that contains fd. */
export function syncfs(fd: number): void {
  addon().syncfs(fd);
}

/**
 * syncfs(2) on a libuv worker thread: the event loop (other layers of a pull) keeps running while the
 * filesystem flushes. The fd must stay open until the promise settles. Resolves to the moment syncfs returned,
 * on process.hrtime.bigint()'s clock (CLOCK_MONOTONIC), taken on the worker thread: the promise itself may
 * settle later when this thread is busy.
 */
export function syncfsAsync(fd: number): Promise<bigint> {
  return addon().syncfsAsync(fd);
}

/**
 * FS_IOC_ENABLE_VERITY on a file opened read-only with no writers: 4096-byte blocks, no salt, no signature.
 * Throws EOPNOTSUPP or ENOTTY when the kernel or filesystem lacks fs-verity, ETXTBSY when it is open for write.
 */
export function fsverityEnable(fd: number, hashAlgorithm: FsverityHashAlgorithm): void {
  addon().fsverityEnable(fd, hashAlgorithm);
}

/** FS_IOC_MEASURE_VERITY: the file's fs-verity digest. Throws ENODATA when verity is not enabled on it. */
export function fsverityMeasure(fd: number): FsverityMeasurement {
  return addon().fsverityMeasure(fd);
}

/**
 * Give fd (typically opened with O_TMPFILE) the name newPath via linkat(AT_FDCWD, "/proc/self/fd/<fd>", …,
 * AT_SYMLINK_FOLLOW). Never replaces anything: an existing newPath throws with code EEXIST.
 */
export function linkFd(fd: number, newPath: string): void {
  addon().linkFd(fd, newPath);
}

/**
 * The extended attribute names of `path` without following a symlink (llistxattr), as raw bytes each.
 * Paths and names are Buffers so any byte sequence works.
 */
export function listXattrs(path: Buffer): Buffer[] {
  const raw = addon().llistxattr(path);
  const names: Buffer[] = [];
  for (let start = 0; start < raw.length;) {
    const end = raw.indexOf(0, start);
    const stop = end < 0 ? raw.length : end;
    if (stop > start) names.push(raw.subarray(start, stop));
    start = stop + 1;
  }
  return names;
}

/** The value of xattr `name` of `path` without following a symlink (lgetxattr); null when it does not exist. */
export function getXattr(path: Buffer, name: Buffer): Buffer | null {
  return addon().lgetxattr(path, name);
}

/** Create or replace xattr `name` on `path` without following a symlink (lsetxattr). */
export function setXattr(path: Buffer, name: Buffer, value: Buffer): void {
  addon().lsetxattr(path, name, value);
}

/** mount(2) flags the mount binding accepts (linux/mount.h). */
export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
/** umount2(2) flag: detach now, release when no longer busy. */
export const MNT_DETACH = 2;

/**
 * mount(2) a new filesystem: `fstype` from `source` at `target`, with `flags` (MS_RDONLY, MS_NOSUID, MS_NODEV,
 * MS_NOEXEC only: never a bind, move or remount) and the filesystem's option string `data`. Needs
 * CAP_SYS_ADMIN. Throws a SysError (EPERM, ENOENT, ENOTBLK when the filesystem wants a block device, …).
 */
export function mount(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string | null,
): void {
  addon().mount(source, target, fstype, flags, data);
}

/** umount2(2): `flags` 0, or MNT_DETACH to detach now and release when no longer busy. */
export function umount2(target: string, flags: 0 | typeof MNT_DETACH = 0): void {
  addon().umount2(target, flags);
}

/** True when err is a SysError (from this addon or Node's fs) with the given errno code. */
export function isSysError(err: unknown, code?: string): err is SysError {
  return (
    err instanceof Error &&
    typeof (err as Partial<SysError>).code === "string" &&
    (code === undefined || (err as SysError).code === code)
  );
}
