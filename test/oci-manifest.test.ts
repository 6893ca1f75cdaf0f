// Manifests, indexes, configs and platforms (src/oci/manifest.ts, src/oci/media-types.ts), on documents shaped
// like the ones Docker Hub, buildx, skopeo and podman serve: OCI indexes with attestation entries, Docker manifest
// lists, Docker v2s2 and OCI manifests with annotations and foreign-layer urls, Docker and BuildKit configs.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { StratumError, type ErrorCode } from "../src/errors.ts";
import {
  checkConfigMatchesManifest,
  detectManifestMediaType,
  formatPlatform,
  hostPlatform,
  isAttestation,
  normalizePlatform,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  selectManifest,
  type HostProbe,
  type ImageIndex,
  type ImageManifest,
} from "../src/oci/manifest.ts";
import { layerCompression, MANIFEST_ACCEPT, MediaType } from "../src/oci/media-types.ts";

/** A distinct, valid sha256 digest per name. */
function dg(name: string): string {
  return "sha256:" + createHash("sha256").update(name).digest("hex");
}

function throwsCode(fn: () => unknown, code: ErrorCode, ...mentions: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof StratumError, String(e));
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
    return true;
  });
}

function asIndex(m: ImageManifest | ImageIndex): ImageIndex {
  assert.equal(m.kind, "index");
  return m;
}

function asManifest(m: ImageManifest | ImageIndex): ImageManifest {
  assert.equal(m.kind, "manifest");
  return m;
}

// ---- samples ------------------------------------------------------------------------------------------------

/** An official image on Docker Hub today: an OCI index built by buildx, one attestation per platform. */
function hubOciIndex(): string {
  const platforms = [
    { architecture: "amd64", os: "linux" },
    { architecture: "arm", os: "linux", variant: "v5" },
    { architecture: "arm", os: "linux", variant: "v7" },
    { architecture: "arm64", os: "linux", variant: "v8" },
    { architecture: "386", os: "linux" },
    { architecture: "ppc64le", os: "linux" },
    { architecture: "s390x", os: "linux" },
  ];
  const manifests: object[] = [];
  for (const p of platforms) {
    const key = formatPlatform(p);
    manifests.push({
      annotations: {
        "com.docker.official-images.bashbrew.arch": key,
        "org.opencontainers.image.base.name": "scratch",
        "org.opencontainers.image.created": "2024-06-13T00:00:00Z",
        "org.opencontainers.image.revision": "0123abcd",
        "org.opencontainers.image.source": "https://github.com/debuerreotype/docker-debian-artifacts.git",
        "org.opencontainers.image.url": "https://hub.docker.com/_/debian",
        "org.opencontainers.image.version": "bookworm",
      },
      digest: dg(`image ${key}`),
      mediaType: MediaType.ociManifest,
      platform: p,
      size: 1017,
    });
    manifests.push({
      annotations: {
        "com.docker.official-images.bashbrew.arch": key,
        "vnd.docker.reference.digest": dg(`image ${key}`),
        "vnd.docker.reference.type": "attestation-manifest",
      },
      digest: dg(`attestation ${key}`),
      mediaType: MediaType.ociManifest,
      platform: { architecture: "unknown", os: "unknown" },
      size: 840,
    });
  }
  return JSON.stringify({ manifests, mediaType: MediaType.ociIndex, schemaVersion: 2 });
}

/** A Docker manifest list, as registries served multi-arch images before OCI indexes. */
const DOCKER_LIST = JSON.stringify(
  {
    schemaVersion: 2,
    mediaType: MediaType.dockerManifestList,
    manifests: [
      {
        mediaType: MediaType.dockerManifest,
        size: 528,
        digest: dg("list amd64"),
        platform: { architecture: "amd64", os: "linux" },
      },
      {
        mediaType: MediaType.dockerManifest,
        size: 528,
        digest: dg("list arm v6"),
        platform: { architecture: "arm", os: "linux", variant: "v6" },
      },
      {
        mediaType: MediaType.dockerManifest,
        size: 528,
        digest: dg("list arm64"),
        platform: { architecture: "arm64", os: "linux", variant: "v8" },
      },
      {
        mediaType: MediaType.dockerManifest,
        size: 2063,
        digest: dg("list windows"),
        platform: { architecture: "amd64", os: "windows", "os.version": "10.0.17763.5936" },
      },
    ],
  },
  null,
  3,
);

/** A Docker v2 schema 2 image manifest (`docker push`, distribution 2.x). */
const DOCKER_MANIFEST = JSON.stringify(
  {
    schemaVersion: 2,
    mediaType: MediaType.dockerManifest,
    config: { mediaType: MediaType.dockerConfig, size: 1463, digest: dg("docker config") },
    layers: [
      { mediaType: MediaType.dockerLayerGzip, size: 29126484, digest: dg("layer 1") },
      { mediaType: MediaType.dockerLayerGzip, size: 185, digest: dg("layer 2") },
    ],
  },
  null,
  3,
);

/** An OCI manifest as skopeo/podman write it: no mediaType field, annotations, a zstd layer. */
const SKOPEO_OCI_MANIFEST = JSON.stringify({
  schemaVersion: 2,
  config: { mediaType: MediaType.ociConfig, digest: dg("oci config"), size: 2351 },
  layers: [
    { mediaType: MediaType.ociLayerGzip, digest: dg("oci layer 1"), size: 3408729 },
    {
      mediaType: MediaType.ociLayerZstd,
      digest: dg("oci layer 2"),
      size: 1205,
      annotations: {
        "io.github.containers.zstd-chunked.manifest-checksum": dg("toc"),
        "io.github.containers.zstd-chunked.manifest-position": "1041:126:420:1",
      },
    },
  ],
  annotations: {
    "org.opencontainers.image.base.digest": dg("base"),
    "org.opencontainers.image.base.name": "",
  },
});

/** A Windows image manifest with a foreign layer: valid, with `urls`, but not pullable by us. */
const FOREIGN_MANIFEST = JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.dockerManifest,
  config: { mediaType: MediaType.dockerConfig, size: 1111, digest: dg("win config") },
  layers: [
    {
      mediaType: MediaType.dockerForeignLayerGzip,
      size: 1732018400,
      digest: dg("win base"),
      urls: ["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + dg("win base")],
    },
    { mediaType: MediaType.dockerLayerGzip, size: 1024, digest: dg("win top") },
  ],
});

/** A schema 1 manifest (signed), as old registries still serve for ancient tags. */
const SCHEMA1 = JSON.stringify({
  schemaVersion: 1,
  name: "library/hello-world",
  tag: "latest",
  architecture: "amd64",
  fsLayers: [{ blobSum: dg("s1") }],
  history: [{ v1Compatibility: "{}" }],
  signatures: [{ header: {}, signature: "x", protected: "y" }],
});

/** A Docker config as `docker build` (classic builder) wrote it: nulls and container_config. */
const DOCKER_CONFIG = JSON.stringify({
  architecture: "amd64",
  config: {
    Hostname: "",
    Domainname: "",
    User: "",
    AttachStdin: false,
    Tty: false,
    Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    Cmd: ["bash"],
    Image: dg("parent"),
    Volumes: null,
    WorkingDir: "",
    Entrypoint: null,
    OnBuild: null,
    Labels: null,
  },
  container: "4d6ba1b1a1b8",
  container_config: { Cmd: ["/bin/sh", "-c", '#(nop) CMD ["bash"]'] },
  created: "2024-06-13T00:20:53.142Z",
  docker_version: "20.10.23",
  history: [
    { created: "2024-06-13T00:20:52.8Z", created_by: "/bin/sh -c #(nop) ADD file:abc in / " },
    { created: "2024-06-13T00:20:53.1Z", created_by: '/bin/sh -c #(nop)  CMD ["bash"]', empty_layer: true },
    { created: "2024-06-13T00:21:00Z", created_by: "/bin/sh -c echo hi > /hi" },
  ],
  os: "linux",
  rootfs: { type: "layers", diff_ids: [dg("diff 1"), dg("diff 2")] },
});

/** A BuildKit OCI config for arm64. */
const BUILDKIT_CONFIG = JSON.stringify({
  architecture: "arm64",
  variant: "v8",
  os: "linux",
  created: "2024-05-01T10:00:00Z",
  config: {
    User: "app",
    ExposedPorts: { "8080/tcp": {}, "53/udp": {} },
    Env: ["PATH=/usr/bin:/bin", "APP_HOME=/srv"],
    Entrypoint: ["/usr/bin/tini", "--"],
    Cmd: ["/srv/app", "--serve"],
    Volumes: { "/data": {} },
    WorkingDir: "/srv",
    Labels: { "org.opencontainers.image.title": "app" },
    StopSignal: "SIGTERM",
    ArgsEscaped: true,
  },
  rootfs: { type: "layers", diff_ids: [dg("bk 1")] },
  history: [
    {
      created: "2024-05-01T09:00:00Z",
      created_by: "ADD rootfs.tar.gz / # buildkit",
      comment: "buildkit.dockerfile.v0",
    },
    { created_by: "ENV APP_HOME=/srv", comment: "buildkit.dockerfile.v0", empty_layer: true },
  ],
});

// ---- tests --------------------------------------------------------------------------------------------------

describe("media types", () => {
  test("the Accept header lists index and manifest types, OCI first", () => {
    assert.equal(
      MANIFEST_ACCEPT,
      "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
        "application/vnd.docker.distribution.manifest.list.v2+json, " +
        "application/vnd.docker.distribution.manifest.v2+json",
    );
  });

  test("layer compression from the media type; foreign, encrypted and unknown layers are unsupported", () => {
    assert.equal(layerCompression("application/vnd.oci.image.layer.v1.tar", "l"), "none");
    assert.equal(layerCompression("application/vnd.oci.image.layer.v1.tar+gzip", "l"), "gzip");
    assert.equal(layerCompression("application/vnd.oci.image.layer.v1.tar+zstd", "l"), "zstd");
    assert.equal(layerCompression("application/vnd.docker.image.rootfs.diff.tar.gzip", "l"), "gzip");
    assert.equal(layerCompression("application/vnd.docker.image.rootfs.diff.tar", "l"), "none");
    throwsCode(
      () => layerCompression("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "layer 0"),
      "E_UNSUPPORTED",
      "layer 0",
      "foreign",
    );
    throwsCode(
      () => layerCompression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "l"),
      "E_UNSUPPORTED",
      "non-distributable",
    );
    throwsCode(
      () => layerCompression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "l"),
      "E_UNSUPPORTED",
      "encrypted",
    );
    throwsCode(
      () => layerCompression("application/vnd.cncf.helm.chart.content.v1.tar+gzip", "l"),
      "E_UNSUPPORTED",
      "helm",
    );
  });
});

describe("manifests and indexes", () => {
  test("Docker Hub's OCI index: entries, platforms, annotations, attestations", () => {
    const index = asIndex(parseManifest(hubOciIndex(), MediaType.ociIndex, "debian:bookworm"));
    assert.equal(index.mediaType, MediaType.ociIndex);
    assert.equal(index.manifests.length, 14);
    const arm64 = index.manifests[6];
    assert.deepEqual(arm64.platform, { os: "linux", architecture: "arm64", variant: "v8" });
    assert.equal(arm64.annotations?.["org.opencontainers.image.version"], "bookworm");
    assert.equal(arm64.size, 1017);
    assert.equal(index.manifests.filter(isAttestation).length, 7);
    assert.equal(isAttestation(index.manifests[0]), false);
  });

  test("Docker manifest list with a Windows entry", () => {
    const list = asIndex(parseManifest(DOCKER_LIST, MediaType.dockerManifestList, "list"));
    assert.equal(list.mediaType, MediaType.dockerManifestList);
    assert.deepEqual(list.manifests[3].platform, {
      os: "windows",
      architecture: "amd64",
      osVersion: "10.0.17763.5936",
    });
  });

  test("Docker v2s2, skopeo's OCI manifest without mediaType, foreign layers with urls", () => {
    const d = asManifest(parseManifest(DOCKER_MANIFEST, MediaType.dockerManifest, "m"));
    assert.equal(d.mediaType, MediaType.dockerManifest);
    assert.deepEqual(d.config, {
      mediaType: MediaType.dockerConfig,
      size: 1463,
      digest: dg("docker config"),
    });
    assert.deepEqual(
      d.layers.map((l) => [l.digest, l.size]),
      [
        [dg("layer 1"), 29126484],
        [dg("layer 2"), 185],
      ],
    );
    const o = asManifest(parseManifest(SKOPEO_OCI_MANIFEST, undefined, "layout manifest"));
    assert.equal(o.mediaType, MediaType.ociManifest, "detected from the content");
    assert.equal(o.annotations?.["org.opencontainers.image.base.name"], "");
    assert.equal(
      o.layers[1].annotations?.["io.github.containers.zstd-chunked.manifest-position"],
      "1041:126:420:1",
    );
    assert.deepEqual(
      o.layers.map((l) => layerCompression(l.mediaType, l.digest)),
      ["gzip", "zstd"],
    );
    const f = asManifest(parseManifest(FOREIGN_MANIFEST, MediaType.dockerManifest, "win"));
    assert.deepEqual(f.layers[0].urls, [
      "https://mcr.microsoft.com/v2/windows/servercore/blobs/" + dg("win base"),
    ]);
    throwsCode(() => layerCompression(f.layers[0].mediaType, "win layer 0"), "E_UNSUPPORTED", "win layer 0");
  });

  test("media type detection: declared, missing, generic, conflicting", () => {
    assert.equal(detectManifestMediaType(DOCKER_MANIFEST, undefined, "m"), MediaType.dockerManifest);
    assert.equal(detectManifestMediaType(DOCKER_LIST, "application/json", "m"), MediaType.dockerManifestList);
    assert.equal(detectManifestMediaType(SKOPEO_OCI_MANIFEST, "", "m"), MediaType.ociManifest);
    const bare = JSON.stringify({ schemaVersion: 2, manifests: [] });
    assert.equal(detectManifestMediaType(bare, "application/octet-stream", "m"), MediaType.ociIndex);
    assert.equal(
      detectManifestMediaType(
        Buffer.from(SKOPEO_OCI_MANIFEST),
        `${MediaType.ociManifest}; charset=utf-8`,
        "m",
      ),
      MediaType.ociManifest,
    );
    assert.equal(
      detectManifestMediaType(SKOPEO_OCI_MANIFEST, "Application/VND.oci.image.manifest.v1+json", "m"),
      MediaType.ociManifest,
    );
    throwsCode(
      () => detectManifestMediaType(DOCKER_MANIFEST, MediaType.ociManifest, "quay.io/a/b manifest"),
      "E_BAD_INPUT",
      "quay.io/a/b manifest",
      MediaType.dockerManifest,
    );
    throwsCode(
      () => detectManifestMediaType(DOCKER_MANIFEST, "application/vnd.oci.artifact.manifest.v1+json", "m"),
      "E_UNSUPPORTED",
    );
    throwsCode(
      () => detectManifestMediaType(JSON.stringify({ schemaVersion: 2 }), undefined, "m"),
      "E_BAD_INPUT",
      "neither",
    );
  });

  test("schema 1 is unsupported, by Content-Type or by content", () => {
    throwsCode(() => parseManifest(SCHEMA1, undefined, "old:tag"), "E_UNSUPPORTED", "old:tag", "schema 1");
    throwsCode(() => parseManifest(SCHEMA1, MediaType.dockerSchema1SignedManifest, "old"), "E_UNSUPPORTED");
    throwsCode(() => parseManifest(SCHEMA1, "application/json", "old"), "E_UNSUPPORTED", "schema 1");
  });

  test("malformed documents are E_BAD_INPUT naming the field", () => {
    const m = JSON.parse(DOCKER_MANIFEST) as Record<string, unknown> & {
      config: Record<string, unknown>;
      layers: Record<string, unknown>[];
    };
    const variant = (edit: (x: typeof m) => void): string => {
      const copy = structuredClone(m);
      edit(copy);
      return JSON.stringify(copy);
    };
    const cases: [string, string][] = [
      [variant((x) => (x.layers[1].digest = "sha256:abc")), "m.layers[1].digest"],
      [variant((x) => (x.layers[0].digest = dg("x").toUpperCase())), "m.layers[0].digest"],
      [variant((x) => (x.layers[0].size = -1)), "m.layers[0].size"],
      [variant((x) => (x.layers[0].size = 1.5)), "m.layers[0].size"],
      [variant((x) => (x.layers[0].size = 2 ** 53)), "m.layers[0].size"],
      [variant((x) => (x.layers[0].size = "12")), "m.layers[0].size"],
      [variant((x) => delete x.layers[0].mediaType), "m.layers[0].mediaType"],
      [variant((x) => (x.layers[0].mediaType = "not a type")), "m.layers[0].mediaType"],
      [variant((x) => (x.layers[0].urls = "https://x")), "m.layers[0].urls"],
      [variant((x) => (x.layers[0].annotations = { a: 1 })), "m.layers[0].annotations"],
      [variant((x) => delete (x as Record<string, unknown>).config), "m.config"],
      [variant((x) => (x.layers = {} as never)), "m.layers"],
      [variant((x) => (x.schemaVersion = 3)), "m.schemaVersion"],
      ["[1,2]", "m"],
      ["{not json", "m: not valid JSON"],
    ];
    for (const [doc, mention] of cases)
      throwsCode(() => parseManifest(doc, undefined, "m"), "E_BAD_INPUT", mention);
    throwsCode(
      () =>
        parseManifest(
          JSON.stringify({
            schemaVersion: 2,
            manifests: [
              { mediaType: MediaType.ociManifest, digest: dg("a"), size: 1, platform: { os: "linux" } },
            ],
          }),
          undefined,
          "i",
        ),
      "E_BAD_INPUT",
      "i.manifests[0].platform.architecture",
    );
  });
});

describe("image configs", () => {
  test("a Docker config: nulls read as absent, history with empty layers", () => {
    const c = parseImageConfig(DOCKER_CONFIG, "docker config");
    assert.equal(c.architecture, "amd64");
    assert.equal(c.os, "linux");
    assert.deepEqual(c.config, {
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      cmd: ["bash"],
      volumes: [],
      exposedPorts: [],
      labels: {},
    });
    assert.deepEqual(c.diffIds, [dg("diff 1"), dg("diff 2")]);
    assert.deepEqual(
      c.history.map((h) => h.emptyLayer),
      [false, true, false],
    );
    assert.equal(c.history[1].createdBy, '/bin/sh -c #(nop)  CMD ["bash"]');
    const m = asManifest(parseManifest(DOCKER_MANIFEST, undefined, "m"));
    checkConfigMatchesManifest(m, c, "docker image");
  });

  test("a BuildKit OCI config: every exec field", () => {
    const c = parseImageConfig(Buffer.from(BUILDKIT_CONFIG), "bk");
    assert.equal(c.variant, "v8");
    assert.equal(c.created, "2024-05-01T10:00:00Z");
    assert.deepEqual(c.config, {
      user: "app",
      env: ["PATH=/usr/bin:/bin", "APP_HOME=/srv"],
      entrypoint: ["/usr/bin/tini", "--"],
      cmd: ["/srv/app", "--serve"],
      workingDir: "/srv",
      volumes: ["/data"],
      exposedPorts: ["8080/tcp", "53/udp"],
      labels: { "org.opencontainers.image.title": "app" },
      stopSignal: "SIGTERM",
    });
    assert.deepEqual(c.history[0], {
      created: "2024-05-01T09:00:00Z",
      createdBy: "ADD rootfs.tar.gz / # buildkit",
      comment: "buildkit.dockerfile.v0",
      emptyLayer: false,
    });
  });

  test("the config must list one diff_id per manifest layer", () => {
    const m = asManifest(parseManifest(DOCKER_MANIFEST, undefined, "m"));
    const c = parseImageConfig(BUILDKIT_CONFIG, "bk");
    throwsCode(
      () => checkConfigMatchesManifest(m, c, "app:1"),
      "E_BAD_INPUT",
      "app:1",
      "2 layers",
      "1 diff_ids",
    );
  });

  test("malformed configs", () => {
    const base = JSON.parse(BUILDKIT_CONFIG) as Record<string, unknown> & {
      rootfs: Record<string, unknown>;
      config: Record<string, unknown>;
    };
    const variant = (edit: (x: typeof base) => void): string => {
      const copy = structuredClone(base);
      edit(copy);
      return JSON.stringify(copy);
    };
    const cases: [string, string][] = [
      [variant((x) => (x.rootfs.type = "layered")), "c.rootfs.type"],
      [variant((x) => delete (x as Record<string, unknown>).rootfs), "c.rootfs"],
      [variant((x) => (x.rootfs.diff_ids = ["sha256:xyz"])), "c.rootfs.diff_ids[0]"],
      [variant((x) => (x.rootfs.diff_ids = "sha256:xyz")), "c.rootfs.diff_ids"],
      [variant((x) => delete x.architecture), "c.architecture"],
      [variant((x) => (x.os = 7)), "c.os"],
      [variant((x) => (x.config.Env = "A=1")), "c.config.Env"],
      [variant((x) => (x.config.Cmd = [1])), "c.config.Cmd"],
      [variant((x) => (x.config.Volumes = ["/data"])), "c.config.Volumes"],
      [variant((x) => (x.config.Labels = { a: null })), "c.config.Labels"],
      [variant((x) => (x.history = [{ empty_layer: "yes" }])), "c.history[0].empty_layer"],
    ];
    for (const [doc, mention] of cases) throwsCode(() => parseImageConfig(doc, "c"), "E_BAD_INPUT", mention);
  });
});

describe("platforms", () => {
  test("parse --platform values, normalized", () => {
    assert.deepEqual(parsePlatform("linux/amd64"), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("linux/arm/v7"), { os: "linux", architecture: "arm", variant: "v7" });
    assert.deepEqual(parsePlatform("linux/arm"), { os: "linux", architecture: "arm", variant: "v7" });
    assert.deepEqual(parsePlatform("linux/arm/6"), { os: "linux", architecture: "arm", variant: "v6" });
    assert.deepEqual(parsePlatform("arm64"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("Linux/x86_64"), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/aarch64"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("linux/amd64/v3"), { os: "linux", architecture: "amd64", variant: "v3" });
    for (const bad of ["", "linux/", "linux/arm/v7/x", "linux amd64", "/amd64"])
      throwsCode(() => parsePlatform(bad), "E_USAGE", `"${bad}"`);
    assert.equal(formatPlatform(parsePlatform("linux/arm/v6")), "linux/arm/v6");
    assert.deepEqual(normalizePlatform({ os: "linux", architecture: "armhf" }), {
      os: "linux",
      architecture: "arm",
      variant: "v7",
    });
    assert.deepEqual(normalizePlatform({ os: "linux", architecture: "amd64", variant: "v1" }), {
      os: "linux",
      architecture: "amd64",
    });
  });

  test("this machine's platform from Node's arch", () => {
    const cases: [HostProbe, string][] = [
      [{ arch: "x64", endianness: "LE" }, "linux/amd64"],
      [{ arch: "arm64", endianness: "LE" }, "linux/arm64"],
      [{ arch: "arm", endianness: "LE", armVersion: "6" }, "linux/arm/v6"],
      [{ arch: "arm", endianness: "LE" }, "linux/arm/v7"],
      [{ arch: "ia32", endianness: "LE" }, "linux/386"],
      [{ arch: "ppc64", endianness: "LE" }, "linux/ppc64le"],
      [{ arch: "ppc64", endianness: "BE" }, "linux/ppc64"],
      [{ arch: "s390x", endianness: "BE" }, "linux/s390x"],
      [{ arch: "riscv64", endianness: "LE" }, "linux/riscv64"],
    ];
    for (const [probe, want] of cases) assert.equal(formatPlatform(hostPlatform(probe)), want, probe.arch);
    throwsCode(
      () => hostPlatform({ arch: "sparc", endianness: "BE" }),
      "E_UNSUPPORTED",
      "sparc",
      "--platform",
    );
    const expected = { x64: "amd64", arm64: "arm64" }[process.arch as "x64" | "arm64"];
    if (expected !== undefined) assert.equal(hostPlatform().architecture, expected);
    assert.equal(hostPlatform().os, "linux");
  });

  test("select from Docker Hub's index: variants, compatibility, attestations skipped", () => {
    const index = asIndex(parseManifest(hubOciIndex(), undefined, "debian"));
    const pick = (p: string): string => selectManifest(index, parsePlatform(p), "debian").digest;
    assert.equal(pick("linux/amd64"), dg("image linux/amd64"));
    assert.equal(pick("linux/arm64"), dg("image linux/arm64/v8"), "arm64 ≡ arm64/v8");
    assert.equal(pick("linux/arm64/v8"), dg("image linux/arm64/v8"));
    assert.equal(pick("linux/arm/v7"), dg("image linux/arm/v7"));
    assert.equal(pick("linux/arm"), dg("image linux/arm/v7"));
    assert.equal(pick("linux/arm/v6"), dg("image linux/arm/v5"), "v6 runs v5 when there is no v6");
    assert.equal(pick("linux/386"), dg("image linux/386"));
    throwsCode(
      () => pick("linux/riscv64"),
      "E_NOT_FOUND",
      "debian: no image for linux/riscv64; available: linux/amd64, linux/arm/v5, linux/arm/v7, linux/arm64, " +
        "linux/386, linux/ppc64le, linux/s390x",
    );
    throwsCode(() => pick("unknown/unknown"), "E_NOT_FOUND", "available");
    throwsCode(() => pick("windows/amd64"), "E_NOT_FOUND");
  });

  test("select prefers the exact variant, then the closest older one, or no variant", () => {
    const entry = (name: string, platform?: Record<string, string>): object => ({
      mediaType: MediaType.ociManifest,
      digest: dg(name),
      size: 1,
      ...(platform !== undefined && { platform }),
    });
    const index = (...entries: object[]): ImageIndex =>
      asIndex(
        parseManifest(JSON.stringify({ schemaVersion: 2, manifests: entries }), MediaType.ociIndex, "i"),
      );
    const amd = index(
      entry("v1", { os: "linux", architecture: "amd64" }),
      entry("v3", { os: "linux", architecture: "amd64", variant: "v3" }),
    );
    assert.equal(selectManifest(amd, parsePlatform("linux/amd64/v3"), "i").digest, dg("v3"));
    assert.equal(selectManifest(amd, parsePlatform("linux/amd64/v4"), "i").digest, dg("v3"), "closest older");
    assert.equal(selectManifest(amd, parsePlatform("linux/amd64"), "i").digest, dg("v1"));
    assert.equal(
      selectManifest(amd, parsePlatform("linux/amd64/v2"), "i").digest,
      dg("v1"),
      "v3 is not runnable",
    );
    const arm = index(
      entry("arm v5", { os: "linux", architecture: "arm", variant: "v5" }),
      entry("arm v6", { os: "linux", architecture: "arm", variant: "v6" }),
      entry("arm any", { os: "linux", architecture: "arm" }),
      entry("arm64 plain", { os: "linux", architecture: "arm64" }),
    );
    assert.equal(selectManifest(arm, parsePlatform("linux/arm/v6"), "i").digest, dg("arm v6"));
    assert.equal(
      selectManifest(arm, parsePlatform("linux/arm/v7"), "i").digest,
      dg("arm any"),
      "v7 is the default",
    );
    assert.equal(
      selectManifest(arm, parsePlatform("linux/arm/v8"), "i").digest,
      dg("arm any"),
      "an arm entry without variant is v7, the closest older one",
    );
    const amd2 = index(
      entry("plain", { os: "linux", architecture: "amd64" }),
      entry("v2", { os: "linux", architecture: "amd64", variant: "v2" }),
    );
    assert.equal(selectManifest(amd2, parsePlatform("linux/amd64/v3"), "i").digest, dg("v2"), "v2 beats v1");
    const riscv = index(
      entry("riscv plain", { os: "linux", architecture: "riscv64" }),
      entry("riscv rva23", { os: "linux", architecture: "riscv64", variant: "rva23" }),
    );
    assert.equal(selectManifest(riscv, parsePlatform("linux/riscv64/rva23"), "i").digest, dg("riscv rva23"));
    assert.equal(selectManifest(riscv, parsePlatform("linux/riscv64/rva20"), "i").digest, dg("riscv plain"));
    assert.equal(selectManifest(riscv, parsePlatform("linux/riscv64"), "i").digest, dg("riscv plain"));
    assert.equal(selectManifest(arm, parsePlatform("linux/arm64/v8"), "i").digest, dg("arm64 plain"));
    // Nested indexes and artifacts are skipped; an entry naming no platform is the last resort.
    const odd = index(
      {
        mediaType: MediaType.ociIndex,
        digest: dg("nested"),
        size: 1,
        platform: { os: "linux", architecture: "amd64" },
      },
      entry("no platform"),
    );
    assert.equal(selectManifest(odd, parsePlatform("linux/amd64"), "i").digest, dg("no platform"));
    // An attestation is skipped by its annotation even when it names a real platform.
    const attested = index(
      {
        ...entry("attestation", { os: "linux", architecture: "amd64" }),
        annotations: { "vnd.docker.reference.type": "attestation-manifest" },
      },
      entry("image", { os: "linux", architecture: "amd64" }),
    );
    assert.equal(isAttestation(attested.manifests[0]), true);
    assert.equal(selectManifest(attested, parsePlatform("linux/amd64"), "i").digest, dg("image"));
    throwsCode(
      () => selectManifest(index(), parsePlatform("linux/amd64"), "empty"),
      "E_NOT_FOUND",
      "lists no images",
    );
  });
});
