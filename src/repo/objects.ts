// Content-addressed objects (reference: composefs-repository.md §1.2, §1.4; docs/repository.md "Objects").
// An object is stored at objects/XX/<rest> where XX<rest> is the fs-verity digest of its bytes. Writes are
// atomic and never replace: bytes go to an unnamed O_TMPFILE (or, where the filesystem lacks it, a named
// objects/.tmp-object-* file), the digest is computed while writing, and the file is linked under its final
// name with link(2), which fails rather than overwrite. Writing the same content twice yields one object. In a
// repository with fs-verity the kernel enables and measures verity before the link, and the measured digest
// must equal ours. There is no fsync per object: streams call syncfs before they become visible.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError, isErrno } from "../errors.ts";
import { FsVerityHasher } from "../format/fsverity.ts";
import { digestFile, readBuffer } from "./file-digest.ts";
import { objectRelPath, type Algorithm, type ObjectId } from "../format/object-id.ts";
import { O_TMPFILE, fsverityEnable, fsverityMeasure, linkFd } from "../sys/native.ts";

/** "enforced": objects carry kernel fs-verity; "insecure": the filesystem has none, digests are userspace-only. */
export type VerityMode = "enforced" | "insecure";

export const TMP_OBJECT_PREFIX = ".tmp-object-";

export interface StoredObject {
  id: ObjectId;
  size: number;
  /** False when an object with this ID already existed (nothing was written). */
  stored: boolean;
}

export class ObjectStore {
  readonly dir: string;
  private readonly knownDirs = new Set<string>();
  private tmpfileSupported = true;

  /**
   * `dir` is the object directory: a repository's `objects/`, or any directory with the same `XX/<rest>` fan-out
   * (mkcomposefs --digest-store).
   */
  constructor(
    dir: string,
    readonly algorithm: Algorithm,
    readonly verity: VerityMode,
  ) {
    this.dir = dir;
  }

  path(id: ObjectId): string {
    return path.join(this.dir, objectRelPath(id));
  }

  has(id: ObjectId): boolean {
    return fs.existsSync(this.path(id));
  }

  /** Start writing a new object whose content is streamed in. */
  createWriter(): ObjectWriter {
    return new ObjectWriter(this);
  }

  /** Store an in-memory buffer (dedup is checked before anything is written). */
  writeBuffer(data: Buffer): StoredObject {
    const id = new FsVerityHasher(this.algorithm).update(data).digestHex();
    if (this.has(id)) return { id, size: data.length, stored: false };
    const w = this.createWriter();
    w.write(data);
    return w.finish();
  }

  /** Store the rest of an open file as an object, reading it once (the digest is computed while copying). */
  storeFd(fd: number): StoredObject {
    const w = this.createWriter();
    const buf = readBuffer();
    try {
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        w.write(buf.subarray(0, n));
      }
    } catch (err) {
      w.abort();
      throw ioError(err, "cannot read file to store");
    }
    return w.finish();
  }

  /** Read a whole (small) object into memory. */
  read(id: ObjectId): Buffer {
    try {
      return fs.readFileSync(this.path(id));
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw new StratumError("E_NOT_FOUND", `object ${id} is missing`);
      throw ioError(err, `cannot read object ${id}`);
    }
  }

  /** Compute the fs-verity digest of an object file as it is on disk now. */
  digestOfFile(file: string): { digest: ObjectId; size: number } {
    return digestFile(file, this.algorithm);
  }

  /** @internal Open a temporary file for a new object: unnamed when possible. */
  openTemp(): { fd: number; tmpPath: string | null } {
    this.ensureDir(this.dir);
    if (this.tmpfileSupported) {
      try {
        return { fd: fs.openSync(this.dir, O_TMPFILE | fs.constants.O_RDWR, 0o644), tmpPath: null };
      } catch (err) {
        if (!(isErrno(err, "EOPNOTSUPP") || isErrno(err, "EISDIR") || isErrno(err, "EINVAL")))
          throw ioError(err, `cannot create a temporary object in ${this.dir}`);
        this.tmpfileSupported = false;
      }
    }
    const tmpPath = path.join(this.dir, TMP_OBJECT_PREFIX + randomBytes(6).toString("hex"));
    try {
      return { fd: fs.openSync(tmpPath, "wx+", 0o644), tmpPath };
    } catch (err) {
      throw ioError(err, `cannot create ${tmpPath}`);
    }
  }

  /** @internal */
  ensureDir(dir: string): void {
    if (this.knownDirs.has(dir)) return;
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    this.knownDirs.add(dir);
  }

  /** @internal Enable fs-verity on a finished temp file and check the kernel's digest against ours. */
  sealVerity(fd: number, id: ObjectId): number {
    const ro = fs.openSync(`/proc/self/fd/${fd}`, "r");
    fs.closeSync(fd);
    for (let attempt = 0; ; attempt++) {
      try {
        fsverityEnable(ro, this.algorithm.id);
        break;
      } catch (err) {
        if (isErrno(err, "ETXTBSY") && attempt < 3) continue;
        fs.closeSync(ro);
        throw new StratumError(
          "E_VERITY",
          `cannot enable fs-verity on a new object: ${(err as Error).message}`,
        );
      }
    }
    const measured = fsverityMeasure(ro).digest.toString("hex");
    if (measured !== id) {
      fs.closeSync(ro);
      throw new StratumError("E_VERITY", `kernel fs-verity digest ${measured} differs from computed ${id}`);
    }
    return ro;
  }
}

/** Streams bytes into a new object; `finish()` names it by its digest, `abort()` discards it. */
export class ObjectWriter {
  private readonly hasher: FsVerityHasher;
  private fd: number;
  private readonly tmpPath: string | null;
  private closed = false;

  constructor(private readonly store: ObjectStore) {
    this.hasher = new FsVerityHasher(store.algorithm);
    ({ fd: this.fd, tmpPath: this.tmpPath } = store.openTemp());
  }

  get size(): number {
    return this.hasher.length;
  }

  write(data: Uint8Array): void {
    this.hasher.update(data);
    let off = 0;
    try {
      while (off < data.length) off += fs.writeSync(this.fd, data, off, data.length - off);
    } catch (err) {
      this.abort();
      throw ioError(err, "cannot write object data");
    }
  }

  finish(): StoredObject {
    const id = this.hasher.digestHex();
    const size = this.hasher.length;
    const dest = this.store.path(id);
    try {
      // With verity, check first so a duplicate is not sealed for nothing; otherwise link(2) refusing to replace
      // (EEXIST below) is the check.
      if (this.store.verity === "enforced" && fs.existsSync(dest)) {
        this.abort();
        return { id, size, stored: false };
      }
      this.store.ensureDir(path.dirname(dest));
      if (this.store.verity === "enforced") this.fd = this.store.sealVerity(this.fd, id);
      try {
        if (this.tmpPath === null) linkFd(this.fd, dest);
        else fs.linkSync(this.tmpPath, dest);
      } catch (err) {
        if (!isErrno(err, "EEXIST")) throw err; // EEXIST: a concurrent writer stored the same content first
        this.abort();
        return { id, size, stored: false };
      }
      this.abort();
      return { id, size, stored: true };
    } catch (err) {
      this.abort();
      throw ioError(err, `cannot store object ${id}`);
    }
  }

  /** Close and remove the temporary file (idempotent). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed by sealVerity on an error path
    }
    if (this.tmpPath !== null) fs.rmSync(this.tmpPath, { force: true });
  }
}
