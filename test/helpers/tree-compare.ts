// A generic comparison of two directory trees as lstat(2), readlink(2), llistxattr(2)/lgetxattr(2) and the file
// bytes see them, for proving that a mounted image shows exactly what another tool unpacked.
//
//   const ours = scanTree(mountpoint);                  // every path below the root, the root itself as ""
//   const theirs = composefsTransform(scanTree(rootfs), { keepUserXattrs: false });
//   assert.deepEqual(compareTrees(ours, theirs), []);   // one line per difference
//
// Per path: the type, the permission and special bits (07777), uid, gid, link count, mtime in nanoseconds, the
// size and sha256 of regular files, the size and target bytes of symbolic links, the device numbers of device
// nodes, and every xattr (name and value bytes). Directory sizes are not compared: they are the filesystem's
// business (ext4 blocks, EROFS bytes). Hard links: the groups of paths that share one inode must be the same.
// `composefsTransform` applies the composefs OCI transform of docs/image-tree.md to a tree unpacked by a tool that
// does not (umoci), so what stays is a comparison for exact equality.

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { getXattr, listXattrs } from "../../src/sys/native.ts";

export type NodeType = "dir" | "reg" | "symlink" | "fifo" | "chr" | "blk" | "sock";

export interface TreeNode {
  type: NodeType;
  /** Permission and special bits (st_mode & 07777). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtimeNs: bigint;
  /** Regular files and symbolic links: st_size (directories: not compared, left undefined). */
  size?: number;
  /** Regular files: sha256 of the content, hex. */
  sha256?: string;
  /** Symbolic links: the target bytes, hex. */
  target?: string;
  /** Device nodes: "major:minor". */
  rdev?: string;
  /** Every xattr: name → value in hex, names sorted. */
  xattrs: Record<string, string>;
  /** The inode number (only for grouping hard links; never compared across trees). */
  ino: bigint;
}

export interface ScannedTree {
  /** Relative paths ("" for the root, "a/b" below it), in walk order. */
  nodes: Map<string, TreeNode>;
}

function typeOf(st: fs.BigIntStats): NodeType {
  if (st.isDirectory()) return "dir";
  if (st.isFile()) return "reg";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFIFO()) return "fifo";
  if (st.isCharacterDevice()) return "chr";
  if (st.isBlockDevice()) return "blk";
  return "sock";
}

const CHUNK = Buffer.alloc(1 << 20);

function sha256Of(file: Buffer): string {
  const h = createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    for (;;) {
      const n = fs.readSync(fd, CHUNK, 0, CHUNK.length, null);
      if (n === 0) break;
      h.update(CHUNK.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

/** Linux dev_t → "major:minor" (glibc gnu_dev_major / gnu_dev_minor). */
function devString(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

function xattrsOf(file: Buffer): Record<string, string> {
  const names = listXattrs(file)
    .map((n) => n.toString("latin1"))
    .sort();
  const out: Record<string, string> = {};
  for (const name of names) {
    const v = getXattr(file, Buffer.from(name, "latin1"));
    if (v !== null) out[name] = v.toString("hex");
  }
  return out;
}

/**
 * Every entry at and below `root`, never following a symbolic link. Names are handled as bytes (latin1
 * strings), so every name a tar can hold round-trips.
 */
export function scanTree(root: string): ScannedTree {
  const nodes = new Map<string, TreeNode>();
  const rootBytes = Buffer.from(path.resolve(root));
  const visit = (rel: string): void => {
    const full = rel === "" ? rootBytes : Buffer.concat([rootBytes, Buffer.from("/" + rel, "latin1")]);
    const st = fs.lstatSync(full, { bigint: true });
    const type = typeOf(st);
    const node: TreeNode = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      nlink: Number(st.nlink),
      mtimeNs: st.mtimeNs,
      xattrs: xattrsOf(full),
      ino: st.ino,
    };
    if (type === "reg") {
      node.size = Number(st.size);
      node.sha256 = sha256Of(full);
    } else if (type === "symlink") {
      node.size = Number(st.size);
      node.target = fs.readlinkSync(full, { encoding: "buffer" }).toString("hex");
    } else if (type === "chr" || type === "blk") {
      node.rdev = devString(st.rdev);
    }
    nodes.set(rel, node);
    if (type === "dir") {
      const names = fs
        .readdirSync(full, { encoding: "buffer" })
        .map((n) => n.toString("latin1"))
        .sort();
      for (const name of names) visit(rel === "" ? name : `${rel}/${name}`);
    }
  };
  visit("");
  return { nodes };
}

/** Groups of two or more non-directory paths sharing an inode; each group sorted, the list sorted. */
export function hardLinkGroups(tree: ScannedTree): string[][] {
  const byIno = new Map<bigint, string[]>();
  for (const [p, n] of tree.nodes) {
    if (n.type === "dir") continue;
    const g = byIno.get(n.ino);
    if (g === undefined) byIno.set(n.ino, [p]);
    else g.push(p);
  }
  return [...byIno.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort())
    .sort((a, b) => ((a[0] ?? "") < (b[0] ?? "") ? -1 : 1));
}

const FIELDS = [
  "type",
  "mode",
  "uid",
  "gid",
  "nlink",
  "mtimeNs",
  "size",
  "sha256",
  "target",
  "rdev",
] as const;

const show = (p: string): string => JSON.stringify(p === "" ? "/" : Buffer.from(p, "latin1").toString());

/**
 * The differences between `actual` and `expected` (empty when they are equal): paths only on one side, then per
 * path every field of TreeNode but `ino`, then the hard-link groups. At most `limit` lines.
 */
export function compareTrees(actual: ScannedTree, expected: ScannedTree, limit = 200): string[] {
  const out: string[] = [];
  const push = (s: string): void => {
    if (out.length < limit) out.push(s);
  };
  for (const p of expected.nodes.keys()) if (!actual.nodes.has(p)) push(`${show(p)}: missing`);
  for (const p of actual.nodes.keys()) if (!expected.nodes.has(p)) push(`${show(p)}: unexpected`);
  for (const [p, want] of expected.nodes) {
    const have = actual.nodes.get(p);
    if (have === undefined) continue;
    if (have.type !== want.type) {
      push(`${show(p)}: type ${have.type}, expected ${want.type}`);
      continue;
    }
    for (const f of FIELDS) {
      if (f === "type") continue;
      const a = have[f];
      const b = want[f];
      if (a !== b) {
        const fmt = (v: string | number | bigint | undefined): string =>
          f === "mode" && typeof v === "number" ? v.toString(8) : String(v);
        push(`${show(p)}: ${f} ${fmt(a)}, expected ${fmt(b)}`);
      }
    }
    const names = new Set([...Object.keys(have.xattrs), ...Object.keys(want.xattrs)]);
    for (const k of [...names].sort()) {
      const a = have.xattrs[k];
      const b = want.xattrs[k];
      if (a === b) continue;
      if (a === undefined) push(`${show(p)}: xattr ${k} missing`);
      else if (b === undefined) push(`${show(p)}: unexpected xattr ${k}=${a}`);
      else push(`${show(p)}: xattr ${k}=${a}, expected ${b}`);
    }
  }
  const groupsA = hardLinkGroups(actual).map((g) => g.join("\0"));
  const groupsE = hardLinkGroups(expected).map((g) => g.join("\0"));
  const setA = new Set(groupsA);
  const setE = new Set(groupsE);
  for (const g of groupsE)
    if (!setA.has(g)) push(`hard-link group {${g.split("\0").map(show).join(", ")}}: not one inode`);
  for (const g of groupsA)
    if (!setE.has(g)) push(`hard-link group {${g.split("\0").map(show).join(", ")}}: unexpected`);
  return out;
}

/** The xattrs an OCI image's composefs tree keeps (docs/image-tree.md rule 6). */
export function keptXattr(name: string, keepUserXattrs: boolean): boolean {
  return name === "security.capability" || (keepUserXattrs && name.startsWith("user."));
}

export interface TransformOptions {
  keepUserXattrs: boolean;
  /**
   * The root's metadata when the tree has no `/usr` directory (rule 4's fallback: the last layer's root entry,
   * else mode 0755, root:root, mtime 0, no xattrs). Ignored when there is a `/usr`.
   */
  rootWithoutUsr?: Pick<TreeNode, "mode" | "uid" | "gid" | "mtimeNs" | "xattrs">;
}

/**
 * The composefs OCI transform (docs/image-tree.md rules 4–7) applied to a tree unpacked without it: the root takes
 * `/usr`'s mode, owner, mtime and xattrs; `/run`'s children go (its mtime becomes `/usr`'s); xattrs are filtered on
 * every inode; link counts follow (a directory: 2 + its subdirectories, a file: the names left for its inode).
 * Returns a new tree; `tree` is not changed.
 */
export function composefsTransform(tree: ScannedTree, opts: TransformOptions): ScannedTree {
  const nodes = new Map<string, TreeNode>();
  for (const [p, n] of tree.nodes) nodes.set(p, { ...n, xattrs: { ...n.xattrs } });
  const usr = nodes.get("usr");
  const root = nodes.get("");
  if (root === undefined) throw new Error("composefsTransform: no root");
  const usrDir = usr?.type === "dir" ? usr : undefined;
  const meta = usrDir ?? opts.rootWithoutUsr ?? { mode: 0o755, uid: 0, gid: 0, mtimeNs: 0n, xattrs: {} };
  Object.assign(root, {
    mode: meta.mode,
    uid: meta.uid,
    gid: meta.gid,
    mtimeNs: meta.mtimeNs,
    xattrs: { ...meta.xattrs },
  });
  const run = nodes.get("run");
  if (run?.type === "dir") {
    for (const p of [...nodes.keys()]) if (p.startsWith("run/")) nodes.delete(p);
    if (usrDir !== undefined) run.mtimeNs = usrDir.mtimeNs;
  }
  for (const n of nodes.values())
    for (const k of Object.keys(n.xattrs)) if (!keptXattr(k, opts.keepUserXattrs)) delete n.xattrs[k];
  // Link counts of what is left.
  const names = new Map<bigint, number>();
  const subdirs = new Map<string, number>();
  for (const [p, n] of nodes) {
    if (n.type !== "dir") names.set(n.ino, (names.get(n.ino) ?? 0) + 1);
    else if (p !== "") {
      const parent = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
      subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1);
    }
  }
  for (const [p, n] of nodes)
    n.nlink = n.type === "dir" ? 2 + (subdirs.get(p) ?? 0) : (names.get(n.ino) ?? 1);
  return { nodes };
}

/** A one-line summary of what a tree holds (what a comparison covered): entries by type, and the rarer things. */
export function treeStats(tree: ScannedTree): string {
  const types = new Map<string, number>();
  let special = 0;
  let xattrs = 0;
  for (const n of tree.nodes.values()) {
    types.set(n.type, (types.get(n.type) ?? 0) + 1);
    if ((n.mode & 0o7000) !== 0) special++;
    xattrs += Object.keys(n.xattrs).length;
  }
  const byType = [...types].map(([k, v]) => `${v} ${k}`).join(", ");
  return (
    `${tree.nodes.size} paths (${byType}); ${special} with setuid/setgid/sticky bits; ${xattrs} xattrs; ` +
    `${hardLinkGroups(tree).length} hard-link groups`
  );
}
