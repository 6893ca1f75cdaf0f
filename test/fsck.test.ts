// fsck: a clean repository passes (library, CLI, --json counts); each kind of damage, made in a fresh repository,
// is reported against the exact damaged item, makes `stratum fsck` exit 1, and fsck itself changes nothing.
// Leftover temporary files are notes, not damage.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { objectRelPath, type ObjectId } from "../src/format/object-id.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { fsck, type FsckReport } from "../src/repo/fsck.ts";
import { commitImage } from "../src/repo/images.ts";
import { Repository } from "../src/repo/repository.ts";
import { relativeLinkTarget } from "../src/repo/symlinks.ts";
import { Directory, FileSystem, Leaf, newStat } from "../src/tree/tree.ts";
import { stratum } from "./helpers/cli.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";
import { snapshotTree } from "./helpers/snapshot.ts";

const tmp = makeTempDir("stratum-fsck-");
after(() => removeDir(tmp));
let dirCounter = 0;

function rawLink(root: string, rel: string, target: string): void {
  const abs = path.join(root, rel);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.symlinkSync(target, abs);
}

interface Fixture {
  root: string;
  /** A plain object named by the stream's `composefs.image.v1` named ref (stands in for an EROFS image). */
  image: { id: ObjectId; size: number };
  /** The stream's two external objects (5000 and 100 bytes). */
  big: { id: ObjectId; size: number };
  small: { id: ObjectId; size: number };
  /** The splitstream object behind streams/s1. */
  stream: { id: ObjectId; size: number };
  /** A published EROFS image (images/<hex>) with a ref under images/refs; its file uses `small`. */
  published: { id: ObjectId; size: number };
}

/**
 * A small repository: streams/s1 (inline bytes, two external objects, a named ref to a plain object) tagged
 * `tag/one`, and a composefs image published under images/ with the ref images/refs/img. Closed on return.
 */
async function fixture(): Promise<Fixture> {
  const root = path.join(tmp, `r${dirCounter++}`);
  Repository.init(root);
  const repo = await Repository.open(root);
  try {
    const image = repo.objects.writeBuffer(Buffer.alloc(300, "i"));
    const w = repo.createStream(ContentType.ociLayer);
    w.writeInline(Buffer.from("header"));
    const big = w.writeExternalBuffer(Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff)));
    w.writeInline(Buffer.from("middle"));
    const small = w.writeExternalBuffer(Buffer.alloc(100, "s"));
    w.addNamedRef("composefs.image.v1", image.id);
    const stream = w.finish();
    repo.publishStream("s1", stream.id);
    repo.setStreamRef("tag/one", "s1");
    // A real composefs image whose one external file uses the stream's small object.
    const tree = new FileSystem(new Directory(newStat()));
    tree.root.entries.set(
      "f",
      new Leaf(newStat({ mode: 0o644 }), {
        type: "reg",
        size: small.size,
        digest: small.id,
        payload: objectRelPath(small.id),
      }),
    );
    const published = commitImage(repo, tree);
    rawLink(root, "images/refs/img", relativeLinkTarget("images/refs/img", `images/${published.id}`));
    return { root, image, big, small, stream, published };
  } finally {
    repo.close();
  }
}

async function runFsck(root: string): Promise<FsckReport> {
  const repo = await Repository.open(root);
  try {
    return fsck(repo);
  } finally {
    repo.close();
  }
}

function objPath(id: ObjectId): string {
  return `objects/${objectRelPath(id)}`;
}

/** Store `bytes` as an object and name it streams/<name> (bypassing the writer, for malformed splitstreams). */
async function publishRaw(root: string, name: string, bytes: Buffer): Promise<ObjectId> {
  const repo = await Repository.open(root);
  try {
    const o = repo.objects.writeBuffer(bytes);
    repo.publishStream(name, o.id);
    return o.id;
  } finally {
    repo.close();
  }
}

/**
 * Run fsck (library and CLI) on a damaged repository: the problems must name exactly `items` (each message
 * matching its pattern), the CLI must exit 1 printing each item (and with --json, the same problems), and
 * nothing under the repository may change.
 */
async function expectDamage(
  root: string,
  items: Record<string, RegExp>,
  opts: { json?: boolean } = {},
): Promise<FsckReport> {
  const before = snapshotTree(root);
  const report = await runFsck(root);
  assert.equal(report.ok, false);
  assert.deepEqual(
    report.problems.map((p) => p.item).sort(),
    Object.keys(items).sort(),
    `problems: ${JSON.stringify(report.problems)}`,
  );
  for (const p of report.problems) assert.match(p.problem, items[p.item], `${p.item}: ${p.problem}`);

  const cli = stratum(["--repo", root, "fsck"]);
  const stdout = cli.stdout.toString();
  assert.equal(cli.status, 1, `exit status; stderr: ${cli.stderr}`);
  for (const item of Object.keys(items))
    assert.ok(stdout.includes(`damaged: ${item}: `), `CLI names ${item}`);
  assert.match(cli.stderr, /^stratum: error: repository is damaged \(\d+ problems\)\n$/);

  if (opts.json) {
    const json = stratum(["--repo", root, "fsck", "--json"]);
    assert.equal(json.status, 1);
    const parsed = JSON.parse(json.stdout.toString()) as FsckReport;
    assert.equal(parsed.ok, false);
    assert.deepEqual(parsed.problems, report.problems);
  }

  assert.deepEqual(snapshotTree(root), before, "fsck changed the repository");
  return report;
}

describe("fsck", () => {
  test("a clean repository: ok, exit 0, --json counts match what was stored", async () => {
    const f = await fixture();
    const before = snapshotTree(f.root);
    const report = await runFsck(f.root);
    assert.deepEqual(report.problems, []);
    assert.deepEqual(report.notes, []);
    assert.equal(report.ok, true);
    const stored = [f.image, f.published, f.big, f.small, f.stream];
    const bytes = stored.reduce((n, o) => n + o.size, 0);
    assert.deepEqual(report.objects, { checked: 5, bytes });
    assert.deepEqual(report.streams, { checked: 1 });
    assert.deepEqual(report.images, { checked: 1 });
    assert.deepEqual(report.refs, { checked: 2 });

    const cli = stratum(["--repo", f.root, "fsck"]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(
      cli.stdout.toString(),
      /^5 objects \(.+\), 1 streams, 1 images, 2 refs checked; verity \w+; no problems\n$/,
    );

    const json = stratum(["--repo", f.root, "fsck", "--json"]);
    assert.equal(json.status, 0, json.stderr);
    const parsed = JSON.parse(json.stdout.toString()) as FsckReport;
    assert.equal(parsed.ok, true);
    assert.deepEqual(parsed.objects, { checked: 5, bytes });
    assert.deepEqual(parsed.streams, { checked: 1 });
    assert.deepEqual(parsed.images, { checked: 1 });
    assert.deepEqual(parsed.refs, { checked: 2 });
    assert.deepEqual(parsed.problems, []);
    assert.deepEqual(snapshotTree(f.root), before, "fsck changed the repository");
  });

  describe("damage is reported against the damaged item, and left alone", () => {
    test("a flipped byte in a file object", async () => {
      const f = await fixture();
      const p = path.join(f.root, objPath(f.big.id));
      const b = fs.readFileSync(p);
      b[1234] ^= 0x01;
      fs.writeFileSync(p, b);
      await expectDamage(f.root, { [objPath(f.big.id)]: /content does not match its name/ }, { json: true });
    });

    test("a truncated object (its stream no longer adds up either)", async () => {
      const f = await fixture();
      fs.truncateSync(path.join(f.root, objPath(f.big.id)), 4096);
      await expectDamage(f.root, {
        [objPath(f.big.id)]: /content does not match its name/,
        "streams/s1": /reassembles to \d+ bytes, its header says \d+/,
      });
    });

    test("a truncated object nothing reassembles", async () => {
      const f = await fixture();
      fs.truncateSync(path.join(f.root, objPath(f.image.id)), 10);
      await expectDamage(f.root, { [objPath(f.image.id)]: /content does not match its name/ });
    });

    test("a missing object referenced by a stream", async () => {
      const f = await fixture();
      fs.rmSync(path.join(f.root, objPath(f.small.id)));
      await expectDamage(f.root, {
        "streams/s1": new RegExp(`references object ${f.small.id}, which is missing`),
        [`images/${f.published.id}`]: new RegExp(
          `a file in the image uses object ${f.small.id}, which is missing`,
        ),
      });
    });

    test("a missing object named by a stream's named ref", async () => {
      const f = await fixture();
      fs.rmSync(path.join(f.root, objPath(f.image.id)));
      await expectDamage(f.root, {
        "streams/s1": new RegExp(
          `named ref "composefs.image.v1" points at object ${f.image.id}, which is missing`,
        ),
      });
    });

    test("a stream link to a missing object", async () => {
      const f = await fixture();
      const ghost = "ab".repeat(32);
      rawLink(f.root, "streams/ghost", `../${objPath(ghost)}`);
      await expectDamage(f.root, { "streams/ghost": new RegExp(`its object ${ghost} is missing`) });
    });

    test("a tagged stream whose object is gone: the stream and its tag", async () => {
      const f = await fixture();
      fs.rmSync(path.join(f.root, objPath(f.stream.id)));
      await expectDamage(f.root, {
        "streams/s1": new RegExp(`its object ${f.stream.id} is missing`),
        "streams/refs/tag/one": /points at streams\/s1, which is missing or damaged/,
      });
    });

    test("a splitstream with the wrong magic", async () => {
      const f = await fixture();
      const b = fs.readFileSync(path.join(f.root, objPath(f.stream.id)));
      b.write("SplitStreaX", 0, "latin1");
      await publishRaw(f.root, "bad", b);
      await expectDamage(f.root, { "streams/bad": /not a valid splitstream: wrong magic/ });
    });

    test("a splitstream with an unknown header version", async () => {
      const f = await fixture();
      const b = fs.readFileSync(path.join(f.root, objPath(f.stream.id)));
      assert.equal(b[11], 0);
      b[11] = 1;
      await publishRaw(f.root, "bad", b);
      await expectDamage(f.root, { "streams/bad": /not a valid splitstream: unknown header version 1/ });
    });

    test("a splitstream cut short inside its stream section", async () => {
      const f = await fixture();
      const b = fs.readFileSync(path.join(f.root, objPath(f.stream.id)));
      const streamStart = Number(b.readBigUInt64LE(64));
      const streamEnd = Number(b.readBigUInt64LE(72));
      assert.equal(streamEnd, b.length, "the stream section is last in the file");
      const cut = b.subarray(0, streamEnd - 4);
      assert.ok(cut.length > streamStart);
      await publishRaw(f.root, "bad", cut);
      await expectDamage(f.root, { "streams/bad": /stream range .* lies outside the \d+-byte file/ });
    });

    test("a splitstream whose (consistent) header describes a truncated zstd stream section", async () => {
      const f = await fixture();
      const b = Buffer.from(fs.readFileSync(path.join(f.root, objPath(f.stream.id))));
      const cut = Buffer.from(b.subarray(0, b.length - 4));
      cut.writeBigUInt64LE(BigInt(cut.length), 72);
      await publishRaw(f.root, "bad", cut);
      await expectDamage(f.root, { "streams/bad": /stream section: .*truncated/ });
    });

    test("a ref pointing outside the repository", async () => {
      const f = await fixture();
      rawLink(f.root, "streams/refs/evil", "../../../etc");
      await expectDamage(f.root, { "streams/refs/evil": /points outside the repository/ });
    });

    test("an absolute ref symlink", async () => {
      const f = await fixture();
      rawLink(f.root, "streams/refs/abs", "/etc/passwd");
      await expectDamage(f.root, { "streams/refs/abs": /absolute symlink/ });
    });

    test("a symlink loop between two refs", async () => {
      const f = await fixture();
      rawLink(f.root, "streams/refs/loop-a", "loop-b");
      rawLink(f.root, "streams/refs/loop-b", "loop-a");
      await expectDamage(
        f.root,
        {
          "streams/refs/loop-a": /symlink loop/,
          "streams/refs/loop-b": /symlink loop/,
        },
        { json: true },
      );
    });

    test("junk (a name that is not a digest) in objects/ab/", async () => {
      const f = await fixture();
      fs.mkdirSync(path.join(f.root, "objects/ab"), { recursive: true });
      fs.writeFileSync(path.join(f.root, "objects/ab/not-a-digest"), "junk");
      await expectDamage(f.root, { "objects/ab/not-a-digest": /not an object/ });
    });
  });

  test("a leftover objects/.tmp-object-* is a note, not damage", async () => {
    const f = await fixture();
    fs.writeFileSync(path.join(f.root, "objects/.tmp-object-q1w2e3r4t5y6"), Buffer.alloc(1000, 7));
    const before = snapshotTree(f.root);
    const report = await runFsck(f.root);
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.deepEqual(
      report.notes.map((n) => n.item),
      ["objects/.tmp-object-q1w2e3r4t5y6"],
    );
    assert.equal(report.objects.checked, 5, "the temporary file is not counted as an object");
    const cli = stratum(["--repo", f.root, "fsck"]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout.toString(), /^note: objects\/\.tmp-object-q1w2e3r4t5y6: temporary file/m);
    assert.match(cli.stdout.toString(), /no problems\n$/);
    assert.deepEqual(snapshotTree(f.root), before, "fsck removed or changed the temporary file");
  });
});
