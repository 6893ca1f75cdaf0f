// EROFS writer (src/format/erofs/writer.ts): byte-exact conformance with C mkcomposefs 1.0.8 on the shared
// vectors, xxh32 against published values, fsck.erofs and a kernel mount of every image compared with the
// tree, programmatic trees for the layout corner cases, and non-mutation of the input.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { parseDumpfile } from "../src/format/dumpfile.ts";
import { layoutErofs, emitErofs, writeErofs, type ErofsOptions } from "../src/format/erofs/writer.ts";
import { xxh32, xxh32ByteString } from "../src/format/erofs/xxhash32.ts";
import { fsverityDigest } from "../src/format/fsverity.ts";
import { getXattr, listXattrs } from "../src/sys/native.ts";
import {
  Directory,
  FileSystem,
  Leaf,
  bytes,
  newStat,
  type ByteString,
  type Inode,
  type LeafContent,
  type Stat,
} from "../src/tree/tree.ts";
import { CONFORMANCE_DIR } from "./helpers/conformance.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

interface ImageVector {
  input: string;
  version: 0 | 1 | null;
  strict: boolean;
  image_sha256: string;
  image_fsverity_sha256: string;
  image_bytes: number;
}

const VECTORS = (
  JSON.parse(fs.readFileSync(path.join(CONFORMANCE_DIR, "vectors.json"), "utf8")) as { images: ImageVector[] }
).images;

function vectorOptions(v: ImageVector): ErofsOptions {
  return v.version === null ? {} : { minVersion: v.version, maxVersion: v.version };
}

const parsedCache = new Map<string, FileSystem>();
function loadVector(v: ImageVector): FileSystem {
  const key = `${v.input}:${v.strict}`;
  let tree = parsedCache.get(key);
  if (!tree) {
    let raw = fs.readFileSync(path.join(CONFORMANCE_DIR, v.input));
    if (v.input.endsWith(".gz")) raw = zlib.gunzipSync(raw);
    tree = parseDumpfile(raw, { strict: v.strict });
    parsedCache.set(key, tree);
  }
  return tree;
}

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

// ---- xxh32 ------------------------------------------------------------------------------------------------

test("xxh32: published test values", () => {
  // "", "a", "abc" at seed 0: cross-checked with the lz4 CLI, whose frame content checksum is XXH32(data, 0).
  assert.equal(xxh32(Buffer.alloc(0), 0), 0x02cc5d05);
  assert.equal(xxh32(Buffer.from("a"), 0), 0x550d7456);
  assert.equal(xxh32(Buffer.from("abc"), 0), 0x32d153ff);
  assert.equal(xxh32ByteString("abc"), 0x32d153ff);
  assert.equal(xxh32ByteString("xxabc", 0, 2), 0x32d153ff);
  // xxHash's own sanity vectors (cli/xsum_sanity_check.c): a buffer generated from PRIME32/PRIME64.
  const PRIME32 = 2654435761;
  const sanity = Buffer.alloc(222);
  let gen = BigInt(PRIME32);
  for (let i = 0; i < sanity.length; i++) {
    sanity[i] = Number(gen >> 56n);
    gen = (gen * 11400714785074694797n) & 0xffffffffffffffffn;
  }
  const vectors: [number, number, number][] = [
    [0, 0, 0x02cc5d05],
    [0, PRIME32, 0x36b78ae7],
    [1, 0, 0xcf65b03e],
    [1, PRIME32, 0xb4545aa4],
    [14, 0, 0x1208e7e2],
    [14, PRIME32, 0x6af1d1fe],
    [222, 0, 0x5bd11dbd],
    [222, PRIME32, 0x58803c5f],
  ];
  for (const [len, seed, want] of vectors) {
    assert.equal(xxh32(sanity.subarray(0, len), seed), want, `len ${len} seed ${seed}`);
    assert.equal(xxh32ByteString(sanity.subarray(0, len).toString("latin1"), seed), want);
  }
});

test("xxh32: agrees with the lz4 CLI frame checksum on every length 0..80", (t) => {
  if (spawnSync("lz4", ["--version"]).status !== 0) return t.skip("lz4 CLI not installed");
  for (let len = 0; len <= 80; len++) {
    const data = Buffer.alloc(len);
    for (let i = 0; i < len; i++) data[i] = (i * 131 + len * 7) & 0xff;
    const r = spawnSync("lz4", ["-c", "-q"], { input: data });
    assert.equal(r.status, 0);
    assert.equal(xxh32(data, 0), r.stdout.readUInt32LE(r.stdout.length - 4), `length ${len}`);
  }
});

// ---- byte-exact vectors -----------------------------------------------------------------------------------

for (const v of VECTORS) {
  test(`vector ${v.input} (version ${v.version ?? "default"}) is byte-identical to mkcomposefs`, () => {
    const img = writeErofs(loadVector(v), vectorOptions(v));
    assert.equal(img.length, v.image_bytes);
    assert.equal(sha256(img), v.image_sha256);
    assert.equal(fsverityDigest(img).toString("hex"), v.image_fsverity_sha256);
  });
}

test("layoutErofs + emitErofs into a caller buffer equals writeErofs", () => {
  const v = VECTORS.find((x) => x.input === "config-with-hard-link.dump.gz") as ImageVector;
  const plan = layoutErofs(loadVector(v), vectorOptions(v));
  assert.equal(plan.totalSize, v.image_bytes);
  assert.equal(plan.totalSize % 4096, 0);
  assert.equal(plan.rootNid, 36);
  const out = Buffer.alloc(plan.totalSize + 4096, 0xa5);
  out.fill(0, plan.totalSize);
  assert.equal(emitErofs(plan, out), out);
  assert.equal(sha256(out.subarray(0, plan.totalSize)), v.image_sha256);
  assert.ok(
    out.subarray(plan.totalSize).every((b) => b === 0),
    "nothing written past totalSize",
  );
  assert.throws(() => emitErofs(plan, Buffer.alloc(plan.totalSize - 1)), RangeError);
});

test("the worked example of the reference (§1.15) is laid out as documented", () => {
  const dump = [
    "/ 4096 40755 2 0 0 0 1700000000.0 - - -",
    "/dir 0 40755 2 1000 1000 0 1700000000.0 - - - user.note=hi",
    "/dir/file 22 100644 2 1000 1000 0 1700000000.0 aa/bbbbbbbb - -",
    "/dir/hard 22 @100644 2 1000 1000 0 1700000000.0 /dir/file - -",
    "/dir/gone 0 20000 1 0 0 0 1700000000.0 - - -",
    "/dir/inline 3 100600 1 0 0 0 1700000001.5 - hi\\n -",
    "/sym 8 120777 1 0 0 0 1700000000.0 dir/file - -",
    "",
  ].join("\n");
  const img = writeErofs(parseDumpfile(Buffer.from(dump), { strict: true }));
  assert.equal(img.length, 16384);
  assert.equal(img.readUInt32LE(12), 1, "version 1 (whiteout)");
  assert.equal(img.readUInt16LE(1024 + 14), 36, "root nid");
  assert.equal(Number(img.readBigUInt64LE(1024 + 16)), 262, "inos");
  assert.equal(Number(img.readBigUInt64LE(1024 + 24)), 1700000000, "build_time");
  assert.equal(img.readUInt32LE(1024 + 36), 4, "blocks");
  assert.equal(img.readUInt32LE(1024 + 44), 2, "xattr_blkaddr");
  // offset → [i_format, i_xattr_icount, i_mode, i_size] (xattr body bytes b → icount (b − 12)/4 + 1)
  const table: [number, number, number, number, number][] = [
    [1152, 0x0000, 6, 0o040755, 4096], // root: 1 dirent block, opaque=y
    [8384, 0x0004, 30, 0o040755, 93], // /dir: 5 inline xattrs (128 B), 93-byte dirent tail
    [9664, 0x0004, 0, 0o120777, 8], // /sym
    [9728, 0x0008, 14, 0o100644, 22], // /dir/file: metacopy + redirect, one chunk
    [9856, 0x0000, 13, 0o100000, 0], // /dir/gone: escaped whiteout
    [9952, 0x0005, 0, 0o100600, 3], // /dir/inline: extended (mtime ≠ min)
  ];
  for (const [off, format, icount, mode, size] of table) {
    const got = [
      img.readUInt16LE(off),
      img.readUInt16LE(off + 2),
      img.readUInt16LE(off + 4),
      img.readUInt32LE(off + 8),
    ];
    assert.deepStrictEqual(got, [format, icount, mode, size], `inode at ${off}`);
  }
});

// ---- non-mutation -----------------------------------------------------------------------------------------

/** A plain, order-preserving snapshot of everything a tree holds (leaf identity by first path). */
function snapshot(fsys: FileSystem): unknown {
  const leafIds = new Map<Leaf, number>();
  const dirPaths = new Map<Directory, string>();
  const statSnap = (s: Stat): unknown => ({
    ...s,
    xattrs: [...s.xattrs].map(([k, val]) => [k, val.toString("hex")]),
  });
  const node = (inode: Inode, p: string): unknown => {
    if (inode instanceof Directory) {
      dirPaths.set(inode, p);
      return {
        dir: statSnap(inode.stat),
        entries: [...inode.entries].map(([name, child]) => [name, node(child, `${p}/${name}`)]),
      };
    }
    let id = leafIds.get(inode);
    if (id !== undefined) return { link: id };
    id = leafIds.size;
    leafIds.set(inode, id);
    const c = inode.content;
    return {
      id,
      stat: statSnap(inode.stat),
      nlink: inode.nlink,
      content: c.type === "reg" && c.inline ? { ...c, inline: c.inline.toString("hex") } : { ...c },
      primary: inode.primary ? { parent: inode.primary.parent, name: inode.primary.name } : null,
    };
  };
  const tree = node(fsys.root, "");
  // Primary parents by path (resolved after the walk).
  const fix = (x: unknown): unknown =>
    JSON.parse(
      JSON.stringify(x, (_k, val: unknown) => (val instanceof Directory ? `dir:${dirPaths.get(val)}` : val)),
    );
  return fix(tree);
}

test("the writer does not mutate its input", () => {
  for (const name of [
    "special.dump",
    "config-with-hard-link.dump.gz",
    "honggfuzz-chardev-nonzero-size.dump",
  ]) {
    const v = VECTORS.find((x) => x.input === name) as ImageVector;
    const tree = loadVector(v);
    const before = snapshot(tree);
    writeErofs(tree, { minVersion: 0, maxVersion: 1 });
    writeErofs(tree, { minVersion: 1, maxVersion: 1 });
    assert.deepStrictEqual(snapshot(tree), before, name);
  }
  const { fsys } = cornerCaseTree();
  const before = snapshot(fsys);
  writeErofs(fsys);
  writeErofs(fsys, { maxVersion: 0 });
  assert.deepStrictEqual(snapshot(fsys), before);
});

// ---- programmatic trees -----------------------------------------------------------------------------------

const T0 = 1_700_000_000;

function leaf(content: LeafContent, stat: Partial<Stat> = {}, nlink = 1): Leaf {
  const l = new Leaf(newStat({ mode: 0o644, mtimeSec: T0, ...stat }), content);
  l.nlink = nlink;
  return l;
}

function dir(stat: Partial<Stat> = {}): Directory {
  return new Directory(newStat({ mode: 0o755, mtimeSec: T0, ...stat }));
}

function xattrs(obj: Record<string, string | Buffer>): Map<ByteString, Buffer> {
  return new Map(
    Object.entries(obj).map(([k, v]) => [k, typeof v === "string" ? Buffer.from(v, "latin1") : v]),
  );
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

/** One tree exercising every layout corner case listed in docs/erofs.md. */
function cornerCaseTree(): { fsys: FileSystem; hinted: Leaf; unhinted: Leaf } {
  const root = dir({
    xattrs: xattrs({ "security.selinux": "system_u:object_r:root_t:s0\0", "user.root": "r" }),
  });
  const fsys = new FileSystem(root);

  // > 2048-byte last dirent chunk (becomes a block), and a directory with two full blocks and an inline tail.
  const big = dir();
  root.entries.set("bigdir", big);
  for (let i = 0; i < 100; i++)
    big.entries.set(`entry-${String(i).padStart(14, "0")}`, leaf({ type: "fifo" }));
  const huge = dir({ mode: 0o700 });
  root.entries.set("hugedir", huge);
  for (let i = 0; i < 300; i++)
    huge.entries.set(`n${String(i).padStart(4, "0")}-${"x".repeat(i % 23)}`, leaf({ type: "sock" }));

  // Many shared xattrs: two files with the same 140 pairs (> 128 shared on one inode), plus unique ones.
  const many: Record<string, string> = {};
  for (let i = 0; i < 140; i++) many[`user.shared${String(i).padStart(3, "0")}`] = `value-${i}`;
  const xd = dir();
  root.entries.set("xattrs", xd);
  xd.entries.set("a", leaf({ type: "reg", size: 0 }, { xattrs: xattrs({ ...many, "user.only-a": "1" }) }));
  xd.entries.set("b", leaf({ type: "reg", size: 0 }, { xattrs: xattrs({ ...many, "trusted.only-b": "" }) }));
  xd.entries.set(
    "overlay",
    leaf(
      { type: "reg", size: 3, inline: Buffer.from("abc") },
      {
        xattrs: xattrs({
          "trusted.overlay.redirect": "/user/value",
          "trusted.overlay.overlay.x": "nested",
          "user.overlay.redirect": "kept",
          "security.ima": Buffer.from([0, 1, 2, 255]),
        }),
      },
    ),
  );

  // Extended inodes: big uid/gid, mtime ≠ min (with nanoseconds), large nlink.
  const ext = dir({ uid: 70000, gid: 80000 });
  root.entries.set("extended", ext);
  ext.entries.set(
    "later",
    leaf({ type: "reg", size: 5, inline: Buffer.from("later") }, { mtimeSec: T0 + 1, mtimeNsec: 123456789 }),
  );
  ext.entries.set("nsec", leaf({ type: "symlink", target: "later" }, { mtimeNsec: 1 }));
  ext.entries.set("links", leaf({ type: "fifo" }, { uid: 65536 }, 70000));
  ext.entries.set("gid", leaf({ type: "blk", rdev: (8 << 8) | 1 }, { gid: 65535 }));
  ext.entries.set("chr", leaf({ type: "chr", rdev: (1 << 8) | 3 }, { mode: 0o666 }));
  ext.entries.set("old", leaf({ type: "reg", size: 0 }, { mtimeSec: T0 - 86400, mtimeNsec: 999999999 }));

  // Symlinks: inline near a block boundary, and one large enough to spill to a data block.
  const links = dir();
  root.entries.set("links", links);
  links.entries.set("spill", leaf({ type: "symlink", target: "s/".repeat(2045) }, { mode: 0o777 }));
  links.entries.set("long", leaf({ type: "symlink", target: "l".repeat(4000) }, { mode: 0o777 }));
  links.entries.set("mid", leaf({ type: "symlink", target: "m".repeat(1500) }, { mode: 0o777 }));
  links.entries.set(
    "x-spill-xattr",
    leaf({ type: "symlink", target: "t".repeat(4060) }, { xattrs: xattrs({ "user.a": "b" }) }),
  );

  // Inline files around the tail thresholds (2048 tail / block + no tail / block + tail).
  const inl = dir();
  root.entries.set("inline", inl);
  for (const n of [1, 100, 2048, 2049, 3000, 4095, 4096, 4097, 5000]) {
    inl.entries.set(`f${n}`, leaf({ type: "reg", size: n, inline: pattern(n, n) }, { mode: 0o600 }));
  }

  // External files: digest + payload, no digest, a payload starting with '/'.
  const extf = dir();
  root.entries.set("external", extf);
  const digest = "35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408";
  extf.entries.set("digest", leaf({ type: "reg", size: 1234, digest, payload: `35/${digest.slice(2)}` }));
  extf.entries.set("nodigest", leaf({ type: "reg", size: 1, payload: "aa/bbbb" }));
  extf.entries.set("slash", leaf({ type: "reg", size: 5 * 1024 * 1024 * 1024, payload: "/abs/path" }));
  extf.entries.set("none", leaf({ type: "reg", size: 7 }));

  // Hard links: without a hint the inode sits at the DFS-first entry; with one, at the hinted (deeper) entry.
  const unhinted = leaf({ type: "reg", size: 4, inline: Buffer.from("link") }, {}, 2);
  const h1 = dir();
  const h2 = dir();
  root.entries.set("h1", h1);
  root.entries.set("h2", h2);
  // /h1/sub/first is the DFS-first occurrence but deeper than /h2/second (the BFS-first one).
  const sub = dir();
  h1.entries.set("sub", sub);
  h2.entries.set("second", unhinted);
  sub.entries.set("first", unhinted);
  const hinted = leaf({ type: "reg", size: 4, inline: Buffer.from("hint") }, { mode: 0o640 }, 3);
  const deep = dir();
  const deeper = dir();
  root.entries.set("z-deep", deep);
  deep.entries.set("deeper", deeper);
  deeper.entries.set("primary", hinted);
  root.entries.set("a-top", hinted);
  h1.entries.set("alias", hinted);
  hinted.primary = { parent: deeper, name: "primary" };

  // A whiteout (written as an escaped regular file; its directory gets the markers), and odd names.
  const wd = dir({ xattrs: xattrs({ "trusted.overlay.whiteouts": "user-set", "user.keep": "k" }) });
  root.entries.set("wh", wd);
  wd.entries.set("gone", leaf({ type: "chr", rdev: 0 }, { mode: 0o600, xattrs: xattrs({ "user.w": "1" }) }));
  root.entries.set("0a", leaf({ type: "reg", size: 0 }));
  root.entries.set("name with space\n\xff\x80", leaf({ type: "reg", size: 1, inline: Buffer.from("!") }));
  root.entries.set("!bang", leaf({ type: "reg", size: 0 }));
  root.entries.set("-dash", dir({ mode: 0o1777 }));
  return { fsys, hinted, unhinted };
}

test("programmatic trees: sizes, version header and determinism", () => {
  const { fsys } = cornerCaseTree();
  const v1 = writeErofs(fsys);
  const v0 = writeErofs(fsys, { maxVersion: 0 });
  assert.equal(v1.readUInt32LE(12), 1, "a whiteout selects version 1 by default");
  assert.equal(v0.readUInt32LE(12), 0);
  assert.equal(v1.readUInt32LE(0), 0xd078629a);
  assert.equal(v1.readUInt32LE(1024), 0xe0f5e1e2);
  assert.equal(v1.length % 4096, 0);
  assert.equal(v1.readUInt32LE(1024 + 36) * 4096, v1.length, "sb.blocks covers the image");
  assert.equal(v1.readUInt32LE(1024 + 24), T0 - 86400, "build_time is the minimum mtime");
  assert.equal(v1.readUInt32LE(1024 + 32), 999999999, "with its nanoseconds");
  assert.ok(writeErofs(fsys).equals(v1), "deterministic");
  assert.equal(writeErofs(fsys, { minVersion: 1, maxVersion: 0 }).readUInt32LE(12), 1, "max < min means min");
});

test("hard-link primary: hint wins, otherwise the DFS-first entry", () => {
  const { fsys, hinted } = cornerCaseTree();
  const plan = layoutErofs(fsys);
  // Without the hint the inode moves to the BFS position of /a-top (a root child): the image changes.
  hinted.primary = null;
  const plan2 = layoutErofs(fsys);
  assert.equal(plan.inodeCount, plan2.inodeCount);
  assert.ok(!emitErofs(plan).equals(emitErofs(plan2)), "the primary choice changes the image");
});

test("invalid trees are rejected", () => {
  const mk = (f: (root: Directory) => void): FileSystem => {
    const root = dir();
    f(root);
    return new FileSystem(root);
  };
  assert.throws(
    () => writeErofs(mk((r) => r.entries.set("a/b", leaf({ type: "fifo" })))),
    /invalid file name/,
  );
  assert.throws(
    () => writeErofs(mk((r) => r.entries.set("x".repeat(256), leaf({ type: "fifo" })))),
    /invalid/,
  );
  assert.throws(() => writeErofs(mk((r) => r.entries.set("", leaf({ type: "fifo" })))), /invalid/);
  assert.throws(() => writeErofs(mk((r) => r.entries.set("d", r))), /more than once/);
  assert.throws(
    () => writeErofs(mk((r) => r.entries.set("f", leaf({ type: "reg", size: 2 ** 53 + 2 })))),
    /too large/,
  );
  assert.throws(
    () => writeErofs(mk((r) => r.entries.set("f", leaf({ type: "reg", size: 1, digest: "abc" })))),
    /digest/,
  );
  assert.throws(
    () =>
      writeErofs(
        mk((r) =>
          r.entries.set(
            "f",
            leaf({ type: "reg", size: 0 }, { xattrs: xattrs({ "user.v": Buffer.alloc(65536) }) }),
          ),
        ),
      ),
    /too long/,
  );
});

// ---- fsck.erofs and kernel mounts -------------------------------------------------------------------------

const TYPE_OF: Record<LeafContent["type"], number> = {
  reg: 0o100000,
  symlink: 0o120000,
  chr: 0o020000,
  blk: 0o060000,
  fifo: 0o010000,
  sock: 0o140000,
};

const FSCK_SKIP = spawnSync("fsck.erofs", ["-V"]).error ? "fsck.erofs (erofs-utils) not installed" : null;

function canMount(): string | null {
  if (process.getuid?.() !== 0) return "not root: cannot loop-mount";
  if (!fs.readFileSync("/proc/filesystems", "utf8").includes("erofs")) {
    spawnSync("modprobe", ["erofs"]);
    if (!fs.readFileSync("/proc/filesystems", "utf8").includes("erofs")) return "kernel has no erofs";
  }
  return null;
}
const MOUNT_SKIP = canMount();

function run(cmd: string, args: string[]): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/**
 * rite img to a temp dir and run fsck.erofs on it (no root needed); then, when possible, mount it read-only
 * on a oop device and run fn. Always unmounts and cleans up. Marks the test skipped (with the reason) when
 * the mount r fsck cannot run here.
 */
function checkImage(t: TestContext, img: Buffer, fn: (mnt: string) => void): void {
  const tmp = makeTempDir("stratum-erofs-");
  const file = path.join(tmp, "image.erofs");
  const mnt = path.join(tmp, "mnt");
  let mounted = false;
  try {
    fs.writeFileSync(file, img);
    fs.mkdirSync(mnt);
    if (FSCK_SKIP) {
      t.skip(FSCK_SKIP);
    } else {
      const fsck = run("fsck.erofs", [file]);
      assert.equal(fsck.status, 0, `fsck.erofs failed: ${fsck.out}`);
    }
    if (MOUNT_SKIP) {
      t.skip(`mount not checked: ${MOUNT_SKIP}`);
      return;
    }
    let m = run("mount", ["-t", "erofs", "-o", "ro,loop", file, mnt]);
    for (let i = 0; m.status !== 0 && /loop/i.test(m.out) && i < 20; i++) {
      spawnSync("sleep", ["0.5"]); // all loop devices busy (other tests): wait for one
      m = run("mount", ["-t", "erofs", "-o", "ro,loop", file, mnt]);
    }
    assert.equal(m.status, 0, `mount failed: ${m.out}`);
    mounted = true;
    fn(mnt);
  } finally {
    if (mounted) {
      const u = run("umount", [mnt]);
      if (u.status !== 0) run("umount", ["-l", mnt]);
    }
    removeDir(tmp);
  }
}

interface Expect {
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  nlink: number;
  rdev?: number;
  size?: number;
  target?: string;
  data?: Buffer;
  xattrs: Map<string, string>;
}

/** Whether the kernel lists and returns this xattr name on a plain EROFS mount (known prefix, not an ACL). */
const visibleXattr = (k: string): boolean =>
  k.startsWith("user.") || k.startsWith("trusted.") || k.startsWith("security.");

/**
 * What a plain EROFS mount of the image must show for each path, derived from §1.4 independently of the
 * writer.
 */
function expectedView(fsys: FileSystem, opts: ErofsOptions): Map<string, Expect> {
  const root = fsys.root;
  const view = new Map<string, Expect>();
  const firstPath = new Map<Leaf, { parent: Directory; name: string }>();
  let hasWhiteout = false;
  for (const { path: p, inode, parent } of fsys.walk()) {
    if (inode instanceof Leaf && parent && !firstPath.has(inode)) {
      firstPath.set(inode, { parent, name: p.slice(p.lastIndexOf("/") + 1) });
      if (inode.isWhiteout) hasWhiteout = true;
    }
  }
  const min = opts.minVersion ?? 0;
  const version = min < 1 && (opts.maxVersion ?? 1) >= 1 && hasWhiteout ? 1 : min;
  const whiteoutDirs = new Set<Directory>();
  for (const [l, first] of firstPath) if (l.isWhiteout) whiteoutDirs.add((l.primary ?? first).parent);

  const baseXattrs = (s: Stat): Map<string, string> => {
    const m = new Map<string, string>();
    for (const [k, val] of s.xattrs) {
      const key = k.startsWith("trusted.overlay.") ? `trusted.overlay.overlay.${k.slice(16)}` : k;
      m.set(key, val.toString("latin1"));
    }
    return m;
  };
  for (const { path: p, inode } of fsys.walk()) {
    const s = inode.stat;
    // Compact inodes carry no mtime: the kernel shows build_time, which equals their mtime by construction.
    const ns = BigInt(s.mtimeSec) * 1_000_000_000n + BigInt(s.mtimeNsec);
    const x = baseXattrs(s);
    const e: Expect = { mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, mtimeNs: ns, nlink: 1, xattrs: x };
    if (inode instanceof Directory) {
      e.mode |= 0o040000;
      e.nlink = 2 + [...inode.entries.values()].filter((c) => c instanceof Directory).length;
      if (whiteoutDirs.has(inode)) {
        x.set("trusted.overlay.overlay.whiteouts", "");
        x.set("user.overlay.whiteouts", "");
        if (version >= 1) {
          x.set("trusted.overlay.overlay.opaque", "x");
          x.set("user.overlay.opaque", "x");
        }
      }
      if (inode === root) x.set("trusted.overlay.opaque", "y");
    } else {
      const c = inode.content;
      e.nlink = inode.nlink;
      e.mode |= TYPE_OF[c.type];
      if (c.type === "reg") {
        e.size = c.size;
        if (c.inline) e.data = c.inline;
        else if (c.size > 0) {
          x.set(
            "trusted.overlay.metacopy",
            c.digest ? "\x00\x24\x00\x01" + Buffer.from(c.digest, "hex").toString("latin1") : "",
          );
          if (c.payload) x.set("trusted.overlay.redirect", `/${c.payload}`);
        }
      } else if (c.type === "symlink") {
        e.target = c.target;
        e.size = c.target.length;
      } else if (c.type === "chr" && c.rdev === 0) {
        e.mode = 0o100000 | (s.mode & 0o7777);
        e.size = 0;
        x.set("trusted.overlay.overlay.whiteout", "");
        x.set("user.overlay.whiteout", "");
      } else if (c.type === "chr" || c.type === "blk") {
        e.rdev = c.rdev;
      }
    }
    view.set(p, e);
  }
  const selinux = root.stat.xattrs.get("security.selinux");
  for (let i = 0; i < 256; i++) {
    const name = i.toString(16).padStart(2, "0");
    if (root.entries.has(name)) continue;
    const x = new Map<string, string>();
    if (selinux) x.set("security.selinux", selinux.toString("latin1"));
    view.set(`/${name}`, {
      mode: 0o020644,
      uid: root.stat.uid,
      gid: root.stat.gid,
      mtimeNs: BigInt(root.stat.mtimeSec) * 1_000_000_000n + BigInt(root.stat.mtimeNsec),
      nlink: 1,
      rdev: 0,
      xattrs: x,
    });
  }
  return view;
}

/** Walk the mounted image and compare every entry with the expected view; returns the number checked. */
function compareMount(mnt: string, fsys: FileSystem, opts: ErofsOptions): number {
  const view = expectedView(fsys, opts);
  const inoOf = new Map<Leaf, bigint>();
  const pathLeaf = new Map<string, Leaf>();
  for (const { path: p, inode } of fsys.walk()) if (inode instanceof Leaf) pathLeaf.set(p, inode);
  let checked = 0;
  const mntBuf = Buffer.from(mnt);
  const walk = (rel: string): void => {
    const abs = Buffer.concat([mntBuf, bytes(rel === "/" ? "" : rel)]);
    const e = view.get(rel);
    assert.ok(e, `unexpected entry ${JSON.stringify(rel)}`);
    const st = fs.lstatSync(abs, { bigint: true });
    const where = JSON.stringify(rel);
    assert.equal(Number(st.mode), e.mode, `mode of ${where}`);
    assert.equal(Number(st.uid), e.uid, `uid of ${where}`);
    assert.equal(Number(st.gid), e.gid, `gid of ${where}`);
    assert.equal(st.mtimeNs, e.mtimeNs, `mtime of ${where}`);
    assert.equal(Number(st.nlink), e.nlink, `nlink of ${where}`);
    if (e.size !== undefined) assert.equal(Number(st.size), e.size, `size of ${where}`);
    if (e.rdev !== undefined) assert.equal(Number(st.rdev), e.rdev, `rdev of ${where}`);
    if (e.target !== undefined)
      assert.equal(
        fs.readlinkSync(abs, { encoding: "buffer" }).toString("latin1"),
        e.target,
        `target of ${where}`,
      );
    if (e.data !== undefined) assert.ok(fs.readFileSync(abs).equals(e.data), `content of ${where}`);
    // The kernel lists user.* on symlinks and special files but refuses to read them (ENODATA).
    const userReadable = st.isFile() || st.isDirectory();
    const got = new Map<string, string>();
    for (const name of listXattrs(abs)) {
      const k = name.toString("latin1");
      if (!visibleXattr(k)) continue;
      const val = getXattr(abs, name);
      got.set(k, val === null ? "(unreadable)" : val.toString("latin1"));
    }
    const want = new Map<string, string>();
    for (const [k, val] of e.xattrs)
      if (visibleXattr(k)) want.set(k, !userReadable && k.startsWith("user.") ? "(unreadable)" : val);
    assert.deepStrictEqual(new Map([...got].sort()), new Map([...want].sort()), `xattrs of ${where}`);
    const l = pathLeaf.get(rel);
    if (l) {
      const seen = inoOf.get(l);
      if (seen === undefined) inoOf.set(l, st.ino);
      else assert.equal(st.ino, seen, `hard link ${where} shares the inode`);
    }
    checked++;
    if (st.isDirectory()) {
      const names = fs
        .readdirSync(abs, { encoding: "buffer" })
        .map((b) => b.toString("latin1"))
        .sort();
      const base = rel === "/" ? "/" : `${rel}/`;
      const node = fsys.lookup(rel) as Directory;
      const wantNames = [...node.entries.keys()];
      if (rel === "/")
        for (let i = 0; i < 256; i++) {
          const s = i.toString(16).padStart(2, "0");
          if (!node.entries.has(s)) wantNames.push(s);
        }
      assert.deepStrictEqual(names, wantNames.sort(), `entries of ${where}`);
      for (const n of names) walk(base + n);
    }
  };
  walk("/");
  return checked;
}

/** The on-disk inode header of a mounted path, found through its nid (EROFS reports st_ino = nid). */
function inodeOf(
  img: Buffer,
  mnt: string,
  rel: string,
): {
  nid: number;
  extended: boolean;
  layout: number;
  size: number;
  sharedXattrs: number;
} {
  const nid = Number(fs.lstatSync(path.join(mnt, rel), { bigint: true }).ino);
  const off = nid * 32;
  const format = img.readUInt16LE(off);
  const extended = (format & 1) === 1;
  const icount = img.readUInt16LE(off + 2);
  const size = extended ? Number(img.readBigUInt64LE(off + 8)) : img.readUInt32LE(off + 8);
  const sharedXattrs = icount === 0 ? 0 : img[off + (extended ? 64 : 32) + 4];
  return { nid, extended, layout: format >> 1, size, sharedXattrs };
}

const PLAIN = 0;
const INLINE = 2;
const CHUNKED = 4;

/** getfattr's view of one path (hex values), for a spot check with the standard tool. */
function getfattr(p: string): Map<string, string> {
  const r = spawnSync("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", p], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const m = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    m.set(eq < 0 ? line : line.slice(0, eq), eq < 0 ? "" : line.slice(eq + 3));
  }
  return m;
}

for (const v of VECTORS) {
  test(`vector ${v.input} (version ${v.version ?? "default"}): fsck.erofs and kernel mount`, (t) => {
    const tree = loadVector(v);
    const opts = vectorOptions(v);
    checkImage(t, writeErofs(tree, opts), (mnt) => {
      const n = compareMount(mnt, tree, opts);
      // Root listing via the kernel: every stub not shadowed by a real name is a char device 0:0.
      const stubs = fs
        .readdirSync(mnt)
        .filter((name) => /^[0-9a-f]{2}$/.test(name) && !tree.root.entries.has(name));
      assert.equal(
        stubs.length,
        256 - [...tree.root.entries.keys()].filter((k) => /^[0-9a-f]{2}$/.test(k)).length,
      );
      for (const s of stubs) assert.ok(fs.lstatSync(path.join(mnt, s)).isCharacterDevice(), `stub ${s}`);
      // Spot check with getfattr on the root (opaque marker) and on the first leaf with xattrs.
      assert.equal(getfattr(mnt).get("trusted.overlay.opaque"), "79");
      for (const { path: p, inode } of tree.walk()) {
        const isReg = inode instanceof Leaf && inode.content.type === "reg";
        if (isReg && inode.stat.xattrs.size > 0 && /^[\x21-\x7e]+$/.test(p)) {
          const g = getfattr(mnt + p);
          for (const [k, val] of inode.stat.xattrs)
            if (visibleXattr(k) && !k.startsWith("trusted.overlay."))
              assert.equal(g.get(k), val.toString("hex"), `getfattr ${p} ${k}`);
          break;
        }
      }
      t.diagnostic(`${n} entries compared through the kernel`);
    });
  });
}

test("programmatic corner-case tree passes fsck.erofs and matches through the kernel (v1 and v0)", (t) => {
  const { fsys } = cornerCaseTree();
  for (const opts of [{}, { maxVersion: 0 }] as ErofsOptions[]) {
    const img = writeErofs(fsys, opts);
    checkImage(t, img, (mnt) => {
      const n = compareMount(mnt, fsys, opts);
      const ino = (rel: string): ReturnType<typeof inodeOf> => inodeOf(img, mnt, rel);
      // The corner cases really are what they claim to be.
      assert.deepStrictEqual(
        [ino("bigdir").layout, ino("bigdir").size],
        [PLAIN, 4096],
        "last chunk > 2048 → block",
      );
      assert.equal(ino("hugedir").layout, INLINE);
      const hs = ino("hugedir").size;
      assert.ok(hs > 2 * 4096 && hs < 2 * 4096 + 2048, `hugedir size ${hs}: two blocks + inline tail`);
      assert.equal(ino("xattrs/a").sharedXattrs, 128, "only 128 shared ids per inode");
      assert.equal(ino("xattrs/b").sharedXattrs, 128);
      assert.deepStrictEqual([ino("links/spill").layout, ino("links/spill").size], [PLAIN, 4090]);
      assert.equal(ino("links/x-spill-xattr").layout, PLAIN);
      const long = ino("links/long");
      assert.equal(long.layout, INLINE);
      assert.ok(((long.nid * 32) % 4096) + 32 + 4000 <= 4096, "inline symlink stays in one block");
      for (const f of [2049, 3000, 4095, 4096]) assert.equal(ino(`inline/f${f}`).layout, PLAIN, `f${f}`);
      for (const f of [1, 100, 2048, 4097, 5000]) assert.equal(ino(`inline/f${f}`).layout, INLINE, `f${f}`);
      // /extended/old holds the minimum mtime: it alone is compact; everything at T0 needs an mtime field.
      for (const p of [
        "",
        "extended",
        "extended/later",
        "extended/nsec",
        "extended/links",
        "external/slash",
        "h1/sub/first",
      ])
        assert.ok(ino(p).extended, `${p} is extended`);
      assert.ok(!ino("extended/old").extended, "the minimum-mtime inode is compact");
      assert.equal(ino("external/digest").layout, CHUNKED);
      // Hard links: the hinted leaf lives after /z-deep/deeper; the unhinted one at /h1/sub/first (DFS-first).
      assert.ok(ino("a-top").nid > ino("z-deep/deeper").nid, "hinted inode placed at its primary");
      assert.equal(ino("h2/second").nid, ino("h1/sub/first").nid);
      assert.ok(ino("h2/second").nid > ino("h1/sub").nid, "unhinted inode placed at the DFS-first entry");
      assert.equal(fs.readlinkSync(path.join(mnt, "links/spill")), "s/".repeat(2045));
      const wh = getfattr(path.join(mnt, "wh"));
      assert.equal(wh.get("trusted.overlay.overlay.whiteouts"), "");
      assert.equal(wh.get("trusted.overlay.overlay.opaque"), opts.maxVersion === 0 ? undefined : "78");
      assert.equal(getfattr(path.join(mnt, "xattrs/a")).size, 141);
      t.diagnostic(`${n} entries compared (${JSON.stringify(opts)})`);
    });
  }
});

test("programmatic trees: dirent chunk sizes, inline sizes and compact limits", (t) => {
  // Directories whose last chunk is just under / just over 2048 bytes, inline files around every threshold.
  const root = dir({ mtimeNsec: 5 });
  for (const [name, count, len] of [
    ["under", 80, 13],
    ["over", 80, 14],
    ["exact", 127, 20],
    ["twoblocks", 350, 15],
  ] as [string, number, number][]) {
    const d = dir();
    root.entries.set(name, d);
    for (let i = 0; i < count; i++) d.entries.set(`${String(i).padStart(len, "q")}`, leaf({ type: "fifo" }));
  }
  for (const n of [2047, 2048, 2049, 2500, 4064, 4065, 4095, 4096, 4097, 4999, 5000]) {
    root.entries.set(`i${n}`, leaf({ type: "reg", size: n, inline: pattern(n, n + 1) }));
  }
  root.entries.set("ids65535", leaf({ type: "fifo" }, { uid: 65535, gid: 65535 }, 65535));
  root.entries.set("uid65536", leaf({ type: "fifo" }, { uid: 65536 }));
  root.entries.set("gid65536", leaf({ type: "fifo" }, { gid: 65536 }));
  root.entries.set("nlink65536", leaf({ type: "fifo" }, {}, 65536));
  const fsys = new FileSystem(root);
  const img = writeErofs(fsys);
  checkImage(t, img, (mnt) => {
    t.diagnostic(`${compareMount(mnt, fsys, {})} entries compared`);
    const ino = (rel: string): ReturnType<typeof inodeOf> => inodeOf(img, mnt, rel);
    assert.deepStrictEqual([ino("under").layout, ino("under").size], [INLINE, 2027]);
    assert.deepStrictEqual([ino("over").layout, ino("over").size], [PLAIN, 4096]);
    assert.deepStrictEqual([ino("exact").layout, ino("exact").size], [PLAIN, 4096]);
    assert.deepStrictEqual([ino("twoblocks").layout, ino("twoblocks").size], [INLINE, 2 * 4096 + 49 * 27]);
    assert.ok(
      !ino("i4096").extended && ino("i4096").layout === PLAIN,
      "4096-byte inline file: block, no tail",
    );
    // Compact needs uid, gid, nlink ≤ 65535 and the minimum mtime; one more forces an extended inode.
    assert.ok(!ino("ids65535").extended, "uid/gid/nlink 65535 fit a compact inode");
    for (const p of ["uid65536", "gid65536", "nlink65536"]) assert.ok(ino(p).extended, `${p} is extended`);
  });
});

// ---- performance ------------------------------------------------------------------------------------------

test("performance: cs9-x86_64-developer (64k entries)", (t) => {
  const v = VECTORS.find((x) => x.input === "cs9-x86_64-developer.dump.gz") as ImageVector;
  const tree = loadVector(v);
  writeErofs(tree); // warm-up
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    writeErofs(tree);
    best = Math.min(best, performance.now() - t0);
  }
  t.diagnostic(`best of 3: ${best.toFixed(0)} ms`);
  assert.ok(best < 5000, `writing took ${best} ms`);
});
