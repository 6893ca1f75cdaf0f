// composefs EROFS images in the repository (reference: composefs-repository.md §1.1, §1.6, §6): an image is an
// object linked as `images/<id>` (only such files may ever be mounted) and optionally named by `images/refs/**`.
// Images are written in the repository's EROFS format (meta.json `erofs_formats.default`); gc keeps the objects
// an image's external files point at by reading the image.

import { StratumError } from "../errors.ts";
import { isObjectId, type ObjectId } from "../format/object-id.ts";
import { imageObjects } from "../format/erofs/reader.ts";
import { writeErofs } from "../format/erofs/writer.ts";
import type { FileSystem } from "../tree/tree.ts";
import type { Repository } from "./repository.ts";

/** The C-compatible composefs format version (0 or 1) the repository's images are written in. */
export function imageFormatVersion(repo: Repository): 0 | 1 {
  const v = repo.meta.erofsFormats.default;
  if (v === 0 || v === 1) return v;
  throw new StratumError(
    "E_UNSUPPORTED",
    `${repo.root}: EROFS format ${v} (the legacy composefs-rs layout) is not supported; formats 0 and 1 are`,
  );
}

/** Write `tree` as an EROFS image in the repository's format (pure computation; see storeImage). */
export function buildImage(repo: Repository, tree: FileSystem): Buffer {
  const version = imageFormatVersion(repo);
  return writeErofs(tree, { minVersion: version, maxVersion: version });
}

/** Store an EROFS image as an object and link it under images/. Returns the image ID. */
export function storeImage(repo: Repository, image: Buffer): { id: ObjectId; size: number } {
  const obj = repo.objects.writeBuffer(image);
  repo.publishImage(obj.id);
  return { id: obj.id, size: image.length };
}

/** Write `tree` as an EROFS image, store it and link it under images/. Returns the image ID. */
export function commitImage(repo: Repository, tree: FileSystem): { id: ObjectId; size: number } {
  return storeImage(repo, buildImage(repo, tree));
}

/** The object IDs an image's external files refer to (payloads of the form `xx/<rest>`). */
export function imageObjectIds(repo: Repository, id: ObjectId): ObjectId[] {
  const image = repo.objects.read(id);
  const ids: ObjectId[] = [];
  for (const payload of imageObjects(image, `image ${id}`)) {
    const candidate = payload.replace("/", "");
    if (payload[2] === "/" && isObjectId(repo.algorithm, candidate)) ids.push(candidate);
  }
  return ids;
}
