// Tests for the native addon (src/sys/native.ts) against the real kernel: flock across processes, syncfs,
// O_TMPFILE + linkFd, fs-verity (skipped with the reason when the kernel or filesystem lacks it), error shape
// and argument validation.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath, pathToFileURL } from "node:url";

import {
  O_TMPFILE,
  flock,
  fsverityEnable,
  fsverityMeasure,
  isSysError,
  linkFd,
  syncfs,
  syncfsAsync,
  type SysError,
} from "../src/sys/native.ts";
import * as native from "../src/sys/native.ts";

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const nativeModuleUrl = pathToFileURL(path.join(projectRoot, "src", "sys", "native.ts")).href;

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stratum-native-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openFd(t: TestContext, file: string, flags: number, mode?: number): number {
  const fd = fs.openSync(file, flags, mode);
  t.after(() => {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed by the test
    }
  });
  return fd;
}

/** Asserts err is a Node-style system error from the addon with the given code and syscall. */
function assertSysError(err: unknown, codes: readonly string[], syscall: string): SysError {
  assert.ok(isSysError(err), `expected a system error, got ${String(err)}`);
  assert.ok(codes.includes(err.code), `expected code in ${codes.join("/")}, got ${err.code}`);
  const errnos = os.constants.errno as Record<string, number | undefined>;
  assert.equal(err.errno, -(errnos[err.code] ?? NaN));
  assert.equal(err.syscall, syscall);
  assert.match(err.message, new RegExp(`^${err.code}: [a-z].*, ${syscall}$`));
  return err;
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail("expected an exception");
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

test("flock: shared lock held by another process blocks exclusive until it exits", async (t) => {
  const dir = tempDir(t);
  const script = path.join(dir, "holder.mjs");
  fs.writeFileSync(
    script,
    [
      `import fs from "node:fs";`,
      `import { flock } from ${JSON.stringify(nativeModuleUrl)};`,
      `const fd = fs.openSync(${JSON.stringify(dir)}, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);`,
      `if (!flock(fd, "sh", true)) throw new Error("child could not take LOCK_SH");`,
      `process.stdout.write("locked\\n");`,
      `process.stdin.resume();`,
      `process.stdin.on("end", () => process.exit(0));`,
    ].join("\n"),
  );
  const child = spawn(process.execPath, ["--import", "tsx", script], {
    cwd: projectRoot,
    stdio: ["pipe", "pipe", "inherit"],
  });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, "SIGKILL");
    }
    await waitExit(child);
  });

  await new Promise<void>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`child did not lock in time; stdout: ${out}`)), 20_000);
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("locked\n")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited early with ${code}; stdout: ${out}`));
    });
  });

  const dirFlags = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY;
  const shared = openFd(t, dir, dirFlags);
  const exclusive = openFd(t, dir, dirFlags);
  assert.equal(flock(shared, "sh", true), true, "LOCK_SH alongside the child's LOCK_SH");
  assert.equal(flock(exclusive, "ex", true), false, "LOCK_EX while shared locks are held");
  assert.equal(flock(shared, "un", false), true);
  assert.equal(flock(exclusive, "ex", true), false, "LOCK_EX while the child still holds LOCK_SH");

  child.stdin?.end();
  await waitExit(child);
  assert.equal(child.exitCode, 0);

  assert.equal(flock(exclusive, "ex", true), true, "LOCK_EX after the child exited");
  assert.equal(flock(shared, "sh", true), false, "LOCK_SH while this process holds LOCK_EX");
  assert.equal(flock(exclusive, "un", false), true);
  assert.equal(flock(shared, "sh", false), true, "blocking LOCK_SH once free");
});

test("syncfs on a directory fd succeeds; a bad fd throws EBADF", (t) => {
  const dir = tempDir(t);
  const fd = openFd(t, dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  assert.equal(syncfs(fd), undefined);
  assertSysError(
    catchError(() => syncfs(1_000_000_000)),
    ["EBADF"],
    "syncfs",
  );
});

test("syncfsAsync returns a promise that resolves to when the flush ended (its own thread's clock); a bad fd rejects with EBADF", async (t) => {
  const dir = tempDir(t);
  const fd = openFd(t, dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  // Dirty data for the flush to write, so it takes a moment.
  fs.writeFileSync(path.join(dir, "data"), Buffer.alloc(32 << 20, 1));
  const before = process.hrtime.bigint();
  const pending = syncfsAsync(fd);
  assert.ok(pending instanceof Promise, "returns at once, with a promise");
  // Blocking this thread for a while: the time syncfs returned is taken on its own thread, not when the
  // promise settles here.
  const busyUntil = Date.now() + 300;
  while (Date.now() < busyUntil);
  const blockedUntil = process.hrtime.bigint();
  const doneAt = await pending;
  const settledAt = process.hrtime.bigint();
  assert.equal(typeof doneAt, "bigint");
  assert.ok(doneAt > before && doneAt < settledAt, "on process.hrtime.bigint()'s clock, during the call");
  if (doneAt >= blockedUntil) t.diagnostic("the flush outlasted 300 ms of busy main thread");
  let rejected: unknown;
  try {
    await syncfsAsync(1_000_000_000);
  } catch (err) {
    rejected = err;
  }
  assertSysError(rejected, ["EBADF"], "syncfs");
});

test("O_TMPFILE + linkFd names an anonymous file and never replaces an existing one", (t) => {
  if (process.arch === "x64" || process.arch === "arm64") assert.equal(O_TMPFILE, 0o20200000);
  const dir = tempDir(t);
  const fd = openFd(t, dir, O_TMPFILE | fs.constants.O_RDWR, 0o644);
  assert.deepEqual(fs.readdirSync(dir), [], "an O_TMPFILE file has no name");
  const bytes = Buffer.from("stratum O_TMPFILE payload\n\x00\xff", "latin1");
  fs.writeSync(fd, bytes);

  const target = path.join(dir, "name");
  linkFd(fd, target);
  assert.deepEqual(fs.readFileSync(target), bytes);
  assert.equal(fs.statSync(target).mode & 0o777, 0o644 & ~process.umask());

  fs.writeFileSync(path.join(dir, "other"), "existing");
  const err = assertSysError(
    catchError(() => linkFd(fd, path.join(dir, "other"))),
    ["EEXIST"],
    "linkat",
  );
  assert.equal(err.code, "EEXIST");
  assert.equal(fs.readFileSync(path.join(dir, "other"), "utf8"), "existing", "existing file untouched");
  assertSysError(
    catchError(() => linkFd(fd, target)),
    ["EEXIST"],
    "linkat",
  );
  assert.deepEqual(fs.readFileSync(target), bytes);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["name", "other"]);
});

test("fs-verity enable + measure", (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "data");
  fs.writeFileSync(file, Buffer.alloc(10_000, 0x5a));
  const plain = path.join(dir, "plain");
  fs.writeFileSync(plain, "no verity here");

  const fd = openFd(t, file, fs.constants.O_RDONLY);
  let enableError: unknown;
  try {
    fsverityEnable(fd, 1);
  } catch (err) {
    enableError = err;
  }

  const plainFd = openFd(t, plain, fs.constants.O_RDONLY);
  if (enableError !== undefined) {
    const err = assertSysError(enableError, ["EOPNOTSUPP", "ENOTTY"], "fsverity_enable");
    assertSysError(
      catchError(() => fsverityMeasure(plainFd)),
      ["EOPNOTSUPP", "ENOTTY", "ENODATA"],
      "fsverity_measure",
    );
    t.skip(`kernel/filesystem has no fs-verity: ${err.code}`);
    return;
  }

  const measured = fsverityMeasure(fd);
  assert.equal(measured.algorithm, 1);
  assert.equal(measured.digest.length, 32);
  const expected = execFileSync("fsverity", ["digest", "--compact", file], { encoding: "utf8" }).trim();
  assert.equal(measured.digest.toString("hex"), expected);
  assertSysError(
    catchError(() => fsverityMeasure(plainFd)),
    ["ENODATA"],
    "fsverity_measure",
  );
});

test("argument misuse throws TypeError or RangeError", (t) => {
  const dir = tempDir(t);
  const fd = openFd(t, dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const loose = <A extends unknown[], R>(fn: (...args: A) => R) => fn as unknown as (...args: unknown[]) => R;

  assert.throws(() => loose(flock)("3", "sh", true), TypeError);
  assert.throws(() => loose(flock)(fd, "exclusive", true), TypeError);
  assert.throws(() => loose(flock)(fd, "s", true), TypeError);
  assert.throws(() => loose(flock)(fd, 1, true), TypeError);
  assert.throws(() => loose(flock)(fd, "ex", 1), TypeError);
  assert.throws(() => loose(flock)(fd, "ex"), TypeError);
  assert.throws(() => loose(syncfs)(), TypeError);
  assert.throws(() => loose(syncfs)(null), TypeError);
  assert.throws(() => loose(fsverityEnable)(fd, "1"), TypeError);
  assert.throws(() => loose(fsverityMeasure)({}), TypeError);
  assert.throws(() => loose(linkFd)(fd, 5), TypeError);
  assert.throws(() => loose(linkFd)(fd, "a\0b"), TypeError);
  assert.throws(() => loose(linkFd)(BigInt(fd), "x"), TypeError);

  assert.throws(() => syncfs(-1), RangeError);
  assert.throws(() => syncfs(1.5), RangeError);
  assert.throws(() => syncfs(Number.NaN), RangeError);
  assert.throws(() => loose(fsverityEnable)(fd, 3), RangeError);
  assert.deepEqual(fs.readdirSync(dir), [], "nothing was created by the rejected calls");
});

describe("xattrs (llistxattr, lgetxattr, lsetxattr)", () => {
  test("binary-safe names and values, no symlink following, null for a missing attribute", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stratum-xattr-"));
    try {
      const name = Buffer.concat([Buffer.from(dir + "/f-"), Buffer.from([0xff, 0xfe])]);
      fs.writeFileSync(name, "x");
      const value = Buffer.from([0xff, 0x00, 0xfe, 0x80, 0xc3]);
      native.setXattr(name, Buffer.from("user.bin"), value);
      native.setXattr(name, Buffer.from("user.empty"), Buffer.alloc(0));
      assert.deepEqual(
        native
          .listXattrs(name)
          .map((n) => n.toString())
          .sort(),
        ["user.bin", "user.empty"],
      );
      assert.deepEqual(native.getXattr(name, Buffer.from("user.bin")), value);
      assert.deepEqual(native.getXattr(name, Buffer.from("user.empty")), Buffer.alloc(0));
      assert.equal(native.getXattr(name, Buffer.from("user.none")), null);
      // Agrees with getfattr (attr package), through an ASCII-named hard link to the same inode.
      const ascii = path.join(dir, "ascii");
      fs.linkSync(name, ascii);
      const hex = execFileSync(
        "getfattr",
        ["--only-values", "-n", "user.bin", "-e", "hex", "--absolute-names", ascii],
        {
          encoding: "latin1",
        },
      );
      assert.equal(hex, value.toString("latin1")); // --only-values prints the raw bytes
      // A symlink's own xattrs are read, not its target's (user.* is not allowed on symlinks: empty list).
      const link = Buffer.from(path.join(dir, "link"));
      fs.symlinkSync(name, link);
      assert.deepEqual(native.listXattrs(link), []);
      assert.equal(native.getXattr(link, Buffer.from("user.bin")), null);
      assert.throws(() => native.listXattrs(Buffer.from(path.join(dir, "missing"))), { code: "ENOENT" });
      assert.throws(() => native.getXattr(Buffer.from("a\0b"), Buffer.from("user.x")), TypeError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
