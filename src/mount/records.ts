// Mount records: what keeps a mounted image alive through gc (reference: composefs-repository.md §6, whose gc
// does not protect mounted images (composefs-rs issue #346), and §7; docs/mount.md "Mount records"). Every
// `stratum mount` writes one JSON file under `<runtime dir>/mounts/` naming the repository (realpath), the EROFS
// image ID, the mount point and how to check the mount is still there; gc treats the images of live records as
// roots. A record is written (atomically: a temporary file renamed into place) before anything is mounted, in
// state "mounting", and rewritten in state "mounted" with the overlay's mount ID once the mount is complete, so
// at no moment does a mount exist that gc cannot see. A record whose mount is gone is stale: it protects
// nothing, and the next gc, mount or unmount that meets it removes it together with any scratch mount it names.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError, isErrno } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import type { Repository } from "../repo/repository.ts";
import { MNT_DETACH, umount2 } from "../sys/native.ts";
import { mountNamespace, mountsUnder, readMountinfo, type MountInfo } from "./mountinfo.ts";

export const RECORD_VERSION = 1;

export interface MountRecord {
  version: typeof RECORD_VERSION;
  /** The repository's real path. */
  repository: string;
  /** The EROFS image ID (the name under `images/`). */
  image: ObjectId;
  /** The manifest the image came from, when it was named by tag or digest. */
  manifestDigest?: string;
  /** The mount point's real path. */
  mountpoint: string;
  /** The overlay's mount source: `composefs:<image>`. */
  source: string;
  /** "mounting" until the overlay is mounted and the scratch mounts are gone; then "mounted". */
  state: "mounting" | "mounted";
  /** The overlay's mount ID in /proc/self/mountinfo (state "mounted"). */
  mountId?: number;
  /** The mount namespace the mount lives in (`mnt:[…]`); other namespaces cannot check it. */
  namespace: string;
  /** The process that mounts, and its start time (/proc/PID/stat field 22), while state is "mounting". */
  pid: number;
  pidStart: string;
  /** `<runtime dir>/scratch/<token>`: where the EROFS (and a transient tmpfs) are mounted while mounting. */
  scratch: string;
  /** A --read-write mount: the writable layer is a private tmpfs that goes with the mount. */
  transient: boolean;
}

/** A record as found on disk. */
export interface StoredRecord {
  /** The record file. */
  file: string;
  record: MountRecord;
}

/** The runtime directory: $STRATUM_RUNTIME_DIR, else /run/stratum as root, else $XDG_RUNTIME_DIR/stratum. */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.STRATUM_RUNTIME_DIR) return path.resolve(env.STRATUM_RUNTIME_DIR);
  if (process.getuid?.() === 0) return "/run/stratum";
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, "stratum");
  return null;
}

/** The runtime directory, which a mount needs. */
export function requireRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = runtimeDir(env);
  if (dir === null)
    throw new StratumError("E_USAGE", "no runtime directory for mount records: set STRATUM_RUNTIME_DIR");
  return dir;
}

function recordsDir(runtime: string): string {
  return path.join(runtime, "mounts");
}

/** A new record token (names the record file and the scratch directory). */
export function newToken(): string {
  return randomBytes(8).toString("hex");
}

export function recordFile(runtime: string, token: string): string {
  return path.join(recordsDir(runtime), `${token}.json`);
}

export function scratchDir(runtime: string, token: string): string {
  return path.join(runtime, "scratch", token);
}

/** The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), or null if it is gone. */
export function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // Fields after the command name, which is in parentheses and may hold anything: state is field 3.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return rest[19] ?? null;
}

/** Temporary record files name their writer (pid and start time), so abandoned ones can be told apart. */
const TMP_RECORD = /^\.tmp-.*-(\d+)-(\d+)-[0-9a-f]+$/;

/**
 * Write `record` as `file`, atomically (a temporary file in the same directory, renamed over it). A writer killed
 * in between leaves the temporary file, which removeAbandonedTemps clears once that process is gone.
 */
export function writeRecord(file: string, record: MountRecord): void {
  const dir = path.dirname(file);
  const writer = `${process.pid}-${processStart(process.pid) ?? "0"}`;
  const tmp = path.join(dir, `.tmp-${path.basename(file)}-${writer}-${randomBytes(4).toString("hex")}`);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644, flag: "wx" });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw ioError(err, `cannot write mount record ${file}`);
  }
}

/** Remove temporary record files whose writer is no longer running (a write cut short by a kill). */
export function removeAbandonedTemps(runtime: string): void {
  const dir = recordsDir(runtime);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return;
    throw ioError(err, `cannot list mount records in ${dir}`);
  }
  for (const name of names) {
    const m = TMP_RECORD.exec(name);
    if (m === null || processStart(Number(m[1])) === m[2]) continue;
    fs.rmSync(path.join(dir, name), { force: true });
  }
}

function isRecord(v: unknown): v is MountRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Partial<MountRecord>;
  return (
    r.version === RECORD_VERSION &&
    typeof r.repository === "string" &&
    typeof r.image === "string" &&
    /^[0-9a-f]+$/.test(r.image) &&
    typeof r.mountpoint === "string" &&
    typeof r.source === "string" &&
    (r.state === "mounting" || r.state === "mounted") &&
    (r.mountId === undefined || typeof r.mountId === "number") &&
    typeof r.namespace === "string" &&
    typeof r.pid === "number" &&
    typeof r.pidStart === "string" &&
    typeof r.scratch === "string" &&
    typeof r.transient === "boolean"
  );
}

/**
 * Every record in the runtime directory. Files that are not records (a temporary file of a write cut short,
 * a record of another version, damage) are skipped: they protect nothing.
 */
export function listRecords(runtime: string): StoredRecord[] {
  const dir = recordsDir(runtime);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw ioError(err, `cannot list mount records in ${dir}`);
  }
  const out: StoredRecord[] = [];
  for (const name of names.sort()) {
    if (!name.endsWith(".json") || name.startsWith(".")) continue;
    const file = path.join(dir, name);
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (err) {
      if (isErrno(err, "ENOENT")) continue; // removed meanwhile
      if (err instanceof SyntaxError) continue;
      throw ioError(err, `cannot read mount record ${file}`);
    }
    if (isRecord(parsed)) out.push({ file, record: parsed });
  }
  return out;
}

/** The overlay a record describes, if it is mounted: same mount point, source, and (when known) mount ID. */
export function recordedMount(record: MountRecord, mounts: MountInfo[]): MountInfo | undefined {
  return mounts.find(
    (m) =>
      m.mountPoint === record.mountpoint &&
      m.fstype === "overlay" &&
      m.source === record.source &&
      (record.state === "mounting" || m.mountId === record.mountId),
  );
}

/**
 * Whether a record still protects its image: its mount is in the mount table, or (state "mounting") the
 * process that writes it is still running. A record from another mount namespace cannot be checked from here
 * and counts as live.
 */
export function isLive(record: MountRecord, mounts: MountInfo[], namespace = mountNamespace()): boolean {
  if (record.namespace !== namespace) return true;
  if (recordedMount(record, mounts) !== undefined) return true;
  return record.state === "mounting" && processStart(record.pid) === record.pidStart;
}

/**
 * Undo what a record's mount left in its scratch directory: detach any mount at or below it (a crash can leave
 * the EROFS or the transient tmpfs there), then remove its empty directories. Only a directory
 * `<runtime>/scratch/<token>` is touched, whatever the record says.
 */
export function cleanScratch(runtime: string, scratch: string, mounts: MountInfo[] = readMountinfo()): void {
  if (path.dirname(scratch) !== path.join(runtime, "scratch") || !/^[0-9a-f]+$/.test(path.basename(scratch)))
    return;
  for (const m of mountsUnder(mounts, scratch)) {
    try {
      umount2(m.mountPoint, MNT_DETACH);
    } catch (err) {
      if (!isErrno(err, "EINVAL") && !isErrno(err, "ENOENT"))
        throw ioError(err, `cannot detach scratch mount ${m.mountPoint}`);
    }
  }
  for (const d of [path.join(scratch, "erofs"), path.join(scratch, "rw"), scratch]) {
    try {
      fs.rmdirSync(d);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw ioError(err, `cannot remove scratch directory ${d}`);
    }
  }
}

/** Remove a record and whatever its scratch directory still holds. */
export function removeRecord(runtime: string, stored: StoredRecord, mounts?: MountInfo[]): void {
  cleanScratch(runtime, stored.record.scratch, mounts);
  try {
    fs.rmSync(stored.file, { force: true });
  } catch (err) {
    throw ioError(err, `cannot remove mount record ${stored.file}`);
  }
}

/** The real path of a repository, as records name it. */
export function repositoryPath(repo: Repository): string {
  try {
    return fs.realpathSync(repo.root);
  } catch (err) {
    throw ioError(err, `cannot resolve ${repo.root}`);
  }
}

export interface LiveMountOptions {
  /** Remove the repository's stale records (and their scratch mounts) on the way. */
  removeStale?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * The EROFS image IDs that live mounts of `repo` use (gc's extra image roots). Records of other repositories
 * are ignored. With `removeStale`, the repository's stale records are removed (gc does so under its exclusive
 * lock, when no mount of this repository can be in progress).
 */
export function liveMountImages(repo: Repository, opts: LiveMountOptions = {}): ObjectId[] {
  const runtime = runtimeDir(opts.env);
  if (runtime === null) return [];
  if (opts.removeStale) removeAbandonedTemps(runtime);
  const records = listRecords(runtime);
  if (records.length === 0) return [];
  const repoPath = repositoryPath(repo);
  const mounts = readMountinfo();
  const namespace = mountNamespace();
  const images = new Set<ObjectId>();
  for (const r of records) {
    if (r.record.repository !== repoPath) continue;
    if (isLive(r.record, mounts, namespace)) images.add(r.record.image);
    else if (opts.removeStale) removeRecord(runtime, r, mounts);
  }

  return [...images].sort();
}
