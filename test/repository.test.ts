// Repository: layout and meta.json as composefs-rs writes them, atomic idempotent objects, streams and refs as
// relative symlinks, and reading streams back.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { StratumError } from "../src/errors.ts";
import { SHA512 } from "../src/format/object-id.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { Repository } from "../src/repo/repository.ts";
import { relativeLinkTarget } from "../src/repo/symlinks.ts";
import { fsverityMeasure } from "../src/sys/native.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";
import { catStream } from "./helpers/streams.ts";

const tmp = makeTempDir("stratum-repo-");
after(() => removeDir(tmp));
let n = 0;
async function freshRepo(opts: Parameters<typeof Repository.init>[1] = {}): Promise<Repository> {
  const root = path.join(tmp, `r${n++}`);
  Repository.init(root, opts);
  return Repository.open(root);
}

describe("repository", () => {
  test("init creates the composefs layout and meta.json byte for byte", async () => {
    const repo = await freshRepo();
    try {
      for (const d of ["objects", "streams", "streams/refs", "images", "images/refs"])
        assert.ok(fs.statSync(path.join(repo.root, d)).isDirectory(), d);
      assert.equal(
        fs.readFileSync(path.join(repo.root, "meta.json"), "utf8"),
        `{
  "version": 1,
  "algorithm": "fsverity-sha256-12",
  "features": {
    "compatible": [],
    "read-only-compatible": [
      "v1_erofs"
    ],
    "incompatible": []
  },
  "erofs_formats": {
    "default": 1
  }
}
`,
      );
      assert.equal(repo.verity, "insecure"); // this kernel has no fs-verity
      assert.deepEqual(fs.readdirSync(repo.root).sort(), ["images", "meta.json", "objects", "streams"]);
      assert.throws(
        () => Repository.init(repo.root),
        (e: unknown) => e instanceof StratumError && e.code === "E_EXISTS",
      );
    } finally {
      repo.close();
    }
  });

  test("objects: named by fs-verity digest, stored once, no temporary files left", async () => {
    for (const alg of [undefined, SHA512]) {
      const repo = await freshRepo({ algorithm: alg });
      try {
        const data = Buffer.from("the same content, twice\n".repeat(500));
        const a = repo.objects.writeBuffer(data);
        const w = repo.objects.createWriter();
        w.write(data.subarray(0, 1000));
        w.write(data.subarray(1000));
        const b = w.finish();
        assert.equal(a.id, b.id);
        assert.equal(a.stored, true);
        assert.equal(b.stored, false);
        const file = repo.objects.path(a.id);
        assert.equal(path.relative(repo.root, file), `objects/${a.id.slice(0, 2)}/${a.id.slice(2)}`);
        assert.ok(fs.readFileSync(file).equals(data));
        const cli = execFileSync("fsverity", [
          "digest",
          "--compact",
          `--hash-alg=${repo.algorithm.hash}`,
          file,
        ])
          .toString()
          .trim();
        assert.equal(a.id, cli);
        assert.equal(a.id.length, repo.algorithm.digestSize * 2);
        // Exactly one file under objects/, nothing temporary.
        const all = fs.readdirSync(path.join(repo.root, "objects"), { recursive: true }) as string[];
        assert.deepEqual(all.sort(), [a.id.slice(0, 2), `${a.id.slice(0, 2)}/${a.id.slice(2)}`]);
        // The empty object.
        const e = repo.objects.writeBuffer(Buffer.alloc(0));
        assert.equal(fs.statSync(repo.objects.path(e.id)).size, 0);
      } finally {
        repo.close();
      }
    }
  });

  test("an aborted object write leaves nothing behind", async () => {
    const repo = await freshRepo();
    try {
      const w = repo.objects.createWriter();
      w.write(Buffer.from("partial"));
      w.abort();
      assert.deepEqual(fs.readdirSync(path.join(repo.root, "objects")), []);
    } finally {
      repo.close();
    }
  });

  test("streams and refs are relative symlinks; streams reassemble byte for byte", async () => {
    const repo = await freshRepo();
    try {
      const big = Buffer.alloc(100_000, 7);
      const w = repo.createStream(ContentType.ociBlob);
      w.writeInline(Buffer.from("header "));
      const obj = w.writeExternalBuffer(big);
      w.writeInline(Buffer.from(" trailer"));
      const s = w.finish();
      repo.publishStream("my-stream", s.id);
      assert.equal(
        fs.readlinkSync(path.join(repo.root, "streams/my-stream")),
        `../objects/${s.id.slice(0, 2)}/${s.id.slice(2)}`,
      );
      repo.setStreamRef("top", "my-stream");
      repo.setStreamRef("deep/er/name", "my-stream");
      assert.equal(fs.readlinkSync(path.join(repo.root, "streams/refs/top")), "../my-stream");
      assert.equal(fs.readlinkSync(path.join(repo.root, "streams/refs/deep/er/name")), "../../../my-stream");
      assert.deepEqual(
        repo.listStreamRefs().map((r) => [r.name, r.target]),
        [
          ["deep/er/name", "my-stream"],
          ["top", "my-stream"],
        ],
      );
      const expected = Buffer.concat([Buffer.from("header "), big, Buffer.from(" trailer")]);
      assert.ok((await catStream(repo, "my-stream")).equals(expected));
      assert.ok((await catStream(repo, "refs/deep/er/name")).equals(expected));
      const r = repo.openStream("my-stream", ContentType.ociBlob);
      assert.deepEqual(r.objectRefs, [obj.id]);
      r.close();
      assert.throws(() => repo.openStream("my-stream", ContentType.ociLayer), /content type is oci_blob/);
      // Replacing a ref is atomic and leaves no temporary link.
      const w2 = repo.createStream(ContentType.none);
      w2.writeInline(Buffer.from("v2"));
      repo.publishStream("other", w2.finish().id);
      repo.setStreamRef("top", "other");
      assert.equal((await catStream(repo, "refs/top")).toString(), "v2");
      assert.deepEqual(
        fs.readdirSync(repo.root).filter((f) => f.startsWith(".")),
        [],
      );
      repo.removeStreamRef("top");
      assert.throws(
        () => repo.openStream("refs/top"),
        (e: unknown) => e instanceof StratumError && e.code === "E_NOT_FOUND",
      );
    } finally {
      repo.close();
    }
  });

  test("a corrupted external object is detected when the stream is read", async () => {
    const repo = await freshRepo();
    try {
      const w = repo.createStream(ContentType.none);
      const obj = w.writeExternalBuffer(Buffer.alloc(5000, 1));
      repo.publishStream("s", w.finish().id);
      const file = repo.objects.path(obj.id);
      const bytes = fs.readFileSync(file);
      bytes[4000] ^= 0xff;
      fs.chmodSync(file, 0o644);
      fs.writeFileSync(file, bytes);
      await assert.rejects(catStream(repo, "s"), /does not match its digest/);
    } finally {
      repo.close();
    }
  });

  test("ref names cannot climb out or hide separators", async () => {
    const repo = await freshRepo();
    try {
      for (const bad of ["../x", "a/../../x", "/abs", "a//b", "", "."])
        assert.throws(() => repo.setStreamRef(bad, "s"), StratumError, bad);
      assert.throws(() => repo.publishStream("a/b", "00".repeat(32)), /contains "\/"/);
    } finally {
      repo.close();
    }
  });

  test("where the filesystem has fs-verity, objects carry it and the kernel's digest equals ours", async (t) => {
    const repo = await freshRepo();
    try {
      if (repo.verity === "insecure") {
        t.skip(`the filesystem of ${tmp} has no fs-verity (kernel without CONFIG_FS_VERITY): insecure mode`);
        return;
      }
      const obj = repo.objects.writeBuffer(Buffer.alloc(10_000, 3));
      const fd = fs.openSync(repo.objects.path(obj.id), "r");
      try {
        assert.equal(fsverityMeasure(fd).digest.toString("hex"), obj.id);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      repo.close();
    }
  });

  test("relative link targets", () => {
    assert.equal(relativeLinkTarget("streams/x", "objects/ab/cd"), "../objects/ab/cd");
    assert.equal(relativeLinkTarget("streams/refs/oci/foo", "streams/s"), "../../s");
    assert.equal(relativeLinkTarget("images/refs/a", "images/abc"), "../abc");
  });
});
