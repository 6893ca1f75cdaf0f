// Locking compatible with composefs-rs (composefs-repository.md §1.5): every open repository holds flock(LOCK_SH)
// on the repository directory; gc converts it to LOCK_EX and so waits until no other process has the repository
// open. Checked against a second stratum process and against util-linux flock(1), which takes the same kind of
// lock on the directory as composefs-rs does.

import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { after, afterEach, describe, test } from "node:test";
import { objectRelPath, type ObjectId } from "../src/format/object-id.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { gc, type GcResult } from "../src/repo/gc.ts";
import { Repository } from "../src/repo/repository.ts";
import { PROJECT_ROOT } from "./helpers/cli.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-lock-");
let dirCounter = 0;

/** Children this file started, and the `sleep` commands flock(1) ran for it (by PID); stopped after each test. */
const children = new Set<ChildProcess>();
const sleepers = new Set<number>();

/** Kill a child by its PID, only while Node has not reaped it (so the PID is still that child's). */
function stop(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined)
    process.kill(child.pid, "SIGKILL");
  children.delete(child);
}

/** Kill a `sleep` run under flock(1), by PID, once, after checking the PID still names that sleep. */
function stopSleeper(pid: number): void {
  if (!sleepers.delete(pid)) return;
  try {
    if (fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").startsWith("sleep\0")) process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

afterEach(() => {
  for (const pid of [...sleepers]) stopSleeper(pid);
  for (const child of [...children]) stop(child);
});
after(() => removeDir(tmp));

/** The child: opens the repository with stratum's own code, says "ready", and keeps it open until killed. */
const HOLDER = path.join(tmp, "hold-open.mjs");
fs.writeFileSync(
  HOLDER,
  `import { Repository } from ${JSON.stringify(pathToFileURL(path.join(PROJECT_ROOT, "src/repo/repository.ts")).href)};
const repo = await Repository.open(process.argv[2]);
process.stdout.write("ready " + repo.lock.held + "\\n");
setInterval(() => {}, 1 << 30);
`,
);

function track(child: ChildProcess): ChildProcess {
  assert.ok(child.pid !== undefined, "child started");
  children.add(child);
  return child;
}

/** Resolve with the first stdout line starting with `prefix`; reject on exit or after `ms`. */
function waitForLine(child: ChildProcess, prefix: string, ms = 15000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`no "${prefix}" from child after ${ms} ms: ${err}`)), ms);
    child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      const line = buf.split("\n").find((l) => l.startsWith(prefix));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code}) before "${prefix}": ${err}`));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** A repository with one tagged stream and one unreferenced object (which gc deletes). */
async function repoWithGarbage(): Promise<{ root: string; garbage: ObjectId; garbagePath: string }> {
  const root = path.join(tmp, `r${dirCounter++}`);
  Repository.init(root);
  const repo = await Repository.open(root);
  try {
    const w = repo.createStream(ContentType.none);
    w.writeExternalBuffer(Buffer.alloc(1000, "k"));
    repo.publishStream("kept", w.finish().id);
    repo.setStreamRef("kept", "kept");
    const garbage = repo.objects.writeBuffer(Buffer.from("nobody references this")).id;
    return { root, garbage, garbagePath: path.join(root, "objects", objectRelPath(garbage)) };
  } finally {
    repo.close();
  }
}

/** Start gc and observe it: whether it has settled, and whether it reported waiting. */
function startGc(repo: Repository): {
  done: Promise<GcResult>;
  settled: () => boolean;
  waited: () => number;
} {
  let settled = false;
  let waits = 0;
  const done = gc(repo, { onWait: () => waits++ });
  done.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { done, settled: () => settled, waited: () => waits };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function flockCmd(args: string[]): number | null {
  const r = spawnSync("flock", args, { stdio: "ignore" });
  if (r.error) throw r.error;
  return r.status;
}

describe("repository lock (composefs-rs compatible)", () => {
  test("gc waits while another stratum process has the repository open, then completes", async () => {
    const { root, garbage, garbagePath } = await repoWithGarbage();
    const child = track(
      spawn(process.execPath, ["--import", "tsx", HOLDER, root], {
        cwd: PROJECT_ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    assert.equal(await waitForLine(child, "ready"), "ready sh", "the child holds the shared lock");
    const repo = await Repository.open(root);
    try {
      // A dry run only needs the shared lock, so it does not wait.
      const dry = await within(gc(repo, { dryRun: true }), 2000, "gc --dry-run");
      assert.equal(dry.objectsRemoved, 1);

      const run = startGc(repo);
      await sleep(300);
      assert.equal(run.waited(), 1, "onWait called once");
      assert.equal(run.settled(), false, "gc finished while another process had the repository open");
      assert.ok(fs.existsSync(garbagePath), "gc deleted while waiting");

      stop(child);
      await exited(child);
      const res = await within(run.done, 5000, "gc after the other process exited");
      assert.equal(res.objectsRemoved, 1);
      assert.equal(fs.existsSync(garbagePath), false, `object ${garbage} still there`);
      assert.equal(repo.lock.held, "sh", "gc goes back to the shared lock");
      assert.equal(repo.hasStream("kept"), true);
    } finally {
      stop(child);
      repo.close();
    }
  });

  test("gc waits while `flock -s <repo>` (as composefs-rs takes it) is held, then completes", async () => {
    const { root, garbagePath } = await repoWithGarbage();
    // flock forks the command; the shell execs sleep and reports its PID so both can be killed by PID.
    const child = track(
      spawn("flock", ["-s", root, "sh", "-c", 'echo "ready $$"; exec sleep 60'], {
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    const sleeper = Number((await waitForLine(child, "ready")).split(" ")[1]);
    assert.ok(Number.isInteger(sleeper) && sleeper > 0);
    sleepers.add(sleeper);
    const repo = await Repository.open(root);
    try {
      const run = startGc(repo);
      await sleep(300);
      assert.equal(run.waited(), 1, "onWait called once");
      assert.equal(run.settled(), false, "gc did not wait for the flock(1) holder");
      assert.ok(fs.existsSync(garbagePath), "gc deleted while waiting");

      stopSleeper(sleeper); // flock(1) exits when its command does, releasing the lock
      await exited(child);
      const res = await within(run.done, 5000, "gc after flock(1) exited");
      assert.equal(res.objectsRemoved, 1);
      assert.equal(fs.existsSync(garbagePath), false);
    } finally {
      stopSleeper(sleeper);
      stop(child);
      repo.close();
    }
  });

  test("`flock -x -n <repo>` fails while the repository is open, succeeds after close", async () => {
    const { root } = await repoWithGarbage();
    assert.equal(flockCmd(["-x", "-n", root, "true"]), 0, "nothing holds the lock yet");
    const repo = await Repository.open(root);
    try {
      assert.equal(
        flockCmd(["-x", "-n", root, "true"]),
        1,
        "exclusive flock(1) got the lock of an open repository",
      );
      assert.equal(flockCmd(["-s", "-n", root, "true"]), 0, "the lock is shared: other readers may open it");
      const second = await Repository.open(root);
      second.close();
      assert.equal(
        flockCmd(["-x", "-n", root, "true"]),
        1,
        "closing a second handle released the first's lock",
      );
    } finally {
      repo.close();
    }
    assert.equal(flockCmd(["-x", "-n", root, "true"]), 0, "close() released the lock");
  });

  test("opening waits (onLockWait) while flock(1) holds the exclusive lock, as during a gc", async () => {
    const { root } = await repoWithGarbage();
    const child = track(
      spawn("flock", ["-x", root, "sh", "-c", 'echo "ready $$"; exec sleep 60'], {
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    const sleeper = Number((await waitForLine(child, "ready")).split(" ")[1]);
    sleepers.add(sleeper);
    try {
      await assert.rejects(Repository.open(root, { lockTimeoutMs: 100 }), { code: "E_LOCKED" });
      let waits = 0;
      const opening = Repository.open(root, { onLockWait: () => waits++ });
      await sleep(200);
      assert.equal(waits, 1);
      stopSleeper(sleeper);
      await exited(child);
      const repo = await within(opening, 5000, "open after flock(1) exited");
      assert.equal(repo.lock.held, "sh");
      repo.close();
    } finally {
      stopSleeper(sleeper);
      stop(child);
    }
  });
});
