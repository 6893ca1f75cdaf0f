// Layers written as text, one line per entry (in the spirit of composefs-rs's dumpfile-described test layers),
// turned into tar layers and OCI images, with the expected results computed from the description alone: the
// file objects each layer stores and the objects its merged tree (the image's EROFS) uses.
//
//   const layer = writeLayer(layout, `
//     /usr              d  755  0:0  -
//     /usr/bin/busybox  f  755  0:0  -  rand:60000:busybox   user.note=hello
//     /usr/bin/sh       l  -    -    -  busybox
//     /usr/bin/ls       h  -    -    -  /usr/bin/busybox
//     /etc/motd         w
//     /var/cache        o
//   `);
//   const img = writeImage(layout, "base", [layer, …]);     // config, manifest, index.json tag
//
// Line: PATH TYPE MODE OWNER MTIME [ARG] [XATTR…], separated by runs of blanks; `#` starts a comment line.
//   PATH   absolute; `\\`, `\n`, `\t`, `\r` and `\xHH` escapes (so `\x20` is a space), as in dumpfiles
//   TYPE   d directory, f regular file, l symlink, h hard link, w whiteout (removes PATH from the layers below),
//          o opaque marker (hides what the layers below have under the directory PATH); w and o take nothing else
//   MODE   octal permission bits, or `-`: 755 directories, 644 files, 777 symlinks
//   OWNER  UID:GID, or `-` for 0:0
//   MTIME  seconds since the epoch, or `-` for DEFAULT_MTIME
//   ARG    f: the content: `-` (empty), `text:ESCAPED` (the bytes, unescaped), `rand:N:SEED` (N bytes from a PRNG
//          seeded by SEED: the same spec is the same bytes, anywhere); l: the target (escaped); h: the absolute
//          path of the file it links to; d: none
//   XATTR  NAME=VALUE, both escaped, stored as PAX `SCHILY.xattr.NAME`
//
// The tars are ustar from rawTar (test/helpers/images.ts) with owner and mtime set per entry and a PAX header in
// front of each entry with xattrs; the blobs are gzip. Everything is deterministic.

import * as fs from "node:fs";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { fsverityDigest } from "../../src/format/fsverity.ts";
import { MT, rawTar, setTag, sha256, writeBlob, type Descriptor, type RawTarEntry } from "./images.ts";
import { mulberry32 } from "./prng.ts";

/** 2020-09-13 12:26:40 UTC, rawTar's own mtime. */
export const DEFAULT_MTIME = 1600000000;

/** Regular files larger than this are stored as objects (composefs-repository.md §2.3). */
export const INLINE_MAX = 64;

export type EntryType = "dir" | "file" | "symlink" | "hardlink" | "whiteout" | "opaque";

export interface LayerEntry {
  /** Relative to the root: no leading or trailing `/`. */
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** A regular file's bytes (empty for every other type). */
  content: Buffer;
  /** A symlink's target, or the path (relative to the root) a hard link names. */
  target: string;
  xattrs: [string, Buffer][];
}

/** `n` bytes from a PRNG seeded by `seed` (FNV-1a of the seed feeds mulberry32). */
export function prngBytes(seed: string, n: number): Buffer {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(seed)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  const next = mulberry32(h);
  const out = Buffer.alloc(n + 3);
  for (let off = 0; off < n; off += 4) out.writeUInt32LE(Math.floor(next() * 0x100000000), off);
  return out.subarray(0, n);
}

/** Undo dumpfile escapes. */
export function unescapeField(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== "\\") {
      out.push(...Buffer.from(c));
      continue;
    }
    const e = s[++i];
    if (e === "\\") out.push(0x5c);
    else if (e === "n") out.push(0x0a);
    else if (e === "t") out.push(0x09);
    else if (e === "r") out.push(0x0d);
    else if (e === "x" && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else throw new Error(`bad escape \\${e ?? ""} in ${JSON.stringify(s)}`);
  }
  return Buffer.from(out);
}

const TYPES: Record<string, EntryType> = {
  d: "dir",
  f: "file",
  l: "symlink",
  h: "hardlink",
  w: "whiteout",
  o: "opaque",
};

function relPath(field: string, where: string): string {
  const p = unescapeField(field).toString();
  if (!p.startsWith("/") || p === "/") throw new Error(`${where}: "${p}" is not an absolute path below /`);
  const rel = p.replace(/^\/+|\/+$/g, "");
  if (rel.split("/").some((c) => c === "" || c === "." || c === ".."))
    throw new Error(`${where}: "${p}" is not a normal path`);
  return rel;
}

function content(spec: string, where: string): Buffer {
  if (spec === "-") return Buffer.alloc(0);
  if (spec.startsWith("text:")) return unescapeField(spec.slice(5));
  const m = /^rand:(\d+):(.+)$/.exec(spec);
  if (m) return prngBytes(m[2], Number(m[1]));
  throw new Error(`${where}: file content "${spec}" is not -, text:… or rand:N:SEED`);
}

/** Parse a layer description (see the header of this file). */
export function parseLayer(text: string): LayerEntry[] {
  const entries: LayerEntry[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `line ${i + 1} (${line})`;
    const f = line.split(/[ \t]+/);
    const type = TYPES[f[1] ?? ""];
    if (type === undefined) throw new Error(`${where}: unknown type "${f[1] ?? ""}"`);
    const e: LayerEntry = {
      path: relPath(f[0], where),
      type,
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: DEFAULT_MTIME,
      content: Buffer.alloc(0),
      target: "",
      xattrs: [],
    };
    if (type === "whiteout" || type === "opaque") {
      if (f.length !== 2) throw new Error(`${where}: a whiteout or opaque marker takes only PATH and TYPE`);
      e.mode = 0o644;
      entries.push(e);
      return;
    }
    if (f.length < 5) throw new Error(`${where}: PATH TYPE MODE OWNER MTIME are required`);
    const [, , mode, owner, mtime] = f;
    e.mode =
      mode === "-" ? { dir: 0o755, file: 0o644, symlink: 0o777, hardlink: 0o644 }[type] : parseInt(mode, 8);
    if (Number.isNaN(e.mode) || e.mode > 0o7777) throw new Error(`${where}: bad mode "${mode}"`);
    if (owner !== "-") {
      const m = /^(\d+):(\d+)$/.exec(owner);
      if (!m) throw new Error(`${where}: OWNER is UID:GID or -`);
      e.uid = Number(m[1]);
      e.gid = Number(m[2]);
    }
    if (mtime !== "-") {
      if (!/^\d+$/.test(mtime)) throw new Error(`${where}: bad mtime "${mtime}"`);
      e.mtime = Number(mtime);
    }
    let rest = f.slice(5);
    if (type !== "dir") {
      const arg = rest[0];
      if (arg === undefined) throw new Error(`${where}: ${type} needs an ARG`);
      rest = rest.slice(1);
      if (type === "file") e.content = content(arg, where);
      else if (type === "symlink") e.target = unescapeField(arg).toString();
      else e.target = relPath(arg, where);
    }
    for (const x of rest) {
      const eq = x.indexOf("=");
      if (eq <= 0) throw new Error(`${where}: xattr "${x}" is not NAME=VALUE`);
      e.xattrs.push([unescapeField(x.slice(0, eq)).toString(), unescapeField(x.slice(eq + 1))]);
    }
    entries.push(e);
  });
  return entries;
}

// --- tar -----------------------------------------------------------------------------------------------------

/** One PAX record, `LEN KEY=VALUE\n`, LEN counting the whole record. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** The tar path of an entry: whiteouts and opaque markers become their `.wh.` files, directories end in `/`. */
function tarName(e: LayerEntry): string {
  if (e.type === "whiteout") {
    const dir = path.posix.dirname(e.path);
    return `${dir === "." ? "" : `${dir}/`}.wh.${path.posix.basename(e.path)}`;
  }
  if (e.type === "opaque") return `${e.path}/.wh..wh..opq`;
  return e.type === "dir" ? `${e.path}/` : e.path;
}

/** Sets owner, mtime and (for a PAX header) the typeflag of the ustar header at `off`, and its checksum. */
function patchHeader(
  tar: Buffer,
  off: number,
  e: { uid: number; gid: number; mtime: number },
  pax: boolean,
): void {
  const octal = (n: number, at: number, len: number): void => {
    tar.write(n.toString(8).padStart(len - 1, "0") + "\u0000", off + at, "latin1");
  };
  octal(e.uid, 108, 8);
  octal(e.gid, 116, 8);
  octal(e.mtime, 136, 12);
  // rawTar names every owner root; a tool reading names over numbers must see the numbers for anyone else.
  if (e.uid !== 0) tar.fill(0, off + 265, off + 297);
  if (e.gid !== 0) tar.fill(0, off + 297, off + 329);
  if (pax) tar.write("x", off + 156, "latin1");
  tar.write("        ", off + 148, "latin1");
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[off + i];
  tar.write(sum.toString(8).padStart(6, "0") + "\u0000 ", off + 148, "latin1");
}

/** The uncompressed tar of a layer. */
export function layerTar(entries: LayerEntry[]): Buffer {
  const raw: RawTarEntry[] = [];
  const meta: { uid: number; gid: number; mtime: number; pax: boolean }[] = [];
  for (const e of entries) {
    const name = tarName(e);
    if (e.xattrs.length > 0) {
      const dir = path.posix.dirname(e.path);
      raw.push({
        name: `${dir === "." ? "" : `${dir}/`}PaxHeaders/${path.posix.basename(e.path)}`,
        type: "file",
        content: Buffer.concat(e.xattrs.map(([k, v]) => paxRecord(`SCHILY.xattr.${k}`, v))),
      });
      meta.push({ uid: 0, gid: 0, mtime: e.mtime, pax: true });
    }
    const type = e.type === "whiteout" || e.type === "opaque" ? "file" : e.type;
    raw.push({ name, type, mode: e.mode, content: e.content, linkname: e.target || undefined });
    meta.push({ uid: e.uid, gid: e.gid, mtime: e.mtime, pax: false });
  }
  const tar = rawTar(raw);
  let off = 0;
  raw.forEach((r, i) => {
    patchHeader(tar, off, meta[i], meta[i].pax);
    const size = r.type === "file" ? Buffer.from(r.content ?? "").length : 0;
    off += 512 + Math.ceil(size / 512) * 512;
  });
  return tar;
}

// --- expectations --------------------------------------------------------------------------------------------

/** The object ID (hex fs-verity SHA-256 digest) of some content. */
export function objectIdOf(data: Buffer): string {
  return fsverityDigest(data).toString("hex");
}

/** The objects a layer's stream references: its regular files over 64 bytes (whiteouts hide nothing here). */
export function layerObjects(entries: LayerEntry[]): Set<string> {
  const out = new Set<string>();
  for (const e of entries)
    if (e.type === "file" && e.content.length > INLINE_MAX) out.add(objectIdOf(e.content));
  return out;
}

/**
 * The merged tree of `layers`, bottom first (OCI whiteout rules, docs/image-tree.md): a layer's whiteouts and
 * opaque markers act on the layers below it; then its entries in order, a directory over a directory keeping the
 * children; a hard link becomes a file with its target's content; finally /run is emptied. Paths as in LayerEntry.
 */
export function mergeLayers(layers: LayerEntry[][]): Map<string, LayerEntry> {
  const tree = new Map<string, LayerEntry>();
  const removeBelow = (p: string): void => {
    for (const k of [...tree.keys()]) if (k.startsWith(`${p}/`)) tree.delete(k);
  };
  for (const [i, layer] of layers.entries()) {
    for (const e of layer) {
      if (e.type === "whiteout") {
        tree.delete(e.path);
        removeBelow(e.path);
      } else if (e.type === "opaque") removeBelow(e.path);
    }
    for (const e of layer) {
      if (e.type === "whiteout" || e.type === "opaque") continue;
      const parent = path.posix.dirname(e.path);
      if (parent !== "." && tree.get(parent)?.type !== "dir")
        throw new Error(`layer ${i}: ${e.path}: the parent is not a directory in the merged tree`);
      const old = tree.get(e.path);
      if (!(e.type === "dir" && old?.type === "dir")) removeBelow(e.path);
      if (e.type === "hardlink") {
        const target = tree.get(e.target);
        if (target?.type !== "file")
          throw new Error(`layer ${i}: ${e.path}: hard link to a non-file ${e.target}`);
        tree.set(e.path, { ...target, path: e.path });
      } else tree.set(e.path, e);
    }
  }
  removeBelow("run");
  return tree;
}

/** The objects the EROFS of an image with these layers uses: its merged regular files over 64 bytes. */
export function mergedObjects(layers: LayerEntry[][]): Set<string> {
  return layerObjects([...mergeLayers(layers).values()]);
}

// --- OCI layout ----------------------------------------------------------------------------------------------

/** Go's name for this machine's architecture, so that a pull without --platform takes the image. */
export function hostArchitecture(): string {
  const arch: Record<string, string> = { x64: "amd64", arm64: "arm64", ia32: "386", ppc64: "ppc64le" };
  return arch[process.arch] ?? process.arch;
}

/** An empty OCI image layout at `dir` (created). */
export function initLayout(dir: string): void {
  fs.mkdirSync(path.join(dir, "blobs", "sha256"), { recursive: true });
  fs.writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  fs.writeFileSync(path.join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [] }));
}

export interface BuiltLayer {
  entries: LayerEntry[];
  /** The uncompressed tar; its sha256 is the diff_id. */
  tar: Buffer;
  diffId: string;
  /** The gzip blob in the layout. */
  blob: Descriptor;
  /** What the layer's stream references (layerObjects). */
  objects: Set<string>;
}

/** A layer from its description, stored as a gzip blob of `layout`. */
export function writeLayer(layout: string, text: string): BuiltLayer {
  const entries = parseLayer(text);
  const tar = layerTar(entries);
  const blob = writeBlob(layout, MT.layerGzip, gzipSync(tar, { level: 6 }));
  return { entries, tar, diffId: sha256(tar), blob, objects: layerObjects(entries) };
}

export interface BuiltImage {
  tag: string;
  /** `oci:LAYOUT:TAG`, for `stratum pull`. */
  ref: string;
  layers: BuiltLayer[];
  diffIds: string[];
  configBytes: Buffer;
  configDigest: string;
  manifestBytes: Buffer;
  manifestDigest: string;
  /** Every object the image's layer streams reference. */
  layerObjects: Set<string>;
  /** The objects its EROFS uses (mergedObjects). */
  erofsObjects: Set<string>;
}

/** Writes the config and manifest of an image made of `layers` and tags it `tag` in the layout's index.json. */
export function writeImage(layout: string, tag: string, layers: BuiltLayer[]): BuiltImage {
  const diffIds = layers.map((l) => l.diffId);
  const configBytes = Buffer.from(
    JSON.stringify({
      created: "2021-03-04T05:06:07Z",
      architecture: hostArchitecture(),
      os: "linux",
      config: { Cmd: ["/bin/sh"], Labels: { "org.example.image": tag } },
      rootfs: { type: "layers", diff_ids: diffIds },
      history: layers.map((_, i) => ({ created: "2021-03-04T05:06:07Z", created_by: `${tag} layer ${i}` })),
    }),
  );
  const config = writeBlob(layout, MT.config, configBytes);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.manifest,
      config,
      layers: layers.map((l) => l.blob),
    }),
  );
  const manifest = writeBlob(layout, MT.manifest, manifestBytes);
  setTag(layout, tag, manifest);
  const layerObjectSet = new Set<string>();
  for (const l of layers) for (const o of l.objects) layerObjectSet.add(o);
  return {
    tag,
    ref: `oci:${layout}:${tag}`,
    layers,
    diffIds,
    configBytes,
    configDigest: config.digest,
    manifestBytes,
    manifestDigest: manifest.digest,
    layerObjects: layerObjectSet,
    erofsObjects: mergedObjects(layers.map((l) => l.entries)),
  };
}

// --- the OS-like images --------------------------------------------------------------------------------------

export interface OsImages {
  /** 5 layers: a small OS tree with hard links, symlinks, xattrs, whiteouts and an opaque directory. */
  base: BuiltImage;
  /** base's 5 layers + 15: a bootable image (kernel 6.1.0 in /usr/lib/modules and /boot), many package files. */
  v1: BuiltImage;
  /** v1's first 18 layers + 2 of its own: kernel 6.2.0 instead of 6.1.0 (whiteouts), a package removed, a file
   * changed, and v1's tool under another path (the same object). */
  v2: BuiltImage;
  /** Object IDs of notable contents, for assertions. */
  objects: {
    /** v1's kernel: in a layer v2 shares, whited out of v2's tree. */
    vmlinuz61: string;
    /** In v1's own layer 18 (/usr/bin/tool) and v2's own layer 19 (/usr/libexec/tool2). */
    tool: string;
    /** busybox, from base's layer 0, also copied into v1's own layer 18. */
    busybox: string;
  };
}

/** The ARG of a file line whose content is `s` (`text:`, escaped). */
const text = (s: string): string =>
  "text:" +
  [...Buffer.from(s)]
    .map((b) =>
      b > 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`,
    )
    .join("");

/** `n` package files under /usr/share/NAME: sizes cycle through 10, 80, 300, 1500 and 5000 bytes (4 in 5 objects). */
function packageLayer(name: string, n: number): string {
  const sizes = [10, 80, 300, 1500, 5000];
  const lines = [`/usr/share/${name} d - - -`];
  for (let i = 0; i < n; i++)
    lines.push(`/usr/share/${name}/file${i} f - - - rand:${sizes[i % sizes.length]}:${name}/file${i}`);
  return lines.join("\n");
}

const osRelease = (version: string): string =>
  text(`NAME="Stratum OS"\nID=stratum\nVERSION_ID=${version}\nPRETTY_NAME="Stratum OS ${version}"\n`);

const CAP_NET_BIND_SERVICE = "\\x01\\x00\\x00\\x02\\x00\\x04" + "\\x00".repeat(14);

/**
 * The three images, written to `layout` (initialised here) and tagged base, v1 and v2. `packageFiles` files go in
 * each of v1's 8 package layers (shared with v2): what a gc of v1 and v2 has to delete.
 */
export function buildOsImages(layout: string, opts: { packageFiles?: number } = {}): OsImages {
  initLayout(layout);
  const n = opts.packageFiles ?? 100;
  const L = (t: string): BuiltLayer => writeLayer(layout, t);
  const base = [
    L(`
      /usr                 d 755  0:0  -
      /usr/bin             d 755  0:0  -
      /usr/sbin            d 755  0:0  -
      /usr/lib             d 755  0:0  -
      /usr/share           d 755  0:0  -
      /etc                 d 755  0:0  -   user.origin=base
      /boot                d 755  0:0  -
      /sysroot             d 755  0:0  -
      /run                 d 755  0:0  -
      /var                 d 755  0:0  -
      /var/cache           d 755  0:0  -
      /tmp                 d 1777 0:0  -
      /root                d 700  0:0  -
      /bin                 l -    -    -   usr/bin
      /sbin                l -    -    -   usr/sbin
      /lib                 l -    -    -   usr/lib
      /usr/bin/busybox     f 755  0:0  1650000000  rand:60000:busybox
      /usr/bin/sh          l -    -    -   busybox
      /usr/bin/ls          h -    -    -   /usr/bin/busybox
      /usr/bin/cat         h -    -    -   /usr/bin/busybox
      /etc/hostname        f 644  0:0  -   ${text("stratum\n")}
    `),
    L(`
      /usr/lib/libc.so.6               f 755 - - rand:40000:libc
      /usr/lib/ld-linux-x86-64.so.2    f 755 - - rand:9000:ld
      /usr/lib/libc.so                 l -   - - libc.so.6
      /usr/lib/os-release              f 644 - - ${osRelease("1")}
      /etc/os-release                  l -   - - ../usr/lib/os-release
    `),
    L(`
      /etc/passwd          f 644 - - ${text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")}
      /etc/group           f 644 - - ${text("root:x:0:\nuser:x:1000:\n")}
      /etc/shadow          f 600 - - ${text("root:*:19000:0:99999:7:::\n")}
      /etc/motd            f 644 - - ${text("Welcome to Stratum OS. This message of the day is removed by a later layer.\n")}
      /etc/old.d           d 755 - -
      /etc/old.d/a.conf    f 644 - - rand:300:old.d/a.conf
      /etc/old.d/b.conf    f 644 - - ${text("b\n")}
      /usr/bin/ping        f 755 - - rand:12000:ping   security.capability=${CAP_NET_BIND_SERVICE}
      /home                d 755 - -
      /home/user           d 750 1000:1000 -
      /home/user/.profile  f 644 1000:1000 - ${text("export PATH=/usr/bin:/usr/sbin\n")}
    `),
    L(`
      /opt                         d 755 - -
      /opt/app                     d 755 - -
      /opt/app/app.bin             f 755 - - rand:20000:app
      /opt/app/README              f 644 - - ${text("the app\n")}   user.comment=kept\\x20in\\x20the\\x20layer
      /var/cache/base              d 755 - -
      /var/cache/base/index        f 644 - - rand:5000:cache/index
      /run/lock                    d 755 - -
      /run/base.pid                f 644 - - ${text("1\n")}
      /usr/share/doc               d 755 - -
      /usr/share/doc/copyright     f 644 - - rand:2000:copyright
    `),
    L(`
      /etc/motd                w
      /etc/old.d               w
      /var/cache               o
      /var/cache/new           f 644 - - rand:700:cache/new
      /etc/hostname            f 644 - - ${text("stratum-base\n")}
      /usr/sbin/init           h - - - /usr/bin/busybox
      /usr/lib/os-release      f 644 - - ${osRelease("1.1")}
    `),
  ];
  const kernel = (kver: string): string => `
      /usr/lib/modules/${kver}                  d 755 - -
      /usr/lib/modules/${kver}/vmlinuz          f 644 - - rand:300000:vmlinuz-${kver}
      /boot/vmlinuz-${kver}                     h -   - - /usr/lib/modules/${kver}/vmlinuz
      /boot/loader/entries/stratum-${kver}.conf f 644 - - ${text(`title Stratum OS\nversion ${kver}\nlinux /boot/vmlinuz-${kver}\ninitrd /boot/initramfs-${kver}.img\n`)}
  `;
  const shared = [
    L(`
      /usr/lib/modules         d 755 - -
      /boot/loader             d 755 - -
      /boot/loader/entries     d 755 - -
    `),
    L(kernel("6.1.0-stratum")),
    L(`
      /usr/lib/modules/6.1.0-stratum/initramfs.img  f 644 - - rand:120000:initramfs-6.1.0
      /boot/initramfs-6.1.0-stratum.img             h -   - - /usr/lib/modules/6.1.0-stratum/initramfs.img
    `),
    L(
      [`/usr/lib/modules/6.1.0-stratum/kernel d - - -`]
        .concat(
          Array.from(
            { length: 20 },
            (_, i) =>
              `/usr/lib/modules/6.1.0-stratum/kernel/mod${i}.ko f - - - rand:${200 + i * 150}:6.1.0/mod${i}`,
          ),
        )
        .join("\n"),
    ),
    ...Array.from({ length: 8 }, (_, k) => L(packageLayer(`pkg${k}`, n))),
    L(`
      /etc/sysctl.d            d 755 - -
      /etc/sysctl.d/10-os.conf f 644 - - ${text("net.ipv4.ip_forward = 0\nkernel.printk = 3 4 1 3\nvm.swappiness = 10\n")}
    `),
  ];
  const v1Own = [
    L(`
      /usr/lib/os-release      f 644 - - ${osRelease("2-v1")}
      /usr/share/v1-notes      f 644 - - rand:3000:v1-notes
      /usr/bin/tool            f 755 - - rand:7000:tool
      /usr/share/busybox-copy  f 755 - - rand:60000:busybox
    `),
    L(
      [`/usr/lib/v1-only d - - -`, `/etc/hostname f 644 - - ${text("stratum-v1\n")}`]
        .concat(
          Array.from(
            { length: 30 },
            (_, i) => `/usr/lib/v1-only/f${i} f - - - rand:${100 + i * 37}:v1-only/f${i}`,
          ),
        )
        .join("\n"),
    ),
  ];
  const v2Own = [
    L(`
      /usr/lib/modules/6.1.0-stratum              w
      /boot/vmlinuz-6.1.0-stratum                 w
      /boot/initramfs-6.1.0-stratum.img           w
      /boot/loader/entries/stratum-6.1.0-stratum.conf w
      /usr/share/pkg3                             w
      /usr/lib/os-release                         f 644 - - ${osRelease("2-v2")}
      ${kernel("6.2.0-stratum")}
    `),
    L(`
      /usr/libexec             d 755 - -
      /usr/libexec/tool2       f 755 - - rand:7000:tool
      /usr/share/pkg1/file1    f 644 - - rand:900:pkg1/file1-v2
      /etc/hostname            f 644 - - ${text("stratum-v2\n")}
    `),
  ];
  const baseImage = writeImage(layout, "base", base);
  return {
    base: baseImage,
    v1: writeImage(layout, "v1", [...base, ...shared, ...v1Own]),
    v2: writeImage(layout, "v2", [...base, ...shared, ...v2Own]),
    objects: {
      vmlinuz61: objectIdOf(prngBytes("vmlinuz-6.1.0-stratum", 300000)),
      tool: objectIdOf(prngBytes("tool", 7000)),
      busybox: objectIdOf(prngBytes("busybox", 60000)),
    },
  };
}
