// Issue 5, "Proof": for every good fixture image (test/helpers/images.ts buildImages: every tag of its layout) and
// for the realistic Debian image, `stratum pull` writes an EROFS that
// 1. mounted with `stratum mount` (EROFS + overlayfs with the repository's objects as the data-only layer)
//    shows exactly the tree `umoci unpack` makes of the same image, once the documented composefs OCI transform
//    (docs/image-tree.md: root metadata from /usr, /run emptied, xattrs filtered) is applied to umoci's side:
//    paths, types, modes, owners, link counts, mtimes, sizes, contents (sha256), symlink targets, device
//    numbers, xattrs, hard-link groups (test/helpers/tree-compare.ts) — in both xattr filter modes where the
//    image has user.* xattrs;
// 2. passes `fsck.erofs`;
// 3. is byte-identical to what `stratum mkcomposefs --from-file` writes (in the repository's format version) from
//    the image's own dumpfile — the merged tree of its stored layers (readLayerEntries, mergeLayers) printed by
//    writeDumpfile — and `stratum composefs-info dump` of it prints that dumpfile back (directory SIZE fields
//    aside: only the image knows its directory block sizes; writeDumpfile prints 0 and mkcomposefs ignores the
//    field), a dump from which mkcomposefs writes the same bytes again.
// No other exception to exact equality is needed: directory mtimes are compared too (umoci restores them, also
// after whiteouts), and only directory st_size is left out of the tree comparison (each filesystem's own).
// umoci 0.4.7 cannot read zstd layers: the `zstd` image is unpacked from a skopeo gzip copy with the same diff_ids.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { writeDumpfile } from "../src/format/dumpfile.ts";
import { objectRelPath } from "../src/format/object-id.ts";
import { readLayerEntries } from "../src/oci/layer-tree.ts";
import { mergeLayers } from "../src/oci/merge.ts";
import { imageFormatVersion } from "../src/repo/images.ts";
import { Repository } from "../src/repo/repository.ts";
import { stratum } from "./helpers/cli.ts";
import { unavailable } from "./helpers/daemons.ts";
import {
  buildDebianImage,
  buildImages,
  debianUnavailable,
  imagesUnavailable,
  readImage,
  readLayoutIndex,
  type TestImages,
} from "./helpers/images.ts";
import type { PullReport } from "./helpers/pull-checks.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";
import {
  compareTrees,
  composefsTransform,
  scanTree,
  treeStats,
  type ScannedTree,
} from "./helpers/tree-compare.ts";

const reason =
  imagesUnavailable() ?? unavailable(["fsck.erofs", "mount", "umount", "skopeo"], "erofs-utils mount skopeo");
const tmp = makeTempDir("stratum-image-proof-");
let images: TestImages | undefined;

before(async () => {
  if (reason === null) images = await buildImages();
});

after(() => {
  images?.remove();
  removeDir(tmp);
});

/**
 * Every tag of the fixture layout, and the xattr filter modes each is proven in: both modes for the images whose
 * layers carry user.* xattrs (multi's first layer; zstd is multi recompressed; dup repeats that layer), the
 * default for the rest. `multiarch` is the index: pulled for this machine's platform, compared with umoci's
 * unpack of the image it resolves to. None of the layout's tags is a broken image (those live in
 * buildBrokenImages' own layouts, test/pull.test.ts "broken inputs").
 */
const FIXTURES: [tag: string, keepUserXattrs: boolean[]][] = [
  ["multi", [true, false]],
  ["zstd", [true, false]],
  ["dup", [true, false]],
  ["multiarch", [false]],
  ["multiarch-amd64", [false]],
  ["multiarch-arm64", [false]],
  ["multiarch-armv7", [false]],
];

const REF_NAME = "org.opencontainers.image.ref.name";

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The layout's tag whose descriptor is `digest` (an image manifest, not an index). */
function tagOfManifest(layout: string, digest: string): string {
  const d = readLayoutIndex(layout).manifests.find(
    (m) => m.digest === digest && m.annotations?.[REF_NAME] !== undefined,
  );
  const tag = d?.annotations?.[REF_NAME];
  assert.ok(tag !== undefined, `${layout}: no tag for manifest ${digest}`);
  return tag;
}

/**
 * umoci's rootfs of `layout:tag`, unpacked into `work`. umoci 0.4.7 cannot read zstd layers: such an image is
 * first copied by skopeo into a gzip layout, and the copy's diff_ids must equal the original's (the same
 * uncompressed tars), so umoci unpacks the same layers.
 */
function umociRootfs(layout: string, tag: string, work: string): string {
  let from = layout;
  const img = readImage(layout, tag);
  if (img.layers.some((l) => l.mediaType.endsWith("+zstd"))) {
    from = path.join(work, "gzip-layout");
    run("skopeo", [
      "copy",
      "--quiet",
      "--dest-compress",
      "--dest-compress-format",
      "gzip",
      `oci:${layout}:${tag}`,
      `oci:${from}:${tag}`,
    ]);
    const copy = readImage(from, tag);
    assert.ok(
      copy.layers.every((l) => l.mediaType.endsWith("+gzip")),
      "skopeo wrote gzip layers",
    );
    assert.deepEqual(copy.diffIds, img.diffIds, "the gzip copy has the same layer tars");
  }
  const bundle = path.join(work, "bundle");
  run("umoci", ["unpack", "--image", `${from}:${tag}`, bundle]);
  return path.join(bundle, "rootfs");
}

/** `stratum mkcomposefs --from-file DUMP OUT` in exactly format `version`; must succeed. */
function mkcomposefsFromFile(dump: string, out: string, version: number): void {
  const v = String(version);
  const r = stratum(["mkcomposefs", "--from-file", "--min-version", v, "--max-version", v, dump, out]);
  assert.equal(r.status, 0, r.stderr);
}

/** Whether some layer tar of `layout:tag` has an entry for the root itself (`./`), as GNU tar lists it. */
function hasRootEntry(layout: string, tag: string): boolean {
  return readImage(layout, tag).layers.some((l) => {
    const [alg, hex] = l.digest.split(":");
    const names = run("tar", ["-tf", path.join(layout, "blobs", alg ?? "", hex ?? "")]).split("\n");
    return names.some((n) => n === "./" || n === "." || n === "/");
  });
}

/**
 * Dumpfile lines of `composefs-info dump` made comparable with writeDumpfile's for the same tree: a directory's
 * SIZE field is the byte size of its EROFS directory blocks, which only the image knows (writeDumpfile prints 0
 * for a tree that was not read from an image, and mkcomposefs ignores the field).
 */
function zeroDirSizes(dump: string): string[] {
  return dump
    .split("\n")
    .filter((l) => l !== "")
    .map((line) => {
      const f = line.split(" ");
      if (f[2]?.startsWith("4") && f[2].length === 5) f[1] = "0";
      return f.join(" ");
    });
}

let repoCount = 0;

/**
 * Pull `layout:tag` into a new repository and prove its EROFS (see the header). Every mount is undone and every
 * directory removed before returning.
 */
async function prove(
  t: TestContext,
  layout: string,
  tag: string,
  keepUserXattrs: boolean,
  bothModes: boolean,
): Promise<void> {
  const times: string[] = [];
  let lap = Date.now();
  const phase = (name: string): void => {
    const now = Date.now();
    times.push(`${name} ${((now - lap) / 1000).toFixed(1)}`);
    lap = now;
  };
  const work = fs.mkdtempSync(path.join(tmp, `${tag}-${++repoCount}-`));
  const repo = path.join(work, "repo");
  const mnt = path.join(work, "mnt");
  fs.mkdirSync(mnt);
  let mounted = false;
  try {
    assert.equal(stratum(["init", "--algorithm", "sha256", repo]).status, 0);
    const pulled = stratum([
      "--repo",
      repo,
      "pull",
      "--json",
      ...(keepUserXattrs ? ["--keep-user-xattrs"] : []),
      `oci:${layout}:${tag}`,
      "proof",
    ]);
    assert.equal(pulled.status, 0, pulled.stderr);
    const rep = JSON.parse(pulled.stdout.toString()) as PullReport;
    phase("pull");
    const image = path.join(repo, "objects", objectRelPath(rep.erofs));
    const imageBytes = fs.readFileSync(image);
    const oracleTag = tagOfManifest(layout, rep.manifestDigest);
    const img = readImage(layout, oracleTag);
    assert.deepEqual(
      rep.layers.map((l) => l.diffId),
      img.diffIds,
    );

    // 2. fsck.erofs.
    const fsck = spawnSync("fsck.erofs", [image]);
    assert.equal(fsck.status, 0, `fsck.erofs: ${fsck.stdout.toString()}${fsck.stderr.toString()}`);
    phase("fsck.erofs");

    // 3. The image's own dumpfile, from the stored layers; mkcomposefs from it; composefs-info dump back.
    const r = await Repository.open(repo);
    let dump: Buffer;
    let version: number;
    try {
      version = imageFormatVersion(r);
      const layers = img.diffIds.map((d) => readLayerEntries(r, d));
      dump = writeDumpfile(mergeLayers(layers, { keepUserXattrs }));
    } finally {
      r.close();
    }
    const dumpFile = path.join(work, "image.dump");
    fs.writeFileSync(dumpFile, dump);
    const rebuilt = path.join(work, "rebuilt.erofs");
    mkcomposefsFromFile(dumpFile, rebuilt, version);
    const rebuiltBytes = fs.readFileSync(rebuilt);
    assert.equal(rebuiltBytes.length, imageBytes.length, "mkcomposefs image size");
    assert.ok(rebuiltBytes.equals(imageBytes), "mkcomposefs from the dumpfile writes the pulled EROFS");
    const info = stratum(["composefs-info", "dump", image]);
    assert.equal(info.status, 0, info.stderr);
    assert.deepEqual(zeroDirSizes(info.stdout.toString("latin1")), zeroDirSizes(dump.toString("latin1")));
    // The printed dump is complete: mkcomposefs from it writes the image again.
    const infoFile = path.join(work, "info.dump");
    fs.writeFileSync(infoFile, info.stdout);
    const again = path.join(work, "again.erofs");
    mkcomposefsFromFile(infoFile, again, version);
    assert.ok(
      fs.readFileSync(again).equals(imageBytes),
      "mkcomposefs from composefs-info dump writes the pulled EROFS",
    );
    phase("dumpfile+mkcomposefs+composefs-info");

    // 1. The mounted tree against umoci's.
    const rootfs = umociRootfs(layout, oracleTag, work);
    phase("umoci unpack");
    const raw = scanTree(rootfs);
    phase("scan umoci");
    const userXattrs = [...raw.nodes.values()].some((n) =>
      Object.keys(n.xattrs).some((k) => k.startsWith("user.")),
    );
    // Both filter modes are proven exactly for the images that have user.* xattrs.
    assert.equal(
      userXattrs,
      bothModes,
      `${tag}: has user.* xattrs: ${userXattrs}, proven in both modes: ${bothModes}`,
    );
    if (!raw.nodes.has("usr"))
      assert.ok(
        !hasRootEntry(layout, oracleTag),
        "no /usr and a root entry: the fallback is not covered here",
      );
    const theirs: ScannedTree = composefsTransform(raw, { keepUserXattrs });

    const mountEnv = { ...process.env, STRATUM_RUNTIME_DIR: path.join(work, "runtime") };
    const m = stratum(["--repo", repo, "mount", "proof", mnt], { env: mountEnv });
    assert.equal(m.status, 0, m.stderr);
    mounted = true;
    const ours = scanTree(mnt);
    const u = stratum(["--repo", repo, "unmount", mnt], { env: mountEnv });
    assert.equal(u.status, 0, u.stderr);
    mounted = false;
    phase("mount+scan+unmount");

    const diff = compareTrees(ours, theirs);
    assert.deepEqual(diff, [], `${tag}: mounted tree vs umoci unpack`);
    if (bothModes) {
      // The filter mode shows: against the other mode's expectation, exactly the user.* xattrs differ.
      const other = compareTrees(ours, composefsTransform(raw, { keepUserXattrs: !keepUserXattrs }));
      assert.ok(other.length > 0);
      for (const line of other) assert.match(line, / (unexpected )?xattr user\.[^ ]+( missing|=)/);
    }
    assert.ok(ours.nodes.size > 3, "a real tree was compared");
    t.diagnostic(`${tag}${keepUserXattrs ? " --keep-user-xattrs" : ""}: equal: ${treeStats(ours)}`);
    t.diagnostic(
      `umoci's tree had ${raw.nodes.size - theirs.nodes.size} entries under /run; seconds: ${times.join(", ")}`,
    );
  } finally {
    if (mounted) spawnSync("umount", [mnt]);
    removeDir(work);
  }
}

describe("the tree comparator (test/helpers/tree-compare.ts) fails on every kind of difference", () => {
  /** A tree with one of everything the proof compares, built with the real tools; returns its root. */
  function sample(dir: string): string {
    const root = path.join(dir, "a");
    fs.mkdirSync(path.join(root, "d"), { recursive: true });
    fs.mkdirSync(path.join(root, "usr"), { mode: 0o711 });
    fs.mkdirSync(path.join(root, "run/sub"), { recursive: true });
    fs.writeFileSync(path.join(root, "run/sub/pid"), "1\n");
    fs.writeFileSync(path.join(root, "d/f"), "content of f\n");
    fs.linkSync(path.join(root, "d/f"), path.join(root, "run/f-link"));
    fs.linkSync(path.join(root, "d/f"), path.join(root, "d/g"));
    fs.writeFileSync(path.join(root, "s"), "setuid\n", { mode: 0o4755 });
    fs.chmodSync(path.join(root, "s"), 0o4755);
    fs.symlinkSync("d/f", path.join(root, "l"));
    run("mkfifo", [path.join(root, "p")]);
    run("mknod", [path.join(root, "c"), "c", "1", "3"]);
    run("setfattr", ["-n", "user.x", "-v", "one", path.join(root, "d/f")]);
    run("setfattr", ["-n", "trusted.t", "-v", "dropped", path.join(root, "d")]);
    run("setfattr", ["-n", "user.u", "-v", "usr", path.join(root, "usr")]);
    run("setfattr", [
      "-n",
      "security.capability",
      "-v",
      "0x" + "01000002".padEnd(40, "0"),
      path.join(root, "s"),
    ]);
    run("touch", ["-h", "-d", "@1600000000.123456789", path.join(root, "l")]);
    run("touch", ["-d", "@1500000000.5", path.join(root, "usr")]);
    return root;
  }

  const mutations: [what: string, mutate: (root: string) => void, expect: RegExp][] = [
    ["mode", (r) => fs.chmodSync(path.join(r, "d/f"), 0o600), /^"d\/f": mode 600, expected 644$/],
    ["special bits", (r) => fs.chmodSync(path.join(r, "s"), 0o755), /^"s": mode 755, expected 4755$/],
    ["uid", (r) => fs.lchownSync(path.join(r, "l"), 7, 0), /^"l": uid 7, expected 0$/],
    ["gid", (r) => fs.chownSync(path.join(r, "d"), 0, 8), /^"d": gid 8, expected 0$/],
    ["mtime", (r) => run("touch", ["-h", "-d", "@1600000000.123456788", path.join(r, "l")]), /^"l": mtimeNs/],
    ["content", (r) => fs.writeFileSync(path.join(r, "s"), "setuiD\n"), /^"s": sha256 /],
    ["size", (r) => fs.appendFileSync(path.join(r, "s"), "x"), /^"s": size 8, expected 7$/],
    [
      "symlink target",
      (r) => {
        fs.unlinkSync(path.join(r, "l"));
        fs.symlinkSync("d/g", path.join(r, "l"));
        run("touch", ["-h", "-d", "@1600000000.123456789", path.join(r, "l")]);
      },
      /^"l": target /,
    ],
    [
      "device numbers",
      (r) => {
        fs.unlinkSync(path.join(r, "c"));
        run("mknod", [path.join(r, "c"), "c", "1", "5"]);
      },
      /^"c": rdev 1:5, expected 1:3$/,
    ],
    [
      "type",
      (r) => (fs.unlinkSync(path.join(r, "p")), fs.mkdirSync(path.join(r, "p"))),
      /^"p": type dir, expected fifo$/,
    ],
    [
      "xattr value",
      (r) => run("setfattr", ["-n", "user.x", "-v", "two", path.join(r, "d/f")]),
      /^"d\/f": xattr user.x=/,
    ],
    [
      "xattr missing",
      (r) => run("setfattr", ["-x", "user.x", path.join(r, "d/f")]),
      /^"d\/f": xattr user.x missing$/,
    ],
    [
      "xattr extra",
      (r) => run("setfattr", ["-n", "user.y", "-v", "1", path.join(r, "usr")]),
      /^"usr": unexpected xattr user.y=31$/,
    ],
    [
      "path missing",
      (r) => fs.rmSync(path.join(r, "run/sub"), { recursive: true }),
      /^"run\/sub\/pid": missing$/,
    ],
    ["path extra", (r) => fs.writeFileSync(path.join(r, "d/new"), ""), /^"d\/new": unexpected$/],
    [
      "hard link broken",
      (r) => {
        fs.copyFileSync(path.join(r, "d/g"), path.join(r, "d/g.tmp"));
        run("cp", ["-a", "--attributes-only", path.join(r, "d/f"), path.join(r, "d/g.tmp")]);
        fs.renameSync(path.join(r, "d/g.tmp"), path.join(r, "d/g"));
      },
      /^hard-link group \{"d\/f", "d\/g", "run\/f-link"\}: not one inode$/,
    ],
  ];

  test("equal copies compare equal; each single change is reported", (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root (mknod, chown, trusted.* xattrs)");
    const dir = fs.mkdtempSync(path.join(tmp, "cmp-"));
    try {
      const a = sample(dir);
      const expected = scanTree(a);
      const copy = path.join(dir, "copy");
      run("cp", ["-a", a, copy]);
      assert.deepEqual(compareTrees(scanTree(copy), expected), [], "cp -a copy");
      assert.equal(expected.nodes.get("c")?.rdev, "1:3");
      for (const [what, mutate, want] of mutations) {
        const b = path.join(dir, what.replace(/ /g, "-"));
        run("cp", ["-a", a, b]);
        mutate(b);
        const diff = compareTrees(scanTree(b), expected);
        assert.ok(
          diff.some((l) => want.test(l)),
          `${what}: ${JSON.stringify(diff)} has no line matching ${String(want)}`,
        );
      }
    } finally {
      removeDir(dir);
    }
  });

  test("composefsTransform: root from /usr, /run emptied with /usr's mtime, xattrs filtered, link counts", (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root (mknod, chown, trusted.* xattrs)");
    const dir = fs.mkdtempSync(path.join(tmp, "transform-"));
    try {
      const raw = scanTree(sample(dir));
      for (const keep of [false, true]) {
        const x = composefsTransform(raw, { keepUserXattrs: keep });
        const root = x.nodes.get("");
        const usr = raw.nodes.get("usr");
        assert.ok(root !== undefined && usr !== undefined);
        assert.deepEqual(
          [root.mode, root.mtimeNs, root.xattrs],
          [0o711, 1_500_000_000_500_000_000n, keep ? { "user.u": Buffer.from("usr").toString("hex") } : {}],
        );
        assert.equal(root.nlink, raw.nodes.get("")?.nlink, "the root keeps its own link count");
        assert.deepEqual(
          [...x.nodes.keys()].filter((p) => p.startsWith("run")),
          ["run"],
        );
        assert.equal(x.nodes.get("run")?.mtimeNs, usr.mtimeNs);
        assert.equal(x.nodes.get("run")?.nlink, 2, "/run lost its subdirectory");
        assert.equal(x.nodes.get("d/f")?.nlink, 2, "d/f lost its name under /run");
        assert.equal(raw.nodes.get("d/f")?.nlink, 3);
        assert.deepEqual(x.nodes.get("d")?.xattrs, {}, "trusted.* dropped");
        assert.deepEqual(Object.keys(x.nodes.get("d/f")?.xattrs ?? {}), keep ? ["user.x"] : []);
        assert.deepEqual(Object.keys(x.nodes.get("s")?.xattrs ?? {}), ["security.capability"]);
      }
      assert.deepEqual(
        Object.keys(raw.nodes.get("d")?.xattrs ?? {}),
        ["trusted.t"],
        "the input is not changed",
      );
    } finally {
      removeDir(dir);
    }
  });
});

describe("issue 5 proof: the fixture images", () => {
  test("the proof covers every tag of the fixture layout", (t) => {
    if (reason !== null || images === undefined) return t.skip(reason ?? "no fixture images");
    const tags = readLayoutIndex(images.layout)
      .manifests.map((m) => m.annotations?.[REF_NAME])
      .filter((x) => x !== undefined)
      .sort();
    assert.deepEqual(tags, FIXTURES.map(([tag]) => tag).sort());
  });

  for (const [tag, modes] of FIXTURES) {
    for (const keep of modes) {
      test(`${tag}${keep ? " --keep-user-xattrs" : ""}: mounted = umoci unpack, fsck.erofs clean, = mkcomposefs from its dumpfile`, async (t) => {
        if (reason !== null || images === undefined) return t.skip(reason ?? "no fixture images");
        await prove(t, images.layout, tag, keep, modes.length === 2);
      });
    }
  }
});

describe("issue 5 proof: a realistic Debian image", () => {
  test(
    "debian: mounted = umoci unpack, fsck.erofs clean, = mkcomposefs from its dumpfile",
    { timeout: 600_000 },
    async (t) => {
      const why = reason ?? debianUnavailable();
      if (why !== null) return t.skip(why);
      let layout: string;
      try {
        layout = (await buildDebianImage()).layout;
      } catch (e) {
        return t.skip(`the Debian image cannot be built: ${(e as Error).message.split("\n")[0] ?? ""}`);
      }
      await prove(t, layout, "debian", false, false);
    },
  );
});
