// The boot variant of an OCI image tree (`pull --bootable`, stored under `composefs.image.boot.v1`): the
// merged tree of src/oci/merge.ts transformed as composefs-rs `composefs-boot/src/lib.rs::transform_for_boot`
// does it (composefs-repository.md §8). See docs/image-tree.md, "Boot variant".
//
// Applied to the tree after the normal image was written from it; it MUTATES that tree and returns it:
// 1. `/usr`, `/boot` and `/sysroot` must all be directories (E_BAD_INPUT "not a bootable image: …"); they
//    and the SELinux policy are checked before anything changes, so a failed transform leaves the tree as it
//    was. `/boot` and `/sysroot` are emptied (their own metadata kept) and take `/usr`'s mtime (seconds and
//    nanoseconds).
// 2. Leaves reachable only from the emptied directories are gone with them (composefs-rs `compact()`; our
//    tree has no leaf table to compact).
// 3. SELinux (src/oci/selabel.ts): the image's own policy labels every inode, or every `security.selinux` is
//    removed when the image has none.
// 4. Each leaf's `nlink` is recounted (emptying and label-split hard links change it), and a hard link's
//    `primary` entry that no longer holds the leaf is dropped.
// Boot entries (BLS, UKIs, kernels) that composefs-rs collects before step 1 do not change the tree and are
// not collected here.

import { StratumError } from "../errors.ts";
import { Directory, FileSystem, isDirectory, type Leaf } from "../tree/tree.ts";
import { applyPolicy, loadPolicy, stripLabels, type ObjectReader } from "./selabel.ts";

export type { ObjectReader } from "./selabel.ts";

export interface BootTransformOptions {
  /**
   * Reads a repository object by ID: the content of object-backed regular files (the SELinux policy files).
   * Inline and empty files are read from the tree. The pull passes `(id) => repo.objects.read(id)`.
   */
  readFile: ObjectReader;
  /** Names the image in error messages (default "image"). */
  label?: string;
}

/** The top-level directories the boot variant empties (composefs-rs `REQUIRED_TOPLEVEL_TO_EMPTY_DIRS`). */
export const EMPTIED_FOR_BOOT = ["boot", "sysroot"] as const;

function requireDir(fs: FileSystem, name: string, where: string): Directory {
  const inode = fs.root.get(name);
  if (inode === undefined)
    throw new StratumError("E_BAD_INPUT", `${where}: not a bootable image: no /${name}`);
  if (!isDirectory(inode))
    throw new StratumError("E_BAD_INPUT", `${where}: not a bootable image: /${name} is not a directory`);
  return inode;
}

/** Recount every leaf's links and drop `primary` entries that no longer hold their leaf. */
function relink(fs: FileSystem): void {
  const links = new Map<Leaf, number>();
  for (const { inode } of fs.walk()) if (!isDirectory(inode)) links.set(inode, (links.get(inode) ?? 0) + 1);
  for (const [leaf, n] of links) {
    leaf.nlink = n;
    const p = leaf.primary;
    if (p !== null && (n === 1 || p.parent.get(p.name) !== leaf)) leaf.primary = null;
  }
}

/**
 * Transform the merged image tree `fs` into the boot variant, in place (see the module header); returns `fs`.
 * Errors (the tree is then unchanged): E_BAD_INPUT when `/usr`, `/boot` or `/sysroot` is missing or not a
 * directory or the SELinux policy is broken; E_UNSUPPORTED for a policy regex with no JavaScript translation;
 * whatever `readFile` throws.
 */
export function transformForBoot(fs: FileSystem, opts: BootTransformOptions): FileSystem {
  const where = opts.label ?? "image";
  const usr = requireDir(fs, "usr", where);
  const emptied = EMPTIED_FOR_BOOT.map((name) => requireDir(fs, name, where));
  // The policy lives under /etc, which emptying does not touch: reading it first leaves the tree unchanged
  // when it is broken.
  const policy = loadPolicy(fs, { readFile: opts.readFile, label: where });
  for (const dir of emptied) {
    dir.entries.clear();
    dir.stat.mtimeSec = usr.stat.mtimeSec;
    dir.stat.mtimeNsec = usr.stat.mtimeNsec;
  }
  if (policy === null) stripLabels(fs);
  else applyPolicy(fs, policy);
  relink(fs);
  return fs;
}
