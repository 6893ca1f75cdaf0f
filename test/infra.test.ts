// Proof that the real test infrastructure works (docs/testing.md): the fixture images built with umoci and
// skopeo are what they claim to be, a plain and a token-auth docker-registry accept pushes and serve pulls (and
// the token server enforces anonymous = pull only, logs requests and issues tokens that really expire), the
// fault proxy injects its faults and forwards Range requests, and podman's service and dockerd start on their
// own sockets, load archives, list them through the Engine API, export them and stop without leftovers.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { gunzipSync } from "node:zlib";
import {
  dockerdUnavailable,
  mountsUnder,
  podmanUnavailable,
  processesUsing,
  run,
  type Daemon,
  startDockerd,
  startPodman,
} from "./helpers/daemons.ts";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.ts";
import {
  blobPath,
  buildBrokenImages,
  buildDebianImage,
  buildImages,
  daemonSave,
  debianMirror,
  debianUnavailable,
  diffTree,
  imagesUnavailable,
  loadIntoDaemon,
  MT,
  MULTI_EXPECTED,
  MULTIARCH_PLATFORMS,
  pushDockerManifestList,
  pushImage,
  readImage,
  readIndex,
  sha256,
  sha256File,
  skopeoArchive,
  TEST_CACHE,
  type OciIndex,
  type TestImages,
} from "./helpers/images.ts";
import {
  registryFetch,
  registryUnavailable,
  startRegistry,
  writeAuthFile,
  type Registry,
} from "./helpers/registry.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-infra-");
const imagesReason = imagesUnavailable();
let images: TestImages | undefined;

before(async () => {
  if (imagesReason === null) images = await buildImages();
});

after(() => {
  images?.remove();
  removeDir(tmp);
});

/** Skips `t` with the first non-null reason; true when the test may run. */
function may(t: TestContext, ...reasons: (string | null)[]): boolean {
  const reason = reasons.find((r) => r !== null);
  if (reason === undefined) return true;
  t.skip(reason);
  return false;
}

function img(): TestImages {
  assert.ok(images, "fixture images were not built");
  return images;
}

async function tarNames(file: string): Promise<string[]> {
  return (await run("tar", ["-tf", file])).stdout.toString().split("\n").filter(Boolean);
}

const seconds = (t0: number): string => `${((Date.now() - t0) / 1000).toFixed(2)} s`;

describe("fixture images", () => {
  test("built with umoci and skopeo", (t) => {
    if (!may(t, imagesReason)) return;
    t.diagnostic(`buildImages: ${img().buildSeconds.toFixed(2)} s`);
  });

  test("multi: exact layers, and umoci unpack gives the expected tree (whiteouts, opaque dir applied)", async (t) => {
    if (!may(t, imagesReason)) return;
    const im = img();
    const multi = readImage(im.layout, "multi");
    assert.equal(multi.layers.length, 3);
    for (const [i, tar] of im.multiLayerTars.entries()) {
      assert.equal(
        multi.diffIds[i],
        await sha256File(tar),
        `layer ${i + 1} diff_id is the sha256 of its tar`,
      );
      assert.equal(multi.layers[i]?.mediaType, MT.layerGzip);
    }
    const names = (await Promise.all(im.multiLayerTars.map(tarNames))).flat();
    for (const n of [
      "etc/.wh.gone.conf",
      "opaque/.wh..wh..opq",
      ".wh.olddir",
      "bin/tool-hardlink",
      "run/fifo",
    ]) {
      assert.ok(names.includes(n), `a layer has ${n}`);
    }
    const bundle = path.join(tmp, "multi-bundle");
    await run("umoci", ["unpack", "--image", `${im.layout}:multi`, bundle]);
    assert.deepEqual(await diffTree(path.join(bundle, "rootfs"), MULTI_EXPECTED), []);
    // The comparison does catch differences: the first layer alone is not the image.
    const lower = await diffTree(path.join(im.dir, "src/multi-l1"), MULTI_EXPECTED);
    assert.ok(lower.includes("etc/gone.conf: unexpected") && lower.includes("moded: mode 755, expected 700"));
    fs.rmSync(bundle, { recursive: true });
  });

  test("zstd: the same layers recompressed with zstd", async (t) => {
    if (!may(t, imagesReason)) return;
    const im = img();
    const zstd = readImage(im.layout, "zstd");
    const multi = readImage(im.layout, "multi");
    assert.ok(zstd.layers.every((l) => l.mediaType === MT.layerZstd));
    assert.deepEqual(zstd.diffIds, multi.diffIds);
    const layer0 = zstd.layers[0];
    assert.ok(layer0);
    const raw = await run("zstd", ["-dc", blobPath(im.layout, layer0.digest)]);
    assert.equal(sha256(raw.stdout), multi.diffIds[0]);
  });

  test("multiarch: an index of three platforms plus a buildx-style attestation manifest", (t) => {
    if (!may(t, imagesReason)) return;
    const im = img();
    const { index } = readIndex(im.layout, "multiarch");
    assert.equal(index.mediaType, MT.index);
    assert.equal(index.manifests.length, 4);
    for (const [i, p] of MULTIARCH_PLATFORMS.entries()) {
      const d = index.manifests[i];
      assert.ok(d);
      assert.deepEqual(d.platform, {
        os: p.os,
        architecture: p.architecture,
        ...(p.variant ? { variant: p.variant } : {}),
      });
      const image = readImage(im.layout, d.digest);
      assert.equal(image.config.architecture, p.architecture);
      assert.equal(image.config.variant, p.variant);
      const top = image.layers[1];
      assert.ok(top);
      assert.ok(gunzipSync(fs.readFileSync(blobPath(im.layout, top.digest))).includes(p.content));
    }
    const att = index.manifests[3];
    assert.equal(att?.platform?.architecture, "unknown");
    assert.equal(att.annotations?.["vnd.docker.reference.type"], "attestation-manifest");
    assert.equal(att.annotations["vnd.docker.reference.digest"], index.manifests[0]?.digest);
    assert.equal(att.digest, im.attestationDigest);
    assert.equal(readImage(im.layout, att.digest).layers[0]?.mediaType, MT.inToto);
  });

  test("dup: one layer twice (shared with multi) and an empty layer", (t) => {
    if (!may(t, imagesReason)) return;
    const im = img();
    const dup = readImage(im.layout, "dup");
    const [a, empty, b] = dup.layers;
    assert.equal(dup.layers.length, 4);
    assert.ok(a && empty && b);
    assert.equal(a.digest, b.digest);
    assert.equal(a.digest, readImage(im.layout, "multi").layers[0]?.digest);
    assert.deepEqual(gunzipSync(fs.readFileSync(blobPath(im.layout, empty.digest))), Buffer.alloc(1024));
  });

  test("broken inputs are broken the way they say", async (t) => {
    if (!may(t, imagesReason)) return;
    const broken = await buildBrokenImages(path.join(tmp, "broken"));
    const wrong = broken["wrong-digest"];
    assert.notEqual(await sha256File(blobPath(wrong.layout, wrong.digest)), wrong.digest);
    const copy = await run("skopeo", ["copy", wrong.ref, `oci:${tmp}/copy:x`], { check: false });
    assert.notEqual(copy.status, 0, "skopeo refuses the blob with the wrong digest");
    assert.match(copy.stderr, /digest/i);
    const trunc = broken["truncated-blob"];
    const truncDesc = readImage(trunc.layout, trunc.tag).layers[0];
    assert.ok(truncDesc && fs.statSync(blobPath(trunc.layout, trunc.digest)).size < truncDesc.size);
    const missing = broken["missing-blob"];
    assert.ok(!fs.existsSync(blobPath(missing.layout, missing.digest)));
    const expectNames: Record<string, string> = {
      "escape-dotdot": "../escape",
      "escape-absolute": "/absolute",
      "escape-symlink": "link/escape-through-symlink",
      "escape-hardlink": "ok/hardlink",
    };
    for (const [kind, name] of Object.entries(expectNames)) {
      const b = broken[kind as keyof typeof broken];
      const gz = gunzipSync(fs.readFileSync(blobPath(b.layout, b.digest)));
      const file = path.join(tmp, `${kind}.tar`);
      fs.writeFileSync(file, gz);
      const names = (await run("tar", ["-tvf", file])).stdout.toString();
      assert.ok(names.includes(name), `${kind}: ${names}`);
    }
  });

  test("debian: a two-layer image of an mmdebstrap rootfs, cached", async (t) => {
    const cached =
      fs.existsSync(TEST_CACHE) &&
      fs.readdirSync(TEST_CACHE).some((f) => /^debian-bookworm-minbase-.*\.oci$/.test(f));
    const offline =
      cached || debianMirror() !== null ? null : "no Debian mirror in the apt sources and no cached rootfs";
    if (!may(t, debianUnavailable(), offline)) return;
    const deb = await buildDebianImage();
    t.diagnostic(
      `buildDebianImage: ${deb.seconds.toFixed(2)} s (${deb.fromCache ? "cached" : "built"}: ${deb.layout})`,
    );
    const image = readImage(deb.layout, "debian");
    assert.equal(image.layers.length, 2);
    assert.equal(image.diffIds[0], await sha256File(deb.rootfsTar));
    const names = await tarNames(deb.rootfsTar);
    assert.ok(names.includes("./etc/debian_version") && names.length > 5000, `${names.length} entries`);
  });
});

describe("docker-registry, plain and with token auth", () => {
  const reason = imagesReason ?? registryUnavailable("token");
  let plain: Registry | undefined;
  let token: Registry | undefined;
  const proxies: FaultProxy[] = [];
  let startTimes = "";

  before(async () => {
    if (reason !== null) return;
    let t0 = Date.now();
    plain = await startRegistry();
    startTimes = `plain ${seconds(t0)}`;
    t0 = Date.now();
    token = await startRegistry({ auth: "token" });
    startTimes += `, token auth (openssl key, token server, registry) ${seconds(t0)}`;
  });

  after(async () => {
    for (const p of proxies) await p.stop();
    await plain?.stop();
    await token?.stop();
    for (const r of [plain, token]) if (r) assert.ok(!fs.existsSync(r.dir), `${r.dir} removed`);
  });

  const reg = (r: Registry | undefined): Registry => {
    assert.ok(r, "registry not started");
    return r;
  };

  test("plain: push multi and multiarch, skopeo inspect them", async (t) => {
    if (!may(t, reason)) return;
    t.diagnostic(`registry start: ${startTimes}`);
    const r = reg(plain);
    const im = img();
    await pushImage(im.layout, "multi", r, "test/multi:latest");
    const info = JSON.parse(
      (
        await run("skopeo", ["inspect", "--tls-verify=false", `docker://${r.host}/test/multi:latest`])
      ).stdout.toString(),
    ) as {
      Digest: string;
      Layers: string[];
    };
    assert.equal(info.Digest, readImage(im.layout, "multi").manifestDigest);
    assert.equal(info.Layers.length, 3);
    await pushImage(im.layout, "multiarch", r, "test/multiarch:latest", { all: true });
    const raw = await run("skopeo", [
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${r.host}/test/multiarch:latest`,
    ]);
    const index = JSON.parse(raw.stdout.toString()) as OciIndex;
    assert.equal(sha256(raw.stdout), readIndex(im.layout, "multiarch").digest);
    assert.equal(index.manifests.length, 4);
    // Docker media types: a converted schema 2 image, and the hand-written Docker manifest list as is.
    await pushImage(im.layout, "multi", r, "test/multi-v2s2:latest", { format: "v2s2" });
    const v2 = await run("skopeo", [
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${r.host}/test/multi-v2s2:latest`,
    ]);
    assert.equal((JSON.parse(v2.stdout.toString()) as { mediaType: string }).mediaType, MT.dockerManifest);
    const listDigest = await pushDockerManifestList(im.layout, r, "test/multiarch-docker:latest");
    const listRef = `docker://${r.host}/test/multiarch-docker:latest`;
    const list = await run("skopeo", ["inspect", "--raw", "--tls-verify=false", listRef]);
    assert.equal(sha256(list.stdout), listDigest);
    const listJson = JSON.parse(list.stdout.toString()) as OciIndex;
    assert.equal(listJson.mediaType, MT.dockerList);
    assert.ok(listJson.manifests.every((m) => m.mediaType === MT.dockerManifest));
    const arm64 = await run("skopeo", ["inspect", "--override-arch", "arm64", "--tls-verify=false", listRef]);
    assert.equal((JSON.parse(arm64.stdout.toString()) as { Architecture: string }).Architecture, "arm64");
  });

  test("token: alice pushes, anonymous may pull but not push, bad password refused, requests logged", async (t) => {
    if (!may(t, reason)) return;
    const r = reg(token);
    const im = img();
    assert.equal(r.users.alice, "secret");
    await pushImage(im.layout, "multi", r, "test/multi:latest"); // as alice, the first user
    const inspect = await run("skopeo", [
      "inspect",
      "--no-creds",
      "--tls-verify=false",
      `docker://${r.host}/test/multi:latest`,
    ]);
    assert.equal((JSON.parse(inspect.stdout.toString()) as { Layers: string[] }).Layers.length, 3);
    const anonGet = await registryFetch(r, "/v2/test/multi/manifests/latest", {
      headers: { accept: MT.manifest },
      creds: null,
    });
    assert.equal(
      sha256(Buffer.from(await anonGet.arrayBuffer())),
      readImage(im.layout, "multi").manifestDigest,
    );
    // skopeo with an auth file made by writeAuthFile (what REGISTRY_AUTH_FILE tests use).
    const authFile = writeAuthFile(r, path.join(tmp, "auth", "auth.json"));
    await run("skopeo", [
      "copy",
      "--quiet",
      "--authfile",
      authFile,
      "--dest-tls-verify=false",
      `oci:${im.layout}:dup`,
      `docker://${r.host}/test/dup:latest`,
    ]);
    await assert.rejects(
      pushImage(im.layout, "dup", r, "test/anonymous:latest", { creds: null }),
      /denied|unauthorized/i,
    );
    await assert.rejects(
      pushImage(im.layout, "dup", r, "test/wrong:latest", { creds: "alice:wrong" }),
      /401|unauthorized/i,
    );

    const log = r.tokenLog();
    const alice = log.find((e) => e.user === "alice" && e.status === 200);
    assert.ok(alice, "alice's token request is logged");
    assert.ok(alice.scopes.includes("repository:test/multi:pull,push"));
    assert.deepEqual(alice.access, [{ type: "repository", name: "test/multi", actions: ["pull", "push"] }]);
    const anon = log.filter((e) => e.user === null && e.status === 200);
    assert.ok(anon.length > 0);
    assert.ok(
      anon.every((e) => e.access.every((a) => a.actions.join() === "pull")),
      "anonymous: pull only",
    );
    assert.ok(
      log.some((e) => e.user === "alice" && e.status === 401),
      "the bad password is logged as 401",
    );
    assert.ok(!fs.readFileSync(r.logPath ?? "", "utf8").includes("secret"), "no password in the log");
  });

  test("token: a token issued with lifetime −57 s is refused ~3 s later (the registry allows 60 s leeway)", async (t) => {
    if (!may(t, reason)) return;
    const r = reg(token);
    await pushImage(img().layout, "multi", r, "test/multi:latest");
    r.setTokenLifetime(-57, 300);
    try {
      const reply = (await (
        await fetch(`${r.tokenUrl}?service=${r.service}&scope=repository:test/multi:pull`)
      ).json()) as {
        token: string;
        expires_in: number;
      };
      assert.equal(reply.expires_in, 300, "the reported expires_in can lie");
      const get = (): Promise<Response> =>
        fetch(`${r.url}/v2/test/multi/manifests/latest`, {
          headers: { authorization: `Bearer ${reply.token}`, accept: MT.manifest },
        });
      const first = await get();
      await first.arrayBuffer();
      assert.equal(first.status, 200);
      const t0 = Date.now();
      let res = first;
      while (res.status === 200 && Date.now() - t0 < 8000) {
        await new Promise((ok) => setTimeout(ok, 250));
        res = await get();
        await res.arrayBuffer();
      }
      assert.equal(res.status, 401);
      assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
      t.diagnostic(`token refused after ${seconds(t0)}`);
    } finally {
      r.setTokenLifetime(300);
    }
  });

  test("fault proxy: a 500 once, then the request passes; Retry-After; all logged", async (t) => {
    if (!may(t, reason)) return;
    const r = reg(plain);
    await pushImage(img().layout, "multi", r, "test/multi:latest");
    const t0 = Date.now();
    const proxy = await startFaultProxy(r.host, [
      { path: "/manifests/latest$", action: { kind: "status", status: 500 } },
      { path: "/tags/list", action: { kind: "status", status: 429, retryAfter: 2 }, times: 2 },
    ]);
    proxies.push(proxy);
    t.diagnostic(`fault proxy start: ${seconds(t0)}`);
    const manifest = `${proxy.url}/v2/test/multi/manifests/latest`;
    const headers = { accept: MT.manifest };
    assert.equal((await fetch(manifest, { headers })).status, 500);
    const ok = await fetch(manifest, { headers });
    assert.equal(ok.status, 200);
    assert.equal(
      sha256(Buffer.from(await ok.arrayBuffer())),
      readImage(img().layout, "multi").manifestDigest,
    );
    for (let i = 0; i < 2; i++) {
      const limited = await fetch(`${proxy.url}/v2/test/multi/tags/list`);
      assert.equal(limited.status, 429);
      assert.equal(limited.headers.get("retry-after"), "2");
    }
    assert.equal((await fetch(`${proxy.url}/v2/test/multi/tags/list`)).status, 200);
    // skopeo through the proxy: the rules are used up, so it passes.
    await run("skopeo", ["inspect", "--tls-verify=false", `docker://${proxy.host}/test/multi:latest`]);
    const log = proxy.requests();
    assert.deepEqual(
      log.slice(0, 5).map((e) => [e.status, e.fault]),
      [
        [500, "status"],
        [200, null],
        [429, "status"],
        [429, "status"],
        [200, null],
      ],
    );
    assert.ok(
      log.some((e) => e.path === "/v2/test/multi/manifests/latest" && e.status === 200 && e.rule === null),
    );
  });

  test("fault proxy: drop mid-blob then resume with Range; corrupt; truncate; stall", async (t) => {
    if (!may(t, reason)) return;
    const r = reg(plain);
    const im = img();
    await pushImage(im.layout, "multi", r, "test/multi:latest");
    const layer = readImage(im.layout, "multi").layers[0];
    assert.ok(layer);
    const blob = fs.readFileSync(blobPath(im.layout, layer.digest));
    const proxy = await startFaultProxy(r.host, [
      { path: "/blobs/sha256:", method: "GET", range: false, action: { kind: "drop", afterBytes: 1000 } },
    ]);
    proxies.push(proxy);
    const url = `${proxy.url}/v2/test/multi/blobs/${layer.digest}`;

    // Dropped after 1000 bytes: the client sees the connection end early.
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.equal(Number(res.headers.get("content-length")), blob.length);
    const partial: Buffer[] = [];
    await assert.rejects(async () => {
      for await (const chunk of res.body ?? []) partial.push(Buffer.from(chunk as Uint8Array));
    });
    const got = Buffer.concat(partial);
    assert.ok(got.length <= 1000);
    // Resumed with Range: forwarded to the registry, which answers 206 with the rest.
    const rest = await fetch(url, { headers: { range: `bytes=${got.length}-` } });
    assert.equal(rest.status, 206);
    const whole = Buffer.concat([got, Buffer.from(await rest.arrayBuffer())]);
    assert.equal(sha256(whole), layer.digest);
    // Entries are written when a response ends, so the dropped one may come after the resumed one.
    await new Promise((ok) => setTimeout(ok, 100));
    const log = proxy.requests();
    assert.equal(log.length, 2);
    assert.ok(log.some((e) => e.fault === "drop" && e.range === null && e.bytes === 1000));
    assert.ok(log.some((e) => e.fault === null && e.range === `bytes=${got.length}-` && e.status === 206));

    proxy.setRules([
      { path: "/blobs/", action: { kind: "corrupt", offset: 10 } },
      { path: "/blobs/", action: { kind: "truncate", bytes: 100 } },
      { path: "/blobs/", action: { kind: "stall", afterBytes: 50 } },
    ]);
    const corrupt = Buffer.from(await (await fetch(url)).arrayBuffer());
    assert.equal(corrupt.length, blob.length);
    assert.notEqual(sha256(corrupt), layer.digest);
    assert.equal((corrupt[10] ?? 0) ^ 0xff, blob[10]);
    assert.ok(corrupt.subarray(11).equals(blob.subarray(11)));
    const short = await fetch(url);
    assert.equal(short.headers.get("content-length"), "100");
    assert.deepEqual(Buffer.from(await short.arrayBuffer()), blob.subarray(0, 100));
    const stalled = await fetch(url, { signal: AbortSignal.timeout(1500) });
    await assert.rejects(stalled.arrayBuffer(), /abort|timeout/i);
    assert.equal(sha256(Buffer.from(await (await fetch(url)).arrayBuffer())), layer.digest, "rules used up");
  });

  test("fault proxy on the token registry: an injected 401 carries the registry's own Bearer challenge", async (t) => {
    if (!may(t, reason)) return;
    const r = reg(token);
    await pushImage(img().layout, "multi", r, "test/multi:latest");
    const proxy = await startFaultProxy(r.host, [
      { path: "/manifests/", method: "GET", action: { kind: "status", status: 401 } },
    ]);
    proxies.push(proxy);
    const tokenReply = (await (
      await fetch(`${r.tokenUrl}?service=${r.service}&scope=repository:test/multi:pull`)
    ).json()) as {
      token: string;
    };
    const get = (): Promise<Response> =>
      fetch(`${proxy.url}/v2/test/multi/manifests/latest`, {
        headers: { authorization: `Bearer ${tokenReply.token}`, accept: MT.manifest },
      });
    const refused = await get();
    assert.equal(refused.status, 401);
    const challenge = refused.headers.get("www-authenticate") ?? "";
    assert.match(challenge, /^Bearer /);
    assert.ok(
      challenge.includes(`realm="${r.tokenUrl}"`) && challenge.includes('scope="repository:test/multi:pull"'),
    );
    assert.equal((await get()).status, 200);
  });
});

describe("container daemons on their own sockets", () => {
  const reasons = {
    podman: imagesReason ?? podmanUnavailable(),
    docker: imagesReason ?? dockerdUnavailable(),
  };
  const daemons: Daemon[] = [];
  let dockerArchive = "";

  after(async () => {
    for (const d of daemons) await d.stop();
  });

  async function archive(): Promise<string> {
    if (dockerArchive === "") {
      dockerArchive = await skopeoArchive(
        img().layout,
        "multi",
        "docker-archive",
        path.join(tmp, "multi-docker.tar"),
        { ref: "test/multi:latest" },
      );
    }
    return dockerArchive;
  }

  async function exercise(t: TestContext, d: Daemon, name: string): Promise<void> {
    let t0 = Date.now();
    const loaded = await loadIntoDaemon(d, await archive());
    t.diagnostic(`${d.kind} load: ${seconds(t0)} (${loaded.join(", ")})`);
    assert.deepEqual(loaded, [name]);
    const list = await d.api("GET", "/v1.41/images/json");
    assert.equal(list.status, 200);
    const imgs = JSON.parse(list.body.toString()) as { RepoTags: string[] | null; Id: string }[];
    assert.ok(
      imgs.some((i) => i.RepoTags?.includes(name)),
      list.body.toString(),
    );
    assert.equal(imgs[0]?.Id, readImage(img().layout, "multi").configDigest);
    const out = path.join(tmp, `${d.kind}-api.tar`);
    t0 = Date.now();
    const get = await d.api("GET", `/v1.41/images/${encodeURIComponent(name)}/get`, { toFile: out });
    t.diagnostic(`${d.kind} GET /images/{name}/get: ${seconds(t0)}`);
    assert.equal(get.status, 200);
    const names = await tarNames(out);
    assert.equal(names.at(-1), "repositories");
    assert.equal(names.at(-2), "manifest.json", "manifest.json comes (next to) last");
    const saved = await daemonSave(d, [name], path.join(tmp, `${d.kind}-save.tar`));
    assert.ok((await tarNames(saved)).includes("manifest.json"));
    assert.equal(d.env.DOCKER_HOST, `unix://${d.socket}`);
  }

  async function stopAndCheck(t: TestContext, d: Daemon): Promise<void> {
    const t0 = Date.now();
    await d.stop();
    t.diagnostic(`${d.kind} stop: ${seconds(t0)}`);
    assert.ok(!fs.existsSync(d.dir), `${d.dir} removed`);
    assert.deepEqual(mountsUnder(d.dir), []);
    assert.deepEqual(processesUsing(d.dir), []);
    assert.throws(() => process.kill(d.pid, 0), "the daemon is gone");
  }

  test("podman system service: load, list, export (Engine API and podman save)", async (t) => {
    if (!may(t, reasons.podman)) return;
    const t0 = Date.now();
    const d = await startPodman();
    daemons.push(d);
    t.diagnostic(`podman service start: ${seconds(t0)}`);
    assert.equal(d.env.CONTAINER_HOST, `unix://${d.socket}`);
    // podman qualifies short names with docker.io.
    await exercise(t, d, "docker.io/test/multi:latest");
    const oci = await daemonSave(
      d,
      ["docker.io/test/multi:latest"],
      path.join(tmp, "podman-oci.tar"),
      "oci-archive",
    );
    assert.deepEqual((await tarNames(oci)).filter((n) => !n.startsWith("blobs/")).sort(), [
      "index.json",
      "oci-layout",
    ]);
    const legacy = await tarNames(path.join(tmp, "podman-save.tar"));
    assert.ok(
      legacy.some((n) => /^[0-9a-f]{64}\.tar$/.test(n)),
      "podman: <diffid>.tar layers",
    );
    await stopAndCheck(t, d);
  });

  test("dockerd: load, list, export (Engine API and docker save)", async (t) => {
    if (!may(t, reasons.docker)) return;
    const t0 = Date.now();
    const d = await startDockerd();
    daemons.push(d);
    t.diagnostic(`dockerd start: ${seconds(t0)}`);
    await exercise(t, d, "test/multi:latest");
    const legacy = await tarNames(path.join(tmp, "docker-save.tar"));
    assert.ok(
      legacy.some((n) => /^[0-9a-f]{64}\/layer\.tar$/.test(n)),
      "docker 20.10: <id>/layer.tar layers",
    );
    await stopAndCheck(t, d);
  });
});
