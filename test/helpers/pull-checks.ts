// Oracles the pull tests share: what a pull reports, what its layer streams reference, and what GNU tar
// extracts from the same layers (the files over 64 bytes, by fs-verity digest: exactly what should be stored).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { SHA256 } from "../../src/format/object-id.ts";
import { ContentType } from "../../src/format/splitstream.ts";
import type { PullResult } from "../../src/oci/pull.ts";
import { digestFile } from "../../src/repo/file-digest.ts";
import { Repository } from "../../src/repo/repository.ts";

/** What `stratum pull --json` prints (always with an EROFS: the tests never pass --skip-erofs). */
export type PullReport = Omit<PullResult, "erofs"> & { erofs: string };

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash("sha256").update(b).digest("hex")}`;
}

/** fs-verity digests of the regular files over 64 bytes below `dir`. */
export function fileObjectsIn(dir: string): Set<string> {
  const out = new Set<string>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && fs.statSync(p).size > 64) out.add(digestFile(p, SHA256).digest);
    }
  };
  walk(dir);
  return out;
}

/** The file objects of every uncompressed layer tar, as GNU tar extracts them into `scratch` (sorted). */
export function extractedObjects(tars: Buffer[], scratch: string): string[] {
  const out = new Set<string>();
  for (const [i, tar] of tars.entries()) {
    const dir = path.join(scratch, `extract-${process.pid}-${i}-${Date.now()}`);
    fs.mkdirSync(dir, { recursive: true });
    try {
      const r = spawnSync("tar", ["-x", "-C", dir, "--no-same-owner", "--delay-directory-restore"], {
        input: tar,
        maxBuffer: 1 << 30,
      });
      assert.equal(r.status, 0, r.stderr.toString());
      for (const d of fileObjectsIn(dir)) out.add(d);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return [...out].sort();
}

/** Every object the layer streams of `diffIds` reference (sorted). */
export async function storedLayerObjects(repo: string, diffIds: string[]): Promise<string[]> {
  const r = await Repository.open(repo);
  try {
    const out = new Set<string>();
    for (const d of diffIds) {
      const s = r.openStream(`oci-layer-${d}`, ContentType.ociLayer);
      for (const id of s.objectRefs) out.add(id);
      s.close();
    }
    return [...out].sort();
  } finally {
    r.close();
  }
}

/** The diff_ids of the layer streams in a repository (sorted). */
export function storedDiffIds(repo: string): string[] {
  return fs
    .readdirSync(path.join(repo, "streams"))
    .filter((n) => n.startsWith("oci-layer-"))
    .map((n) => n.slice("oci-layer-".length))
    .sort();
}
