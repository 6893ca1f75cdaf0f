// The repository: a directory in the composefs-rs layout (reference: composefs-repository.md §1; our description:
// docs/repository.md). This class owns opening and creating it (meta.json, fs-verity probe, shared lock), the
// object store, and the names: `streams/<name>` and `images/<hex>` symlinks to objects, and the GC roots
// `streams/refs/**` and `images/refs/**`, which are relative symlinks to those names.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StratumError, ioError, isErrno } from "../errors.ts";
import {
  SHA256,
  objectIdFromPath,
  objectRelPath,
  type Algorithm,
  type ObjectId,
} from "../format/object-id.ts";
import { fsverityEnable, fsverityMeasure, syncfs, syncfsAsync } from "../sys/native.ts";
import { RepoLock } from "./lock.ts";
import { newMeta, parseMeta, serializeMeta, unknownReadOnlyFeatures, type RepoMeta } from "./meta.ts";
import { ObjectStore, type VerityMode } from "./objects.ts";
import { checkRefName, checkStreamName } from "./refnames.ts";
import { StreamReader, StreamWriter } from "./streams.ts";
import { relativeLinkTarget, replaceSymlink, resolveRefLink } from "./symlinks.ts";

export interface InitOptions {
  algorithm?: Algorithm;
  /** Fail instead of creating an insecure repository when the filesystem has no fs-verity. */
  requireVerity?: boolean;
}

export interface OpenOptions {
  requireVerity?: boolean;
  /** How long to wait for the shared lock (default: forever). */
  lockTimeoutMs?: number;
  /** Called once if opening has to wait for a lock held by another process (e.g. a running gc). */
  onLockWait?: () => void;
}

export interface RefEntry {
  /** Ref name below `streams/refs/` (or `images/refs/`). */
  name: string;
  /** What it points at: a stream name, or an image hex ID. */
  target: string;
}

/** The default repository path: $STRATUM_REPO, else /var/lib/stratum for root, else $XDG_DATA_HOME/stratum. */
export function defaultRepoPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.STRATUM_REPO) return path.resolve(env.STRATUM_REPO);
  if (process.getuid?.() === 0) return "/var/lib/stratum";
  const data = env.XDG_DATA_HOME || path.join(os.homedir(), ".local", "share");
  return path.join(data, "stratum");
}

const NO_VERITY = ["EOPNOTSUPP", "ENOTTY", "ENOTSUP", "ENODATA", "EINVAL"];

function isNoVerity(err: unknown): boolean {
  return NO_VERITY.some((c) => isErrno(err, c));
}

export class Repository {
  readonly objects: ObjectStore;
  readonly readOnlyReason: string | null;
  private closed = false;

  private constructor(
    readonly root: string,
    readonly meta: RepoMeta,
    readonly verity: VerityMode,
    private readonly dirFd: number,
    readonly lock: RepoLock,
  ) {
    this.objects = new ObjectStore(path.join(root, "objects"), meta.algorithm, verity);
    const unknown = unknownReadOnlyFeatures(meta);
    this.readOnlyReason = unknown.length
      ? `unknown read-only-compatible features: ${unknown.join(", ")}`
      : null;
  }

  get algorithm(): Algorithm {
    return this.meta.algorithm;
  }

  /**
   * Create a repository at `root` (the directory may exist; meta.json must not). Returns the verity mode the
   * filesystem gives it. Creation is atomic: meta.json appears last, complete, via link(2).
   */
  static init(root: string, opts: InitOptions = {}): { verity: VerityMode } {
    const abs = path.resolve(root);
    const metaPath = path.join(abs, "meta.json");
    if (fs.existsSync(metaPath)) throw new StratumError("E_EXISTS", `${abs} is already a repository`);
    try {
      for (const d of ["objects", "streams/refs", "images/refs"])
        fs.mkdirSync(path.join(abs, d), { recursive: true, mode: 0o755 });
    } catch (err) {
      throw ioError(err, `cannot create repository directories in ${abs}`);
    }
    const meta = newMeta(opts.algorithm ?? SHA256);
    const text = Buffer.from(serializeMeta(meta));
    const tmp = path.join(abs, `.tmp-meta-${randomBytes(6).toString("hex")}`);
    let verity: VerityMode = "insecure";
    try {
      fs.writeFileSync(tmp, text, { mode: 0o644, flag: "wx" });
      const fd = fs.openSync(tmp, "r");
      try {
        fsverityEnable(fd, meta.algorithm.id);
        verity = "enforced";
      } catch (err) {
        if (!isNoVerity(err)) throw err;
      } finally {
        fs.closeSync(fd);
      }
      if (verity === "insecure" && opts.requireVerity)
        throw new StratumError(
          "E_VERITY",
          `${abs}: the filesystem does not support fs-verity, and --require-verity was given`,
        );
      const dirFd = fs.openSync(abs, "r");
      try {
        syncfs(dirFd);
      } finally {
        fs.closeSync(dirFd);
      }
      fs.linkSync(tmp, metaPath);
    } catch (err) {
      if (isErrno(err, "EEXIST")) throw new StratumError("E_EXISTS", `${abs} is already a repository`);
      throw ioError(err, `cannot create ${metaPath}`);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    return { verity };
  }

  /** Open an existing repository and hold its shared lock until close(). */
  static async open(root: string, opts: OpenOptions = {}): Promise<Repository> {
    const abs = path.resolve(root);
    const metaPath = path.join(abs, "meta.json");
    let text: string;
    let verity: VerityMode = "insecure";
    try {
      const fd = fs.openSync(metaPath, "r");
      try {
        text = fs.readFileSync(fd, "utf8");
        try {
          fsverityMeasure(fd);
          verity = "enforced";
        } catch (err) {
          if (!isNoVerity(err)) throw err;
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if (isErrno(err, "ENOENT"))
        throw new StratumError(
          "E_REPO_FORMAT",
          `${abs} is not a repository (no meta.json); create one with "stratum init"`,
        );
      throw ioError(err, `cannot read ${metaPath}`);
    }
    const meta = parseMeta(text, metaPath);
    if (verity === "insecure" && opts.requireVerity)
      throw new StratumError(
        "E_VERITY",
        `${abs}: repository has no fs-verity (insecure mode), and --require-verity was given`,
      );
    let dirFd: number;
    try {
      dirFd = fs.openSync(abs, "r");
    } catch (err) {
      throw ioError(err, `cannot open ${abs}`);
    }
    const lock = new RepoLock(dirFd, abs);
    try {
      await lock.acquire("sh", { timeoutMs: opts.lockTimeoutMs, onWait: opts.onLockWait });
    } catch (err) {
      fs.closeSync(dirFd);
      throw err;
    }
    return new Repository(abs, meta, verity, dirFd, lock);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lock.release();
    fs.closeSync(this.dirFd);
  }

  /** Throw unless the repository may be written. */
  checkWritable(): void {
    if (this.readOnlyReason)
      throw new StratumError("E_REPO_FORMAT", `${this.root} can only be read: ${this.readOnlyReason}`);
  }

  /** Make everything written so far durable (syncfs on the repository's filesystem). */
  sync(): void {
    syncfs(this.dirFd);
  }

  // ---- streams ----------------------------------------------------------------------------------------------

  createStream(contentType: bigint): StreamWriter {
    this.checkWritable();
    return new StreamWriter(this.objects, contentType);
  }

  /**
   * Name a stored splitstream object `streams/<name>`. Everything written before becomes durable first
   * (syncfs), so a visible stream always has its objects on disk.
   */
  publishStream(name: string, id: ObjectId): void {
    this.checkWritable();
    checkStreamName(name);
    this.sync();
    replaceSymlink(this.root, `streams/${name}`, `../objects/${objectRelPath(id)}`);
  }

  /**
   * publishStream, with the syncfs on a worker thread: other work of this process (the other layers of a pull)
   * goes on while the filesystem flushes. Resolves to the moment the data was durable (process.hrtime.bigint()).
   */
  async publishStreamAsync(name: string, id: ObjectId): Promise<bigint> {
    this.checkWritable();
    checkStreamName(name);
    const durableAt = await syncfsAsync(this.dirFd);
    replaceSymlink(this.root, `streams/${name}`, `../objects/${objectRelPath(id)}`);
    return durableAt;
  }

  /** The object ID behind `streams/<name>`, or undefined when there is no such stream. */
  streamId(name: string): ObjectId | undefined {
    checkStreamName(name);
    let target: string;
    try {
      target = fs.readlinkSync(path.join(this.root, "streams", name));
    } catch (err) {
      if (isErrno(err, "ENOENT")) return undefined;
      throw ioError(err, `cannot read stream ${name}`);
    }
    const id = target.startsWith("../") ? objectIdFromPath(this.algorithm, target) : undefined;
    if (!id)
      throw new StratumError("E_CORRUPT", `stream ${name} links to "${target}", which is not an object`);
    return id;
  }

  hasStream(name: string): boolean {
    const id = this.streamId(name);
    return id !== undefined && this.objects.has(id);
  }

  /**
   * Open a stream by name: a stream name (`oci-layer-sha256:…`), or `refs/<ref>` for a ref under streams/refs.
   */
  openStream(name: string, expectedContentType?: bigint): StreamReader {
    const resolved = this.resolveStreamName(name);
    const id = this.streamId(resolved);
    if (!id) throw new StratumError("E_NOT_FOUND", `no stream named ${name}`);
    return StreamReader.open(this.objects, id, `stream ${resolved}`, expectedContentType);
  }

  /** Map `refs/<ref>` to the stream it names; plain stream names map to themselves. */
  resolveStreamName(name: string): string {
    if (!name.startsWith("refs/")) return checkStreamName(name);
    const ref = checkRefName(name.slice("refs/".length));
    const rel = resolveRefLink(this.root, `streams/refs/${ref}`, `ref ${ref}`);
    const m = /^streams\/([^/]+)$/.exec(rel);
    if (!m) throw new StratumError("E_CORRUPT", `ref ${ref} resolves to ${rel}, which is not a stream`);
    return m[1];
  }

  listStreams(): string[] {
    try {
      return fs.readdirSync(path.join(this.root, "streams")).filter((n) => n !== "refs");
    } catch (err) {
      throw ioError(err, `cannot list ${this.root}/streams`);
    }
  }

  // ---- refs -------------------------------------------------------------------------------------------------

  /** Point `streams/refs/<ref>` at `streams/<stream>` (atomically replacing an older target). */
  setStreamRef(ref: string, stream: string): void {
    this.checkWritable();
    checkRefName(ref);
    checkStreamName(stream);
    if (!this.hasStream(stream)) throw new StratumError("E_NOT_FOUND", `no stream named ${stream}`);
    const link = `streams/refs/${ref}`;
    replaceSymlink(this.root, link, relativeLinkTarget(link, `streams/${stream}`));
  }

  /** Remove `streams/refs/<ref>`; the data stays until the next gc. */
  removeStreamRef(ref: string): void {
    this.checkWritable();
    checkRefName(ref);
    const p = path.join(this.root, "streams/refs", ref);
    try {
      if (!fs.lstatSync(p).isSymbolicLink()) throw new StratumError("E_NOT_FOUND", `no ref named ${ref}`);
      fs.unlinkSync(p);
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw new StratumError("E_NOT_FOUND", `no ref named ${ref}`);
      throw ioError(err, `cannot remove ref ${ref}`);
    }
  }

  listStreamRefs(): RefEntry[] {
    return listRefLinks(path.join(this.root, "streams/refs"));
  }

  listImageRefs(): RefEntry[] {
    return listRefLinks(path.join(this.root, "images/refs"));
  }

  // ---- images -----------------------------------------------------------------------------------------------

  /** Point `images/refs/<ref>` at `images/<id>`. */
  setImageRef(ref: string, id: ObjectId): void {
    this.checkWritable();
    checkRefName(ref);
    if (!fs.existsSync(path.join(this.root, "images", id)))
      throw new StratumError("E_NOT_FOUND", `no image ${id} in ${this.root}/images`);
    const link = `images/refs/${ref}`;
    replaceSymlink(this.root, link, relativeLinkTarget(link, `images/${id}`));
  }

  /** The image ID an `images/refs/<ref>` names. */
  resolveImageRef(ref: string): ObjectId {
    checkRefName(ref);
    const rel = resolveRefLink(this.root, `images/refs/${ref}`, `image ref ${ref}`);
    const m = /^images\/([0-9a-f]+)$/.exec(rel);
    if (!m) throw new StratumError("E_CORRUPT", `image ref ${ref} resolves to ${rel}, which is not an image`);
    return m[1];
  }

  /** Name an EROFS image object `images/<hex>` (only such images may ever be mounted). */
  publishImage(id: ObjectId): void {
    this.checkWritable();
    this.sync();
    replaceSymlink(this.root, `images/${id}`, `../objects/${objectRelPath(id)}`);
  }
}

/** All symlinks below `dir`, recursively, as names relative to it with their raw targets' last component. */
function listRefLinks(dir: string): RefEntry[] {
  const out: RefEntry[] = [];
  const walk = (rel: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT")) return;
      throw ioError(err, `cannot list ${path.join(dir, rel)}`);
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else if (e.isSymbolicLink()) {
        const target = fs.readlinkSync(path.join(dir, r));
        out.push({ name: r, target: target.split("/").pop() ?? target });
      }
    }
  };
  walk("");
  return out;
}
