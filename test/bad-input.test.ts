// Bad input is refused with a clear, typed error and leaves nothing behind: damaged or foreign meta.json,
// tar files that are not tar / are truncated / are corrupt gzip, refs that escape the repository or loop, and
// --require-verity on a filesystem without fs-verity.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { StratumError } from "../src/errors.ts";
import { ContentType } from "../src/format/splitstream.ts";
import { fsck } from "../src/repo/fsck.ts";
import { Repository } from "../src/repo/repository.ts";
import { stratum, type CliResult } from "./helpers/cli.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";
import { snapshotTree } from "./helpers/snapshot.ts";

const tmp = makeTempDir("stratum-badinput-");
after(() => removeDir(tmp));
let dirCounter = 0;

function newRoot(): string {
  return path.join(tmp, `r${dirCounter++}`);
}

/** The CLI failed with `status` and printed exactly one line, "stratum: error: …", on stderr and nothing on stdout. */
function assertCliError(r: CliResult, status: number, ...mustMention: (string | RegExp)[]): string {
  assert.equal(r.status, status, `exit status (stderr: ${r.stderr})`);
  assert.match(r.stderr, /^stratum: error: [^\n]+\n$/, "one-line error message");
  for (const m of mustMention)
    if (typeof m === "string") assert.ok(r.stderr.includes(m), `"${r.stderr.trim()}" should mention ${m}`);
    else assert.match(r.stderr, m);
  assert.equal(r.stdout.length, 0, "nothing on stdout");
  return r.stderr;
}

/** GNU tar options for byte-identical archives across runs. */
const DETERMINISTIC_TAR = [
  "--sort=name",
  "--mtime=@0",
  "--owner=0",
  "--group=0",
  "--numeric-owner",
  "--format=gnu",
];

const EXIT = { E_REPO_FORMAT: 5, E_BAD_INPUT: 7, E_UNSAFE_PATH: 8, E_VERITY: 9, E_DAMAGED: 1 } as const;

// ---- meta.json -----------------------------------------------------------------------------------------------

const VALID_META = {
  version: 1,
  algorithm: "fsverity-sha256-12",
  features: { compatible: [], "read-only-compatible": ["v1_erofs"], incompatible: [] },
  erofs_formats: { default: 1 },
};

interface MetaCase {
  name: string;
  /** New meta.json text, or null to delete it. */
  text: string | null;
  /** What the message must say besides the path. */
  problem: RegExp;
}

const META_CASES: MetaCase[] = [
  {
    name: "unsupported algorithm fsverity-sha1-12",
    text: JSON.stringify({ ...VALID_META, algorithm: "fsverity-sha1-12" }, null, 2) + "\n",
    problem: /unsupported algorithm "fsverity-sha1-12"/,
  },
  {
    name: "version 2",
    text: JSON.stringify({ ...VALID_META, version: 2 }, null, 2) + "\n",
    problem: /version 2 is newer/,
  },
  {
    name: "an unknown incompatible feature",
    text:
      JSON.stringify(
        { ...VALID_META, features: { ...VALID_META.features, incompatible: ["from_the_future"] } },
        null,
        2,
      ) + "\n",
    problem: /unsupported incompatible features: from_the_future/,
  },
  { name: "invalid JSON", text: '{ "version": 1, "algorithm": ', problem: /not valid JSON/ },
  { name: "no meta.json", text: null, problem: /is not a repository \(no meta\.json\)/ },
];

describe("meta.json that stratum cannot use", () => {
  let validTar = "";
  before(() => {
    const src = path.join(tmp, "meta-tar-src");
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, "file.txt"), "x".repeat(500));
    validTar = path.join(tmp, "meta-valid.tar");
    execFileSync("tar", ["-cf", validTar, "-C", src, "."]);
  });

  for (const c of META_CASES)
    test(c.name, async () => {
      const root = newRoot();
      Repository.init(root);
      const metaPath = path.join(root, "meta.json");
      if (c.text === null) fs.rmSync(metaPath);
      else fs.writeFileSync(metaPath, c.text);
      const named = c.text === null ? root : metaPath;
      const before = snapshotTree(root);

      await assert.rejects(Repository.open(root), (err: unknown) => {
        assert.ok(err instanceof StratumError, String(err));
        assert.equal(err.code, "E_REPO_FORMAT");
        assert.ok(err.message.includes(named), `"${err.message}" should name ${named}`);
        assert.match(err.message, c.problem);
        return true;
      });
      // Commands that delete and that write refuse the same way and touch nothing.
      for (const args of [["gc"], ["import-tar", validTar, "imported"]])
        assertCliError(stratum(["--repo", root, ...args]), EXIT.E_REPO_FORMAT, named, c.problem);
      assert.deepEqual(snapshotTree(root), before, "something was written");
    });
});

// ---- import-tar of bad files ---------------------------------------------------------------------------------

describe("stratum import-tar of a bad file", () => {
  let root = "";
  let goodTar = "";
  const inputs = path.join(tmp, "tar-inputs");

  before(() => {
    const src = path.join(tmp, "tar-src");
    fs.mkdirSync(path.join(src, "dir"), { recursive: true });
    fs.writeFileSync(
      path.join(src, "dir/big.bin"),
      Buffer.from(Array.from({ length: 20000 }, (_, i) => (i * 31) % 251)),
    );
    fs.writeFileSync(path.join(src, "dir/lines.txt"), "a line of text that compresses well\n".repeat(2000));
    fs.writeFileSync(path.join(src, "small.txt"), "tiny\n");
    fs.mkdirSync(inputs);
    goodTar = path.join(inputs, "good.tar");
    execFileSync("tar", [...DETERMINISTIC_TAR, "-cf", goodTar, "-C", src, "dir", "small.txt"]);

    root = newRoot();
    Repository.init(root);
    // A good import first: the bad ones below must add nothing next to it.
    const ok = stratum(["--repo", root, "import-tar", goodTar, "good"]);
    assert.equal(ok.status, 0, ok.stderr);
  });

  /** The import failed naming the file; afterwards: the same streams and refs, no temporary files, fsck clean. */
  async function expectRefused(file: string, problem: RegExp): Promise<void> {
    const repo = await Repository.open(root);
    const streamsBefore = repo.listStreams();
    const refsBefore = repo.listStreamRefs();
    repo.close();
    assert.deepEqual(
      refsBefore.map((r) => r.name),
      ["good"],
    );

    const r = stratum(["--repo", root, "import-tar", file, "bad/ref"]);
    assertCliError(r, EXIT.E_BAD_INPUT, file, problem);

    const after = await Repository.open(root);
    try {
      assert.deepEqual(after.listStreams(), streamsBefore, "a new stream appeared");
      assert.deepEqual(after.listStreamRefs(), refsBefore, "a new ref appeared");
      assert.equal(fs.existsSync(path.join(root, "streams/refs/bad")), false);
      const leftovers = [
        ...fs.readdirSync(path.join(root, "objects")).filter((n) => n.startsWith(".")),
        ...fs.readdirSync(root).filter((n) => n.startsWith(".")),
      ];
      assert.deepEqual(leftovers, [], "temporary files left behind");
      const report = fsck(after);
      assert.deepEqual(report.problems, []);
      assert.deepEqual(report.notes, []);
    } finally {
      after.close();
    }
  }

  test("a file that is not a tar", async () => {
    const file = path.join(inputs, "notes.txt");
    fs.writeFileSync(file, "These are some notes, certainly not a tar archive.\n".repeat(100));
    await expectRefused(file, /not a valid tar archive/);
  });

  test("a truncated tar (cut inside a file's data)", async () => {
    const file = path.join(inputs, "truncated.tar");
    const good = fs.readFileSync(goodTar);
    fs.writeFileSync(file, good.subarray(0, 9000)); // inside dir/big.bin's 20000 bytes
    await expectRefused(file, /not a valid tar archive: truncated tar/);
  });

  test("a corrupt gzip", async () => {
    const file = path.join(inputs, "corrupt.tar.gz");
    const gz = execFileSync("gzip", ["-c", "-n", goodTar]);
    const bad = Buffer.from(gz);
    for (let i = 0; i < 32; i++) bad[Math.floor(bad.length / 2) + i] ^= 0x5a;
    fs.writeFileSync(file, bad);
    await expectRefused(file, /cannot read gzip data/);
  });

  test("a truncated gzip", async () => {
    const file = path.join(inputs, "truncated.tar.gz");
    const gz = execFileSync("gzip", ["-c", "-n", goodTar]);
    fs.writeFileSync(file, gz.subarray(0, Math.floor(gz.length * 0.6)));
    await expectRefused(file, /cannot read gzip data: unexpected end of file/);
  });
});

// ---- refs that escape or loop ----------------------------------------------------------------------------------

describe("refs that escape the repository or loop", () => {
  let root = "";
  before(async () => {
    root = newRoot();
    Repository.init(root);
    const repo = await Repository.open(root);
    try {
      const w = repo.createStream(ContentType.none);
      w.writeInline(Buffer.from("good content\n"));
      repo.publishStream("good", w.finish().id);
      repo.setStreamRef("good", "good");
    } finally {
      repo.close();
    }
    fs.symlinkSync("../../../etc", path.join(root, "streams/refs/evil"));
    fs.symlinkSync("/etc/passwd", path.join(root, "streams/refs/absolute"));
    fs.symlinkSync("loop-b", path.join(root, "streams/refs/loop-a"));
    fs.symlinkSync("loop-a", path.join(root, "streams/refs/loop-b"));
  });

  test("the good ref works (control)", () => {
    const r = stratum(["--repo", root, "cat", "good"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), "good content\n");
  });

  for (const [ref, problem] of [
    ["evil", /points outside the repository/],
    ["refs/evil", /points outside the repository/],
    ["absolute", /absolute symlink/],
    ["loop-a", /symlink loop/],
  ] as const)
    test(`cat ${ref}`, () => {
      const before = snapshotTree(root);
      const name = ref.replace(/^refs\//, "");
      assertCliError(stratum(["--repo", root, "cat", ref]), EXIT.E_UNSAFE_PATH, `ref ${name}`, problem);
      assert.deepEqual(snapshotTree(root), before);
    });

  test("no ref is created through a ref directory that is a symlink out of the repository", async () => {
    const outside = path.join(tmp, "outside");
    fs.mkdirSync(outside);
    const refsDir = path.join(root, "streams/refs");
    fs.symlinkSync(path.relative(refsDir, outside), path.join(refsDir, "escape"));
    const repo = await Repository.open(root);
    try {
      for (const ref of ["escape/x", "escape/new/dir/y"])
        assert.throws(
          () => repo.setStreamRef(ref, "good"),
          (err: unknown) => {
            assert.ok(err instanceof StratumError);
            assert.equal(err.code, "E_UNSAFE_PATH");
            assert.match(err.message, /streams\/refs\/escape is a symlink/);
            return true;
          },
        );
    } finally {
      repo.close();
    }
    const src = path.join(tmp, "escape-src");
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, "f"), "data\n");
    const tar = path.join(tmp, "escape.tar");
    execFileSync("tar", [...DETERMINISTIC_TAR, "-cf", tar, "-C", src, "f"]);
    assertCliError(
      stratum(["--repo", root, "import-tar", tar, "escape/z"]),
      EXIT.E_UNSAFE_PATH,
      "streams/refs/escape",
    );
    assert.deepEqual(fs.readdirSync(outside), [], "something was created outside the repository");
    fs.rmSync(path.join(refsDir, "escape"));
  });
});

// ---- --require-verity ------------------------------------------------------------------------------------------

describe("--require-verity without fs-verity", () => {
  let verityAvailable = false;
  before(() => {
    const probe = newRoot();
    verityAvailable = Repository.init(probe).verity === "enforced";
  });

  test("init fails with E_VERITY and leaves no meta.json", (t) => {
    if (verityAvailable) return t.skip("this filesystem has fs-verity");
    const root = newRoot();
    assert.throws(
      () => Repository.init(root, { requireVerity: true }),
      (err: unknown) => {
        assert.ok(err instanceof StratumError);
        assert.equal(err.code, "E_VERITY");
        assert.ok(err.message.includes(root));
        return true;
      },
    );
    assert.equal(fs.existsSync(path.join(root, "meta.json")), false);
    assert.deepEqual(
      fs.readdirSync(root).filter((n) => n.startsWith(".")),
      [],
      "temporary meta file left behind",
    );

    const cliRoot = newRoot();
    assertCliError(
      stratum(["--repo", cliRoot, "--require-verity", "init"]),
      EXIT.E_VERITY,
      cliRoot,
      /verity/,
    );
    assert.equal(fs.existsSync(path.join(cliRoot, "meta.json")), false);
    assertCliError(stratum(["--require-verity", "init", cliRoot]), EXIT.E_VERITY, cliRoot);
    assert.equal(fs.existsSync(path.join(cliRoot, "meta.json")), false);
  });

  test("open of an insecure repository fails with E_VERITY and changes nothing", async (t) => {
    if (verityAvailable) return t.skip("this filesystem has fs-verity");
    const root = newRoot();
    Repository.init(root);
    const before = snapshotTree(root);
    await assert.rejects(Repository.open(root, { requireVerity: true }), (err: unknown) => {
      assert.ok(err instanceof StratumError);
      assert.equal(err.code, "E_VERITY");
      assert.ok(err.message.includes(root));
      return true;
    });
    for (const args of [["fsck"], ["gc"], ["cat", "x"]])
      assertCliError(stratum(["--repo", root, "--require-verity", ...args]), EXIT.E_VERITY, root);
    assert.deepEqual(snapshotTree(root), before);
    // Without the flag it opens (it is a valid, insecure repository).
    const repo = await Repository.open(root);
    assert.equal(repo.verity, "insecure");
    repo.close();
  });
});
