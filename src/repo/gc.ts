// Garbage collection (reference: composefs-repository.md §6; docs/repository.md "Garbage collection").
// Roots are every link under streams/refs/** and images/refs/**, and the images of live `stratum mount`s of this
// repository (liveMountImages, src/mount/records.ts; docs/mount.md). From each stream root we mark the stream's
// object, its object_refs, and its stream_refs (named refs), descending into any that is itself a stream; EROFS
// images reached by a named ref are kept as leaves. From each image root we mark the image and every object its
// external files point at, read from the EROFS image itself. Links in streams/, images/ and the refs trees
// that would dangle are pruned first, then every unmarked object is deleted (so a killed gc leaves only
// unreferenced objects), and temporary files of interrupted writes are removed, as are the repository's stale
// mount records (records whose mount is gone).
// gc holds the exclusive repository lock while it deletes, so no writer (which holds the shared lock) can be
// running; --dry-run keeps the shared lock and deletes nothing.

import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError } from "../errors.ts";
import { objectIdFromPath, type ObjectId } from "../format/object-id.ts";
import { liveMountImages } from "../mount/records.ts";
import { imageObjectIds } from "./images.ts";
import type { Repository } from "./repository.ts";
import { StreamReader } from "./streams.ts";
import { resolveRefLink } from "./symlinks.ts";
import { namedLinks, objectFiles, refLinks, tempFiles } from "./walk.ts";

export interface GcOptions {
  dryRun?: boolean;
  /** Called once if gc has to wait for other processes to close the repository. */
  onWait?: () => void;
  /** The objects an image uses (default: read the EROFS image's external file references). */
  imageObjects?: (repo: Repository, imageId: ObjectId) => Iterable<ObjectId>;
  /** More image roots: EROFS image IDs kept with every object they use (as images/refs roots are). */
  extraImageRoots?: Iterable<ObjectId>;
  /** Keep the images of live mounts (default true); the runtime directory of their records comes from env. */
  liveMounts?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface GcResult {
  dryRun: boolean;
  objectsRemoved: number;
  bytesRemoved: number;
  objectsKept: number;
  streamsPruned: string[];
  imagesPruned: string[];
  refsPruned: string[];
  tempFilesRemoved: string[];
  /** EROFS images kept because a live mount uses them. */
  mountedImages: string[];
}

/**
 * The roots of one kind: every link under `<kind>/refs/`, resolved (beneath the root) to the `<kind>/<name>` it
 * names. Dangling refs are skipped (pruning removes them); unsafe ones throw.
 */
function* rootTargets(
  repo: Repository,
  kind: "streams" | "images",
): Generator<{ ref: string; name: string }> {
  for (const ref of refLinks(repo.root, kind)) {
    if (!ref.isLink) continue;
    let target: string;
    try {
      target = resolveRefLink(repo.root, ref.rel, ref.rel);
    } catch (err) {
      if (err instanceof StratumError && err.code === "E_NOT_FOUND") continue;
      throw err;
    }
    const m = new RegExp(`^${kind}/([^/]+)$`).exec(target);
    if (m) yield { ref: ref.rel, name: m[1] };
  }
}

/** Compute the set of object IDs reachable from the roots. Exported for tests. */
export function reachableObjects(
  repo: Repository,
  opts: Pick<GcOptions, "imageObjects" | "extraImageRoots"> = {},
): Set<ObjectId> {
  const alg = repo.algorithm;
  const marked = new Set<ObjectId>();
  const streamByObject = new Map<ObjectId, string>();
  for (const l of namedLinks(repo.root, "streams")) {
    const id = l.target?.startsWith("../") ? objectIdFromPath(alg, l.target) : undefined;
    if (id) streamByObject.set(id, l.name);
  }

  const visited = new Set<ObjectId>();
  const walkStream = (id: ObjectId, label: string): void => {
    if (visited.has(id)) return;
    visited.add(id);
    marked.add(id);
    if (!repo.objects.has(id)) return; // dangling: nothing below it to keep
    let reader: StreamReader;
    try {
      reader = StreamReader.open(repo.objects, id, label);
    } catch (err) {
      throw new StratumError(
        "E_CORRUPT",
        `gc stopped, nothing was deleted: ${(err as Error).message} (run "stratum fsck")`,
      );
    }
    try {
      for (const o of reader.objectRefs) marked.add(o);
      for (const s of reader.streamRefs) {
        marked.add(s);
        const name = streamByObject.get(s);
        if (name !== undefined) walkStream(s, `stream ${name}`);
      }
    } finally {
      reader.close();
    }
  };

  for (const { name } of rootTargets(repo, "streams")) {
    const id = repo.streamId(name);
    if (id) walkStream(id, `stream ${name}`);
  }

  const markImage = (name: string, label: string): void => {
    if (!/^[0-9a-f]+$/.test(name)) return;
    marked.add(name);
    if (!repo.objects.has(name)) return;
    let used: Iterable<ObjectId>;
    try {
      used = (opts.imageObjects ?? imageObjectIds)(repo, name);
    } catch (err) {
      throw new StratumError(
        "E_CORRUPT",
        `gc stopped, nothing was deleted: ${label}: ${(err as Error).message} (run "stratum fsck")`,
      );
    }
    for (const o of used) marked.add(o);
  };
  for (const { ref, name } of rootTargets(repo, "images")) markImage(name, ref);
  for (const id of opts.extraImageRoots ?? []) markImage(id, `image ${id}`);
  return marked;
}

export async function gc(repo: Repository, opts: GcOptions = {}): Promise<GcResult> {
  const dryRun = opts.dryRun ?? false;
  if (!dryRun) {
    repo.checkWritable();
    await repo.lock.acquire("ex", { onWait: opts.onWait });
  }
  try {
    // Under the exclusive lock no mount of this repository is in progress, so stale records can go.
    const mountedImages =
      opts.liveMounts === false ? [] : liveMountImages(repo, { removeStale: !dryRun, env: opts.env });
    const marked = reachableObjects(repo, {
      imageObjects: opts.imageObjects,
      extraImageRoots: [...mountedImages, ...(opts.extraImageRoots ?? [])],
    });
    const result: GcResult = {
      dryRun,
      objectsRemoved: 0,
      bytesRemoved: 0,
      objectsKept: 0,
      streamsPruned: [],
      imagesPruned: [],
      refsPruned: [],
      tempFilesRemoved: [],
      mountedImages,
    };
    const remove = (rel: string): void => {
      if (dryRun) return;
      try {
        fs.rmSync(path.join(repo.root, rel), { force: true });
      } catch (err) {
        throw ioError(err, `cannot remove ${rel}`);
      }
    };
    // The doomed objects are found first, and the links to them removed before any object is: a gc killed at
    // any moment leaves only unreferenced objects behind (which fsck accepts and the next gc removes), never a
    // stream or image link to a deleted object.
    const gone = new Set<ObjectId>();
    const doomed: { rel: string; size: number }[] = [];
    for (const f of objectFiles(repo.root, repo.algorithm)) {
      if (f.id === null) continue; // not ours to judge: fsck reports it
      if (marked.has(f.id)) {
        result.objectsKept++;
        continue;
      }
      doomed.push({ rel: f.rel, size: f.size });
      gone.add(f.id);
    }
    // A link is dangling if its object is missing now or is about to go.
    const live = (target: string | null): boolean => {
      const id = target?.startsWith("../") ? objectIdFromPath(repo.algorithm, target) : undefined;
      return id !== undefined && !gone.has(id) && repo.objects.has(id);
    };
    for (const kind of ["streams", "images"] as const) {
      const pruned = kind === "streams" ? result.streamsPruned : result.imagesPruned;
      const liveNames = new Set<string>();
      for (const l of namedLinks(repo.root, kind)) {
        if (l.target === null) continue;
        if (live(l.target)) liveNames.add(l.name);
        else {
          remove(`${kind}/${l.name}`);
          pruned.push(l.name);
        }
      }
      for (const ref of refLinks(repo.root, kind)) {
        if (!ref.isLink) continue;
        let ok = false;
        try {
          const t = resolveRefLink(repo.root, ref.rel, ref.rel);
          ok = t.startsWith(`${kind}/`) && liveNames.has(t.slice(kind.length + 1));
        } catch (err) {
          if (!(err instanceof StratumError && err.code === "E_NOT_FOUND")) throw err;
        }
        if (!ok) {
          remove(ref.rel);
          result.refsPruned.push(ref.rel);
        }
      }
    }
    // The unlinks reach the disk before the objects go, so a power cut keeps the same guarantee.
    const prunedAny = result.streamsPruned.length + result.imagesPruned.length + result.refsPruned.length > 0;
    if (!dryRun && prunedAny && doomed.length > 0) repo.sync();
    for (const d of doomed) {
      remove(d.rel);
      result.objectsRemoved++;
      result.bytesRemoved += d.size;
    }
    for (const t of tempFiles(repo.root)) {
      remove(t);
      result.tempFilesRemoved.push(t);
    }
    return result;
  } finally {
    if (!dryRun) await repo.lock.acquire("sh");
  }
}
