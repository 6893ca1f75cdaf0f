// Real tar fixtures made with real tools (GNU tar and bsdtar) from one source tree that exercises the odd corners
// of the format: empty/small/boundary-sized files, long paths (>100, >255 bytes), long symlink targets, hard
// links, a fifo, a character device, sticky and setgid directories, binary user.* xattrs, a file capability, a
// sparse file with many data regions, uid 3000000, nanosecond, pre-1970 and post-2242 mtimes, UTF-8 and
// non-UTF-8 names. Tests compare what the parser reads against the source tree (`srcDir`) and `xattrs`.
//
// Usage: `const fixtures = await makeTarFixtures(dir)` (dir is created; the tree goes to dir/src and archives
// to dir/*.tar), and `removeTarFixtures(dir)` when done. `missingTarTools()` says which tools are absent; their
// fixtures are left out (tests should skip with that reason).

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TarFixture {
  name: string;
  path: string;
  tool: "gnu-tar" | "bsdtar";
  format: "gnu" | "posix" | "ustar" | "pax" | "gnutar";
  /** The tree the archive was made from (`-C srcDir`). */
  srcDir: string;
  /** Top-level names archived, or null for "." (the whole tree, minus `excluded`). */
  members: string[] | null;
  /** Top-level names left out when `members` is null. */
  excluded: string[];
  /** The archive carries xattrs (PAX SCHILY.xattr / LIBARCHIVE.xattr). */
  xattrs: boolean;
  /** mtimes are PAX records with nanoseconds. */
  nsecMtime: boolean;
  /** SPARSE_FILE is in the archive, stored sparse. */
  sparse: boolean;
  numericOwner: boolean;
  /** The archive length is a multiple of this (GNU tar and bsdtar pad to 10240 by default). */
  recordSize: number;
  /** Archives that should contain a PAX global header. */
  globalHeader: boolean;
}

export const SPARSE_FILE = "sparse.img";
export const SPARSE_SIZE = 64 << 20;
/**
 * Offsets at which SPARSE_FILE holds data: 33 regions, more than the 4 + 21 a GNU `S` header and its first
 * extension block hold, so the sparse map needs a chain of two extension blocks.
 */
export const SPARSE_DATA_OFFSETS = [
  ...Array.from({ length: 32 }, (_, i) => i * (2 << 20) + 1000),
  SPARSE_SIZE - 5,
];
export const BIG_UID = 3_000_000;
export const BIG_GID = 3_000_001;
export const NSEC_MTIME = { sec: 1577934245, nsec: 123456789 }; // 2020-01-02 03:04:05.123456789 UTC
export const NON_UTF8_NAME = Buffer.from([...Buffer.from("nonutf8-"), 0xff, 0xfe]);

/** Source xattrs written into the tree: relative path (latin1 of the raw bytes) → name → value. */
export type XattrManifest = Map<string, Map<string, Buffer>>;

const manifests = new Map<string, XattrManifest>();

/** The xattrs makeTarFixtures(dir) set on its tree (user.* and security.capability only). */
export function fixtureXattrs(dir: string): XattrManifest {
  return manifests.get(path.resolve(dir)) ?? new Map<string, Map<string, Buffer>>();
}

function hasTool(cmd: string): boolean {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .some((d) => d !== "" && fs.existsSync(path.join(d, cmd)));
}

/** Tools the fixtures need that are not installed, with the Debian package that provides them. */
export function missingTarTools(): { tool: string; reason: string }[] {
  const out: { tool: string; reason: string }[] = [];
  if (!hasTool("tar")) out.push({ tool: "tar", reason: "GNU tar not installed (apt-get install -y tar)" });
  if (!hasTool("bsdtar")) {
    out.push({ tool: "bsdtar", reason: "bsdtar not installed (apt-get install -y libarchive-tools)" });
  }
  if (!hasTool("setfattr"))
    out.push({ tool: "setfattr", reason: "setfattr not installed (apt-get install -y attr)" });
  if (!hasTool("setcap"))
    out.push({ tool: "setcap", reason: "setcap not installed (apt-get install -y libcap2-bin)" });
  return out;
}

function write(file: string, data: Buffer | string, mode?: number): void {
  fs.writeFileSync(file, data);
  if (mode !== undefined) fs.chmodSync(file, mode);
}

async function buildTree(src: string): Promise<XattrManifest> {
  fs.mkdirSync(src, { recursive: true });
  const j = (...p: string[]): string => path.join(src, ...p);
  write(j("empty"), "");
  write(j("one"), "1");
  write(j("b64"), Buffer.alloc(64, "a"));
  write(j("b65"), Buffer.alloc(65, "b"));
  write(j("f4095"), randomBytes(4095));
  write(j("f4096"), randomBytes(4096));
  write(j("f4097"), randomBytes(4097));
  write(j("big.bin"), randomBytes((1 << 20) + 333));
  write(j("exec.sh"), "#!/bin/sh\necho hi\n", 0o755);
  // >100 bytes, but representable in ustar (prefix ≤ 155, name ≤ 100).
  fs.mkdirSync(j("long", "d".repeat(60)), { recursive: true });
  write(j("long", "d".repeat(60), "f".repeat(60)), randomBytes(300));
  // >255 bytes.
  const deep = j("verylong", "a".repeat(120), "b".repeat(120));
  fs.mkdirSync(deep, { recursive: true });
  write(path.join(deep, "c".repeat(40)), "deep");
  fs.symlinkSync("b65", j("symlink-short"));
  fs.symlinkSync(`../${"t".repeat(150)}/target`, j("symlink-long"));
  fs.linkSync(j("b65"), j("hard-b65"));
  fs.linkSync(j("one"), j("hard-one"));
  fs.linkSync(j("big.bin"), j("hard-big"));
  await run("mkfifo", [j("fifo")]);
  try {
    await run("mknod", [j("chardev"), "c", "1", "3"]);
  } catch {
    // Not permitted here (no CAP_MKNOD): the tree simply has no device.
  }
  fs.mkdirSync(j("sticky"));
  fs.chmodSync(j("sticky"), 0o1777);
  fs.mkdirSync(j("setgid"));
  fs.chmodSync(j("setgid"), 0o2755);
  write(j("setgid", "inside"), "x".repeat(100));
  write(j("héllo-ünïcode"), "utf-8 name");
  fs.writeFileSync(Buffer.concat([Buffer.from(src + "/"), NON_UTF8_NAME]), "not utf-8");

  const xattrs: XattrManifest = new Map();
  const setX = async (rel: string, name: string, value: Buffer): Promise<void> => {
    await run("setfattr", ["-n", name, "-v", value.length === 0 ? "" : `0x${value.toString("hex")}`, j(rel)]);
    const m = xattrs.get(rel) ?? new Map<string, Buffer>();
    m.set(name, value);
    xattrs.set(rel, m);
  };
  write(j("xattr.bin"), "y".repeat(200));
  fs.mkdirSync(j("xattrdir"));
  if (hasTool("setfattr")) {
    await setX("xattr.bin", "user.bin", Buffer.from([0xff, 0x00, 0xfe, 0x80, 0xc3]));
    await setX("xattr.bin", "user.text", Buffer.from("hello world"));
    await setX("xattr.bin", "user.empty", Buffer.alloc(0));
    await setX("xattrdir", "user.dir", Buffer.from([0x00, 0x0a, 0x3d, 0x25]));
  }
  write(j("cap"), "z".repeat(80), 0o755);
  if (hasTool("setcap") && hasTool("getfattr")) {
    try {
      await run("setcap", ["cap_net_raw+ep", j("cap")]);
      const { stdout } = await run(
        "getfattr",
        ["-n", "security.capability", "-e", "hex", "--only-values", j("cap")],
        {
          encoding: "buffer",
        },
      );
      const m = new Map<string, Buffer>([["security.capability", stdout]]);
      xattrs.set("cap", m);
    } catch {
      // No file capabilities on this filesystem: "cap" stays a plain executable.
    }
  }

  write(j("uid3m"), "owned by a big uid, more than sixty-four bytes of content so it is external");
  try {
    fs.chownSync(j("uid3m"), BIG_UID, BIG_GID);
  } catch {
    // Not root: the file keeps our uid (tests compare against the tree, so they still hold).
  }

  write(j("nsec"), "n".repeat(70));
  await run("touch", ["-d", "2020-01-02 03:04:05.123456789 UTC", j("nsec")]);
  write(j("old"), "o");
  await run("touch", ["-d", "1960-01-01 00:00:00 UTC", j("old")]);
  write(j("future"), "f");
  await run("touch", ["-d", "2300-01-01 00:00:00 UTC", j("future")]);

  const fd = fs.openSync(j(SPARSE_FILE), "w");
  try {
    fs.ftruncateSync(fd, SPARSE_SIZE);
    for (const [i, off] of SPARSE_DATA_OFFSETS.entries()) {
      fs.writeSync(fd, Buffer.from(`data${i}`), 0, Math.min(5, SPARSE_SIZE - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
  return xattrs;
}

/** Top-level names that plain ustar (GNU tar and bsdtar) can represent. */
const USTAR_MEMBERS = [
  "empty",
  "one",
  "b64",
  "b65",
  "f4095",
  "f4096",
  "f4097",
  "big.bin",
  "exec.sh",
  "long",
  "symlink-short",
  "hard-b65",
  "hard-one",
  "hard-big",
  "fifo",
  "sticky",
  "setgid",
  "nsec",
  "xattr.bin",
  "héllo-ünïcode",
];

/** A small archive's worth of the hard cases (for byte-by-byte chunking). */
const SMALL_MEMBERS = [
  "verylong",
  "symlink-long",
  "uid3m",
  "old",
  "future",
  "nsec",
  "b65",
  "hard-b65",
  "one",
  "xattr.bin",
  "xattrdir",
  SPARSE_FILE,
];

/**
 * Build the source tree under dir/src and the fixture archives under dir. Fixtures whose tool is missing are
 * left out (see missingTarTools()).
 */
export async function makeTarFixtures(dir: string): Promise<TarFixture[]> {
  dir = path.resolve(dir);
  fs.mkdirSync(dir, { recursive: true });
  const srcDir = path.join(dir, "src");
  const xattrs = await buildTree(srcDir);
  manifests.set(dir, xattrs);
  const hasDev = fs.existsSync(path.join(srcDir, "chardev"));
  const ustarMembers = hasDev ? [...USTAR_MEMBERS, "chardev"] : USTAR_MEMBERS;
  const env = { ...process.env, LC_ALL: "C.UTF-8", TZ: "UTC" };
  const fixtures: TarFixture[] = [];
  const gnuTar = hasTool("tar");
  const bsdtar = hasTool("bsdtar");

  const make = async (
    f: Omit<TarFixture, "path" | "srcDir" | "excluded"> & { excluded?: string[] },
    cmd: string,
    args: string[],
  ): Promise<void> => {
    const file = path.join(dir, f.name);
    const excluded = f.excluded ?? [];
    const exclude =
      f.members !== null
        ? []
        : excluded.flatMap((e) => (cmd === "tar" ? [`--exclude=./${e}`] : ["--exclude", `./${e}`]));
    const what = f.members ?? ["."];
    await run(cmd, [...args, ...exclude, "-cf", file, "-C", srcDir, ...what], { env });
    fixtures.push({ ...f, excluded, path: file, srcDir });
  };
  const base = {
    numericOwner: false,
    recordSize: 10240,
    globalHeader: false,
    sparse: false,
    xattrs: false,
    nsecMtime: false,
  };
  const xattrArgs = ["--xattrs", "--xattrs-include=*"];

  if (gnuTar) {
    await make(
      {
        ...base,
        name: "gnu-gnu.tar",
        tool: "gnu-tar",
        format: "gnu",
        members: null,
        excluded: [SPARSE_FILE],
      },
      "tar",
      ["--format=gnu"],
    );
    await make(
      {
        ...base,
        name: "gnu-gnu-numeric-owner.tar",
        tool: "gnu-tar",
        format: "gnu",
        members: null,
        excluded: [SPARSE_FILE],
        numericOwner: true,
      },
      "tar",
      ["--format=gnu", "--numeric-owner"],
    );
    await make(
      {
        ...base,
        name: "gnu-posix-xattrs.tar",
        tool: "gnu-tar",
        format: "posix",
        members: null,
        excluded: [SPARSE_FILE],
        xattrs: true,
        nsecMtime: true,
        globalHeader: true,
      },
      "tar",
      ["--format=posix", ...xattrArgs, "--pax-option=comment=stratum fixture"],
    );
    await make(
      { ...base, name: "gnu-ustar.tar", tool: "gnu-tar", format: "ustar", members: ustarMembers },
      "tar",
      ["--format=ustar"],
    );
    await make(
      { ...base, name: "gnu-gnu-sparse.tar", tool: "gnu-tar", format: "gnu", members: null, sparse: true },
      "tar",
      ["--format=gnu", "--sparse"],
    );
    for (const v of ["0.0", "0.1", "1.0"]) {
      await make(
        {
          ...base,
          name: `gnu-posix-sparse-${v}.tar`,
          tool: "gnu-tar",
          format: "posix",
          members: null,
          sparse: true,
          xattrs: true,
          nsecMtime: true,
        },
        "tar",
        ["--format=posix", "--sparse", `--sparse-version=${v}`, ...xattrArgs],
      );
    }
    await make(
      {
        ...base,
        name: "gnu-gnu-record512.tar",
        tool: "gnu-tar",
        format: "gnu",
        members: null,
        excluded: [SPARSE_FILE],
        recordSize: 512,
      },
      "tar",
      ["--format=gnu", "--record-size=512"],
    );
    await make(
      {
        ...base,
        name: "gnu-gnu-small.tar",
        recordSize: 512,
        tool: "gnu-tar",
        format: "gnu",
        members: SMALL_MEMBERS,
        sparse: true,
      },
      "tar",
      ["--format=gnu", "--sparse", "--record-size=512"],
    );
    await make(
      {
        ...base,
        name: "gnu-posix-small.tar",
        tool: "gnu-tar",
        format: "posix",
        members: SMALL_MEMBERS,
        sparse: true,
        xattrs: true,
        nsecMtime: true,
        recordSize: 512,
      },
      "tar",
      ["--format=posix", "--sparse", "--sparse-version=1.0", ...xattrArgs, "--record-size=512"],
    );
  }
  if (bsdtar) {
    // Writing to a regular file, bsdtar pads only to 512 bytes (two zero blocks, no 10240-byte record).
    const bsd = { ...base, recordSize: 512 };
    // bsdtar finds holes itself and stores SPARSE_FILE as PAX sparse 1.0.
    await make(
      {
        ...bsd,
        name: "bsdtar-pax.tar",
        tool: "bsdtar",
        format: "pax",
        members: null,
        xattrs: true,
        nsecMtime: true,
        sparse: true,
      },
      "bsdtar",
      ["--format", "pax", "--xattrs"],
    );
    await make(
      { ...bsd, name: "bsdtar-ustar.tar", tool: "bsdtar", format: "ustar", members: ustarMembers },
      "bsdtar",
      ["--format", "ustar"],
    );
    // libarchive's gnutar writer clamps pre-1970 and post-2242 times and writes sparse files densely.
    await make(
      {
        ...bsd,
        name: "bsdtar-gnutar.tar",
        tool: "bsdtar",
        format: "gnutar",
        members: null,
        excluded: [SPARSE_FILE, "old", "future"],
      },
      "bsdtar",
      ["--format", "gnutar"],
    );
  }
  return fixtures;
}

/** Remove everything makeTarFixtures(dir) made (the whole dir). */
export function removeTarFixtures(dir: string): void {
  manifests.delete(path.resolve(dir));
  fs.rmSync(dir, { recursive: true, force: true });
}
