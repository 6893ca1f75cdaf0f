// The registry transport (src/transport/registry/client.ts, source.ts) against a real docker-registry, plain and
// behind real token auth (test/helpers/registry.ts), with the fixture images pushed by skopeo; faults injected by
// the fault proxy (429, 500, a connection dropped mid-blob, a stall, a corrupted body); and small in-process HTTP
// servers for what a real registry does not do on demand (a blob redirected to another origin, a server that
// ignores Range, an identity-token POST, a schema 1 manifest, a plain-HTTP token realm elsewhere, TLS with a
// private CA and a client certificate, a forward proxy).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import * as path from "node:path";
import type { TLSSocket } from "node:tls";
import { after, before, describe, test, type TestContext } from "node:test";
import { StratumError } from "../src/errors.ts";
import { parsePullSource, RegistrySource } from "../src/oci/reference.ts";
import { RegistryClient, verifyBlob, type RegistryClientOptions } from "../src/transport/registry/client.ts";
import { RegistryCredential } from "../src/transport/registry/credentials.ts";
import { RegistryImageSource, type RegistryImageSourceOptions } from "../src/transport/registry/source.ts";
import { run } from "./helpers/daemons.ts";
import { startFaultProxy, type FaultProxy, type ProxyLogEntry } from "./helpers/fault-proxy.ts";
import {
  buildImages,
  imagesUnavailable,
  MULTIARCH_PLATFORMS,
  pushDockerManifestList,
  pushImage,
  readBlob,
  readImage,
  readIndex,
  sha256,
  tagDescriptor,
  type OciIndex,
  type TestImages,
} from "./helpers/images.ts";
import { registryUnavailable, startRegistry, writeAuthFile, type Registry } from "./helpers/registry.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const reason = imagesUnavailable() ?? registryUnavailable("token");
const tmp = makeTempDir("stratum-regtransport-");
const emptyHome = path.join(tmp, "home");
fs.mkdirSync(emptyHome);

/** Options every client in this file starts from: nothing from the machine (proxies, CAs, credentials). */
const BASE: RegistryClientOptions = {
  env: {},
  certsDirs: [],
  credentialEnvironment: { env: {}, homedir: emptyHome },
  retryBaseDelayMs: 20,
  retryMaxDelayMs: 2000,
};

let images: TestImages | undefined;
let plain: Registry | undefined;
let token: Registry | undefined;
let proxy: FaultProxy | undefined;
let big: { digest: string; bytes: Buffer } | undefined;
let listDigest: string | undefined;
const sources: RegistryImageSource[] = [];
const closers: (() => Promise<void>)[] = [];

function may(t: TestContext): boolean {
  if (reason === null) return true;
  t.skip(reason);
  return false;
}

const need = <T>(v: T | undefined, what: string): T => {
  assert.ok(v !== undefined, `${what} is not set up`);
  return v;
};

function source(ref: string, opts: RegistryImageSourceOptions = {}): RegistryImageSource {
  const parsed = parsePullSource(ref);
  assert.ok(parsed instanceof RegistrySource);
  const s = new RegistryImageSource(parsed, { ...BASE, ...opts });
  sources.push(s);
  return s;
}

async function collect(
  stream: AsyncIterable<Buffer>,
): Promise<{ bytes: Buffer; chunks: number; max: number }> {
  const parts: Buffer[] = [];
  let max = 0;
  for await (const c of stream) {
    parts.push(c);
    max = Math.max(max, c.length);
  }
  return { bytes: Buffer.concat(parts), chunks: parts.length, max };
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<StratumError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StratumError, `expected a StratumError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (re !== undefined) assert.match(err.message, re);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const AMD64 = { os: "linux", architecture: "amd64" };

/**
 * The fault proxy's log once `done` holds for it: the proxy writes an entry when it has finished a response,
 * which can be a moment after the client has read it.
 */
async function proxyLog(p: FaultProxy, done: (log: ProxyLogEntry[]) => boolean): Promise<ProxyLogEntry[]> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const log = p.requests();
    if (done(log) || Date.now() > deadline) return log;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Upload a blob to a plain registry (monolithic: POST, then PUT ?digest=). */
async function uploadBlob(host: string, repo: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get("location") ?? "", `http://${host}`);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, {
    method: "PUT",
    body: bytes,
    headers: { "content-type": "application/octet-stream" },
  });
  assert.equal(put.status, 201, await put.text());
  return digest;
}

// ---- in-process servers ---------------------------------------------------------------------------------------

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface Fake {
  host: string;
  port: number;
  seen: Seen[];
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

async function fakeServer(handler: Handler, tlsOptions?: https.ServerOptions): Promise<Fake> {
  const seen: Seen[] = [];
  const listener = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      const body = Buffer.concat(parts).toString();
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      handler(req, res, body);
    });
  };
  const server = tlsOptions ? https.createServer(tlsOptions, listener) : http.createServer(listener);
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { host: `127.0.0.1:${port}`, port, seen };
}

function json(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: http.OutgoingHttpHeaders = {},
) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** A CONNECT forward proxy that sends every tunnel to `target` ("host:port") and records what was asked for. */
async function connectProxy(target: string): Promise<{ url: string; connects: string[] }> {
  const connects: string[] = [];
  const server = http.createServer((_req, res) => {
    res.writeHead(405);
    res.end();
  });
  const sockets = new Set<net.Socket>();
  server.on("connect", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    connects.push(req.url ?? "");
    const [h, p] = [
      target.slice(0, target.lastIndexOf(":")),
      Number(target.slice(target.lastIndexOf(":") + 1)),
    ];
    const upstream = net.connect(p, h, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => s.destroy());
      s.on("close", () => sockets.delete(s));
    }
    upstream.on("close", () => client.destroy());
    client.on("close", () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connects };
}

// ---- setup ------------------------------------------------------------------------------------------------------

before(async () => {
  if (reason !== null) return;
  const [im, p, t] = await Promise.all([
    buildImages(),
    startRegistry(),
    startRegistry({ auth: "token", tokenLifetime: 300 }),
  ]);
  images = im;
  plain = p;
  token = t;
  const plainTarget = { host: p.host };
  const tokenTarget = { host: t.host, auth: "token" as const, users: t.users };
  await Promise.all([
    pushImage(im.layout, "multi", plainTarget, "test/multi:latest"),
    pushImage(im.layout, "multiarch", plainTarget, "test/multiarch:latest", { all: true }),
    pushDockerManifestList(im.layout, plainTarget, "test/multiarch-docker:latest").then((d) => {
      listDigest = d;
    }),
    pushImage(im.layout, "multi", tokenTarget, "test/multi:latest"),
  ]);
  const bytes = randomBytes(3 * 1024 * 1024 + 123);
  big = { bytes, digest: await uploadBlob(p.host, "test/big", bytes) };
  proxy = await startFaultProxy(p.host);
});

after(async () => {
  await Promise.all(sources.map((s) => s.close()));
  await Promise.all(closers.map((c) => c()));
  await Promise.all([proxy?.stop(), plain?.stop(), token?.stop()]);
  images?.remove();
  removeDir(tmp);
});

// ---- tests ------------------------------------------------------------------------------------------------------

describe("registry transport: manifests", () => {
  test("by tag: the bytes and digest skopeo inspect --raw sees", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const raw = (
      await run("skopeo", [
        "inspect",
        "--raw",
        "--tls-verify=false",
        `docker://${reg.host}/test/multi:latest`,
      ])
    ).stdout;
    const src = source(`docker://${reg.host}/test/multi:latest`);
    assert.equal(src.description, `docker://${reg.host}/test/multi:latest`);
    assert.equal(src.concurrency, 3);
    const m = await src.manifest(AMD64);
    assert.ok(m.bytes.equals(raw));
    assert.equal(m.digest, sha256(raw));
    assert.equal(m.digest, readImage(need(images, "images").layout, "multi").manifestDigest);
    assert.equal(m.indexDigest, undefined);
    assert.equal(m.manifest.layers.length, 3);
    assert.equal(src.client.baseUrl, `http://${reg.host}`, "loopback falls back to plain HTTP");
  });

  test("by digest: fetched by digest and checked against it", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const digest = readImage(need(images, "images").layout, "multi").manifestDigest;
    const ref = `docker://${reg.host}/test/multi@${digest}`;
    const raw = (await run("skopeo", ["inspect", "--raw", "--tls-verify=false", ref])).stdout;
    const m = await source(ref).manifest(AMD64);
    assert.ok(m.bytes.equals(raw));
    assert.equal(m.digest, digest);
    assert.equal(sha256(m.bytes), digest);
    const missing = `sha256:${"0".repeat(64)}`;
    await rejectsWith(
      source(`docker://${reg.host}/test/multi@${missing}`).manifest(AMD64),
      "E_NOT_FOUND",
      /MANIFEST_UNKNOWN/,
    );
  });

  test("an OCI index: the arm64 and amd64 images are chosen, the index digest kept", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const layout = need(images, "images").layout;
    const index = readIndex(layout, "multiarch");
    const src = source(`docker://${reg.host}/test/multiarch:latest`);
    for (const p of MULTIARCH_PLATFORMS) {
      const m = await src.manifest(p);
      assert.equal(m.digest, tagDescriptor(layout, p.tag).digest, p.tag);
      assert.equal(m.indexDigest, index.digest);
      assert.equal(m.manifest.kind, "manifest");
    }
    const arm = await src.manifest({ os: "linux", architecture: "arm64" });
    const amd = await src.manifest(AMD64);
    assert.notEqual(arm.digest, amd.digest);
    // The platform layer differs, the shared base layer does not.
    assert.equal(arm.manifest.layers[0]?.digest, amd.manifest.layers[0]?.digest);
    assert.notEqual(arm.manifest.layers[1]?.digest, amd.manifest.layers[1]?.digest);
    const layer = need(arm.manifest.layers[1], "arm64 layer");
    const tar = (await collect(src.blob(layer))).bytes;
    assert.ok(tar.equals(readBlob(layout, layer.digest)));
    await rejectsWith(src.manifest({ os: "linux", architecture: "s390x" }), "E_NOT_FOUND", /linux\/arm64/);
  });

  test("a Docker manifest list: the arm64 schema 2 manifest is chosen", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const ref = `docker://${reg.host}/test/multiarch-docker:latest`;
    const raw = (await run("skopeo", ["inspect", "--raw", "--tls-verify=false", ref])).stdout;
    const list = JSON.parse(raw.toString()) as OciIndex;
    assert.equal(list.mediaType, "application/vnd.docker.distribution.manifest.list.v2+json");
    const want = list.manifests.find((d) => d.platform?.architecture === "arm64");
    const m = await source(ref).manifest({ os: "linux", architecture: "arm64" });
    assert.equal(m.digest, want?.digest);
    assert.equal(m.indexDigest, need(listDigest, "list digest"));
    assert.equal(m.indexDigest, sha256(raw));
    assert.equal(m.manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
  });

  test("a manifest over the size limit is refused", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    await rejectsWith(
      source(`docker://${reg.host}/test/multi:latest`, { maxManifestBytes: 100 }).manifest(AMD64),
      "E_BAD_INPUT",
      /larger than 100 bytes/,
    );
  });
});

describe("registry transport: blobs", () => {
  test("the config and every layer are the layout's blob files, byte for byte", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const layout = need(images, "images").layout;
    const src = source(`docker://${reg.host}/test/multi:latest`);
    const m = await src.manifest(AMD64);
    for (const d of [m.manifest.config, ...m.manifest.layers]) {
      let progress = 0;
      const got = await collect(src.blob(d, { onBytes: (n) => (progress += n) }));
      assert.ok(got.bytes.equals(readBlob(layout, d.digest)), d.digest);
      assert.equal(progress, d.size);
    }
  });

  test("a 3 MiB blob streams in chunks (never whole in memory)", async (t) => {
    if (!may(t)) return;
    const b = need(big, "big blob");
    const client = source(`docker://${need(plain, "registry").host}/test/big:latest`).client;
    const got = await collect(client.blob("test/big", b.digest, { size: b.bytes.length }));
    assert.ok(got.bytes.equals(b.bytes));
    assert.ok(got.chunks > 10 && got.max <= 1 << 20, `${got.chunks} chunks, largest ${got.max}`);
    await rejectsWith(
      collect(client.blob("test/big", `sha256:${"1".repeat(64)}`)),
      "E_NOT_FOUND",
      /BLOB_UNKNOWN/,
    );
  });

  test("verifyBlob passes good bytes and fails a wrong digest or size", async (t) => {
    if (!may(t)) return;
    const b = need(big, "big blob");
    const client = source(`docker://${need(plain, "registry").host}/test/big:latest`).client;
    const ok = await collect(verifyBlob(client.blob("test/big", b.digest), b.digest, b.bytes.length, "big"));
    assert.equal(ok.bytes.length, b.bytes.length);
    const wrong = `sha256:${"2".repeat(64)}`;
    await rejectsWith(
      collect(verifyBlob(client.blob("test/big", b.digest), wrong, undefined, "big")),
      "E_CORRUPT",
    );
    await rejectsWith(
      collect(verifyBlob(client.blob("test/big", b.digest), b.digest, 10, "big")),
      "E_CORRUPT",
    );
  });
});

describe("registry transport: token authentication", () => {
  test("anonymous pull from the token registry", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    const before = reg.tokenLog().length;
    const src = source(`docker://${reg.host}/test/multi:latest`);
    const m = await src.manifest(AMD64);
    const layer = need(m.manifest.layers[0], "layer");
    assert.ok(
      (await collect(src.blob(layer))).bytes.equals(readBlob(need(images, "images").layout, layer.digest)),
    );
    assert.equal(src.client.authScheme, "bearer");
    const log = reg.tokenLog().slice(before);
    assert.equal(log.length, 1, "one token for the manifest and the blob");
    assert.equal(log[0]?.user, null);
    assert.deepEqual(log[0]?.scopes, ["repository:test/multi:pull"]);
    assert.equal(log[0]?.service, reg.service);
  });

  test("credentials from a DOCKER_CONFIG config.json", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    const dir = path.join(tmp, "docker-good");
    writeAuthFile(reg, path.join(dir, "config.json"), "alice");
    const before = reg.tokenLog().length;
    const src = source(`docker://${reg.host}/test/multi:latest`, {
      credentialEnvironment: { env: { DOCKER_CONFIG: dir }, homedir: emptyHome },
    });
    await src.manifest(AMD64);
    const log = reg.tokenLog().slice(before);
    assert.equal(log.length, 1);
    assert.equal(log[0]?.user, "alice");
    assert.equal(log[0]?.account, "alice");
    assert.equal(log[0]?.status, 200);
  });

  test("a wrong password: a clear E_USAGE that names the user and file, never the password", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    const dir = path.join(tmp, "docker-bad");
    fs.mkdirSync(dir);
    const password = "Wr0ng-Passw0rd";
    const auth = Buffer.from(`alice:${password}`).toString("base64");
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ auths: { [reg.host]: { auth } } }));
    const src = source(`docker://${reg.host}/test/multi:latest`, {
      credentialEnvironment: { env: { DOCKER_CONFIG: dir }, homedir: emptyHome },
    });
    const err = await rejectsWith(src.manifest(AMD64), "E_USAGE", /refused to authenticate as "alice"/);
    assert.ok(err.message.includes(path.join(dir, "config.json")), err.message);
    const shown = [err.message, String(err.stack), JSON.stringify(err)].join("\n");
    assert.ok(!shown.includes(password) && !shown.includes(auth), shown);
    assert.equal(reg.tokenLog().at(-1)?.status, 401);
  });

  test("an explicit credential (--creds) on a USER@ reference", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    const before = reg.tokenLog().length;
    const src = source(`docker://bob@${reg.host}/test/multi:latest`, {
      credential: new RegistryCredential("password", "bob", "hunter2", "--creds"),
    });
    await src.manifest(AMD64);
    assert.equal(reg.tokenLog().slice(before)[0]?.user, "bob");
  });

  test("a token the registry stops accepting mid-pull is renewed on its 401", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    // exp = iat − 57 s: docker-registry's 60 s leeway accepts such a token for 2–3 s; expires_in still says 300.
    reg.setTokenLifetime(-57, 300);
    try {
      const lines: string[] = [];
      const before = reg.tokenLog().length;
      const src = source(`docker://${reg.host}/test/multi:latest`, { log: (l) => lines.push(l) });
      const m = await src.manifest(AMD64);
      await new Promise((r) => setTimeout(r, 3500));
      const layer = need(m.manifest.layers[0], "layer");
      const got = await collect(src.blob(layer));
      assert.ok(got.bytes.equals(readBlob(need(images, "images").layout, layer.digest)));
      assert.ok(
        lines.some((l) => l.includes("HTTP 401, renewing")),
        "the blob GET was refused once",
      );
      assert.equal(reg.tokenLog().slice(before).length, 2);
    } finally {
      reg.setTokenLifetime(300);
    }
  });

  test("a token past its expires_in is renewed before it is used", async (t) => {
    if (!may(t)) return;
    const reg = need(token, "token registry");
    reg.setTokenLifetime(300, 1);
    try {
      const lines: string[] = [];
      const before = reg.tokenLog().length;
      const src = source(`docker://${reg.host}/test/multi:latest`, { log: (l) => lines.push(l) });
      const m = await src.manifest(AMD64);
      await new Promise((r) => setTimeout(r, 1000));
      await collect(src.blob(m.manifest.config));
      assert.equal(reg.tokenLog().slice(before).length, 2);
      assert.ok(!lines.some((l) => l.includes("HTTP 401")), "no request was refused");
    } finally {
      reg.setTokenLifetime(300);
    }
  });

  test("an identity token is exchanged with a refresh_token POST", async (t) => {
    if (!may(t)) return;
    let realm = "";
    const tokenServer = await fakeServer((req, res, body) => {
      const form = new URLSearchParams(body);
      if (
        req.method === "POST" &&
        form.get("grant_type") === "refresh_token" &&
        form.get("refresh_token") === "rt-1"
      )
        json(res, 200, { access_token: "at-1", expires_in: 300 });
      else json(res, 401, { error: "bad grant" });
    });
    realm = `http://${tokenServer.host}/token`;
    const registry = await fakeServer((req, res) => {
      if (req.headers.authorization !== "Bearer at-1")
        return json(res, 401, {}, { "www-authenticate": `Bearer realm="${realm}",service="fake"` });
      json(res, 404, { errors: [{ code: "MANIFEST_UNKNOWN", message: "no such manifest" }] });
    });
    const client = new RegistryClient(registry.host, {
      ...BASE,
      credential: new RegistryCredential("identity-token", "", "rt-1", "test"),
    });
    closers.push(() => client.close());
    await rejectsWith(client.manifest("a/b", "latest"), "E_NOT_FOUND", /MANIFEST_UNKNOWN: no such manifest/);
    const post = tokenServer.seen.find((s) => s.method === "POST");
    const form = new URLSearchParams(post?.body);
    assert.equal(form.get("service"), "fake");
    assert.equal(form.get("scope"), "repository:a/b:pull");
    assert.equal(form.get("client_id"), "stratum");
    assert.equal(registry.seen.at(-1)?.headers.authorization, "Bearer at-1");
  });
});

describe("registry transport: faults", () => {
  test("429 with Retry-After, then success", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    p.setRules([{ path: "/manifests/", action: { kind: "status", status: 429, retryAfter: 1 } }]);
    p.clearLog();
    const t0 = Date.now();
    const m = await source(`docker://${p.host}/test/multi:latest`).manifest(AMD64);
    assert.ok(Date.now() - t0 >= 900, "waited for Retry-After");
    assert.equal(m.digest, readImage(need(images, "images").layout, "multi").manifestDigest);
    const log = await proxyLog(p, (l) => l.filter((r) => r.path.includes("/manifests/")).length >= 2);
    const statuses = log.filter((r) => r.path.includes("/manifests/")).map((r) => r.status);
    assert.deepEqual(statuses, [429, 200]);
  });

  test("500 on a blob, then success; 500 for ever gives up after maxAttempts", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    const layout = need(images, "images").layout;
    const src = source(`docker://${p.host}/test/multi:latest`, { maxAttempts: 3 });
    const m = await src.manifest(AMD64);
    const layer = need(m.manifest.layers[0], "layer");
    p.setRules([{ path: "/blobs/", action: { kind: "status", status: 500 }, times: 2 }]);
    p.clearLog();
    assert.ok((await collect(src.blob(layer))).bytes.equals(readBlob(layout, layer.digest)));
    const log = await proxyLog(p, (l) => l.length >= 3);
    assert.deepEqual(
      log.map((r) => r.status),
      [500, 500, 200],
    );
    p.setRules([{ path: "/blobs/", action: { kind: "status", status: 503 }, times: "always" }]);
    p.clearLog();
    await rejectsWith(collect(src.blob(layer)), "E_IO", /HTTP 503 FAULT: injected 503 \(after 3 tries\)/);
    assert.equal((await proxyLog(p, (l) => l.length >= 3)).length, 3);
    p.setRules([]);
  });

  test("a connection dropped mid-blob resumes with a Range request; the bytes are intact", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    const b = need(big, "big blob");
    p.setRules([{ path: "/blobs/", range: false, action: { kind: "drop", afterBytes: 1_000_000 } }]);
    p.clearLog();
    const client = source(`docker://${p.host}/test/big:latest`).client;
    let progress = 0;
    const got = await collect(
      client.blob("test/big", b.digest, { size: b.bytes.length, onBytes: (n) => (progress += n) }),
    );
    assert.ok(got.bytes.equals(b.bytes), "intact");
    assert.equal(progress, b.bytes.length);
    const blobs = (l: ProxyLogEntry[]) => l.filter((r) => r.path.includes("/blobs/"));
    const log = blobs(await proxyLog(p, (l) => blobs(l).length >= 2));
    assert.equal(log.length, 2);
    const dropped = log.find((r) => r.fault === "drop");
    const resumed = log.find((r) => r.range !== null);
    assert.deepEqual([dropped?.status, dropped?.range, dropped?.bytes], [200, null, 1_000_000]);
    assert.equal(resumed?.status, 206);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(resumed?.range ?? "")?.[1]);
    assert.ok(resumedAt > 0 && resumedAt <= 1_000_000, `resumed at ${resumed?.range}`);
    assert.equal(resumed?.bytes, b.bytes.length - resumedAt);
    p.setRules([]);
  });

  test("a stalled body times out and resumes; an abort ends the stream", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    const b = need(big, "big blob");
    p.setRules([{ path: "/blobs/", range: false, action: { kind: "stall", afterBytes: 500_000 } }]);
    p.clearLog();
    const client = source(`docker://${p.host}/test/big:latest`, { bodyTimeoutMs: 500 }).client;
    const got = await collect(client.blob("test/big", b.digest, { size: b.bytes.length }));
    assert.ok(got.bytes.equals(b.bytes));
    const blobs = (l: ProxyLogEntry[]) => l.filter((r) => r.path.includes("/blobs/"));
    const log = blobs(await proxyLog(p, (l) => blobs(l).length >= 2));
    assert.deepEqual(
      log.map((r) => [r.fault, r.status, r.range === null ? null : "range"]),
      [
        ["stall", 200, null],
        [null, 206, "range"],
      ],
    );

    p.setRules([{ path: "/blobs/", action: { kind: "stall", afterBytes: 500_000 } }]);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await rejectsWith(collect(client.blob("test/big", b.digest, { signal: ac.signal })), "E_IO", /aborted/);
    p.setRules([]);
  });

  test("a corrupted blob body is returned as served (verifyBlob catches it)", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    const layout = need(images, "images").layout;
    const src = source(`docker://${p.host}/test/multi:latest`);
    const m = await src.manifest(AMD64);
    const layer = need(m.manifest.layers[0], "layer");
    p.setRules([{ path: "/blobs/", action: { kind: "corrupt" }, times: 2 }]);
    const got = (await collect(src.blob(layer))).bytes;
    const want = readBlob(layout, layer.digest);
    assert.equal(got.length, want.length);
    assert.ok(!got.equals(want));
    assert.equal(got[Math.floor(want.length / 2)], (want[Math.floor(want.length / 2)] ?? 0) ^ 0xff);
    await rejectsWith(collect(verifyBlob(src.blob(layer), layer.digest, layer.size, "layer")), "E_CORRUPT");
    p.setRules([]);
  });

  test("a corrupted manifest fails its Docker-Content-Digest check", async (t) => {
    if (!may(t)) return;
    const p = need(proxy, "fault proxy");
    p.setRules([{ path: "/manifests/", action: { kind: "corrupt" } }]);
    await rejectsWith(
      source(`docker://${p.host}/test/multi:latest`).manifest(AMD64),
      "E_CORRUPT",
      /the registry says sha256:/,
    );
    p.setRules([]);
  });
});

describe("registry transport: HTTP rules", () => {
  test("plain HTTP to a registry that is not loopback is refused", async (t) => {
    if (!may(t)) return;
    assert.throws(
      () => new RegistryClient("192.0.2.1:5000", { ...BASE, scheme: "http" }),
      (e: unknown) =>
        e instanceof StratumError &&
        e.code === "E_USAGE" &&
        /plain HTTP to 192\.0\.2\.1:5000/.test(e.message),
    );
    // Loopback, or insecure, may.
    await new RegistryClient("127.0.0.2:5000", { ...BASE, scheme: "http" }).close();
    await new RegistryClient("[::1]:5000", { ...BASE, scheme: "http" }).close();
    await new RegistryClient("192.0.2.1:5000", { ...BASE, scheme: "http", insecure: true }).close();
    // A loopback registry whose token realm is plain HTTP elsewhere: refused before anything is sent there.
    const registry = await fakeServer((_req, res) =>
      json(res, 401, {}, { "www-authenticate": 'Bearer realm="http://192.0.2.1/token",service="x"' }),
    );
    const client = new RegistryClient(registry.host, { ...BASE, connectTimeoutMs: 1000 });
    closers.push(() => client.close());
    await rejectsWith(
      client.manifest("a/b", "latest"),
      "E_USAGE",
      /token service http:\/\/192\.0\.2\.1\/token/,
    );
  });

  test("a blob redirected to another origin loses its Authorization; a 200 to a Range is skipped into place", async (t) => {
    if (!may(t)) return;
    const blob = randomBytes(200_000);
    const digest = sha256(blob);
    let cdnCalls = 0;
    const cdn = await fakeServer((req, res) => {
      cdnCalls++;
      if (cdnCalls === 1) {
        // Half the blob, then the connection dies.
        res.writeHead(200, { "content-length": blob.length });
        res.write(blob.subarray(0, 80_000), () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      // Ranges are not supported here: the whole blob again.
      assert.ok(req.headers.range !== undefined);
      res.writeHead(200, { "content-length": blob.length });
      res.end(blob);
    });
    const registry = await fakeServer((req, res) => {
      if (req.headers.authorization !== "Basic " + Buffer.from("u:p").toString("base64"))
        return json(res, 401, {}, { "www-authenticate": 'Basic realm="fake"' });
      if (req.url === "/v2/") return json(res, 200, {});
      res.writeHead(307, { location: `http://localhost:${cdn.port}/signed/blob?sig=SECRET-SIGNATURE` });
      res.end();
    });
    const client = new RegistryClient(registry.host, {
      ...BASE,
      credential: new RegistryCredential("password", "u", "p", "test"),
    });
    closers.push(() => client.close());
    const got = await collect(client.blob("a/b", digest, { size: blob.length }));
    assert.ok(got.bytes.equals(blob));
    assert.equal(client.authScheme, "basic");
    assert.ok(registry.seen.filter((s) => s.url.includes("/blobs/")).every((s) => s.headers.authorization));
    assert.equal(cdn.seen.length, 2);
    for (const s of cdn.seen) assert.equal(s.headers.authorization, undefined, "no Authorization at the CDN");
    assert.equal(cdn.seen[1]?.headers.range, "bytes=80000-");
  });

  test("schema 1 manifests are refused", async (t) => {
    if (!may(t)) return;
    const body = JSON.stringify({ schemaVersion: 1, name: "a/b", tag: "latest", fsLayers: [] });
    const registry = await fakeServer((_req, res) => {
      if (_req.url === "/v2/") return json(res, 200, {});
      res.writeHead(200, { "content-type": "application/vnd.docker.distribution.manifest.v1+prettyjws" });
      res.end(body);
    });
    const parsed = parsePullSource(`docker://${registry.host}/a/b:latest`);
    assert.ok(parsed instanceof RegistrySource);
    const src = new RegistryImageSource(parsed, BASE);
    sources.push(src);
    await rejectsWith(src.manifest(AMD64), "E_UNSUPPORTED", /schema 1/);
  });

  test("HTTP_PROXY: requests go through a CONNECT proxy (loopback targets would not)", async (t) => {
    if (!may(t)) return;
    const reg = need(plain, "registry");
    const fwd = await connectProxy(reg.host);
    // A name only the proxy can reach; not loopback, so plain HTTP needs `insecure`.
    const parsed = parsePullSource("docker://registry.stratum-test.invalid:5000/test/multi:latest");
    assert.ok(parsed instanceof RegistrySource);
    const src = new RegistryImageSource(parsed, {
      ...BASE,
      insecure: true,
      env: { HTTP_PROXY: fwd.url, HTTPS_PROXY: fwd.url },
    });
    sources.push(src);
    const m = await src.manifest(AMD64);
    assert.equal(m.digest, readImage(need(images, "images").layout, "multi").manifestDigest);
    assert.equal(src.client.baseUrl, "http://registry.stratum-test.invalid:5000");
    assert.ok(
      fwd.connects.length >= 2 && fwd.connects.every((c) => c === "registry.stratum-test.invalid:5000"),
    );
    // Without insecure, the same registry is HTTPS only: the proxy tunnels it, TLS fails against plain HTTP.
    const strict = new RegistryImageSource(parsed, {
      ...BASE,
      env: { HTTPS_PROXY: fwd.url },
      maxAttempts: 1,
    });
    sources.push(strict);
    await rejectsWith(strict.manifest(AMD64), "E_IO", /does not seem to speak TLS/);
  });

  test("TLS: a private CA and a client certificate from certs.d or a cert dir; tlsVerify false", async (t) => {
    if (!may(t)) return;
    const dir = path.join(tmp, "tls");
    fs.mkdirSync(dir);
    const ssl = (...args: string[]) => run("openssl", args, { cwd: dir });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    await ssl(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "2",
      "-subj",
      "/CN=stratum test CA",
    );
    fs.writeFileSync(path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\n");
    fs.writeFileSync(path.join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
    for (const [name, ext] of [
      ["server", "server.ext"],
      ["client", "client.ext"],
    ] as const) {
      await ssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      await ssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        `${name}.crt`,
        "-days",
        "2",
        "-extfile",
        ext,
      );
    }
    const read = (f: string) => fs.readFileSync(path.join(dir, f));
    const clientNames: (string | null)[] = [];
    const server = await fakeServer(
      (req, res) => {
        const socket = req.socket as TLSSocket;
        clientNames.push(socket.authorized ? String(socket.getPeerCertificate().subject?.CN) : null);
        if (req.url === "/v2/") return json(res, 200, {});
        json(res, 404, { errors: [{ code: "MANIFEST_UNKNOWN", message: "none" }] });
      },
      {
        key: read("server.key"),
        cert: read("server.crt"),
        ca: read("ca.crt"),
        requestCert: true,
        rejectUnauthorized: false,
      },
    );
    const certsDir = path.join(dir, "certs.d");
    const hostDir = path.join(certsDir, server.host);
    fs.mkdirSync(hostDir, { recursive: true });

    // Not trusted yet: a certificate error with a hint.
    const untrusted = new RegistryClient(server.host, { ...BASE, scheme: "https", certsDirs: [certsDir] });
    closers.push(() => untrusted.close());
    await rejectsWith(untrusted.ping(), "E_IO", /certs\.d/);
    // tlsVerify: false accepts it (and offers no client certificate: there is none yet).
    const lenient = new RegistryClient(server.host, { ...BASE, scheme: "https", tlsVerify: false });
    closers.push(() => lenient.close());
    await lenient.ping();
    assert.equal(clientNames.at(-1), null);

    fs.copyFileSync(path.join(dir, "ca.crt"), path.join(hostDir, "ca.crt"));
    fs.copyFileSync(path.join(dir, "client.crt"), path.join(hostDir, "client.cert"));
    fs.copyFileSync(path.join(dir, "client.key"), path.join(hostDir, "client.key"));
    const client = new RegistryClient(server.host, { ...BASE, certsDirs: [certsDir] });
    closers.push(() => client.close());
    await rejectsWith(client.manifest("a/b", "latest"), "E_NOT_FOUND");
    assert.equal(client.baseUrl, `https://${server.host}`, "HTTPS is preferred when it works");
    assert.ok(server.seen.length >= 2);
    assert.ok(server.seen.every((s) => s.url === "/v2/" || s.url === "/v2/a/b/manifests/latest"));
    assert.equal(clientNames.at(-1), "client", "the client certificate was presented and verified");
    // The same files as one --cert-dir directory.
    const viaCertDir = new RegistryClient(server.host, { ...BASE, scheme: "https", certDir: hostDir });
    closers.push(() => viaCertDir.close());
    await viaCertDir.ping();
    assert.equal(clientNames.at(-1), "client");
    assert.throws(
      () => new RegistryClient(server.host, { ...BASE, certDir: path.join(dir, "missing") }),
      (e: unknown) => e instanceof StratumError && e.code === "E_NOT_FOUND",
    );

    // A client certificate without its key is a configuration error.
    fs.rmSync(path.join(hostDir, "client.key"));
    assert.throws(
      () => new RegistryClient(server.host, { ...BASE, certsDirs: [certsDir] }),
      (e: unknown) =>
        e instanceof StratumError && e.code === "E_BAD_INPUT" && /has no key client\.key/.test(e.message),
    );
  });
});
