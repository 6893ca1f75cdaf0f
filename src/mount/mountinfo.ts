// /proc/self/mountinfo, parsed (proc(5); reference: composefs-repository.md §7, how a composefs mount is
// recognised: an overlay whose source is `composefs:<image id>`). Used to tell whether a recorded stratum mount
// is still live, to find the mount ID of a new mount, and to find the topmost mount at a path.

import * as fs from "node:fs";
import { ioError } from "../errors.ts";

export interface MountInfo {
  /** Mount ID (unique among the current mounts; may be reused after an unmount). */
  mountId: number;
  parentId: number;
  /** Mount point, relative to this process's root, with the kernel's octal escapes decoded. */
  mountPoint: string;
  fstype: string;
  /** The mount source (`composefs:<id>` for a stratum overlay). */
  source: string;
  /** Per-mount options (`ro`, `rw`, `nosuid`, …). */
  mountOptions: string;
  /** Per-superblock options (for an overlay: lowerdir=…, metacopy=on, …). */
  superOptions: string;
}

/** Decode the `\ooo` escapes the kernel writes for space, tab, newline and backslash. */
function unescapeField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse the text of a mountinfo file; lines that do not have the documented shape are skipped. */
export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (f.length < 10 || sep < 0 || f.length < sep + 4) continue;
    out.push({
      mountId: Number(f[0]),
      parentId: Number(f[1]),
      mountPoint: unescapeField(f[4]),
      mountOptions: f[5],
      fstype: f[sep + 1],
      source: unescapeField(f[sep + 2]),
      superOptions: f[sep + 3],
    });
  }
  return out;
}

/** The mounts of this process's mount namespace. */
export function readMountinfo(): MountInfo[] {
  try {
    return parseMountinfo(fs.readFileSync("/proc/self/mountinfo", "utf8"));
  } catch (err) {
    throw ioError(err, "cannot read /proc/self/mountinfo");
  }
}

/**
 * The topmost mount at `mountPoint` (the one a path lookup sees): of the mounts there, the one no other mount
 * at the same place sits on. undefined when nothing is mounted there.
 */
export function topMountAt(mounts: MountInfo[], mountPoint: string): MountInfo | undefined {
  const here = mounts.filter((m) => m.mountPoint === mountPoint);
  const covered = new Set(here.map((m) => m.parentId));
  return here.filter((m) => !covered.has(m.mountId)).pop();
}

/** The mounts at `dir` or below it, deepest first (the order to unmount them in). */
export function mountsUnder(mounts: MountInfo[], dir: string): MountInfo[] {
  const inside = mounts.filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`));
  return inside.reverse();
}

/** This process's mount namespace (`mnt:[4026531841]`), or "" when /proc does not say. */
export function mountNamespace(): string {
  try {
    return fs.readlinkSync("/proc/self/ns/mnt");
  } catch {
    return "";
  }
}
