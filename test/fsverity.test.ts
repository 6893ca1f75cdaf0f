// fs-verity digests: conformance vectors, and the `fsverity digest` CLI as oracle for every size class.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { hash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { FsVerityHasher, fsverityDigest } from "../src/format/fsverity.ts";
import { SHA256, SHA512, type Algorithm } from "../src/format/object-id.ts";
import { PARALLEL_MIN_SIZE, digestFile } from "../src/repo/file-digest.ts";
import { loadVectors } from "./helpers/conformance.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const dir = makeTempDir("stratum-fsverity-");
after(() => removeDir(dir));

function cliDigest(file: string, alg: Algorithm): string {
  return execFileSync("fsverity", ["digest", "--compact", `--hash-alg=${alg.hash}`, file])
    .toString()
    .trim();
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
function pseudoRandom(size: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, i);
  }
  for (let i = size - (size % 4); i < size; i++) buf[i] = i & 0xff;
  return buf;
}

function fsverityLevel0(block: Buffer): Buffer {
  return hash("sha256", block, "buffer");
}

function digestInChunks(data: Buffer, alg: Algorithm, chunk: number): string {
  const h = new FsVerityHasher(alg);
  for (let o = 0; o < data.length; o += chunk) h.update(data.subarray(o, o + chunk));
  return h.digestHex();
}

describe("fs-verity digest", () => {
  test("conformance vectors (vectors.json fsverity)", () => {
    const vectors = loadVectors().fsverity;
    assert.ok(vectors.length >= 3);
    for (const v of vectors)
      assert.equal(fsverityDigest(Buffer.from(v.data_utf8, "utf8")).toString("hex"), v.fsverity_sha256);
  });

  const sizes = [0, 1, 4095, 4096, 4097, 8192, 128 * 4096, 128 * 4096 + 1, 129 * 4096, 128 * 128 * 4096 + 1];
  for (const alg of [SHA256, SHA512]) {
    test(`equals the fsverity CLI for sizes ${sizes.join(", ")} (${alg.hash})`, () => {
      for (const size of sizes) {
        const data = pseudoRandom(size, size + 7);
        const file = path.join(dir, `f-${size}`);
        fs.writeFileSync(file, data);
        const expected = cliDigest(file, alg);
        assert.equal(fsverityDigest(data, alg).toString("hex"), expected, `size ${size}`);
        // Any chunking gives the same digest.
        for (const chunk of [1000, 4096, 65536, 12289])
          assert.equal(digestInChunks(data, alg, chunk), expected, `size ${size}, chunks of ${chunk}`);
      }
    });
  }

  test("a 100 MB+ file, streamed, equals the CLI (multi-level tree)", () => {
    const file = path.join(dir, "big");
    const size = 100 * 1000 * 1000 + 12345;
    const fd = fs.openSync(file, "w");
    const h256 = new FsVerityHasher(SHA256);
    const h512 = new FsVerityHasher(SHA512);
    for (let written = 0, i = 0; written < size; i++) {
      const part = pseudoRandom(Math.min(1 << 20, size - written), i + 1);
      fs.writeSync(fd, part);
      h256.update(part);
      h512.update(part);
      written += part.length;
    }
    fs.closeSync(fd);
    assert.equal(h256.length, size);
    assert.equal(h256.digestHex(), cliDigest(file, SHA256));
    assert.equal(h512.digestHex(), cliDigest(file, SHA512));
    // The file digest used by fsck and object reads (two threads for large files) agrees.
    assert.equal(digestFile(file, SHA256).digest, h256.digestHex());
    assert.equal(digestFile(file, SHA512).digest, h512.digestHex());
  });

  test("the two-thread file digest equals the CLI around chunk and block boundaries", () => {
    const chunk = 8 << 20;
    for (const size of [
      PARALLEL_MIN_SIZE,
      PARALLEL_MIN_SIZE + 1,
      5 * chunk - 1,
      5 * chunk + 4096,
      6 * chunk,
    ]) {
      const file = path.join(dir, `par-${size}`);
      const fd = fs.openSync(file, "w");
      for (let written = 0, i = 0; written < size; i++) {
        const part = pseudoRandom(Math.min(chunk, size - written), size + i);
        fs.writeSync(fd, part);
        written += part.length;
      }
      fs.closeSync(fd);
      for (const alg of [SHA256, SHA512]) {
        const got = digestFile(file, alg);
        assert.equal(got.size, size);
        assert.equal(got.digest, cliDigest(file, alg), `${size} bytes, ${alg.hash}`);
      }
      fs.rmSync(file);
    }
  });

  test("updateBlockHashes continues a tree exactly like update()", () => {
    const data = pseudoRandom(20 * 4096 + 100, 9);
    const h = new FsVerityHasher();
    h.update(data.subarray(0, 4096)); // a full block pending
    const hashes = Buffer.concat(
      Array.from({ length: 10 }, (_, i) => fsverityLevel0(data.subarray((i + 1) * 4096, (i + 2) * 4096))),
    );
    h.updateBlockHashes(hashes);
    h.update(data.subarray(11 * 4096));
    assert.equal(h.digestHex(), fsverityDigest(data).toString("hex"));
    assert.throws(
      () => new FsVerityHasher().update(Buffer.alloc(10)).updateBlockHashes(hashes),
      /block boundary/,
    );
  });

  test("digest() can be called again after more data", () => {
    const data = pseudoRandom(3 * 4096 + 5, 3);
    const h = new FsVerityHasher();
    h.update(data.subarray(0, 4096));
    assert.equal(h.digestHex(), fsverityDigest(data.subarray(0, 4096)).toString("hex"));
    h.update(data.subarray(4096));
    assert.equal(h.digestHex(), fsverityDigest(data).toString("hex"));
  });
});
