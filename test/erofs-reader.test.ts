// EROFS reader (src/format/erofs/reader.ts): for every conformance vector, dump → image → tree → dump matches
// (modulo the documented normalisations) and image → tree → image is byte-identical; composefs conventions are
// undone as composefs-info does; imageObjects; corrupt images (truncated, bad magic, nid and name offsets out of
// range, directory loops, random damage) give E_CORRUPT, never a crash or a hang.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, test } from "node:test";
import * as zlib from "node:zlib";
import { StratumError } from "../src/errors.ts";
import { parseDumpfile, writeDumpfile } from "../src/format/dumpfile.ts";
import * as F from "../src/format/erofs/format.ts";
import { imageObjects, readErofs } from "../src/format/erofs/reader.ts";
import { writeErofs } from "../src/format/erofs/writer.ts";
import { Directory, FileSystem, Leaf, isDirectory } from "../src/tree/tree.ts";
import { CONFORMANCE_DIR } from "./helpers/conformance.ts";

interface ImageVector {
  input: string;
  version: 0 | 1 | null;
  strict: boolean;
  image_sha256: string;
}

const vectors = JSON.parse(fs.readFileSync(path.join(CONFORMANCE_DIR, "vectors.json"), "utf8")) as {
  images: ImageVector[];
};

function readVector(name: string): Buffer {
  const raw = fs.readFileSync(path.join(CONFORMANCE_DIR, name));
  return name.endsWith(".gz") ? zlib.gunzipSync(raw) : raw;
}

function versionOpts(v: 0 | 1 | null): { minVersion?: 0 | 1; maxVersion?: 0 | 1 } {
  return v === null ? {} : { minVersion: v, maxVersion: v };
}

/** The composefs format version recorded in an image's header. */
function headerVersion(image: Buffer): 0 | 1 {
  return image.readUInt32LE(F.HDR.composefsVersion) === 1 ? 1 : 0;
}

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/**
 * What reading an image gives back besides the input tree: directories' SIZE is the EROFS i_size (we compare with
 * it cleared), and in v1 images every directory holding a whiteout carries the `opaque=x` markers (kept by
 * composefs-info, re-added identically by the writer).
 */
function normaliseRead(tree: FileSystem): void {
  for (const { inode } of tree.walk()) if (isDirectory(inode)) inode.imageSize = undefined;
}

function addV1Markers(tree: FileSystem): void {
  for (const { inode } of tree.walk()) {
    if (!isDirectory(inode)) continue;
    if ([...inode.entries.values()].some((c) => !isDirectory(c) && c.isWhiteout)) {
      inode.stat.xattrs.set("trusted.overlay.opaque", Buffer.from("x"));
      inode.stat.xattrs.set("user.overlay.opaque", Buffer.from("x"));
    }
  }
}

/** Sorted unique payloads of the external files of a parsed tree (what imageObjects must report). */
function expectedObjects(tree: FileSystem): string[] {
  const set = new Set<string>();
  for (const { inode } of tree.walk()) {
    if (isDirectory(inode) || inode.content.type !== "reg") continue;
    const c = inode.content;
    if (c.size > 0 && !c.inline && c.payload !== undefined && c.payload !== "") set.add(c.payload);
  }
  return [...set].sort();
}

/** `alsoObjects`: imageObjects must fail too (it skips what it does not need, e.g. directories' xattrs). */
function expectCorrupt(image: Buffer, re: RegExp = /./, alsoObjects = true): void {
  const label = "test.cfs";
  for (const fn of alsoObjects ? [readErofs, imageObjects] : [readErofs]) {
    let caught: unknown;
    try {
      fn(image, label);
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof StratumError, `expected a StratumError, got ${String(caught)}`);
    assert.equal(caught.code, "E_CORRUPT");
    assert.ok(caught.message.startsWith(`${label}: `), caught.message);
    assert.match(caught.message, re);
  }
}

// ---- helpers to find structures inside an image (for the corruption tests) ---------------------------------

interface InodeInfo {
  off: number;
  size: number;
  u: number;
  layout: number;
  isz: number;
  xsz: number;
}

function inodeAt(image: Buffer, nid: number): InodeInfo {
  const off = nid * F.SLOT_SIZE;
  const format = image.readUInt16LE(off);
  const extended = (format & 1) === 1;
  const icount = image.readUInt16LE(off + 2);
  return {
    off,
    layout: (format >> 1) & 7,
    isz: extended ? 64 : 32,
    xsz: icount === 0 ? 0 : 12 + (icount - 1) * 4,
    size: extended ? Number(image.readBigUInt64LE(off + F.IE.size)) : image.readUInt32LE(off + F.IC.size),
    u: image.readUInt32LE(off + (extended ? F.IE.u : F.IC.u)),
  };
}

interface DirentInfo {
  name: string;
  nid: number;
  /** Absolute offset of the 12-byte dirent. */
  off: number;
  /** Absolute offset and length of the chunk holding it. */
  chunk: number;
  chunkLen: number;
}

function direntsOf(image: Buffer, nid: number): DirentInfo[] {
  const ino = inodeAt(image, nid);
  const chunks: [number, number][] = [];
  const tail = ino.layout === F.LAYOUT_FLAT_INLINE ? ino.size % F.BLOCK_SIZE : 0;
  for (let o = 0; o < ino.size - tail; o += F.BLOCK_SIZE)
    chunks.push([ino.u * F.BLOCK_SIZE + o, Math.min(F.BLOCK_SIZE, ino.size - tail - o)]);
  if (tail) chunks.push([ino.off + ino.isz + ino.xsz, tail]);
  const out: DirentInfo[] = [];
  for (const [chunk, chunkLen] of chunks) {
    const n = image.readUInt16LE(chunk + 8) / F.DIRENT_SIZE;
    for (let i = 0; i < n; i++) {
      const d = chunk + i * F.DIRENT_SIZE;
      const nameoff = image.readUInt16LE(d + 8);
      let end = i + 1 < n ? image.readUInt16LE(d + F.DIRENT_SIZE + 8) : chunkLen;
      if (i + 1 === n) {
        const nul = image.subarray(chunk, chunk + chunkLen).indexOf(0, nameoff);
        if (nul >= 0) end = nul;
      }
      out.push({
        name: image.toString("latin1", chunk + nameoff, chunk + end),
        nid: Number(image.readBigUInt64LE(d)),
        off: d,
        chunk,
        chunkLen,
      });
    }
  }
  return out;
}

function rootNid(image: Buffer): number {
  return image.readUInt16LE(F.SUPER_OFFSET + F.SB.rootNid);
}

function dirent(image: Buffer, dirNid: number, name: string): DirentInfo {
  const d = direntsOf(image, dirNid).find((e) => e.name === name);
  assert.ok(d, `no dirent ${name}`);
  return d;
}

/** A small image: /a (dir) holding /a/b (dir) and /a/f (external file), /l (symlink), /x (inline file). */
function smallImage(): Buffer {
  const text =
    "/ 0 40755 2 0 0 0 10.0 - - - user.root=1\n" +
    "/a 0 40755 2 0 0 0 10.0 - - - user.shared=s\n" +
    "/a/b 0 40755 2 0 0 0 10.0 - - - user.shared=s\n" +
    "/a/f 100 100644 1 0 0 0 10.0 ab/cdef - - user.x=y\n" +
    "/l 3 120777 1 0 0 0 11.0 a/f - -\n" +
    "/x 5 100644 1 0 0 0 10.0 - hello -\n";
  return writeErofs(parseDumpfile(Buffer.from(text), { strict: true }));
}

// ---- tests -------------------------------------------------------------------------------------------------

describe("conformance vectors through the writer and back", () => {
  for (const v of vectors.images) {
    test(`${v.input} (version ${v.version}): image → tree → image is identical; dumps agree`, () => {
      const parsed = parseDumpfile(readVector(v.input), { strict: v.strict });
      const image = writeErofs(parsed, versionOpts(v.version));
      assert.equal(sha256(image), v.image_sha256, "the writer reproduces the upstream image");

      const back = readErofs(image, v.input);
      const version = headerVersion(image);
      const again = writeErofs(back, { minVersion: version, maxVersion: version });
      assert.ok(again.equals(image), "writeErofs(readErofs(image)) is byte-identical");

      normaliseRead(back);
      if (version === 1) addV1Markers(parsed);
      assert.equal(writeDumpfile(back).toString("latin1"), writeDumpfile(parsed).toString("latin1"));

      assert.deepEqual(imageObjects(image, v.input), expectedObjects(parsed));
    });
  }

  test("directory SIZE is the EROFS i_size; the root's stubs and opaque marker are gone", () => {
    const image = writeErofs(parseDumpfile(readVector("special.dump"), { strict: true }), versionOpts(0));
    const t = readErofs(image, "special");
    assert.equal(t.root.imageSize, 4096); // 256 stubs + 9 entries: one full block
    assert.equal(t.root.entries.size, 9);
    assert.equal(t.root.stat.xattrs.has("trusted.overlay.opaque"), false);
    assert.deepEqual([...t.root.stat.xattrs.keys()].sort(), ["trusted.foo1", "user.foo2"]);
    assert.ok((t.lookup("/whiteout") as Leaf).isWhiteout);
    assert.deepEqual((t.lookup("/whiteout") as Leaf).stat.xattrs.get("trusted.foo"), Buffer.from("bar-2"));
    const esc = t.lookup("/escaped-xattr") as Leaf;
    assert.deepEqual(esc.stat.xattrs.get("trusted.overlay.redirect"), Buffer.from("/foo\n"));
    assert.deepEqual(esc.stat.xattrs.get("user.overlay.redirect"), Buffer.from("/foo\n"));
    assert.deepEqual((esc.content as { payload?: string }).payload, undefined);
    const large3 = t.lookup("/inline-large3") as Leaf;
    assert.equal(large3.stat.mtimeSec, 1665486376); // extended inode
    assert.equal(large3.content.type === "reg" && large3.content.inline?.length, 4097);
  });

  test("config-with-hard-link: one Leaf under both names, primary = first DFS path, nlink from the inode", () => {
    const image = writeErofs(parseDumpfile(readVector("config-with-hard-link.dump.gz"), { strict: true }));
    const t = readErofs(image, "config");
    const ls = t.lookup("/usr/bin/ls") as Leaf;
    assert.equal(t.lookup("/usr/bin/ls-hardlink"), ls);
    assert.equal(ls.nlink, 2);
    assert.deepEqual(ls.primary, { parent: t.lookup("/usr/bin"), name: "ls" });
    assert.equal(ls.content.type === "reg" && ls.content.payload?.length, 2 + 1 + 62);
  });

  test("cs9 developer (64k entries) reads in well under a second; imageObjects is no slower", () => {
    const image = writeErofs(parseDumpfile(readVector("cs9-x86_64-developer.dump.gz"), { strict: true }));
    let read = Infinity;
    let objects = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      readErofs(image, "cs9");
      const t1 = performance.now();
      imageObjects(image, "cs9");
      const t2 = performance.now();
      read = Math.min(read, t1 - t0);
      objects = Math.min(objects, t2 - t1);
    }
    // Generous bounds (shared CI machines); a quadratic reader would take minutes.
    assert.ok(read < 1500, `readErofs took ${read.toFixed(0)} ms`);
    assert.ok(objects < 1500, `imageObjects took ${objects.toFixed(0)} ms`);
  });

  test("the entries agree with dump.erofs (erofs-utils) where it is installed", (t) => {
    let haveDump = true;
    try {
      execFileSync("dump.erofs", ["-V"], { stdio: "ignore" });
    } catch {
      haveDump = false;
    }
    if (!haveDump) {
      t.skip("dump.erofs is not installed");
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "erofs-reader-"));
    try {
      const file = path.join(dir, "special.cfs");
      const image = writeErofs(parseDumpfile(readVector("special.dump"), { strict: true }), versionOpts(1));
      fs.writeFileSync(file, image);
      const tree = readErofs(image, "special");
      for (const { path: p, inode } of tree.walk()) {
        const out = execFileSync("dump.erofs", [`--path=${p}`, file], { encoding: "latin1" });
        const num = (re: RegExp): number => Number((re.exec(out) ?? ["", "NaN"])[1]);
        const size = isDirectory(inode)
          ? inode.imageSize
          : inode.content.type === "reg"
            ? inode.content.size
            : inode.content.type === "symlink"
              ? inode.content.target.length
              : 0;
        const nlink = isDirectory(inode)
          ? 2 + [...inode.entries.values()].filter(isDirectory).length
          : inode.nlink;
        assert.equal(num(/Size: (\d+)/), size, `${p} size`);
        assert.equal(num(/Links: (\d+)/), nlink, `${p} nlink`);
        assert.equal(num(/Uid: (\d+)/), inode.stat.uid, `${p} uid`);
        assert.equal(parseInt((/Access: (\d+)/.exec(out) ?? ["", ""])[1], 8), inode.stat.mode, `${p} mode`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("composefs conventions", () => {
  // The first seven lines of the composefs-erofs.md §2.4 example (§1.15 worked example).
  const example =
    "/ 4096 40755 2 0 0 0 1700000000.0 - - -\n" +
    "/dir 0 40755 2 1000 1000 0 1700000000.0 - - - user.note=hi\n" +
    "/dir/file 22 100644 2 1000 1000 0 1700000000.0 aa/bbbbbbbb - -\n" +
    "/dir/hard 22 @100644 2 1000 1000 0 1700000000.0 /dir/file - -\n" +
    "/dir/gone 0 20000 1 0 0 0 1700000000.0 - - -\n" +
    "/dir/inline 3 100600 1 0 0 0 1700000001.5 - hi\\n -\n" +
    "/sym 8 120777 1 0 0 0 1700000000.0 dir/file - -\n";

  test("redirect → payload without C's off-by-one (a 12-byte redirect), whiteout back to chardev 0:0", () => {
    const image = writeErofs(parseDumpfile(Buffer.from(example), { strict: true }));
    assert.equal(image.length, 16384);
    const t = readErofs(image, "example");
    const file = t.lookup("/dir/file") as Leaf;
    assert.deepEqual(file.content, { type: "reg", size: 22, payload: "aa/bbbbbbbb" });
    assert.equal(t.lookup("/dir/hard"), file);
    assert.deepEqual(file.primary, { parent: t.lookup("/dir"), name: "file" });
    const gone = t.lookup("/dir/gone") as Leaf;
    assert.ok(gone.isWhiteout);
    assert.equal(gone.stat.mode, 0);
    assert.equal(gone.stat.xattrs.size, 0);
    // v1 (chosen automatically for a whiteout): the parent keeps the opaque=x markers, not the whiteouts ones.
    const dir = t.lookup("/dir") as Directory;
    assert.deepEqual([...dir.stat.xattrs.keys()].sort(), [
      "trusted.overlay.opaque",
      "user.note",
      "user.overlay.opaque",
    ]);
    const inline = t.lookup("/dir/inline") as Leaf;
    assert.deepEqual(inline.content, { type: "reg", size: 3, inline: Buffer.from("hi\n") });
    assert.equal(inline.stat.mtimeNsec, 5);
    assert.deepEqual((t.lookup("/sym") as Leaf).content, { type: "symlink", target: "dir/file" });
    assert.deepEqual(imageObjects(image, "example"), ["aa/bbbbbbbb"]);
  });

  test("metacopy digest, payloads starting with /, shared redirects, and a user chardev 0:0 at the root", () => {
    const digest = "5c".repeat(32);
    const text =
      "/ 0 40755 2 0 0 0 0.0 - - -\n" +
      `/a 10 100644 1 0 0 0 0.0 ab/same - ${digest}\n` +
      `/b 10 100644 1 0 0 0 0.0 ab/same - ${digest}\n` +
      "/c 10 100644 1 0 0 0 0.0 /abs/path - -\n" +
      "/d 10 100644 1 0 0 0 0.0 - - -\n" +
      "/ab 0 20644 1 0 0 0 0.0 - - -\n";
    const parsed = parseDumpfile(Buffer.from(text), { strict: true });
    const image = writeErofs(parsed);
    const t = readErofs(image, "t");
    assert.deepEqual((t.lookup("/a") as Leaf).content, { type: "reg", size: 10, payload: "ab/same", digest });
    assert.deepEqual((t.lookup("/b") as Leaf).content, { type: "reg", size: 10, payload: "ab/same", digest });
    assert.notEqual(t.lookup("/a"), t.lookup("/b"));
    assert.deepEqual((t.lookup("/c") as Leaf).content, { type: "reg", size: 10, payload: "/abs/path" });
    assert.deepEqual((t.lookup("/d") as Leaf).content, { type: "reg", size: 10 });
    // The user's whiteout named like a stub survives; the real stubs do not.
    assert.ok((t.lookup("/ab") as Leaf).isWhiteout);
    assert.deepEqual([...t.root.entries.keys()].sort(), ["a", "ab", "b", "c", "d"]);
    assert.deepEqual(imageObjects(image, "t"), ["/abs/path", "ab/same"]);
    assert.ok(writeErofs(t).equals(image));
  });
});

describe("corrupt images", () => {
  test("truncated images", () => {
    const image = smallImage();
    for (const n of [0, 1, 31, 1024, 1100, 1151, 4095, 4096, 8191, image.length - 4096, image.length - 1])
      expectCorrupt(image.subarray(0, n), /too small|truncated|out of range/);
    readErofs(image, "ok");
  });

  test("bad magic numbers, versions and unsupported features", () => {
    const mutate = (off: number, bytes: number[]): Buffer => {
      const b = Buffer.from(smallImage());
      bytes.forEach((v, i) => (b[off + i] = v));
      return b;
    };
    expectCorrupt(mutate(0, [0, 0, 0, 0]), /not a composefs image/);
    expectCorrupt(mutate(F.HDR.version, [2]), /composefs header version 2/);
    expectCorrupt(mutate(F.HDR.composefsVersion, [7]), /composefs format version 7/);
    expectCorrupt(mutate(F.SUPER_OFFSET, [0, 0]), /EROFS superblock magic/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.blkszbits, [9]), /block size/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.extslots, [1]), /extension slots/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.featureIncompat, [1]), /incompatible features 0x1/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.metaBlkaddr, [1]), /meta_blkaddr/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.rootNid, [0, 0]), /points into the image header/);
    expectCorrupt(mutate(F.SUPER_OFFSET + F.SB.rootNid, [0xff, 0xff]), /nid out of range/);
  });

  test("a dirent nid out of range", () => {
    const image = smallImage();
    const a = dirent(image, rootNid(image), "a");
    for (const nid of [0xffffffff, 2 ** 40, image.length / 32, 3]) {
      const b = Buffer.from(image);
      b.writeUInt32LE(nid % 2 ** 32, a.off);
      b.writeUInt32LE(Math.floor(nid / 2 ** 32), a.off + 4);
      expectCorrupt(b, /"a" has nid out of range|\(\/a\): .*(out of range|image header)/);
    }
  });

  test("dirent name offsets out of range", () => {
    const image = smallImage();
    const aNid = dirent(image, rootNid(image), "a").nid;
    const entries = direntsOf(image, aNid);
    assert.deepEqual(
      entries.map((e) => e.name),
      [".", "..", "b", "f"],
    );
    const set = (i: number, nameoff: number): Buffer => {
      const b = Buffer.from(image);
      b.writeUInt16LE(nameoff, entries[i].off + 8);
      return b;
    };
    expectCorrupt(set(0, 13), /bad first name offset/);
    expectCorrupt(set(0, 0), /bad first name offset/);
    expectCorrupt(set(0, 0xfff0), /bad first name offset/);
    expectCorrupt(set(3, 0xfff0), /name offset .* out of range/);
    expectCorrupt(set(3, entries[3].chunkLen), /name offset .* out of range/);
    expectCorrupt(set(2, 2), /name offset .* out of range/);
    // A name that breaks the sort order.
    const b = Buffer.from(image);
    b.write("z", entries[2].chunk + b.readUInt16LE(entries[2].off + 8), "latin1");
    expectCorrupt(b, /not in strictly sorted order/);
  });

  test("directory loops and hard-linked directories", () => {
    const image = smallImage();
    const root = rootNid(image);
    const aNid = dirent(image, root, "a").nid;
    const bEntry = dirent(image, aNid, "b");
    for (const target of [aNid, root]) {
      const b = Buffer.from(image);
      b.writeUInt32LE(target, bEntry.off);
      expectCorrupt(b, /\/a\/b: directory inode \d+ is reached twice/);
    }
    // A second name for /a elsewhere is a hard-linked directory.
    const b = Buffer.from(image);
    const xEntry = dirent(b, root, "x");
    b.writeUInt32LE(aNid, xEntry.off);
    expectCorrupt(b, /\/x: directory inode \d+ is reached twice/);
  });

  test("xattr and inline data out of range", () => {
    const image = smallImage();
    const aNid = dirent(image, rootNid(image), "a").nid;
    const a = inodeAt(image, aNid);
    assert.ok(a.xsz > 0);
    // A shared xattr id far past the end.
    const shared = image[a.off + a.isz + 4];
    assert.ok(shared > 0, "user.shared=s is shared by /a and /a/b");
    const b1 = Buffer.from(image);
    b1.writeUInt32LE(0x7fffffff, a.off + a.isz + 12);
    expectCorrupt(b1, /shared xattr .* out of range/, false);
    // A huge xattr_icount.
    const b2 = Buffer.from(image);
    b2.writeUInt16LE(0xffff, a.off + 2);
    expectCorrupt(b2, /out of range|overlapping|shared xattrs do not fit|xattr/);
    // A directory claiming a huge inline size.
    const b3 = Buffer.from(image);
    b3.writeUInt32LE(0xfff, a.off + F.IC.size);
    expectCorrupt(b3, /crosses a block boundary|out of range|name offset/);
    // An unknown xattr name index on /a/f.
    const fNid = dirent(image, aNid, "f").nid;
    const f = inodeAt(image, fNid);
    const b4 = Buffer.from(image);
    const shared4 = image[f.off + f.isz + 4];
    b4[f.off + f.isz + 12 + shared4 * 4 + 1] = 9;
    expectCorrupt(b4, /unknown xattr name index 9/);
  });

  test("random damage never crashes or hangs: the result is a tree or E_CORRUPT", () => {
    const image = smallImage();
    // Deterministic xorshift PRNG.
    let s = 0x9e3779b9;
    const rand = (n: number): number => {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return (s >>> 0) % n;
    };
    const metaEnd = Math.min(image.length, 3 * F.BLOCK_SIZE);
    let accepted = 0;
    const start = performance.now();
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(image);
      const flips = 1 + rand(6);
      for (let k = 0; k < flips; k++) b[F.SUPER_OFFSET + rand(metaEnd - F.SUPER_OFFSET)] = rand(256);
      if (rand(10) === 0) b.writeUInt32LE(rand(2 ** 31), F.SUPER_OFFSET + rand(metaEnd - F.SUPER_OFFSET - 4));
      for (const fn of [readErofs, imageObjects]) {
        try {
          fn(b, "fuzz");
          accepted++;
        } catch (e) {
          if (!(e instanceof StratumError) || e.code !== "E_CORRUPT") throw e;
        }
      }
    }
    assert.ok(accepted > 0);
    assert.ok(performance.now() - start < 30000);
  });

  test("a self-consistent but cyclic image is rejected, not walked forever", () => {
    // Point every directory entry of /a at /a itself.
    const image = Buffer.from(smallImage());
    const aNid = dirent(image, rootNid(image), "a").nid;
    for (const e of direntsOf(image, aNid)) image.writeUInt32LE(aNid, e.off);
    expectCorrupt(image, /reached twice/);
  });
});
