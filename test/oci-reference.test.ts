// Pull sources (src/oci/reference.ts): the enroot and Docker forms of docker:// with Docker's defaults, daemon
// names, archive and layout paths with their optional reference, canonical strings that parse back to the same
// source, and errors that are typed and name the input.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { StratumError, type ErrorCode } from "../src/errors.ts";
import {
  checkDigest,
  DaemonSource,
  DockerArchiveSource,
  OciLayoutSource,
  parseImageName,
  parsePullSource,
  RegistrySource,
  type PullSource,
} from "../src/oci/reference.ts";

const SHA256 = "sha256:" + "0123456789abcdef".repeat(4);
const SHA512 = "sha512:" + "fedcba9876543210".repeat(8);

function registry(input: string): RegistrySource {
  const s = parsePullSource(input);
  assert.ok(s instanceof RegistrySource, `${input} is a registry source`);
  return s;
}

function assertFails(input: string, code: ErrorCode, ...mentions: (string | RegExp)[]): void {
  assert.throws(
    () => parsePullSource(input),
    (e: unknown) => {
      assert.ok(e instanceof StratumError, `${input}: ${String(e)}`);
      assert.equal(e.code, code, `${input}: ${e.message}`);
      assert.ok(e.message.includes(input), `"${e.message}" names the input`);
      for (const m of mentions)
        if (typeof m === "string") assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
        else assert.match(e.message, m);
      return true;
    },
  );
}

describe("docker:// references", () => {
  test("Docker Hub defaults: docker.io, library/, latest; API host registry-1.docker.io", () => {
    const s = registry("docker://debian");
    assert.equal(s.image.registry, "docker.io");
    assert.equal(s.image.repository, "library/debian");
    assert.equal(s.image.tag, "latest");
    assert.equal(s.image.digest, undefined);
    assert.equal(s.user, undefined);
    assert.equal(s.apiHost, "registry-1.docker.io");
    assert.equal(s.image.manifestReference, "latest");
    assert.equal(s.name, "docker.io/library/debian:latest");
    assert.equal(s.image.familiar, "debian:latest");
    assert.equal(String(s), "docker://docker.io/library/debian:latest");
  });

  test("a Hub namespace keeps its name; the first element is a registry only with '.', ':' or localhost", () => {
    const cases: [string, string, string][] = [
      ["docker://nvidia/cuda:12.4.1-base-ubuntu22.04", "docker.io", "nvidia/cuda"],
      ["docker://quay.io/fedora/fedora:40", "quay.io", "fedora/fedora"],
      ["docker://localhost:5000/test/small", "localhost:5000", "test/small"],
      ["docker://localhost/small", "localhost", "small"],
      ["docker://127.0.0.1:5000/a", "127.0.0.1:5000", "a"],
      ["docker://[::1]:5000/a:1", "[::1]:5000", "a"],
      ["docker://ghcr.io/org/team/app", "ghcr.io", "org/team/app"],
      ["docker://myregistry/app", "docker.io", "myregistry/app"],
    ];
    for (const [input, reg, repo] of cases) {
      const s = registry(input);
      assert.equal(s.image.registry, reg, input);
      assert.equal(s.image.repository, repo, input);
      assert.equal(s.apiHost, reg === "docker.io" ? "registry-1.docker.io" : reg, input);
    }
    assert.equal(registry("docker://quay.io/fedora/fedora:40").image.familiar, "quay.io/fedora/fedora:40");
    assert.equal(registry("docker://nvidia/cuda").image.familiar, "nvidia/cuda:latest");
  });

  test("Docker Hub's other names fold into docker.io", () => {
    for (const input of [
      "docker://index.docker.io/library/busybox",
      "docker://registry-1.docker.io/library/busybox",
      "docker://docker.io/busybox",
      "docker://registry-1.docker.io#busybox",
      "docker://Docker.IO/library/busybox",
    ])
      assert.equal(registry(input).name, "docker.io/library/busybox:latest", input);
  });

  test("enroot's form: USER@ and REGISTRY#IMAGE", () => {
    const s = registry("docker://nvcr.io#nvidia/pytorch:24.01-py3");
    assert.equal(s.image.registry, "nvcr.io");
    assert.equal(s.image.repository, "nvidia/pytorch");
    assert.equal(s.image.tag, "24.01-py3");
    const u = registry("docker://$oauthtoken@nvcr.io#nvidia/pytorch:24.01-py3");
    assert.equal(u.user, "$oauthtoken");
    assert.equal(String(u), "docker://$oauthtoken@nvcr.io/nvidia/pytorch:24.01-py3");
    // A registry given with '#' is never taken for a Hub namespace, and vice versa.
    assert.equal(registry("docker://registry.local:5000#team/app").image.registry, "registry.local:5000");
    assert.equal(registry("docker://reg#app").image.repository, "app", "no library/ outside Docker Hub");
    assert.equal(registry("docker://reg#app").image.registry, "reg");
    // Users may be e-mail addresses; the last '@' before the name ends the user.
    const e = registry("docker://me@example.com@quay.io/org/app:1");
    assert.equal(e.user, "me@example.com");
    assert.equal(e.image.registry, "quay.io");
    const d = registry("docker://alice@ghcr.io/org/app@" + SHA256);
    assert.equal(d.user, "alice");
    assert.equal(d.image.digest, SHA256);
  });

  test("a password in the reference is refused without being echoed", () => {
    assert.throws(
      () => parsePullSource("docker://alice:hunter2@quay.io/a/b"),
      (e: unknown) =>
        e instanceof StratumError &&
        e.code === "E_USAGE" &&
        e.message.includes("--creds") &&
        !e.message.includes("hunter2"),
    );
  });

  test("digests: pinning, tag and digest together, sha512", () => {
    const d = registry("docker://debian@" + SHA256);
    assert.equal(d.image.tag, undefined, "no default tag when a digest is given");
    assert.equal(d.image.digest, SHA256);
    assert.equal(d.image.manifestReference, SHA256);
    assert.equal(String(d), "docker://docker.io/library/debian@" + SHA256);
    const both = registry("docker://debian:bookworm@" + SHA256);
    assert.equal(both.image.tag, "bookworm");
    assert.equal(both.image.manifestReference, SHA256, "the digest decides what is pulled");
    assert.equal(both.name, "docker.io/library/debian:bookworm@" + SHA256);
    assert.equal(registry("docker://quay.io/a/b@" + SHA512).image.digest, SHA512);
  });

  test("a bare reference means docker://", () => {
    const s = registry("debian:bookworm");
    assert.equal(String(s), "docker://docker.io/library/debian:bookworm");
    assert.equal(String(registry("quay.io/fedora/fedora")), "docker://quay.io/fedora/fedora:latest");
    assert.equal(String(registry("nvcr.io#nvidia/cuda")), "docker://nvcr.io/nvidia/cuda:latest");
  });

  test("the grammar: separators, tag length, name length", () => {
    for (const ok of ["a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1.c2"]) registry(`docker://x.io/${ok}`);
    assert.equal(registry("docker://img:" + "t".repeat(128)).image.tag, "t".repeat(128));
    assert.equal(registry("docker://img:_x.Y-1").image.tag, "_x.Y-1");
    assertFails("docker://Debian", "E_USAGE", "lowercase");
    assertFails("docker://x.io/a___b", "E_USAGE", "a___b");
    assertFails("docker://x.io/a.-b", "E_USAGE");
    assertFails("docker://x.io/-a", "E_USAGE");
    assertFails("docker://x.io/a//b", "E_USAGE");
    assertFails("docker://x.io/a/", "E_USAGE");
    assertFails("docker://img:" + "t".repeat(129), "E_USAGE", "tag");
    assertFails("docker://img:.hidden", "E_USAGE", "tag");
    assertFails("docker://img:", "E_USAGE", "tag");
    assert.equal(registry("docker://x.io/" + "a".repeat(250)).name.length, 255 + ":latest".length);
    assertFails("docker://x.io/" + "a".repeat(251), "E_USAGE", "255");
  });

  test("malformed and unsupported references are refused, naming the input", () => {
    assertFails("docker://", "E_USAGE", "no image name");
    assertFails("docker://reg.io#", "E_USAGE", "no image name");
    assertFails("docker://#img", "E_USAGE", "registry");
    assertFails("docker://a#b#c", "E_USAGE", "'#'");
    assertFails("docker://bad_host#img", "E_USAGE", "bad_host");
    assertFails("docker://@img", "E_USAGE", "user");
    assertFails("docker://debian@sha256:abc", "E_USAGE", "64");
    assertFails("docker://debian@sha256:" + "A".repeat(64), "E_USAGE", "lowercase");
    assertFails("docker://debian@md5:" + "a".repeat(32), "E_UNSUPPORTED", "md5");
    assertFails("http://example.com/x", "E_USAGE", "unknown transport");
    assertFails("docker-daemon:busybox:latest", "E_UNSUPPORTED", "dockerd://");
    assertFails("containers-storage:busybox", "E_UNSUPPORTED", "podman://");
    assertFails("/tmp/image.tar", "E_USAGE", "docker-archive:");
    assertFails("./layout", "E_USAGE", "oci:");
  });

  test("parseImageName on its own (a docker-archive REF)", () => {
    const n = parseImageName("busybox");
    assert.equal(n.toString(), "docker.io/library/busybox:latest");
    assert.equal(parseImageName("localhost:5000/a:b").toString(), "localhost:5000/a:b");
  });
});

describe("daemon, archive and layout sources", () => {
  test("dockerd:// and podman:// keep the daemon's name or ID unchanged", () => {
    const d = parsePullSource("dockerd://debian:bookworm");
    assert.ok(d instanceof DaemonSource);
    assert.equal(d.transport, "dockerd");
    assert.equal(d.image, "debian:bookworm");
    assert.equal(String(d), "dockerd://debian:bookworm");
    const p = parsePullSource("podman://" + SHA256);
    assert.ok(p instanceof DaemonSource);
    assert.equal(p.transport, "podman");
    assert.equal(p.image, SHA256);
    assert.equal((parsePullSource("podman://localhost/myimg") as DaemonSource).image, "localhost/myimg");
    assertFails("dockerd://", "E_USAGE");
    assertFails("dockerd://-rm", "E_USAGE", "daemon");
    assertFails("podman://a b", "E_USAGE");
  });

  test("docker-archive:FILE[:REF|:@N]", () => {
    const a = parsePullSource("docker-archive:/tmp/img.tar");
    assert.ok(a instanceof DockerArchiveSource);
    assert.equal(a.path, "/tmp/img.tar");
    assert.equal(a.select, undefined);
    assert.equal(a.name, "img.tar");
    assert.equal(String(a), "docker-archive:/tmp/img.tar");
    const named = parsePullSource("docker-archive:/tmp/img.tar:busybox") as DockerArchiveSource;
    assert.ok(named.select !== undefined && "name" in named.select);
    assert.equal(named.select.name.toString(), "docker.io/library/busybox:latest");
    assert.equal(named.name, "docker.io/library/busybox:latest");
    assert.equal(String(named), "docker-archive:/tmp/img.tar:docker.io/library/busybox:latest");
    // The path ends at the first ':', so a reference can carry a registry port.
    const port = parsePullSource("docker-archive:img.tar:localhost:5000/a:1") as DockerArchiveSource;
    assert.equal(port.path, "img.tar");
    assert.equal(port.name, "localhost:5000/a:1");
    assert.deepEqual((parsePullSource("docker-archive:img.tar:@2") as DockerArchiveSource).select, {
      index: 2,
    });
    assertFails("docker-archive:", "E_USAGE", "no path");
    assertFails("docker-archive::busybox", "E_USAGE", "no path");
    assertFails("docker-archive:img.tar:", "E_USAGE", "empty reference");
    assertFails(`docker-archive:img.tar:busybox@${SHA256}`, "E_USAGE", "not a digest");
    assertFails("docker-archive:img.tar:@x", "E_USAGE", "@0");
  });

  test("oci:DIR[:REF] and oci-archive:FILE[:REF]: the ref is an OCI ref.name and may hold ':'", () => {
    const l = parsePullSource("oci:/srv/layout:v1.0");
    assert.ok(l instanceof OciLayoutSource);
    assert.equal(l.transport, "oci");
    assert.equal(l.path, "/srv/layout");
    assert.deepEqual(l.select, { name: "v1.0" });
    assert.equal(l.name, "v1.0");
    const colon = parsePullSource("oci:layout:quay.io/a/b:1") as OciLayoutSource;
    assert.equal(colon.path, "layout");
    assert.deepEqual(colon.select, { name: "quay.io/a/b:1" });
    const arch = parsePullSource("oci-archive:/tmp/img.oci.tar") as OciLayoutSource;
    assert.equal(arch.transport, "oci-archive");
    assert.equal(arch.name, "img.oci.tar");
    assert.deepEqual((parsePullSource("oci-archive:x.tar:@0") as OciLayoutSource).select, { index: 0 });
    assertFails("oci:/srv/layout:-bad", "E_USAGE", "ref name");
    assertFails("oci:", "E_USAGE", "no path");
  });

  test("canonical strings parse back to the same source", () => {
    const inputs = [
      "debian",
      "docker://user@nvcr.io#nvidia/cuda:12@" + SHA256,
      "docker://localhost:5000/a/b",
      "dockerd://busybox",
      "podman://localhost/x:1",
      "docker-archive:/a/b.tar:busybox:1",
      "docker-archive:b.tar:@3",
      "oci:/l:ref.name",
      "oci-archive:/l.tar",
    ];
    for (const input of inputs) {
      const once: PullSource = parsePullSource(input);
      const twice = parsePullSource(String(once));
      assert.equal(String(twice), String(once), input);
      assert.deepEqual(twice, once, input);
    }
  });
});

describe("digests", () => {
  test("sha256 and sha512 lengths and lowercase hex", () => {
    assert.equal(checkDigest(SHA256, "E_BAD_INPUT", "x"), SHA256);
    assert.equal(checkDigest(SHA512, "E_BAD_INPUT", "x"), SHA512);
    const code = (d: string): string | undefined => {
      try {
        checkDigest(d, "E_BAD_INPUT", "thing");
        return undefined;
      } catch (e) {
        assert.ok(e instanceof StratumError);
        assert.match(e.message, /^thing: /);
        return e.code;
      }
    };
    assert.equal(code(SHA256.slice(0, -1)), "E_BAD_INPUT");
    assert.equal(code(SHA512.slice(0, -2)), "E_BAD_INPUT");
    assert.equal(code("sha256:" + "g".repeat(64)), "E_BAD_INPUT");
    assert.equal(code(SHA256.toUpperCase()), "E_BAD_INPUT");
    assert.equal(code("sha256"), "E_BAD_INPUT");
    assert.equal(code("blake3:" + "a".repeat(64)), "E_UNSUPPORTED");
  });
});
