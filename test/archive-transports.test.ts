// The archive and layout transports (src/transport/archive/): docker-archive, oci-archive and oci: sources read
// from archives the real tools wrote here (skopeo copy, podman save, docker save from a private dockerd), from
// umoci/skopeo OCI layouts, and from hand-built Docker 25+ / containerd-store archives. For each: the manifest
// parses, the config bytes are the original ones (their sha256 is the config digest, and skopeo reports the same
// config), every layer blob streams back with the descriptor's digest and size and decompresses to the config's
// diff_id. Plus REF selection, nested and multi-platform indexes, and broken archives (clear errors naming the
// file and the problem). docs/pull.md "Archives, layouts and daemons".

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { StratumError, type ErrorCode } from "../src/errors.ts";
import { zstdCompress, zstdDecompress } from "../src/format/zstd.ts";
import { parseImageConfig, type Platform } from "../src/oci/manifest.ts";
import { MediaType } from "../src/oci/media-types.ts";
import { DockerArchiveSource, OciLayoutSource, parsePullSource } from "../src/oci/reference.ts";
import { DockerArchiveImageSource } from "../src/transport/archive/docker-archive.ts";
import { OciLayoutImageSource } from "../src/transport/archive/oci-layout.ts";
import { normalizeArchivePath, TarIndex } from "../src/transport/archive/tar-index.ts";
import type { ImageSource, SourceManifest } from "../src/transport/source.ts";
import { dockerdUnavailable, podmanUnavailable, run, startDockerd, startPodman } from "./helpers/daemons.ts";
import {
  blobPath,
  buildImages,
  daemonSave,
  imagesUnavailable,
  loadIntoDaemon,
  rawTar,
  readBlob,
  readImage,
  readIndex,
  sha256,
  skopeoArchive,
  tagDescriptor,
  writeBlob,
  type ImageInfo,
  type RawTarEntry,
  type TestImages,
} from "./helpers/images.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const AMD64: Platform = { os: "linux", architecture: "amd64" };
const ARM64: Platform = { os: "linux", architecture: "arm64" };
const ARMV7: Platform = { os: "linux", architecture: "arm", variant: "v7" };

const tmp = makeTempDir("stratum-archives-");
const p = (name: string): string => path.join(tmp, name);
const imagesReason = imagesUnavailable();
let images: TestImages | undefined;
let multi: ImageInfo;
let ctrd: { index: string; arm64: string } | undefined;
/** Archive and layout paths by fixture name; absent when the tool that makes it is unavailable. */
const A: Record<string, string | undefined> = {};
const why: Record<string, string> = {};

// ---- helpers ---------------------------------------------------------------------------------------------

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

function decompress(mediaType: string, bytes: Buffer): Buffer {
  if (mediaType.endsWith("gzip")) return gunzipSync(bytes);
  if (mediaType.endsWith("zstd")) return zstdDecompress(bytes);
  return bytes;
}

function openRef(ref: string): Promise<ImageSource> {
  const src = parsePullSource(ref);
  if (src instanceof DockerArchiveSource) return DockerArchiveImageSource.openSource(src);
  if (src instanceof OciLayoutSource) return OciLayoutImageSource.openSource(src);
  throw new Error(`${ref}: not an archive or layout reference`);
}

/**
 * Every check that holds for any good image: manifest digest, config digest/size, each layer's digest/size and
 * diff_id. Returns the manifest and the config bytes.
 */
async function checkImage(
  s: ImageSource,
  platform: Platform = AMD64,
): Promise<{ m: SourceManifest; config: Buffer }> {
  const m = await s.manifest(platform);
  assert.equal(sha256(m.bytes), m.digest, "manifest digest");
  const config = await collect(s.blob(m.manifest.config));
  assert.equal(sha256(config), m.manifest.config.digest, "config digest");
  assert.equal(config.length, m.manifest.config.size, "config size");
  const cfg = parseImageConfig(config, "config");
  assert.equal(m.manifest.layers.length, cfg.diffIds.length, "one diff_id per layer");
  for (const [i, l] of m.manifest.layers.entries()) {
    const bytes = await collect(s.blob(l));
    assert.equal(sha256(bytes), l.digest, `layer ${i} digest`);
    assert.equal(bytes.length, l.size, `layer ${i} size`);
    assert.equal(sha256(decompress(l.mediaType, bytes)), cfg.diffIds[i], `layer ${i} diff_id`);
  }
  return { m, config };
}

async function withSource<T>(ref: string, fn: (s: ImageSource) => Promise<T>): Promise<T> {
  const s = await openRef(ref);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

async function skopeoRaw(ref: string, config = false): Promise<Buffer> {
  return (await run("skopeo", ["inspect", "--raw", ...(config ? ["--config"] : []), ref])).stdout;
}

async function rejects(p: Promise<unknown>, code: ErrorCode, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof StratumError, `expected a StratumError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const re of patterns) assert.match(err.message, re);
    return true;
  });
}

/** The fixture, or skip the test with the reason it is missing. */
function need(t: TestContext, name: string): string | undefined {
  const f = A[name];
  if (f === undefined) t.skip(why[name] ?? imagesReason ?? `${name} was not built`);
  return f;
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

function tarDir(dir: string, out: string, members: string[] = ["."]): Promise<unknown> {
  return run("tar", ["--numeric-owner", "-C", dir, "-cf", out, ...members]);
}

function writeJson(file: string, v: unknown): void {
  fs.writeFileSync(file, JSON.stringify(v));
}

// ---- fixtures --------------------------------------------------------------------------------------------

/** Docker 25+ `docker save`: an OCI layout with uncompressed layer blobs next to manifest.json. */
function buildDocker25(img: TestImages, out: string, opts: { emptyOciLayers?: boolean } = {}): void {
  const dir = `${out}.d`;
  const blobs = path.join(dir, "blobs", "sha256");
  fs.mkdirSync(blobs, { recursive: true });
  const layers = img.multiLayerTars.map((t) => {
    const bytes = fs.readFileSync(t);
    const digest = sha256(bytes);
    fs.writeFileSync(path.join(blobs, digest.slice(7)), bytes);
    return { mediaType: MediaType.ociLayer, digest, size: bytes.length };
  });
  const config = readBlob(img.layout, multi.configDigest);
  fs.writeFileSync(path.join(blobs, multi.configDigest.slice(7)), config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: multi.configDigest, size: config.length },
      layers: opts.emptyOciLayers ? [] : layers,
    }),
  );
  fs.writeFileSync(path.join(blobs, sha256(manifest).slice(7)), manifest);
  writeJson(path.join(dir, "index.json"), {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      {
        mediaType: MediaType.ociManifest,
        digest: sha256(manifest),
        size: manifest.length,
        annotations: {
          "io.containerd.image.name": "docker.io/test/multi:latest",
          "org.opencontainers.image.ref.name": "latest",
        },
      },
    ],
  });
  fs.writeFileSync(path.join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeJson(path.join(dir, "manifest.json"), [
    {
      Config: `blobs/sha256/${multi.configDigest.slice(7)}`,
      RepoTags: ["test/multi:latest"],
      Layers: layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
    },
  ]);
  writeJson(path.join(dir, "repositories"), { "test/multi": { latest: layers[2]?.digest.slice(7) } });
}

/**
 * Docker with the containerd image store: index.json → the multi-platform index → platform manifests with the
 * original (gzip) blobs; manifest.json names the arm64 image; the amd64 manifest blob was not saved.
 */
async function buildContainerdStore(img: TestImages, out: string): Promise<{ index: string; arm64: string }> {
  const dir = `${out}.d`;
  await run("skopeo", ["copy", "--quiet", "--all", `oci:${img.layout}:multiarch`, `oci:${dir}:multiarch`]);
  const { digest: index, index: idx } = readIndex(dir, "multiarch");
  const arm64 = idx.manifests.find((m) => m.platform?.architecture === "arm64");
  const amd64 = idx.manifests.find((m) => m.platform?.architecture === "amd64");
  if (arm64 === undefined || amd64 === undefined) throw new Error("multiarch: no arm64/amd64 entry");
  fs.rmSync(blobPath(dir, amd64.digest));
  const armImg = readImage(dir, arm64.digest);
  const indexSize = readBlob(dir, index).length;
  writeJson(path.join(dir, "index.json"), {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      {
        mediaType: MediaType.ociIndex,
        digest: index,
        size: indexSize,
        annotations: {
          "io.containerd.image.name": "docker.io/test/multiarch:latest",
          "org.opencontainers.image.ref.name": "latest",
        },
      },
    ],
  });
  writeJson(path.join(dir, "manifest.json"), [
    {
      Config: `blobs/sha256/${armImg.configDigest.slice(7)}`,
      RepoTags: ["test/multiarch:latest"],
      Layers: armImg.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
    },
  ]);
  await tarDir(dir, out, ["oci-layout", "index.json", "manifest.json", "blobs"]);
  return { index, arm64: arm64.digest };
}

/** A skopeo docker-archive with its layer files compressed in place (gzip, or zstd for the ones listed). */
async function buildCompressedDockerArchive(src: string, out: string, zstdLayers: number[]): Promise<void> {
  const dir = `${out}.d`;
  fs.mkdirSync(dir);
  await run("tar", ["-C", dir, "-xf", src]);
  const [entry] = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8")) as {
    Layers: string[];
  }[];
  for (const [i, l] of (entry?.Layers ?? []).entries()) {
    const f = path.join(dir, l);
    const raw = fs.readFileSync(f);
    fs.writeFileSync(f, zstdLayers.includes(i) ? zstdCompress(raw) : gzipSync(raw));
  }
  // `.` as the member: every name starts with "./".
  await tarDir(dir, out);
}

/** A one-layer docker-archive written byte by byte, with `extra` entries and manifest.json edits. */
function rawDockerArchive(
  out: string,
  opts: {
    layers?: string[];
    config?: string;
    extra?: RawTarEntry[];
    withManifest?: boolean;
    withLayer?: boolean;
  } = {},
): string {
  const layer = rawTar([{ name: "hello", type: "file", content: "hello\n" }]);
  const config = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [sha256(layer)] },
  });
  const entries: RawTarEntry[] = [];
  if (opts.withLayer ?? true) entries.push({ name: "layer.tar", type: "file", content: layer });
  entries.push({ name: "config.json", type: "file", content: config }, ...(opts.extra ?? []));
  if (opts.withManifest ?? true)
    entries.push({
      name: "manifest.json",
      type: "file",
      content: JSON.stringify([
        { Config: opts.config ?? "config.json", RepoTags: ["x:1"], Layers: opts.layers ?? ["layer.tar"] },
      ]),
    });
  fs.writeFileSync(out, rawTar(entries));
  return out;
}

before(async () => {
  if (imagesReason !== null) return;
  images = await buildImages();
  const img = images;
  multi = readImage(img.layout, "multi");
  A.layout = img.layout;
  A.skDocker = await skopeoArchive(img.layout, "multi", "docker-archive", p("sk-docker.tar"), {
    ref: "test/multi:latest",
  });
  A.skDockerDup = await skopeoArchive(img.layout, "dup", "docker-archive", p("sk-docker-dup.tar"), {
    ref: "test/dup:latest",
  });
  A.skOci = await skopeoArchive(img.layout, "multi", "oci-archive", p("sk-oci.tar"), { ref: "latest" });
  A.skOciZstd = await skopeoArchive(img.layout, "zstd", "oci-archive", p("sk-oci-zstd.tar"), { ref: "zstd" });
  A.skOciAll = await skopeoArchive(img.layout, "multiarch", "oci-archive", p("sk-oci-all.tar"), {
    ref: "multiarch",
    all: true,
  });

  const podmanReason = podmanUnavailable();
  if (podmanReason === null) {
    const podman = await startPodman();
    try {
      await loadIntoDaemon(podman, A.skDocker);
      await loadIntoDaemon(podman, A.skDockerDup);
      A.podmanDocker = await daemonSave(podman, ["docker.io/test/multi:latest"], p("podman-docker.tar"));
      A.podmanDockerM = await daemonSave(
        podman,
        ["docker.io/test/multi:latest", "docker.io/test/dup:latest"],
        p("podman-docker-m.tar"),
      );
      A.podmanOci = await daemonSave(
        podman,
        ["docker.io/test/multi:latest"],
        p("podman-oci.tar"),
        "oci-archive",
      );
    } finally {
      await podman.stop();
    }
  } else for (const k of ["podmanDocker", "podmanDockerM", "podmanOci"]) why[k] = podmanReason;

  const dockerReason = dockerdUnavailable();
  if (dockerReason === null) {
    const docker = await startDockerd();
    try {
      await loadIntoDaemon(docker, A.skDocker);
      await loadIntoDaemon(docker, A.skDockerDup);
      A.docker = await daemonSave(docker, ["test/multi:latest"], p("docker.tar"));
      A.dockerM = await daemonSave(docker, ["test/multi:latest", "test/dup:latest"], p("docker-m.tar"));
    } finally {
      await docker.stop();
    }
  } else for (const k of ["docker", "dockerM"]) why[k] = dockerReason;

  buildDocker25(img, p("docker25.tar"));
  await tarDir(p("docker25.tar.d"), p("docker25.tar"), [
    "blobs",
    "index.json",
    "manifest.json",
    "oci-layout",
    "repositories",
  ]);
  A.docker25 = p("docker25.tar");
  buildDocker25(img, p("docker25-empty.tar"), { emptyOciLayers: true });
  await tarDir(p("docker25-empty.tar.d"), p("docker25-empty.tar"), ["blobs", "index.json", "manifest.json"]);
  A.docker25Empty = p("docker25-empty.tar");
  ctrd = await buildContainerdStore(img, p("containerd.tar"));
  A.containerd = p("containerd.tar");
  await buildCompressedDockerArchive(A.skDocker, p("gzip-layers.tar"), []);
  A.gzipLayers = p("gzip-layers.tar");
  await buildCompressedDockerArchive(A.skDocker, p("zstd-layers.tar"), [1]);
  A.zstdLayers = p("zstd-layers.tar");
});

after(() => {
  images?.remove();
  removeDir(tmp);
});

// ---- docker-archive ----------------------------------------------------------------------------------------

describe("docker-archive", () => {
  const single = ["skDocker", "podmanDocker", "docker"] as const;

  for (const name of single) {
    test(`${name}: synthesized Docker schema 2 manifest, original config, layers = diff_ids`, async (t) => {
      const file = need(t, name);
      if (file === undefined) return;
      await withSource(`docker-archive:${file}`, async (s) => {
        const { m, config } = await checkImage(s);
        assert.equal(m.synthesized, true);
        assert.equal(m.indexDigest, undefined);
        assert.equal(m.manifest.mediaType, MediaType.dockerManifest);
        assert.equal(m.manifest.config.mediaType, MediaType.dockerConfig);
        assert.equal(m.manifest.config.digest, multi.configDigest);
        assert.deepEqual(config, readBlob(A.layout ?? "", multi.configDigest));
        // Uncompressed layer files: their digests are the diff_ids.
        assert.deepEqual(
          m.manifest.layers.map((l) => [l.mediaType, l.digest]),
          multi.diffIds.map((d) => [MediaType.dockerLayer, d]),
        );
        // skopeo reads the same config and layer files out of the archive.
        assert.deepEqual(await skopeoRaw(`docker-archive:${file}`, true), config);
        const sk = JSON.parse((await skopeoRaw(`docker-archive:${file}`)).toString()) as {
          config: { digest: string };
          layers: { digest: string; size: number }[];
        };
        assert.equal(sk.config.digest, m.manifest.config.digest);
        assert.deepEqual(
          sk.layers.map((l) => [l.digest, l.size]),
          m.manifest.layers.map((l) => [l.digest, l.size]),
        );
        assert.equal(s.description, `docker-archive:${file}`);
        assert.equal(s.concurrency, 2);
      });
    });
  }

  test("the same image from skopeo, podman and docker archives gives one manifest digest", async (t) => {
    const files = single.map((n) => A[n]).filter((f): f is string => f !== undefined);
    if (files.length < 2) return t.skip("fewer than two archive producers available");
    const digests = new Set<string>();
    for (const f of files) {
      for (let i = 0; i < 2; i++)
        await withSource(`docker-archive:${f}`, async (s) => digests.add((await s.manifest(AMD64)).digest));
    }
    assert.equal(digests.size, 1, [...digests].join(" "));
  });

  test("podman save -m: select by tag (normalised), by @N; ambiguous and unknown names fail", async (t) => {
    const file = need(t, "podmanDockerM");
    if (file === undefined) return;
    const dup = readImage(A.layout ?? "", "dup");
    for (const ref of ["test/dup", "test/dup:latest", "docker.io/test/dup:latest", "@1"]) {
      await withSource(`docker-archive:${file}:${ref}`, async (s) => {
        const { m } = await checkImage(s);
        assert.equal(m.manifest.config.digest, dup.configDigest, ref);
        // dup repeats its first layer: both descriptors name the same file.
        assert.equal(m.manifest.layers[0]?.digest, m.manifest.layers[2]?.digest);
      });
    }
    await withSource(`docker-archive:${file}:@0`, async (s) =>
      assert.equal((await s.manifest(AMD64)).manifest.config.digest, multi.configDigest),
    );
    await rejects(
      openRef(`docker-archive:${file}`),
      "E_USAGE",
      new RegExp(esc(file)),
      /holds 2 images/,
      /@0 docker\.io\/test\/multi:latest; @1 docker\.io\/test\/dup:latest/,
    );
    await rejects(
      openRef(`docker-archive:${file}:test/nope`),
      "E_NOT_FOUND",
      /no image tagged docker\.io\/test\/nope:latest/,
    );
    await rejects(openRef(`docker-archive:${file}:@2`), "E_NOT_FOUND", /no image @2/);
  });

  test("docker save of two images: legacy <id>/layer.tar, repeated layer as a symlink", async (t) => {
    const file = need(t, "dockerM");
    if (file === undefined) return;
    const tar = await TarIndex.open(file);
    try {
      const links = [...tar.entries()].filter((e) => e.kind === "symlink");
      assert.ok(links.length > 0, "docker links the repeated layer to its first copy");
    } finally {
      await tar.close();
    }
    const dup = readImage(A.layout ?? "", "dup");
    await withSource(`docker-archive:${file}:test/dup:latest`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.manifest.config.digest, dup.configDigest);
      assert.deepEqual(
        m.manifest.layers.map((l) => l.digest),
        dup.diffIds,
      );
    });
    await withSource(`docker-archive:${file}:test/multi`, async (s) =>
      assert.equal((await s.manifest(AMD64)).manifest.config.digest, multi.configDigest),
    );
  });

  test("compressed layer files: gzip → Docker .tar.gzip, zstd → an OCI manifest", async (t) => {
    const gz = need(t, "gzipLayers");
    const zs = need(t, "zstdLayers");
    if (gz === undefined || zs === undefined) return;
    await withSource(`docker-archive:${gz}`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.manifest.mediaType, MediaType.dockerManifest);
      assert.deepEqual(
        m.manifest.layers.map((l) => l.mediaType),
        [MediaType.dockerLayerGzip, MediaType.dockerLayerGzip, MediaType.dockerLayerGzip],
      );
      assert.equal(m.synthesized, true);
    });
    await withSource(`docker-archive:${zs}`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.manifest.mediaType, MediaType.ociManifest);
      assert.equal(m.manifest.config.mediaType, MediaType.ociConfig);
      assert.deepEqual(
        m.manifest.layers.map((l) => l.mediaType),
        [MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.ociLayerGzip],
      );
    });
  });

  test("Docker 25+ archive: the real OCI manifest is served, not a synthesized one", async (t) => {
    const file = need(t, "docker25");
    if (file === undefined) return;
    await withSource(`docker-archive:${file}:test/multi`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.synthesized, undefined);
      assert.equal(m.manifest.mediaType, MediaType.ociManifest);
      assert.deepEqual(
        m.bytes,
        fs.readFileSync(path.join(`${file}.d`, "blobs", "sha256", m.digest.slice(7))),
      );
      assert.deepEqual(
        m.manifest.layers.map((l) => l.digest),
        multi.diffIds,
      );
    });
    // The same file is an OCI layout too: by tag, by containerd's full name, by a normalised name.
    for (const ref of ["latest", "docker.io/test/multi:latest", "test/multi"]) {
      await withSource(`oci-archive:${file}:${ref}`, async (s) => {
        const { m } = await checkImage(s);
        assert.equal(m.manifest.config.digest, multi.configDigest, ref);
      });
    }
  });

  test("Docker 25+ archive whose OCI manifest lists no layers (moby#47065): synthesized instead", async (t) => {
    const file = need(t, "docker25Empty");
    if (file === undefined) return;
    await withSource(`docker-archive:${file}`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.synthesized, true);
      assert.equal(m.manifest.layers.length, 3);
    });
  });

  test("containerd image store archive: manifest found through the nested index", async (t) => {
    const file = need(t, "containerd");
    if (file === undefined || ctrd === undefined) return;
    const dir = `${file}.d`;
    const { index, arm64 } = ctrd;
    await withSource(`docker-archive:${file}`, async (s) => {
      // The host platform does not matter: manifest.json names one image.
      const { m } = await checkImage(s, AMD64);
      assert.equal(m.synthesized, undefined);
      assert.equal(m.digest, arm64);
      assert.equal(m.indexDigest, index);
      assert.deepEqual(m.bytes, readBlob(dir, m.digest));
      assert.equal(m.manifest.layers[0]?.mediaType, MediaType.ociLayerGzip);
      const cfg = parseImageConfig(await collect(s.blob(m.manifest.config)), "config");
      assert.equal(cfg.architecture, "arm64");
    });
  });
});

// ---- oci-archive and oci: ----------------------------------------------------------------------------------

describe("oci-archive and oci layouts", () => {
  for (const [name, ref, tag] of [
    ["skOci", "", "multi"],
    ["skOci", ":latest", "multi"],
    ["skOciZstd", "", "zstd"],
    ["layout", ":multi", "multi"],
    ["layout", ":zstd", "zstd"],
  ] as const) {
    test(`${name}${ref}: the manifest and config skopeo reports, layers = diff_ids`, async (t) => {
      const file = need(t, name);
      if (file === undefined) return;
      const transport = name === "layout" ? "oci" : "oci-archive";
      const full = `${transport}:${file}${ref}`;
      await withSource(full, async (s) => {
        const { m, config } = await checkImage(s);
        assert.equal(m.synthesized, undefined);
        assert.deepEqual(m.bytes, await skopeoRaw(full));
        assert.deepEqual(config, await skopeoRaw(full, true));
        assert.equal(m.digest, tagDescriptor(A.layout ?? "", tag).digest);
        if (tag === "zstd") assert.ok(m.manifest.layers.every((l) => l.mediaType === MediaType.ociLayerZstd));
        assert.equal(s.description, full);
      });
    });
  }

  test("podman oci-archive: ref.name is a full name; tag, full and normalised forms all select it", async (t) => {
    const file = need(t, "podmanOci");
    if (file === undefined) return;
    for (const ref of ["", ":latest", ":docker.io/test/multi:latest", ":test/multi:latest", ":test/multi"]) {
      await withSource(`oci-archive:${file}${ref}`, async (s) => {
        const { m, config } = await checkImage(s);
        assert.deepEqual(config, await skopeoRaw(`oci-archive:${file}`, true), ref);
        assert.deepEqual(m.bytes, await skopeoRaw(`oci-archive:${file}`), ref);
      });
    }
    await rejects(
      openRef(`oci-archive:${file}:other`),
      "E_NOT_FOUND",
      /no image named "other"/,
      /docker\.io\/test\/multi:latest/,
    );
  });

  test("multi-platform index in an oci-archive: each platform, the index digest, no match", async (t) => {
    const file = need(t, "skOciAll");
    if (file === undefined) return;
    const { digest: indexDigest } = readIndex(A.layout ?? "", "multiarch");
    await withSource(`oci-archive:${file}:multiarch`, async (s) => {
      for (const [platform, tag] of [
        [AMD64, "multiarch-amd64"],
        [ARM64, "multiarch-arm64"],
        [ARMV7, "multiarch-armv7"],
        [{ os: "linux", architecture: "arm", variant: "v8" }, "multiarch-armv7"],
      ] as const) {
        const { m } = await checkImage(s, platform);
        assert.equal(m.digest, tagDescriptor(A.layout ?? "", tag).digest, tag);
        assert.equal(m.indexDigest, indexDigest);
      }
      await rejects(
        s.manifest({ os: "linux", architecture: "s390x" }),
        "E_NOT_FOUND",
        /linux\/s390x/,
        /linux\/arm64/,
      );
    });
  });

  test("nested indexes: index.json → index → index → platform manifests", async (t) => {
    const layoutSrc = need(t, "layout");
    if (layoutSrc === undefined) return;
    const dir = p("nested");
    await run("skopeo", ["copy", "--quiet", "--all", `oci:${layoutSrc}:multiarch`, `oci:${dir}:inner`]);
    const inner = tagDescriptor(dir, "inner");
    const middle = writeBlob(
      dir,
      MediaType.ociIndex,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [inner] }),
    );
    const outer = writeBlob(
      dir,
      MediaType.ociIndex,
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [{ ...middle, annotations: { note: "no platform" } }],
      }),
    );
    writeJson(path.join(dir, "index.json"), {
      schemaVersion: 2,
      manifests: [{ ...outer, annotations: { "org.opencontainers.image.ref.name": "nested" } }],
    });
    await withSource(`oci:${dir}:nested`, async (s) => {
      const { m } = await checkImage(s, ARM64);
      assert.equal(m.digest, tagDescriptor(layoutSrc, "multiarch-arm64").digest);
      assert.equal(m.indexDigest, outer.digest);
    });
    // The same layout as an oci-archive.
    await tarDir(dir, p("nested.tar"));
    await withSource(`oci-archive:${p("nested.tar")}`, async (s) => {
      const { m } = await checkImage(s, ARMV7);
      assert.equal(m.digest, tagDescriptor(layoutSrc, "multiarch-armv7").digest);
    });
  });

  test("index.json entries that differ only by platform are chosen between by platform", async (t) => {
    const layoutSrc = need(t, "layout");
    if (layoutSrc === undefined) return;
    const dir = p("flat");
    await run("skopeo", ["copy", "--quiet", "--all", `oci:${layoutSrc}:multiarch`, `oci:${dir}:x`]);
    const { index } = readIndex(dir, "x");
    // Platform manifests straight in index.json (attestation dropped), all tagged the same.
    const entries = index.manifests
      .filter((m) => m.platform !== undefined && m.platform.os !== "unknown")
      .map((m) => ({ ...m, annotations: { "org.opencontainers.image.ref.name": "same" } }));
    writeJson(path.join(dir, "index.json"), { schemaVersion: 2, manifests: entries });
    for (const ref of ["", ":same"]) {
      await withSource(`oci:${dir}${ref}`, async (s) => {
        const { m } = await checkImage(s, ARM64);
        assert.equal(m.digest, tagDescriptor(layoutSrc, "multiarch-arm64").digest);
        assert.equal(m.indexDigest, undefined);
      });
    }
  });

  test("a layout of several images: :@N, ambiguous without REF, unknown REF", async (t) => {
    const layout = need(t, "layout");
    if (layout === undefined) return;
    await rejects(
      openRef(`oci:${layout}`),
      "E_USAGE",
      new RegExp(esc(layout)),
      /holds \d+ images/,
      /@0 multi/,
    );
    await rejects(openRef(`oci:${layout}:nope`), "E_NOT_FOUND", /no image named "nope"/, /@1 zstd/);
    await rejects(openRef(`oci:${layout}:@99`), "E_NOT_FOUND", /no image @99/);
    await withSource(`oci:${layout}:@0`, async (s) =>
      assert.equal((await s.manifest(AMD64)).digest, tagDescriptor(layout, "multi").digest),
    );
  });
});

// ---- tar index -------------------------------------------------------------------------------------------

describe("tar index", () => {
  test("normalizeArchivePath", () => {
    assert.equal(normalizeArchivePath("./a//b/"), "a/b");
    assert.equal(normalizeArchivePath("a/../b"), "b");
    assert.equal(normalizeArchivePath("./"), "");
    assert.equal(normalizeArchivePath("../x"), undefined);
    assert.equal(normalizeArchivePath("a/../../x"), undefined);
    assert.equal(normalizeArchivePath("/etc/passwd"), undefined);
  });

  test("GNU and PAX long names, ./ prefixes, links inside the archive", async () => {
    const src = p("long-src");
    const deep = path.join("d".repeat(60), "e".repeat(60), "f".repeat(60));
    fs.mkdirSync(path.join(src, deep), { recursive: true });
    fs.writeFileSync(path.join(src, deep, "file.txt"), "deep content\n");
    fs.symlinkSync(path.join("..", "..", "e".repeat(60)), path.join(src, deep, "up"));
    fs.symlinkSync(deep, path.join(src, "alias"));
    fs.linkSync(path.join(src, deep, "file.txt"), path.join(src, "hard.txt"));
    for (const format of ["gnu", "posix"]) {
      const out = p(`long-${format}.tar`);
      await run("tar", [`--format=${format}`, "-C", src, "-cf", out, "."]);
      const tar = await TarIndex.open(out);
      try {
        const long = `${deep}/file.txt`;
        const e = tar.resolve(long);
        assert.equal(e.name, long);
        assert.equal((await tar.readAll(e, 100)).toString(), "deep content\n");
        // symlinked directory on the way, and a relative symlink climbing inside the archive
        assert.equal(tar.resolve("alias/file.txt").offset, e.offset);
        assert.equal(tar.resolve(`${deep}/up/${"f".repeat(60)}/file.txt`).offset, e.offset);
        // GNU tar stores the second name of a hard link as a link to the first
        assert.equal((await tar.readAll(tar.resolve("hard.txt"), 100)).toString(), "deep content\n");
        assert.equal(tar.lookup("nope"), undefined);
        await rejects(
          Promise.resolve().then(() => tar.resolve(deep)),
          "E_BAD_INPUT",
          /is a directory/,
        );
      } finally {
        await tar.close();
      }
    }
  });

  test("a name written twice: the last one counts", async () => {
    const out = p("dup-names.tar");
    fs.writeFileSync(
      out,
      rawTar([
        { name: "a", type: "file", content: "first" },
        { name: "./a", type: "file", content: "second" },
      ]),
    );
    const tar = await TarIndex.open(out);
    try {
      assert.equal(tar.size, 1);
      assert.equal((await tar.readAll(tar.resolve("a"), 10)).toString(), "second");
    } finally {
      await tar.close();
    }
  });

  test("payloads stream in bounded chunks, with progress and abort", async () => {
    const big = Buffer.alloc(3 * (1 << 20) + 12345, 7);
    const out = p("big.tar");
    fs.writeFileSync(out, rawTar([{ name: "big", type: "file", content: big }]));
    const tar = await TarIndex.open(out);
    try {
      const e = tar.resolve("big");
      let progress = 0;
      const sizes: number[] = [];
      for await (const c of tar.stream(e, { onBytes: (n) => (progress += n) })) sizes.push(c.length);
      assert.ok(sizes.every((n) => n <= 1 << 20));
      assert.equal(progress, big.length);
      assert.equal(await tar.digest(e), sha256(big));
      const ac = new AbortController();
      let chunks = 0;
      await assert.rejects(
        async () => {
          for await (const _ of tar.stream(e, { signal: ac.signal })) {
            chunks++;
            ac.abort();
          }
        },
        (err: unknown) => err instanceof Error && err.name === "AbortError",
      );
      assert.equal(chunks, 1);
    } finally {
      await tar.close();
    }
  });
});

// ---- broken input ----------------------------------------------------------------------------------------

describe("broken archives and layouts", () => {
  test("missing manifest.json", async () => {
    const f = rawDockerArchive(p("no-manifest.tar"), { withManifest: false });
    await rejects(openRef(`docker-archive:${f}`), "E_BAD_INPUT", new RegExp(esc(f)), /no manifest\.json/);
  });

  test("a Layers entry pointing at a missing file", async () => {
    const f = rawDockerArchive(p("missing-layer.tar"), { layers: ["gone/layer.tar"] });
    await rejects(
      openRef(`docker-archive:${f}`),
      "E_BAD_INPUT",
      new RegExp(esc(f)),
      /Layers\[0\]: "gone\/layer\.tar" is missing from the archive/,
    );
  });

  test("an entry named ../ (or absolute)", async () => {
    const f = rawDockerArchive(p("dotdot.tar"), { extra: [{ name: "../evil", type: "file", content: "x" }] });
    await rejects(
      openRef(`docker-archive:${f}`),
      "E_UNSAFE_PATH",
      new RegExp(esc(f)),
      /"\.\.\/evil".*outside the archive/,
    );
    const g = rawDockerArchive(p("absolute.tar"), {
      extra: [{ name: "/etc/evil", type: "file", content: "x" }],
    });
    await rejects(openRef(`docker-archive:${g}`), "E_UNSAFE_PATH", /"\/etc\/evil"/);
  });

  test("links escaping the archive, and loops", async () => {
    const cases: [string, RawTarEntry[], RegExp][] = [
      [
        "symlink-escape",
        [{ name: "l/layer.tar", type: "symlink", linkname: "../../etc/passwd" }],
        /symbolic link "l\/layer\.tar" → "\.\.\/\.\.\/etc\/passwd" points outside the archive/,
      ],
      [
        "symlink-absolute",
        [{ name: "l/layer.tar", type: "symlink", linkname: "/etc/passwd" }],
        /"\/etc\/passwd" is absolute/,
      ],
      [
        "symlink-loop",
        [
          { name: "l/layer.tar", type: "symlink", linkname: "other.tar" },
          { name: "l/other.tar", type: "symlink", linkname: "layer.tar" },
        ],
        /too many levels of symbolic links/,
      ],
      [
        "hardlink-escape",
        [{ name: "l/layer.tar", type: "hardlink", linkname: "../../etc/passwd" }],
        /hard link "l\/layer\.tar" → "\.\.\/\.\.\/etc\/passwd" points outside the archive/,
      ],
    ];
    for (const [name, extra, re] of cases) {
      const f = rawDockerArchive(p(`${name}.tar`), { layers: ["l/layer.tar"], extra, withLayer: false });
      await rejects(openRef(`docker-archive:${f}`), "E_UNSAFE_PATH", new RegExp(esc(f)), /Layers\[0\]/, re);
    }
    const c = rawDockerArchive(p("config-escape.tar"), { config: "../config.json" });
    await rejects(
      openRef(`docker-archive:${c}`),
      "E_UNSAFE_PATH",
      /Config: "\.\.\/config\.json" points outside/,
    );
  });

  test("a good podman-style symlinked layer resolves", async () => {
    const layer = rawTar([{ name: "hello", type: "file", content: "hello\n" }]);
    const f = rawDockerArchive(p("symlinked-ok.tar"), {
      layers: ["0123/layer.tar"],
      withLayer: false,
      extra: [
        { name: `${sha256(layer).slice(7)}.tar`, type: "file", content: layer },
        { name: "0123/layer.tar", type: "symlink", linkname: `../${sha256(layer).slice(7)}.tar` },
      ],
    });
    await withSource(`docker-archive:${f}`, async (s) => {
      const { m } = await checkImage(s);
      assert.equal(m.manifest.layers[0]?.digest, sha256(layer));
    });
  });

  test("truncated archives", async (t) => {
    const file = need(t, "skDocker");
    if (file === undefined) return;
    const cut = p("truncated.tar");
    fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, 512 + 20000));
    await rejects(
      openRef(`docker-archive:${cut}`),
      "E_BAD_INPUT",
      new RegExp(esc(cut)),
      /truncated tar: EOF at offset 20512 inside the payload of "[0-9a-f]{64}\.tar"/,
    );
    const half = p("half-header.tar");
    fs.writeFileSync(half, fs.readFileSync(file).subarray(0, 300));
    await rejects(openRef(`oci-archive:${half}`), "E_BAD_INPUT", /truncated tar/);
  });

  test("not a tar, a compressed tar, a missing file, the wrong transport", async (t) => {
    const junk = p("junk.tar");
    fs.writeFileSync(junk, Buffer.from("this is not a tar archive at all\n".repeat(40)));
    await rejects(openRef(`docker-archive:${junk}`), "E_BAD_INPUT", /not a tar archive/);
    const file = need(t, "skDocker");
    if (file === undefined) return;
    const gz = p("compressed.tar.gz");
    fs.writeFileSync(gz, gzipSync(fs.readFileSync(file)));
    await rejects(openRef(`docker-archive:${gz}`), "E_UNSUPPORTED", /gzip-compressed/, /decompress it first/);
    await rejects(openRef(`docker-archive:${p("absent.tar")}`), "E_NOT_FOUND", /absent\.tar: no such file/);
    await rejects(openRef(`oci:${p("absent")}`), "E_NOT_FOUND", /no such directory/);
    await rejects(openRef(`oci-archive:${file}`), "E_BAD_INPUT", /no index\.json/, /use docker-archive:/);
    const oci = need(t, "skOci");
    if (oci === undefined) return;
    await rejects(openRef(`docker-archive:${oci}`), "E_BAD_INPUT", /no manifest\.json/, /use oci-archive:/);
    await rejects(openRef(`oci:${oci}`), "E_USAGE", /not a directory/);
    await rejects(openRef(`oci-archive:${tmp}`), "E_USAGE", /is a directory; .*use oci:/);
  });

  test("malformed manifest.json and a layer count that does not match the config", async () => {
    const bad = p("bad-json.tar");
    fs.writeFileSync(bad, rawTar([{ name: "manifest.json", type: "file", content: "[{" }]));
    await rejects(openRef(`docker-archive:${bad}`), "E_BAD_INPUT", /manifest\.json is not valid JSON/);
    const f = rawDockerArchive(p("count.tar"), { layers: ["layer.tar", "layer.tar"] });
    await rejects(
      openRef(`docker-archive:${f}`),
      "E_BAD_INPUT",
      /lists 2 layers but its config config\.json has 1 diff_ids/,
    );
  });

  test("layout blobs: a symlink out of the layout, a missing blob, a corrupt manifest", async (t) => {
    const layoutSrc = need(t, "layout");
    if (layoutSrc === undefined) return;
    const dir = p("evil-layout");
    await run("skopeo", ["copy", "--quiet", `oci:${layoutSrc}:multi`, `oci:${dir}:multi`]);
    const img = readImage(dir, "multi");
    const outside = p("outside-config.json");
    fs.copyFileSync(blobPath(dir, img.configDigest), outside);
    fs.rmSync(blobPath(dir, img.configDigest));
    fs.symlinkSync(outside, blobPath(dir, img.configDigest));
    await withSource(`oci:${dir}`, async (s) => {
      const m = await s.manifest(AMD64);
      await rejects(collect(s.blob(m.manifest.config)), "E_UNSAFE_PATH", /outside the layout/);
      const layer = m.manifest.layers[1];
      assert.ok(layer !== undefined);
      fs.rmSync(blobPath(dir, layer.digest));
      await rejects(collect(s.blob(layer)), "E_NOT_FOUND", new RegExp(`blob ${layer.digest} is missing`));
      await rejects(
        collect(s.blob({ ...m.manifest.config, digest: `sha256:${"0".repeat(64)}` })),
        "E_NOT_FOUND",
      );
    });
    const mf = blobPath(dir, img.manifestDigest);
    const bytes = fs.readFileSync(mf);
    fs.writeFileSync(mf, Buffer.concat([bytes.subarray(0, -1), Buffer.from(" ")]));
    await withSource(`oci:${dir}`, (s) =>
      rejects(s.manifest(AMD64), "E_CORRUPT", new RegExp(`blob ${img.manifestDigest} does not match`)),
    );
  });
});
