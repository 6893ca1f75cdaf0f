// `stratum mount` / `stratum unmount` and live mounts as gc roots (docs/mount.md; src/mount/image-mount.ts,
// src/mount/records.ts). The `multi` fixture image is pulled (with its EROFS) into a fresh repository per test,
// with its own runtime directory for mount records, and mounted through the real CLI: by tag, manifest digest
// and EROFS ID the tree is what umoci unpacks (minus /run, emptied by the composefs transform), read-only,
// recognisable in /proc/self/mountinfo, and gone without a trace after unmount (no mount, loop device, record
// or scratch directory). Writable mounts write where they should; a lost EROFS says "pull again"; gc keeps a
// mounted image and its objects until the unmount, and stale records protect nothing and are removed; SIGKILL
// at random moments of a mount leaves a clean repository and either a working mount or none; a mount stratum
// did not make is never unmounted. Needs root (mounts); pure parts (option strings, mountinfo parsing,
// record liveness) run everywhere.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test, type TestContext } from "node:test";
import { objectRelPath } from "../src/format/object-id.ts";
import { imageOverlayOptions, mountImage, unmountImage } from "../src/mount/image-mount.ts";
import { parseMountinfo, readMountinfo, topMountAt } from "../src/mount/mountinfo.ts";
import {
  isLive,
  listRecords,
  processStart,
  removeAbandonedTemps,
  runtimeDir,
  writeRecord,
  type MountRecord,
} from "../src/mount/records.ts";
import { imageObjectIds } from "../src/repo/images.ts";
import { Repository } from "../src/repo/repository.ts";
import { MNT_DETACH, mount as sysMount, umount2 } from "../src/sys/native.ts";
import { STRATUM_BIN, stratum, type CliResult } from "./helpers/cli.ts";
import {
  buildImages,
  diffTree,
  imagesUnavailable,
  MULTI_EXPECTED,
  type ExpectedTree,
  type TestImages,
} from "./helpers/images.ts";
import { mulberry32 } from "./helpers/prng.ts";
import type { PullReport } from "./helpers/pull-checks.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const reason = process.getuid?.() === 0 ? imagesUnavailable() : "needs root (mounts)";
const tmp = makeTempDir("stratum-mount-");
let images: TestImages | undefined;

before(async () => {
  if (reason === null) images = await buildImages();
});
after(() => {
  images?.remove();
  removeDir(tmp);
});

/** What `multi` mounts as: what umoci unpacks, except that the composefs transform empties /run. */
const inRun = (p: string): boolean => p.startsWith("run/");
const EXPECTED: ExpectedTree = {
  entries: new Map([...MULTI_EXPECTED.entries].filter(([p]) => !inRun(p))),
  hardlinks: MULTI_EXPECTED.hardlinks.filter((g) => !g.some(inRun)),
  absent: [...MULTI_EXPECTED.absent, ...[...MULTI_EXPECTED.entries.keys()].filter(inRun)],
};

/** One test's world: a repository with `multi` pulled as `m`, a runtime dir, a mount point. */
interface World {
  dir: string;
  repo: string;
  runtime: string;
  mnt: string;
  pulled: PullReport;
  cli(args: string[]): CliResult;
}

let worlds = 0;

/** Loop devices whose backing file is under `dir` (`losetup -a`: "/dev/loopN: []: (/path)"). */
function loopsUnder(dir: string): string[] {
  const r = spawnSync("losetup", ["-a"], { encoding: "utf8" });
  return r.stdout.split("\n").filter((l) => l.includes(`(${dir}/`));
}

/** Detach every mount under `dir` and every loop device backed by a file under it. */
function forceClean(dir: string): void {
  for (let i = 0; i < 5; i++) {
    const left = readMountinfo()
      .filter((m) => m.mountPoint.startsWith(`${dir}/`))
      .reverse();
    if (left.length === 0) break;
    for (const m of left) {
      try {
        umount2(m.mountPoint, MNT_DETACH);
      } catch {
        // already gone (a parent's detach took it)
      }
    }
  }
  for (const l of loopsUnder(dir)) spawnSync("losetup", ["-d", l.slice(0, l.indexOf(":"))]);
}

function newWorld(t: TestContext): World {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(tmp, `w${++worlds}-`)));
  t.after(() => {
    forceClean(dir);
    if (readMountinfo().some((m) => m.mountPoint.startsWith(`${dir}/`)))
      throw new Error(`mounts left under ${dir}; not removing it`);
    removeDir(dir);
  });
  const repo = path.join(dir, "repo");
  const runtime = path.join(dir, "run");
  const mnt = path.join(dir, "mnt");
  fs.mkdirSync(mnt);
  const env = { STRATUM_RUNTIME_DIR: runtime };
  const cli = (args: string[]): CliResult => stratum(["--repo", repo, ...args], { env });
  const init = stratum(["init", "--algorithm", "sha256", repo]);
  assert.equal(init.status, 0, init.stderr);
  const im = images as TestImages;
  const p = cli(["pull", "--json", "--quiet", "--keep-user-xattrs", im.ref("multi"), "m"]);
  assert.equal(p.status, 0, p.stderr);
  return { dir, repo, runtime, mnt, pulled: JSON.parse(p.stdout.toString()) as PullReport, cli };
}

function skipUnlessReady(t: TestContext): boolean {
  if (reason !== null) {
    t.skip(reason);
    return true;
  }
  return false;
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.status, 0, `${what}: exit ${r.status}: ${r.stderr}`);
  return r;
}

function fsckClean(w: World): void {
  const r = w.cli(["fsck"]);
  assert.equal(r.status, 0, `fsck: ${r.stdout.toString()}${r.stderr}`);
}

interface MountJson {
  mountpoint: string;
  image: string;
  erofs: string;
  manifestDigest?: string;
  options: string;
}

function mountJson(w: World, args: string[]): MountJson {
  return JSON.parse(
    ok(w.cli(["mount", "--json", ...args]), `mount ${args.join(" ")}`).stdout.toString(),
  ) as MountJson;
}

/** The overlay at `mnt`, if the topmost mount there is a composefs one. */
function composefsAt(mnt: string): { source: string; superOptions: string } | undefined {
  const top = topMountAt(readMountinfo(), mnt);
  return top?.fstype === "overlay" && top.source.startsWith("composefs:") ? top : undefined;
}

function recordFiles(w: World): string[] {
  const dir = path.join(w.runtime, "mounts");
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

function scratchLeft(w: World): string[] {
  const dir = path.join(w.runtime, "scratch");
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

/** After an unmount (or a failed mount): nothing mounted at or under the world, no loop, record or scratch. */
function assertNothingLeft(w: World): void {
  assert.equal(topMountAt(readMountinfo(), w.mnt), undefined, "nothing mounted at the mount point");
  assert.deepEqual(
    readMountinfo()
      .filter((m) => m.mountPoint.startsWith(`${w.runtime}/`))
      .map((m) => m.mountPoint),
    [],
    "no scratch mounts",
  );
  assert.deepEqual(loopsUnder(w.dir), [], "no loop devices");
  assert.deepEqual(recordFiles(w), [], "no mount records");
  assert.deepEqual(scratchLeft(w), [], "no scratch directories");
}

/** Resolves when a mount record (`*.json`) is in `dir`; close() stops watching. */
function recordAppears(dir: string): { appeared: Promise<void>; close(): void } {
  const present = (): boolean => fs.readdirSync(dir).some((n) => n.endsWith(".json") && !n.startsWith("."));
  let watcher: fs.FSWatcher | undefined;
  const appeared = new Promise<void>((resolve) => {
    watcher = fs.watch(dir, () => {
      if (present()) resolve();
    });
    if (present()) resolve();
  });
  return { appeared, close: () => watcher?.close() };
}

function erofsPath(w: World, id = w.pulled.erofs): string {
  return path.join(w.repo, "objects", objectRelPath(id));
}

describe("stratum mount and unmount", () => {
  test("by tag, manifest digest and EROFS ID: the image's tree, read-only, named composefs:<id>; unmount leaves nothing", async (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const id = w.pulled.erofs;
    const digest = w.pulled.manifestDigest;
    const forms: [string, string | undefined][] = [
      ["m", digest],
      [digest, digest],
      [`@${digest}`, digest],
      [digest.slice(7, 7 + 16), digest],
      [id, undefined],
    ];
    for (const [image, manifestDigest] of forms) {
      const j = mountJson(w, [image, w.mnt]);
      assert.deepEqual(
        { mountpoint: j.mountpoint, image: j.image, erofs: j.erofs, manifestDigest: j.manifestDigest },
        { mountpoint: w.mnt, image, erofs: id, manifestDigest },
        image,
      );
      assert.match(j.options, /^ro,lowerdir=.*::.*\/objects,metacopy=on,redirect_dir=on$/);
      assert.deepEqual(await diffTree(w.mnt, EXPECTED), [], `tree mounted by ${image}`);
      assert.throws(() => fs.writeFileSync(path.join(w.mnt, "new-file"), "x"), { code: "EROFS" });
      assert.throws(() => fs.writeFileSync(path.join(w.mnt, "etc/motd"), "x"), { code: "EROFS" });
      const top = composefsAt(w.mnt);
      assert.equal(top?.source, `composefs:${id}`, "mountinfo: overlay with source composefs:<id>");
      assert.match(top?.superOptions ?? "", /(^|,)ro(,|$)/);
      assert.deepEqual(loopsUnder(w.dir), [], "file-backed EROFS: no loop device");
      const records = listRecords(w.runtime);
      assert.equal(records.length, 1);
      assert.deepEqual(
        {
          repository: records[0].record.repository,
          image: records[0].record.image,
          mountpoint: records[0].record.mountpoint,
          state: records[0].record.state,
        },
        { repository: w.repo, image: id, mountpoint: w.mnt, state: "mounted" },
      );
      // Mounting twice at one place is refused.
      const again = w.cli(["mount", image, w.mnt]);
      assert.equal(again.status, 4, again.stderr);
      assert.match(again.stderr, /already a stratum mount/);

      assert.equal(ok(w.cli(["unmount", w.mnt]), "unmount").stdout.toString(), `unmounted ${w.mnt}\n`);
      assertNothingLeft(w);
      assert.deepEqual(fs.readdirSync(w.mnt), [], "the mount point is an empty directory again");
    }
    fsckClean(w);
  });

  test("the loop-device fallback (library): the loop device is released at unmount", async (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const env = { STRATUM_RUNTIME_DIR: w.runtime };
    const repo = await Repository.open(w.repo);
    try {
      const m = mountImage(repo, "m", w.mnt, { erofsBacking: "loop", env });
      assert.equal(m.backing, "loop");
    } finally {
      repo.close();
    }
    assert.equal(loopsUnder(w.dir).length, 1, "one loop device, backed by the EROFS object");
    assert.ok(loopsUnder(w.dir)[0].includes(erofsPath(w)));
    assert.deepEqual(await diffTree(w.mnt, EXPECTED), []);
    unmountImage(w.mnt, { env });
    for (let i = 0; i < 50 && loopsUnder(w.dir).length > 0; i++) await sleep(100);
    assertNothingLeft(w);
  });

  test("--upperdir/--workdir writes to the upper dir; --read-write is writable and forgotten at unmount; not both", (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const upper = path.join(w.dir, "upper");
    const work = path.join(w.dir, "work");
    fs.mkdirSync(upper);
    fs.mkdirSync(work);

    for (const args of [
      ["--upperdir", upper, "--workdir", work, "--read-write"],
      ["--upperdir", upper],
      ["--workdir", work],
    ]) {
      const r = w.cli(["mount", ...args, "m", w.mnt]);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assertNothingLeft(w);
    }

    const j = mountJson(w, ["--upperdir", upper, "--workdir", work, "m", w.mnt]);
    assert.match(j.options, new RegExp(`upperdir=${upper},workdir=${work}`));
    fs.writeFileSync(path.join(w.mnt, "new-file"), "written through the mount\n");
    fs.appendFileSync(path.join(w.mnt, "etc/motd"), "appended\n");
    assert.equal(fs.readFileSync(path.join(upper, "new-file"), "utf8"), "written through the mount\n");
    assert.match(fs.readFileSync(path.join(upper, "etc/motd"), "utf8"), /appended\n$/);
    ok(w.cli(["unmount", w.mnt]), "unmount");
    assertNothingLeft(w);
    assert.ok(fs.existsSync(path.join(upper, "new-file")), "the upper dir keeps what was written");
    fsckClean(w); // the lower layers did not change

    mountJson(w, ["m", w.mnt]);
    const imageRoot = fs.statSync(w.mnt);
    ok(w.cli(["unmount", w.mnt]), "unmount");
    const rw = mountJson(w, ["--read-write", "m", w.mnt]);
    assert.match(rw.options, /^lowerdir=.*,upperdir=.*,workdir=/);
    const rwRoot = fs.statSync(w.mnt);
    assert.deepEqual(
      [rwRoot.mode, rwRoot.uid, rwRoot.gid],
      [imageRoot.mode, imageRoot.uid, imageRoot.gid],
      "the writable root looks like the image's root",
    );
    fs.writeFileSync(path.join(w.mnt, "transient"), "gone after unmount\n");
    fs.rmSync(path.join(w.mnt, "etc/motd"));
    assert.equal(fs.readFileSync(path.join(w.mnt, "transient"), "utf8"), "gone after unmount\n");
    assert.deepEqual(
      readMountinfo()
        .filter((m) => m.mountPoint.startsWith(`${w.runtime}/`))
        .map((m) => m.mountPoint),
      [],
      "the transient tmpfs is held by the overlay only",
    );
    ok(w.cli(["unmount", w.mnt]), "unmount");
    assertNothingLeft(w);
    mountJson(w, ["--read-write", "m", w.mnt]);
    assert.ok(!fs.existsSync(path.join(w.mnt, "transient")), "a new transient layer starts empty");
    assert.ok(fs.existsSync(path.join(w.mnt, "etc/motd")));
    ok(w.cli(["unmount", w.mnt]), "unmount");
    assertNothingLeft(w);
  });

  test("a missing EROFS: 'pull again', nothing mounted, no record", (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const boot = w.cli(["mount", "--bootable", "m", w.mnt]);
    assert.equal(boot.status, 3, boot.stderr);
    assert.equal(
      boot.stderr,
      "stratum: error: image m has no boot EROFS image (pull again with --bootable)\n",
    );
    assertNothingLeft(w);

    fs.rmSync(erofsPath(w));
    for (const image of ["m", w.pulled.manifestDigest]) {
      const r = w.cli(["mount", image, w.mnt]);
      assert.equal(r.status, 3, r.stderr);
      assert.equal(r.stderr, `stratum: error: image ${image} has no composefs EROFS image (pull again)\n`);
      assertNothingLeft(w);
    }
    const byId = w.cli(["mount", w.pulled.erofs, w.mnt]);
    assert.equal(byId.status, 3, byId.stderr);
    assert.match(byId.stderr, /no EROFS image [0-9a-f]{64} in .*\/images/);
    // An object that exists but is not linked under images/ is never mounted.
    const layerObject = fs
      .readdirSync(path.join(w.repo, "objects"))
      .filter((d) => /^[0-9a-f]{2}$/.test(d))
      .flatMap((d) => fs.readdirSync(path.join(w.repo, "objects", d)).map((f) => d + f))[0];
    const unlinked = w.cli(["mount", layerObject, w.mnt]);
    assert.equal(unlinked.status, 3, unlinked.stderr);
    assertNothingLeft(w);
    const noDir = w.cli(["mount", "m", path.join(w.dir, "nonexistent")]);
    assert.equal(noDir.status, 3, noDir.stderr);
  });

  test("gc and gc --dry-run keep a mounted image and every object it uses until the unmount", async (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const id = w.pulled.erofs;
    const repo = await Repository.open(w.repo);
    const used = imageObjectIds(repo, id);
    repo.close();
    assert.ok(used.length >= 3, "the image refers to several objects");

    mountJson(w, ["m", w.mnt]);
    ok(w.cli(["rm", "m"]), "rm");
    const dry = JSON.parse(ok(w.cli(["gc", "--dry-run", "--json"]), "gc -n").stdout.toString()) as {
      mountedImages: string[];
      objectsRemoved: number;
    };
    assert.deepEqual(dry.mountedImages, [id]);
    assert.ok(dry.objectsRemoved > 0, "the layers and the config go");
    const g = JSON.parse(ok(w.cli(["gc", "--json"]), "gc").stdout.toString()) as {
      mountedImages: string[];
      objectsRemoved: number;
    };
    assert.deepEqual(g.mountedImages, [id]);
    assert.equal(g.objectsRemoved, dry.objectsRemoved, "dry run and gc agree");
    assert.ok(fs.existsSync(erofsPath(w)), "the EROFS object stays");
    assert.ok(fs.existsSync(path.join(w.repo, "images", id)), "and its images/ link");
    for (const o of used) assert.ok(fs.existsSync(erofsPath(w, o)), `object ${o} stays`);
    assert.deepEqual(await diffTree(w.mnt, EXPECTED), [], "files read correctly through the mount after gc");
    fsckClean(w);
    assert.equal(recordFiles(w).length, 1, "gc keeps the live record");

    ok(w.cli(["unmount", w.mnt]), "unmount");
    const g2 = JSON.parse(ok(w.cli(["gc", "--json"]), "gc").stdout.toString()) as { mountedImages: string[] };
    assert.deepEqual(g2.mountedImages, []);
    assert.ok(!fs.existsSync(erofsPath(w)), "after the unmount gc removes the EROFS");
    assert.ok(!fs.existsSync(path.join(w.repo, "images", id)));
    for (const o of used) assert.ok(!fs.existsSync(erofsPath(w, o)), `object ${o} goes`);
    fsckClean(w);
    assertNothingLeft(w);
  });

  test("stale records (umount by hand, written by hand) and other repositories' records protect nothing", (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);

    // Unmounted by hand: the record stays behind, stale.
    mountJson(w, ["m", w.mnt]);
    umount2(w.mnt, 0);
    assert.equal(recordFiles(w).length, 1);
    // A record written by hand for a mount that never was.
    const fake: MountRecord = {
      ...listRecords(w.runtime)[0].record,
      mountpoint: path.join(w.dir, "never-mounted"),
      mountId: 999999,
      scratch: path.join(w.runtime, "scratch", "0123456789abcdef"),
    };
    fs.writeFileSync(path.join(w.runtime, "mounts", "0123456789abcdef.json"), JSON.stringify(fake));
    fs.mkdirSync(path.join(fake.scratch, "erofs"), { recursive: true });
    // A record in state "mounting" whose process is gone.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    fs.writeFileSync(
      path.join(w.runtime, "mounts", "fedcba9876543210.json"),
      JSON.stringify({ ...fake, state: "mounting", mountId: undefined, pid: Number(dead.stdout) }),
    );
    assert.equal(listRecords(w.runtime).length, 3);

    ok(w.cli(["rm", "m"]), "rm");
    const dry = JSON.parse(ok(w.cli(["gc", "--dry-run", "--json"]), "gc -n").stdout.toString()) as {
      mountedImages: string[];
    };
    assert.deepEqual(dry.mountedImages, []);
    assert.equal(recordFiles(w).length, 3, "a dry run removes no record");
    const g = JSON.parse(ok(w.cli(["gc", "--json"]), "gc").stdout.toString()) as { mountedImages: string[] };
    assert.deepEqual(g.mountedImages, []);
    assert.ok(!fs.existsSync(erofsPath(w)), "nothing protected the EROFS");
    assertNothingLeft(w);

    // A live mount recorded for another repository does not protect this one's image.
    const p = w.cli(["pull", "--quiet", "--keep-user-xattrs", (images as TestImages).ref("multi"), "m"]);
    assert.equal(p.status, 0, p.stderr);
    mountJson(w, ["m", w.mnt]);
    const [own] = listRecords(w.runtime);
    fs.writeFileSync(own.file, JSON.stringify({ ...own.record, repository: path.join(w.dir, "other-repo") }));
    ok(w.cli(["rm", "m"]), "rm");
    const g2 = JSON.parse(ok(w.cli(["gc", "--json"]), "gc").stdout.toString()) as { mountedImages: string[] };
    assert.deepEqual(g2.mountedImages, []);
    assert.ok(!fs.existsSync(erofsPath(w)), "another repository's record protects nothing here");
    assert.equal(recordFiles(w).length, 1, "and is left alone");
    ok(w.cli(["unmount", w.mnt]), "unmount works whatever repository the record names");
    assertNothingLeft(w);
  });

  test("SIGKILL at random moments of a mount: fsck clean, a working mount or none, re-run works, gc keeps tags", async (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const env = { ...process.env, STRATUM_RUNTIME_DIR: w.runtime };
    const args = [STRATUM_BIN, "--repo", w.repo, "mount", "m", w.mnt];
    // How long a whole mount takes here, start-up included.
    const t0 = performance.now();
    ok(w.cli(["mount", "m", w.mnt]), "mount");
    const full = performance.now() - t0;
    ok(w.cli(["unmount", w.mnt]), "unmount");

    const rand = mulberry32(0x5eed);
    const mountsDir = path.join(w.runtime, "mounts");
    let mountedAfterKill = 0;
    let staleAfterKill = 0;
    let nothingAfterKill = 0;
    for (let i = 0; i < 12; i++) {
      // A third of the kills anywhere in the run; the others just after the mount record appears (0-3 ms,
      // 3-23 ms), where the EROFS, tmpfs and overlay are mounted. Every fourth run is --read-write.
      const extra = i % 4 === 3 ? ["--read-write"] : [];
      const child = spawn(process.execPath, [...args, ...extra], { env, stdio: "ignore" });
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      let when: string;
      if (i % 3 === 0) {
        const delay = rand() * full;
        when = `${delay.toFixed(0)} ms after the start`;
        await Promise.race([sleep(delay), exited]);
      } else {
        const delay = i % 3 === 1 ? rand() * 3 : 3 + rand() * 20;
        when = `${delay.toFixed(1)} ms after the record appeared`;
        const watch = recordAppears(mountsDir);
        await Promise.race([watch.appeared, exited]);
        watch.close();
        await sleep(delay);
      }
      child.kill("SIGKILL");
      await exited;
      const what = `${extra.join(" ")} killed ${when}`;

      fsckClean(w);
      if (composefsAt(w.mnt) !== undefined) {
        mountedAfterKill++;
        ok(w.cli(["unmount", w.mnt]), `unmount, ${what}`);
      } else if (recordFiles(w).length > 0) {
        staleAfterKill++;
        if (staleAfterKill % 2 === 1) {
          // gc removes the stale record and whatever is still mounted in its scratch directory.
          ok(w.cli(["gc"]), `gc, ${what}`);
          assertNothingLeft(w);
        } // else the next mount does
      } else nothingAfterKill++;
      assert.equal(
        topMountAt(readMountinfo(), w.mnt),
        undefined,
        `nothing mounted at the mount point, ${what}`,
      );
      ok(w.cli(["mount", "m", w.mnt]), `mount again, ${what}`);
      assert.ok(fs.existsSync(path.join(w.mnt, "bin/tool")));
      ok(w.cli(["unmount", w.mnt]), "unmount");
      assertNothingLeft(w);
    }
    t.diagnostic(
      `after the kills: ${mountedAfterKill} mounted, ${staleAfterKill} stale records, ${nothingAfterKill} ` +
        `nothing (a whole mount takes ${full.toFixed(0)} ms)`,
    );
    assert.ok(mountedAfterKill + staleAfterKill > 0, "some kills landed after the record was written");
    ok(w.cli(["gc"]), "gc");
    fsckClean(w);
    mountJson(w, ["m", w.mnt]);
    assert.deepEqual(await diffTree(w.mnt, EXPECTED), [], "gc kept all of the tagged image");
    ok(w.cli(["unmount", w.mnt]), "unmount");
    assertNothingLeft(w);
  });

  test("unmount refuses what stratum did not mount, and leaves it mounted", (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const other = path.join(w.dir, "tmpfs");
    fs.mkdirSync(other);
    sysMount("tmpfs", other, "tmpfs", 0, "size=1m");
    try {
      const r = w.cli(["unmount", other]);
      assert.equal(r.status, 3, r.stderr);
      assert.equal(
        r.stderr,
        `stratum: error: ${other} is not a stratum mount: the mount there is tmpfs tmpfs, which stratum did not make\n`,
      );
      assert.equal(topMountAt(readMountinfo(), other)?.fstype, "tmpfs", "still mounted");
      // A tmpfs over a stratum mount: the topmost mount is not ours either.
      mountJson(w, ["m", w.mnt]);
      sysMount("tmpfs", w.mnt, "tmpfs", 0, "size=1m");
      const covered = w.cli(["unmount", w.mnt]);
      assert.equal(covered.status, 3, covered.stderr);
      assert.equal(topMountAt(readMountinfo(), w.mnt)?.fstype, "tmpfs");
      umount2(w.mnt, 0);
      ok(w.cli(["unmount", w.mnt]), "unmount once uncovered");
    } finally {
      umount2(other, MNT_DETACH);
    }
    const plain = w.cli(["unmount", w.mnt]);
    assert.equal(plain.status, 3, plain.stderr);
    assert.match(plain.stderr, /is not a stratum mount: nothing is mounted there/);
    assertNothingLeft(w);
  });

  test("verity=require on a repository with fs-verity", async (t) => {
    if (skipUnlessReady(t)) return;
    const w = newWorld(t);
    const repo = await Repository.open(w.repo);
    const verity = repo.verity;
    repo.close();
    if (verity !== "enforced") {
      t.skip(
        "the repository's filesystem has no fs-verity (insecure mode), so the overlay cannot require it",
      );
      return;
    }
    const j = mountJson(w, ["m", w.mnt]);
    assert.match(j.options, /,verity=require$/);
    assert.match(composefsAt(w.mnt)?.superOptions ?? "", /verity=require/);
    ok(w.cli(["unmount", w.mnt]), "unmount");
    assertNothingLeft(w);
  });
});

describe("mount pieces without mounting", () => {
  test("overlay options: data-only lower layer, metacopy, redirect_dir, upper/work, verity=require, escapes", () => {
    assert.equal(
      imageOverlayOptions({ erofsDir: "/run/s/e", objectsDir: "/r/objects", verity: false }),
      "lowerdir=/run/s/e::/r/objects,metacopy=on,redirect_dir=on",
    );
    assert.equal(
      imageOverlayOptions({
        erofsDir: "/run/s/e",
        objectsDir: "/r,1/obj:ects",
        upperdir: "/u",
        workdir: "/w",
        verity: true,
      }),
      "lowerdir=/run/s/e::/r\\,1/obj\\:ects,metacopy=on,redirect_dir=on,upperdir=/u,workdir=/w,verity=require",
    );
  });

  test("mountinfo: fields, octal escapes, the topmost of stacked mounts", () => {
    const text = [
      "22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw",
      "40 22 0:40 / /mnt/a\\040b ro,relatime - overlay composefs:abcd ro,lowerdir=/x::/y,metacopy=on",
      "41 40 0:41 / /mnt/a\\040b rw shared:5 - tmpfs tmpfs rw,size=1024k",
      "garbage",
    ].join("\n");
    const m = parseMountinfo(text);
    assert.equal(m.length, 3);
    assert.deepEqual(
      { ...m[1] },
      {
        mountId: 40,
        parentId: 22,
        mountPoint: "/mnt/a b",
        mountOptions: "ro,relatime",
        fstype: "overlay",
        source: "composefs:abcd",
        superOptions: "ro,lowerdir=/x::/y,metacopy=on",
      },
    );
    assert.equal(topMountAt(m, "/mnt/a b")?.mountId, 41);
    assert.equal(topMountAt(m, "/mnt"), undefined);
  });

  test("record liveness: mount present, mount gone, mounting process alive or dead, other namespace", () => {
    const ns = "mnt:[1]";
    const base: MountRecord = {
      version: 1,
      repository: "/r",
      image: "ab",
      mountpoint: "/m",
      source: "composefs:ab",
      state: "mounted",
      mountId: 40,
      namespace: ns,
      pid: 1,
      pidStart: "no such start time",
      scratch: "/run/stratum/scratch/00",
      transient: false,
    };
    const mounts = parseMountinfo("40 22 0:40 / /m ro - overlay composefs:ab ro\n");
    assert.equal(isLive(base, mounts, ns), true);
    assert.equal(isLive({ ...base, mountId: 41 }, mounts, ns), false, "another mount ID: ours is gone");
    assert.equal(isLive(base, [], ns), false);
    assert.equal(isLive({ ...base, source: "composefs:cd" }, mounts, ns), false);
    assert.equal(isLive(base, [], "mnt:[2]"), true, "another namespace cannot be checked: kept");
    const mounting = { ...base, state: "mounting" as const, mountId: undefined };
    assert.equal(isLive(mounting, mounts, ns), true, "killed after the overlay mount: live");
    assert.equal(isLive(mounting, [], ns), false, "killed before: stale");
    const me = fs.readFileSync("/proc/self/stat", "utf8");
    const start = me.slice(me.lastIndexOf(")") + 2).split(" ")[19];
    assert.equal(isLive({ ...mounting, pid: process.pid, pidStart: start }, [], ns), true, "still mounting");
  });

  test("temporary record files: a killed writer's are removed, a running writer's are kept", () => {
    const runtime = path.join(tmp, "temps-runtime");
    const dir = path.join(runtime, "mounts");
    fs.mkdirSync(dir, { recursive: true });
    // A real write leaves no temporary file; its name pattern is what identifies a writer.
    writeRecord(path.join(dir, "0123.json"), {
      version: 1,
      repository: "/r",
      image: "ab",
      mountpoint: "/m",
      source: "composefs:ab",
      state: "mounting",
      namespace: "mnt:[1]",
      pid: process.pid,
      pidStart: processStart(process.pid) ?? "",
      scratch: "/s",
      transient: false,
    });
    assert.deepEqual(fs.readdirSync(dir), ["0123.json"]);
    const mine = `.tmp-4567.json-${process.pid}-${processStart(process.pid)}-0a0b0c0d`;
    const dead = `.tmp-89ab.json-${process.pid}-1-0a0b0c0d`; // same pid, another start time: gone
    const foreign = ".tmp-something-else";
    for (const n of [mine, dead, foreign]) fs.writeFileSync(path.join(dir, n), "{");
    removeAbandonedTemps(runtime);
    assert.deepEqual(fs.readdirSync(dir).sort(), [mine, foreign, "0123.json"].sort());
  });

  test("the mount(2)/umount2(2) bindings check their arguments and report errno", (t) => {
    assert.throws(
      () => sysMount("none", "/nonexistent", "tmpfs", 0x20, null),
      RangeError,
      "MS_REMOUNT refused",
    );
    assert.throws(() => sysMount("none", "/nonexistent", "tmpfs", 4096, null), RangeError, "MS_BIND refused");
    assert.throws(() => umount2("/nonexistent", 1 as 0), RangeError, "MNT_FORCE refused");
    assert.throws(() => sysMount("none", "/x\0y", "tmpfs", 0, null), TypeError);
    if (process.getuid?.() !== 0) {
      t.diagnostic("not root: the errno checks are skipped");
      return;
    }
    assert.throws(() => sysMount("none", "/nonexistent-dir", "tmpfs", 0, null), {
      code: "ENOENT",
      syscall: "mount",
    });
    const dir = fs.mkdtempSync(path.join(tmp, "not-a-mount-"));
    assert.throws(() => umount2(dir, 0), { code: "EINVAL", syscall: "umount2" });
  });

  test("runtime directory: $STRATUM_RUNTIME_DIR, else /run/stratum as root, else $XDG_RUNTIME_DIR/stratum", () => {
    assert.equal(runtimeDir({ STRATUM_RUNTIME_DIR: "/x/y", XDG_RUNTIME_DIR: "/z" }), "/x/y");
    const root = process.getuid?.() === 0;
    assert.equal(runtimeDir({ XDG_RUNTIME_DIR: "/z" }), root ? "/run/stratum" : "/z/stratum");
  });
});
