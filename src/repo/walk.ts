// Enumerating what a repository holds: object files, stream links, image links and ref links. Shared by gc and
// fsck so that both see the repository the same way (docs/repository.md "Layout").

import * as fs from "node:fs";
import * as path from "node:path";
import { ioError, isErrno } from "../errors.ts";
import { isObjectId, type Algorithm, type ObjectId } from "../format/object-id.ts";

export interface ObjectFile {
  id: ObjectId | null;
  /** Path relative to the repository root. */
  rel: string;
  size: number;
}

function readdir(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw ioError(err, `cannot list ${dir}`);
  }
}

/** Every entry in objects/XX/ (id null when the name is not a valid object ID), sorted. */
export function* objectFiles(root: string, alg: Algorithm): Generator<ObjectFile> {
  const objects = path.join(root, "objects");
  for (const d of readdir(objects)
    .filter((e) => e.isDirectory() && /^[0-9a-f]{2}$/.test(e.name))
    .map((e) => e.name)
    .sort()) {
    for (const e of readdir(path.join(objects, d)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const rel = `objects/${d}/${e.name}`;
      const id = d + e.name;
      let size = 0;
      try {
        size = fs.lstatSync(path.join(root, rel)).size;
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw ioError(err, `cannot stat ${rel}`);
        continue;
      }
      yield { id: e.isFile() && isObjectId(alg, id) ? id : null, rel, size };
    }
  }
}

/** Leftover temporary files from interrupted writes: objects/.tmp-object-*, .symlink-*, .tmp-meta-*. */
export function tempFiles(root: string): string[] {
  const out: string[] = [];
  for (const e of readdir(path.join(root, "objects")))
    if (e.name.startsWith(".tmp-")) out.push(`objects/${e.name}`);
  for (const e of readdir(root))
    if (e.name.startsWith(".symlink-") || e.name.startsWith(".tmp-")) out.push(e.name);
  return out;
}

/** First-level entries of streams/ or images/ (excluding refs/), with their raw link targets. */
export function namedLinks(
  root: string,
  kind: "streams" | "images",
): { name: string; target: string | null }[] {
  return readdir(path.join(root, kind))
    .filter((e) => e.name !== "refs")
    .map((e) => ({
      name: e.name,
      target: e.isSymbolicLink() ? fs.readlinkSync(path.join(root, kind, e.name)) : null,
    }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Every ref link below streams/refs or images/refs, as paths relative to the root; non-links are reported too. */
export function refLinks(root: string, kind: "streams" | "images"): { rel: string; isLink: boolean }[] {
  const out: { rel: string; isLink: boolean }[] = [];
  const walk = (rel: string): void => {
    for (const e of readdir(path.join(root, rel)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else out.push({ rel: r, isLink: e.isSymbolicLink() });
    }
  };
  walk(`${kind}/refs`);
  return out;
}
