// TarSplitter and the tar helpers against real archives (GNU tar gnu/posix/ustar/sparse 0.0, 0.1, 1.0, bsdtar
// pax/ustar/gnutar; see helpers/tar-fixtures.ts) and hand-made edge cases. Checks: byte-exact reassembly in any
// chunking with an identical split, the composefs split rule, metadata against the source tree, and errors.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import {
  INLINE_CONTENT_MAX,
  TarFormatError,
  TarSplitter,
  checksumMatches,
  decodeNumber,
  isZeroBlock,
  parseHeader,
  parsePaxRecords,
  parsePaxTime,
  type TarEntry,
  type TarEvent,
} from "../src/format/tar.ts";
import {
  BIG_UID,
  NON_UTF8_NAME,
  NSEC_MTIME,
  SPARSE_FILE,
  fixtureXattrs,
  makeTarFixtures,
  missingTarTools,
  removeTarFixtures,
  type TarFixture,
} from "./helpers/tar-fixtures.ts";
import { mulberry32 } from "./helpers/prng.ts";

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "stratum-tar-"));
after(() => removeTarFixtures(workDir));
const missing = missingTarTools();
const fixtures = await makeTarFixtures(workDir).catch((e: unknown) => {
  removeTarFixtures(workDir);
  throw e;
});

// ---------------------------------------------------------------------------------------------------------------
// Running the splitter

type Token =
  | { t: "inline"; data: Buffer }
  | { t: "entry"; entry: TarEntry; at: number }
  | { t: "external"; size: number; data: Buffer; at: number };

interface Split {
  tokens: Token[];
  bytes: Buffer;
  entries: { entry: TarEntry; at: number; external: Buffer | null }[];
  events: number;
}

type Chunking = { name: string; next: () => number };

const chunkings = (): Chunking[] => {
  const r = mulberry32(0x5eed);
  return [
    { name: "whole", next: () => Number.MAX_SAFE_INTEGER },
    { name: "511", next: () => 511 },
    { name: "513", next: () => 513 },
    { name: "random 1..70000", next: () => 1 + Math.floor(r() * 70000) },
  ];
};

/** Feed `buf` in chunks and check the event grammar; returns the normalised split. */
function split(buf: Buffer, next: () => number = () => Number.MAX_SAFE_INTEGER): Split {
  const s = new TarSplitter();
  const tokens: Token[] = [];
  const parts: Buffer[] = [];
  let emitted = 0;
  let ext: { size: number; parts: Buffer[]; got: number; at: number } | null = null;
  let prev: TarEvent["kind"] | null = null;
  let events = 0;
  const onEvent = (e: TarEvent): void => {
    events++;
    switch (e.kind) {
      case "inline": {
        assert.equal(ext, null, "inline bytes inside an external");
        assert.ok(e.data.length > 0, "empty inline event");
        parts.push(e.data);
        const last = tokens.at(-1);
        if (last?.t === "inline") last.data = Buffer.concat([last.data, e.data]);
        else tokens.push({ t: "inline", data: Buffer.from(e.data) });
        emitted += e.data.length;
        break;
      }
      case "entry":
        assert.equal(ext, null, "entry inside an external");
        tokens.push({ t: "entry", entry: e.entry, at: emitted });
        break;
      case "external":
        assert.equal(prev, "entry", "external not right after its entry");
        assert.ok(e.size > 0);
        ext = { size: e.size, parts: [], got: 0, at: emitted };
        break;
      case "data":
        assert.notEqual(ext, null, "data outside an external");
        assert.ok(e.data.length > 0, "empty data event");
        ext!.parts.push(Buffer.from(e.data));
        ext!.got += e.data.length;
        assert.ok(ext!.got <= ext!.size, "more data than the external size");
        parts.push(e.data);
        emitted += e.data.length;
        break;
      case "external-end":
        assert.notEqual(ext, null, "external-end without external");
        assert.equal(ext!.got, ext!.size, "external-end before all data");
        tokens.push({ t: "external", size: ext!.size, data: Buffer.concat(ext!.parts), at: ext!.at });
        ext = null;
        break;
    }
    prev = e.kind;
  };
  let pos = 0;
  while (pos < buf.length) {
    const n = Math.min(next(), buf.length - pos);
    // Copy each chunk so nothing can lean on views of the whole buffer.
    const chunk = n === buf.length ? buf : Buffer.from(buf.subarray(pos, pos + n));
    for (const e of s.push(chunk)) onEvent(e);
    pos += n;
  }
  for (const e of s.end()) onEvent(e);
  assert.equal(ext, null, "unterminated external");
  assert.equal(s.offset, buf.length);
  const entries: Split["entries"] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.t !== "entry") continue;
    const n = tokens[i + 1];
    entries.push({ entry: t.entry, at: t.at, external: n?.t === "external" ? n.data : null });
  }
  return { tokens, bytes: Buffer.concat(parts), entries, events };
}

function tokenSummary(tokens: Token[]): unknown[] {
  return tokens.map((t) => (t.t === "inline" ? { t: "inline", data: t.data } : t));
}

function splitError(buf: Buffer, next: () => number = () => Number.MAX_SAFE_INTEGER): TarFormatError {
  try {
    split(buf, next);
  } catch (e) {
    if (e instanceof TarFormatError) return e;
    throw e;
  }
  assert.fail("expected a TarFormatError");
}

const isRegular = (e: TarEntry): boolean => e.type === "0" || e.type === "\0" || e.type === "7";

// ---------------------------------------------------------------------------------------------------------------
// Source-tree comparison

const latin1 = (b: Buffer): string => b.toString("latin1");

/** Archive path → path relative to the tree ("" for the root). */
function relPath(p: Buffer): Buffer {
  let s = 0;
  let e = p.length;
  if (p[0] === 0x2e && p[1] === 0x2f) s = 2;
  else if (p.length === 1 && p[0] === 0x2e) s = 1;
  while (e > s && p[e - 1] === 0x2f) e--;
  return p.subarray(s, e);
}

function srcFile(fx: TarFixture, rel: Buffer): Buffer {
  return rel.length === 0 ? Buffer.from(fx.srcDir) : Buffer.concat([Buffer.from(fx.srcDir + "/"), rel]);
}

/** Every path (latin1 of raw bytes, relative) the fixture should contain. */
function expectedPaths(fx: TarFixture): Set<string> {
  const out = new Set<string>();
  const walk = (rel: Buffer): void => {
    out.add(latin1(rel));
    const abs = srcFile(fx, rel);
    if (!fs.lstatSync(abs).isDirectory()) return;
    for (const name of fs.readdirSync(abs, { encoding: "buffer" })) {
      walk(rel.length === 0 ? name : Buffer.concat([rel, Buffer.from("/"), name]));
    }
  };
  if (fx.members === null) {
    out.add("");
    for (const name of fs.readdirSync(fx.srcDir, { encoding: "buffer" })) {
      if (!fx.excluded.includes(latin1(name))) walk(name);
    }
  } else {
    for (const m of fx.members) walk(Buffer.from(m));
  }
  return out;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

function checkAgainstTree(fx: TarFixture, sp: Split, archive: Buffer): void {
  const seen = new Set<string>();
  const xattrManifest = fixtureXattrs(path.dirname(fx.srcDir));
  for (const { entry: e, at, external } of sp.entries) {
    const rel = relPath(e.path);
    const key = latin1(rel);
    const where = `${fx.name}: ${JSON.stringify(e.path.toString("utf8"))}`;
    assert.ok(!seen.has(key), `${where}: listed twice`);
    seen.add(key);
    const abs = srcFile(fx, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    assert.equal(e.mode, Number(st.mode) & 0o7777, `${where}: mode`);
    assert.equal(e.uid, Number(st.uid), `${where}: uid`);
    assert.equal(e.gid, Number(st.gid), `${where}: gid`);
    const sec = Number(floorDiv(st.mtimeNs, 1_000_000_000n));
    const nsec = Number(st.mtimeNs - floorDiv(st.mtimeNs, 1_000_000_000n) * 1_000_000_000n);
    assert.equal(e.mtimeSec, sec, `${where}: mtime seconds`);
    assert.equal(e.mtimeNsec, fx.nsecMtime ? nsec : 0, `${where}: mtime nanoseconds`);
    if (fx.numericOwner) {
      assert.equal(e.uname, "", `${where}: uname`);
      assert.equal(e.gname, "", `${where}: gname`);
    } else {
      if (e.uid === 0) assert.equal(e.uname, "root", `${where}: uname`);
      if (e.gid === 0) assert.equal(e.gname, "root", `${where}: gname`);
    }
    const payload = external ?? archive.subarray(at, at + e.size);
    assert.equal(payload.length, e.size);
    const isSparseFile = latin1(rel) === SPARSE_FILE;
    assert.equal(e.sparse, isSparseFile && fx.sparse, `${where}: sparse flag`);
    switch (e.type) {
      case "0":
      case "\0":
      case "7":
        assert.ok(st.isFile(), `${where}: not a file in the tree`);
        if (!e.sparse) {
          assert.equal(e.size, Number(st.size), `${where}: size`);
          assert.ok(payload.equals(fs.readFileSync(abs)), `${where}: content differs`);
        }
        break;
      case "S":
        assert.ok(st.isFile() && e.sparse, `${where}: sparse`);
        break;
      case "1": {
        const target = fs.lstatSync(srcFile(fx, relPath(e.linkPath)), { bigint: true });
        assert.equal(target.ino, st.ino, `${where}: hard link target ${e.linkPath.toString()}`);
        break;
      }
      case "2":
        assert.ok(st.isSymbolicLink(), `${where}: not a symlink`);
        assert.ok(e.linkPath.equals(fs.readlinkSync(abs, { encoding: "buffer" })), `${where}: link target`);
        break;
      case "3": {
        assert.ok(st.isCharacterDevice(), `${where}: not a char device`);
        const rdev = Number(st.rdev);
        assert.equal(e.devMajor, (rdev >> 8) & 0xfff, `${where}: major`);
        assert.equal(e.devMinor, (rdev & 0xff) | ((rdev >> 12) & 0xfff00), `${where}: minor`);
        break;
      }
      case "5":
        assert.ok(st.isDirectory(), `${where}: not a directory`);
        break;
      case "6":
        assert.ok(st.isFIFO(), `${where}: not a fifo`);
        break;
      default:
        assert.fail(`${where}: unexpected typeflag ${JSON.stringify(e.type)}`);
    }
    if (e.type !== "1") {
      const got = new Map(
        [...e.xattrs].filter(([k]) => k.startsWith("user.") || k === "security.capability"),
      );
      const want = fx.xattrs
        ? (xattrManifest.get(key) ?? new Map<string, Buffer>())
        : new Map<string, Buffer>();
      assert.deepEqual(got, want, `${where}: xattrs`);
    }
  }
  assert.deepEqual([...seen].sort(), [...expectedPaths(fx)].sort(), `${fx.name}: entry list`);
}

// ---------------------------------------------------------------------------------------------------------------
// Real archives

describe("tar fixtures from real tools", () => {
  for (const m of missing) {
    test(`${m.tool} fixtures`, (t) => {
      t.skip(m.reason);
    });
  }

  test("the fixture set covers the formats", () => {
    const names = fixtures.map((f) => f.name);
    if (!missing.some((m) => m.tool === "tar")) {
      for (const n of ["gnu-gnu.tar", "gnu-posix-xattrs.tar", "gnu-ustar.tar", "gnu-gnu-sparse.tar"]) {
        assert.ok(names.includes(n), n);
      }
      for (const v of ["0.0", "0.1", "1.0"]) assert.ok(names.includes(`gnu-posix-sparse-${v}.tar`));
    }
    if (!missing.some((m) => m.tool === "bsdtar")) {
      for (const n of ["bsdtar-pax.tar", "bsdtar-ustar.tar", "bsdtar-gnutar.tar"])
        assert.ok(names.includes(n), n);
    }
    assert.ok(fixtures.length >= 8);
  });

  for (const fx of fixtures) {
    describe(fx.name, () => {
      const archive = fs.readFileSync(fx.path);
      let reference: Split | null = null;
      const ref = (): Split => (reference ??= split(archive));

      test("reassembles byte for byte with the same split in every chunking", () => {
        const base = ref();
        assert.ok(base.bytes.equals(archive), "whole-buffer reassembly differs");
        const all = chunkings();
        if (archive.length <= 256 << 10) all.push({ name: "1 byte", next: () => 1 });
        for (const c of all) {
          const s = split(archive, c.next);
          assert.ok(s.bytes.equals(archive), `${c.name}: reassembly differs`);
          assert.deepEqual(tokenSummary(s.tokens), tokenSummary(base.tokens), `${c.name}: split differs`);
        }
      });

      test("follows the composefs split rule", () => {
        const s = ref();
        let externalSum = 0;
        let expectedSum = 0;
        let externals = 0;
        for (const { entry: e, at, external } of s.entries) {
          const shouldBeExternal = isRegular(e) && !e.sparse && e.size > INLINE_CONTENT_MAX;
          assert.equal(external !== null, shouldBeExternal, `${e.path.toString()}: external?`);
          if (shouldBeExternal) expectedSum += e.size;
          if (external !== null) {
            externals++;
            externalSum += external.length;
            assert.equal(external.length, e.size);
            assert.ok(external.equals(archive.subarray(at, at + e.size)));
          }
          // The entry event sits right after its header blocks, at a block boundary.
          assert.ok(at - e.headerOffset >= 512 && (at - e.headerOffset) % 512 === 0, "entry position");
          assert.ok(checksumMatches(archive.subarray(e.headerOffset, e.headerOffset + 512)));
        }
        assert.equal(externalSum, expectedSum);
        assert.ok(externals >= 4, "expected several external payloads");
        // Inline bytes + external bytes account for everything.
        const inline = s.tokens.reduce((n, t) => n + (t.t === "inline" ? t.data.length : 0), 0);
        assert.equal(inline + externalSum, archive.length);
        // Every payload ≤ 64 bytes and every sparse entry is inline.
        for (const { entry: e, external } of s.entries) {
          if (e.size <= INLINE_CONTENT_MAX || e.sparse) assert.equal(external, null);
        }
      });

      test("metadata matches the source tree", () => {
        checkAgainstTree(fx, ref(), archive);
        const s = ref();
        const byName = new Map(s.entries.map(({ entry }) => [latin1(relPath(entry.path)), entry]));
        if (fx.members === null || fx.members.includes("uid3m")) {
          assert.equal(byName.get("uid3m")?.uid, BIG_UID);
        }
        const nsec = byName.get("nsec");
        assert.ok(nsec);
        assert.equal(nsec.mtimeSec, NSEC_MTIME.sec);
        assert.equal(nsec.mtimeNsec, fx.nsecMtime ? NSEC_MTIME.nsec : 0);
        if (fx.members === null) assert.ok(byName.has(latin1(NON_UTF8_NAME)), "non-UTF-8 name");
        const sparse = s.entries.filter(({ entry }) => entry.sparse);
        assert.equal(sparse.length, fx.sparse ? 1 : 0);
        const long = [...byName.keys()].filter((k) => k.length > 255);
        if (fx.members === null || fx.members.includes("verylong")) assert.ok(long.length > 0, "path > 255");
        if (fx.globalHeader)
          assert.equal(s.entries[0].entry.pax.get("comment")?.toString(), "stratum fixture");
      });

      test("end of archive and record padding are inline", () => {
        const s = ref();
        assert.equal(archive.length % fx.recordSize, 0);
        const last = s.entries.at(-1)!;
        const end = last.at + last.entry.size + ((512 - (last.entry.size % 512)) % 512);
        assert.ok(isZeroBlock(archive.subarray(end, end + 512)));
        const tail = s.tokens.at(-1)!;
        assert.equal(tail.t, "inline");
        assert.ok(tail.data.length >= archive.length - end);
        if (fx.recordSize === 512) assert.equal(archive.length - end, 1024);
      });
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Damaged and cut archives (from a real PAX and a real GNU archive)

describe("errors on real archives", () => {
  const pax = fixtures.find((f) => f.name === "gnu-posix-small.tar");
  const gnu = fixtures.find((f) => f.name === "gnu-gnu-small.tar");
  const skip = pax === undefined || gnu === undefined ? "GNU tar fixtures missing" : undefined;

  test("a flipped byte in a header is a checksum error naming the offset", { skip }, () => {
    for (const fx of [pax!, gnu!]) {
      const archive = fs.readFileSync(fx.path);
      const s = split(archive);
      for (const { entry, at } of [s.entries[3], s.entries.at(-2)!]) {
        for (const off of [entry.headerOffset, at - 512]) {
          const bad = Buffer.from(archive);
          bad[off + 20] ^= 0x40;
          for (const next of [() => Number.MAX_SAFE_INTEGER, () => 509]) {
            const err = splitError(bad, next);
            assert.equal(err.offset, off);
            assert.match(err.message, new RegExp(`checksum at offset ${off}\\b`));
            assert.equal(err.code, "E_BAD_INPUT");
          }
        }
      }
    }
  });

  test("truncation inside a header, a PAX header, a sparse map and a payload", { skip }, () => {
    const archive = fs.readFileSync(pax!.path);
    const s = split(archive);
    const withPax = s.entries.find(({ entry, at }) => at - entry.headerOffset >= 1024)!;
    const ext = s.entries.find(({ external }) => external !== null)!;
    const small = s.entries.find(({ entry }) => entry.size > 0 && entry.size <= 64)!;
    const cuts = [
      withPax.at - 512 + 100, // the main header block
      withPax.entry.headerOffset + 200, // the PAX header block
      withPax.entry.headerOffset + 512 + 10, // the PAX records
      ext.at + 100, // an external payload
      ext.at + ext.entry.size + 1, // its padding
      small.at + 1, // an inline payload
    ];
    const gnuArchive = fs.readFileSync(gnu!.path);
    const gs = split(gnuArchive);
    const sparse = gs.entries.find(({ entry }) => entry.type === "S")!;
    assert.equal(sparse.at - sparse.entry.headerOffset, 1536, "GNU sparse header + 2 extension blocks");
    const longName = gs.entries.find(
      ({ entry, at }) => at - entry.headerOffset >= 1024 && entry.type !== "S",
    )!;
    const cases: [Buffer, number][] = [
      ...cuts.map((c): [Buffer, number] => [archive, c]),
      [gnuArchive, sparse.entry.headerOffset + 512 + 40], // GNU sparse extension block
      [gnuArchive, longName.entry.headerOffset + 512 + 3], // GNU long-name data
    ];
    for (const [src, cut] of cases) {
      for (const next of [() => Number.MAX_SAFE_INTEGER, () => 700]) {
        const err = splitError(src.subarray(0, cut), next);
        assert.match(err.message, /^truncated tar: EOF at offset \d+ inside /);
        assert.equal(err.offset, cut);
        assert.match(err.message, new RegExp(`offset ${cut}\\b`));
      }
    }
  });

  test("an archive ending at an entry boundary without zero blocks parses", { skip }, () => {
    for (const fx of [pax!, gnu!]) {
      const archive = fs.readFileSync(fx.path);
      const full = split(archive);
      const last = full.entries.at(-1)!;
      const end = last.at + last.entry.size + ((512 - (last.entry.size % 512)) % 512);
      const cut = split(archive.subarray(0, end), () => 4000);
      assert.ok(cut.bytes.equals(archive.subarray(0, end)));
      assert.deepEqual(
        cut.entries.map((e) => e.entry),
        full.entries.map((e) => e.entry),
      );
      // Cut before a middle entry: the entries before it.
      const mid = full.entries[5];
      const prefix = split(archive.subarray(0, mid.entry.headerOffset));
      assert.equal(prefix.entries.length, 5);
      // One zero block, or part of one, is a clean end too.
      assert.equal(split(archive.subarray(0, end + 512)).entries.length, full.entries.length);
      assert.equal(split(archive.subarray(0, end + 100)).entries.length, full.entries.length);
    }
  });

  test("payload bytes stream out as views of the pushed chunk", { skip }, () => {
    const fx = fixtures.find((f) => f.name === "gnu-gnu.tar")!;
    const archive = fs.readFileSync(fx.path);
    const s = new TarSplitter();
    const events = s.push(archive);
    for (const e of events) {
      if (e.kind === "data" || e.kind === "inline") assert.equal(e.data.buffer, archive.buffer);
    }
    // In 64 KiB chunks the 1 MiB payload arrives piecewise, as it is pushed.
    const t = new TarSplitter();
    let inBig = false;
    let pieces = 0;
    for (let pos = 0; pos < archive.length; pos += 65536) {
      for (const e of t.push(archive.subarray(pos, pos + 65536))) {
        if (e.kind === "external") inBig = e.size > 1 << 20;
        if (e.kind === "data" && inBig) {
          pieces++;
          assert.ok(e.data.length <= 65536);
        }
        if (e.kind === "external-end") inBig = false;
      }
    }
    t.end();
    assert.ok(pieces >= 16, `big payload came in ${pieces} pieces`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Hand-made archives for the corners the tools do not reach

interface HeaderSpec {
  name?: string | Buffer;
  type?: string;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  prefix?: string;
  format?: "ustar" | "gnu" | "v7" | "star";
  /** raw field overrides applied before the checksum: [offset, bytes] */
  raw?: [number, Buffer][];
  checksum?: "unsigned" | "signed" | "wrong";
}

function octal(n: number, width: number): Buffer {
  return Buffer.from(n.toString(8).padStart(width - 1, "0") + "\0", "latin1");
}

function header(h: HeaderSpec): Buffer {
  const b = Buffer.alloc(512);
  const name = typeof h.name === "string" ? Buffer.from(h.name) : (h.name ?? Buffer.from("file"));
  name.copy(b, 0);
  octal(h.mode ?? 0o644, 8).copy(b, 100);
  octal(h.uid ?? 0, 8).copy(b, 108);
  octal(h.gid ?? 0, 8).copy(b, 116);
  octal(h.size ?? 0, 12).copy(b, 124);
  octal(h.mtime ?? 1_600_000_000, 12).copy(b, 136);
  b.write(h.type ?? "0", 156, "latin1");
  if (h.linkname !== undefined) b.write(h.linkname, 157);
  const format = h.format ?? "ustar";
  if (format === "ustar" || format === "star") b.write("ustar\u000000", 257, "latin1");
  if (format === "gnu") b.write("ustar  \0", 257, "latin1");
  if (format === "star") b.write("tar\0", 508, "latin1");
  if (format !== "v7") {
    b.write("user", 265);
    b.write("group", 297);
  }
  if (h.prefix !== undefined) b.write(h.prefix, 345);
  for (const [off, bytes] of h.raw ?? []) bytes.copy(b, off);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += h.checksum === "signed" ? (x << 24) >> 24 : x;
  if (h.checksum === "wrong") sum += 1;
  Buffer.from(sum.toString(8).padStart(6, "0") + "\0 ", "latin1").copy(b, 148);
  return b;
}

function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function pad(b: Buffer): Buffer {
  return Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
}

function ext(type: "x" | "g" | "L" | "K", data: Buffer): Buffer {
  return Buffer.concat([header({ name: "ext", type, size: data.length }), pad(data)]);
}

function file(spec: HeaderSpec, content: Buffer = Buffer.alloc(spec.size ?? 0, "c")): Buffer {
  return Buffer.concat([header({ ...spec, size: spec.size ?? content.length }), pad(content)]);
}

const EOA = Buffer.alloc(1024);

function entriesOf(buf: Buffer): TarEntry[] {
  const s = split(buf);
  assert.ok(s.bytes.equals(buf));
  assert.deepEqual(tokenSummary(split(buf, () => 1).tokens), tokenSummary(s.tokens));
  return s.entries.map((e) => e.entry);
}

describe("hand-made archives", () => {
  test("ustar prefix, star prefix, GNU long names and PAX path precedence", () => {
    const long = "n".repeat(150);
    const [a, b, c, d, e] = entriesOf(
      Buffer.concat([
        file({ name: "name", prefix: "pre/fix" }),
        file({ name: "name", prefix: "starprefix", format: "star", raw: [[476, Buffer.from("junk")]] }),
        ext("L", Buffer.from(`${long}\0`)),
        ext("K", Buffer.from(`${long}-target\0garbage`)),
        file({ name: "short", type: "2", linkname: "t" }),
        ext("L", Buffer.from("from-L\0")),
        ext("x", paxRecord("path", "from-pax")),
        file({ name: "short" }),
        file({ name: "gnuname", format: "gnu", raw: [[345, Buffer.from("\x01\x02atime")]] }),
        EOA,
      ]),
    );
    assert.equal(a.path.toString(), "pre/fix/name");
    assert.equal(b.path.toString(), "starprefix/name");
    assert.equal(c.path.toString(), long);
    assert.equal(c.linkPath.toString(), `${long}-target`);
    assert.equal(c.headerOffset, 1024);
    assert.equal(d.path.toString(), "from-pax");
    assert.equal(e.path.toString(), "gnuname");
  });

  test("base-256 numbers, negative mtime, signed checksums, old-style fields", () => {
    const b256 = (v: bigint, width: number): Buffer => {
      const out = Buffer.alloc(width);
      let x = BigInt.asUintN(width * 8, v);
      for (let i = width - 1; i >= 0; i--) {
        out[i] = Number(x & 0xffn);
        x >>= 8n;
      }
      if (v >= 0n) out[0] |= 0x80;
      return out;
    };
    const [a, b, c] = entriesOf(
      Buffer.concat([
        file({
          name: "b256",
          format: "gnu",
          raw: [
            [108, b256(3_000_000n, 8)],
            [116, b256(2n ** 40n, 8)],
            [136, b256(-315_619_200n, 12)],
          ],
        }),
        file({ name: Buffer.from([0x68, 0xe9, 0xff]), checksum: "signed", mtime: 0 }),
        file({ name: "spaces", raw: [[100, Buffer.from("   755 \0")]], format: "v7" }),
        EOA,
      ]),
    );
    assert.equal(a.uid, 3_000_000);
    assert.equal(a.gid, 2 ** 40);
    assert.equal(a.mtimeSec, -315_619_200);
    assert.deepEqual([...b.path], [0x68, 0xe9, 0xff]);
    assert.equal(b.mtimeSec, 0);
    assert.equal(c.mode, 0o755);
    assert.equal(c.uname, "");
    // A wrong sum (neither signed nor unsigned) is an error.
    const bad = Buffer.concat([file({ name: "ok" }), file({ name: "x", checksum: "wrong" }), EOA]);
    const err = splitError(bad);
    assert.equal(err.offset, 512);
  });

  test("PAX records: binary xattrs, LIBARCHIVE xattrs, mtime fractions, size, uid, globals", () => {
    const x1 = Buffer.concat([
      paxRecord("SCHILY.xattr.user.bin", Buffer.from([0xff, 0x00, 0xfe, 0x80, 0xc3, 0x0a])),
      paxRecord("SCHILY.xattr.user.empty", ""),
      paxRecord(
        "LIBARCHIVE.xattr.user.sp%20ace%3D",
        Buffer.from([1, 2, 250]).toString("base64").replace(/=+$/, ""),
      ),
      paxRecord("LIBARCHIVE.xattr.user.bin", Buffer.from("loses").toString("base64")),
      paxRecord("mtime", "-1.5"),
      paxRecord("size", "100"),
      paxRecord("uid", "4000000000"),
      paxRecord("uname", "ünï"),
    ]);
    const g = Buffer.concat([
      paxRecord("gid", "77"),
      paxRecord("gname", "global"),
      paxRecord("comment", "c"),
    ]);
    const x2 = Buffer.concat([paxRecord("gid", ""), paxRecord("mtime", "1577934245.1234567891")]);
    const g2 = paxRecord("gname", "");
    const archive = Buffer.concat([
      ext("g", g),
      ext("x", x1),
      file({ name: "a", size: 0 }, Buffer.alloc(0)),
      Buffer.alloc(512, 0x61), // PAX size 100 → 100 bytes of payload + padding
      ext("x", x2),
      file({ name: "b", gid: 5, size: 3 }),
      ext("g", g2),
      file({ name: "c", type: "7", size: 65 }),
      file({ name: "d", type: "\0", size: 64 }),
      EOA,
      Buffer.from("garbage after the end"),
    ]);
    const s = split(archive);
    assert.ok(s.bytes.equals(archive));
    const [a, b, c, d] = s.entries;
    assert.equal(a.entry.headerOffset, 0);
    assert.equal(a.entry.size, 100);
    assert.notEqual(a.external, null);
    assert.equal(a.external!.length, 100);
    assert.deepEqual([...a.entry.xattrs.get("user.bin")!], [0xff, 0x00, 0xfe, 0x80, 0xc3, 0x0a]);
    assert.deepEqual(a.entry.xattrs.get("user.empty"), Buffer.alloc(0));
    assert.deepEqual([...a.entry.xattrs.get("user.sp ace=")!], [1, 2, 250]);
    assert.equal(a.entry.mtimeSec, -2);
    assert.equal(a.entry.mtimeNsec, 500_000_000);
    assert.equal(a.entry.uid, 4_000_000_000);
    assert.equal(a.entry.uname, "ünï");
    assert.equal(a.entry.gid, 77);
    assert.equal(a.entry.gname, "global");
    assert.equal(b.entry.gid, 5, "empty local value falls back to the header");
    assert.equal(b.entry.mtimeSec, 1577934245);
    assert.equal(b.entry.mtimeNsec, 123456789);
    assert.equal(b.entry.gname, "global");
    assert.equal(b.external, null);
    assert.equal(c.entry.gname, "group", "empty global value removes it");
    assert.equal(c.entry.pax.get("comment")?.toString(), "c");
    assert.equal(c.entry.type, "7");
    assert.equal(c.external?.length, 65);
    assert.equal(d.entry.type, "\0");
    assert.equal(d.external, null, "64 bytes stay inline");
    assert.equal(
      (s.tokens.at(-1) as { data: Buffer }).data.subarray(-21).toString(),
      "garbage after the end",
    );
  });

  test("non-regular payloads and hard links with data stay inline", () => {
    const [l, dev, dir] = entriesOf(
      Buffer.concat([
        file({ name: "link", type: "1", linkname: "target", size: 1000 }),
        file({
          name: "dev",
          type: "3",
          size: 0,
          raw: [
            [329, octal(8, 8)],
            [337, octal(65537, 8)],
          ],
        }),
        file({ name: "D", type: "D", size: 700 }),
        EOA,
      ]),
    );
    assert.equal(l.size, 1000);
    assert.equal(l.linkPath.toString(), "target");
    assert.equal(dev.devMajor, 8);
    assert.equal(dev.devMinor, 65537);
    assert.equal(dir.type, "D");
    const s = split(Buffer.concat([file({ name: "link", type: "1", size: 1000 }), EOA]));
    assert.equal(s.entries[0].external, null);
  });

  test("malformed PAX records, absurd sizes and oversized extensions are errors", () => {
    const bads: [Buffer, RegExp][] = [
      [Buffer.from("10 path=abc\n"), /malformed PAX record/], // length 10, record is 12
      [Buffer.from("13 path=abc\n"), /malformed PAX record/],
      [Buffer.from("12 path=abcX"), /malformed PAX record/],
      [Buffer.from("9 =value\n"), /malformed PAX record/],
      [Buffer.from("x path=abc\n"), /malformed PAX record/],
      [Buffer.from("11 pathabc\n"), /malformed PAX record/],
      [paxRecord("mtime", "12.3.4"), /malformed PAX time/],
      [paxRecord("size", "-5"), /malformed PAX size/],
      [paxRecord("uid", "99999999999999999999"), /absurd PAX uid/],
    ];
    for (const [data, re] of bads) {
      const archive = Buffer.concat([ext("x", data), file({ name: "f" }), EOA]);
      const err = splitError(archive);
      assert.match(err.message, re);
      // Record errors name the record; value errors name the header of the entry they apply to.
      assert.ok(err.offset >= 512 && err.offset <= 1024, `offset ${err.offset}`);
    }
    const huge = Buffer.alloc(12);
    huge[0] = 0x80;
    huge.writeUInt32BE(0x10000000, 4); // 2^60
    assert.match(
      splitError(Buffer.concat([header({ raw: [[124, huge]] }), EOA])).message,
      /absurd entry size/,
    );
    const neg = Buffer.alloc(12, 0xff);
    assert.match(
      splitError(Buffer.concat([header({ raw: [[124, neg]] }), EOA])).message,
      /absurd entry size/,
    );
    const big = header({ type: "x", size: (1 << 20) + 1 });
    assert.match(splitError(Buffer.concat([big, EOA])).message, /too large/);
    assert.match(
      splitError(Buffer.concat([header({ raw: [[124, Buffer.from("12x")]] }), EOA])).message,
      /size/,
    );
  });

  test("end-of-archive edge cases", () => {
    // Only a global header, then EOF: fine. A local one, then EOF or a zero block: not.
    assert.equal(entriesOf(ext("g", paxRecord("comment", "x"))).length, 0);
    assert.match(splitError(ext("x", paxRecord("path", "p"))).message, /^truncated tar/);
    assert.match(splitError(Buffer.concat([ext("L", Buffer.from("n\0")), EOA])).message, /end-of-archive/);
    // Empty input is an empty archive.
    assert.deepEqual(split(Buffer.alloc(0)).tokens, []);
    // Push after end is a programming error.
    const s = new TarSplitter();
    s.end();
    assert.throws(() => s.push(Buffer.alloc(1)));
  });
});

describe("tar helpers", () => {
  test("decodeNumber", () => {
    assert.equal(decodeNumber(Buffer.from("0000644\0")), 0o644);
    assert.equal(decodeNumber(Buffer.from("   644 ")), 0o644);
    assert.equal(decodeNumber(Buffer.from("\0\0\0\0")), 0);
    assert.equal(decodeNumber(Buffer.from("77777777777")), 0o77777777777);
    assert.equal(decodeNumber(Buffer.from("12 \0junk")), 0o12);
    assert.equal(decodeNumber(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0x01, 0x00])), 256);
    assert.equal(decodeNumber(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])), -1);
    assert.equal(decodeNumber(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00])), -256);
    assert.throws(
      () => decodeNumber(Buffer.from("64x4"), 1234),
      (e: unknown) => {
        return e instanceof TarFormatError && e.offset === 1234;
      },
    );
    assert.throws(() => decodeNumber(Buffer.from("8")), TarFormatError);
  });

  test("parsePaxRecords keeps values as exact bytes", () => {
    const value = Buffer.from([0x00, 0xff, 0x0a, 0x3d, 0x20]);
    const recs = parsePaxRecords(
      Buffer.concat([paxRecord("k", value), paxRecord("a.b", "c=d"), Buffer.alloc(7)]),
    );
    assert.equal(recs.length, 2);
    assert.equal(recs[0].key, "k");
    assert.ok(recs[0].value.equals(value));
    assert.equal(recs[1].value.toString(), "c=d");
    assert.throws(
      () => parsePaxRecords(Buffer.from("5 k=v\n"), 100),
      (e: unknown) => {
        return e instanceof TarFormatError && e.offset === 100 && /malformed PAX record/.test(e.message);
      },
    );
  });

  test("parsePaxTime is exact", () => {
    assert.deepEqual(parsePaxTime(Buffer.from("1577934245.123456789")), { sec: 1577934245, nsec: 123456789 });
    assert.deepEqual(parsePaxTime(Buffer.from("1.5")), { sec: 1, nsec: 500_000_000 });
    assert.deepEqual(parsePaxTime(Buffer.from("-1.25")), { sec: -2, nsec: 750_000_000 });
    assert.deepEqual(parsePaxTime(Buffer.from("-7")), { sec: -7, nsec: 0 });
    assert.deepEqual(parsePaxTime(Buffer.from("0.000000001999")), { sec: 0, nsec: 1 });
    assert.deepEqual(parsePaxTime(Buffer.from("10413792000")), { sec: 10413792000, nsec: 0 });
    assert.throws(() => parsePaxTime(Buffer.from("1e9")), TarFormatError);
    assert.throws(() => parsePaxTime(Buffer.from("")), TarFormatError);
  });

  test("parseHeader, checksumMatches, isZeroBlock", () => {
    const h = header({ name: "dir/", type: "5", mode: 0o41777, uid: 12, gid: 34 });
    assert.ok(checksumMatches(h));
    assert.ok(!checksumMatches(header({ checksum: "wrong" })));
    assert.ok(checksumMatches(header({ name: Buffer.from([0xe9, 0xe9]), checksum: "signed" })));
    const p = parseHeader(h, 4096);
    assert.equal(p.type, "5");
    assert.equal(p.mode, 0o1777);
    assert.equal(p.format, "ustar");
    assert.equal(p.uname, "user");
    assert.throws(() => parseHeader(header({ checksum: "wrong" }), 4096), /checksum at offset 4096/);
    assert.ok(isZeroBlock(Buffer.alloc(512)));
    assert.ok(!isZeroBlock(h));
  });
});
