// A real registry for tests: Debian's docker-registry (distribution 2.8) on a free loopback port with filesystem
// storage in a per-run temporary directory, either open ("plain") or behind real bearer-token auth served by
// token-server.ts in a separate process (RS256 JWTs signed with a throw-away self-signed certificate made by
// openssl). Both processes are stopped by PID (process group) and the directory is removed by stop().
//
//   const reg = await startRegistry({ auth: "token", tokenLifetime: 300 });
//   reg.host        // "127.0.0.1:PORT", for docker://HOST/repo:tag references
//   reg.tokenUrl    // "http://127.0.0.1:PORT2/token" (token mode)
//   reg.users       // { alice: "secret", … }
//   reg.tokenLog()  // one entry per token request, see TokenLogEntry
//   await reg.stop();

import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import {
  discardDir,
  nodeScript,
  run,
  shortTempDir,
  spawnManaged,
  unavailable,
  waitUntil,
  type ManagedProcess,
} from "./daemons.ts";
import type { TokenLogEntry, TokenServerConfig } from "./token-server.ts";

export type { TokenLogEntry } from "./token-server.ts";

export const DEFAULT_USERS: Readonly<Record<string, string>> = { alice: "secret", bob: "hunter2" };
export const TOKEN_SERVICE = "stratum-test-registry";
export const TOKEN_ISSUER = "stratum-test-issuer";

export interface RegistryOptions {
  auth?: "none" | "token";
  /** Token mode: Basic users of the token server (default DEFAULT_USERS). */
  users?: Record<string, string>;
  /** Token mode: seconds from a token's iat to its exp (default 300). See setTokenLifetime. */
  tokenLifetime?: number;
  /** Token mode: the `expires_in` the token server reports (default max(lifetime, 1)). */
  tokenExpiresIn?: number;
}

export interface Registry {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  auth: "none" | "token";
  /** Token mode: the realm, "http://127.0.0.1:PORT/token"; null for a plain registry. */
  tokenUrl: string | null;
  /** Token mode: the service name the registry expects in tokens. */
  service: string | null;
  users: Record<string, string>;
  /** Token mode: the token request log (JSON lines); null for a plain registry. */
  logPath: string | null;
  /** The registry's own log (stdout + stderr). */
  registryLogPath: string;
  dir: string;
  /** Token mode: the parsed token request log (empty for a plain registry). */
  tokenLog(): TokenLogEntry[];
  /**
   * Token mode: change the lifetime (exp − iat, seconds) of tokens issued from now on, and optionally the
   * reported expires_in. docker-registry accepts a token until 60 s after its exp, so a lifetime of −55 gives
   * tokens that the registry rejects about 5 s after they were issued (docs/testing.md).
   */
  setTokenLifetime(seconds: number, expiresIn?: number): void;
  /** Where the registry keeps a blob on disk (to corrupt or truncate it in place). */
  blobPath(digest: string): string;
  stop(): Promise<void>;
}

/** What pushImage and registryFetch need to know about a registry (a Registry will do). */
export interface RegistryTarget {
  host: string;
  auth?: "none" | "token";
  users?: Record<string, string>;
}

/** "user:password" of a token registry's first user; null for a plain registry. */
export function defaultCreds(registry: RegistryTarget): string | null {
  if (registry.auth !== "token") return null;
  const [user, password] = Object.entries(registry.users ?? {})[0] ?? [];
  return user !== undefined && password !== undefined ? `${user}:${password}` : null;
}

/**
 * fetch() against the registry's HTTP API (`urlPath` like "/v2/test/x/manifests/latest"), doing the bearer
 * token dance when challenged: the token comes from the challenge's realm for its service and scope, as
 * `creds` ("user:password", default the first user of a token registry; null for anonymous).
 */
export async function registryFetch(
  registry: RegistryTarget,
  urlPath: string,
  init: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    creds?: string | null;
  } = {},
): Promise<Response> {
  const url = `http://${registry.host}${urlPath}`;
  const request = (auth?: string): Promise<Response> =>
    fetch(url, {
      method: init.method ?? "GET",
      headers: { ...init.headers, ...(auth !== undefined ? { authorization: auth } : {}) },
      body: init.body,
    });
  const first = await request();
  const challenge = first.headers.get("www-authenticate") ?? "";
  if (first.status !== 401 || !/^Bearer /i.test(challenge)) return first;
  await first.arrayBuffer();
  const params = new Map([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? "", m[2] ?? ""]));
  const realm = new URL(params.get("realm") ?? "");
  for (const k of ["service", "scope"]) {
    const v = params.get(k);
    if (v !== undefined) realm.searchParams.set(k, v);
  }
  const creds = init.creds === undefined ? defaultCreds(registry) : init.creds;
  const tokenRes = await fetch(realm, {
    headers: creds ? { authorization: `Basic ${Buffer.from(creds).toString("base64")}` } : {},
  });
  if (tokenRes.status !== 200) return tokenRes;
  const { token } = (await tokenRes.json()) as { token: string };
  return request(`Bearer ${token}`);
}

/**
 * Writes a containers/Docker-style auth file ({"auths": {HOST: {"auth": base64(user:password)}}}) for `user`
 * (default the first user) of a token registry, for REGISTRY_AUTH_FILE or DOCKER_CONFIG tests. Returns `file`.
 */
export function writeAuthFile(registry: RegistryTarget, file: string, user?: string): string {
  const name = user ?? Object.keys(registry.users ?? {})[0];
  const password = name !== undefined ? registry.users?.[name] : undefined;
  if (name === undefined || password === undefined) throw new Error(`writeAuthFile: no such user ${user}`);
  const auth = Buffer.from(`${name}:${password}`).toString("base64");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ auths: { [registry.host]: { auth } } }, null, 2) + "\n", {
    mode: 0o600,
  });
  return file;
}

/** Why a registry cannot run here, or null. */
export function registryUnavailable(auth: "none" | "token" = "none"): string | null {
  return auth === "token"
    ? unavailable(["docker-registry", "openssl"], "docker-registry openssl")
    : unavailable(["docker-registry"], "docker-registry");
}

/** GET url → status (connection errors reject). */
export function httpStatus(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on("error", reject);
  });
}

function writeJsonAtomic(file: string, value: unknown): void {
  fs.writeFileSync(file + ".tmp", JSON.stringify(value, null, 2) + "\n");
  fs.renameSync(file + ".tmp", file);
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const auth = opts.auth ?? "none";
  const dir = shortTempDir("sr-");
  const procs: ManagedProcess[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop())); // together: each waits for processes naming `dir`
    discardDir(dir);
  };
  try {
    const users = { ...(opts.users ?? DEFAULT_USERS) };
    let tokenUrl: string | null = null;
    let logPath: string | null = null;
    let tokenConfigPath: string | null = null;
    const authYaml: string[] = [];

    if (auth === "token") {
      const keyPath = path.join(dir, "key.pem");
      const certPath = path.join(dir, "cert.pem");
      await run("openssl", [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        keyPath,
        "-out",
        certPath,
        "-days",
        "3650",
        "-subj",
        "/CN=stratum-test-token-issuer",
      ]);
      logPath = path.join(dir, "tokens.jsonl");
      fs.writeFileSync(logPath, "");
      const portFile = path.join(dir, "token.port");
      tokenConfigPath = path.join(dir, "token-server.json");
      const config: TokenServerConfig = {
        host: "127.0.0.1",
        port: 0,
        portFile,
        keyPath,
        certPath,
        issuer: TOKEN_ISSUER,
        users,
        lifetime: opts.tokenLifetime ?? 300,
        ...(opts.tokenExpiresIn !== undefined ? { expiresIn: opts.tokenExpiresIn } : {}),
        logPath,
        parentPid: process.pid,
      };
      writeJsonAtomic(tokenConfigPath, config);
      const tokenProc = spawnManaged(process.execPath, [...nodeScript("token-server"), tokenConfigPath], {
        logPath: path.join(dir, "token-server.log"),
      });
      procs.push(tokenProc);
      await waitUntil("token server", () => fs.existsSync(portFile), { proc: tokenProc, timeoutMs: 15_000 });
      tokenUrl = `http://127.0.0.1:${fs.readFileSync(portFile, "utf8").trim()}/token`;
      authYaml.push(
        "auth:",
        "  token:",
        `    realm: ${tokenUrl}`,
        `    service: ${TOKEN_SERVICE}`,
        `    issuer: ${TOKEN_ISSUER}`,
        `    rootcertbundle: ${certPath}`,
      );
    }

    const configYml = path.join(dir, "config.yml");
    fs.writeFileSync(
      configYml,
      [
        "version: 0.1",
        "log: { level: info, accesslog: { disabled: true } }",
        "storage:",
        `  filesystem: { rootdirectory: ${path.join(dir, "data")} }`,
        "  delete: { enabled: true }",
        "http:",
        "  addr: 127.0.0.1:0",
        "  secret: not-a-secret-test-only",
        ...authYaml,
        "",
      ].join("\n"),
    );
    const registryLogPath = path.join(dir, "registry.log");
    const regProc = spawnManaged("docker-registry", ["serve", configYml], {
      logPath: registryLogPath,
      cleanupDir: dir,
    });
    procs.push(regProc);
    // With addr port 0 the registry picks a free port and logs it: `msg="listening on 127.0.0.1:PORT"`.
    let host = "";
    await waitUntil(
      "docker-registry",
      async () => {
        if (host === "") {
          const m = /listening on (127\.0\.0\.1:[0-9]+)/.exec(fs.readFileSync(registryLogPath, "utf8"));
          if (!m?.[1]) return false;
          host = m[1];
        }
        const status = await httpStatus(`http://${host}/v2/`);
        return status === 200 || status === 401;
      },
      { proc: regProc, timeoutMs: 15_000 },
    );

    let stopping: Promise<void> | undefined;
    return {
      host,
      url: `http://${host}`,
      auth,
      tokenUrl,
      service: auth === "token" ? TOKEN_SERVICE : null,
      users,
      logPath,
      registryLogPath,
      dir,
      tokenLog() {
        if (logPath === null) return [];
        return fs
          .readFileSync(logPath, "utf8")
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => JSON.parse(l) as TokenLogEntry);
      },
      setTokenLifetime(seconds, expiresIn) {
        if (tokenConfigPath === null) throw new Error("setTokenLifetime: not a token registry");
        const config = JSON.parse(fs.readFileSync(tokenConfigPath, "utf8")) as TokenServerConfig;
        config.lifetime = seconds;
        if (expiresIn === undefined) delete config.expiresIn;
        else config.expiresIn = expiresIn;
        writeJsonAtomic(tokenConfigPath, config);
      },
      blobPath(digest) {
        const [alg, hex] = digest.split(":");
        if (alg === undefined || hex === undefined) throw new Error(`not a digest: ${digest}`);
        return path.join(dir, "data/docker/registry/v2/blobs", alg, hex.slice(0, 2), hex, "data");
      },
      stop() {
        stopping ??= cleanup();
        return stopping;
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
