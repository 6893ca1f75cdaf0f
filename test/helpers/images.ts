// Fixture container images built locally with real tools, no network (except the Debian mirror, once, for the
// cached `debian` rootfs). Layer tars are written with GNU tar from directory trees made here (or by hand, for
// the hostile ones) and added verbatim with `umoci raw add-layer`, so every layer's exact content is known;
// skopeo recompresses (zstd) and copies (registries, archives); index and attestation blobs are written here.
//
//   const images = await buildImages();          // once per process, in a temp dir; images.remove() in after()
//   images.ref("multi")                          // "oci:/tmp/…/layout:multi", for skopeo and stratum
//   MULTI_EXPECTED                               // the tree `multi` must unpack to; diffTree(dir, MULTI_EXPECTED)
//   await pushImage(images.layout, "multi", reg, "test/multi:latest")
//   await skopeoArchive(images.layout, "multi", "docker-archive", out, { ref: "test/multi:latest" })
//   await loadIntoDaemon(podman, dockerArchive); await daemonSave(podman, ["test/multi:latest"], out)
//   const deb = await buildDebianImage();        // mmdebstrap rootfs, cached in /var/cache/stratum-test
//   const broken = await buildBrokenImages(dir)  // wrong digest, truncated/missing blob, escaping tars
//
// Images in `images.layout` (tags): multi, zstd, multiarch (an OCI index; its per-platform images are also tagged
// multiarch-amd64, multiarch-arm64, multiarch-armv7), dup. See docs/testing.md for what each one contains.
// Docker media types exist only in registries (skopeo's oci: transport ignores them in index.json): pushImage
// with format "v2s2", and pushDockerManifestList for a Docker manifest list.

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { discardDir, run, unavailable, type Daemon } from "./daemons.ts";
import { defaultCreds, registryFetch, type RegistryTarget } from "./registry.ts";

// --- OCI layout plumbing -----------------------------------------------------------------------------------

export const MT = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  inToto: "application/vnd.in-toto+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface OciIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface OciConfig {
  architecture: string;
  os: string;
  variant?: string;
  rootfs: { type: "layers"; diff_ids: string[] };
  [key: string]: unknown;
}

const REF_NAME = "org.opencontainers.image.ref.name";

export const sha256 = (b: Buffer | string): string =>
  "sha256:" + createHash("sha256").update(b).digest("hex");

export async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return "sha256:" + h.digest("hex");
}

export function blobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(":");
  if (alg === undefined || hex === undefined) throw new Error(`not a digest: ${digest}`);
  return path.join(layout, "blobs", alg, hex);
}

export function readBlob(layout: string, digest: string): Buffer {
  return fs.readFileSync(blobPath(layout, digest));
}

/** Stores `data` as a blob of the layout; returns its descriptor. */
export function writeBlob(layout: string, mediaType: string, data: Buffer | string): Descriptor {
  const buf = Buffer.from(data);
  const digest = sha256(buf);
  fs.mkdirSync(path.join(layout, "blobs", "sha256"), { recursive: true });
  fs.writeFileSync(blobPath(layout, digest), buf);
  return { mediaType, digest, size: buf.length };
}

export function readLayoutIndex(layout: string): OciIndex {
  return JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8")) as OciIndex;
}

/** The descriptor tagged `tag` in the layout's index.json (its ref.name annotation). */
export function tagDescriptor(layout: string, tag: string): Descriptor {
  const d = readLayoutIndex(layout).manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (d === undefined) throw new Error(`${layout}: no image tagged ${tag}`);
  return d;
}

/** Points `tag` at `desc` in index.json (replacing an existing entry with that tag). */
export function setTag(layout: string, tag: string, desc: Descriptor): void {
  const index = readLayoutIndex(layout);
  index.manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
  index.manifests.push({ ...desc, annotations: { ...desc.annotations, [REF_NAME]: tag } });
  fs.writeFileSync(path.join(layout, "index.json"), JSON.stringify(index));
}

export interface ImageInfo {
  manifestDigest: string;
  manifest: OciManifest;
  configDigest: string;
  config: OciConfig;
  /** Layer descriptors, in order (duplicates kept). */
  layers: Descriptor[];
  diffIds: string[];
}

/** The single-platform image behind `tag` (or behind a manifest digest). */
export function readImage(layout: string, tagOrDigest: string): ImageInfo {
  const digest = tagOrDigest.startsWith("sha256:") ? tagOrDigest : tagDescriptor(layout, tagOrDigest).digest;
  const manifest = JSON.parse(readBlob(layout, digest).toString()) as OciManifest;
  const config = JSON.parse(readBlob(layout, manifest.config.digest).toString()) as OciConfig;
  return {
    manifestDigest: digest,
    manifest,
    configDigest: manifest.config.digest,
    config,
    layers: manifest.layers,
    diffIds: config.rootfs.diff_ids,
  };
}

/** The image index behind `tag`. */
export function readIndex(layout: string, tag: string): { digest: string; index: OciIndex } {
  const d = tagDescriptor(layout, tag);
  return { digest: d.digest, index: JSON.parse(readBlob(layout, d.digest).toString()) as OciIndex };
}

/** Replaces the config of the image tagged `tag` by edit(config); re-tags the new manifest. */
function editConfig(layout: string, tag: string, edit: (c: OciConfig) => void): Descriptor {
  const img = readImage(layout, tag);
  edit(img.config);
  const config = writeBlob(layout, MT.config, JSON.stringify(img.config));
  const manifest = writeBlob(layout, MT.manifest, JSON.stringify({ ...img.manifest, config }));
  setTag(layout, tag, manifest);
  return manifest;
}

// --- tars --------------------------------------------------------------------------------------------------

const TAR_ENV = { ...process.env, LC_ALL: "C.UTF-8", TZ: "UTC" };

/**
 * A layer tar of `members` of `srcDir` with GNU tar: PAX format (nanosecond mtimes, SCHILY.xattr for user.*
 * and security.capability), numeric owners, sorted names, no atime/ctime, stable extended-header names.
 */
export async function gnuTarLayer(srcDir: string, members: string[], out: string): Promise<string> {
  await run(
    "tar",
    [
      "--format=posix",
      "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
      "--xattrs",
      "--xattrs-include=*",
      "--numeric-owner",
      "--sort=name",
      "-C",
      srcDir,
      "-cf",
      out,
      ...members,
    ],
    { env: TAR_ENV },
  );
  return out;
}

export interface RawTarEntry {
  name: string;
  type: "file" | "dir" | "symlink" | "hardlink";
  mode?: number;
  content?: Buffer | string;
  linkname?: string;
}

/**
 * A ustar archive written byte by byte, for entries real tools refuse to write (`../x`, `/abs`, links out of
 * the tree). Names and link names must fit in 100 bytes.
 */
export function rawTar(entries: RawTarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const content = Buffer.from(e.content ?? "");
    const h = Buffer.alloc(512);
    const put = (s: string, off: number, len: number): void => {
      const b = Buffer.from(s);
      if (b.length > len) throw new Error(`rawTar: ${s} is too long`);
      b.copy(h, off);
    };
    const octal = (n: number, off: number, len: number): void =>
      put(n.toString(8).padStart(len - 1, "0"), off, len);
    put(e.name, 0, 100);
    octal(e.mode ?? (e.type === "dir" ? 0o755 : 0o644), 100, 8);
    octal(0, 108, 8);
    octal(0, 116, 8);
    octal(e.type === "file" ? content.length : 0, 124, 12);
    octal(1600000000, 136, 12);
    h.write("        ", 148);
    put({ file: "0", dir: "5", symlink: "2", hardlink: "1" }[e.type], 156, 1);
    put(e.linkname ?? "", 157, 100);
    put("ustar\u000000", 257, 8);
    put("root", 265, 32);
    put("root", 297, 32);
    let sum = 0;
    for (const byte of h) sum += byte;
    put(sum.toString(8).padStart(6, "0") + "\u0000 ", 148, 8);
    blocks.push(h);
    if (e.type === "file" && content.length > 0) {
      blocks.push(content, Buffer.alloc((512 - (content.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

// --- the tree builder --------------------------------------------------------------------------------------

/** The fixed mtime of every fixture entry without a specific one: 2021-03-04 05:06:07 UTC. */
export const BASE_MTIME = "2021-03-04 05:06:07 UTC";
/** 2020-01-02 03:04:05.123456789 UTC */
export const NSEC_MTIME_NS = 1577934245123456789n;
/** 2022-05-06 07:08:09.987654321 UTC */
export const NSEC_MTIME2_NS = 1651820889987654321n;

const nsToTouch = (ns: bigint): string => {
  const sec = ns / 1_000_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, "0");
  return `@${sec}.${frac}`;
};

/** Deterministic bytes: `n` of them from a seed (no crypto needed, just spread). */
export function fixtureBytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash("sha256").update(seed).digest();
  for (let off = 0; off < n; off += 32) {
    block.copy(out, off, 0, Math.min(32, n - off));
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

interface TreeSpec {
  dirs?: [string, number, number?, number?][]; // path, mode, uid, gid
  files?: [string, Buffer | string, number, number?, number?][]; // path, content, mode, uid, gid
  symlinks?: [string, string][]; // path, target
  hardlinks?: [string, string][]; // new path, existing path
  fifos?: [string, number][];
  xattrs?: [string, string, Buffer][]; // path, name, value
  mtimes?: [string, bigint][];
}

async function makeTree(root: string, spec: TreeSpec): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  const p = (rel: string): string => path.join(root, rel);
  for (const [rel, mode, uid, gid] of spec.dirs ?? []) {
    fs.mkdirSync(p(rel), { recursive: true });
    fs.chmodSync(p(rel), mode);
    fs.chownSync(p(rel), uid ?? 0, gid ?? 0);
  }
  for (const [rel, content, mode, uid, gid] of spec.files ?? []) {
    fs.mkdirSync(path.dirname(p(rel)), { recursive: true });
    fs.writeFileSync(p(rel), content);
    fs.chmodSync(p(rel), mode);
    fs.chownSync(p(rel), uid ?? 0, gid ?? 0);
  }
  for (const [rel, target] of spec.symlinks ?? []) fs.symlinkSync(target, p(rel));
  for (const [rel, existing] of spec.hardlinks ?? []) fs.linkSync(p(existing), p(rel));
  for (const [rel, mode] of spec.fifos ?? []) {
    await run("mkfifo", ["-m", mode.toString(8), p(rel)]);
  }
  for (const [rel, name, value] of spec.xattrs ?? []) {
    await run("setfattr", ["-n", name, "-v", "0x" + value.toString("hex"), p(rel)]);
  }
  // Every entry gets BASE_MTIME, then the specific ones; directories last so creating files does not move them.
  await run("find", [root, "-mindepth", "1", "-exec", "touch", "-h", "-d", BASE_MTIME, "{}", "+"]);
  for (const [rel, ns] of spec.mtimes ?? []) await run("touch", ["-h", "-d", nsToTouch(ns), p(rel)]);
}

// --- the expected result of `multi` ------------------------------------------------------------------------

export interface ExpectedEntry {
  type: "dir" | "file" | "symlink" | "fifo";
  /** Permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  content?: Buffer;
  target?: string;
  /** Exactly these xattrs (user.*, security.capability; others such as security.selinux are ignored). */
  xattrs?: Record<string, Buffer>;
  mtimeNs?: bigint;
}

export interface ExpectedTree {
  entries: Map<string, ExpectedEntry>;
  /** Groups of paths that must be one inode. */
  hardlinks: string[][];
  /** Paths that must not exist (removed by whiteouts). */
  absent: string[];
}

/** security.capability for cap_net_bind_service+ep (VFS_CAP_REVISION_2 layout, what setcap writes). */
export const CAP_NET_BIND_SERVICE = Buffer.from("0100000200040000000000000000000000000000", "hex");
export const USER_XATTR = Buffer.from([0x00, 0xff, 0x80, 0x41, 0x0a]);

const TOOL = fixtureBytes("multi/bin/tool", 5000);
const BIG_CONF = Buffer.from("# a configuration file longer than 64 bytes\n".repeat(60));
const MOTD = Buffer.from(
  "Welcome to the stratum multi-layer fixture; this line is longer than sixty-four bytes.\n",
);
const HOSTNAME_V1 = "stratum-multi\n";
const HOSTNAME_V2 = "stratum-multi-v3\n";
const DATA_A = fixtureBytes("multi/data/a", 100);

// Layer 1: the base.
const MULTI_L1: TreeSpec = {
  dirs: [
    ["bin", 0o755],
    ["etc", 0o755],
    ["run", 0o755],
    ["home", 0o755],
    ["home/user", 0o750, 1000, 1000],
    ["opaque", 0o755],
    ["opaque/sub", 0o755],
    ["moded", 0o755],
    ["olddir", 0o755],
    ["olddir/deeper", 0o755],
  ],
  files: [
    ["bin/tool", TOOL, 0o755],
    ["etc/hostname", HOSTNAME_V1, 0o644],
    ["etc/big.conf", BIG_CONF, 0o644],
    ["etc/empty", "", 0o600],
    ["etc/gone.conf", "removed by a whiteout in layer 2\n", 0o644],
    ["home/user/.profile", "export PATH=/bin\n", 0o644, 1000, 1000],
    ["opaque/old-a", "hidden by the opaque directory in layer 2\n", 0o644],
    ["opaque/sub/old-b", "hidden too\n", 0o644],
    ["moded/keep", "kept; the directory's mode changes in layer 3\n", 0o644],
    ["olddir/x", "removed with its directory in layer 3\n", 0o644],
    ["olddir/deeper/y", "removed too\n", 0o644],
  ],
  symlinks: [["bin/sh", "tool"]],
  hardlinks: [["bin/tool-hardlink", "bin/tool"]],
  fifos: [["run/fifo", 0o644]],
  xattrs: [
    ["bin/tool", "user.stratum", USER_XATTR],
    ["bin/tool", "security.capability", CAP_NET_BIND_SERVICE],
    ["etc", "user.dir", Buffer.from("on a directory")],
  ],
  mtimes: [["etc/hostname", NSEC_MTIME_NS]],
};

// Layer 2: a whiteout of a lower file, an opaque directory, a hard-link pair, new files.
const MULTI_L2: TreeSpec = {
  dirs: [
    ["etc", 0o755],
    ["opaque", 0o755],
    ["data", 0o755],
  ],
  files: [
    ["etc/.wh.gone.conf", "", 0o644],
    ["etc/motd", MOTD, 0o644],
    ["opaque/.wh..wh..opq", "", 0o644],
    ["opaque/new", "the only entry of opaque/ after layer 2\n", 0o644],
    ["data/a", DATA_A, 0o640],
  ],
  hardlinks: [["data/b", "data/a"]],
  xattrs: [["etc", "user.dir", Buffer.from("on a directory")]],
  mtimes: [["data/a", NSEC_MTIME2_NS]],
};

// Layer 3: a directory's mode and owner change, a whole directory whited out, a file replaced.
const MULTI_L3: TreeSpec = {
  dirs: [
    ["moded", 0o700, 1000, 1000],
    ["etc", 0o755],
  ],
  files: [
    [".wh.olddir", "", 0o644],
    ["etc/hostname", HOSTNAME_V2, 0o644],
  ],
  xattrs: [["etc", "user.dir", Buffer.from("on a directory")]],
  mtimes: [["etc/hostname", NSEC_MTIME2_NS]],
};

const MULTI_MEMBERS = [
  ["bin", "etc", "home", "moded", "olddir", "opaque", "run"],
  ["data", "etc", "opaque"],
  [".wh.olddir", "etc", "moded"],
];

function entry(type: ExpectedEntry["type"], mode: number, extra: Partial<ExpectedEntry> = {}): ExpectedEntry {
  return { type, mode, uid: 0, gid: 0, ...extra };
}

/** What `multi` unpacks to (every path, relative, no leading "./"). */
export const MULTI_EXPECTED: ExpectedTree = {
  entries: new Map<string, ExpectedEntry>([
    ["bin", entry("dir", 0o755)],
    [
      "bin/tool",
      entry("file", 0o755, {
        content: TOOL,
        xattrs: { "user.stratum": USER_XATTR, "security.capability": CAP_NET_BIND_SERVICE },
      }),
    ],
    [
      "bin/tool-hardlink",
      entry("file", 0o755, {
        content: TOOL,
        xattrs: { "user.stratum": USER_XATTR, "security.capability": CAP_NET_BIND_SERVICE },
      }),
    ],
    ["bin/sh", entry("symlink", 0o777, { target: "tool" })],
    ["etc", entry("dir", 0o755, { xattrs: { "user.dir": Buffer.from("on a directory") } })],
    ["etc/hostname", entry("file", 0o644, { content: Buffer.from(HOSTNAME_V2), mtimeNs: NSEC_MTIME2_NS })],
    ["etc/big.conf", entry("file", 0o644, { content: BIG_CONF })],
    ["etc/empty", entry("file", 0o600, { content: Buffer.alloc(0) })],
    ["etc/motd", entry("file", 0o644, { content: MOTD })],
    ["run", entry("dir", 0o755)],
    ["run/fifo", entry("fifo", 0o644)],
    ["home", entry("dir", 0o755)],
    ["home/user", entry("dir", 0o750, { uid: 1000, gid: 1000 })],
    [
      "home/user/.profile",
      entry("file", 0o644, { uid: 1000, gid: 1000, content: Buffer.from("export PATH=/bin\n") }),
    ],
    ["opaque", entry("dir", 0o755)],
    [
      "opaque/new",
      entry("file", 0o644, { content: Buffer.from("the only entry of opaque/ after layer 2\n") }),
    ],
    ["moded", entry("dir", 0o700, { uid: 1000, gid: 1000 })],
    [
      "moded/keep",
      entry("file", 0o644, { content: Buffer.from("kept; the directory's mode changes in layer 3\n") }),
    ],
    ["data", entry("dir", 0o755)],
    ["data/a", entry("file", 0o640, { content: DATA_A, mtimeNs: NSEC_MTIME2_NS })],
    ["data/b", entry("file", 0o640, { content: DATA_A, mtimeNs: NSEC_MTIME2_NS })],
  ]),
  hardlinks: [
    ["bin/tool", "bin/tool-hardlink"],
    ["data/a", "data/b"],
  ],
  absent: ["etc/gone.conf", "opaque/old-a", "opaque/sub", "olddir", "etc/.wh.gone.conf", ".wh.olddir"],
};

/** Reads all xattrs of `file` (not following symlinks) with getfattr. */
async function xattrsOf(file: string): Promise<Record<string, Buffer>> {
  const r = await run("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", file], {
    check: false,
  });
  const out: Record<string, Buffer> = {};
  for (const line of r.stdout.toString().split("\n")) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) out[m[1]] = Buffer.from(m[2], "hex");
  }
  return out;
}

/**
 * Differences between the tree at `root` and `expected` (empty when they match): the set of paths, types,
 * permission bits, owners, contents, symlink targets, xattrs (user.* and security.capability), the mtimes given,
 * hard-link groups and absent paths. Fifos must be fifos.
 */
export async function diffTree(root: string, expected: ExpectedTree): Promise<string[]> {
  const problems: string[] = [];
  const found = new Set<string>();
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel))) {
      const r = rel === "" ? name : `${rel}/${name}`;
      found.add(r);
      if (fs.lstatSync(path.join(root, r)).isDirectory()) walk(r);
    }
  };
  walk("");
  for (const p of found) if (!expected.entries.has(p)) problems.push(`${p}: unexpected`);
  for (const [p, e] of expected.entries) {
    const full = path.join(root, p);
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(full, { bigint: true });
    } catch {
      problems.push(`${p}: missing`);
      continue;
    }
    const type = st.isDirectory()
      ? "dir"
      : st.isFile()
        ? "file"
        : st.isSymbolicLink()
          ? "symlink"
          : st.isFIFO()
            ? "fifo"
            : "other";
    if (type !== e.type) {
      problems.push(`${p}: type ${type}, expected ${e.type}`);
      continue;
    }
    const mode = Number(st.mode & 0o7777n);
    if (e.type !== "symlink" && mode !== e.mode) {
      problems.push(`${p}: mode ${mode.toString(8)}, expected ${e.mode.toString(8)}`);
    }
    if (Number(st.uid) !== e.uid || Number(st.gid) !== e.gid) {
      problems.push(`${p}: owner ${st.uid}:${st.gid}, expected ${e.uid}:${e.gid}`);
    }
    if (e.content !== undefined && !fs.readFileSync(full).equals(e.content))
      problems.push(`${p}: content differs`);
    if (e.target !== undefined && fs.readlinkSync(full) !== e.target) {
      problems.push(`${p}: target ${fs.readlinkSync(full)}, expected ${e.target}`);
    }
    if (e.mtimeNs !== undefined && st.mtimeNs !== e.mtimeNs) {
      problems.push(`${p}: mtime ${st.mtimeNs} ns, expected ${e.mtimeNs}`);
    }
    if (e.type !== "symlink") {
      const have = await xattrsOf(full);
      const relevant = Object.keys(have).filter((k) => k.startsWith("user.") || k === "security.capability");
      const want = e.xattrs ?? {};
      for (const k of new Set([...relevant, ...Object.keys(want)])) {
        const a = have[k];
        const b = want[k];
        if (a === undefined) problems.push(`${p}: xattr ${k} missing`);
        else if (b === undefined) problems.push(`${p}: unexpected xattr ${k}`);
        else if (!a.equals(b))
          problems.push(`${p}: xattr ${k} = ${a.toString("hex")}, expected ${b.toString("hex")}`);
      }
    }
  }
  for (const group of expected.hardlinks) {
    const inodes = new Set(
      group.map((p) => (fs.existsSync(path.join(root, p)) ? fs.lstatSync(path.join(root, p)).ino : -1)),
    );
    if (inodes.size !== 1) problems.push(`hard links ${group.join(", ")}: not one inode`);
  }
  for (const p of expected.absent)
    if (fs.existsSync(path.join(root, p))) problems.push(`${p}: should be absent`);
  return problems;
}

// --- the images --------------------------------------------------------------------------------------------

export const MULTIARCH_PLATFORMS: (Platform & { tag: string; content: string })[] = [
  { os: "linux", architecture: "amd64", tag: "multiarch-amd64", content: "linux/amd64\n" },
  { os: "linux", architecture: "arm64", tag: "multiarch-arm64", content: "linux/arm64\n" },
  { os: "linux", architecture: "arm", variant: "v7", tag: "multiarch-armv7", content: "linux/arm/v7\n" },
];

export interface TestImages {
  /** Scratch directory holding the layout and the source trees and tars; removed by remove(). */
  dir: string;
  /** The OCI layout with tags multi, zstd, multiarch (+ multiarch-amd64/-arm64/-armv7), dup. */
  layout: string;
  /** "oci:<layout>:<tag>" */
  ref(tag: string): string;
  /** The uncompressed layer tars of `multi`, in order (their sha256 are the diff_ids). */
  multiLayerTars: string[];
  /** `dup`'s layers: [multi layer 1, empty, multi layer 1, small]. */
  dupLayerTars: string[];
  /** The digest of the attestation manifest inside the `multiarch` index. */
  attestationDigest: string;
  /** Seconds the build took. */
  buildSeconds: number;
  remove(): void;
}

/** Why the images cannot be built here (tools missing, not root), or null. */
export function imagesUnavailable(): string | null {
  return unavailable(["umoci", "skopeo", "tar", "setfattr", "getfattr"], "umoci skopeo tar attr");
}

async function umoci(...args: string[]): Promise<void> {
  await run("umoci", args);
}

const FIXED_CREATED = "2021-03-04T05:06:07Z";

/** A new image `tag` in `layout` made of `tars` (each added verbatim), with fixed times. */
async function imageFromTars(
  layout: string,
  tag: string,
  tars: string[],
  platform?: Platform,
): Promise<void> {
  const image = `${layout}:${tag}`;
  await umoci("new", "--image", image);
  // Fixed times everywhere, so the same build gives the same digests.
  const p = platform ?? { os: "linux", architecture: "amd64" };
  await umoci(
    "config",
    "--image",
    image,
    "--os",
    p.os,
    "--architecture",
    p.architecture,
    "--config.cmd",
    "/bin/sh",
    "--config.env",
    "PATH=/bin:/usr/bin",
    "--created",
    FIXED_CREATED,
    "--history.created",
    FIXED_CREATED,
    "--history.created_by",
    "umoci config",
  );
  for (const [i, tar] of tars.entries()) {
    await umoci(
      "raw",
      "add-layer",
      "--image",
      image,
      "--history.created",
      FIXED_CREATED,
      "--history.created_by",
      `layer ${i + 1}`,
      tar,
    );
  }
}

let building: Promise<TestImages> | undefined;

/** Builds the fixture images (once per process; later calls return the same result until remove()). */
export function buildImages(): Promise<TestImages> {
  building ??= doBuildImages().catch((e: unknown) => {
    building = undefined;
    throw e;
  });
  return building;
}

async function doBuildImages(): Promise<TestImages> {
  const t0 = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stratum-images-"));
  try {
    const layout = path.join(dir, "layout");
    const src = path.join(dir, "src");
    const tars = path.join(dir, "tars");
    fs.mkdirSync(tars);
    await umoci("init", "--layout", layout);

    // multi
    const multiLayerTars: string[] = [];
    for (const [i, spec] of [MULTI_L1, MULTI_L2, MULTI_L3].entries()) {
      const tree = path.join(src, `multi-l${i + 1}`);
      await makeTree(tree, spec);
      multiLayerTars.push(
        await gnuTarLayer(tree, MULTI_MEMBERS[i] ?? [], path.join(tars, `multi-l${i + 1}.tar`)),
      );
    }
    await imageFromTars(layout, "multi", multiLayerTars);

    // zstd: recompressed into a separate layout first (a copy within one layout, or a push, would reuse the
    // existing gzip blobs), then copied back as is.
    const zstdTmp = path.join(dir, "zstd-layout");
    await run("skopeo", [
      "copy",
      "--quiet",
      "--dest-compress",
      "--dest-compress-format",
      "zstd",
      `oci:${layout}:multi`,
      `oci:${zstdTmp}:zstd`,
    ]);
    await run("skopeo", ["copy", "--quiet", `oci:${zstdTmp}:zstd`, `oci:${layout}:zstd`]);
    fs.rmSync(zstdTmp, { recursive: true });
    const zl = readImage(layout, "zstd").layers;
    if (!zl.every((l) => l.mediaType === MT.layerZstd)) throw new Error("zstd image: layers are not zstd");

    // multiarch: a shared base layer plus one per platform, an index, and a buildx-style attestation.
    const shared = path.join(src, "multiarch-shared");
    await makeTree(shared, {
      dirs: [["etc", 0o755]],
      files: [["etc/shared", "the same on every platform\n", 0o644]],
    });
    const sharedTar = await gnuTarLayer(shared, ["etc"], path.join(tars, "multiarch-shared.tar"));
    const platformManifests: Descriptor[] = [];
    for (const p of MULTIARCH_PLATFORMS) {
      const tree = path.join(src, p.tag);
      await makeTree(tree, { files: [["platform", p.content, 0o644]] });
      const tar = await gnuTarLayer(tree, ["platform"], path.join(tars, `${p.tag}.tar`));
      await imageFromTars(layout, p.tag, [sharedTar, tar], p);
      const desc =
        p.variant !== undefined
          ? editConfig(layout, p.tag, (c) => {
              c.variant = p.variant;
            })
          : tagDescriptor(layout, p.tag);
      const platform: Platform = { architecture: p.architecture, os: p.os };
      if (p.variant !== undefined) platform.variant = p.variant;
      platformManifests.push({ mediaType: MT.manifest, digest: desc.digest, size: desc.size, platform });
    }
    const amd64 = platformManifests[0];
    if (amd64 === undefined) throw new Error("no amd64 manifest");
    const statement = JSON.stringify({
      _type: "https://in-toto.io/Statement/v0.1",
      predicateType: "https://spdx.dev/Document",
      subject: [{ name: "stratum-test/multiarch", digest: { sha256: amd64.digest.slice(7) } }],
      predicate: { spdxVersion: "SPDX-2.3", name: "stratum test fixture", packages: [] },
    });
    const attLayer = writeBlob(layout, MT.inToto, statement);
    attLayer.annotations = { "in-toto.io/predicate-type": "https://spdx.dev/Document" };
    const attConfig = writeBlob(
      layout,
      MT.config,
      JSON.stringify({
        architecture: "unknown",
        os: "unknown",
        config: {},
        rootfs: { type: "layers", diff_ids: [attLayer.digest] },
      }),
    );
    const attManifest = writeBlob(
      layout,
      MT.manifest,
      JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: attConfig, layers: [attLayer] }),
    );
    const index: OciIndex = {
      schemaVersion: 2,
      mediaType: MT.index,
      manifests: [
        ...platformManifests,
        {
          ...attManifest,
          annotations: {
            "vnd.docker.reference.digest": amd64.digest,
            "vnd.docker.reference.type": "attestation-manifest",
          },
          platform: { architecture: "unknown", os: "unknown" },
        },
      ],
    };
    setTag(layout, "multiarch", writeBlob(layout, MT.index, JSON.stringify(index)));

    // dup: the same layer twice (and shared with multi), and an empty layer (a tar of 1024 zero bytes).
    const empty = path.join(tars, "empty.tar");
    fs.writeFileSync(empty, Buffer.alloc(1024));
    const small = path.join(src, "dup-small");
    await makeTree(small, { files: [["dup-marker", "the last layer of dup\n", 0o644]] });
    const smallTar = await gnuTarLayer(small, ["dup-marker"], path.join(tars, "dup-small.tar"));
    const l1 = multiLayerTars[0] ?? "";
    const dupLayerTars = [l1, empty, l1, smallTar];
    await imageFromTars(layout, "dup", dupLayerTars);

    await umoci("gc", "--layout", layout);
    return {
      dir,
      layout,
      ref: (tag) => `oci:${layout}:${tag}`,
      multiLayerTars,
      dupLayerTars,
      attestationDigest: attManifest.digest,
      buildSeconds: (Date.now() - t0) / 1000,
      remove() {
        discardDir(dir);
        building = undefined;
      },
    };
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

// --- registries and archives -------------------------------------------------------------------------------

/**
 * Copies `layout:tag` to docker://HOST/REPO (repo like "test/multi:latest") with skopeo, over plain HTTP. For
 * a token registry the credentials default to its first user. `all` copies every image of an index;
 * `format: "v2s2"` converts to Docker schema 2 media types. Returns the docker:// reference.
 */
export async function pushImage(
  layout: string,
  tag: string,
  registry: RegistryTarget,
  repo: string,
  opts: { creds?: string | null; all?: boolean; format?: "oci" | "v2s2" } = {},
): Promise<string> {
  const dest = `docker://${registry.host}/${repo}`;
  const creds = opts.creds === undefined ? defaultCreds(registry) : opts.creds;
  await run("skopeo", [
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    ...(creds ? ["--dest-creds", creds] : []),
    ...(opts.all ? ["--all"] : []),
    ...(opts.format === "v2s2" ? ["--format", "v2s2"] : []),
    `oci:${layout}:${tag}`,
    dest,
  ]);
  return dest;
}

/**
 * A Docker manifest list at docker://HOST/REPO ("name:tag") of the MULTIARCH_PLATFORMS images: each is pushed
 * with skopeo as Docker schema 2 (tagged NAME:multiarch-…), then the list referencing them is PUT by hand (no
 * attestation entry: Docker lists do not carry them). Returns the list's digest.
 */
export async function pushDockerManifestList(
  layout: string,
  registry: RegistryTarget,
  repo: string,
  opts: { creds?: string | null } = {},
): Promise<string> {
  const colon = repo.lastIndexOf(":");
  const [name, tag] =
    colon > repo.indexOf("/") ? [repo.slice(0, colon), repo.slice(colon + 1)] : [repo, "latest"];
  const creds = opts.creds === undefined ? defaultCreds(registry) : opts.creds;
  const manifests: Descriptor[] = [];
  for (const p of MULTIARCH_PLATFORMS) {
    await pushImage(layout, p.tag, registry, `${name}:${p.tag}`, { creds, format: "v2s2" });
    const res = await registryFetch(registry, `/v2/${name}/manifests/${p.tag}`, {
      headers: { accept: MT.dockerManifest },
      creds,
    });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) throw new Error(`GET ${name}:${p.tag}: ${res.status} ${body.toString()}`);
    const platform: Platform = { architecture: p.architecture, os: p.os };
    if (p.variant !== undefined) platform.variant = p.variant;
    manifests.push({ mediaType: MT.dockerManifest, size: body.length, digest: sha256(body), platform });
  }
  const list = JSON.stringify({ schemaVersion: 2, mediaType: MT.dockerList, manifests });
  const put = await registryFetch(registry, `/v2/${name}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": MT.dockerList },
    body: list,
    creds,
  });
  if (put.status !== 201) throw new Error(`PUT ${repo}: ${put.status} ${await put.text()}`);
  return sha256(list);
}

/**
 * skopeo copy `layout:tag` → `format:out[:ref]`. A docker-archive gets `ref` (e.g. "test/multi:latest") as its
 * RepoTags entry; an oci-archive gets it as the ref.name annotation. `all` keeps every image of an index
 * (oci-archive only). Returns `out`.
 */
export async function skopeoArchive(
  layout: string,
  tag: string,
  format: "docker-archive" | "oci-archive",
  out: string,
  opts: { ref?: string; all?: boolean } = {},
): Promise<string> {
  const dest = `${format}:${out}${opts.ref !== undefined ? `:${opts.ref}` : ""}`;
  await run("skopeo", ["copy", "--quiet", ...(opts.all ? ["--all"] : []), `oci:${layout}:${tag}`, dest]);
  return out;
}

/** Loads an archive (docker-archive or oci-archive) into a test daemon; returns the names it reported. */
export async function loadIntoDaemon(daemon: Daemon, archive: string): Promise<string[]> {
  const r = await daemon.cli(["load", "-i", archive]);
  return [...r.stdout.toString().matchAll(/Loaded image(?:\(s\))?(?: ID)?: *(\S+)/g)].flatMap((m) =>
    m[1] !== undefined ? m[1].split(",") : [],
  );
}

/**
 * Saves images from a test daemon: `docker save` (docker 20.10: the legacy layout only) or `podman save
 * --format <format>` (docker-archive, oci-archive, oci-dir, docker-dir). Several images need docker or
 * podman's docker-archive (`-m`). Returns `out`.
 */
export async function daemonSave(
  daemon: Daemon,
  images: string[],
  out: string,
  format: "docker-archive" | "oci-archive" | "oci-dir" | "docker-dir" = "docker-archive",
): Promise<string> {
  if (daemon.kind === "docker") {
    if (format !== "docker-archive") throw new Error(`docker save writes docker-archive only, not ${format}`);
    await daemon.cli(["save", "-o", out, ...images]);
  } else {
    const multi = images.length > 1 ? ["-m"] : [];
    await daemon.cli(["save", "--format", format, ...multi, "-o", out, ...images]);
  }
  return out;
}

// --- the Debian rootfs image -------------------------------------------------------------------------------

export const TEST_CACHE = process.env.STRATUM_TEST_CACHE ?? "/var/cache/stratum-test";

/** The first Debian archive URI in the apt sources whose suites include `suite` (deb822 first, then lists). */
export function debianMirror(suite = "bookworm"): string | null {
  const read = (f: string): string => {
    try {
      return fs.readFileSync(f, "utf8");
    } catch {
      return "";
    }
  };
  const listDir = (ext: string): string[] => {
    try {
      return fs
        .readdirSync("/etc/apt/sources.list.d")
        .filter((f) => f.endsWith(ext))
        .sort()
        .map((f) => path.join("/etc/apt/sources.list.d", f));
    } catch {
      return [];
    }
  };
  for (const file of listDir(".sources")) {
    for (const stanza of read(file).split(/\n[ \t]*\n/)) {
      const fields = new Map<string, string>();
      let last = "";
      for (const line of stanza.split("\n")) {
        if (/^\s*#/.test(line) || line.trim() === "") continue;
        const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
        if (m?.[1] !== undefined && m[2] !== undefined) {
          last = m[1].toLowerCase();
          fields.set(last, m[2].trim());
        } else if (last !== "" && /^\s/.test(line)) {
          fields.set(last, `${fields.get(last) ?? ""} ${line.trim()}`);
        }
      }
      const words = (k: string): string[] => (fields.get(k) ?? "").split(/\s+/).filter((w) => w !== "");
      if (!words("types").includes("deb") || fields.get("enabled")?.toLowerCase() === "no") continue;
      if (!words("suites").includes(suite)) continue;
      const uri = words("uris")[0];
      if (uri !== undefined) return uri;
    }
  }
  for (const file of ["/etc/apt/sources.list", ...listDir(".list")]) {
    for (const line of read(file).split("\n")) {
      const words = line
        .replace(/\[[^\]]*\]/, "")
        .trim()
        .split(/\s+/);
      if (words[0] === "deb" && words[2] === suite && words[1] !== undefined) return words[1];
    }
  }
  return null;
}

export interface DebianImage {
  /** The cached OCI layout (shared across runs: treat as read-only). */
  layout: string;
  tag: "debian";
  ref: string;
  /** The cached mmdebstrap tar (layer 1). */
  rootfsTar: string;
  /** Seconds spent here (0-ish when everything came from the cache). */
  seconds: number;
  fromCache: boolean;
}

/** Why buildDebianImage cannot work here, or null. */
export function debianUnavailable(): string | null {
  return unavailable(["mmdebstrap", "umoci", "flock"], "mmdebstrap umoci util-linux");
}

/**
 * A realistic two-layer image: layer 1 a Debian rootfs from `mmdebstrap --variant=minbase --mode=root
 * --format=tar` (about 170 MB, 25 s the first time), layer 2 a small change set (a new file and an opaque
 * /usr/share/doc). The tar and the finished layout are cached in TEST_CACHE (/var/cache/stratum-test, outside
 * the repository, so fresh clones reuse them) under a key of the suite, variant and package list; builds are
 * serialised with flock, so concurrent test processes build once. The mirror comes from the apt sources.
 */
export async function buildDebianImage(
  opts: { suite?: string; include?: string[] } = {},
): Promise<DebianImage> {
  const t0 = Date.now();
  const suite = opts.suite ?? "bookworm";
  const include = [...(opts.include ?? [])].sort();
  const key = sha256(JSON.stringify({ v: 1, suite, variant: "minbase", include })).slice(7, 23);
  const base = path.join(TEST_CACHE, `debian-${suite}-minbase-${key}`);
  const tar = `${base}.tar`;
  const layout = `${base}.oci`;
  fs.mkdirSync(TEST_CACHE, { recursive: true });
  const fromCache = fs.existsSync(path.join(layout, "index.json"));
  if (!fromCache) {
    const mirror = debianMirror(suite);
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "stratum-debian-"));
    try {
      const script = path.join(work, "build.sh");
      fs.writeFileSync(
        script,
        [
          "set -eu",
          // $1 tar, $2 layout, $3 work dir, $4 suite, $5 mirror, $6 include list (comma-separated, may be empty)
          'if [ ! -f "$1" ]; then',
          '  [ -n "$5" ] || { echo "no Debian mirror for $4 in the apt sources" >&2; exit 1; }',
          '  rm -f "$1.tmp"',
          '  mmdebstrap --variant=minbase --mode=root --format=tar ${6:+--include="$6"} "$4" "$1.tmp" "$5"',
          '  mv "$1.tmp" "$1"',
          "fi",
          'if [ ! -f "$2/index.json" ]; then',
          '  rm -rf "$2.tmp"',
          '  mkdir -p "$3/l2/etc" "$3/l2/usr/share/doc"',
          '  printf "built by stratum test/helpers/images.ts\\n" > "$3/l2/etc/stratum-release"',
          '  : > "$3/l2/usr/share/doc/.wh..wh..opq"',
          '  find "$3/l2" -exec touch -h -d "2021-03-04 05:06:07 UTC" {} +',
          "  tar --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --numeric-owner \\",
          '    --sort=name -C "$3/l2" -cf "$3/l2.tar" etc usr',
          '  umoci init --layout "$2.tmp"',
          '  umoci new --image "$2.tmp:debian"',
          '  umoci config --image "$2.tmp:debian" --config.cmd /bin/bash --created 2021-03-04T05:06:07Z --history.created 2021-03-04T05:06:07Z',
          '  umoci raw add-layer --image "$2.tmp:debian" --history.created 2021-03-04T05:06:07Z "$1"',
          '  umoci raw add-layer --image "$2.tmp:debian" --history.created 2021-03-04T05:06:07Z "$3/l2.tar"',
          '  umoci gc --layout "$2.tmp"',
          '  mv "$2.tmp" "$2"',
          "fi",
        ].join("\n"),
      );
      await run(
        "flock",
        [
          path.join(TEST_CACHE, ".lock"),
          "sh",
          script,
          tar,
          layout,
          work,
          suite,
          mirror ?? "",
          include.join(","),
        ],
        { timeoutMs: 900_000 },
      );
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  return {
    layout,
    tag: "debian",
    ref: `oci:${layout}:debian`,
    rootfsTar: tar,
    seconds: (Date.now() - t0) / 1000,
    fromCache,
  };
}

// --- broken inputs -----------------------------------------------------------------------------------------

export type EscapeKind = "dotdot" | "absolute" | "symlink" | "hardlink";

/** A layer tar with one hostile entry after a harmless `ok/` directory and file. */
export function escapeTar(kind: EscapeKind): Buffer {
  const ok: RawTarEntry[] = [
    { name: "ok/", type: "dir" },
    { name: "ok/file", type: "file", content: "harmless\n" },
  ];
  const bad: Record<EscapeKind, RawTarEntry[]> = {
    dotdot: [
      { name: "../escape", type: "file", content: "written outside the root\n" },
      { name: "ok/../../escape2", type: "file", content: "also outside\n" },
    ],
    absolute: [{ name: "/absolute", type: "file", content: "an absolute path\n" }],
    // A symlink out of the tree, then a file through it.
    symlink: [
      { name: "link", type: "symlink", linkname: "../../../../tmp" },
      { name: "link/escape-through-symlink", type: "file", content: "through a symlink\n" },
    ],
    hardlink: [{ name: "ok/hardlink", type: "hardlink", linkname: "../../etc/passwd" }],
  };
  return rawTar([...ok, ...bad[kind]]);
}

export interface BrokenImage {
  layout: string;
  tag: string;
  ref: string;
  /** The digest that is wrong, truncated or missing (a layer). */
  digest: string;
  what: string;
}

export type BrokenKind = "wrong-digest" | "truncated-blob" | "missing-blob" | `escape-${EscapeKind}`;

/**
 * One OCI layout per kind of breakage, under `dir` (created): a layer blob whose content does not match its
 * digest (one byte flipped), a truncated layer blob, a manifest pointing at a missing layer blob, and images
 * whose (valid) layer tar escapes the root in each EscapeKind way.
 */
export async function buildBrokenImages(dir: string): Promise<Record<BrokenKind, BrokenImage>> {
  fs.mkdirSync(dir, { recursive: true });
  const small = path.join(dir, "src-small");
  await makeTree(small, { files: [["hello", "hello from a broken image\n".repeat(20), 0o644]] });
  const smallTar = await gnuTarLayer(small, ["hello"], path.join(dir, "small.tar"));
  const make = async (
    kind: BrokenKind,
    tar: string,
    what: string,
    breakIt?: (blob: string) => void,
  ): Promise<BrokenImage> => {
    const layout = path.join(dir, kind);
    await umoci("init", "--layout", layout);
    await imageFromTars(layout, kind, [tar]);
    await umoci("gc", "--layout", layout);
    const digest = readImage(layout, kind).layers[0]?.digest ?? "";
    breakIt?.(blobPath(layout, digest));
    return { layout, tag: kind, ref: `oci:${layout}:${kind}`, digest, what };
  };
  const out: Partial<Record<BrokenKind, BrokenImage>> = {};
  out["wrong-digest"] = await make(
    "wrong-digest",
    smallTar,
    "layer blob content does not match its digest",
    (b) => {
      const buf = fs.readFileSync(b);
      const i = Math.floor(buf.length / 2);
      buf[i] = (buf[i] ?? 0) ^ 0xff;
      fs.writeFileSync(b, buf);
    },
  );
  out["truncated-blob"] = await make(
    "truncated-blob",
    smallTar,
    "layer blob truncated to half its size",
    (b) => fs.truncateSync(b, Math.floor(fs.statSync(b).size / 2)),
  );
  out["missing-blob"] = await make(
    "missing-blob",
    smallTar,
    "manifest points at a layer blob that is missing",
    (b) => fs.unlinkSync(b),
  );
  for (const kind of ["dotdot", "absolute", "symlink", "hardlink"] as const) {
    const tar = path.join(dir, `escape-${kind}.tar`);
    fs.writeFileSync(tar, escapeTar(kind));
    out[`escape-${kind}`] = await make(
      `escape-${kind}`,
      tar,
      `layer tar with a ${kind} entry escaping the root`,
    );
  }
  return out as Record<BrokenKind, BrokenImage>;
}
