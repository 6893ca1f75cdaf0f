// `stratum pull` end to end against real sources (docs/pull.md): fixture images built with umoci/skopeo, pulled
// from an OCI layout and from a real docker-registry. For every good fixture the reassembled layer tars hash to
// the config's diff_ids and the stored file objects are exactly the regular files (> 64 bytes) GNU tar
// extracts from the layer blobs, a superset of what `umoci unpack` leaves; broken inputs fail with clear
// errors, tag nothing and leave fsck clean; a second image sharing layers downloads only its new ones; tags
// list, inspect, rename and go; a pull killed at any moment leaves fsck clean and a re-run completes; a gc run
// while a pull is in flight removes nothing the pull wrote.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { ContentType } from "../src/format/splitstream.ts";
import { objectRelPath } from "../src/format/object-id.ts";
import { unmountComposefs, mountComposefs } from "../src/mount/composefs.ts";
import { imageObjectIds } from "../src/repo/images.ts";
import { Repository } from "../src/repo/repository.ts";
import { STRATUM_BIN, stratum } from "./helpers/cli.ts";
import {
  blobPath,
  buildBrokenImages,
  buildDebianImage,
  buildImages,
  debianUnavailable,
  diffTree,
  MULTI_EXPECTED,
  imagesUnavailable,
  pushImage,
  readImage,
  type BrokenImage,
  type BrokenKind,
  type DebianImage,
  type TestImages,
} from "./helpers/images.ts";
import { startFaultProxy } from "./helpers/fault-proxy.ts";
import {
  extractedObjects,
  fileObjectsIn,
  sha256,
  storedDiffIds,
  storedLayerObjects,
  type PullReport,
} from "./helpers/pull-checks.ts";
import { registryUnavailable, startRegistry, type Registry } from "./helpers/registry.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const reason = imagesUnavailable();
const tmp = makeTempDir("stratum-pull-");
let images: TestImages | undefined;
let broken: Record<BrokenKind, BrokenImage> | undefined;
let registry: Registry | undefined;

before(async () => {
  if (reason !== null) return;
  images = await buildImages();
  broken = await buildBrokenImages(path.join(tmp, "broken"));
  if (registryUnavailable() === null) registry = await startRegistry();
});

after(async () => {
  await registry?.stop();
  images?.remove();
  removeDir(tmp);
});

function skipUnlessReady(t: TestContext): boolean {
  if (reason !== null) {
    t.skip(reason);
    return true;
  }
  return false;
}

let repoCount = 0;
function newRepo(): string {
  const repo = path.join(tmp, `repo-${++repoCount}`);
  const r = stratum(["init", "--algorithm", "sha256", repo]);
  assert.equal(r.status, 0, r.stderr);
  return repo;
}

function pull(repo: string, args: string[]): PullReport {
  const r = stratum(["--repo", repo, "pull", "--json", ...args]);
  assert.equal(r.status, 0, `pull ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as PullReport;
}

/** The uncompressed bytes of a layer blob, decompressed by the real tools. */
function layerTar(layout: string, digest: string): Buffer {
  const blob = fs.readFileSync(blobPath(layout, digest));
  if (blob[0] === 0x1f && blob[1] === 0x8b)
    return spawnSync("gzip", ["-dc"], { input: blob, maxBuffer: 1 << 30 }).stdout;
  if (blob.readUInt32LE(0) === 0xfd2fb528)
    return spawnSync("zstd", ["-dc"], { input: blob, maxBuffer: 1 << 30 }).stdout;
  return blob;
}

function fsckClean(repo: string): void {
  const r = stratum(["--repo", repo, "fsck"]);
  assert.equal(r.status, 0, `fsck: ${r.stdout.toString()}${r.stderr}`);
}

function tags(repo: string): { name: string; manifestDigest: string }[] {
  const r = stratum(["--repo", repo, "images", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as { name: string; manifestDigest: string }[];
}

/** Pull `tag` from the fixture layout and check it against the layout and the real tools. */
async function checkGoodImage(
  repo: string,
  tag: string,
  source: string,
  layout = (images as TestImages).layout,
): Promise<void> {
  const img = readImage(layout, tag);
  const rep = pull(repo, [source, `fixture-${tag}`]);
  assert.equal(rep.manifestDigest, img.manifestDigest, `${tag}: manifest digest`);
  assert.equal(rep.configDigest, img.configDigest, `${tag}: config digest`);
  assert.deepEqual(
    rep.layers.map((l) => l.diffId),
    img.diffIds,
  );
  // Every layer stream reassembles to a tar that hashes to the config's diff_id.
  for (const diffId of new Set(img.diffIds)) {
    const cat = stratum(["--repo", repo, "cat", `oci-layer-${diffId}`]);
    assert.equal(cat.status, 0, cat.stderr);
    assert.equal(sha256(cat.stdout), diffId, `${tag}: layer ${diffId} reassembled`);
  }
  // Stored objects = regular files > 64 bytes that GNU tar extracts from the layer blobs.
  const expected = extractedObjects(
    img.layers.map((l) => layerTar(layout, l.digest)),
    tmp,
  );
  const stored = new Set(await storedLayerObjects(repo, img.diffIds));
  assert.deepEqual([...stored], expected, `${tag}: stored file objects`);
  // What umoci unpack leaves is a subset (whiteouts and overwrites remove lower-layer files). umoci 0.4.7
  // cannot unpack zstd layers; GNU tar above is the oracle for those.
  if (img.layers.some((l) => l.mediaType.endsWith("+zstd"))) return fsckClean(repo);
  const bundle = path.join(tmp, `umoci-${tag}`);
  const u = spawnSync("umoci", ["unpack", "--image", `${layout}:${tag}`, bundle]);
  assert.equal(u.status, 0, u.stderr.toString());
  for (const d of fileObjectsIn(path.join(bundle, "rootfs")))
    assert.ok(stored.has(d), `${tag}: ${d} from umoci`);
  fs.rmSync(bundle, { recursive: true, force: true });
  fsckClean(repo);
}

describe("pull from an OCI layout", () => {
  for (const tag of ["multi", "zstd", "dup"]) {
    test(`${tag}: digests, diff_ids and stored files agree with the layout, GNU tar and umoci`, async (t) => {
      if (skipUnlessReady(t)) return;
      const repo = newRepo();
      await checkGoodImage(repo, tag, (images as TestImages).ref(tag));
      assert.deepEqual(
        tags(repo).map((x) => x.name),
        [`fixture-${tag}`],
      );
    });
  }

  test("multiarch: --platform picks the matching manifest, the attestation is never chosen", (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    for (const [platform, tag] of [
      ["linux/arm64", "multiarch-arm64"],
      ["linux/arm/v7", "multiarch-armv7"],
      ["linux/amd64", "multiarch-amd64"],
    ] as const) {
      const rep = pull(repo, ["--platform", platform, im.ref("multiarch"), `m-${tag}`]);
      assert.equal(rep.manifestDigest, readImage(im.layout, tag).manifestDigest, platform);
      assert.notEqual(rep.manifestDigest, im.attestationDigest);
    }
    const bad = stratum(["--repo", repo, "pull", "--platform", "linux/s390x", im.ref("multiarch")]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /s390x/);
    assert.match(bad.stderr, /arm64/, "the error lists the platforms there are");
  });

  test("a second image sharing layers reuses them; pulling again downloads nothing", (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const first = pull(repo, [im.ref("multi"), "one"]);
    assert.ok(first.layers.every((l) => !l.present));
    const again = pull(repo, [im.ref("multi"), "one"]);
    assert.ok(again.layers.every((l) => l.present));
    assert.equal(again.downloaded, 0);
    // dup's first layer is multi's first layer: present; its own layers are new.
    const dup = pull(repo, [im.ref("dup"), "two"]);
    const multiDiffIds = new Set(readImage(im.layout, "multi").diffIds);
    dup.layers.forEach((l, i) => {
      const repeated = dup.layers.slice(0, i).some((e) => e.diffId === l.diffId);
      assert.equal(l.present, multiDiffIds.has(l.diffId) || repeated, `layer ${i} ${l.diffId}`);
    });
    assert.ok(dup.layers[0].present, "the shared base layer is not downloaded again");
    assert.ok(
      dup.layers.some((l) => !l.present),
      "dup has layers of its own",
    );
    fsckClean(repo);
  });
});

describe("broken inputs", () => {
  const cases: [BrokenKind, RegExp, number][] = [
    ["wrong-digest", /digest mismatch/, 6],
    ["truncated-blob", /truncated|bytes/, 6],
    ["missing-blob", /missing|no such|not found|ENOENT/i, 3],
    ["escape-dotdot", /"\.\." component/, 8],
    ["escape-absolute", /absolute/, 8],
    ["escape-hardlink", /hard link target/, 8],
  ];
  for (const [kind, message, status] of cases) {
    test(`${kind}: a clear error, nothing tagged, fsck clean`, (t) => {
      if (skipUnlessReady(t)) return;
      const b = (broken as Record<BrokenKind, BrokenImage>)[kind];
      const repo = newRepo();
      const r = stratum(["--repo", repo, "pull", "-q", b.ref, "broken"]);
      assert.equal(r.status, status, `${kind}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
      assert.deepEqual(tags(repo), []);
      fsckClean(repo);
    });
  }

  test("escape-symlink: a path through a symbolic link is refused when the image tree is built", (t) => {
    if (skipUnlessReady(t)) return;
    const b = (broken as Record<BrokenKind, BrokenImage>)["escape-symlink"];
    const repo = newRepo();
    const r = stratum(["--repo", repo, "pull", "-q", b.ref, "symlinky"]);
    assert.equal(r.status, 8, r.stderr);
    assert.match(r.stderr, /"link" is a symbolic link, which is not followed/);
    assert.deepEqual(tags(repo), []);
    fsckClean(repo);
  });
});

describe("tags", () => {
  test("images, inspect, tag, untag, rm; gc keeps what a tag reaches and drops the rest", (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const rep = pull(repo, [im.ref("multi"), "first"]);
    assert.equal(stratum(["--repo", repo, "tag", "first", "second/with:colon"]).status, 0);
    assert.deepEqual(
      tags(repo).map((x) => [x.name, x.manifestDigest]),
      [
        ["first", rep.manifestDigest],
        ["second/with:colon", rep.manifestDigest],
      ],
    );
    const inspect = stratum(["--repo", repo, "inspect", "--json", "second/with:colon"]);
    assert.equal(inspect.status, 0, inspect.stderr);
    const info = JSON.parse(inspect.stdout.toString()) as {
      names: string[];
      manifestDigest: string;
      configDigest: string;
      layers: { digest: string; diffId: string; size: number }[];
    };
    const img = readImage(im.layout, "multi");
    assert.equal(info.configDigest, img.configDigest);
    assert.deepEqual(
      info.layers.map((l) => [l.digest, l.diffId, l.size]),
      img.layers.map((l, i) => [l.digest, img.diffIds[i], l.size]),
    );
    assert.deepEqual(info.names, ["first", "second/with:colon"]);
    // By digest and by prefix.
    assert.equal(stratum(["--repo", repo, "inspect", rep.manifestDigest]).status, 0);
    assert.equal(stratum(["--repo", repo, "inspect", rep.manifestDigest.slice(7, 20)]).status, 0);

    assert.equal(stratum(["--repo", repo, "untag", "first"]).status, 0);
    let gc = stratum(["--repo", repo, "gc", "--json"]);
    assert.equal((JSON.parse(gc.stdout.toString()) as { objectsRemoved: number }).objectsRemoved, 0);
    assert.equal(stratum(["--repo", repo, "rm", "second/with:colon"]).status, 0);
    assert.deepEqual(tags(repo), []);
    gc = stratum(["--repo", repo, "gc", "--json"]);
    assert.ok((JSON.parse(gc.stdout.toString()) as { objectsRemoved: number }).objectsRemoved > 0);
    fsckClean(repo);
    const missing = stratum(["--repo", repo, "rm", "first"]);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /no image named first/);
  });
});

describe("pull from a registry", () => {
  test("docker:// over loopback: same digests as the layout, layers verified", async (t) => {
    if (skipUnlessReady(t)) return;
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const im = images as TestImages;
    await pushImage(im.layout, "multi", registry, "test/multi:latest");
    const repo = newRepo();
    const rep = pull(repo, [`docker://${registry.host}/test/multi:latest`]);
    assert.equal(rep.tag, `${registry.host}/test/multi:latest`);
    assert.equal(rep.configDigest, readImage(im.layout, "multi").configDigest);
    for (const l of rep.layers) {
      const cat = stratum(["--repo", repo, "cat", `oci-layer-${l.diffId}`]);
      assert.equal(sha256(cat.stdout), l.diffId);
    }
    fsckClean(repo);
  });
});

describe("crash safety", () => {
  test("kill -9 at any moment: fsck clean, and the same pull completes reusing what was stored", async (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    for (const delayMs of [40, 120, 250, 400, 700]) {
      const child = spawn(
        process.execPath,
        [STRATUM_BIN, "--repo", repo, "pull", "-q", im.ref("multi"), "k"],
        {
          stdio: "ignore",
        },
      );
      const exited = new Promise((r) => child.once("exit", r));
      await new Promise((r) => setTimeout(r, delayMs));
      child.kill("SIGKILL");
      await exited;
      fsckClean(repo);
    }
    const rep = pull(repo, [im.ref("multi"), "k"]);
    assert.equal(rep.manifestDigest, readImage(im.layout, "multi").manifestDigest);
    fsckClean(repo);
  });

  test("a gc started while a pull runs waits for it and removes nothing the pull wrote", async (t) => {
    if (skipUnlessReady(t)) return;
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const im = images as TestImages;
    await pushImage(im.layout, "multi", registry, "test/gc-race:latest");
    // Every blob answer is held back 1.5 s, so the pull is certainly in flight when gc starts.
    const proxy = await startFaultProxy(registry.host, [
      { path: "/blobs/", method: "GET", times: "always", action: { kind: "delay", ms: 1500 } },
    ]);
    try {
      const repo = newRepo();
      const src = `docker://${proxy.host}/test/gc-race:latest`;
      const child = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "pull", "-q", src, "g"], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      const exited = new Promise<number | null>((r) => child.once("exit", r));
      await new Promise((r) => setTimeout(r, 700));
      const gcRun = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const g = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "gc", "--json"]);
        let stderr = "";
        g.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
        g.once("exit", (status) => resolve({ status, stderr }));
      });
      assert.equal(await exited, 0);
      assert.equal(gcRun.status, 0, gcRun.stderr);
      assert.match(gcRun.stderr, /waiting/, "gc waited for the pull's lock");
      for (const diffId of readImage(im.layout, "multi").diffIds) {
        const cat = stratum(["--repo", repo, "cat", `oci-layer-${diffId}`]);
        assert.equal(cat.status, 0, cat.stderr);
        assert.equal(sha256(cat.stdout), diffId);
      }
      fsckClean(repo);
    } finally {
      await proxy.stop();
    }
  });
});

describe("a realistic Debian image", () => {
  let debian: DebianImage | undefined;
  const debianReason = reason ?? debianUnavailable();
  before(async () => {
    if (debianReason === null) debian = await buildDebianImage();
  });

  test("pulled from the registry: diff_ids, stored files = GNU tar's, a superset of umoci's", async (t) => {
    if (debianReason !== null || !debian) return t.skip(debianReason ?? "no Debian image");
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    await pushImage(debian.layout, debian.tag, registry, "test/debian:bookworm");
    const repo = newRepo();
    await checkGoodImage(repo, debian.tag, `docker://${registry.host}/test/debian:bookworm`, debian.layout);
  });

  test("kill -9 at moments through the pull: fsck clean each time, then the same pull completes", async (t) => {
    if (debianReason !== null || !debian) return t.skip(debianReason ?? "no Debian image");
    const repo = newRepo();
    const src = `oci:${debian.layout}:${debian.tag}`;
    for (const delayMs of [300, 900, 1600, 2500]) {
      const child = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "pull", "-q", src, "deb"], {
        stdio: "ignore",
      });
      const exited = new Promise<number | null>((r) => child.once("exit", r));
      await new Promise((r) => setTimeout(r, delayMs));
      child.kill("SIGKILL");
      await exited;
      fsckClean(repo);
      assert.deepEqual(tags(repo), [], "a killed pull tags nothing");
    }
    // The re-run fetches exactly the layers the killed pulls did not finish.
    const stored = new Set(storedDiffIds(repo));
    const rep = pull(repo, [src, "deb"]);
    assert.equal(rep.manifestDigest, readImage(debian.layout, debian.tag).manifestDigest);
    assert.deepEqual(
      rep.layers.map((l) => l.present),
      rep.layers.map((l) => stored.has(l.diffId)),
    );
    for (const l of rep.layers) {
      const cat = stratum(["--repo", repo, "cat", `oci-layer-${l.diffId}`]);
      assert.equal(sha256(cat.stdout), l.diffId);
    }
    fsckClean(repo);
  });
});

describe("EROFS at pull time (issue 5)", () => {
  async function configErofsRef(repo: string, configDigest: string): Promise<string | undefined> {
    const r = await Repository.open(repo);
    try {
      const s = r.openStream(`oci-config-${configDigest}`, ContentType.ociConfig);
      const id = s.namedRefs().get("composefs.image.v1");
      s.close();
      return id;
    } finally {
      r.close();
    }
  }

  test("the config links the image's EROFS; mounted, it shows what umoci unpacks; deterministic; gc keeps it while tagged", async (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const rep = pull(repo, ["--keep-user-xattrs", im.ref("multi"), "m"]);
    assert.equal(await configErofsRef(repo, rep.configDigest), rep.erofs);
    const image = path.join(repo, "objects", objectRelPath(rep.erofs));
    assert.ok(fs.existsSync(path.join(repo, "images", rep.erofs)), "linked under images/");
    const fsck = spawnSync("fsck.erofs", [image]);
    assert.equal(fsck.status, 0, fsck.stderr.toString());

    if (process.getuid?.() !== 0) t.diagnostic("not root: the mount comparison is skipped");
    else {
      const mnt = path.join(tmp, "mnt-multi");
      fs.mkdirSync(mnt);
      mountComposefs(image, path.join(repo, "objects"), mnt);
      try {
        // What umoci unpacks, except that the composefs transform empties /run (docs/image-tree.md).
        const inRun = (p: string): boolean => p.startsWith("run/");
        const expected = {
          entries: new Map([...MULTI_EXPECTED.entries].filter(([p]) => !inRun(p))),
          hardlinks: MULTI_EXPECTED.hardlinks.filter((g) => !g.some(inRun)),
          absent: [...MULTI_EXPECTED.absent, ...[...MULTI_EXPECTED.entries.keys()].filter(inRun)],
        };
        assert.ok(expected.absent.some(inRun), "the fixture has something under /run");
        assert.deepEqual(await diffTree(mnt, expected), []);
      } finally {
        unmountComposefs(mnt);
      }
    }

    // images and inspect show it.
    const listed = JSON.parse(stratum(["--repo", repo, "images", "--json"]).stdout.toString()) as {
      erofs: string | null;
    }[];
    assert.deepEqual(
      listed.map((x) => x.erofs),
      [rep.erofs],
    );
    const inspected = JSON.parse(stratum(["--repo", repo, "inspect", "--json", "m"]).stdout.toString()) as {
      erofs: string | null;
    };
    assert.equal(inspected.erofs, rep.erofs);

    // The EROFS object lost: images says so; the next pull rebuilds it from the stored layers, downloading
    // nothing, and gets the same object (the image is a pure function of the layers).
    fs.rmSync(image);
    assert.match(stratum(["--repo", repo, "images"]).stdout.toString(), /no \(pull again\)/);
    const again = pull(repo, ["--keep-user-xattrs", im.ref("multi"), "m"]);
    assert.equal(again.downloaded, 0);
    assert.equal(again.erofs, rep.erofs);
    fsckClean(repo);

    const gcKeep = stratum(["--repo", repo, "gc", "--json"]);
    assert.equal((JSON.parse(gcKeep.stdout.toString()) as { objectsRemoved: number }).objectsRemoved, 0);
    assert.ok(fs.existsSync(image));
    assert.equal(stratum(["--repo", repo, "rm", "m"]).status, 0);
    assert.equal(stratum(["--repo", repo, "gc"]).status, 0);
    assert.ok(!fs.existsSync(image), "untagged and collected");
  });

  test("--skip-erofs (the benchmark's baseline) stores no EROFS; the next pull builds it, downloading nothing", async (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const r = stratum(["--repo", repo, "pull", "--json", "--skip-erofs", im.ref("multi"), "m"]);
    assert.equal(r.status, 0, r.stderr.toString());
    const skipped = JSON.parse(r.stdout.toString()) as { erofs: string | null; configDigest: string };
    assert.equal(skipped.erofs, null);
    assert.equal(await configErofsRef(repo, skipped.configDigest), undefined);
    assert.deepEqual(
      fs.readdirSync(path.join(repo, "images")).filter((n) => n !== "refs"),
      [],
    );
    assert.match(stratum(["--repo", repo, "images"]).stdout.toString(), /no \(pull again\)/);
    fsckClean(repo);
    const full = pull(repo, [im.ref("multi"), "m"]);
    assert.equal(full.downloaded, 0);
    // Timings: nothing downloaded, so the whole build is what the EROFS step added; a pull with nothing to do
    // builds nothing.
    assert.ok(full.timings.erofsBuild > 0 && full.timings.erofsAdded >= full.timings.erofsBuild);
    assert.ok(full.timings.erofsAdded <= full.timings.total);
    const noop = pull(repo, [im.ref("multi"), "m"]);
    assert.deepEqual([noop.timings.erofsBuild, noop.timings.erofsAdded], [0, 0]);
    assert.ok(noop.timings.total > 0);
    assert.equal(await configErofsRef(repo, full.configDigest), full.erofs);
    assert.ok(fs.existsSync(path.join(repo, "images", full.erofs)));
  });

  test("--bootable on an image without /usr, /boot, /sysroot: a clear error naming the image, nothing tagged, fsck clean", (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const r = stratum(["--repo", repo, "pull", "-q", "--bootable", im.ref("multi"), "m"]);
    assert.equal(r.status, 7, r.stderr.toString()); // E_BAD_INPUT
    // The fixture has no /usr either; /usr, /boot and /sysroot are all required.
    assert.match(r.stderr.toString(), /^stratum: error: oci:.*:multi: not a bootable image: no \/usr\n$/);
    assert.equal(stratum(["--repo", repo, "images", "--json"]).stdout.toString().trim(), "[]");
    fsckClean(repo);
  });

  test("fsck checks the EROFS a config links: it must parse and use only objects that exist", async (t) => {
    if (skipUnlessReady(t)) return;
    const im = images as TestImages;
    const repo = newRepo();
    const rep = pull(repo, [im.ref("multi"), "m"]);
    const image = path.join(repo, "objects", objectRelPath(rep.erofs));
    const configItem = `streams/oci-config-${rep.configDigest}`;
    // An object the image uses (the layer streams use it too) goes missing: renamed away, then back.
    const r = await Repository.open(repo);
    let used: string;
    try {
      used = imageObjectIds(r, rep.erofs)[0];
    } finally {
      r.close();
    }
    const usedPath = path.join(repo, "objects", objectRelPath(used));
    fs.renameSync(usedPath, `${usedPath}.away`);
    let out = stratum(["--repo", repo, "fsck"]);
    assert.equal(out.status, 1);
    assert.match(
      out.stdout.toString() + out.stderr,
      new RegExp(`${configItem}.*EROFS image of "composefs.image.v1" uses object ${used}`),
    );
    fs.renameSync(`${usedPath}.away`, usedPath);
    fsckClean(repo);
    // A damaged image (bytes overwritten in place, as a disk error would).
    fs.chmodSync(image, 0o644);
    const fd = fs.openSync(image, "r+");
    fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 1024);
    fs.closeSync(fd);
    out = stratum(["--repo", repo, "fsck"]);
    assert.equal(out.status, 1);
    assert.match(
      out.stdout.toString() + out.stderr,
      new RegExp(`${configItem}.*not a valid composefs EROFS image`),
    );
  });
});
