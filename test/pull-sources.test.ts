// `stratum pull` end to end from every source other than an OCI layout (docs/pull.md), through the real CLI:
// docker-archive and oci-archive files written by skopeo, podman and docker; dockerd:// and podman:// against
// real daemons with their own roots; a registry behind bearer-token auth (anonymous, --creds, DOCKER_CONFIG,
// a wrong password, tokens that expire mid-pull); a registry behind the fault proxy (429, 500s, a dropped
// connection, a corrupted and a truncated blob); multi-platform Docker manifest lists and OCI indexes in a
// registry; zstd:chunked layers whose trailing zeros are restored; and the progress output on stderr.
//
// Every pull checks what can be checked from outside: each layer stream reassembles (`stratum cat`) to a tar
// whose sha256 is the config's diff_id, the same image from different sources shares one set of layer
// streams, failures exit with the documented status and one clear line, tag nothing and leave fsck clean.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { STRATUM_BIN, stratum, type CliResult } from "./helpers/cli.ts";
import {
  dockerdUnavailable,
  hasCommand,
  podmanUnavailable,
  startDockerd,
  startPodman,
  type Daemon,
} from "./helpers/daemons.ts";
import { startFaultProxy, type FaultProxy, type FaultRule } from "./helpers/fault-proxy.ts";
import {
  blobPath,
  buildImages,
  daemonSave,
  imagesUnavailable,
  loadIntoDaemon,
  MT,
  pushDockerManifestList,
  pushImage,
  readImage,
  readIndex,
  setTag,
  skopeoArchive,
  writeBlob,
  type ImageInfo,
  type OciConfig,
  type TestImages,
} from "./helpers/images.ts";
import {
  registryFetch,
  registryUnavailable,
  startRegistry,
  writeAuthFile,
  type Registry,
} from "./helpers/registry.ts";
import { extractedObjects, sha256, storedLayerObjects, type PullReport } from "./helpers/pull-checks.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const reason = imagesUnavailable();
const tmp = makeTempDir("stratum-pull-sources-");
let images: TestImages | undefined;
/** A plain registry holding test/multi:latest, shared by the describes that need no auth. */
let registry: Registry | undefined;
/** GNU tar's view of `multi`: the fs-verity digests of the regular files > 64 bytes its layers extract to. */
let multiObjects: string[] = [];

// Credentials and daemon sockets come only from what a test passes: nothing from the machine's own HOME.
const home = path.join(tmp, "home");
const CLEAN_ENV: NodeJS.ProcessEnv = {
  HOME: home,
  XDG_CONFIG_HOME: path.join(home, ".config"),
  XDG_RUNTIME_DIR: path.join(home, "run"),
  DOCKER_CONFIG: path.join(home, ".docker"),
  REGISTRY_AUTH_FILE: undefined,
  ENROOT_CONFIG_PATH: undefined,
  DOCKER_HOST: undefined,
  CONTAINER_HOST: undefined,
};

before(async () => {
  fs.mkdirSync(home);
  if (reason !== null) return;
  images = await buildImages();
  multiObjects = extractedObjects(
    images.multiLayerTars.map((f) => fs.readFileSync(f)),
    tmp,
  );
  if (registryUnavailable() === null) {
    registry = await startRegistry();
    await pushImage(images.layout, "multi", registry, "test/multi:latest");
  }
});

after(async () => {
  await registry?.stop();
  images?.remove();
  removeDir(tmp);
});

// --- helpers -----------------------------------------------------------------------------------------------

function skipUnlessReady(t: TestContext): boolean {
  if (reason !== null) {
    t.skip(reason);
    return true;
  }
  return false;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  return stratum(args, { env: { ...CLEAN_ENV, ...env } });
}

/** The CLI without blocking the event loop, so several can run at once. */
function cliAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STRATUM_BIN, ...args], {
      env: { ...process.env, ...CLEAN_ENV },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.once("error", reject);
    child.once("close", (status) =>
      resolve({ status: status ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }),
    );
  });
}

let repoCount = 0;
function newRepo(): string {
  const repo = path.join(tmp, `repo-${++repoCount}`);
  const r = cli(["init", "--algorithm", "sha256", repo]);
  assert.equal(r.status, 0, r.stderr);
  return repo;
}

function pull(repo: string, args: string[], env: NodeJS.ProcessEnv = {}): PullReport {
  const r = cli(["--repo", repo, "pull", "--json", ...args], env);
  assert.equal(r.status, 0, `pull ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as PullReport;
}

/** A pull that must fail: its status, and an error that is one line. */
function pullFails(repo: string, args: string[], status: number, env: NodeJS.ProcessEnv = {}): string {
  const r = cli(["--repo", repo, "pull", "-q", ...args], env);
  assert.equal(r.status, status, `pull ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], /^stratum: error: /);
  assert.equal(r.stdout.length, 0, "nothing on stdout");
  return r.stderr;
}

/** `stratum cat` each distinct layer stream; each tar must hash to its diff_id. Returns the tars. */
async function checkReassembly(repo: string, diffIds: string[], what: string): Promise<Map<string, Buffer>> {
  const unique = [...new Set(diffIds)];
  const cats = await Promise.all(unique.map((d) => cliAsync(["--repo", repo, "cat", `oci-layer-${d}`])));
  const tars = new Map<string, Buffer>();
  cats.forEach((c, i) => {
    const diffId = unique[i];
    assert.equal(c.status, 0, `${what}: cat ${diffId}: ${c.stderr}`);
    assert.equal(sha256(c.stdout), diffId, `${what}: layer ${diffId} reassembled`);
    tars.set(diffId, c.stdout);
  });
  return tars;
}

/** The names of the layer streams in the repository. */
function layerStreams(repo: string): string[] {
  return fs
    .readdirSync(path.join(repo, "streams"))
    .filter((n) => n.startsWith("oci-layer-"))
    .sort();
}

function fsckClean(repo: string): void {
  const r = cli(["--repo", repo, "fsck"]);
  assert.equal(r.status, 0, `fsck: ${r.stdout.toString()}${r.stderr}`);
}

function tagNames(repo: string): string[] {
  const r = cli(["--repo", repo, "images", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout.toString()) as { name: string }[]).map((x) => x.name);
}

/** `multi` pulled from anywhere: its diff_ids, every layer reassembled, the files GNU tar sees stored. */
async function checkMulti(repo: string, rep: PullReport, what: string): Promise<void> {
  const multi = readImage((images as TestImages).layout, "multi");
  assert.deepEqual(
    rep.layers.map((l) => l.diffId),
    multi.diffIds,
    `${what}: diff_ids`,
  );
  await checkReassembly(repo, multi.diffIds, what);
  assert.deepEqual(
    await storedLayerObjects(repo, multi.diffIds),
    multiObjects,
    `${what}: stored file objects`,
  );
  fsckClean(repo);
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * What a terminal shows after `out`: text overwrites from the cursor, \r and \n move it, ESC[nA moves it up and
 * ESC[2K blanks its row. Trailing blanks and empty last rows are dropped. Any other escape fails the test.
 */
function terminalScreen(out: string): string[] {
  const rows: string[] = [""];
  let row = 0;
  let col = 0;
  // eslint-disable-next-line no-control-regex -- terminal escapes are what this parses
  for (const m of out.matchAll(/\x1b\[(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]+/g)) {
    const tok = m[0];
    if (tok === "\r") col = 0;
    else if (tok === "\n") {
      row++;
      col = 0;
      rows[row] ??= "";
    } else if (m[2] === "A") row = Math.max(0, row - Number(m[1] || "1"));
    else if (m[2] === "K" && m[1] === "2") rows[row] = "";
    else if (m[2] !== undefined) assert.fail(`unexpected escape ${JSON.stringify(tok)}`);
    else {
      const line = (rows[row] ?? "").padEnd(col);
      rows[row] = line.slice(0, col) + tok + line.slice(col + tok.length);
      col += tok.length;
    }
  }
  const screen = rows.map((r) => r.trimEnd());
  while (screen.length > 0 && screen[screen.length - 1] === "") screen.pop();
  return screen;
}

// --- 1, 2: archives and daemons ----------------------------------------------------------------------------

describe("archives and daemons", () => {
  const dir = path.join(tmp, "archives");
  const file = (name: string): string => path.join(dir, name);
  const podmanWhy = reason ?? podmanUnavailable();
  const dockerWhy = reason ?? dockerdUnavailable();
  let podman: Daemon | undefined;
  let dockerd: Daemon | undefined;

  before(async () => {
    if (reason !== null) return;
    const im = images as TestImages;
    fs.mkdirSync(dir);
    await Promise.all([
      skopeoArchive(im.layout, "multi", "docker-archive", file("skopeo-multi.tar"), {
        ref: "test/multi:latest",
      }),
      skopeoArchive(im.layout, "multi", "oci-archive", file("skopeo-multi-oci.tar"), { ref: "latest" }),
      skopeoArchive(im.layout, "dup", "docker-archive", file("skopeo-dup.tar"), { ref: "test/dup:latest" }),
    ]);
    const started = await Promise.allSettled([
      podmanWhy === null ? startPodman() : Promise.resolve(undefined),
      dockerWhy === null ? startDockerd() : Promise.resolve(undefined),
    ]);
    if (started[0].status === "fulfilled") podman = started[0].value;
    if (started[1].status === "fulfilled") dockerd = started[1].value;
    for (const s of started) if (s.status === "rejected") throw s.reason;
    // Both daemons get multi and dup (from skopeo's docker-archives), then save them back.
    await Promise.all(
      [podman, dockerd].map(async (d) => {
        if (d === undefined) return;
        await loadIntoDaemon(d, file("skopeo-multi.tar"));
        await loadIntoDaemon(d, file("skopeo-dup.tar"));
      }),
    );
    if (podman) {
      await daemonSave(podman, ["test/multi:latest"], file("podman-multi.tar"), "docker-archive");
      await daemonSave(podman, ["test/multi:latest"], file("podman-multi-oci.tar"), "oci-archive");
      await daemonSave(podman, ["test/multi:latest", "test/dup:latest"], file("podman-two.tar"));
    }
    if (dockerd) {
      await daemonSave(dockerd, ["test/multi:latest"], file("docker-multi.tar"));
      await daemonSave(dockerd, ["test/multi:latest", "test/dup:latest"], file("docker-two.tar"));
    }
  });

  after(async () => {
    await Promise.all([podman?.stop(), dockerd?.stop()]);
  });

  interface Source {
    label: string;
    why: string | null;
    source: () => string;
    env?: () => NodeJS.ProcessEnv;
    /** The config is the layout's, byte for byte (podman's oci-archive rewrites it). */
    sameConfig: boolean;
    /** A docker-archive underneath: the manifest is synthesized, the same for every producer. */
    synthesized: boolean;
  }
  const archives: Source[] = [
    {
      label: "skopeo copy to docker-archive (no REF)",
      why: reason,
      source: () => `docker-archive:${file("skopeo-multi.tar")}`,
      sameConfig: true,
      synthesized: true,
    },
    {
      label: "skopeo copy to oci-archive",
      why: reason,
      source: () => `oci-archive:${file("skopeo-multi-oci.tar")}:latest`,
      sameConfig: true,
      synthesized: false,
    },
    {
      label: "podman save --format docker-archive",
      why: podmanWhy,
      source: () => `docker-archive:${file("podman-multi.tar")}:test/multi:latest`,
      sameConfig: true,
      synthesized: true,
    },
    {
      label: "podman save --format oci-archive",
      why: podmanWhy,
      source: () => `oci-archive:${file("podman-multi-oci.tar")}:docker.io/test/multi:latest`,
      sameConfig: false,
      synthesized: false,
    },
    {
      label: "docker save",
      why: dockerWhy,
      source: () => `docker-archive:${file("docker-multi.tar")}:test/multi:latest`,
      sameConfig: true,
      synthesized: true,
    },
  ];
  const daemons: Source[] = [
    {
      label: "dockerd://",
      why: dockerWhy,
      source: () => "dockerd://test/multi:latest",
      env: () => ({ DOCKER_HOST: (dockerd as Daemon).host }),
      sameConfig: true,
      synthesized: true,
    },
    {
      label: "podman://",
      why: podmanWhy,
      source: () => "podman://test/multi:latest",
      env: () => ({ CONTAINER_HOST: (podman as Daemon).host }),
      sameConfig: true,
      synthesized: true,
    },
  ];

  for (const s of archives) {
    test(`${s.label}: layers reassemble to the config's diff_ids, stored files = GNU tar's`, async (t) => {
      if (s.why !== null) return t.skip(s.why);
      const multi = readImage((images as TestImages).layout, "multi");
      const repo = newRepo();
      const rep = pull(repo, [s.source(), "m"]);
      assert.ok(
        rep.layers.every((l) => !l.present),
        "a fresh repository has none of the layers",
      );
      if (s.sameConfig) assert.equal(rep.configDigest, multi.configDigest);
      if (!s.synthesized && s.sameConfig) assert.equal(rep.manifestDigest, multi.manifestDigest);
      await checkMulti(repo, rep, s.label);
      assert.deepEqual(tagNames(repo), ["m"]);
    });
  }

  test("without NAME, an archive's image is tagged with its name in the archive", (t) => {
    if (reason !== null) return t.skip(reason);
    const repo = newRepo();
    // skopeo normalises the RepoTags entry it writes.
    assert.equal(
      pull(repo, [`docker-archive:${file("skopeo-multi.tar")}`]).tag,
      "docker.io/test/multi:latest",
    );
    // A bare tag as ref.name is not a name: the REF given is used.
    assert.equal(pull(repo, [`oci-archive:${file("skopeo-multi-oci.tar")}:latest`]).tag, "latest");
  });

  test("podman save -m (two images): REF selects; no REF or an unknown one fails, listing the images", async (t) => {
    if (podmanWhy !== null) return t.skip(podmanWhy);
    const im = images as TestImages;
    const f = file("podman-two.tar");
    const repo = newRepo();
    const ambiguous = pullFails(repo, [`docker-archive:${f}`], 2);
    assert.match(ambiguous, /2 images/);
    assert.match(ambiguous, /@0 docker\.io\/test\/multi:latest/);
    assert.match(ambiguous, /@1 docker\.io\/test\/dup:latest/);
    assert.match(pullFails(repo, [`docker-archive:${f}:test/nope:latest`], 3), /test\/nope/);
    assert.deepEqual(tagNames(repo), []);

    const dup = readImage(im.layout, "dup");
    const d = pull(repo, [`docker-archive:${f}:test/dup:latest`]);
    assert.equal(d.tag, "docker.io/test/dup:latest", "REF, normalised, is the default tag");
    assert.equal(d.configDigest, dup.configDigest);
    assert.deepEqual(
      d.layers.map((l) => l.diffId),
      dup.diffIds,
    );
    assert.deepEqual(
      d.layers.map((l) => l.present),
      [false, false, true, false],
      "dup's repeated layer is stored once",
    );
    await checkReassembly(repo, dup.diffIds, "podman -m, dup");
    const m = pull(repo, [`docker-archive:${f}:@0`, "first"]);
    assert.equal(m.configDigest, readImage(im.layout, "multi").configDigest);
    assert.deepEqual(
      m.layers.map((l) => l.present),
      [true, false, false],
      "multi's base layer came with dup",
    );
    await checkReassembly(repo, readImage(im.layout, "multi").diffIds, "podman -m, @0");
    assert.deepEqual(tagNames(repo), ["docker.io/test/dup:latest", "first"]);
    fsckClean(repo);
  });

  test("docker save of two images: REF selects by Docker's familiar or full name", async (t) => {
    if (dockerWhy !== null) return t.skip(dockerWhy);
    const im = images as TestImages;
    const f = file("docker-two.tar");
    const repo = newRepo();
    const ambiguous = pullFails(repo, [`docker-archive:${f}`], 2);
    assert.match(ambiguous, /test\/multi:latest/);
    assert.match(ambiguous, /test\/dup:latest/);
    const dup = readImage(im.layout, "dup");
    const d = pull(repo, [`docker-archive:${f}:test/dup`, "dup"]);
    assert.equal(d.configDigest, dup.configDigest);
    assert.deepEqual(
      d.layers.map((l) => l.diffId),
      dup.diffIds,
    );
    await checkReassembly(repo, dup.diffIds, "docker save, dup");
    const m = pull(repo, [`docker-archive:${f}:docker.io/test/multi:latest`, "multi"]);
    assert.equal(m.configDigest, readImage(im.layout, "multi").configDigest);
    await checkReassembly(repo, readImage(im.layout, "multi").diffIds, "docker save, multi");
    fsckClean(repo);
  });

  for (const s of daemons) {
    const kind = s.label.slice(0, -3) as "dockerd" | "podman";
    test(`${s.label}: socket from ${kind === "dockerd" ? "DOCKER_HOST" : "CONTAINER_HOST"}, name as tag, diff_ids, no spool left`, async (t) => {
      if (s.why !== null) return t.skip(s.why);
      const d = (kind === "dockerd" ? dockerd : podman) as Daemon;
      const spool = path.join(tmp, `spool-${kind}`);
      const envTmp = path.join(tmp, `tmpdir-${kind}`);
      fs.mkdirSync(spool);
      fs.mkdirSync(envTmp);
      // The other daemon's variable points nowhere: only the right one may be used.
      const env: NodeJS.ProcessEnv = {
        DOCKER_HOST: "unix:///nonexistent/docker.sock",
        CONTAINER_HOST: "unix:///nonexistent/podman.sock",
        ...(s.env as () => NodeJS.ProcessEnv)(),
        TMPDIR: envTmp,
      };
      const repo = newRepo();
      const rep = pull(repo, ["--tmpdir", spool, s.source()], env);
      assert.equal(rep.tag, "test/multi:latest", "the image name is the tag");
      assert.deepEqual(tagNames(repo), ["test/multi:latest"]);
      assert.ok(rep.source.includes(d.host), `the description names the socket: ${rep.source}`);
      assert.equal(rep.configDigest, readImage((images as TestImages).layout, "multi").configDigest);
      await checkMulti(repo, rep, s.label);
      assert.deepEqual(fs.readdirSync(spool), [], "the spool directory is removed");
      assert.deepEqual(fs.readdirSync(envTmp), [], "nothing spooled to $TMPDIR");

      const missing = pullFails(repo, ["--tmpdir", spool, `${kind}://test/nope:latest`], 3, env);
      assert.match(missing, /test\/nope:latest/);
      assert.match(missing, /no such image/);
      assert.deepEqual(fs.readdirSync(spool), [], "no spool left after a failure");

      // --tmpdir is where the archive goes: a directory that does not exist fails, and says so.
      const nowhere = path.join(tmp, `no-such-dir-${kind}`);
      const noSpool = pullFails(repo, ["--tmpdir", nowhere, s.source()], 12, env);
      assert.ok(noSpool.includes(nowhere), noSpool);
      assert.deepEqual(tagNames(repo), ["test/multi:latest"]);
      fsckClean(repo);
    });
  }

  test("one repository, every source: the first pull stores the layers, every later one finds them all", (t) => {
    if (skipUnlessReady(t)) return;
    const multi = readImage((images as TestImages).layout, "multi");
    const sources = [...archives, ...daemons].filter((s) => s.why === null);
    const skipped = [...archives, ...daemons].filter((s) => s.why !== null);
    if (skipped.length > 0)
      t.diagnostic(`not available: ${skipped.map((s) => `${s.label} (${s.why ?? ""})`).join(", ")}`);
    const repo = newRepo();
    const reports = sources.map((s, i) => ({
      s,
      rep: pull(repo, [s.source(), `via-${i}`], s.env?.() ?? {}),
    }));
    for (const [i, { s, rep }] of reports.entries()) {
      assert.deepEqual(
        rep.layers.map((l) => l.diffId),
        multi.diffIds,
        s.label,
      );
      assert.deepEqual(
        rep.layers.map((l) => l.present),
        multi.diffIds.map(() => i > 0),
        `${s.label}: ${i === 0 ? "every layer new" : "every layer present"}`,
      );
      if (i > 0) assert.equal(rep.downloaded, 0, `${s.label}: nothing read`);
    }
    assert.deepEqual(
      layerStreams(repo),
      [...multi.diffIds].sort().map((d) => `oci-layer-${d}`),
      "one set of layer streams",
    );
    // Every docker-archive producer (and daemon) yields the same synthesized manifest.
    const synthesized = new Set(reports.filter((r) => r.s.synthesized).map((r) => r.rep.manifestDigest));
    assert.equal(synthesized.size, 1, [...synthesized].join(" "));
    assert.ok(!synthesized.has(multi.manifestDigest));
    fsckClean(repo);
  });
});

// --- 3: a registry with token auth -------------------------------------------------------------------------

describe("a registry with bearer-token auth", () => {
  const why = reason ?? registryUnavailable("token");
  let reg: Registry | undefined;
  const src = (): string => `docker://${(reg as Registry).host}/test/multi:latest`;
  /** Token requests made while `fn` ran. */
  const tokensDuring = <T>(fn: () => T): { result: T; tokens: ReturnType<Registry["tokenLog"]> } => {
    const r = reg as Registry;
    const n = r.tokenLog().length;
    const result = fn();
    return { result, tokens: r.tokenLog().slice(n) };
  };

  before(async () => {
    if (why !== null) return;
    reg = await startRegistry({ auth: "token" });
    await pushImage((images as TestImages).layout, "multi", reg, "test/multi:latest", {
      creds: "alice:secret",
    });
  });
  after(async () => {
    await reg?.stop();
  });

  test("anonymous: pull is allowed, and the tokens are anonymous", async (t) => {
    if (why !== null) return t.skip(why);
    const repo = newRepo();
    const { result: rep, tokens } = tokensDuring(() => pull(repo, [src()]));
    assert.ok(tokens.length > 0, "a token was requested");
    for (const e of tokens) {
      assert.equal(e.user, null);
      assert.equal(e.status, 200);
      assert.deepEqual(
        e.access.map((a) => [a.name, a.actions]),
        [["test/multi", ["pull"]]],
      );
    }
    await checkMulti(repo, rep, "anonymous");
  });

  test("--creds alice:secret: the token is alice's", async (t) => {
    if (why !== null) return t.skip(why);
    const repo = newRepo();
    const { result: rep, tokens } = tokensDuring(() => pull(repo, ["--creds", "alice:secret", src()]));
    assert.ok(tokens.length > 0);
    for (const e of tokens) assert.deepEqual([e.user, e.account, e.status], ["alice", "alice", 200]);
    await checkMulti(repo, rep, "--creds");
  });

  test("DOCKER_CONFIG/config.json auths: the token is alice's", async (t) => {
    if (why !== null) return t.skip(why);
    const r = reg as Registry;
    const dockerConfig = path.join(tmp, "docker-config");
    writeAuthFile(r, path.join(dockerConfig, "config.json"), "alice");
    const repo = newRepo();
    const { result: rep, tokens } = tokensDuring(() => pull(repo, [src()], { DOCKER_CONFIG: dockerConfig }));
    assert.ok(tokens.length > 0);
    for (const e of tokens) assert.deepEqual([e.user, e.status], ["alice", 200]);
    await checkReassembly(
      repo,
      rep.layers.map((l) => l.diffId),
      "DOCKER_CONFIG",
    );
  });

  test("a wrong password: exit 2, one line naming the registry and the user, never the password", (t) => {
    if (why !== null) return t.skip(why);
    const r = reg as Registry;
    const repo = newRepo();
    const password = "Wr0ng-pa55word-7f3a";
    const { result: msg, tokens } = tokensDuring(() =>
      pullFails(repo, ["--creds", `alice:${password}`, src()], 2),
    );
    assert.ok(msg.includes(r.host), msg);
    assert.match(msg, /alice/);
    assert.match(msg, /--creds/, "says where the credential came from");
    assert.ok(!msg.includes(password), msg);
    assert.ok(tokens.some((e) => e.user === "alice" && e.status === 401));

    // The same from a config file: the file is named, neither the password nor its base64 is shown.
    const dockerConfig = path.join(tmp, "docker-config-wrong");
    fs.mkdirSync(dockerConfig);
    const auth = Buffer.from(`alice:${password}`).toString("base64");
    const configFile = path.join(dockerConfig, "config.json");
    fs.writeFileSync(configFile, JSON.stringify({ auths: { [r.host]: { auth } } }), { mode: 0o600 });
    const fromFile = pullFails(repo, [src()], 2, { DOCKER_CONFIG: dockerConfig });
    assert.ok(fromFile.includes(r.host), fromFile);
    assert.ok(fromFile.includes(configFile), fromFile);
    assert.ok(!fromFile.includes(password) && !fromFile.includes(auth), fromFile);
    assert.deepEqual(tagNames(repo), []);
    fsckClean(repo);
  });

  test("a token that expires mid-pull, while a broken download resumes: renewed, resumed, pull succeeds", async (t) => {
    if (why !== null) return t.skip(why);
    const r = reg as Registry;
    const multi = readImage((images as TestImages).layout, "multi");
    const d = [...multi.layers].sort((a, b) => b.size - a.size)[0];
    const blob = `/v2/test/multi/blobs/${d.digest}`;
    // Tokens the registry refuses 1 to 2 s after issue, while expires_in promises 300 s. The largest layer's
    // download is cut after 2000 bytes, and its Range request is held back 3 s: it certainly arrives with an
    // expired token, mid-pull, and must be sent again with a fresh one, still resuming where it stopped.
    const proxy = await startFaultProxy(r.host, [
      { path: blob, method: "GET", range: false, action: { kind: "drop", afterBytes: 2000 } },
      { path: blob, method: "GET", range: true, action: { kind: "delay", ms: 3000 } },
    ]);
    r.setTokenLifetime(-58, 300);
    try {
      const repo = newRepo();
      const { result: rep, tokens } = tokensDuring(() =>
        pull(repo, ["--creds", "alice:secret", `docker://${proxy.host}/test/multi:latest`]),
      );
      t.diagnostic(`${tokens.length} token requests during the pull`);
      assert.ok(tokens.length >= 2, `the token was renewed: ${JSON.stringify(tokens)}`);
      for (const e of tokens) assert.deepEqual([e.user, e.status], ["alice", 200]);
      const log = proxy.requests().filter((e) => e.path === blob);
      const refused = log.find((e) => e.fault === "delay");
      assert.ok(refused, JSON.stringify(log));
      assert.equal(refused.status, 401, "the registry refused the expired token");
      assert.ok(refused.range !== null);
      const resumed = log.filter((e) => e.range === refused.range && e.status === 206);
      assert.equal(resumed.length, 1, `sent again with a fresh token, same Range: ${JSON.stringify(log)}`);
      const from = Number(/^bytes=(\d+)-$/.exec(refused.range)?.[1]);
      assert.ok(from > 0 && from <= 2000, refused.range);
      assert.equal(resumed[0].bytes, d.size - from, "only the rest was sent");
      await checkMulti(repo, rep, "expired tokens");
    } finally {
      r.setTokenLifetime(300);
      await proxy.stop();
    }
  });
});

// --- 4: faults ---------------------------------------------------------------------------------------------

describe("registry faults through the fault proxy", () => {
  const why = reason ?? registryUnavailable();
  let proxy: FaultProxy | undefined;
  let multi: ImageInfo;
  /** The largest layer of multi (6 KiB), the one the faults hit. */
  let big: { digest: string; diffId: string; size: number; path: string };

  before(async () => {
    if (why !== null || !registry) return;
    multi = readImage((images as TestImages).layout, "multi");
    const d = [...multi.layers].sort((a, b) => b.size - a.size)[0];
    const diffId = multi.diffIds[multi.layers.indexOf(d)];
    big = { digest: d.digest, diffId, size: d.size, path: `/v2/test/multi/blobs/${d.digest}` };
    proxy = await startFaultProxy(registry.host);
  });
  after(async () => {
    await proxy?.stop();
  });

  /** Runs `fn` with `rules` in force and a fresh request log; then no rules. */
  function withRules<T>(t: TestContext, rules: FaultRule[], fn: (p: FaultProxy, src: string) => T): T | void {
    if (why !== null) return t.skip(why);
    if (!proxy) return t.skip(registryUnavailable() ?? "no registry");
    const p = proxy;
    p.setRules(rules);
    p.clearLog();
    try {
      return fn(p, `docker://${p.host}/test/multi:latest`);
    } finally {
      p.setRules([]);
    }
  }

  test("429 with Retry-After: 1, then OK: waited, then succeeded", async (t) => {
    const rep = withRules(
      t,
      [{ path: "/manifests/", method: "GET", action: { kind: "status", status: 429, retryAfter: 1 } }],
      (p, src) => {
        const repo = newRepo();
        const rep = pull(repo, [src]);
        const manifests = p.requests().filter((e) => e.path.includes("/manifests/"));
        assert.deepEqual(
          manifests.map((e) => e.status),
          [429, 200],
        );
        const waited = Date.parse(manifests[1].time) - Date.parse(manifests[0].time);
        assert.ok(waited >= 900, `Retry-After honoured: ${waited} ms`);
        return { repo, rep };
      },
    );
    if (rep) await checkMulti(rep.repo, rep.rep, "after 429");
  });

  test("500 twice on a layer, then OK: retried, and the layer is right", async (t) => {
    const rep = withRules(
      t,
      [{ path: big.path, method: "GET", times: 2, action: { kind: "status", status: 500 } }],
      (p, src) => {
        const repo = newRepo();
        const rep = pull(repo, [src]);
        assert.deepEqual(
          p
            .requests()
            .filter((e) => e.path === big.path)
            .map((e) => e.status),
          [500, 500, 200],
        );
        return { repo, rep };
      },
    );
    if (rep) await checkMulti(rep.repo, rep.rep, "after 500s");
  });

  test("connection dropped mid-blob: resumed with a Range request, and the layer is right", async (t) => {
    const rep = withRules(
      t,
      [{ path: big.path, method: "GET", range: false, action: { kind: "drop", afterBytes: 2000 } }],
      (p, src) => {
        const repo = newRepo();
        const rep = pull(repo, [src]);
        const log = p.requests().filter((e) => e.path === big.path);
        const dropped = log.find((e) => e.fault === "drop");
        assert.ok(dropped, JSON.stringify(log));
        const resumed = log.filter((e) => e.range !== null);
        assert.equal(resumed.length, 1, JSON.stringify(log));
        const m = /^bytes=(\d+)-$/.exec(resumed[0].range ?? "");
        assert.ok(m, `Range ${resumed[0].range}`);
        const from = Number(m[1]);
        t.diagnostic(`resumed with Range: ${resumed[0].range}`);
        assert.ok(from > 0 && from <= 2000, `resumed at byte ${from}`);
        assert.equal(resumed[0].status, 206);
        assert.equal(resumed[0].bytes, big.size - from, "only the rest was sent again");
        return { repo, rep };
      },
    );
    if (rep) await checkMulti(rep.repo, rep.rep, "after a drop");
  });

  test("a corrupted layer: exit 6, digest mismatch, nothing tagged, fsck clean; a clean retry completes", async (t) => {
    const repo = withRules(t, [{ path: big.path, method: "GET", action: { kind: "corrupt" } }], (p, src) => {
      const repo = newRepo();
      const msg = pullFails(repo, [src, "c"], 6);
      assert.match(msg, /digest mismatch/);
      assert.ok(msg.includes(big.digest), msg);
      assert.ok(p.requests().some((e) => e.fault === "corrupt"));
      assert.deepEqual(tagNames(repo), []);
      assert.ok(!layerStreams(repo).includes(`oci-layer-${big.diffId}`), "the bad layer is not stored");
      fsckClean(repo);
      return repo;
    });
    if (!repo || !proxy) return;
    const rep = pull(repo, [`docker://${proxy.host}/test/multi:latest`, "c"]);
    assert.deepEqual(tagNames(repo), ["c"]);
    await checkMulti(repo, rep, "retry after corruption");
  });

  test("a truncated layer (short Content-Length): exit 6 at once, no resume, nothing tagged, fsck clean", (t) => {
    withRules(t, [{ path: big.path, method: "GET", action: { kind: "truncate", bytes: 1000 } }], (p, src) => {
      const repo = newRepo();
      const msg = pullFails(repo, [src, "tr"], 6);
      // A complete HTTP answer that is shorter than the descriptor is a different blob, not a broken download:
      // the registry client refuses it before reading it, so nothing is resumed.
      assert.ok(msg.includes(`sends 1000 bytes, expected ${big.size}`), msg);
      t.diagnostic(msg.trim());
      assert.ok(msg.includes(big.digest), msg);
      const log = p.requests().filter((e) => e.path === big.path);
      assert.deepEqual(
        log.map((e) => [e.fault, e.range]),
        [["truncate", null]],
        "one request, no Range",
      );
      assert.deepEqual(tagNames(repo), []);
      fsckClean(repo);
    });
  });

  test("a layer the registry does not have (404): exit 3, nothing tagged", (t) => {
    withRules(t, [{ path: big.path, method: "GET", action: { kind: "status", status: 404 } }], (_p, src) => {
      const repo = newRepo();
      const msg = pullFails(repo, [src, "nf"], 3);
      assert.ok(msg.includes(big.digest), msg);
      assert.deepEqual(tagNames(repo), []);
      fsckClean(repo);
    });
  });
});

// --- 5: multi-platform images in a registry ----------------------------------------------------------------

describe("multi-platform images in a registry", () => {
  const why = reason ?? registryUnavailable();
  let listDigest = "";

  before(async () => {
    if (why !== null || !registry) return;
    const im = images as TestImages;
    listDigest = await pushDockerManifestList(im.layout, registry, "test/list:latest");
    await pushImage(im.layout, "multiarch", registry, "test/multiarch:latest", { all: true });
  });

  const platforms = [
    ["linux/arm64", "multiarch-arm64", "linux/arm64\n"],
    ["linux/arm/v7", "multiarch-armv7", "linux/arm/v7\n"],
  ] as const;

  /** The /platform file of the image's last layer, as `stratum cat` rebuilds it. */
  async function platformFile(repo: string, rep: PullReport): Promise<string> {
    const last = rep.layers[rep.layers.length - 1].diffId;
    const tars = await checkReassembly(
      repo,
      rep.layers.map((l) => l.diffId),
      rep.platform,
    );
    const x = spawnSync("tar", ["-xOf", "-", "platform"], { input: tars.get(last) });
    assert.equal(x.status, 0, x.stderr.toString());
    return x.stdout.toString();
  }

  test("Docker manifest list: --platform picks the arm64 and arm/v7 schema 2 manifests", async (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const im = images as TestImages;
    const repo = newRepo();
    for (const [platform, tag, content] of platforms) {
      const rep = pull(repo, ["--platform", platform, `docker://${registry.host}/test/list:latest`, tag]);
      const img = readImage(im.layout, tag);
      assert.equal(rep.configDigest, img.configDigest, platform);
      assert.equal(rep.indexDigest, listDigest, platform);
      assert.equal(rep.platform, platform);
      // The manifest is the schema 2 one pushed for that platform.
      const res = await registryFetch(registry, `/v2/test/list/manifests/${tag}`, {
        headers: { accept: MT.dockerManifest },
      });
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(rep.manifestDigest, sha256(body), platform);
      assert.ok(rep.layers.every((l) => l.mediaType === MT.dockerLayerGzip));
      assert.deepEqual(
        rep.layers.map((l) => l.diffId),
        img.diffIds,
      );
      assert.equal(await platformFile(repo, rep), content);
    }
    fsckClean(repo);
  });

  test("OCI index (skopeo --all): --platform picks the layout's arm64 and arm/v7 manifests", async (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const im = images as TestImages;
    const repo = newRepo();
    for (const [platform, tag, content] of platforms) {
      const rep = pull(repo, [
        "--platform",
        platform,
        `docker://${registry.host}/test/multiarch:latest`,
        tag,
      ]);
      assert.equal(rep.manifestDigest, readImage(im.layout, tag).manifestDigest, platform);
      assert.notEqual(rep.manifestDigest, im.attestationDigest);
      assert.equal(rep.indexDigest, readIndex(im.layout, "multiarch").digest);
      assert.equal(rep.platform, platform);
      assert.equal(await platformFile(repo, rep), content);
    }
    // A bare ARCH means Linux, and arm without a variant means arm/v7.
    const bare = pull(repo, ["--platform", "arm", `docker://${registry.host}/test/multiarch:latest`, "bare"]);
    assert.equal(bare.manifestDigest, readImage(im.layout, "multiarch-armv7").manifestDigest);
    const none = pullFails(
      repo,
      ["--platform", "linux/s390x", `docker://${registry.host}/test/multiarch:latest`],
      3,
    );
    assert.match(none, /s390x/);
    assert.match(none, /arm64/);
    fsckClean(repo);
  });
});

// --- 6: zstd:chunked ---------------------------------------------------------------------------------------

describe("zstd:chunked layers", () => {
  const chunked = path.join(tmp, "chunked");
  let why: string | null = reason;

  before(() => {
    if (why !== null) return;
    const im = images as TestImages;
    const r = spawnSync("skopeo", [
      "copy",
      "--quiet",
      "--dest-compress",
      "--dest-compress-format",
      "zstd:chunked",
      `oci:${im.layout}:multi`,
      `oci:${chunked}:chunked`,
    ]);
    if (r.status !== 0) {
      why = `skopeo cannot write zstd:chunked here: ${r.stderr.toString().trim()}`;
      return;
    }
    const layers = readImage(chunked, "chunked").layers;
    if (!layers.every((l) => Object.keys(l.annotations ?? {}).some((k) => k.includes("zstd-chunked"))))
      why = "skopeo wrote zstd layers without the zstd:chunked annotations";
  });

  /** The bytes zstd:chunked dropped from each layer tar: the original tar's length minus the decompressed one. */
  function droppedZeros(layout: string): number[] {
    const im = images as TestImages;
    return readImage(layout, "chunked").layers.map((l, i) => {
      const tar = spawnSync("zstd", ["-dc", blobPath(layout, l.digest)], { maxBuffer: 1 << 30 });
      assert.equal(tar.status, 0, tar.stderr.toString());
      return fs.statSync(im.multiLayerTars[i]).size - tar.stdout.length;
    });
  }

  async function checkChunked(t: TestContext, repo: string, rep: PullReport, what: string): Promise<void> {
    const dropped = droppedZeros(chunked);
    t.diagnostic(`trailing zeros dropped by skopeo and restored, per layer: ${JSON.stringify(dropped)}`);
    assert.ok(
      rep.layers.every((l) => l.mediaType === MT.layerZstd),
      what,
    );
    assert.deepEqual(
      rep.layers.map((l) => l.restoredZeros),
      dropped,
      `${what}: restoredZeros = the zeros the decompressed tar lacks`,
    );
    const im = images as TestImages;
    assert.deepEqual(
      rep.layers.map((l) => l.tarSize),
      im.multiLayerTars.map((f) => fs.statSync(f).size),
      `${what}: the stored tars are the original ones`,
    );
    await checkMulti(repo, rep, what);
  }

  test("from the layout: trailing zeros restored, layers hash to the config's diff_ids", async (t) => {
    if (why !== null) return t.skip(why);
    const repo = newRepo();
    const rep = pull(repo, [`oci:${chunked}:chunked`]);
    await checkChunked(t, repo, rep, "oci layout");
  });

  test("from a registry: the same", async (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    await pushImage(chunked, "chunked", registry, "test/chunked:latest");
    const repo = newRepo();
    const rep = pull(repo, [`docker://${registry.host}/test/chunked:latest`]);
    assert.equal(rep.manifestDigest, readImage(chunked, "chunked").manifestDigest, "pushed unchanged");
    await checkChunked(t, repo, rep, "registry");
  });

  test("a config whose diff_id is wrong: diff_id mismatch (padding does not paper over it), nothing tagged", (t) => {
    if (why !== null) return t.skip(why);
    const bad = path.join(tmp, "chunked-bad");
    fs.cpSync(chunked, bad, { recursive: true });
    const img = readImage(bad, "chunked");
    // The first layer whose zeros were dropped: the one where restoring them could hide a wrong diff_id.
    const i = Math.max(
      0,
      droppedZeros(bad).findIndex((n) => n > 0),
    );
    const config: OciConfig = structuredClone(img.config);
    const wrong = sha256(`not layer ${i}`);
    config.rootfs.diff_ids[i] = wrong;
    const configDesc = writeBlob(bad, MT.config, JSON.stringify(config));
    const manifest = writeBlob(bad, MT.manifest, JSON.stringify({ ...img.manifest, config: configDesc }));
    setTag(bad, "chunked", manifest);
    const repo = newRepo();
    const msg = pullFails(repo, [`oci:${bad}:chunked`, "bad"], 7);
    assert.match(msg, /diff_id mismatch/);
    assert.ok(msg.includes(wrong), msg);
    assert.ok(msg.includes(img.layers[i].digest), msg);
    assert.deepEqual(tagNames(repo), []);
    assert.ok(!layerStreams(repo).includes(`oci-layer-${wrong}`));
    fsckClean(repo);
  });
});

// --- 7: progress output ------------------------------------------------------------------------------------

describe("progress output", () => {
  const why = reason ?? registryUnavailable();
  const short = (digest: string): string => digest.slice(7, 19);
  const src = (): string => `docker://${(registry as Registry).host}/test/multi:latest`;

  test("no TTY: plain lines per layer (downloading, done, already present), no escapes", (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const im = images as TestImages;
    const multi = readImage(im.layout, "multi");
    const repo = newRepo();
    // dup brings multi's base layer along: that one is already present, the other two are downloaded.
    assert.equal(cli(["--repo", repo, "pull", "-q", im.ref("dup"), "dup"]).status, 0);
    const r = cli(["--repo", repo, "pull", src(), "m"]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!r.stderr.includes("\x1b"), `no ANSI escapes: ${JSON.stringify(r.stderr)}`);
    const lines = r.stderr.trimEnd().split("\n");
    for (const line of lines)
      assert.match(
        line,
        /^(manifest sha256:[0-9a-f]{64} \(3 layers\)|[0-9a-f]{12}: (downloading|verifying|done|already present) \(.+\)|composefs image [0-9a-f]{12}: written|tagged m)$/,
      );
    assert.equal(lines[0], `manifest ${multi.manifestDigest} (3 layers)`);
    assert.equal(lines[lines.length - 1], "tagged m");
    const states = (digest: string): string[] =>
      lines.filter((l) => l.startsWith(`${short(digest)}: `)).map((l) => /: ([a-z ]+) \(/.exec(l)?.[1] ?? "");
    assert.deepEqual(states(multi.layers[0].digest), ["already present"]);
    for (const l of multi.layers.slice(1))
      assert.deepEqual(states(l.digest), ["downloading", "verifying", "done"]);
    assert.match(r.stdout.toString(), /^m: sha256:/, "the summary goes to stdout");
    assert.match(r.stdout.toString(), /3 layers \(2 downloaded, 1 already present\)/);
  });

  test("on a terminal: the layer block is redrawn in place; the final screen shows each layer once", async (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    if (!hasCommand("script")) return t.skip("script (util-linux) not installed: no way to get a terminal");
    const im = images as TestImages;
    const multi = readImage(im.layout, "multi");
    const repo = newRepo();
    assert.equal(cli(["--repo", repo, "pull", "-q", im.ref("dup"), "dup"]).status, 0);
    // Blobs held back 500 ms: the block (redrawn every 100 ms) is certainly drawn while layers download, and
    // then redrawn in place when they are done.
    const proxy = await startFaultProxy(registry.host, [
      { path: "/blobs/", method: "GET", times: "always", action: { kind: "delay", ms: 500 } },
    ]);
    let tty: string;
    const stdoutFile = path.join(tmp, "tty-stdout");
    try {
      // stderr on a pseudo-terminal made by script(1), stdout to a file.
      const command = [
        process.execPath,
        STRATUM_BIN,
        "--repo",
        repo,
        "pull",
        `docker://${proxy.host}/test/multi:latest`,
        "m",
      ]
        .map(shellQuote)
        .join(" ");
      const r = spawnSync("script", ["-qec", `${command} 2>&1 >${shellQuote(stdoutFile)}`, "/dev/null"], {
        env: { ...process.env, ...CLEAN_ENV, TERM: "xterm" },
      });
      tty = r.stdout.toString();
      assert.equal(r.status, 0, tty);
    } finally {
      await proxy.stop();
    }
    assert.ok(tty.includes("\x1b[2K"), `drawn with terminal escapes: ${JSON.stringify(tty)}`);
    assert.ok(tty.includes("\x1b[3A"), `redrawn in place: ${JSON.stringify(tty)}`);
    assert.match(tty, /downloading +\[/, "a progress bar while downloading");
    const rows = terminalScreen(tty);
    const layerRow = (digest: string, state: string): RegExp =>
      new RegExp(`^${short(digest)}: ${state} +[0-9.]+ (B|KiB)$`);
    assert.equal(rows.length, 6, `manifest, 3 layers, image, tagged:\n${rows.join("\n")}`);
    assert.equal(rows[0], `manifest ${multi.manifestDigest} (3 layers)`);
    assert.match(rows[1], layerRow(multi.layers[0].digest, "already present"));
    assert.match(rows[2], layerRow(multi.layers[1].digest, "done"));
    assert.match(rows[3], layerRow(multi.layers[2].digest, "done"));
    assert.match(rows[4], /^composefs image [0-9a-f]{12}: written$/);
    assert.equal(rows[5], "tagged m");
    assert.match(fs.readFileSync(stdoutFile, "utf8"), /^m: sha256:/);
  });

  test("-q: nothing on stderr; --json: stdout parses, nothing on stderr", (t) => {
    if (why !== null) return t.skip(why);
    if (!registry) return t.skip(registryUnavailable() ?? "no registry");
    const quiet = cli(["--repo", newRepo(), "pull", "-q", src(), "q"]);
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.equal(quiet.stderr, "");
    assert.match(quiet.stdout.toString(), /^q: sha256:/);
    const json = cli(["--repo", newRepo(), "pull", "--json", src(), "j"]);
    assert.equal(json.status, 0, json.stderr);
    assert.equal(json.stderr, "");
    const rep = JSON.parse(json.stdout.toString()) as PullReport;
    assert.equal(rep.tag, "j");
    assert.equal(rep.layers.length, 3);
  });
});
