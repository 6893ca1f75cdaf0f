// The merged filesystem tree of an OCI image: its layers' entries (src/oci/layer-tree.ts) applied in order, then
// the composefs OCI transform. Implements composefs-repository.md §5.1 (`create_filesystem` / `process_entry` and
// `generic_tree.rs::transform_for_oci`) and §0 fact 10, with the OCI image spec's layer changeset rules for
// whiteouts. The result is what src/format/erofs/writer.ts writes. See docs/image-tree.md.
//
// Per layer, in config order:
// 1. Whiteouts first: `.wh.<name>` removes `<name>` from the tree *as the lower layers left it*, and
//    `.wh..wh..opq` empties its directory of lower-layer children — whatever the marker's position in its own
//    layer, so a same-layer sibling is never deleted (composefs-rs applies them in tar order, its issue #8).
//    Markers never appear in the result; other `.wh..wh.*` names (aufs metadata) are skipped.
// 2. Then every other entry in tar order. Directory over directory: children kept, the later entry's metadata
//    wins. Anything else replaces what was there (a directory over a file, a file over a whole subtree). A hard
//    link shares the Leaf its target resolves to in the merged tree at that point (E_BAD_INPUT if missing or a
//    directory). The root entry (`./`) sets the root's metadata, later layers winning.
//    Missing parent directories are created (mode 0755, uid/gid 0, mtime 0, no xattrs) as umoci and container
//    runtimes do; composefs-rs refuses such layers instead. A parent that exists as a non-directory is
//    E_BAD_INPUT.
// After the last layer (transform_for_oci):
// - root metadata (mode, uid, gid, mtime, xattrs) is copied from `/usr`. Without a `/usr` directory composefs-rs
//   fails; here the root keeps the metadata of the last layer's root entry, or mode 0755, root:root, mtime 0
//   when no layer has one (the documented fallback).
// - `/run`, when a directory, is emptied (its own metadata kept) and takes `/usr`'s mtime when there is a `/usr`.
// - xattrs are filtered on every inode: `security.capability` kept, `user.*` only with keepUserXattrs, the rest
//   dropped.
// - leaf link counts are the number of names that reference each leaf.
//
// Regular files: object-backed ones get `{ size, digest: objectId, payload: objectRelPath(objectId) }`, small
// ones `{ size, inline }`, empty ones `{ size: 0 }` — exactly what src/tree/from-dir.ts produces, so the EROFS
// writer emits the same metacopy/redirect xattrs as for a directory import. Memory: the tree's metadata only.

import { StratumError } from "../errors.ts";
import { objectRelPath } from "../format/object-id.ts";
import { INLINE_CONTENT_MAX } from "../format/tar.ts";
import {
  Directory,
  FileSystem,
  Leaf,
  isDirectory,
  makeRdev,
  newStat,
  type ByteString,
  type Inode,
  type LeafContent,
  type Stat,
} from "../tree/tree.ts";
import type { LayerEntry } from "./layer-tree.ts";

export interface MergeOptions {
  /** Keep `user.*` xattrs as well as `security.capability` (composefs-rs `KeepUserXattrs`). */
  keepUserXattrs?: boolean;
}

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
const SECURITY_CAPABILITY = "security.capability";

/** True for the xattr keys the image keeps. */
export function keepXattr(key: ByteString, keepUserXattrs: boolean): boolean {
  return key === SECURITY_CAPABILITY || (keepUserXattrs && key.startsWith("user."));
}

function splitPath(path: ByteString): { parent: ByteString; name: ByteString } {
  const i = path.lastIndexOf("/");
  return i < 0 ? { parent: "", name: path } : { parent: path.slice(0, i), name: path.slice(i + 1) };
}

function show(path: ByteString): string {
  return JSON.stringify(Buffer.from(path, "latin1").toString("utf8"));
}

function statOf(e: LayerEntry): Stat {
  return newStat({
    mode: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    mtimeSec: e.mtimeSec,
    mtimeNsec: e.mtimeNsec,
    xattrs: new Map(e.xattrs),
  });
}

function lookupDir(root: Directory, path: ByteString): Directory | undefined {
  let cur: Directory = root;
  if (path === "") return cur;
  for (const c of path.split("/")) {
    const next = cur.get(c);
    if (next === undefined || !isDirectory(next)) return undefined;
    cur = next;
  }
  return cur;
}

function lookup(root: Directory, path: ByteString): Inode | undefined {
  if (path === "") return root;
  const { parent, name } = splitPath(path);
  return lookupDir(root, parent)?.get(name);
}

function leafContent(e: LayerEntry, where: (e: LayerEntry) => string): LeafContent {
  switch (e.type) {
    case "reg": {
      const size = e.size ?? 0;
      if (e.objectId !== undefined)
        return { type: "reg", size, digest: e.objectId, payload: objectRelPath(e.objectId) };
      if (size === 0) return { type: "reg", size: 0 };
      if (size > INLINE_CONTENT_MAX || e.inline?.length !== size)
        throw new StratumError("E_CORRUPT", `${where(e)}: regular file of ${size} bytes without its content`);
      return { type: "reg", size, inline: e.inline };
    }
    case "symlink":
      return { type: "symlink", target: e.linkTarget ?? "" };
    case "chr":
      return { type: "chr", rdev: makeRdev(e.devMajor ?? 0, e.devMinor ?? 0) };
    case "blk":
      return { type: "blk", rdev: makeRdev(e.devMajor ?? 0, e.devMinor ?? 0) };
    case "fifo":
      return { type: "fifo" };
    default:
      throw new Error(`leafContent: ${e.type}`);
  }
}

/** Apply `layers` (bottom first) and the OCI transform; see the module header for the rules. */
export function mergeLayers(layers: LayerEntry[][], opts: MergeOptions = {}): FileSystem {
  const keepUser = opts.keepUserXattrs ?? false;
  const root = new Directory(newStat({ mode: 0o755 }));

  /** The parent directory of an entry, creating missing ones (`where` names the entry, for errors only). */
  const parentDir = (parent: ByteString, where: () => string): Directory => {
    let cur = root;
    if (parent === "") return cur;
    for (const c of parent.split("/")) {
      let next = cur.get(c);
      if (next === undefined) {
        next = new Directory(newStat({ mode: 0o755 }));
        cur.entries.set(c, next);
      } else if (!isDirectory(next)) {
        // A path through a symbolic link is refused rather than followed: following links from an image is
        // how layers write outside their root.
        if (next.content.type === "symlink")
          throw new StratumError(
            "E_UNSAFE_PATH",
            `${where()}: its parent ${JSON.stringify(c)} is a symbolic link, which is not followed`,
          );
        throw new StratumError(
          "E_BAD_INPUT",
          `${where()}: its parent ${JSON.stringify(c)} is not a directory`,
        );
      }
      cur = next;
    }
    return cur;
  };

  for (const [li, entries] of layers.entries()) {
    const at = (e: LayerEntry): string => `layer ${li + 1}: entry ${show(e.path)}`;
    // 1. Whiteouts and opaque markers, against the lower layers only.
    for (const e of entries) {
      const { parent, name } = splitPath(e.path);
      if (!name.startsWith(WHITEOUT_PREFIX)) continue;
      const dir = lookupDir(root, parent);
      if (dir === undefined) continue;
      if (name === OPAQUE_MARKER) dir.entries.clear();
      else if (!name.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) && name.length > WHITEOUT_PREFIX.length)
        dir.entries.delete(name.slice(WHITEOUT_PREFIX.length));
    }
    // 2. Everything else, in order. Entries come grouped by directory, so the last parent is remembered; it is
    // forgotten whenever a directory object leaves the tree (replaced by a file, a link or a new directory).
    let lastParent: ByteString | null = null;
    let lastDir = root;
    for (const e of entries) {
      if (e.path === "") {
        if (e.type !== "dir") throw new StratumError("E_BAD_INPUT", `${at(e)}: the root is not a directory`);
        root.stat = statOf(e);
        continue;
      }
      const { parent, name } = splitPath(e.path);
      if (name.startsWith(WHITEOUT_PREFIX)) continue;
      if (parent !== lastParent) {
        lastDir = parentDir(parent, () => at(e));
        lastParent = parent;
      }
      const dir = lastDir;
      const existing = dir.get(name);
      let inode: Inode;
      if (e.type === "dir") {
        if (existing !== undefined && isDirectory(existing)) {
          existing.stat = statOf(e);
          continue;
        }
        inode = new Directory(statOf(e));
      } else if (e.type === "hardlink") {
        const target = lookup(root, e.linkTarget ?? "");
        if (target === undefined)
          throw new StratumError(
            "E_BAD_INPUT",
            `${at(e)}: hard link target ${show(e.linkTarget ?? "")} does not exist`,
          );
        if (isDirectory(target))
          throw new StratumError(
            "E_BAD_INPUT",
            `${at(e)}: hard link target ${show(e.linkTarget ?? "")} is a directory`,
          );
        inode = target;
      } else {
        inode = new Leaf(statOf(e), leafContent(e, at));
      }
      if (existing !== undefined && isDirectory(existing)) lastParent = null;
      dir.entries.set(name, inode);
    }
  }

  // transform_for_oci
  const usr = root.get("usr");
  if (usr !== undefined && isDirectory(usr)) root.stat = { ...usr.stat, xattrs: new Map(usr.stat.xattrs) };
  const run = root.get("run");
  if (run !== undefined && isDirectory(run)) {
    run.entries.clear();
    if (usr !== undefined && isDirectory(usr)) {
      run.stat.mtimeSec = usr.stat.mtimeSec;
      run.stat.mtimeNsec = usr.stat.mtimeNsec;
    }
  }

  const fs = new FileSystem(root);
  const links = new Map<Leaf, number>();
  for (const { inode } of fs.walk()) {
    if (!isDirectory(inode)) {
      const n = links.get(inode);
      links.set(inode, (n ?? 0) + 1);
      if (n !== undefined) continue;
    }
    if (inode.stat.xattrs.size > 0)
      for (const key of [...inode.stat.xattrs.keys()])
        if (!keepXattr(key, keepUser)) inode.stat.xattrs.delete(key);
  }
  for (const [leaf, n] of links) leaf.nlink = n;
  return fs;
}
