// Relative symlinks inside the repository (reference: composefs-repository.md §1.1 "Relative symlink
// computation"). Streams, images and refs are symlinks whose targets are relative paths, so a repository can be
// moved or bind-mounted anywhere. Links are replaced atomically (temporary link at the repository root renamed
// over the destination), and every resolution stays beneath the repository root: a link that points outside it,
// or a loop, is an error naming the link.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError, isErrno } from "../errors.ts";

/**
 * The relative target for a link at `linkRel` pointing at `targetRel` (both relative to the repository root):
 * strip the common leading directories, then one `..` per remaining directory of the link.
 */
export function relativeLinkTarget(linkRel: string, targetRel: string): string {
  const from = linkRel.split("/").slice(0, -1);
  const to = targetRel.split("/");
  let i = 0;
  while (i < from.length && i < to.length - 1 && from[i] === to[i]) i++;
  return [...from.slice(i).map(() => ".."), ...to.slice(i)].join("/");
}

/**
 * Create the directories of `dirRel` below `root` one component at a time. A component that is a symlink is
 * refused (E_UNSAFE_PATH) rather than followed: a planted link such as `streams/refs/x -> /etc` must not make
 * us create directories or links outside the repository.
 */
function mkdirsBeneath(root: string, dirRel: string, what: string): void {
  let cur = root;
  const done: string[] = [];
  for (const c of dirRel.split("/").filter((x) => x !== "" && x !== ".")) {
    done.push(c);
    cur = path.join(cur, c);
    if (c === "..") throw new StratumError("E_UNSAFE_PATH", `${what}: the path climbs out of its directory`);
    for (;;) {
      let st: fs.Stats;
      try {
        st = fs.lstatSync(cur);
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw err;
        try {
          fs.mkdirSync(cur, { mode: 0o755 });
          break;
        } catch (e) {
          if (isErrno(e, "EEXIST")) continue; // created concurrently: look at what it is
          throw e;
        }
      }
      if (st.isSymbolicLink())
        throw new StratumError(
          "E_UNSAFE_PATH",
          `${what}: ${done.join("/")} is a symlink (to ${fs.readlinkSync(cur)}); refusing to create anything through it`,
        );
      break; // a directory (or something else, which the caller's symlink(2) will then fail on)
    }
  }
}

/** Create or atomically replace the symlink `root/linkRel` → `target`, creating parent directories. */
export function replaceSymlink(root: string, linkRel: string, target: string): void {
  const dest = path.join(root, linkRel);
  try {
    mkdirsBeneath(root, path.posix.dirname(linkRel), `cannot create link ${linkRel}`);
    try {
      fs.symlinkSync(target, dest);
      return;
    } catch (err) {
      if (!isErrno(err, "EEXIST")) throw err;
    }
    try {
      if (fs.readlinkSync(dest) === target) return;
    } catch (err) {
      if (!isErrno(err, "EINVAL")) throw err; // EINVAL: exists but is not a symlink; rename replaces it
    }
    const tmp = path.join(root, `.symlink-${randomBytes(6).toString("hex")}`);
    fs.symlinkSync(target, tmp);
    try {
      fs.renameSync(tmp, dest);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  } catch (err) {
    throw ioError(err, `cannot create link ${linkRel}`);
  }
}

const MAX_HOPS = 40;

/**
 * Resolve `rel` (relative to `root`) by following symlinks component by component, never leaving `root`.
 * Returns the final path relative to root. Throws E_UNSAFE_PATH when a link escapes the root or loops, and
 * E_NOT_FOUND when a component does not exist (`what` names the thing being resolved in messages).
 */
export function resolveBeneath(root: string, rel: string, what: string): string {
  const pending = rel.split("/").filter((c) => c !== "" && c !== ".");
  const done: string[] = [];
  let hops = 0;
  while (pending.length) {
    const c = pending.shift() as string;
    if (c === "..") {
      if (done.length === 0) throw new StratumError("E_UNSAFE_PATH", `${what} points outside the repository`);
      done.pop();
      continue;
    }
    const cur = path.join(root, ...done, c);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR"))
        throw new StratumError("E_NOT_FOUND", `${what}: ${[...done, c].join("/")} does not exist`);
      throw ioError(err, what);
    }
    if (!st.isSymbolicLink()) {
      done.push(c);
      continue;
    }
    if (++hops > MAX_HOPS)
      throw new StratumError("E_UNSAFE_PATH", `${what}: too many levels of symbolic links (a symlink loop)`);
    const target = fs.readlinkSync(cur);
    if (target.startsWith("/"))
      throw new StratumError(
        "E_UNSAFE_PATH",
        `${what}: ${[...done, c].join("/")} is an absolute symlink (${target}); repository links must be relative`,
      );
    pending.unshift(...target.split("/").filter((x) => x !== "" && x !== "."));
  }
  return done.join("/");
}

/**
 * Where the ref link `linkRel` points, as a path relative to root, following links only while they stay under
 * a `refs/` directory (a ref may name another ref). The result is the first target outside `refs/`, e.g.
 * `streams/<name>` or `images/<hex>`; it is not itself resolved further.
 */
export function resolveRefLink(root: string, linkRel: string, what: string): string {
  let cur = linkRel;
  for (let hops = 0; hops <= MAX_HOPS; hops++) {
    const dir = resolveBeneath(root, path.posix.dirname(cur), what);
    let target: string;
    try {
      target = fs.readlinkSync(path.join(root, dir, path.posix.basename(cur)));
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw new StratumError("E_NOT_FOUND", `${what} does not exist`);
      if (isErrno(err, "EINVAL")) throw new StratumError("E_CORRUPT", `${what}: ${cur} is not a symlink`);
      throw ioError(err, what);
    }
    if (target.startsWith("/"))
      throw new StratumError(
        "E_UNSAFE_PATH",
        `${what} is an absolute symlink (${target}); refs must be relative`,
      );
    const joined = path.posix.normalize(path.posix.join(dir, target));
    if (joined === ".." || joined.startsWith("../") || joined === ".")
      throw new StratumError("E_UNSAFE_PATH", `${what} points outside the repository (${target})`);
    if (!/^(streams|images)\/refs\//.test(joined)) return joined;
    cur = joined;
  }
  throw new StratumError("E_UNSAFE_PATH", `${what}: too many levels of symbolic links (a symlink loop)`);
}
