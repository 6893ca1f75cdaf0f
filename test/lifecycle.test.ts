// GC and the image lifecycle with images that share layers (issue 5): a 5-layer base image and two 20-layer
// bootable versions sharing 18 layers, described as text and built by test/helpers/dump-layers.ts. Everything
// expected is computed from the layer descriptions (file objects by fs-verity digest, the merged tree's objects,
// diff_ids and digests), never from stratum's own listing; the repository is read straight from disk.
//
// Pulls of images sharing layers download only the new ones; gc with every tag removes nothing; untag + gc
// removes exactly what no remaining tag reaches, and keeps every layer stream, object and EROFS the others need;
// with no tags left gc empties the repository; re-pulling after gc downloads nothing and gives the same EROFS;
// gc and pull killed with SIGKILL at seeded moments leave fsck clean and everything reachable intact, and the
// re-run completes.
//
// Each image's EROFS IDs are read from its config stream's `composefs.image*` named refs (erofsIdsOf), so a
// second, boot EROFS (`pull --bootable`, `composefs.image.boot.v1`) of v1 and v2 is covered by every
// reachability check; the `composefs.image.v1` EROFS is compared with the merged tree, and the boot EROFS with
// it (/boot and /sysroot emptied, nothing else changed) and through `stratum mount --bootable`.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { objectIdFromPath, objectRelPath, SHA256 } from "../src/format/object-id.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { fsck } from "../src/repo/fsck.ts";
import type { GcResult } from "../src/repo/gc.ts";
import { Repository } from "../src/repo/repository.ts";
import { STRATUM_BIN, stratum } from "./helpers/cli.ts";
import { buildOsImages, objectIdOf, type BuiltImage, type OsImages } from "./helpers/dump-layers.ts";
import { fileObjectsIn, type PullReport } from "./helpers/pull-checks.ts";
import { mulberry32 } from "./helpers/prng.ts";
import { catStream } from "./helpers/streams.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-lifecycle-");
after(() => removeDir(tmp));

/** Extra `pull` arguments per image: v1 and v2 are bootable, so they also get the boot variant. */
const PULL_ARGS: Record<string, string[]> = { base: [], v1: ["--bootable"], v2: ["--bootable"] };

let os: OsImages;
/** base, v1 and v2 pulled in that order; copied (never changed) by the tests. */
let pristine: string;
const reports = new Map<string, PullReport>();

function images(): BuiltImage[] {
  return [os.base, os.v1, os.v2];
}

before(() => {
  os = buildOsImages(path.join(tmp, "layout"));
  pristine = newRepo("pristine");
  for (const img of images()) reports.set(img.tag, pull(pristine, img));
});

// --- the CLI -------------------------------------------------------------------------------------------------

function newRepo(name: string): string {
  const repo = path.join(tmp, name);
  const r = stratum(["init", "--algorithm", "sha256", repo]);
  assert.equal(r.status, 0, r.stderr);
  return repo;
}

let copies = 0;
/** A copy of `src` (links, files and modes as they are). */
function copyRepo(src: string): string {
  const dst = path.join(tmp, `copy-${++copies}`);
  const r = spawnSync("cp", ["-a", src, dst]);
  assert.equal(r.status, 0, r.stderr.toString());
  return dst;
}

function ok(repo: string, args: string[]): Buffer {
  const r = stratum(["--repo", repo, ...args]);
  assert.equal(r.status, 0, `stratum ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

function pull(repo: string, img: BuiltImage): PullReport {
  return JSON.parse(
    ok(repo, ["pull", "--json", ...PULL_ARGS[img.tag], img.ref, img.tag]).toString(),
  ) as PullReport;
}

/** What `stratum gc --json` prints. */
function gc(repo: string, dryRun = false): GcResult {
  return JSON.parse(ok(repo, ["gc", "--json", ...(dryRun ? ["--dry-run"] : [])]).toString()) as GcResult;
}

function fsckClean(repo: string, when = ""): void {
  const r = stratum(["--repo", repo, "fsck"]);
  const lines = r.stdout.toString().split("\n");
  const shown = lines.length > 12 ? [...lines.slice(0, 10), `… ${lines.length - 10} more lines`] : lines;
  assert.equal(r.status, 0, `fsck ${when}: ${shown.join("\n")}\n${r.stderr}`);
}

// --- the repository, read from disk --------------------------------------------------------------------------

const sorted = (s: Iterable<string>): string[] => [...s].sort();

function union(...sets: Iterable<string>[]): Set<string> {
  const out = new Set<string>();
  for (const s of sets) for (const x of s) out.add(x);
  return out;
}

function minus(a: Iterable<string>, b: Set<string>): Set<string> {
  return new Set([...a].filter((x) => !b.has(x)));
}

/** Object IDs of the files in objects/XX/. */
function objectsOnDisk(repo: string): Set<string> {
  const out = new Set<string>();
  const dir = path.join(repo, "objects");
  for (const d of fs.readdirSync(dir)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of fs.readdirSync(path.join(dir, d))) out.add(d + f);
  }
  return out;
}

/** Names of the non-directory entries directly in `<repo>/<kind>/` (streams or images; `refs/` left out). */
function namesIn(repo: string, kind: "streams" | "images"): Set<string> {
  return new Set(
    fs
      .readdirSync(path.join(repo, kind), { withFileTypes: true })
      .filter((e) => !e.isDirectory())
      .map((e) => e.name),
  );
}

/** Every non-directory below `dir`, relative to it. */
function filesBelow(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

function tagsOnDisk(repo: string): string[] {
  const dir = path.join(repo, "streams", "refs", "oci");
  return fs.existsSync(dir) ? filesBelow(dir) : [];
}

/** The object a streams/ or images/ link names (the link must be `../objects/XX/REST`). */
function linkedObject(repo: string, rel: string): string {
  const target = fs.readlinkSync(path.join(repo, rel));
  const id = objectIdFromPath(SHA256, target);
  assert.ok(id !== undefined && target === `../objects/${objectRelPath(id)}`, `${rel} -> ${target}`);
  return id;
}

/** Runs `fn` on the repository opened in this process (shared lock), closing it afterwards. */
async function withRepo<T>(repo: string, fn: (r: Repository) => T | Promise<T>): Promise<T> {
  const r = await Repository.open(repo);
  try {
    return await fn(r);
  } finally {
    r.close();
  }
}

/** Every EROFS the image's config stream links (`composefs.image*` named refs), and the `composefs.image.v1` one. */
async function erofsIdsOf(repo: string, img: BuiltImage): Promise<{ all: Set<string>; v1: string }> {
  const refs = await withRepo(repo, (r) => {
    const s = r.openStream(`oci-config-${img.configDigest}`, ContentType.ociConfig);
    try {
      return s.namedRefs();
    } finally {
      s.close();
    }
  });
  const all = new Set([...refs].filter(([k]) => k.startsWith("composefs.image")).map(([, v]) => v));
  const v1 = refs.get("composefs.image.v1");
  assert.ok(v1 !== undefined, `${img.tag}: the config links no composefs.image.v1`);
  return { all, v1 };
}

/** What an image reaches: its streams (by name), their objects, the JSON documents, the layer files, its EROFS. */
interface Reach {
  streams: Set<string>;
  objects: Set<string>;
  images: Set<string>;
}

/** Computed from the image's description; only the stream objects (link targets) and EROFS IDs are read. */
async function reachOf(repo: string, img: BuiltImage): Promise<Reach> {
  const streams = new Set([
    ...img.diffIds.map((d) => `oci-layer-${d}`),
    `oci-config-${img.configDigest}`,
    `oci-manifest-${img.manifestDigest}`,
  ]);
  const erofs = (await erofsIdsOf(repo, img)).all;
  const objects = union(
    img.layerObjects,
    [objectIdOf(img.configBytes), objectIdOf(img.manifestBytes)],
    [...streams].map((s) => linkedObject(repo, `streams/${s}`)),
    erofs,
  );
  return { streams, objects, images: erofs };
}

function unionReach(...rs: Reach[]): Reach {
  return {
    streams: union(...rs.map((r) => r.streams)),
    objects: union(...rs.map((r) => r.objects)),
    images: union(...rs.map((r) => r.images)),
  };
}

/** The repository holds exactly what `r` names: objects, stream and image links, and these tags. */
function assertExactly(repo: string, r: Reach, tags: string[], when: string): void {
  assert.deepEqual(sorted(objectsOnDisk(repo)), sorted(r.objects), `${when}: objects`);
  assert.deepEqual(sorted(namesIn(repo, "streams")), sorted(r.streams), `${when}: streams/`);
  assert.deepEqual(sorted(namesIn(repo, "images")), sorted(r.images), `${when}: images/`);
  assert.deepEqual(tagsOnDisk(repo), sorted(tags), `${when}: tags`);
}

/** Everything `r` names is there and usable: links, objects, and every EROFS's objects (composefs-info). */
function assertIntact(repo: string, r: Reach, when: string): void {
  const present = objectsOnDisk(repo);
  const missing = [...r.objects].filter((o) => !present.has(o));
  assert.deepEqual(missing, [], `${when}: objects missing`);
  for (const s of r.streams)
    assert.ok(present.has(linkedObject(repo, `streams/${s}`)), `${when}: streams/${s}`);
  for (const i of r.images) assert.equal(linkedObject(repo, `images/${i}`), i, `${when}: images/${i}`);
  const miss = stratum([
    "composefs-info",
    "--basedir",
    path.join(repo, "objects"),
    "missing-objects",
    ...[...r.images].map((i) => path.join(repo, "images", i)),
  ]);
  assert.equal(miss.status, 0, miss.stderr);
  assert.equal(miss.stdout.toString(), "", `${when}: objects the EROFS images use are missing`);
}

/** Each layer stream of `img` reassembles (every object's digest checked) to exactly the layer's tar. */
async function assertLayersReassemble(repo: string, img: BuiltImage): Promise<void> {
  await withRepo(repo, async (r) => {
    for (const l of img.layers) {
      const tar = await catStream(r, `oci-layer-${l.diffId}`, ContentType.ociLayer);
      assert.ok(tar.equals(l.tar), `${img.tag}: layer ${l.diffId} reassembles to its tar`);
    }
  });
}

// --- the fixtures themselves ---------------------------------------------------------------------------------

describe("dump-layers fixtures", () => {
  test("GNU tar reads every layer: the files over 64 bytes it extracts are the objects the helper expects", () => {
    const layers = new Map(images().flatMap((img) => img.layers.map((l) => [l.diffId, l] as const)));
    assert.equal(layers.size, 5 + 15 + 2, "distinct layers: base 5, v1 15 more, v2 2 more");
    for (const [i, l] of [...layers.values()].entries()) {
      // Hard links to a lower layer's file cannot be extracted from the layer alone; they carry no content.
      const inLayer = new Set(l.entries.map((e) => e.path));
      const excludes = l.entries
        .filter((e) => e.type === "hardlink" && !inLayer.has(e.target))
        .map((e) => `--exclude=${e.path}`);
      const dir = path.join(tmp, `extract-${i}`);
      fs.mkdirSync(dir);
      const x = spawnSync("tar", ["-x", "-C", dir, "--no-same-owner", ...excludes], { input: l.tar });
      assert.equal(x.status, 0, x.stderr.toString());
      assert.deepEqual(sorted(fileObjectsIn(dir)), sorted(l.objects), `layer ${i} ${l.diffId}`);
      removeDir(dir);
    }
    // Owners, modes and xattrs as described.
    const list = spawnSync("tar", ["-tv", "--numeric-owner", "--xattrs", "--xattrs-include=*"], {
      input: os.base.layers[2].tar,
    });
    assert.equal(list.status, 0, list.stderr.toString());
    assert.match(list.stdout.toString(), /^drwxr-x--- +1000\/1000 .* home\/user\/$/m);
    assert.match(list.stdout.toString(), /^-rwxr-xr-x\* +0\/0 +12000 .* usr\/bin\/ping$/m);
    assert.match(list.stdout.toString(), /^-rw------- +0\/0 +26 .* etc\/shadow$/m);
    // The shapes the lifecycle tests rely on. No two layers a pull stores share a file, so which one stores it
    // first (they run concurrently) does not change the pull's per-layer newObjects.
    for (const [img, from] of [
      [os.v1, 5],
      [os.v2, 18],
    ] as const) {
      const own = img.layers.slice(from).flatMap((l) => [...l.objects]);
      assert.equal(new Set(own).size, own.length, `${img.tag}: its new layers share no file`);
    }
    assert.deepEqual(os.v1.diffIds.slice(0, 5), os.base.diffIds);
    assert.deepEqual(os.v2.diffIds.slice(0, 18), os.v1.diffIds.slice(0, 18));
    assert.notDeepEqual(os.v2.diffIds.slice(18), os.v1.diffIds.slice(18));
    assert.ok(os.v2.layerObjects.has(os.objects.vmlinuz61) && !os.v2.erofsObjects.has(os.objects.vmlinuz61));
    assert.ok(os.v1.layers[18].objects.has(os.objects.tool) && os.v2.layers[19].objects.has(os.objects.tool));
    assert.ok(
      os.v1.layers[18].objects.has(os.objects.busybox) && os.base.layerObjects.has(os.objects.busybox),
    );
  });
});

// --- the lifecycle -------------------------------------------------------------------------------------------

describe("lifecycle of images sharing layers", () => {
  test("pulls download only new layers; the repository holds exactly what the three images reach", async () => {
    let earlier = new Set<string>();
    const erofsShown = new Map<string, string>();
    const sharedWithEarlier = { base: 0, v1: 5, v2: 18 } as const;
    for (const img of images()) {
      const rep = reports.get(img.tag) as PullReport;
      const shared = sharedWithEarlier[img.tag as keyof typeof sharedWithEarlier];
      assert.equal(rep.manifestDigest, img.manifestDigest, `${img.tag}: manifest`);
      assert.equal(rep.configDigest, img.configDigest, `${img.tag}: config`);
      assert.deepEqual(
        rep.layers.map((l) => [l.diffId, l.present, l.tarSize, l.newObjects]),
        img.layers.map((l, i) =>
          i < shared
            ? [l.diffId, true, 0, 0]
            : [l.diffId, false, l.tar.length, minus(l.objects, earlier).size],
        ),
        `${img.tag}: layers (present, tar size, new objects)`,
      );
      const newBytes = img.layers.slice(shared).reduce((n, l) => n + l.blob.size, 0);
      assert.equal(rep.downloaded, newBytes, `${img.tag}: downloaded bytes`);
      const erofs = await erofsIdsOf(pristine, img);
      assert.equal(rep.erofs, erofs.v1, `${img.tag}: the pull reports the config's EROFS`);
      erofsShown.set(img.tag, erofs.v1);
      // The EROFS uses exactly the merged tree's files over 64 bytes.
      const used = ok(pristine, ["composefs-info", "objects", path.join(pristine, "images", erofs.v1)]);
      assert.deepEqual(
        used.toString(),
        sorted(img.erofsObjects)
          .map((o) => `${objectRelPath(o)}\n`)
          .join(""),
      );
      earlier = union(earlier, img.layerObjects);
    }
    // `stratum images` shows each image's composefs.image.v1 EROFS (inspect reads it the same way).
    const listed = JSON.parse(ok(pristine, ["images", "--json"]).toString()) as {
      name: string;
      erofs: unknown;
    }[];
    assert.deepEqual(new Map(listed.map((x) => [x.name, x.erofs])), erofsShown);
    const all = unionReach(...(await Promise.all(images().map((img) => reachOf(pristine, img)))));
    assertExactly(pristine, all, ["base", "v1", "v2"], "after the three pulls");
    const bootable = images().filter((img) => PULL_ARGS[img.tag].includes("--bootable")).length;
    assert.equal(all.images.size, 3 + bootable, "one EROFS per image, two per bootable one");
    fsckClean(pristine);
  });

  test("gc with every tag removes nothing", async () => {
    const repo = copyRepo(pristine);
    const all = unionReach(...(await Promise.all(images().map((img) => reachOf(repo, img)))));
    const r = gc(repo);
    assert.deepEqual(
      [r.objectsRemoved, r.bytesRemoved, r.objectsKept, r.streamsPruned, r.imagesPruned, r.refsPruned],
      [0, 0, all.objects.size, [], [], []],
    );
    assertExactly(repo, all, ["base", "v1", "v2"], "after gc");
    fsckClean(repo);
  });

  test("untag v1 + gc removes exactly what only v1 reached; base and v2 keep every stream, object and EROFS", async () => {
    const repo = copyRepo(pristine);
    const [base, v1, v2] = await Promise.all(images().map((img) => reachOf(repo, img)));
    const kept = unionReach(base, v2);
    const gone = minus(v1.objects, kept.objects);
    // The cases that matter: v1's kernel stays (a layer v2 shares references it, v2's tree whites it out), and so
    // does the tool v1's own layer shares with v2's under another path; busybox (base) stays.
    for (const o of [os.objects.vmlinuz61, os.objects.tool, os.objects.busybox])
      assert.ok(kept.objects.has(o));
    assert.ok(!v2.images.has(os.objects.vmlinuz61));
    const sizes = new Map(
      [...gone].map((o) => [o, fs.statSync(path.join(repo, "objects", objectRelPath(o))).size]),
    );

    ok(repo, ["untag", "v1"]);
    const dry = gc(repo, true);
    assert.deepEqual(objectsOnDisk(repo), union(kept.objects, gone), "--dry-run deletes nothing");
    const r = gc(repo);
    assert.deepEqual(
      {
        objectsRemoved: r.objectsRemoved,
        bytesRemoved: r.bytesRemoved,
        objectsKept: r.objectsKept,
        streamsPruned: sorted(r.streamsPruned),
        imagesPruned: sorted(r.imagesPruned),
        refsPruned: r.refsPruned,
      },
      {
        objectsRemoved: gone.size,
        bytesRemoved: [...sizes.values()].reduce((a, b) => a + b, 0),
        objectsKept: kept.objects.size,
        streamsPruned: sorted(minus(v1.streams, kept.streams)),
        imagesPruned: sorted(v1.images),
        refsPruned: [],
      },
    );
    assert.deepEqual([dry.objectsRemoved, dry.bytesRemoved], [r.objectsRemoved, r.bytesRemoved], "--dry-run");
    assert.equal(minus(v1.streams, kept.streams).size, 2 + 2, "v1's own 2 layers, its config and manifest");
    assertExactly(repo, kept, ["base", "v2"], "after untag v1 + gc");
    assertIntact(repo, kept, "after untag v1 + gc");
    await assertLayersReassemble(repo, os.v2);
    const inspect = stratum(["--repo", repo, "inspect", "v1"]);
    assert.equal(inspect.status, 3, `inspect v1 after gc: ${inspect.stderr}`);
    fsckClean(repo);

    // With their tags, base and v2 pull again downloading nothing, to the same EROFS; v1 downloads only its own
    // two layers and comes back exactly as it was.
    for (const img of [os.base, os.v2]) {
      const again = pull(repo, img);
      assert.equal(again.downloaded, 0, `${img.tag}: downloaded`);
      assert.ok(
        again.layers.every((l) => l.present),
        `${img.tag}: every layer present`,
      );
      assert.equal(again.erofs, reports.get(img.tag)?.erofs, `${img.tag}: the same EROFS`);
    }
    const v1Again = pull(repo, os.v1);
    assert.deepEqual(
      v1Again.layers.map((l) => l.present),
      os.v1.layers.map((_, i) => i < 18),
    );
    assert.equal(v1Again.downloaded, os.v1.layers[18].blob.size + os.v1.layers[19].blob.size);
    assert.equal(v1Again.erofs, reports.get("v1")?.erofs, "v1: the same EROFS");
    assertExactly(repo, unionReach(base, v1, v2), ["base", "v1", "v2"], "after pulling v1 again");
    fsckClean(repo);
  });

  test("untag v1, v2, then base, each with gc: what remains is exactly what the rest reach; finally nothing", async () => {
    const repo = copyRepo(pristine);
    const [base, , v2] = await Promise.all(images().map((img) => reachOf(repo, img)));
    ok(repo, ["untag", "v1"]);
    gc(repo);
    ok(repo, ["untag", "v2"]);
    const r2 = gc(repo);
    assert.equal(r2.objectsRemoved, minus(v2.objects, base.objects).size);
    assert.deepEqual(sorted(r2.imagesPruned), sorted(v2.images));
    assertExactly(repo, base, ["base"], "after untag v2 + gc");
    assertIntact(repo, base, "after untag v2 + gc");
    await assertLayersReassemble(repo, os.base);
    fsckClean(repo);

    ok(repo, ["untag", "base"]);
    const r3 = gc(repo);
    assert.equal(r3.objectsRemoved, base.objects.size);
    assert.deepEqual(sorted(r3.streamsPruned), sorted(base.streams));
    assert.deepEqual(sorted(r3.imagesPruned), sorted(base.images));
    for (const kind of ["objects", "streams", "images"])
      assert.deepEqual(filesBelow(path.join(repo, kind)), [], `${kind}/ holds nothing but directories`);
    assert.ok(
      fs.readdirSync(path.join(repo, "objects")).every((d) => /^[0-9a-f]{2}$/.test(d)),
      "objects/ holds only fan-out directories",
    );
    assert.deepEqual(JSON.parse(ok(repo, ["images", "--json"]).toString()), []);
    fsckClean(repo);
  });
});

// --- kill -9 -------------------------------------------------------------------------------------------------

/** Waits for a child to end; its exit code and signal. */
function ended(
  child: ReturnType<typeof spawn>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

describe("the boot variant (pull --bootable)", () => {
  /** `composefs-info dump` of an image: path → the line's fields after the path. */
  function dump(repo: string, id: string): Map<string, string[]> {
    const image = path.join(repo, "objects", objectRelPath(id));
    const out = new Map<string, string[]>();
    for (const line of ok(repo, ["composefs-info", "dump", image]).toString().split("\n")) {
      if (line === "") continue;
      const [p, ...fields] = line.split(" ");
      out.set(p, fields);
    }
    return out;
  }
  const MTIME = 6; // dumpfile fields after the path: size mode nlink uid gid rdev mtime …
  const NLINK = 2;
  const emptied = (p: string): boolean => /^\/(boot|sysroot)\//.test(p);

  test("v1's boot EROFS: /boot and /sysroot emptied with /usr's mtime, everything else as the image; kept by a pull without --bootable", (t) => {
    const rep = reports.get("v1") as PullReport & { bootErofs?: string | null };
    assert.equal(typeof rep.bootErofs, "string");
    const bootId = rep.bootErofs as string;
    assert.notEqual(bootId, rep.erofs);
    const normal = dump(pristine, rep.erofs);
    const boot = dump(pristine, bootId);
    assert.ok(
      [...normal.keys()].some((p) => p.startsWith("/boot/vmlinuz-")),
      "the image has files in /boot",
    );
    assert.deepEqual(
      [...boot.keys()].sort(),
      [...normal.keys()].filter((p) => !emptied(p)).sort(),
      "the boot tree = the image tree minus what /boot and /sysroot held",
    );
    const usrMtime = normal.get("/usr")?.[MTIME];
    for (const dir of ["/boot", "/sysroot"]) {
      const want = [...(normal.get(dir) ?? [])];
      want[MTIME] = usrMtime as string;
      // Size and link count are the empty directory's own; the rest is kept but the mtime, which is /usr's.
      const other = (_: string, i: number): boolean => i !== 0 && i !== NLINK;
      assert.deepEqual(
        (boot.get(dir) ?? []).filter(other),
        want.filter(other),
        `${dir}: same metadata but /usr's mtime`,
      );
      assert.equal(boot.get(dir)?.[NLINK], "2", `${dir}: no subdirectories left`);
    }
    // A hard link's line names its first path ("@mode … payload = that path"); compare what it resolves to.
    const resolved = (d: Map<string, string[]>, p: string): string[] => {
      const f = d.get(p) as string[];
      return f[1].startsWith("@") ? (d.get(f[7]) as string[]) : f;
    };
    for (const p of boot.keys()) {
      if (p === "/boot" || p === "/sysroot") continue;
      const fields = resolved(boot, p);
      const before = resolved(normal, p);
      // A file hard-linked into /boot (the kernel) loses that name: only its link count differs.
      const nlinkLost = fields[NLINK] !== before[NLINK];
      if (nlinkLost) assert.ok(Number(fields[NLINK]) < Number(before[NLINK]), `${p}: fewer links`);
      assert.deepEqual(
        fields.filter((_, i) => i !== NLINK),
        before.filter((_, i) => i !== NLINK),
        `${p}: unchanged`,
      );
    }
    assert.equal(
      boot.get("/usr/lib/modules/6.1.0-stratum/vmlinuz")?.[NLINK],
      "1",
      "the kernel keeps one name",
    );

    // A pull without --bootable keeps the boot variant the config links.
    const repo = copyRepo(pristine);
    const again = JSON.parse(ok(repo, ["pull", "--json", os.v1.ref, "v1"]).toString()) as PullReport;
    assert.equal(again.downloaded, 0);
    const inspected = JSON.parse(ok(repo, ["inspect", "--json", "v1"]).toString()) as {
      bootErofs: string | null;
    };
    assert.equal(inspected.bootErofs, bootId);
    fsckClean(repo, "after a pull without --bootable");

    if (process.getuid?.() !== 0) {
      t.diagnostic("not root: mount --bootable is not exercised");
      return;
    }
    const mnt = path.join(tmp, "mnt-boot");
    fs.mkdirSync(mnt);
    const env = { ...process.env, STRATUM_RUNTIME_DIR: path.join(tmp, "runtime") };
    const mounted = stratum(["--repo", repo, "mount", "--bootable", "--json", "v1", mnt], { env });
    assert.equal(mounted.status, 0, mounted.stderr.toString());
    try {
      assert.equal((JSON.parse(mounted.stdout.toString()) as { erofs: string }).erofs, bootId);
      assert.deepEqual(fs.readdirSync(path.join(mnt, "boot")), []);
      assert.deepEqual(fs.readdirSync(path.join(mnt, "sysroot")), []);
      const kernel = fs.readFileSync(path.join(mnt, "usr/lib/modules/6.1.0-stratum/vmlinuz"));
      assert.equal(objectIdOf(kernel), os.objects.vmlinuz61);
    } finally {
      const u = stratum(["--repo", repo, "unmount", mnt], { env });
      assert.equal(u.status, 0, u.stderr.toString());
    }
  });
});

describe("kill -9", () => {
  test("during gc (v1 and v2 untagged): fsck clean after each kill, base intact, then gc completes exactly", async (t) => {
    const repo = copyRepo(pristine);
    const base = await reachOf(repo, os.base);
    const doomed = minus(objectsOnDisk(repo), base.objects).size;
    assert.ok(doomed > 500, `gc has ${doomed} objects to delete`);
    ok(repo, ["untag", "v1", "v2"]);
    // What gc removes: objects, and stream and image links.
    const size = (): number =>
      objectsOnDisk(repo).size + namesIn(repo, "streams").size + namesIn(repo, "images").size;
    const done = base.objects.size + base.streams.size + base.images.size;
    const rng = mulberry32(0x5eed6c);
    let killedMidway = 0;
    const log: string[] = [];
    for (let i = 0; i < 6; i++) {
      const count = size();
      // Kill a few milliseconds after gc removes its first file (inotify on streams/, images/ and every
      // objects/XX/), or for every third run at a random moment from the start (lock, marking, or whatever phase
      // it is in then).
      const afterFirstDeletion = i % 3 !== 2;
      const delay = afterFirstDeletion ? Math.floor(rng() * 50) : 50 + Math.floor(rng() * 400);
      const watchers: fs.FSWatcher[] = [];
      const child = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "gc"], { stdio: "ignore" });
      const exit = ended(child);
      const kill = (): void => {
        setTimeout(() => child.kill("SIGKILL"), delay);
      };
      if (afterFirstDeletion) {
        let armed = true;
        const fanOut = fs.readdirSync(path.join(repo, "objects")).filter((x) => /^[0-9a-f]{2}$/.test(x));
        for (const d of ["streams", "images", ...fanOut.map((x) => `objects/${x}`)])
          watchers.push(
            fs.watch(path.join(repo, d), () => {
              if (armed) kill();
              armed = false;
            }),
          );
      } else kill();
      const { code, signal } = await exit;
      for (const w of watchers) w.close();
      const left = size();
      const how = `${signal ?? `exit ${code}`} ${afterFirstDeletion ? "after the first removal +" : "at "}${delay} ms`;
      log.push(`run ${i}: ${how}, ${count} -> ${left} objects and links`);
      if (signal === null) assert.equal(code, 0, log.join("; "));
      else if (left < count && left > done) killedMidway++;
      fsckClean(repo, `after ${log.join("; ")}`);
      assertIntact(repo, base, log.join("; "));
      if (left === done) break;
    }
    t.diagnostic(log.join("; "));
    assert.ok(
      killedMidway >= 2,
      `only ${killedMidway} kills landed while gc was deleting: ${log.join("; ")}`,
    );
    gc(repo);
    assertExactly(repo, base, ["base"], "after the final gc");
    await assertLayersReassemble(repo, os.base);
    fsckClean(repo);
  });

  test("during the pull of v2 (base and v1 present): fsck clean, no tag, and the re-run completes", async (t) => {
    const start = copyRepo(pristine);
    ok(start, ["untag", "v2"]);
    gc(start);
    const [base, v1] = await Promise.all([os.base, os.v1].map((img) => reachOf(start, img)));
    const kept = unionReach(base, v1);
    // Kill a few seeded milliseconds after the pull prints a stage: a download, a layer being verified (its bytes
    // all in, made durable next), a layer stored, the EROFS written (then only the config, manifest and tag).
    const stages = [/: downloading/, /: verifying/, /: done/, /^composefs image/];
    const rng = mulberry32(0xb0075);
    let killedMidway = 0;
    const log: string[] = [];
    for (const stage of stages) {
      const repo = copyRepo(start);
      const delay = Math.floor(rng() * 10);
      const child = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "pull", os.v2.ref, "v2"], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      const exit = ended(child);
      let stderr = "";
      let armed = true;
      child.stderr?.on("data", (b: Buffer) => {
        stderr += b.toString();
        if (armed && stderr.split("\n").some((line) => stage.test(line))) {
          armed = false;
          setTimeout(() => child.kill("SIGKILL"), delay);
        }
      });
      const { code, signal } = await exit;
      const when = `killed ${delay} ms after ${String(stage)}`;
      const stored = namesIn(repo, "streams");
      const done = os.v2.diffIds.slice(18).filter((d) => stored.has(`oci-layer-${d}`)).length;
      log.push(`${when}: ${signal ?? `exit ${code}`}, ${done} of 2 new layers stored`);
      if (signal === "SIGKILL") {
        killedMidway++;
        assert.deepEqual(tagsOnDisk(repo), ["base", "v1"], `${when}: v2 is not tagged`);
      } else assert.equal(code, 0, `${when}: ${stderr}`);
      fsckClean(repo, when);
      assertIntact(repo, kept, when);
      // The re-run stores only the layers the killed pull did not finish, then tags v2.
      const rep = pull(repo, os.v2);
      assert.deepEqual(
        rep.layers.map((l) => l.present),
        os.v2.diffIds.map((d) => stored.has(`oci-layer-${d}`)),
        when,
      );
      assert.equal(rep.erofs, reports.get("v2")?.erofs, `${when}: the same EROFS`);
      assert.deepEqual(tagsOnDisk(repo), ["base", "v1", "v2"], when);
      // fsck in this process (the CLI's checks, without another node start-up); every object the three reach.
      const report = await withRepo(repo, (r) => fsck(r));
      assert.deepEqual(report.problems, [], `${when}, re-run: fsck`);
      const all = unionReach(kept, await reachOf(repo, os.v2));
      assert.deepEqual(
        sorted(minus(all.objects, objectsOnDisk(repo))),
        [],
        `${when}, re-run: objects missing`,
      );
    }
    t.diagnostic(log.join("; "));
    assert.ok(killedMidway >= 3, `only ${killedMidway} pulls were killed while running: ${log.join("; ")}`);
  });
});
