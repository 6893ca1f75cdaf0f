// Repository consistency check (reference: composefs-repository.md §6, §9.2 `fsck`; docs/repository.md "fsck").
// Reads everything and changes nothing: every object's content must match its name (fs-verity digest, and the
// kernel's measurement where verity is enforced); every stream link must name an existing object that parses as
// a splitstream whose chunks decode, whose sizes add up, and whose referenced objects exist; every image must
// parse as a composefs EROFS image whose files use only existing objects; every ref must
// resolve, beneath the repository root, to an existing stream or image. Each problem names the item.

import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError } from "../errors.ts";
import { objectIdFromPath, type ObjectId } from "../format/object-id.ts";
import { fsverityMeasure } from "../sys/native.ts";
import { ContentType } from "../format/splitstream.ts";
import { imageObjectIds } from "./images.ts";
import type { Repository } from "./repository.ts";
import { StreamReader } from "./streams.ts";
import { resolveRefLink } from "./symlinks.ts";
import { namedLinks, objectFiles, refLinks, tempFiles } from "./walk.ts";

export interface FsckProblem {
  /** What is damaged: `objects/ab/cd…`, `streams/<name>`, `streams/refs/<ref>`, `images/<hex>`. */
  item: string;
  problem: string;
}

export interface FsckReport {
  ok: boolean;
  verity: string;
  objects: { checked: number; bytes: number };
  streams: { checked: number };
  refs: { checked: number };
  images: { checked: number };
  problems: FsckProblem[];
  /** Harmless findings, e.g. temporary files left by an interrupted write (gc removes them). */
  notes: FsckProblem[];
}

export interface FsckOptions {
  /** Called after each object is checked (progress). */
  onObject?: (checked: number) => void;
}

export function fsck(repo: Repository, opts: FsckOptions = {}): FsckReport {
  const report: FsckReport = {
    ok: true,
    verity: repo.verity,
    objects: { checked: 0, bytes: 0 },
    streams: { checked: 0 },
    refs: { checked: 0 },
    images: { checked: 0 },
    problems: [],
    notes: [],
  };
  const problem = (item: string, text: string): void => {
    report.problems.push({ item, problem: text });
  };
  const alg = repo.algorithm;

  // Objects: content matches name.
  const present = new Map<ObjectId, number>();
  for (const f of objectFiles(repo.root, alg)) {
    if (f.id === null) {
      problem(f.rel, "not an object: the name is not a valid digest or it is not a regular file");
      continue;
    }
    present.set(f.id, f.size);
    const abs = path.join(repo.root, f.rel);
    try {
      const { digest } = repo.objects.digestOfFile(abs);
      if (digest !== f.id) problem(f.rel, `content does not match its name (fs-verity digest is ${digest})`);
      else if (repo.verity === "enforced") {
        const fd = fs.openSync(abs, "r");
        try {
          const measured = fsverityMeasure(fd).digest.toString("hex");
          if (measured !== f.id) problem(f.rel, `kernel fs-verity digest is ${measured}`);
        } catch (err) {
          problem(f.rel, `fs-verity is not enabled (${(err as Error).message})`);
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch (err) {
      problem(f.rel, ioError(err, "cannot read").message);
    }
    report.objects.checked++;
    report.objects.bytes += f.size;
    opts.onObject?.(report.objects.checked);
  }
  for (const t of tempFiles(repo.root))
    report.notes.push({ item: t, problem: "temporary file left by an interrupted write (gc removes it)" });

  // Streams: link → object → splitstream that decodes completely.
  const streams = new Set<string>();
  for (const l of namedLinks(repo.root, "streams")) {
    const item = `streams/${l.name}`;
    report.streams.checked++;
    const id = l.target?.startsWith("../") ? objectIdFromPath(alg, l.target) : undefined;
    if (l.target === null) {
      problem(item, "not a symlink");
      continue;
    }
    if (!id || path.posix.normalize(`streams/${l.target}`) !== `objects/${id.slice(0, 2)}/${id.slice(2)}`) {
      problem(item, `links to "${l.target}", which is not an object path`);
      continue;
    }
    if (!present.has(id)) {
      problem(item, `its object ${id} is missing`);
      continue;
    }
    streams.add(l.name);
    checkStream(repo, id, item, present, problem);
  }

  // Images: link → existing object.
  const images = new Set<string>();
  for (const l of namedLinks(repo.root, "images")) {
    const item = `images/${l.name}`;
    report.images.checked++;
    const id = l.target?.startsWith("../") ? objectIdFromPath(alg, l.target) : undefined;
    if (!id || id !== l.name)
      problem(item, `links to "${l.target ?? "(not a symlink)"}", not to objects/ for ${l.name}`);
    else if (!present.has(id)) problem(item, `its object ${id} is missing`);
    else {
      images.add(l.name);
      try {
        for (const o of imageObjectIds(repo, id))
          if (!present.has(o)) problem(item, `a file in the image uses object ${o}, which is missing`);
      } catch (err) {
        problem(item, `not a valid composefs EROFS image: ${(err as Error).message}`);
      }
    }
  }

  // Refs: resolve beneath the root to an existing stream or image.
  for (const kind of ["streams", "images"] as const) {
    const names = kind === "streams" ? streams : images;
    for (const ref of refLinks(repo.root, kind)) {
      report.refs.checked++;
      if (!ref.isLink) {
        problem(ref.rel, "not a symlink");
        continue;
      }
      try {
        const target = resolveRefLink(repo.root, ref.rel, ref.rel);
        const prefix = `${kind}/`;
        if (!target.startsWith(prefix) || target.slice(prefix.length).includes("/"))
          problem(ref.rel, `points at ${target}, not at a ${kind === "streams" ? "stream" : "image"}`);
        else if (!names.has(target.slice(prefix.length)))
          problem(ref.rel, `points at ${target}, which is missing or damaged`);
      } catch (err) {
        problem(ref.rel, err instanceof StratumError ? err.message.replace(`${ref.rel}: `, "") : String(err));
      }
    }
  }
  report.ok = report.problems.length === 0;
  return report;
}

/** Named refs of OCI config streams that link composefs EROFS images (`composefs.image.v1`, boot variants). */
const EROFS_REF_PREFIX = "composefs.image";

/** An EROFS image a config stream links: it must parse, and every object its files use must exist. */
function checkErofsRef(
  repo: Repository,
  id: ObjectId,
  item: string,
  name: string,
  present: Map<ObjectId, number>,
  problem: (item: string, text: string) => void,
): void {
  try {
    for (const o of imageObjectIds(repo, id))
      if (!present.has(o)) problem(item, `the EROFS image of "${name}" uses object ${o}, which is missing`);
  } catch (err) {
    problem(
      item,
      `named ref "${name}": ${id} is not a valid composefs EROFS image: ${(err as Error).message}`,
    );
  }
}

function checkStream(
  repo: Repository,
  id: ObjectId,
  item: string,
  present: Map<ObjectId, number>,
  problem: (item: string, text: string) => void,
): void {
  let reader: StreamReader;
  try {
    reader = StreamReader.open(repo.objects, id, item);
  } catch (err) {
    problem(item, (err as Error).message.replace(`${item}: `, ""));
    return;
  }
  try {
    for (const o of reader.objectRefs)
      if (!present.has(o)) problem(item, `references object ${o}, which is missing`);
    const isConfig = reader.contentType === ContentType.ociConfig;
    for (const [name, ref] of reader.namedRefs()) {
      if (!present.has(ref)) problem(item, `named ref "${name}" points at object ${ref}, which is missing`);
      else if (isConfig && name.startsWith(EROFS_REF_PREFIX))
        checkErofsRef(repo, ref, item, name, present, problem);
    }
    let size = 0;
    for (const c of reader.chunks()) {
      if ("inline" in c) size += c.inline.length;
      else size += present.get(c.external) ?? 0;
    }
    const allPresent = reader.objectRefs.every((o) => present.has(o));
    if (allPresent && size !== reader.header.streamSize)
      problem(item, `reassembles to ${size} bytes, its header says ${reader.header.streamSize}`);
  } catch (err) {
    problem(item, (err as Error).message.replace(`${item}: `, ""));
  } finally {
    reader.close();
  }
}
