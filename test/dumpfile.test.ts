// Dumpfile parser and writer (src/format/dumpfile.ts): every conformance vector parses (strict where the
// upstream checksum test is strict) and every must-fail file is rejected naming a line; mkcomposefs's field,
// escape, path, hardlink and limit rules; the canonical `composefs-info dump` output; parse → write → parse
// round trips.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import * as zlib from "node:zlib";
import {
  DumpfileError,
  escapeField,
  parseDumpfile,
  unescapeField,
  writeDumpfile,
} from "../src/format/dumpfile.ts";
import { StratumError } from "../src/errors.ts";
import { Directory, FileSystem, Leaf, isDirectory, newStat } from "../src/tree/tree.ts";
import { CONFORMANCE_DIR } from "./helpers/conformance.ts";

interface ImageVector {
  input: string;
  version: 0 | 1 | null;
  strict: boolean;
}

const vectors = JSON.parse(fs.readFileSync(path.join(CONFORMANCE_DIR, "vectors.json"), "utf8")) as {
  images: ImageVector[];
  must_fail: string[];
};

function readVector(name: string): Buffer {
  const raw = fs.readFileSync(path.join(CONFORMANCE_DIR, name));
  return name.endsWith(".gz") ? zlib.gunzipSync(raw) : raw;
}

const uniqueInputs = [...new Map(vectors.images.map((v) => [v.input, v])).values()];

/** A comparable description of a tree: one record per path in DFS order, with hard-link identity and primary. */
function describeTree(fsys: FileSystem): unknown[] {
  const dirPath = new Map<Directory, string>();
  const firstPath = new Map<Leaf, string>();
  const out: unknown[] = [];
  for (const { path: p, inode } of fsys.walk()) {
    const xattrs = [...inode.stat.xattrs]
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([k, v]) => [k, v.toString("hex")]);
    const stat = { ...inode.stat, xattrs };
    if (isDirectory(inode)) {
      dirPath.set(inode, p);
      out.push({ p, dir: true, stat, imageSize: inode.imageSize });
      continue;
    }
    const first = firstPath.get(inode);
    if (first === undefined) firstPath.set(inode, p);
    const c = inode.content;
    const content = c.type === "reg" && c.inline ? { ...c, inline: c.inline.toString("hex") } : c;
    const primary =
      inode.primary === null ? null : (dirPath.get(inode.primary.parent) ?? "?") + "/" + inode.primary.name;
    out.push({ p, sameAs: first ?? null, stat, content, nlink: inode.nlink, primary });
  }
  return out;
}

function rejects(text: string | Buffer, strict: boolean, re: RegExp): DumpfileError {
  const input = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  let caught: unknown;
  try {
    parseDumpfile(input, { strict });
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof DumpfileError, `expected a DumpfileError for ${JSON.stringify(text)}`);
  assert.ok(caught instanceof StratumError);
  assert.equal(caught.code, "E_BAD_INPUT");
  assert.match(caught.message, /^line \d+: /);
  assert.match(caught.message, re);
  return caught;
}

const ROOT = "/ 0 40755 2 0 0 0 0.0 - - -\n";
const parse = (text: string, strict = true): FileSystem =>
  parseDumpfile(Buffer.from(text, "latin1"), { strict });

describe("conformance vectors", () => {
  for (const v of vectors.images) {
    test(`${v.input} (version ${v.version}) parses${v.strict ? " in strict mode" : ""}`, () => {
      const input = readVector(v.input);
      const tree = parseDumpfile(input, { strict: v.strict });
      assert.ok(tree.root.entries.size > 0);
      // Lenient mode accepts everything strict mode accepts.
      if (v.strict) parseDumpfile(input);
    });
  }

  test("the lenient vectors fail in strict mode, each for its documented reason", () => {
    rejects(readVector("no-newline.dump"), true, /^line 1: non-zero RDEV 10 on a non-device/);
    rejects(readVector("longlink.dump"), true, /symlink SIZE 5 differs from the target length 4070/);
    rejects(readVector("honggfuzz-longlink-unterminated.dump"), true, /^line 2: symlink SIZE 0 differs/);
  });

  for (const name of vectors.must_fail) {
    test(`${name} is rejected naming a line (lenient and strict)`, () => {
      const input = readVector(name);
      const lenient = rejects(input, false, /./);
      assert.ok(lenient.line >= 1);
      rejects(input, true, /./);
    });
  }

  test("must-fail reasons in lenient mode match mkcomposefs", () => {
    const reason = (name: string): string => rejects(readVector(name), false, /./).message;
    assert.match(
      reason("should-fail-big-inline.dump"),
      /^line 2: inline content size 5004 exceeds maximum 5000/,
    );
    assert.match(reason("should-fail-dir-hardlink.dump"), /^line 2: directories can't be hardlinked/);
    assert.match(reason("should-fail-dot-name.dump"), /^line 2: invalid \. or \.\. in path/);
    assert.match(reason("should-fail-dotdot-name.dump"), /^line 2: invalid \. or \.\. in path/);
    assert.match(reason("should-fail-empty-link-name.dump"), /^line 2: symlink target is empty/);
    assert.match(reason("should-fail-empty-name.dump"), /^line 2: empty file name/);
    assert.match(reason("should-fail-empty-xattr-key.dump"), /^line 2: empty xattr key/);
    assert.match(
      reason("should-fail-honggfuzz-long-xattr.dump"),
      /^line 1: xattrs exceed the per-inode limit/,
    );
    assert.match(reason("should-fail-long-link.dump"), /^line 2: symlink target is 7248 bytes, limit 4095/);
    assert.match(reason("should-fail-long-xattr-key.dump"), /^line 2: too many xattrs/);
    assert.match(reason("should-fail-long-xattr-value.dump"), /^line 2: invalid MODE 644/);
    assert.match(reason("should-fail-no-ftype.dump"), /^line 2: invalid MODE 0/);
    assert.match(reason("should-fail-self-hardlink.dump"), /^line 2: self-referential hardlink/);
    assert.match(reason("should-fail-too-big.dump"), /^line 2: file too large/);
  });

  for (const v of uniqueInputs) {
    test(`${v.input}: parse → write → parse gives the same tree, and the output is canonical`, () => {
      const first = parseDumpfile(readVector(v.input), { strict: v.strict });
      const text = writeDumpfile(first);
      const second = parseDumpfile(text, { strict: true });
      assert.deepEqual(describeTree(second), describeTree(first));
      assert.ok(writeDumpfile(second).equals(text), "writeDumpfile is a fixpoint");
    });
  }

  test("config-with-hard-link: the @ entry shares the target's leaf, keeps NLINK, records the primary", () => {
    const t = parseDumpfile(readVector("config-with-hard-link.dump.gz"), { strict: true });
    const ls = t.lookup("/usr/bin/ls") as Leaf;
    const link = t.lookup("/usr/bin/ls-hardlink") as Leaf;
    assert.equal(ls, link);
    assert.equal(ls.nlink, 2);
    assert.deepEqual(ls.primary, { parent: t.lookup("/usr/bin"), name: "ls" });
    // Leaves without hard links have no explicit primary.
    assert.equal((t.lookup("/usr/bin/cp") as Leaf | undefined)?.primary ?? null, null);
  });

  test("special.dump: field values land in the tree", () => {
    const t = parseDumpfile(readVector("special.dump"), { strict: true });
    assert.equal(t.root.stat.mode, 0o555);
    assert.equal(t.root.stat.mtimeSec, 1633950376);
    assert.deepEqual(t.root.stat.xattrs.get("trusted.foo1"), Buffer.from("bar-1"));
    const bdev = t.lookup("/blockdev") as Leaf;
    assert.deepEqual(bdev.content, { type: "blk", rdev: 107690 });
    const inline = t.lookup("/inline") as Leaf;
    assert.deepEqual(inline.content, { type: "reg", size: 15, inline: Buffer.from("FOOBAR\nINAFILE\n") });
    const large3 = t.lookup("/inline-large3") as Leaf;
    assert.equal(large3.content.type === "reg" && large3.content.inline?.length, 4097);
    assert.equal(large3.stat.mtimeSec, 1665486376);
    const esc = t.lookup("/escaped-xattr") as Leaf;
    assert.deepEqual(esc.stat.xattrs.get("trusted.overlay.redirect"), Buffer.from("/foo\n"));
    assert.ok((t.lookup("/whiteout") as Leaf).isWhiteout);
    assert.deepEqual((t.lookup("/fifo") as Leaf).content, { type: "fifo" });
  });

  test("honggfuzz-longlink-unterminated: mode 20720777 is a symlink (bits above 16 dropped)", () => {
    const t = parseDumpfile(readVector("honggfuzz-longlink-unterminated.dump"));
    const l = t.lookup("/chardev") as Leaf;
    assert.equal(l.content.type, "symlink");
    assert.equal(l.content.type === "symlink" && l.content.target.length, 4095);
    assert.equal(l.stat.mode, 0o777);
  });
});

describe("escaping", () => {
  test("unescape decodes \\\\ \\n \\r \\t \\xHH (either case) and rejects everything else", () => {
    assert.equal(unescapeField("a\\\\b\\n\\r\\t\\x41\\x7e\\xFf"), "a\\b\n\r\tA~\xff");
    assert.equal(unescapeField("raw=\xe9-"), "raw=\xe9-");
    for (const bad of ["\\q", "\\", "x\\x4", "\\x", "\\xg0", "\\0", "\\ "])
      assert.equal(typeof unescapeField(bad), "object", bad);
  });

  test("escape prints printable ASCII as is and everything else as \\xhh", () => {
    let all = "";
    for (let c = 0; c < 256; c++) all += String.fromCharCode(c);
    const e = escapeField(all);
    assert.match(e, /^[\x21-\x7e]*$/);
    assert.ok(e.includes("\\x20") && e.includes("\\n") && e.includes("\\t") && e.includes("\\r"));
    assert.ok(e.includes("\\\\") && e.includes("\\x00") && e.includes("\\xff") && e.includes("="));
    assert.ok(escapeField("a=b", true) === "a\\x3db");
    assert.equal(unescapeField(e), all);
    assert.equal(unescapeField(escapeField(all, true)), all);
  });

  test("all 256 byte values survive in names, symlink targets, payloads, content, xattr keys and values", () => {
    let all = "";
    for (let c = 0; c < 256; c++) all += String.fromCharCode(c);
    const nonNul = all.slice(1);
    const root = new Directory(newStat());
    const leaf = (content: Leaf["content"], xattrs = new Map<string, Buffer>()): Leaf =>
      new Leaf(newStat({ mode: 0o644, xattrs }), content);
    // Every byte but NUL and "/" as a one-byte name ("." is not a valid name), and one long name.
    for (const b of nonNul) if (b !== "/" && b !== ".") root.entries.set(b, leaf({ type: "fifo" }));
    root.entries.set(nonNul.replace("/", "").slice(0, 255), leaf({ type: "sock" }));
    // A 255-byte key with every non-NUL byte (including "=", " " and "/"); values with every byte.
    const xattrs = new Map<string, Buffer>([
      [nonNul, Buffer.from(all, "latin1")],
      ["user.eq", Buffer.from("a=b==", "latin1")],
      ["user.empty", Buffer.alloc(0)],
    ]);
    root.entries.set("xattrs", leaf({ type: "reg", size: 256, inline: Buffer.from(all, "latin1") }, xattrs));
    root.entries.set("sym", leaf({ type: "symlink", target: nonNul }));
    root.entries.set("dashlink", leaf({ type: "symlink", target: "-" }));
    root.entries.set("dashpayload", leaf({ type: "reg", size: 9, payload: "-" }));
    root.entries.set("dashcontent", leaf({ type: "reg", size: 1, inline: Buffer.from("-") }));
    root.entries.set("binpayload", leaf({ type: "reg", size: 9, payload: nonNul }));
    const tree = new FileSystem(root);
    const text = writeDumpfile(tree).toString("latin1");
    // Only printable ASCII, spaces between fields, newlines between lines; lone "-" values are \x2d.
    assert.match(text, /^[\x21-\x7e\n ]*$/);
    assert.match(text, /^\/dashlink 1 120644 1 0 0 0 0\.0 \\x2d - -$/m);
    assert.match(text, /^\/dashpayload 9 100644 1 0 0 0 0\.0 \\x2d - -$/m);
    assert.match(text, /^\/dashcontent 1 100644 1 0 0 0 0\.0 - \\x2d -$/m);
    assert.match(text, / user\.empty= /);
    assert.match(text, / user\.eq=a\\x3db\\x3d\\x3d/);
    const back = parseDumpfile(Buffer.from(text, "latin1"), { strict: true });
    assert.deepEqual(describeTree(back), describeTree(tree));
    assert.equal(back.root.entries.size, root.entries.size);
  });

  test("a raw = inside an xattr value is literal; the key ends at the first raw =", () => {
    const t = parse(ROOT + "/f 0 100644 1 0 0 0 0.0 - - - user.a=b=c user.k\\x3dx=\\x3d\n");
    const f = t.lookup("/f") as Leaf;
    assert.deepEqual(f.stat.xattrs.get("user.a"), Buffer.from("b=c"));
    assert.deepEqual(f.stat.xattrs.get("user.k=x"), Buffer.from("="));
  });
});

describe("canonical output", () => {
  test("writeDumpfile prints the composefs-info dump form", () => {
    const digest = "0123456789abcdef".repeat(4);
    const root = new Directory(
      newStat({ mtimeSec: 1700000000, xattrs: new Map([["user.note", Buffer.from("a b=c\xff", "latin1")]]) }),
    );
    const dir = new Directory(newStat({ uid: 1000, gid: 1000, mtimeSec: 1700000000 }));
    const file = new Leaf(
      newStat({
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtimeSec: 1700000000,
        xattrs: new Map([["security.selinux", Buffer.from("system_u:object_r:etc_t:s0\0", "latin1")]]),
      }),
      { type: "reg", size: 22, payload: "aa/bbbbbbbb", digest },
    );
    file.nlink = 2;
    dir.entries.set("hard", file);
    dir.entries.set("file", file);
    dir.entries.set("gone", new Leaf(newStat({ mode: 0, mtimeSec: 1700000000 }), { type: "chr", rdev: 0 }));
    root.entries.set("dir", dir);
    root.entries.set(
      "inline",
      new Leaf(newStat({ mode: 0o600, mtimeSec: 1700000001, mtimeNsec: 5 }), {
        type: "reg",
        size: 3,
        inline: Buffer.from("hi\n"),
      }),
    );
    root.entries.set(
      "sym",
      new Leaf(newStat({ mode: 0o777, mtimeSec: 1700000000 }), { type: "symlink", target: "dir/file" }),
    );
    root.entries.set(
      "a b",
      new Leaf(newStat({ mode: 0o644, mtimeSec: 0 }), { type: "reg", size: 1234, payload: "35/d02f" }),
    );
    root.entries.set(
      "dev",
      new Leaf(newStat({ mode: 0o644, mtimeSec: 1700000000 }), { type: "chr", rdev: 259 }),
    );
    root.entries.set(
      "t\tb\\",
      new Leaf(newStat({ mode: 0o644, mtimeSec: -5, mtimeNsec: 999999999 }), { type: "fifo" }),
    );
    const expected =
      "/ 0 40755 3 0 0 0 1700000000.0 - - - user.note=a\\x20b\\x3dc\\xff\n" +
      "/a\\x20b 1234 100644 1 0 0 0 0.0 35/d02f - -\n" +
      "/dev 0 20644 1 0 0 259 1700000000.0 - - -\n" +
      "/dir 0 40755 2 1000 1000 0 1700000000.0 - - -\n" +
      `/dir/file 22 100644 2 1000 1000 0 1700000000.0 aa/bbbbbbbb - ${digest} ` +
      "security.selinux=system_u:object_r:etc_t:s0\\x00\n" +
      "/dir/gone 0 20000 1 0 0 0 1700000000.0 - - -\n" +
      `/dir/hard 22 @100644 2 1000 1000 0 1700000000.0 /dir/file - ${digest} ` +
      "security.selinux=system_u:object_r:etc_t:s0\\x00\n" +
      "/inline 3 100600 1 0 0 0 1700000001.5 - hi\\n -\n" +
      "/sym 8 120777 1 0 0 0 1700000000.0 dir/file - -\n" +
      "/t\\tb\\\\ 0 10644 1 0 0 0 -5.999999999 - - -\n";
    const text = writeDumpfile(new FileSystem(root)).toString("latin1");
    assert.equal(text, expected);
    // Parsing the canonical text and writing it again is the identity; the hardlink comes back shared.
    const back = parse(expected);
    assert.equal(writeDumpfile(back).toString("latin1"), expected);
    assert.equal(back.lookup("/dir/hard"), back.lookup("/dir/file"));
    assert.equal((back.lookup("/dir/gone") as Leaf).isWhiteout, true);
  });

  test("directory SIZE is imageSize when set, else 0; NLINK is 2 + subdirectories", () => {
    const t = parse(ROOT + "/a 0 40755 9 0 0 0 0.0 - - -\n/a/b 0 40755 9 0 0 0 0.0 - - -\n");
    t.root.imageSize = 4096;
    const text = writeDumpfile(t).toString("latin1");
    assert.equal(
      text,
      "/ 4096 40755 3 0 0 0 0.0 - - -\n/a 0 40755 3 0 0 0 0.0 - - -\n/a/b 0 40755 2 0 0 0 0.0 - - -\n",
    );
  });

  test("the first path in DFS sorted order is printed in full, later ones as @ lines", () => {
    // The dump makes the deeper /z/y/file primary; the writer prints /b (DFS-first) in full.
    const t = parse(
      ROOT +
        "/b 0 @100644 1 0 0 0 0.0 /z/y/file - -\n/z 0 40755 2 0 0 0 0.0 - - -\n" +
        "/z/y 0 40755 2 0 0 0 0.0 - - -\n/z/y/file 5 100644 2 7 7 0 3.4 ab/cd - -\n",
    );
    const leaf = t.lookup("/b") as Leaf;
    assert.deepEqual(leaf.primary, { parent: t.lookup("/z/y"), name: "file" });
    assert.equal(
      writeDumpfile(t).toString("latin1"),
      ROOT.replace("2", "3") +
        "/b 5 100644 2 7 7 0 3.4 ab/cd - -\n/z 0 40755 3 0 0 0 0.0 - - -\n/z/y 0 40755 2 0 0 0 0.0 - - -\n" +
        "/z/y/file 5 @100644 2 7 7 0 3.4 /b - -\n",
    );
  });
});

describe("parser rules", () => {
  test("root line: first, once, a directory", () => {
    rejects("", false, /^line 1: no root/);
    rejects("/a 0 100644 1 0 0 0 0.0 - - -\n", true, /^line 1: root line missing/);
    rejects(ROOT + ROOT, true, /^line 2: a second root line/);
    rejects("/ 0 100644 1 0 0 0 0.0 - - -\n", true, /^line 1: the root must be a directory/);
  });

  test("paths: parents first, no duplicates, no . / .. / empty last component, names ≤ 255 bytes", () => {
    rejects(ROOT + "/a/b 0 100644 1 0 0 0 0.0 - - -\n", true, /^line 2: parent directory missing/);
    rejects(
      ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n",
      true,
      /^line 3: parent of/,
    );
    rejects(
      ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n",
      true,
      /^line 3: duplicate/,
    );
    rejects(
      ROOT + "/a 0 40755 1 0 0 0 0.0 - - -\n/a/ 0 100644 1 0 0 0 0.0 - - -\n",
      true,
      /^line 3: empty file name/,
    );
    rejects(
      ROOT + "/a 0 40755 1 0 0 0 0.0 - - -\n/a/.. 0 100644 1 0 0 0 0.0 - - -\n",
      true,
      /invalid \. or \.\./,
    );
    rejects(ROOT + "/./a 0 100644 1 0 0 0 0.0 - - -\n", true, /parent directory missing/);
    rejects(ROOT + `/${"n".repeat(256)} 0 100644 1 0 0 0 0.0 - - -\n`, true, /longer than 255/);
    const t = parse(ROOT + `/${"n".repeat(255)} 0 100644 1 0 0 0 0.0 - - -\n`);
    assert.ok(t.lookup("n".repeat(255)));
    // Leading and repeated slashes are skipped when walking, as mkcomposefs does.
    const u = parse(ROOT + "/d 0 40755 1 0 0 0 0.0 - - -\nd//x 0 100644 1 0 0 0 0.0 - - -\n");
    assert.ok(u.lookup("/d/x"));
    // An embedded \x00 ends a C-string field.
    const v = parse(ROOT + "/ab\\x00cd 0 100644 1 0 0 0 0.0 - - -\n");
    assert.ok(v.lookup("/ab"));
    rejects(ROOT + "\\x00 0 100644 1 0 0 0 0.0 - - -\n", true, /^line 2: empty PATH/);
  });

  test("lines: embedded NUL, bad escapes, the trailing-space and Missing = behaviour", () => {
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\0\n", true, /^line 2: embedded NUL/);
    rejects(ROOT + "/a\\q 0 100644 1 0 0 0 0.0 - - -\n", true, /^line 2: PATH: unsupported escape/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.x=\\xZZ\n", true, /^line 2: xattr value: invalid hex/);
    const t = parse(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - \n/b 0 100644 1 0 0 0 0.0 - - - user.a=1 \n");
    assert.equal((t.lookup("/a") as Leaf).stat.xattrs.size, 0);
    assert.equal((t.lookup("/b") as Leaf).stat.xattrs.size, 1);
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - -  \n", true, /^line 2: missing = in xattr/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.a\n", true, /^line 2: missing = in xattr/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n\n", false, /^line 3: empty PATH/);
  });

  test("numbers: octal MODE, decimal fields read like strtoull, sec.nsec MTIME", () => {
    const t = parse(
      ROOT + "/a 0 0100640 7 -1 +5 0 -3.000000001 - - -\n/b 0 100644 1 4294967296 0 0 12.5 - - -\n",
    );
    const a = t.lookup("/a") as Leaf;
    assert.equal(a.stat.mode, 0o640);
    assert.equal(a.nlink, 7);
    assert.equal(a.stat.uid, 0xffffffff);
    assert.equal(a.stat.gid, 5);
    assert.equal(a.stat.mtimeSec, -3);
    assert.equal(a.stat.mtimeNsec, 1);
    const b = t.lookup("/b") as Leaf;
    assert.equal(b.stat.uid, 0); // truncated to 32 bits
    assert.equal(b.stat.mtimeNsec, 5); // 12.5 is 12 s + 5 ns
    rejects(ROOT + "/a 0 100648 1 0 0 0 0.0 - - -\n", true, /invalid MODE/);
    rejects(ROOT + "/a 0 170644 1 0 0 0 0.0 - - -\n", true, /not a known file type/);
    rejects(ROOT + "/a x 100644 1 0 0 0 0.0 - - -\n", true, /invalid SIZE/);
    rejects(ROOT + "/a 0 100644 1 0 0x1 0 0.0 - - -\n", true, /invalid GID/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 5 - - -\n", true, /invalid MTIME nanoseconds/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 .5 - - -\n", true, /invalid MTIME seconds/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 1.1000000000 - - -\n", true, /below 10\^9/);
    rejects(ROOT + "/a 0 100644 1 0 0 0\n", true, /invalid MTIME/);
  });

  test("content, payload and digest", () => {
    const digest = "AB".repeat(32);
    const t = parse(
      ROOT +
        `/ext 100 100644 1 0 0 0 0.0 ab/cd - ${digest}\n` +
        "/inl 2 100644 1 0 0 0 0.0 - \\x2d\\x2d -\n" +
        "/empty 0 100644 1 0 0 0 0.0 - - -\n" +
        "/dash 7 100644 1 0 0 0 0.0 \\x2d - -\n",
    );
    assert.deepEqual((t.lookup("/ext") as Leaf).content, {
      type: "reg",
      size: 100,
      payload: "ab/cd",
      digest: digest.toLowerCase(),
    });
    assert.deepEqual((t.lookup("/inl") as Leaf).content, { type: "reg", size: 2, inline: Buffer.from("--") });
    assert.deepEqual((t.lookup("/empty") as Leaf).content, { type: "reg", size: 0 });
    assert.deepEqual((t.lookup("/dash") as Leaf).content, { type: "reg", size: 7, payload: "-" });
    rejects(ROOT + "/a 3 100644 1 0 0 0 0.0 - ab -\n", true, /CONTENT is 2 bytes but SIZE is 3/);
    rejects(ROOT + `/a 5001 100644 1 0 0 0 0.0 - ${"x".repeat(5001)} -\n`, true, /5001 exceeds maximum 5000/);
    parse(ROOT + `/a 5000 100644 1 0 0 0 0.0 - ${"x".repeat(5000)} -\n`);
    rejects(ROOT + "/a 3 100644 1 0 0 0 0.0 - - abc\n", true, /invalid DIGEST/);
    rejects(ROOT + `/a 3 100644 1 0 0 0 0.0 ${"p".repeat(4096)} - -\n`, true, /PAYLOAD is 4096 bytes/);
    parse(ROOT + `/a 9007199254740992 100644 1 0 0 0 0.0 - - -\n`);
    rejects(ROOT + `/a 9007199254740993 100644 1 0 0 0 0.0 - - -\n`, true, /file too large/);
  });

  test("symlinks: non-empty, < 4096 bytes; strict mode checks SIZE and CONTENT", () => {
    const t = parse(ROOT + `/s 4095 120777 1 0 0 0 0.0 ${"t".repeat(4095)} - -\n`);
    assert.equal((t.lookup("/s") as Leaf).content.type, "symlink");
    rejects(ROOT + `/s 4096 120777 1 0 0 0 0.0 ${"t".repeat(4096)} - -\n`, false, /4096 bytes, limit 4095/);
    rejects(ROOT + "/s 0 120777 1 0 0 0 0.0 - - -\n", false, /symlink target is empty/);
    rejects(ROOT + "/s 3 120777 1 0 0 0 0.0 ab - -\n", true, /symlink SIZE 3 differs/);
    parse(ROOT + "/s 3 120777 1 0 0 0 0.0 ab - -\n", false);
    rejects(ROOT + "/s 2 120777 1 0 0 0 0.0 ab xy -\n", true, /symlink cannot have CONTENT/);
    rejects(ROOT + "/f 0 100644 1 0 0 5 0.0 - - -\n", true, /non-zero RDEV 5 on a non-device/);
    const lenient = parse("/ 0 40755 2 0 0 5 0.0 - - -\n/f 0 100644 1 0 0 5 0.0 - - -\n", false);
    assert.deepEqual((lenient.lookup("/f") as Leaf).content, { type: "reg", size: 0 });
  });

  test("xattrs: key 1..255 bytes, replacement, the per-inode budget and the line limit", () => {
    parse(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - ${"k".repeat(255)}=v\n`);
    rejects(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - ${"k".repeat(256)}=v\n`, true, /xattr key is 256 bytes/);
    rejects(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - \\x00x=v\n", true, /empty xattr key/);
    const t = parse(ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.a=1 user.b=2 user.a=3\n");
    assert.deepEqual([...(t.lookup("/a") as Leaf).stat.xattrs.keys()].sort(), ["user.a", "user.b"]);
    assert.deepEqual((t.lookup("/a") as Leaf).stat.xattrs.get("user.a"), Buffer.from("3"));
    // 12 + 7 + len("user.a") + len(value) ≤ 32767.
    parse(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - user.a=${"v".repeat(32742)}\n`);
    rejects(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - user.a=${"v".repeat(32743)}\n`, true, /per-inode limit/);
    // Replacing a value refunds the old one.
    parse(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - user.a=${"v".repeat(30000)} user.a=${"v".repeat(32742)}\n`);
    // At most 65535 bytes of text after DIGEST (escapes count as written).
    const value = "\\x41".repeat(16382);
    parse(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - user.a=${value}\n`);
    rejects(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - user.a=${value} \n`, true, /too many xattrs: 65536 bytes/);
  });

  test("hardlinks: forward references, chains, and the rejected cases", () => {
    const t = parse(
      ROOT +
        "/a 0 @100644 1 0 0 0 0.0 /c - -\n" + // forward reference, through another @ entry
        "/b 999 100644 3 1 2 0 9.9 - - - user.x=1\n" +
        "/c 0 @100644 1 0 0 0 0.0 //b - - user.ignored=1\n" + // repeated slashes are fine
        "/d 0 40755 2 0 0 0 0.0 - - -\n" +
        "/d/e 0 @120777 1 0 0 0 0.0 /b/ - -\n", // trailing slash too; the @ line's mode is ignored
    );
    const b = t.lookup("/b") as Leaf;
    assert.equal(t.lookup("/a"), b);
    assert.equal(t.lookup("/c"), b);
    assert.equal(t.lookup("/d/e"), b);
    assert.equal(b.nlink, 3);
    assert.deepEqual([...b.stat.xattrs.keys()], ["user.x"]);
    assert.deepEqual(b.primary, { parent: t.root, name: "b" });
    rejects(ROOT + "/a 0 @100644 1 0 0 0 0.0 /a - -\n", true, /^line 2: self-referential hardlink/);
    rejects(
      ROOT + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n",
      true,
      /hardlink cycle/,
    );
    rejects(
      ROOT + "/a 0 @100644 1 0 0 0 0.0 /nope - -\n",
      true,
      /^line 2: hardlink target "\/nope" does not exist/,
    );
    rejects(ROOT + "/a 0 @100644 1 0 0 0 0.0 - - -\n", true, /^line 2: hardlink without a target/);
    rejects(ROOT + "/d 0 40755 2 0 0 0 0.0 - - -\n/a 0 @100644 1 0 0 0 0.0 /d - -\n", true, /is a directory/);
    rejects(ROOT + "/a 0 @100644 1 0 0 0 0.0 / - -\n", true, /^line 2: hardlink target "\/" is a directory/);
    rejects(ROOT + "/a 0 @40755 1 0 0 0 0.0 / - -\n", true, /directories can't be hardlinked/);
    rejects(
      ROOT + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/a/x 0 100644 1 0 0 0 0.0 - - -\n",
      true,
      /^line 3: parent of/,
    );
  });

  test("a deep tree and a long hardlink chain parse without recursion limits", () => {
    let text = ROOT;
    let p = "";
    for (let i = 0; i < 5000; i++) {
      p += "/d";
      text += `${p} 0 40755 2 0 0 0 0.0 - - -\n`;
    }
    text += "/f0 0 100644 1 0 0 0 0.0 - - -\n";
    for (let i = 1; i < 5000; i++) text += `/f${i} 0 @100644 1 0 0 0 0.0 /f${i - 1} - -\n`;
    const t = parse(text);
    assert.equal(t.lookup("/f4999"), t.lookup("/f0"));
    const back = parseDumpfile(writeDumpfile(t), { strict: true });
    assert.deepEqual(describeTree(back), describeTree(t));
  });
});
