// Mounting a composefs image (reference: composefs-erofs.md §3.3 mount sequence; composefs-repository.md §7):
// the EROFS metadata image is mounted read-only (a loop device with autoclear, released when the last user
// goes), then overlayfs stacks it as the lower layer with the object directory as a data-only lower layer
// (`lowerdir=<erofs>::<objects>`), `metacopy=on,redirect_dir=on`, plus `verity=require` when the objects carry
// fs-verity. The EROFS mount point is then detached, so the overlay alone keeps the image mounted; unmounting
// the overlay releases everything. Uses util-linux mount(8)/umount(8).

import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StratumError } from "../errors.ts";

export interface ComposefsMountOptions {
  /** Require fs-verity digests to match (overlay `verity=require`). */
  verity?: boolean;
  /** Writable overlay: both upperdir and workdir, on the same filesystem. */
  upperdir?: string;
  workdir?: string;
  /** Mount the overlay read-write without an upper directory is impossible; this only affects the ro flag. */
  readOnly?: boolean;
}

function run(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) throw new StratumError("E_IO", `${what}: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0)
    throw new StratumError(
      "E_IO",
      `${what}: ${cmd} ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`,
    );
}

/** Escape a path for an overlayfs layer option (`:` separates layers, `,` options, `\` escapes). */
function layerPath(p: string): string {
  return path.resolve(p).replace(/[\\:,]/g, (c) => `\\${c}`);
}

/** Overlay mount options for a composefs mount. Exported for tests. */
export function overlayOptions(erofsDir: string, objectsDir: string, opts: ComposefsMountOptions): string {
  const o = [`lowerdir=${layerPath(erofsDir)}::${layerPath(objectsDir)}`, "metacopy=on", "redirect_dir=on"];
  if (opts.upperdir || opts.workdir) {
    if (!opts.upperdir || !opts.workdir)
      throw new StratumError("E_USAGE", "upperdir and workdir go together");
    o.push(`upperdir=${layerPath(opts.upperdir)}`, `workdir=${layerPath(opts.workdir)}`);
  } else if (opts.readOnly !== false) o.unshift("ro");
  if (opts.verity) o.push("verity=require");
  return o.join(",");
}

/** Mount `image` (a composefs EROFS file) with objects from `objectsDir` at `mountpoint`. */
export function mountComposefs(
  image: string,
  objectsDir: string,
  mountpoint: string,
  opts: ComposefsMountOptions = {},
): void {
  if (!fs.statSync(mountpoint, { throwIfNoEntry: false })?.isDirectory())
    throw new StratumError("E_NOT_FOUND", `mount point ${mountpoint} is not a directory`);
  const erofsDir = fs.mkdtempSync(path.join(os.tmpdir(), ".stratum-erofs-"));
  let erofsMounted = false;
  try {
    run("mount", ["-t", "erofs", "-o", "ro,loop", image, erofsDir], `mounting EROFS image ${image}`);
    erofsMounted = true;
    run(
      "mount",
      ["-t", "overlay", "composefs", "-o", overlayOptions(erofsDir, objectsDir, opts), mountpoint],
      `mounting overlay at ${mountpoint}`,
    );
  } finally {
    // The overlay holds its own reference to the EROFS mount; detach ours in every case.
    if (erofsMounted) spawnSync("umount", ["-l", erofsDir]);
    fs.rmdirSync(erofsDir);
  }
}

/** Unmount a composefs mount made by mountComposefs (the EROFS and its loop device go with it). */
export function unmountComposefs(mountpoint: string): void {
  run("umount", [mountpoint], `unmounting ${mountpoint}`);
}
