// The `stratum` executable: --help on every command, --version, usage errors, one-line error messages with
// stable exit statuses, the default repository location, and the bundled example end to end.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { PROJECT_ROOT, stratum } from "./helpers/cli.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-cli-");
after(() => removeDir(tmp));
const COMMANDS = ["init", "import-tar", "cat", "gc", "fsck"];

describe("stratum CLI", () => {
  test("--version prints the package version", () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")) as {
      version: string;
    };
    const r = stratum(["--version"]);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.toString().trim(), pkg.version);
  });

  test("--help lists every command, and every command has --help", () => {
    const top = stratum(["--help"]);
    assert.equal(top.status, 0);
    for (const c of COMMANDS) {
      assert.match(top.stdout.toString(), new RegExp(`^\\s+${c}\\b`, "m"));
      const r = stratum([c, "--help"]);
      assert.equal(r.status, 0, c);
      assert.match(r.stdout.toString(), new RegExp(`^Usage: stratum ${c}`, "m"));
    }
  });

  test("usage errors exit 2; library errors are one line with a stable status", () => {
    const unknown = stratum(["frobnicate"]);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command/);
    assert.equal(stratum(["import-tar"]).status, 2);

    const missing = path.join(tmp, "nope");
    const r = stratum(["--repo", missing, "fsck"]);
    assert.equal(r.status, 5);
    assert.equal(
      r.stderr,
      `stratum: error: ${missing} is not a repository (no meta.json); create one with "stratum init"\n`,
    );
    assert.equal(fs.existsSync(missing), false); // nothing created

    const repo = path.join(tmp, "r1");
    assert.equal(stratum(["--repo", repo, "init"]).status, 0);
    const again = stratum(["--repo", repo, "init"]);
    assert.equal(again.status, 4);
    assert.match(again.stderr, /^stratum: error: .* is already a repository\n$/);
    const nofile = stratum(["--repo", repo, "import-tar", path.join(tmp, "missing.tar"), "x"]);
    assert.equal(nofile.status, 3);
    assert.match(nofile.stderr, /missing\.tar/);
    const noref = stratum(["--repo", repo, "cat", "no-such-ref"]);
    assert.equal(noref.status, 3);
    assert.match(noref.stderr, /no-such-ref/);
    const badAlg = stratum(["--repo", path.join(tmp, "r2"), "init", "--algorithm", "md5"]);
    assert.equal(badAlg.status, 5);
    assert.match(badAlg.stderr, /unsupported algorithm "md5"/);
  });

  test("STRATUM_REPO selects the repository; init says once that verity is not enforced", () => {
    const repo = path.join(tmp, "env-repo");
    const init = stratum(["init"], { env: { STRATUM_REPO: repo } });
    assert.equal(init.status, 0);
    assert.ok(fs.existsSync(path.join(repo, "meta.json")));
    assert.equal(init.stderr.match(/insecure mode/g)?.length, 1);
    const f = stratum(["fsck", "--json"], { env: { STRATUM_REPO: repo } });
    assert.equal(f.status, 0);
    assert.equal((JSON.parse(f.stdout.toString()) as { ok: boolean }).ok, true);
  });

  test("the README's main job (npm run example) succeeds", () => {
    const r = spawnSync("bash", ["scripts/example.sh"], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, STRATUM_EXAMPLE_REPO: path.join(tmp, "example-repo") },
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /no problems/);
  });
});
