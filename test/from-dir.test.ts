// Reading a directory into the tree: every file type, modes, owners, nanosecond mtimes, binary xattrs on files
// and symlinks, hard links, devices, inlining of small files, fs-verity digests equal to the fsverity CLI, and
// storing objects in a repository in the same read.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { Repository } from "../src/repo/repository.ts";
import { setXattr } from "../src/sys/native.ts";
import { encodeRdev, readDirectory } from "../src/tree/from-dir.ts";
import { Directory, Leaf, isDirectory } from "../src/tree/tree.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-fromdir-");
const src = path.join(tmp, "src");
let server: net.Server | undefined;
after(() => {
  server?.close();
  removeDir(tmp);
});

before(async () => {
  fs.mkdirSync(path.join(src, "sub/deeper"), { recursive: true });
  fs.writeFileSync(path.join(src, "small"), "tiny\n");
  fs.writeFileSync(path.join(src, "empty"), "");
  fs.writeFileSync(path.join(src, "exact64"), Buffer.alloc(64, 1));
  fs.writeFileSync(path.join(src, "big"), Buffer.alloc(100_000, 2));
  fs.linkSync(path.join(src, "big"), path.join(src, "sub/big-link"));
  fs.symlinkSync("../small", path.join(src, "sub/sym"));
  fs.chmodSync(path.join(src, "sub"), 0o2750);
  fs.chownSync(path.join(src, "small"), 3_000_000, 1234);
  execFileSync("touch", ["-h", "-d", "2020-01-02 03:04:05.123456789 UTC", path.join(src, "sub/sym")]);
  execFileSync("touch", ["-d", "2021-06-07 08:09:10.000000007 UTC", path.join(src, "small")]);
  execFileSync("mkfifo", [path.join(src, "fifo")]);
  execFileSync("mknod", [path.join(src, "null"), "c", "1", "3"]);
  execFileSync("mknod", [path.join(src, "blk"), "b", "259", "70000"]);
  const name = Buffer.concat([
    Buffer.from(path.join(src, "sub/deeper") + "/bin-"),
    Buffer.from([0xff, 0x01]),
  ]);
  fs.writeFileSync(name, "x");
  setXattr(name, Buffer.from("user.bin"), Buffer.from([0xff, 0x00, 0xfe]));
  execFileSync("setfattr", ["-h", "-n", "trusted.sym", "-v", "on-link", path.join(src, "sub/sym")]);
  execFileSync("setcap", ["cap_net_raw+ep", path.join(src, "big")]);
  server = net.createServer();
  await new Promise<void>((resolve) => server?.listen(path.join(src, "sock"), resolve));
});

function leaf(dir: Directory, p: string): Leaf {
  let cur: Directory | Leaf = dir;
  for (const c of p.split("/")) {
    assert.ok(isDirectory(cur), p);
    const next: Directory | Leaf | undefined = cur.get(c); // paths here are byte strings
    assert.ok(next, `${p}: missing ${c}`);
    cur = next;
  }
  assert.ok(!isDirectory(cur));
  return cur;
}

describe("reading a directory", () => {
  test("types, metadata, xattrs, hard links, inlining and digests", () => {
    const { fs: tree, stats } = readDirectory(src);
    const root = tree.root;
    assert.deepEqual(
      root.sorted().map(([n]) => n),
      ["big", "blk", "empty", "exact64", "fifo", "null", "small", "sock", "sub"],
    );
    const small = leaf(root, "small");
    assert.deepEqual(small.content, { type: "reg", size: 5, inline: Buffer.from("tiny\n") });
    assert.equal(small.stat.uid, 3_000_000);
    assert.equal(small.stat.gid, 1234);
    assert.equal(small.stat.mtimeSec, 1623053350);
    assert.equal(small.stat.mtimeNsec, 7);
    assert.deepEqual(leaf(root, "empty").content, { type: "reg", size: 0 });
    const exact = leaf(root, "exact64").content;
    assert.ok(exact.type === "reg" && exact.inline?.length === 64, "64-byte files are inlined");
    const big = leaf(root, "big");
    const cli = execFileSync("fsverity", ["digest", "--compact", path.join(src, "big")])
      .toString()
      .trim();
    assert.deepEqual(big.content, {
      type: "reg",
      size: 100_000,
      digest: cli,
      payload: `${cli.slice(0, 2)}/${cli.slice(2)}`,
    });
    assert.ok(big.stat.xattrs.has("security.capability"));
    assert.equal(leaf(root, "sub/big-link"), big, "hard link shares the leaf");
    assert.equal(big.nlink, 2);
    const sym = leaf(root, "sub/sym");
    assert.deepEqual(sym.content, { type: "symlink", target: "../small" });
    assert.equal(sym.stat.mtimeSec, 1577934245);
    assert.equal(sym.stat.mtimeNsec, 123456789);
    assert.deepEqual(sym.stat.xattrs.get("trusted.sym"), Buffer.from("on-link"));
    assert.deepEqual(leaf(root, "null").content, { type: "chr", rdev: (1 << 8) | 3 });
    assert.deepEqual(leaf(root, "blk").content, {
      type: "blk",
      rdev: encodeRdev((259n << 8n) | (70000n & 0xffn) | ((70000n & ~0xffn) << 12n)),
    });
    assert.equal(leaf(root, "fifo").content.type, "fifo");
    assert.equal(leaf(root, "sock").content.type, "sock");
    const sub = root.get("sub") as Directory;
    assert.equal(sub.stat.mode, 0o2750);
    const bin = leaf(
      root,
      `sub/deeper/${Buffer.from([0x62, 0x69, 0x6e, 0x2d, 0xff, 0x01]).toString("latin1")}`,
    );
    assert.deepEqual(bin.stat.xattrs.get("user.bin"), Buffer.from([0xff, 0x00, 0xfe]));
    assert.equal(stats.externalFiles, 1);
    assert.equal(stats.externalBytes, 100_000);
  });

  test("options: skip xattrs, user xattrs only, epoch, skip devices", () => {
    const plain = readDirectory(src, { skipXattrs: true, useEpoch: true, skipDevices: true }).fs.root;
    assert.equal(plain.get("null"), undefined);
    assert.equal(plain.get("blk"), undefined);
    assert.equal(leaf(plain, "big").stat.xattrs.size, 0);
    assert.equal(leaf(plain, "small").stat.mtimeSec, 0);
    const user = readDirectory(src, { userXattrsOnly: true }).fs.root;
    assert.equal(leaf(user, "big").stat.xattrs.size, 0);
    assert.equal(leaf(user, "sub/sym").stat.xattrs.size, 0);
  });

  test("the device number encoding is the kernel's new_encode_dev", () => {
    assert.equal(encodeRdev((1n << 8n) | 3n), 0x103);
    // major 259, minor 70000: glibc dev_t → (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
    const dev = (259n << 8n) | (70000n & 0xffn) | ((70000n & ~0xffn) << 12n);
    assert.equal(encodeRdev(dev), ((70000 & 0xff) | (259 << 8) | ((70000 & ~0xff) << 12)) >>> 0);
  });

  test("objects are stored in a repository in the same read", async () => {
    const root = path.join(tmp, "repo");
    Repository.init(root);
    const repo = await Repository.open(root);
    try {
      const sink = { algorithm: repo.algorithm, storeFile: (fd: number) => repo.objects.storeFd(fd).id };
      const { fs: tree } = readDirectory(src, { sink });
      const big = leaf(tree.root, "big");
      assert.ok(big.content.type === "reg" && big.content.digest);
      assert.ok(
        fs.readFileSync(repo.objects.path(big.content.digest)).equals(fs.readFileSync(path.join(src, "big"))),
      );
    } finally {
      repo.close();
    }
  });

  test("a missing or non-directory source is a clear error", () => {
    assert.throws(() => readDirectory(path.join(tmp, "nope")), /cannot read .*nope/);
    assert.throws(() => readDirectory(path.join(src, "small")), /is not a directory/);
  });
});
