// dockerd:// and podman:// (src/transport/daemon.ts) against a real dockerd and a real podman service, each with
// its own root and socket (test/helpers/daemons.ts): an image loaded into the daemon is found and served (config
// = the original, layers = the diff_ids), the description records the daemon and the image ID, a missing image
// is E_NOT_FOUND, the spool file is gone after close() and after every failure. A fake Engine API server on a
// unix socket covers a daemon that serves garbage, breaks off, or saves the wrong image.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { StratumError, type ErrorCode } from "../src/errors.ts";
import { parseImageConfig, type Platform } from "../src/oci/manifest.ts";
import { MediaType } from "../src/oci/media-types.ts";
import { DaemonSource } from "../src/oci/reference.ts";
import { daemonEndpoint, DaemonImageSource, type DaemonOpenOptions } from "../src/transport/daemon.ts";
import {
  type Daemon,
  dockerdUnavailable,
  podmanUnavailable,
  shortTempDir,
  startDockerd,
  startPodman,
} from "./helpers/daemons.ts";
import {
  buildImages,
  imagesUnavailable,
  loadIntoDaemon,
  rawTar,
  readBlob,
  readImage,
  sha256,
  skopeoArchive,
  type ImageInfo,
  type TestImages,
} from "./helpers/images.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const AMD64: Platform = { os: "linux", architecture: "amd64" };
const tmp = makeTempDir("stratum-daemon-");
const spool = path.join(tmp, "spool");
fs.mkdirSync(spool);
const imagesReason = imagesUnavailable();
let images: TestImages | undefined;
let multi: ImageInfo;
let archive = "";

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

async function rejects(p: Promise<unknown>, code: ErrorCode, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof StratumError, `expected a StratumError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const re of patterns) assert.match(err.message, re);
    return true;
  });
}

const spoolIsEmpty = (): void => assert.deepEqual(fs.readdirSync(spool), [], "spool directory left behind");

function open(
  transport: "dockerd" | "podman",
  image: string,
  env: NodeJS.ProcessEnv,
): Promise<DaemonImageSource> {
  const opts: DaemonOpenOptions = { spoolDir: spool, env };
  return DaemonImageSource.open(new DaemonSource(transport, image), opts);
}

/** Serve `image` and check everything about it; returns the source's description. */
async function checkServed(
  transport: "dockerd" | "podman",
  image: string,
  env: NodeJS.ProcessEnv,
): Promise<string> {
  let spooled = 0;
  const s = await DaemonImageSource.open(new DaemonSource(transport, image), {
    spoolDir: spool,
    env,
    onSpoolBytes: (n) => (spooled += n),
  });
  try {
    assert.ok(fs.existsSync(s.spoolPath), "the archive is spooled while the source is open");
    assert.equal(fs.statSync(s.spoolPath).size, spooled);
    assert.equal(fs.statSync(s.spoolPath).mode & 0o777, 0o600);
    assert.equal(s.imageId, multi.configDigest);
    const m = await s.manifest(AMD64);
    assert.equal(m.synthesized, true);
    assert.equal(m.manifest.mediaType, MediaType.dockerManifest);
    assert.equal(sha256(m.bytes), m.digest);
    const config = await collect(s.blob(m.manifest.config));
    assert.deepEqual(config, readBlob(images?.layout ?? "", multi.configDigest));
    const cfg = parseImageConfig(config, "config");
    // Two layers at once, as the pipeline may ask (concurrency 2).
    const layers = await Promise.all(m.manifest.layers.map((l) => collect(s.blob(l))));
    for (const [i, l] of m.manifest.layers.entries()) {
      const bytes = layers[i] ?? Buffer.alloc(0);
      assert.equal(sha256(bytes), l.digest);
      assert.equal(bytes.length, l.size);
      const raw = l.mediaType === MediaType.dockerLayerGzip ? gunzipSync(bytes) : bytes;
      assert.equal(sha256(raw), cfg.diffIds[i]);
    }
    assert.equal(s.concurrency, 2);
    return s.description;
  } finally {
    await s.close();
    spoolIsEmpty();
  }
}

before(async () => {
  if (imagesReason !== null) return;
  images = await buildImages();
  multi = readImage(images.layout, "multi");
  archive = await skopeoArchive(images.layout, "multi", "docker-archive", path.join(tmp, "multi.tar"), {
    ref: "test/multi:latest",
  });
});

after(() => {
  images?.remove();
  removeDir(tmp);
});

describe("dockerd://", { skip: imagesReason ?? dockerdUnavailable() ?? false }, () => {
  let docker: Daemon;
  before(async () => {
    docker = await startDockerd();
    await loadIntoDaemon(docker, archive);
  });
  after(async () => {
    await docker.stop();
  });

  test("an image loaded into dockerd is served by name, by ID and by short ID", async () => {
    const env = { DOCKER_HOST: docker.host };
    const d = await checkServed("dockerd", "test/multi:latest", env);
    assert.match(d, /^dockerd:\/\/test\/multi:latest /);
    assert.ok(d.includes(multi.configDigest), d);
    assert.ok(d.includes(docker.host), d);
    assert.match(d, /Docker\//);
    await checkServed("dockerd", multi.configDigest, env);
    await checkServed("dockerd", multi.configDigest.slice(7, 19), env);
  });

  test("a missing image is E_NOT_FOUND and leaves no spool file", async () => {
    await rejects(
      open("dockerd", "test/missing:latest", { DOCKER_HOST: docker.host }),
      "E_NOT_FOUND",
      /dockerd:\/\/test\/missing:latest/,
      /no such image in the daemon/,
    );
    spoolIsEmpty();
  });

  test("DOCKER_HOST decides; CONTAINER_HOST is podman's", async () => {
    await rejects(
      open("dockerd", "test/multi", {
        DOCKER_HOST: `unix://${path.join(tmp, "none.sock")}`,
        CONTAINER_HOST: docker.host,
      }),
      "E_IO",
      /cannot connect to the daemon at unix:\/\/.*none\.sock \(DOCKER_HOST\)/,
    );
    spoolIsEmpty();
  });
});

describe("podman://", { skip: imagesReason ?? podmanUnavailable() ?? false }, () => {
  let podman: Daemon;
  before(async () => {
    podman = await startPodman();
    await loadIntoDaemon(podman, archive);
  });
  after(async () => {
    await podman.stop();
  });

  test("an image loaded into podman is served, by full and short name and by ID", async () => {
    const env = { CONTAINER_HOST: podman.host, DOCKER_HOST: "tcp://127.0.0.1:1" };
    const d = await checkServed("podman", "docker.io/test/multi:latest", env);
    assert.match(d, /^podman:\/\/docker\.io\/test\/multi:latest /);
    assert.ok(d.includes(multi.configDigest), d);
    assert.ok(d.includes(podman.host), d);
    await checkServed("podman", "test/multi", env);
    await checkServed("podman", multi.configDigest, env);
  });

  test("a missing image is E_NOT_FOUND and leaves no spool file", async () => {
    await rejects(
      open("podman", "localhost/missing:1", { CONTAINER_HOST: podman.host }),
      "E_NOT_FOUND",
      /podman:\/\/localhost\/missing:1/,
      /no such image in the daemon/,
    );
    spoolIsEmpty();
  });
});

describe("daemon endpoints and failures", () => {
  test("endpoint defaults and unix:// only", () => {
    assert.deepEqual(daemonEndpoint("dockerd", {}), {
      host: "unix:///var/run/docker.sock",
      socketPath: "/var/run/docker.sock",
    });
    assert.equal(daemonEndpoint("podman", {}, 0).socketPath, "/run/podman/podman.sock");
    assert.equal(
      daemonEndpoint("podman", { XDG_RUNTIME_DIR: "/run/user/1000" }, 1000).socketPath,
      "/run/user/1000/podman/podman.sock",
    );
    assert.deepEqual(
      daemonEndpoint("podman", { CONTAINER_HOST: "unix:///x/p.sock", DOCKER_HOST: "unix:///y" }),
      {
        host: "unix:///x/p.sock",
        socketPath: "/x/p.sock",
        fromEnv: "CONTAINER_HOST",
      },
    );
    assert.throws(
      () => daemonEndpoint("dockerd", { DOCKER_HOST: "tcp://127.0.0.1:2375" }),
      (e: unknown) =>
        e instanceof StratumError && e.code === "E_UNSUPPORTED" && /only unix:\/\/ sockets/.test(e.message),
    );
    assert.throws(
      () => daemonEndpoint("podman", { CONTAINER_HOST: "ssh://me@host/run/podman.sock" }),
      /E_UNSUPPORTED|only unix/,
    );
    assert.throws(
      () => daemonEndpoint("dockerd", { DOCKER_HOST: "/var/run/docker.sock" }),
      /expected unix:\/\//,
    );
  });

  describe("a fake Engine API", () => {
    let dir = "";
    let socket = "";
    const id = `sha256:${"ab".repeat(32)}`;
    let mode: "garbage" | "broken" | "wrong-image" | "error" = "garbage";
    let getPath = "";
    const layer = rawTar([{ name: "f", type: "file", content: "x\n" }]);
    const config = JSON.stringify({
      architecture: "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: [sha256(layer)] },
    });
    const goodArchive = rawTar([
      { name: "l.tar", type: "file", content: layer },
      { name: "c.json", type: "file", content: config },
      {
        name: "manifest.json",
        type: "file",
        content: JSON.stringify([{ Config: "c.json", RepoTags: null, Layers: ["l.tar"] }]),
      },
    ]);
    const server = http.createServer((req, res) => {
      const url = req.url ?? "";
      if (url === "/_ping") return res.end("OK");
      if (url.endsWith("/json")) {
        res.setHeader("content-type", "application/json");
        return res.end(JSON.stringify({ Id: id, RepoTags: ["fake:1"] }));
      }
      getPath = url;
      if (mode === "error") {
        res.statusCode = 500;
        return res.end(JSON.stringify({ message: "storage is on fire" }));
      }
      if (mode === "garbage") return res.end(Buffer.alloc(5000, 0x41));
      if (mode === "wrong-image") return res.end(goodArchive);
      // broken: half an archive, then the connection drops
      res.write(goodArchive.subarray(0, 1024));
      setTimeout(() => res.destroy(), 20);
    });
    const env: NodeJS.ProcessEnv = {};

    before(async () => {
      dir = shortTempDir("sf-");
      socket = path.join(dir, "fake.sock");
      env.DOCKER_HOST = `unix://${socket}`;
      await new Promise<void>((resolve) => server.listen(socket, resolve));
    });
    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (dir !== "") fs.rmSync(dir, { recursive: true, force: true });
    });

    test("the archive is asked for by the inspected ID", async () => {
      mode = "garbage";
      await rejects(open("dockerd", "fake:1", env), "E_BAD_INPUT", /not a tar archive/);
      assert.equal(getPath, `/images/${encodeURIComponent(id)}/get`);
      spoolIsEmpty();
    });

    test("a save that fails or breaks off: an error naming the daemon, no spool left", async () => {
      mode = "error";
      await rejects(open("dockerd", "fake:1", env), "E_IO", /fake\.sock/, /storage is on fire/);
      spoolIsEmpty();
      mode = "broken";
      await assert.rejects(open("dockerd", "fake:1", env), (e: unknown) => e instanceof StratumError);
      spoolIsEmpty();
    });

    test("a saved image that is not the inspected one is E_CORRUPT", async () => {
      mode = "wrong-image";
      await rejects(open("dockerd", "fake:1", env), "E_CORRUPT", /not the inspected sha256:abab/);
      spoolIsEmpty();
    });
  });
});
