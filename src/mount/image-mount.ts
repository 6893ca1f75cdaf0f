// `stratum mount` / `stratum unmount` as a library (reference: composefs-repository.md §7 mounting, §1.6 only
// files linked under images/ are ever mounted, §6 gc; docs/mount.md). An image named by tag or manifest digest
// is mounted through its config's EROFS ref (`composefs.image.v1`, or `composefs.image.boot.v1` for
// --bootable); a full hex ID names `images/<id>` directly. The sequence, under the repository's shared lock
// (which gc's exclusive lock waits for):
//   1. resolve the image and open `images/<id>` (it must link to that object; with fs-verity, the kernel's
//      measurement must equal the ID);
//   2. write the mount record (state "mounting"), so gc protects the image from here on;
//   3. mount the EROFS read-only on a scratch directory in the runtime dir: file-backed (kernel 6.12+), else on
//      a loop device that autoclears;
//   4. --read-write: mount a private tmpfs on the scratch directory for upper+work;
//   5. mount overlayfs at the mount point: source `composefs:<id>`, lower = EROFS, data-only lower = objects/,
//      metacopy=on, redirect_dir=on, verity=require when the repository has fs-verity, read-only unless an
//      upper layer is given;
//   6. detach the scratch mounts (the overlay holds its own references, so the EROFS, the loop device and the
//      tmpfs go when the overlay is unmounted) and rewrite the record as "mounted" with the overlay's mount ID.
// Any failure undoes every step. Unmounting removes the overlay, then the record.

import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { StratumError, ioError, isErrno } from "../errors.ts";
import { objectRelPath, type ObjectId } from "../format/object-id.ts";
import { BOOT_EROFS_REF, EROFS_REF, imageConfigRefs, resolveImage } from "../oci/image-refs.ts";
import type { Repository } from "../repo/repository.ts";
import { MNT_DETACH, MS_RDONLY, fsverityMeasure, mount, umount2 } from "../sys/native.ts";
import { overlayOptions } from "./composefs.ts";
import { mountNamespace, readMountinfo, topMountAt, type MountInfo } from "./mountinfo.ts";
import {
  cleanScratch,
  isLive,
  listRecords,
  newToken,
  processStart,
  recordFile,
  recordedMount,
  removeAbandonedTemps,
  removeRecord,
  repositoryPath,
  requireRuntimeDir,
  scratchDir,
  writeRecord,
  type MountRecord,
} from "./records.ts";

/** How the EROFS image reaches the kernel: the file itself (6.12+), or a loop device. */
export type ErofsBacking = "auto" | "file" | "loop";

export interface MountImageOptions {
  /** Mount the boot variant of the image (`composefs.image.boot.v1`). */
  bootable?: boolean;
  /** A writable overlay: both directories, on one filesystem. */
  upperdir?: string;
  workdir?: string;
  /** A writable overlay whose upper layer is a private tmpfs, gone with the mount. */
  readWrite?: boolean;
  /** Default "auto": file-backed when the kernel can, else a loop device. */
  erofsBacking?: ErofsBacking;
  env?: NodeJS.ProcessEnv;
}

export interface MountedImage {
  mountpoint: string;
  /** The IMAGE argument as given. */
  image: string;
  /** The EROFS image ID. */
  erofs: ObjectId;
  manifestDigest?: string;
  /** The overlay's mount options. */
  options: string;
  backing: "file" | "loop";
  record: string;
}

export interface OverlaySpec {
  erofsDir: string;
  objectsDir: string;
  upperdir?: string;
  workdir?: string;
  verity: boolean;
}

/** The overlay option string of a composefs mount (read-only is the MS_RDONLY flag, not an option). */
export function imageOverlayOptions(spec: OverlaySpec): string {
  return overlayOptions(spec.erofsDir, spec.objectsDir, {
    upperdir: spec.upperdir,
    workdir: spec.workdir,
    verity: spec.verity,
    readOnly: false,
  });
}

export interface MountSource {
  imageId: ObjectId;
  manifestDigest?: string;
}

/** Whether `images/<id>` links to the object `id` and that object exists. */
function imageLinked(repo: Repository, id: ObjectId): boolean {
  let target: string;
  try {
    target = fs.readlinkSync(path.join(repo.root, "images", id));
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "EINVAL")) return false;
    throw ioError(err, `cannot read ${repo.root}/images/${id}`);
  }
  return target === `../objects/${objectRelPath(id)}` && repo.objects.has(id);
}

/**
 * The EROFS image to mount for IMAGE: a tag, a manifest digest (`sha256:…`, `@sha256:…`, a unique prefix), or
 * a full EROFS image ID naming `images/<id>`.
 */
export function resolveMountSource(repo: Repository, spec: string, bootable = false): MountSource {
  const idPattern = new RegExp(`^[0-9a-f]{${repo.algorithm.digestSize * 2}}$`);
  if (idPattern.test(spec) && imageIdOnly(repo, spec)) {
    if (bootable)
      throw new StratumError(
        "E_USAGE",
        `--bootable needs an image name or manifest digest, not the EROFS image ID ${spec}`,
      );
    if (!imageLinked(repo, spec))
      throw new StratumError("E_NOT_FOUND", `no EROFS image ${spec} in ${repo.root}/images`);
    return { imageId: spec };
  }
  const tag = resolveImage(repo, spec);
  const id = imageConfigRefs(repo, tag.manifestDigest).get(bootable ? BOOT_EROFS_REF : EROFS_REF);
  if (id === undefined || !imageLinked(repo, id))
    throw new StratumError(
      "E_NOT_FOUND",
      bootable
        ? `image ${spec} has no boot EROFS image (pull again with --bootable)`
        : `image ${spec} has no composefs EROFS image (pull again)`,
    );
  return { imageId: id, manifestDigest: tag.manifestDigest };
}

/** A full-length hex IMAGE is an EROFS ID unless a tag has exactly that name. */
function imageIdOnly(repo: Repository, spec: string): boolean {
  try {
    return resolveImage(repo, spec).name !== spec;
  } catch (err) {
    if (err instanceof StratumError && err.code === "E_NOT_FOUND") return true;
    throw err;
  }
}

function checkOptions(opts: MountImageOptions): void {
  if ((opts.upperdir === undefined) !== (opts.workdir === undefined))
    throw new StratumError("E_USAGE", "--upperdir and --workdir go together: give both or neither");
  if (opts.readWrite && opts.upperdir !== undefined)
    throw new StratumError("E_USAGE", "--read-write and --upperdir/--workdir exclude each other");
}

/** The real path of an existing directory. */
function realDirectory(dir: string, what: string): string {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) throw new StratumError("E_NOT_FOUND", `${what} ${dir} does not exist`);
    throw ioError(err, `cannot resolve ${what} ${dir}`);
  }
  if (!fs.statSync(real).isDirectory())
    throw new StratumError("E_USAGE", `${what} ${dir} is not a directory`);
  return real;
}

function sysFailure(err: unknown, what: string): StratumError {
  if (err instanceof StratumError) return err;
  const code = isErrno(err) ? err.code : undefined;
  const hint = code === "EPERM" ? " (mounting needs root)" : code === "EINVAL" ? " (see dmesg)" : "";
  return new StratumError(
    code === "EPERM" ? "E_USAGE" : "E_IO",
    `${what}: ${isErrno(err) ? err.message : String(err)}${hint}`,
    { cause: err },
  );
}

/** Open the image object read-only, checking its fs-verity measurement when the repository has fs-verity. */
function openImage(repo: Repository, id: ObjectId): number {
  const file = repo.objects.path(id);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw ioError(err, `cannot open EROFS image ${id}`);
  }
  try {
    if (!fs.fstatSync(fd).isFile())
      throw new StratumError("E_CORRUPT", `EROFS image ${id} is not a regular file`);
    if (repo.verity === "enforced") {
      let measured: string;
      try {
        measured = fsverityMeasure(fd).digest.toString("hex");
      } catch (err) {
        throw new StratumError("E_VERITY", `EROFS image ${id} has no fs-verity: ${(err as Error).message}`);
      }
      if (measured !== id)
        throw new StratumError("E_VERITY", `EROFS image ${id}: fs-verity measures ${measured}, not its name`);
    }
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** Mount the EROFS read-only at `dir`: from the file itself when the kernel can, else from a loop device. */
function mountErofs(fd: number, file: string, dir: string, backing: ErofsBacking): "file" | "loop" {
  if (backing !== "loop") {
    try {
      // The kernel opens the path, which through /proc/self/fd is exactly the file checked above.
      mount(`/proc/self/fd/${fd}`, dir, "erofs", MS_RDONLY, null);
      return "file";
    } catch (err) {
      // ENOTBLK: this kernel mounts EROFS from block devices only.
      if (backing === "file" || !isErrno(err, "ENOTBLK")) throw sysFailure(err, `cannot mount EROFS ${file}`);
    }
  }
  // mount(8) attaches a loop device with autoclear: it goes when the EROFS is unmounted.
  const r = spawnSync("mount", ["-t", "erofs", "-o", "ro,loop", file, dir], { encoding: "utf8" });
  if (r.error)
    throw new StratumError("E_IO", `cannot mount EROFS ${file}: cannot run mount: ${r.error.message}`);
  if (r.status !== 0)
    throw new StratumError(
      "E_IO",
      `cannot mount EROFS ${file} on a loop device: ${(r.stderr || r.stdout).trim()}`,
    );
  return "loop";
}

/** Best effort, for undoing: run `fn`, ignore what it throws. */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // undoing after a failure: the first error is the one reported
  }
}

/**
 * Mount IMAGE from `repo` at `mountpoint`. The caller holds the repository open (its shared lock) throughout,
 * so gc cannot run meanwhile.
 */
export function mountImage(
  repo: Repository,
  spec: string,
  mountpoint: string,
  opts: MountImageOptions = {},
): MountedImage {
  checkOptions(opts);
  const runtime = requireRuntimeDir(opts.env);
  const target = realDirectory(mountpoint, "mount point");
  const upperdir = opts.upperdir === undefined ? undefined : realDirectory(opts.upperdir, "upper directory");
  const workdir = opts.workdir === undefined ? undefined : realDirectory(opts.workdir, "work directory");
  const src = resolveMountSource(repo, spec, opts.bootable);
  const repoPath = repositoryPath(repo);

  // Stale records of this repository go now (no gc can run: we hold the shared lock); a live one at the same
  // mount point means this is mounted already.
  const before = readMountinfo();
  const namespace = mountNamespace();
  for (const r of listRecords(runtime)) {
    const live = isLive(r.record, before, namespace);
    if (live && r.record.mountpoint === target)
      throw new StratumError(
        "E_EXISTS",
        `${target} is already a stratum mount of image ${r.record.image}; unmount it first`,
      );
    if (!live && r.record.repository === repoPath) removeRecord(runtime, r, before);
  }
  removeAbandonedTemps(runtime);

  const fd = openImage(repo, src.imageId);
  const token = newToken();
  const file = recordFile(runtime, token);
  const scratch = scratchDir(runtime, token);
  const record: MountRecord = {
    version: 1,
    repository: repoPath,
    image: src.imageId,
    ...(src.manifestDigest !== undefined ? { manifestDigest: src.manifestDigest } : {}),
    mountpoint: target,
    source: `composefs:${src.imageId}`,
    state: "mounting",
    namespace,
    pid: process.pid,
    pidStart: processStart(process.pid) ?? "",
    scratch,
    transient: opts.readWrite === true,
  };
  let recordWritten = false;
  let overlayMounted = false;
  try {
    writeRecord(file, record);
    recordWritten = true;
    const erofsDir = path.join(scratch, "erofs");
    try {
      fs.mkdirSync(erofsDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw ioError(err, `cannot create ${erofsDir}`);
    }
    const backing = mountErofs(fd, repo.objects.path(src.imageId), erofsDir, opts.erofsBacking ?? "auto");

    let upper = upperdir;
    let work = workdir;
    if (opts.readWrite) {
      const rw = path.join(scratch, "rw");
      try {
        fs.mkdirSync(rw, { mode: 0o700 });
        mount("tmpfs", rw, "tmpfs", 0, "mode=0700");
        upper = path.join(rw, "upper");
        work = path.join(rw, "work");
        // The writable root looks like the image's root.
        const root = fs.statSync(erofsDir);
        fs.mkdirSync(upper, { mode: root.mode & 0o7777 });
        fs.chmodSync(upper, root.mode & 0o7777);
        fs.chownSync(upper, root.uid, root.gid);
        fs.mkdirSync(work, { mode: 0o700 });
      } catch (err) {
        throw sysFailure(err, `cannot set up the transient writable layer in ${rw}`);
      }
    }

    const options = imageOverlayOptions({
      erofsDir,
      objectsDir: repo.objects.dir,
      upperdir: upper,
      workdir: work,
      verity: repo.verity === "enforced",
    });
    try {
      mount(record.source, target, "overlay", upper === undefined ? MS_RDONLY : 0, options);
    } catch (err) {
      throw sysFailure(err, `cannot mount the overlay at ${target}`);
    }
    overlayMounted = true;

    const after = readMountinfo();
    const top = topMountAt(after, target);
    if (top === undefined || top.source !== record.source || top.fstype !== "overlay")
      throw new StratumError("E_IO", `the overlay mounted at ${target} is not in /proc/self/mountinfo`);
    cleanScratch(runtime, scratch, after);
    writeRecord(file, { ...record, state: "mounted", mountId: top.mountId });
    return {
      mountpoint: target,
      image: spec,
      erofs: src.imageId,
      ...(src.manifestDigest !== undefined ? { manifestDigest: src.manifestDigest } : {}),
      options: upper === undefined ? `ro,${options}` : options,
      backing,
      record: file,
    };
  } catch (err) {
    if (overlayMounted) quietly(() => umount2(target, MNT_DETACH));
    quietly(() => cleanScratch(runtime, scratch));
    if (recordWritten) quietly(() => fs.rmSync(file, { force: true }));
    throw err;
  } finally {
    fs.closeSync(fd);
  }
}

export interface UnmountOptions {
  env?: NodeJS.ProcessEnv;
}

export interface UnmountedImage {
  mountpoint: string;
  erofs: ObjectId;
  repository: string;
}

function describe(m: MountInfo): string {
  return `${m.fstype} ${m.source}`;
}

/**
 * Unmount a stratum mount: the topmost mount at `mountpoint` must be the overlay a live record describes. The
 * overlay goes (and with it the EROFS, its loop device and a transient tmpfs), then the record. Stale records
 * for this mount point are removed on the way.
 */
export function unmountImage(mountpoint: string, opts: UnmountOptions = {}): UnmountedImage {
  const runtime = requireRuntimeDir(opts.env);
  const target = realDirectory(mountpoint, "mount point");
  const mounts = readMountinfo();
  const namespace = mountNamespace();
  const here = listRecords(runtime).filter((r) => r.record.mountpoint === target);
  const top = topMountAt(mounts, target);
  const mine = here.find(
    (r) =>
      top !== undefined && recordedMount(r.record, [top]) !== undefined && r.record.namespace === namespace,
  );
  if (mine === undefined) {
    let stale = 0;
    for (const r of here)
      if (!isLive(r.record, mounts, namespace)) {
        removeRecord(runtime, r, mounts);
        stale++;
      }
    const why =
      top === undefined
        ? "nothing is mounted there"
        : `the mount there is ${describe(top)}, which stratum did not make`;
    throw new StratumError(
      "E_NOT_FOUND",
      `${target} is not a stratum mount: ${why}${stale ? ` (removed ${stale} stale mount record)` : ""}`,
    );
  }
  try {
    umount2(target, 0);
  } catch (err) {
    if (isErrno(err, "EBUSY"))
      throw new StratumError("E_IO", `cannot unmount ${target}: it is busy (a process uses files in it)`);
    throw sysFailure(err, `cannot unmount ${target}`);
  }
  removeRecord(runtime, mine);
  for (const r of here)
    if (r !== mine && !isLive(r.record, readMountinfo(), namespace)) removeRecord(runtime, r);
  return { mountpoint: target, erofs: mine.record.image, repository: mine.record.repository };
}
