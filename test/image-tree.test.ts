// The merged image tree (src/oci/layer-tree.ts, src/oci/merge.ts): one hand-built tar per rule of
// composefs-repository.md §5.1 and the OCI changeset rules, then the `multi` and `dup` fixture images merged from
// their stored layer splitstreams and compared with `umoci unpack`, and written as EROFS for fsck.erofs.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { StratumError } from "../src/errors.ts";
import { writeErofs } from "../src/format/erofs/writer.ts";
import { SHA256 } from "../src/format/object-id.ts";
import { TarSplitter } from "../src/format/tar.ts";
import { ingestLayer } from "../src/oci/layer-ingest.ts";
import { LayerEntryBuilder, readLayerEntries, type LayerEntry } from "../src/oci/layer-tree.ts";
import { mergeLayers } from "../src/oci/merge.ts";
import { digestFile } from "../src/repo/file-digest.ts";
import { Repository } from "../src/repo/repository.ts";
import { getXattr, listXattrs } from "../src/sys/native.ts";
import { Directory, FileSystem, Leaf, isDirectory, type Inode } from "../src/tree/tree.ts";
import {
  blobPath,
  buildImages,
  imagesUnavailable,
  rawTar,
  readImage,
  type TestImages,
} from "./helpers/images.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-image-tree-");
after(() => removeDir(tmp));

// --- a small tar writer with owners, times, devices and PAX xattrs -----------------------------------------

interface T {
  name: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "chr" | "fifo";
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  content?: Buffer | string;
  link?: string;
  xattrs?: Record<string, Buffer | string>;
  major?: number;
  minor?: number;
}

function header(name: string, typeflag: string, size: number, t: Partial<T>): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number): void => void Buffer.from(s).copy(h, off);
  const octal = (n: number, off: number, len: number): void => put(n.toString(8).padStart(len - 1, "0"), off);
  put(name, 0);
  octal(t.mode ?? 0o644, 100, 8);
  octal(t.uid ?? 0, 108, 8);
  octal(t.gid ?? 0, 116, 8);
  octal(size, 124, 12);
  octal(t.mtime ?? 1600000000, 136, 12);
  h.write("        ", 148);
  put(typeflag, 156);
  put(t.link ?? "", 157);
  put("ustar\u000000", 257);
  octal(t.major ?? 0, 329, 8);
  octal(t.minor ?? 0, 337, 8);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, "0") + "\u0000 ", 148);
  return h;
}

const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function tar(entries: T[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    if (e.xattrs) {
      const pax = Buffer.concat(
        Object.entries(e.xattrs).map(([k, v]) => paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v))),
      );
      out.push(header("PaxHeaders/x", "x", pax.length, {}), pax, pad(pax.length));
    }
    const content = Buffer.from(e.content ?? "");
    const flag = { file: "0", dir: "5", symlink: "2", hardlink: "1", chr: "3", fifo: "6" }[e.type];
    const mode = e.mode ?? (e.type === "dir" ? 0o755 : 0o644);
    out.push(header(e.name, flag, e.type === "file" ? content.length : 0, { ...e, mode }));
    if (e.type === "file" && content.length > 0) out.push(content, pad(content.length));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/** Entries via the sans-IO builder; external payloads get a stand-in ID (sha256 of the content). */
function entriesOf(archive: Buffer): LayerEntry[] {
  const s = new TarSplitter();
  const b = new LayerEntryBuilder("test");
  let hash = createHash("sha256");
  for (const ev of [...s.push(archive), ...s.end()]) {
    if (ev.kind === "external") hash = createHash("sha256");
    if (ev.kind === "data") hash.update(ev.data);
    b.push(ev, ev.kind === "external-end" ? hash.digest("hex") : undefined);
  }
  return b.finish();
}

const merge = (layers: T[][], keepUserXattrs = false): FileSystem =>
  mergeLayers(
    layers.map((l) => entriesOf(tar(l))),
    { keepUserXattrs },
  );

const names = (f: FileSystem): string[] => [...f.walk()].map((w) => w.path).filter((p) => p !== "/");

function leafAt(f: FileSystem, p: string): Leaf {
  const i = f.lookup(p);
  assert.ok(i !== undefined && !isDirectory(i), `${p} is not a leaf`);
  return i;
}

function dirAt(f: FileSystem, p: string): Directory {
  const i = f.lookup(p);
  assert.ok(i !== undefined && isDirectory(i), `${p} is not a directory`);
  return i;
}

const dir = (name: string, extra: Partial<T> = {}): T => ({ name, type: "dir", ...extra });
const file = (name: string, content = "x", extra: Partial<T> = {}): T => ({
  name,
  type: "file",
  content,
  ...extra,
});

// --- the rules ------------------------------------------------------------------------------------------------

describe("layer entries", () => {
  test("paths are normalised; absolute paths and .. are refused", () => {
    const e = entriesOf(tar([dir("./"), dir("./a/"), file("./a//b"), file("c")]));
    assert.deepEqual(
      e.map((x) => x.path),
      ["", "a", "a/b", "c"],
    );
    for (const bad of ["../x", "a/../../x", "/etc/passwd"]) {
      assert.throws(
        () => entriesOf(rawTar([{ name: bad, type: "file", content: "x" }])),
        (err: unknown) => err instanceof StratumError && err.code === "E_UNSAFE_PATH",
        bad,
      );
    }
    assert.throws(
      () => entriesOf(rawTar([{ name: "a", type: "hardlink", linkname: "../etc/shadow" }])),
      (err: unknown) => err instanceof StratumError && err.code === "E_UNSAFE_PATH",
    );
  });

  test("entry fields: owners, times, xattrs, links, devices, inline and external contents", () => {
    const big = Buffer.alloc(1000, 7);
    const e = entriesOf(
      tar([
        file("small", "hello", { uid: 12, gid: 34, mtime: 99, mode: 0o4755, xattrs: { "user.a": "1" } }),
        file("big", big.toString("latin1")),
        file("empty", ""),
        { name: "sym", type: "symlink", link: "/some/where" },
        { name: "hl", type: "hardlink", link: "./small" },
        { name: "null", type: "chr", major: 1, minor: 3 },
        { name: "pipe", type: "fifo" },
      ]),
    );
    const [small, bigE, empty, sym, hl, dev, pipe] = e;
    assert.deepEqual(
      { ...small, xattrs: [...small.xattrs] },
      {
        path: "small",
        type: "reg",
        mode: 0o4755,
        uid: 12,
        gid: 34,
        mtimeSec: 99,
        mtimeNsec: 0,
        xattrs: [["user.a", Buffer.from("1")]],
        size: 5,
        inline: Buffer.from("hello"),
      },
    );
    assert.equal(bigE.size, 1000);
    assert.equal(bigE.objectId, createHash("sha256").update(big).digest("hex"));
    assert.equal(bigE.inline, undefined);
    assert.equal(empty.size, 0);
    assert.equal(empty.inline ?? empty.objectId, undefined);
    assert.equal(sym.linkTarget, "/some/where");
    assert.deepEqual([hl.type, hl.linkTarget], ["hardlink", "small"]);
    assert.deepEqual([dev.type, dev.devMajor, dev.devMinor], ["chr", 1, 3]);
    assert.equal(pipe.type, "fifo");
  });
});

test("readLayerEntries: a missing layer stream is E_NOT_FOUND", async () => {
  const root = path.join(tmp, "repo-missing");
  Repository.init(root);
  const repo = await Repository.open(root);
  try {
    assert.throws(
      () => readLayerEntries(repo, `sha256:${"0".repeat(64)}`),
      (err: unknown) => err instanceof StratumError && err.code === "E_NOT_FOUND",
    );
  } finally {
    repo.close();
  }
});

describe("merging layers", () => {
  test("a whiteout removes the lower file; it never appears itself", () => {
    const f = merge([[dir("etc"), file("etc/a"), file("etc/b")], [file("etc/.wh.a", "")]]);
    assert.deepEqual(names(f), ["/etc", "/etc/b"]);
  });

  test("a whiteout removes only what lower layers provided, whatever its position in its own layer", () => {
    // The same-layer file comes before its whiteout in the tar: it must survive.
    const f = merge([
      [file("a", "lower")],
      [file("a", "upper"), file(".wh.a", ""), file("b"), file(".wh.b", "")],
    ]);
    assert.deepEqual(names(f), ["/a", "/b"]);
    const a = leafAt(f, "a").content;
    assert.ok(a.type === "reg" && a.inline?.toString() === "upper");
  });

  test("a whiteout of a lower directory removes the whole subtree", () => {
    const f = merge([[dir("d"), dir("d/e"), file("d/e/f"), file("keep")], [file(".wh.d", "")]]);
    assert.deepEqual(names(f), ["/keep"]);
  });

  test("an opaque directory hides lower children and keeps its own layer's, before or after the marker", () => {
    const f = merge([
      [dir("o"), file("o/old"), dir("o/sub"), file("o/sub/x")],
      [dir("o"), file("o/new1"), file("o/.wh..wh..opq", ""), file("o/new2")],
    ]);
    assert.deepEqual(names(f), ["/o", "/o/new1", "/o/new2"]);
  });

  test("a file replaces a directory, a directory replaces a file", () => {
    const f = merge([
      [dir("d"), file("d/x"), file("f")],
      [file("d", "now a file"), dir("f"), file("f/y")],
    ]);
    assert.deepEqual(names(f), ["/d", "/f", "/f/y"]);
    assert.equal(leafAt(f, "d").content.type, "reg");
  });

  test("a later layer's directory metadata wins; its children are kept", () => {
    const f = merge(
      [
        [dir("m", { mode: 0o755, uid: 1, gid: 2, mtime: 10, xattrs: { "user.x": "old" } }), file("m/keep")],
        [dir("m", { mode: 0o700, uid: 1000, gid: 1001, mtime: 20 })],
      ],
      true,
    );
    const m = dirAt(f, "m");
    assert.deepEqual(
      [m.stat.mode, m.stat.uid, m.stat.gid, m.stat.mtimeSec, m.stat.xattrs.size],
      [0o700, 1000, 1001, 20, 0],
    );
    assert.deepEqual(names(f), ["/m", "/m/keep"]);
  });

  test("hard links share the leaf: to a lower-layer file and within a layer", () => {
    const big = "B".repeat(200);
    const f = merge([
      [file("lower", big)],
      [
        { name: "up", type: "hardlink", link: "lower" },
        file("x", "small"),
        { name: "y", type: "hardlink", link: "x" },
      ],
    ]);
    assert.equal(leafAt(f, "up"), leafAt(f, "lower"));
    assert.equal(leafAt(f, "x"), leafAt(f, "y"));
    assert.equal(leafAt(f, "up").nlink, 2);
    assert.equal(leafAt(f, "x").nlink, 2);
    const c = leafAt(f, "up").content;
    assert.ok(
      c.type === "reg" &&
        c.digest !== undefined &&
        c.payload === `${c.digest.slice(0, 2)}/${c.digest.slice(2)}`,
    );
    // A link whose target was replaced later keeps the old inode; nlink counts the names left.
    const g = merge([[file("a", "one"), { name: "b", type: "hardlink", link: "a" }], [file("a", "two")]]);
    assert.notEqual(leafAt(g, "a"), leafAt(g, "b"));
    assert.equal(leafAt(g, "b").nlink, 1);
    assert.throws(
      () => merge([[{ name: "z", type: "hardlink", link: "missing" }]]),
      (err: unknown) => err instanceof StratumError && err.code === "E_BAD_INPUT",
    );
  });

  test("xattrs: security.capability kept, user.* only with keepUserXattrs, the rest dropped", () => {
    const layers: T[][] = [
      [
        file("f", "x", {
          xattrs: {
            "security.capability": "cap",
            "user.u": "u",
            "trusted.overlay.opaque": "y",
            "security.selinux": "l",
          },
        }),
      ],
    ];
    assert.deepEqual([...leafAt(merge(layers), "f").stat.xattrs.keys()], ["security.capability"]);
    assert.deepEqual([...leafAt(merge(layers, true), "f").stat.xattrs.keys()].sort(), [
      "security.capability",
      "user.u",
    ]);
  });

  test("/run is emptied and keeps its metadata (mtime from /usr)", () => {
    const f = merge([
      [dir("usr", { mtime: 555 }), dir("run", { mode: 0o710, mtime: 7 }), file("run/pid"), dir("run/d")],
    ]);
    const run = dirAt(f, "run");
    assert.equal(run.entries.size, 0);
    assert.deepEqual([run.stat.mode, run.stat.mtimeSec], [0o710, 555]);
  });

  test("root metadata comes from /usr", () => {
    const f = merge(
      [
        [
          dir("./", { mode: 0o700, mtime: 1 }),
          dir("usr", {
            mode: 0o555,
            uid: 5,
            gid: 6,
            mtime: 1234,
            xattrs: { "user.r": "v", "trusted.x": "y" },
          }),
        ],
      ],
      true,
    );
    const r = f.root.stat;
    assert.deepEqual(
      [r.mode, r.uid, r.gid, r.mtimeSec, [...r.xattrs.keys()]],
      [0o555, 5, 6, 1234, ["user.r"]],
    );
    assert.notEqual(r, dirAt(f, "usr").stat);
  });

  test("without /usr: the last layer's root entry, else 0755 root:root mtime 0", () => {
    const f = merge([[dir("./", { mode: 0o700, mtime: 1 })], [dir(".", { mode: 0o750, uid: 3, mtime: 2 })]]);
    assert.deepEqual([f.root.stat.mode, f.root.stat.uid, f.root.stat.mtimeSec], [0o750, 3, 2]);
    const g = merge([[file("a")]]);
    assert.deepEqual(
      [g.root.stat.mode, g.root.stat.uid, g.root.stat.gid, g.root.stat.mtimeSec],
      [0o755, 0, 0, 0],
    );
  });

  test("missing parents are created 0755 root:root mtime 0; a non-directory parent is refused", () => {
    const f = merge([[file("a/b/c")]]);
    const a = dirAt(f, "a");
    assert.deepEqual([a.stat.mode, a.stat.uid, a.stat.mtimeSec], [0o755, 0, 0]);
    assert.throws(
      () => merge([[file("a"), file("a/b")]]),
      (err: unknown) => err instanceof StratumError && err.code === "E_BAD_INPUT",
    );
  });

  test("devices and inline contents match a directory import's leaf shape", () => {
    const f = merge([[{ name: "null", type: "chr", major: 1, minor: 3 }, file("e", ""), file("s", "abc")]]);
    assert.deepEqual(leafAt(f, "null").content, { type: "chr", rdev: (1 << 8) | 3 });
    assert.deepEqual(leafAt(f, "e").content, { type: "reg", size: 0 });
    assert.deepEqual(leafAt(f, "s").content, { type: "reg", size: 3, inline: Buffer.from("abc") });
  });
});

// --- against umoci ----------------------------------------------------------------------------------------------

const reason = imagesUnavailable();
let images: TestImages | undefined;
before(async () => {
  if (reason === null) images = await buildImages();
});
after(() => images?.remove());

async function* fileChunks(file: string): AsyncGenerator<Buffer> {
  yield* fs.createReadStream(file, { highWaterMark: 1 << 16 }) as AsyncIterable<Buffer>;
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  target?: string;
  content: string;
  xattrs: string;
  link: string;
  /** Non-directories: mtime in ns (umoci restores those; directory mtimes move as it unpacks). */
  mtime: string;
}

const KEEP = (k: string): boolean => k === "security.capability" || k.startsWith("user.");

function xattrString(m: Map<string, Buffer>): string {
  return [...m]
    .filter(([k]) => KEEP(k))
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v.toString("hex")}`)
    .join(",");
}

/** umoci's rootfs, as comparable nodes; hard-link groups keyed by the group's first path. */
function scanRootfs(root: string): Map<string, Node> {
  const out = new Map<string, Node>();
  const inodes = new Map<bigint, string>();
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const full = path.join(root, r);
      const st = fs.lstatSync(full, { bigint: true });
      const xa = new Map<string, Buffer>();
      for (const k of listXattrs(Buffer.from(full))) {
        const v = getXattr(Buffer.from(full), k);
        if (v !== null) xa.set(k.toString("latin1"), v);
      }
      const node: Node = {
        type: st.isDirectory()
          ? "dir"
          : st.isFile()
            ? "reg"
            : st.isSymbolicLink()
              ? "symlink"
              : st.isFIFO()
                ? "fifo"
                : "other",
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        content: "",
        xattrs: xattrString(xa),
        link: "",
        mtime: st.isDirectory() ? "" : String(st.mtimeNs),
      };
      if (st.isSymbolicLink()) {
        node.target = fs.readlinkSync(full, { encoding: "buffer" }).toString("latin1");
        node.mode = 0o777;
      }
      if (st.isFile())
        node.content =
          st.size > 64n ? digestFile(full, SHA256).digest : fs.readFileSync(full).toString("hex");
      if (!st.isDirectory() && st.nlink > 1n) {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, r);
        node.link = first ?? r;
      }
      out.set(r, node);
      if (st.isDirectory()) walk(r);
    }
  };
  walk("");
  return out;
}

function treeNodes(f: FileSystem): Map<string, Node> {
  const out = new Map<string, Node>();
  const first = new Map<Inode, string>();
  for (const { path: p, inode } of f.walk()) {
    if (p === "/") continue;
    const r = p.slice(1);
    const node: Node = {
      type: "dir",
      mode: inode.stat.mode,
      uid: inode.stat.uid,
      gid: inode.stat.gid,
      content: "",
      xattrs: xattrString(inode.stat.xattrs),
      link: "",
      mtime: isDirectory(inode)
        ? ""
        : String(BigInt(inode.stat.mtimeSec) * 1_000_000_000n + BigInt(inode.stat.mtimeNsec)),
    };
    if (!isDirectory(inode)) {
      const c = inode.content;
      node.type = c.type === "reg" || c.type === "symlink" || c.type === "fifo" ? c.type : "other";
      if (c.type === "symlink") {
        node.target = c.target;
        node.mode = 0o777;
      }
      if (c.type === "reg") node.content = c.digest ?? (c.inline ?? Buffer.alloc(0)).toString("hex");
      if (inode.nlink > 1) {
        if (!first.has(inode)) first.set(inode, r);
        node.link = first.get(inode) ?? r;
      }
    }
    out.set(r, node);
  }
  return out;
}

function skipUnlessReady(t: TestContext): boolean {
  if (reason !== null) t.skip(reason);
  return reason !== null;
}

describe("image trees against umoci unpack", () => {
  for (const tag of ["multi", "dup"]) {
    test(`${tag}: merged tree equals umoci's rootfs; EROFS passes fsck.erofs`, async (t) => {
      if (skipUnlessReady(t) || images === undefined) return;
      const work = path.join(tmp, tag);
      fs.mkdirSync(work);
      const repoDir = path.join(work, "repo");
      Repository.init(repoDir);
      const repo = await Repository.open(repoDir);
      try {
        const img = readImage(images.layout, tag);
        const layers: LayerEntry[][] = [];
        for (const [i, l] of img.layers.entries()) {
          const res = await ingestLayer(repo, fileChunks(blobPath(images.layout, l.digest)), {
            expectedDiffId: img.diffIds[i],
          });
          layers.push(readLayerEntries(repo, res.diffId));
        }
        const merged = mergeLayers(layers, { keepUserXattrs: true });

        const bundle = path.join(work, "bundle");
        execFileSync("umoci", ["unpack", "--image", `${images.layout}:${tag}`, bundle], { stdio: "pipe" });
        const theirs = scanRootfs(path.join(bundle, "rootfs"));
        // /run is emptied by the transform; umoci keeps its contents.
        for (const k of [...theirs.keys()]) if (k.startsWith("run/")) theirs.delete(k);
        const ours = treeNodes(merged);
        assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort());
        for (const [p, n] of ours) assert.deepEqual(n, theirs.get(p), p);
        if (tag === "multi") {
          assert.ok(ours.size > 15);
          assert.match(ours.get("bin/tool")?.content ?? "", /^[0-9a-f]{64}$/);
          assert.match(ours.get("bin/tool")?.xattrs ?? "", /security\.capability=.*user\.stratum=/);
          assert.equal(dirAt(merged, "run").entries.size, 0);
          assert.ok(theirs.has("data/b") && ours.get("data/b")?.link === "data/a");
        }

        const image = path.join(work, "image.erofs");
        fs.writeFileSync(image, writeErofs(merged));
        execFileSync("fsck.erofs", [image], { stdio: "pipe" });
      } finally {
        repo.close();
        removeDir(work);
      }
    });
  }
});
