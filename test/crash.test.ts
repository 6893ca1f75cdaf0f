// Crash safety: `stratum import-tar` killed with SIGKILL at arbitrary moments leaves a repository that fsck calls
// clean (no damage; at most notes about temporary files), and running the same import again completes it.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, test } from "node:test";
import { STRATUM_BIN, stratum } from "./helpers/cli.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-crash-");
after(() => removeDir(tmp));

/** A tar with many files of assorted sizes (so a kill lands mid-object, mid-stream or mid-link). */
function makeTar(): string {
  const src = path.join(tmp, "src");
  for (let d = 0; d < 20; d++) {
    fs.mkdirSync(path.join(src, `d${d}`), { recursive: true });
    for (let f = 0; f < 60; f++) {
      const size = (d * 60 + f) % 7 === 0 ? 300_000 : ((d * 7919 + f * 104729) % 20000) + 1;
      fs.writeFileSync(path.join(src, `d${d}`, `f${f}`), Buffer.alloc(size, (d * 60 + f) & 0xff));
    }
  }
  const tar = path.join(tmp, "layer.tar");
  const r = spawnSync("tar", ["-cf", tar, "-C", src, "."]);
  assert.equal(r.status, 0);
  return tar;
}

describe("crash safety", () => {
  test("SIGKILL during import-tar: fsck clean, re-run completes and rebuilds the tar exactly", async () => {
    const tar = makeTar();
    const original = fs.readFileSync(tar);
    const repo = path.join(tmp, "repo");
    assert.equal(stratum(["--repo", repo, "init"]).status, 0);
    // Kill at increasing delays; the spread covers startup, object writes, the stream write and the ref.
    let killedMidway = 0;
    for (const delay of [60, 120, 180, 240, 300, 360, 420, 500, 600, 800]) {
      const child = spawn(process.execPath, [STRATUM_BIN, "--repo", repo, "import-tar", tar, "layer"], {
        stdio: "ignore",
      });
      await sleep(delay);
      const wasRunning = child.exitCode === null;
      if (wasRunning) {
        killedMidway++;
        child.kill("SIGKILL");
      }
      await new Promise((resolve) => child.once("close", resolve));
      const check = stratum(["--repo", repo, "fsck", "--json"]);
      const report = JSON.parse(check.stdout.toString()) as { ok: boolean; problems: unknown[] };
      assert.equal(check.status, 0, `after kill at ${delay} ms: ${JSON.stringify(report.problems)}`);
      assert.equal(report.ok, true);
    }
    assert.ok(killedMidway >= 3, `only ${killedMidway} runs were killed while running`);
    const done = stratum(["--repo", repo, "import-tar", tar, "layer"]);
    assert.equal(done.status, 0, done.stderr);
    assert.ok(stratum(["--repo", repo, "cat", "layer"]).stdout.equals(original));
    const gc = stratum(["--repo", repo, "gc"]);
    assert.equal(gc.status, 0, gc.stderr);
    assert.ok(stratum(["--repo", repo, "cat", "layer"]).stdout.equals(original));
    assert.equal(stratum(["--repo", repo, "fsck"]).status, 0);
  });
});
