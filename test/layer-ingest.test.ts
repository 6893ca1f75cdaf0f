// Tar layers through the repository: import real tars (GNU tar in gnu/posix/ustar formats with long names,
// hard links, xattrs and sparse files; bsdtar), rebuild them from the splitstream, and compare byte for byte;
// the same layer gzip- or zstd-compressed gives the same diff_id and stream. Checks the split rule on disk.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { StratumError } from "../src/errors.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { TarSplitter } from "../src/format/tar.ts";
import { ingestLayer } from "../src/oci/layer-ingest.ts";
import { fsck } from "../src/repo/fsck.ts";
import { Repository } from "../src/repo/repository.ts";
import { stratum } from "./helpers/cli.ts";
import { makeTarFixtures } from "./helpers/tar-fixtures.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";
import { catStream } from "./helpers/streams.ts";

const tmp = makeTempDir("stratum-ingest-");
after(() => removeDir(tmp));
let fixtures: { name: string; path: string }[] = [];
before(async () => {
  fixtures = await makeTarFixtures(path.join(tmp, "fixtures"));
});

async function* fileChunks(file: string, size = 1 << 20): AsyncGenerator<Buffer> {
  yield* fs.createReadStream(file, { highWaterMark: size }) as AsyncIterable<Buffer>;
}

/** Expected external payloads per the split rule, from an independent pass of the splitter. */
function expectedExternalSizes(tar: Buffer): number[] {
  const s = new TarSplitter();
  return [...s.push(tar), ...s.end()].flatMap((e) => (e.kind === "external" ? [e.size] : []));
}

describe("layer ingest", () => {
  test("every fixture tar round-trips byte for byte, with sha256 equal to the diff_id", async () => {
    assert.ok(fixtures.length >= 8, `only ${fixtures.length} fixtures`);
    const root = path.join(tmp, "repo-roundtrip");
    Repository.init(root);
    const repo = await Repository.open(root);
    try {
      for (const fx of fixtures) {
        const tar = fs.readFileSync(fx.path);
        const sha = `sha256:${createHash("sha256").update(tar).digest("hex")}`;
        const res = await ingestLayer(repo, fileChunks(fx.path, 65536 + 17), { label: fx.name });
        assert.equal(res.diffId, sha, fx.name);
        assert.equal(res.compression, "none");
        assert.equal(res.tarSize, tar.length);
        assert.ok(
          (await catStream(repo, res.streamName, ContentType.ociLayer)).equals(tar),
          `${fx.name}: rebuilt tar differs`,
        );
        // Split rule: the stream's objects are exactly the regular payloads over 64 bytes, with their sizes.
        const r = repo.openStream(res.streamName);
        const sizes = [...r.chunks()].flatMap((c) =>
          "external" in c ? [fs.statSync(repo.objects.path(c.external)).size] : [],
        );
        r.close();
        assert.deepEqual(sizes, expectedExternalSizes(tar), fx.name);
        assert.ok(sizes.every((s) => s > 64));
        assert.equal(res.externalObjects, sizes.length);
      }
      assert.equal(fsck(repo).ok, true);
    } finally {
      repo.close();
    }
  });

  test("gzip and zstd layers give the same diff_id and stream as the plain tar", async () => {
    const root = path.join(tmp, "repo-compressed");
    Repository.init(root);
    const repo = await Repository.open(root);
    try {
      const fx = fixtures.find((f) => f.name.includes("posix")) ?? fixtures[0];
      const gz = path.join(tmp, "layer.tar.gz");
      const zst = path.join(tmp, "layer.tar.zst");
      execFileSync("sh", ["-c", `gzip -c '${fx.path}' > '${gz}' && zstd -q -c '${fx.path}' > '${zst}'`]);
      const plain = await ingestLayer(repo, fileChunks(fx.path));
      const g = await ingestLayer(repo, fileChunks(gz, 1000));
      const z = await ingestLayer(repo, fileChunks(zst, 3));
      assert.equal(g.compression, "gzip");
      assert.equal(z.compression, "zstd");
      assert.equal(g.diffId, plain.diffId);
      assert.equal(z.diffId, plain.diffId);
      assert.equal(g.streamId, plain.streamId);
      assert.equal(g.stored, false); // already present
      assert.equal(plain.stored, true);
      // Multi-member gzip decodes completely.
      const multi = path.join(tmp, "multi.tar.gz");
      const tar = fs.readFileSync(fx.path);
      const half = Math.floor(tar.length / 2);
      fs.writeFileSync(multi, Buffer.concat([gzipBuf(tar.subarray(0, half)), gzipBuf(tar.subarray(half))]));
      assert.equal((await ingestLayer(repo, fileChunks(multi))).diffId, plain.diffId);
    } finally {
      repo.close();
    }
  });

  test("a wrong expected diff_id fails and names nothing", async () => {
    const root = path.join(tmp, "repo-diffid");
    Repository.init(root);
    const repo = await Repository.open(root);
    try {
      const fx = fixtures[0];
      await assert.rejects(
        ingestLayer(repo, fileChunks(fx.path), {
          expectedDiffId: `sha256:${"0".repeat(64)}`,
          label: "layer X",
        }),
        (e: unknown) =>
          e instanceof StratumError &&
          e.code === "E_BAD_INPUT" &&
          /layer X: diff_id mismatch/.test(e.message),
      );
      assert.deepEqual(repo.listStreams(), []);
    } finally {
      repo.close();
    }
  });

  test("CLI: import-tar, cat and fsck on every fixture", () => {
    const root = path.join(tmp, "repo-cli");
    assert.equal(stratum(["--repo", root, "init"]).status, 0);
    for (const [i, fx] of fixtures.entries()) {
      const imp = stratum(["--repo", root, "import-tar", fx.path, `fx/${i}`, "--json"]);
      assert.equal(imp.status, 0, imp.stderr);
      const info = JSON.parse(imp.stdout.toString()) as { diffId: string; streamName: string };
      const cat = stratum(["--repo", root, "cat", `fx/${i}`]);
      assert.equal(cat.status, 0, cat.stderr);
      assert.ok(cat.stdout.equals(fs.readFileSync(fx.path)), fx.name);
      assert.equal(`sha256:${createHash("sha256").update(cat.stdout).digest("hex")}`, info.diffId);
      assert.ok(stratum(["--repo", root, "cat", info.streamName]).stdout.equals(cat.stdout));
    }
    // From standard input too.
    const stdin = stratum(["--repo", root, "import-tar", "-", "from-stdin"], {
      input: fs.readFileSync(fixtures[0].path),
    });
    assert.equal(stdin.status, 0, stdin.stderr);
    const check = stratum(["--repo", root, "fsck"]);
    assert.equal(check.status, 0, check.stdout.toString() + check.stderr);
    assert.match(check.stdout.toString(), /no problems/);
  });
});

function gzipBuf(b: Buffer): Buffer {
  return execFileSync("gzip", ["-c"], { input: b });
}
