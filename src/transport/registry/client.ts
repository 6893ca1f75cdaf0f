// A small client for one registry's HTTP API v2 (distribution-spec; docs/pull.md "Registries"): the ping
// (`GET /v2/`), manifests by tag or digest, and blobs as byte streams. Built on undici@7: one Agent per client
// with a bounded pool per origin, plus an EnvHttpProxyAgent when HTTP(S)_PROXY is set (NO_PROXY honoured;
// loopback is never proxied).
//
//   Scheme     https://, with a fall back to http:// only for a loopback registry (127.0.0.0/8, ::1, localhost) or
//              with `insecure`; plain HTTP anywhere else (the registry, its token realm, a redirect) is E_USAGE.
//   Auth       the ping's (or a later 401's) WWW-Authenticate: Bearer → a token from the realm per repository pull
//              scope (GET with HTTP Basic when there is a password; POST grant_type=refresh_token for an identity
//              token), cached until `expires_in` (default 60 s) and renewed early, or at once on a 401; Basic → the
//              credential. Credentials come from findCredential (credentials.ts), looked up once per repository.
//   Retries    429 (Retry-After honoured, capped), 5xx, 408, connection resets, refusals and timeouts: exponential
//              backoff with jitter, `maxAttempts` tries (default 5) per request.
//   Blobs      streamed, never buffered; an interrupted download resumes with `Range: bytes=N-` (a 206 must carry
//              the matching Content-Range; a 200 is read from the start and its first N bytes are skipped, since
//              the consumer has them already). Redirects (CDNs) are followed by hand, dropping Authorization when
//              the origin changes.
//   Manifests  read up to `maxManifestBytes` (4 MiB); their sha256 is checked against a digest reference and
//              against Docker-Content-Digest when the registry sends it.
//   TLS        the default roots plus `$SSL_CERT_FILE` and certs.d directories (`<dir>/<host[:port]>/*.crt` CAs,
//              `*.cert` + `*.key` client certificate), /etc/containers/certs.d and /etc/docker/certs.d by default,
//              or one explicit `certDir`; `tlsVerify: false` accepts any certificate from the registry's host.
//
// Secrets (passwords, tokens, signed redirect URLs' queries) never appear in messages, logs or errors: messages
// name the URL's origin and path only, and text a server sent is scrubbed of every secret this client holds.

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { setTimeout as sleepTimer } from "node:timers/promises";
import * as tls from "node:tls";
import { Agent, buildConnector, EnvHttpProxyAgent, type Dispatcher } from "undici";
import { isErrno, StratumError } from "../../errors.ts";
import { MANIFEST_ACCEPT } from "../../oci/media-types.ts";
import { checkDigest, registryApiHost } from "../../oci/reference.ts";
import {
  basicChallenge,
  bearerChallenge,
  parseWwwAuthenticate,
  tokenRequestUrl,
  type BearerChallenge,
} from "./challenge.ts";
import { findCredential, type CredentialEnvironment, type RegistryCredential } from "./credentials.ts";

export const DEFAULT_CERTS_DIRS: readonly string[] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_ATTEMPTS = 5;
/** `expires_in` when the token service does not say (distribution token spec). */
export const DEFAULT_TOKEN_LIFETIME_S = 60;

export interface RegistryClientOptions {
  /** Allow plain HTTP to a registry that is not on loopback (HTTPS is still tried first). Default false. */
  insecure?: boolean;
  /**
   * Use this scheme only, instead of HTTPS with the plain-HTTP fall back where that is allowed. `"http"` for a
   * registry that is not on loopback needs `insecure` (E_USAGE otherwise).
   */
  scheme?: "https" | "http";
  /** A credential given explicitly (`--creds USER:PASSWORD`): used as is, nothing is looked up. */
  credential?: RegistryCredential;
  /** Only this user's credentials count (`docker://USER@…`, `--creds USER`). */
  username?: string;
  /** Where findCredential looks (environment, home directory); default the process's. */
  credentialEnvironment?: CredentialEnvironment;
  /** Look credentials up at all (default true); false pulls anonymously unless `credential` is given. */
  lookupCredentials?: boolean;
  /** Environment for HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** certs.d roots searched for `<host[:port]>/` subdirectories; default DEFAULT_CERTS_DIRS. */
  certsDirs?: readonly string[];
  /**
   * One directory of `*.crt`, `*.cert` and `*.key` files used instead of the certs.d lookup (skopeo's
   * `--cert-dir`); it must exist.
   */
  certDir?: string;
  /**
   * Verify the registry's TLS certificate (default true). False accepts any certificate from the registry's own
   * host (its token service and redirect targets are still verified, except through a proxy, where the setting
   * covers every host). Independent of `insecure`, which is about plain HTTP.
   */
  tlsVerify?: boolean;
  /** Tries per request, counting the first (default 5). */
  maxAttempts?: number;
  /** First backoff delay (default 500 ms); it doubles per failure, with jitter. */
  retryBaseDelayMs?: number;
  /** Longest wait between tries, for backoff and Retry-After alike (default 30 s). */
  retryMaxDelayMs?: number;
  /** Connections per origin (default 6). */
  connections?: number;
  connectTimeoutMs?: number;
  /** Time to wait for response headers (default 60 s). */
  headersTimeoutMs?: number;
  /** Longest silence while a body is read (default 60 s); then the download is retried or resumed. */
  bodyTimeoutMs?: number;
  maxManifestBytes?: number;
  userAgent?: string;
  /** Debug lines (requests, retries, token renewals). Never contain secrets. */
  log?: (line: string) => void;
}

export interface ManifestResponse {
  /** The manifest's exact bytes. */
  bytes: Buffer;
  /** "sha256:<hex>" of `bytes`. */
  digest: string;
  /** The Content-Type the registry sent, if any. */
  contentType?: string;
}

export interface BlobRequestOptions {
  /**
   * The expected size: a download cut off before its Content-Length is resumed; a complete response of another
   * length, or more bytes than this, is E_CORRUPT.
   */
  size?: number;
  onBytes?: (n: number) => void;
  signal?: AbortSignal;
  /** Names the blob in errors (default `<registry>/<repository>@<digest>`). */
  what?: string;
}

type Scheme = "https" | "http";

type AuthState =
  | { kind: "none" }
  | { kind: "basic" }
  | { kind: "bearer"; bearer: BearerChallenge }
  | { kind: "other"; scheme: string };

interface CachedToken {
  token: string;
  expiresAt: number;
}

interface SendRequest {
  url: URL;
  method: "GET" | "HEAD" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** Registry requests name their repository: they carry its authorization and renew it on a 401. */
  repository?: string;
  signal?: AbortSignal;
  what: string;
  /** Connection errors are not retried (the HTTPS probe of a registry that may speak plain HTTP). */
  noNetworkRetry?: boolean;
}

type Response = Dispatcher.ResponseData;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MAX_ERROR_TEXT = 16 * 1024;
const RETRYABLE_CODES = new Set([
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ENETUNREACH",
  "ENETDOWN",
  "EHOSTUNREACH",
  "EAI_AGAIN",
]);

// ---- small helpers ------------------------------------------------------------------------------------------

/** Is `host` (a host[:port] as in a reference, IPv6 in brackets) this machine's loopback? */
export function isLoopbackHost(host: string): boolean {
  let h = host.toLowerCase();
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.includes(":") && !net.isIPv6(h)) h = h.slice(0, h.lastIndexOf(":"));
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (net.isIPv4(h)) return h.startsWith("127.");
  if (net.isIPv6(h)) {
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    if (m !== null) return m[1].startsWith("127.");
    return /^(?:0{0,4}:){2,7}0{0,3}1$/.test(h) || h === "::1";
  }
  return false;
}

function header(res: Response, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

/** A URL as messages show it: origin and path, never the query (signed CDN URLs carry credentials there). */
function showUrl(url: URL): string {
  return url.origin + url.pathname;
}

function errorText(err: unknown): string {
  if (err instanceof StratumError) return err.message;
  // OpenSSL's messages are long multi-line dumps; its `reason` says the same in a few words.
  const reason = (err as { reason?: unknown } | null)?.reason;
  if (err instanceof Error && typeof reason === "string" && reason !== "")
    return `${(err as NodeJS.ErrnoException).code ?? "TLS error"}: ${reason}`;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : "";
    return `${typeof code === "string" && !err.message.includes(code) ? `${code}: ` : ""}${err.message}${cause}`;
  }
  return String(err);
}

function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

function isRetryableError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && RETRYABLE_CODES.has(code)) return true;
  }
  return false;
}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** Drain (small) or drop a body so the connection can be reused or is closed. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body.dump({ limit: 64 * 1024 });
  } catch {
    // a body that failed is gone either way
  }
}

/** A repository path as the reference grammar allows it (so it is safe in a URL path). */
function checkRepository(repository: string): void {
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(repository))
    throw new StratumError("E_USAGE", `invalid repository name "${repository}"`);
}

/** Drop a body unread: the connection is closed. */
function drop(res: Response): void {
  res.body.on("error", () => undefined); // the abort that destroying causes is expected
  res.body.destroy();
}

async function readLimited(res: Response, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      drop(res);
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function abortError(signal: AbortSignal, what: string): StratumError {
  return new StratumError("E_IO", `${what}: aborted`, { cause: signal.reason });
}

function hashOf(algorithm: string, bytes: Buffer): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
}

/** Retry-After as milliseconds (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

// A Content-Range value: `bytes START-END/TOTAL` (TOTAL may be `*`), or a 416's `bytes */TOTAL` (as
// `unsatisfied`).
export function parseContentRange(
  value: string | undefined,
): { start: number; end: number; total?: number } | { unsatisfied: number } | undefined {
  if (value === undefined) return undefined;
  let m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim());
  if (m !== null)
    return {
      start: Number(m[1]),
      end: Number(m[2]),
      ...(m[3] !== "*" ? { total: Number(m[3]) } : {}),
    };
  m = /^bytes\s+\*\/(\d+)$/i.exec(value.trim());
  return m !== null ? { unsatisfied: Number(m[1]) } : undefined;
}

/**
 * Pass a blob stream through, checking its digest (sha256 or sha512) and, when given, its size; E_CORRUPT names
 * `what` when they differ. For callers that want a transport-level check (the pull pipeline has its own).
 */
export async function* verifyBlob(
  stream: AsyncIterable<Buffer>,
  digest: string,
  size: number | undefined,
  what: string,
): AsyncGenerator<Buffer, void, undefined> {
  checkDigest(digest, "E_BAD_INPUT", what);
  const algorithm = digest.slice(0, digest.indexOf(":"));
  const hash = createHash(algorithm);
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.length;
    if (size !== undefined && n > size)
      throw new StratumError("E_CORRUPT", `${what}: more than the expected ${size} bytes`);
    hash.update(chunk);
    yield chunk;
  }
  if (size !== undefined && n !== size)
    throw new StratumError("E_CORRUPT", `${what}: ${n} bytes, expected ${size}`);
  const got = `${algorithm}:${hash.digest("hex")}`;
  if (got !== digest)
    throw new StratumError("E_CORRUPT", `${what}: content digest is ${got}, expected ${digest}`);
}

// ---- TLS material -------------------------------------------------------------------------------------------

export interface TlsMaterial {
  /** Extra trusted CAs (PEM), in addition to Node's defaults. */
  ca: string[];
  /** Where they came from, for messages. */
  caFiles: string[];
  clientCert?: { cert: string; key: string; certFile: string };
}

function readPem(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new StratumError("E_IO", `cannot read certificate file ${file}: ${errorText(err)}`, { cause: err });
  }
}

/** The certificate directories for a registry: `<root>/<host[:port]>` for each root and each of `hostDirs`. */
export function certsDirsFor(hostDirs: readonly string[], roots: readonly string[]): string[] {
  return roots.flatMap((root) => [...new Set(hostDirs)].map((host) => path.join(root, host)));
}

/**
 * The CAs and client certificate for a registry: `$SSL_CERT_FILE`, then in each of `dirs` (missing ones are
 * skipped unless `required`), `*.crt` as CAs and `NAME.cert` + `NAME.key` as the client certificate (the first
 * pair by name). A `.cert` without its `.key`, or the reverse, is E_BAD_INPUT.
 */
export function loadTlsMaterial(
  dirs: readonly string[],
  env: NodeJS.ProcessEnv,
  required = false,
): TlsMaterial {
  const material: TlsMaterial = { ca: [], caFiles: [] };
  const certFile = env.SSL_CERT_FILE;
  // A file Node already trusts (NODE_EXTRA_CA_CERTS is read at startup) needs no second copy.
  if (certFile && certFile !== process.env.NODE_EXTRA_CA_CERTS && fs.existsSync(certFile)) {
    material.ca.push(readPem(certFile));
    material.caFiles.push(certFile);
  }
  for (const dir of dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch (err) {
      if (!required && (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR"))) continue;
      if (isErrno(err, "ENOENT"))
        throw new StratumError("E_NOT_FOUND", `certificate directory ${dir} does not exist`);
      throw new StratumError("E_IO", `cannot read certificate directory ${dir}: ${errorText(err)}`, {
        cause: err,
      });
    }
    for (const name of names) {
      const file = path.join(dir, name);
      if (name.endsWith(".crt")) {
        material.ca.push(readPem(file));
        material.caFiles.push(file);
      } else if (name.endsWith(".cert")) {
        const keyName = name.slice(0, -".cert".length) + ".key";
        if (!names.includes(keyName))
          throw new StratumError(
            "E_BAD_INPUT",
            `client certificate ${file} has no key ${keyName} next to it`,
          );
        material.clientCert ??= {
          cert: readPem(file),
          key: readPem(path.join(dir, keyName)),
          certFile: file,
        };
      } else if (name.endsWith(".key")) {
        const certName = name.slice(0, -".key".length) + ".cert";
        if (!names.includes(certName))
          throw new StratumError(
            "E_BAD_INPUT",
            `client key ${file} has no certificate ${certName} next to it`,
          );
      }
    }
  }
  return material;
}

function secureContextFor(material: TlsMaterial): tls.SecureContext | undefined {
  if (material.ca.length === 0 && material.clientCert === undefined) return undefined;
  const options: tls.SecureContextOptions = {};
  if (material.ca.length > 0) {
    // `ca` replaces Node's trust store: start from it (bundled roots plus NODE_EXTRA_CA_CERTS).
    const extra = process.env.NODE_EXTRA_CA_CERTS;
    const ca = [...tls.rootCertificates];
    if (extra && fs.existsSync(extra)) ca.push(readPem(extra));
    options.ca = [...ca, ...material.ca];
  }
  if (material.clientCert !== undefined) {
    options.cert = material.clientCert.cert;
    options.key = material.clientCert.key;
  }
  try {
    return tls.createSecureContext(options);
  } catch (err) {
    const files = [...material.caFiles, ...(material.clientCert ? [material.clientCert.certFile] : [])];
    throw new StratumError(
      "E_BAD_INPUT",
      `bad certificate or key in ${files.join(", ")}: ${errorText(err)}`,
      {
        cause: err,
      },
    );
  }
}

// ---- the client ---------------------------------------------------------------------------------------------

export class RegistryClient {
  /** The registry's name as references write it (`docker.io`, `127.0.0.1:5000`). */
  readonly registry: string;
  /** The host serving its API (`registry-1.docker.io` for Docker Hub). */
  readonly apiHost: string;
  readonly insecure: boolean;
  readonly maxAttempts: number;

  readonly #opts: RegistryClientOptions;
  /** Loopback, and everything when no proxy is configured. */
  readonly #direct: Agent;
  /** Set when HTTP(S)_PROXY is. */
  readonly #proxied: EnvHttpProxyAgent | undefined;
  readonly #maxManifestBytes: number;
  readonly #baseDelay: number;
  readonly #maxDelay: number;
  #scheme: Scheme | undefined;
  #auth: AuthState | undefined;
  #pinging: Promise<void> | undefined;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #pendingTokens = new Map<string, Promise<string>>();
  readonly #credentials = new Map<string, Promise<RegistryCredential | undefined>>();
  /** Scopes a 401 named for a repository beyond its pull scope (asked for in its next token request). */
  readonly #extraScopes = new Map<string, string[]>();
  /** Every secret this client holds or has seen, scrubbed from server text that ends up in errors. */
  readonly #secrets = new Set<string>();
  #closed = false;

  constructor(registry: string, opts: RegistryClientOptions = {}) {
    this.registry = registry;
    this.apiHost = registryApiHost(registry);
    this.insecure = opts.insecure ?? false;
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    this.#opts = opts;
    this.#maxManifestBytes = opts.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES;
    this.#baseDelay = opts.retryBaseDelayMs ?? 500;
    this.#maxDelay = opts.retryMaxDelayMs ?? 30_000;
    if (opts.scheme === "http") this.#checkPlainHttp(this.apiHost, `registry ${this.apiHost}`);
    if (opts.credential !== undefined) this.#remember(opts.credential);

    const env = opts.env ?? process.env;
    const material =
      opts.certDir !== undefined
        ? loadTlsMaterial([opts.certDir], env, true)
        : loadTlsMaterial(certsDirsFor([registry, this.apiHost], opts.certsDirs ?? DEFAULT_CERTS_DIRS), env);
    const context = secureContextFor(material);
    const tlsOptions = context !== undefined ? { secureContext: context } : {};
    const timeout = opts.connectTimeoutMs ?? 30_000;
    const verifying = buildConnector({ timeout, ...tlsOptions });
    let connect = verifying;
    if (opts.tlsVerify === false) {
      const lenient = buildConnector({ timeout, ...tlsOptions, rejectUnauthorized: false });
      const own = new URL(`https://${this.apiHost}`);
      connect = (o, callback) => {
        const port = o.port !== "" ? o.port : o.protocol === "https:" ? "443" : "80";
        const mine = o.hostname.toLowerCase() === own.hostname && port === (own.port || "443");
        (mine ? lenient : verifying)(o, callback);
      };
    }
    const agentOptions = {
      connections: opts.connections ?? 6,
      headersTimeout: opts.headersTimeoutMs ?? 60_000,
      bodyTimeout: opts.bodyTimeoutMs ?? 60_000,
      connect,
    };
    this.#direct = new Agent(agentOptions);
    const httpProxy = env.http_proxy ?? env.HTTP_PROXY ?? "";
    const httpsProxy = env.https_proxy ?? env.HTTPS_PROXY ?? "";
    this.#proxied =
      httpProxy !== "" || httpsProxy !== ""
        ? new EnvHttpProxyAgent({
            ...agentOptions,
            httpProxy,
            httpsProxy,
            noProxy: env.no_proxy ?? env.NO_PROXY ?? "",
            requestTls: opts.tlsVerify === false ? { ...tlsOptions, rejectUnauthorized: false } : tlsOptions,
          })
        : undefined;
  }

  /** Go's rule, which docker, podman and skopeo follow: loopback is never proxied. */
  #dispatcherFor(url: URL): Dispatcher {
    return this.#proxied !== undefined && !isLoopbackHost(url.host) ? this.#proxied : this.#direct;
  }

  /** `https://host[:port]` or `http://…` once the ping has chosen; undefined before. */
  get baseUrl(): string | undefined {
    return this.#scheme === undefined ? undefined : `${this.#scheme}://${this.apiHost}`;
  }

  /** The authentication the registry asked for at the ping ("none", "basic", "bearer"). */
  get authScheme(): string | undefined {
    return this.#auth?.kind === "other" ? this.#auth.scheme : this.#auth?.kind;
  }

  /**
   * `GET /v2/` (once per client; later calls share it): chooses the scheme and learns the authentication the
   * registry wants.
   */
  ping(signal?: AbortSignal): Promise<void> {
    this.#pinging ??= this.#ping(signal).catch((err: unknown) => {
      this.#pinging = undefined;
      throw err;
    });
    return this.#pinging;
  }

  /**
   * A manifest or index by tag or digest, with the Accept header for the four supported manifest types. A digest
   * reference is checked against the bytes (sha256 or sha512), and so is a sha256 Docker-Content-Digest.
   */
  async manifest(
    repository: string,
    reference: string,
    opts: { signal?: AbortSignal; what?: string } = {},
  ): Promise<ManifestResponse> {
    checkRepository(repository);
    const isDigest = reference.includes(":");
    if (isDigest) checkDigest(reference, "E_USAGE", `manifest reference for ${repository}`);
    else if (!/^\w[\w.-]{0,127}$/.test(reference))
      throw new StratumError("E_USAGE", `${repository}: invalid tag "${reference}"`);
    const what = opts.what ?? `${this.registry}/${repository}${isDigest ? "@" : ":"}${reference}`;
    await this.ping(opts.signal);
    const url = this.#url(`/v2/${repository}/manifests/${reference}`);
    let failures = 0;
    for (;;) {
      const res = await this.#send({
        url,
        method: "GET",
        headers: { accept: MANIFEST_ACCEPT },
        repository,
        signal: opts.signal,
        what: `${what}: manifest`,
      });
      if (res.statusCode !== 200) throw await this.#statusError(res, `${what}: manifest`, repository);
      const length = header(res, "content-length");
      if (length !== undefined && Number(length) > this.#maxManifestBytes) {
        drop(res);
        throw this.#tooBig(what);
      }
      let bytes: Buffer | undefined;
      try {
        bytes = await readLimited(res, this.#maxManifestBytes);
      } catch (err) {
        drop(res);
        if (opts.signal?.aborted) throw abortError(opts.signal, what);
        if (!isRetryableError(err) || ++failures >= this.maxAttempts)
          throw this.#networkError(err, `${what}: manifest`, failures);
        this.#log(`${what}: manifest download failed (${errorText(err)}), retrying`);
        await this.#sleep(this.#backoff(failures), opts.signal, what);
        continue;
      }
      if (bytes === undefined) throw this.#tooBig(what);
      const digest = hashOf("sha256", bytes);
      if (isDigest) {
        const got = hashOf(reference.slice(0, reference.indexOf(":")), bytes);
        if (got !== reference)
          throw new StratumError(
            "E_CORRUPT",
            `${what}: the manifest served has digest ${got}, not ${reference}`,
          );
      }
      const served = header(res, "docker-content-digest")?.trim();
      if (served !== undefined && /^sha(256|512):[a-f0-9]+$/.test(served)) {
        const got = served.startsWith("sha256:") ? digest : hashOf("sha512", bytes);
        if (got !== served)
          throw new StratumError(
            "E_CORRUPT",
            `${what}: the manifest's bytes have digest ${got} but the registry says ${served}`,
          );
      }
      const contentType = header(res, "content-type");
      return contentType !== undefined ? { bytes, digest, contentType } : { bytes, digest };
    }
  }

  /**
   * A blob's bytes, streamed (chunks as they arrive, never the whole blob in memory). Transient failures are
   * retried; a download cut short resumes where it stopped, so the stream is the whole blob once. The digest is
   * not checked here (see verifyBlob).
   */
  async *blob(
    repository: string,
    digest: string,
    opts: BlobRequestOptions = {},
  ): AsyncGenerator<Buffer, void, undefined> {
    checkRepository(repository);
    checkDigest(digest, "E_BAD_INPUT", `blob of ${repository}`);
    const what = opts.what ?? `${this.registry}/${repository}@${digest}`;
    const { size, signal } = opts;
    await this.ping(signal);
    const url = this.#url(`/v2/${repository}/blobs/${digest}`);
    let offset = 0;
    let failures = 0;
    let interruptions = 0;
    let useRange = true;
    const interrupted = async (problem: string, cause: unknown, progressed: boolean): Promise<void> => {
      failures = progressed ? 1 : failures + 1;
      interruptions++;
      if (failures >= this.maxAttempts || interruptions >= this.maxAttempts * 5) {
        const at = `after ${offset}${size !== undefined ? ` of ${size}` : ""} bytes`;
        throw new StratumError("E_IO", `${what}: ${problem} ${at}; gave up after ${interruptions} tries`, {
          cause,
        });
      }
      this.#log(`${what}: ${problem} at byte ${offset}, resuming`);
      await this.#sleep(this.#backoff(failures), signal, what);
    };

    for (;;) {
      const ranged = offset > 0 && useRange;
      const res = await this.#send({
        url,
        method: "GET",
        headers: ranged ? { range: `bytes=${offset}-` } : {},
        repository,
        signal,
        what: `${what}: blob`,
      });
      let skip = 0;
      if (res.statusCode === 206 && ranged) {
        const cr = parseContentRange(header(res, "content-range"));
        if (
          cr === undefined ||
          !("start" in cr) ||
          cr.start !== offset ||
          (size !== undefined && cr.total !== undefined && cr.total !== size)
        ) {
          await discard(res);
          useRange = false; // the server's ranges are not usable: read from the start instead
          await interrupted(
            `the registry answered a Range request with Content-Range ${String(header(res, "content-range"))}`,
            undefined,
            false,
          );
          continue;
        }
      } else if (res.statusCode === 416 && ranged && size === undefined) {
        const cr = parseContentRange(header(res, "content-range"));
        await discard(res);
        if (cr !== undefined && "unsatisfied" in cr && cr.unsatisfied === offset) return; // it was complete
        throw new StratumError("E_IO", `${what}: the registry refused to resume at byte ${offset} (416)`);
      } else if (res.statusCode === 200) {
        skip = offset; // the whole blob again: the consumer already has the first `offset` bytes
        const length = header(res, "content-length");
        if (size !== undefined && length !== undefined && Number(length) !== size) {
          drop(res);
          throw new StratumError(
            "E_CORRUPT",
            `${what}: the registry sends ${length} bytes, expected ${size}`,
          );
        }
      } else {
        throw await this.#statusError(res, `${what}: blob`, repository);
      }

      const before = offset;
      let failed: unknown;
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          let c = chunk;
          if (skip > 0) {
            if (c.length <= skip) {
              skip -= c.length;
              continue;
            }
            c = c.subarray(skip);
            skip = 0;
          }
          if (size !== undefined && offset + c.length > size)
            throw new StratumError(
              "E_CORRUPT",
              `${what}: the registry sent more than the expected ${size} bytes`,
            );
          offset += c.length;
          opts.onBytes?.(c.length);
          yield c;
        }
      } catch (err) {
        if (err instanceof StratumError) throw err;
        if (signal?.aborted) throw abortError(signal, what);
        if (!isRetryableError(err)) throw this.#networkError(err, `${what}: blob`, failures + 1);
        failed = err;
      } finally {
        if (!res.body.readableEnded && !res.body.destroyed) drop(res);
      }
      if (failed !== undefined) {
        await interrupted(`download interrupted (${errorText(failed)})`, failed, offset > before);
        continue;
      }
      if (skip > 0) {
        await interrupted("the registry sent a shorter blob than before", undefined, false);
        continue;
      }
      if (size !== undefined && offset < size) {
        await interrupted("the body ended early", undefined, offset > before);
        continue;
      }
      return;
    }
  }

  /** Close the connections (in-flight requests are aborted). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([this.#direct.destroy(), this.#proxied?.destroy()]);
  }

  // ---- scheme and ping --------------------------------------------------------------------------------------

  #url(pathname: string): URL {
    if (this.#scheme === undefined) throw new Error("RegistryClient: ping first");
    return new URL(`${this.#scheme}://${this.apiHost}${pathname}`);
  }

  /** Refuse plain HTTP to `host` unless it is loopback or the client is insecure. */
  #checkPlainHttp(host: string, what: string): void {
    if (this.insecure || isLoopbackHost(host)) return;
    throw new StratumError(
      "E_USAGE",
      `${what}: plain HTTP to ${host} is refused: it is not on this machine (loopback), and anyone on the way ` +
        "could read or change the traffic; use HTTPS, or allow plain HTTP for this registry explicitly (insecure)",
    );
  }

  async #ping(signal: AbortSignal | undefined): Promise<void> {
    const httpAllowed = this.insecure || isLoopbackHost(this.apiHost);
    const schemes: Scheme[] =
      this.#opts.scheme !== undefined ? [this.#opts.scheme] : httpAllowed ? ["https", "http"] : ["https"];
    let httpsFailure: unknown;
    for (const [i, scheme] of schemes.entries()) {
      const last = i === schemes.length - 1;
      const url = new URL(`${scheme}://${this.apiHost}/v2/`);
      let res: Response;
      try {
        res = await this.#send({
          url,
          method: "GET",
          headers: {},
          signal,
          what: `registry ${url.origin}`,
          noNetworkRetry: !last,
        });
      } catch (err) {
        if (!last && err instanceof StratumError && err.code === "E_IO") {
          this.#log(`${errorText(err)}; trying plain HTTP`);
          httpsFailure = err;
          continue;
        }
        if (
          scheme === "https" &&
          !httpAllowed &&
          /wrong version number|EPROTO|packet length/i.test(errorText(err))
        )
          throw new StratumError(
            "E_IO",
            `${errorText(err)} (the server does not seem to speak TLS; plain HTTP is used only for a loopback ` +
              "registry or one allowed explicitly as insecure)",
            { cause: err },
          );
        if (httpsFailure !== undefined && err instanceof StratumError)
          throw new StratumError("E_IO", `${err.message} (HTTPS failed too: ${errorText(httpsFailure)})`, {
            cause: err,
          });
        throw err;
      }
      this.#scheme = scheme;
      if (res.statusCode === 200) {
        await discard(res);
        this.#auth ??= { kind: "none" };
        return;
      }
      if (res.statusCode === 401) {
        const challenge = header(res, "www-authenticate");
        await discard(res);
        this.#auth = this.#authFromChallenge(challenge, `registry ${url.origin}`);
        return;
      }
      if (res.statusCode === 404) {
        await discard(res);
        throw new StratumError(
          "E_UNSUPPORTED",
          `${url.origin} does not serve the registry API v2 (GET /v2/: 404)`,
        );
      }
      throw await this.#statusError(res, `registry ${url.origin}`, undefined);
    }
  }

  #authFromChallenge(value: string | undefined, what: string): AuthState {
    if (value === undefined || value.trim() === "") return { kind: "other", scheme: "(no WWW-Authenticate)" };
    const challenges = parseWwwAuthenticate(value);
    const bearer = bearerChallenge(challenges);
    if (bearer !== undefined) {
      const realm = new URL(bearer.realm);
      if (realm.protocol === "http:")
        this.#checkPlainHttp(realm.host, `${what}: token service ${showUrl(realm)}`);
      return { kind: "bearer", bearer: { ...bearer, scopes: [] } };
    }
    if (basicChallenge(challenges) !== undefined) return { kind: "basic" };
    return { kind: "other", scheme: challenges.map((c) => c.scheme).join(", ") };
  }

  // ---- authentication ---------------------------------------------------------------------------------------

  #remember(credential: RegistryCredential | undefined): void {
    if (credential === undefined) return;
    const secret = credential.reveal();
    if (secret.length >= 4) this.#secrets.add(secret);
    this.#secrets.add(credential.basicAuthorization().slice("Basic ".length));
  }

  /** Replace every secret this client knows in `text` (something a server sent) by `<redacted>`. */
  #scrub(text: string): string {
    let out = text;
    for (const s of this.#secrets) if (s !== "") out = out.split(s).join("<redacted>");
    return out;
  }

  #credential(repository: string): Promise<RegistryCredential | undefined> {
    let p = this.#credentials.get(repository);
    if (p === undefined) {
      const o = this.#opts;
      p =
        o.credential !== undefined || o.lookupCredentials !== false
          ? findCredential(
              {
                registry: this.registry,
                repository,
                ...(o.username !== undefined ? { username: o.username } : {}),
                ...(o.credential !== undefined ? { credential: o.credential } : {}),
              },
              o.credentialEnvironment ?? {},
            )
          : Promise.resolve(undefined);
      p = p.then((c) => {
        this.#remember(c);
        return c;
      });
      p.catch(() => this.#credentials.delete(repository));
      this.#credentials.set(repository, p);
    }
    return p;
  }

  /** How the client authenticates for a repository, for messages. */
  async #identity(repository: string | undefined): Promise<string> {
    const c =
      repository === undefined ? undefined : await this.#credential(repository).catch(() => undefined);
    if (c === undefined) return `anonymously (no credentials found for ${this.registry})`;
    return `as "${c.username}" (${c.kind} from ${c.source})`;
  }

  /** The Authorization value for a registry request, or undefined (anonymous). */
  async #authorization(repository: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    const auth = this.#auth;
    if (auth === undefined || auth.kind === "none" || auth.kind === "other") return undefined;
    const cred = await this.#credential(repository);
    if (cred?.kind === "registry-token") return `Bearer ${cred.reveal()}`;
    if (auth.kind === "basic") return cred?.basicAuthorization();
    return `Bearer ${await this.#token(auth.bearer, repository, signal)}`;
  }

  #token(bearer: BearerChallenge, repository: string, signal: AbortSignal | undefined): Promise<string> {
    const cached = this.#tokens.get(repository);
    if (cached !== undefined && Date.now() < cached.expiresAt) return Promise.resolve(cached.token);
    let pending = this.#pendingTokens.get(repository);
    if (pending === undefined) {
      pending = this.#fetchToken(bearer, repository, signal).finally(() =>
        this.#pendingTokens.delete(repository),
      );
      this.#pendingTokens.set(repository, pending);
    }
    return pending;
  }

  async #fetchToken(
    bearer: BearerChallenge,
    repository: string,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const cred = await this.#credential(repository);
    const scopes = [`repository:${repository}:pull`, ...(this.#extraScopes.get(repository) ?? [])];
    const realm = new URL(bearer.realm);
    const what = `${this.registry}/${repository}: token service ${showUrl(realm)}`;
    let res: Response;
    if (cred?.kind === "identity-token") {
      // OAuth2 refresh-token grant (distribution "token authentication with OAuth2").
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: cred.reveal(),
        client_id: "stratum",
        scope: [...new Set(scopes)].join(" "),
      });
      if (bearer.service !== undefined) form.set("service", bearer.service);
      res = await this.#send({
        url: realm,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        signal,
        what,
      });
    } else {
      const url = tokenRequestUrl(bearer, scopes);
      const headers: Record<string, string> = {};
      if (cred?.kind === "password") {
        headers.authorization = cred.basicAuthorization();
        if (cred.username !== "") url.searchParams.set("account", cred.username);
      }
      res = await this.#send({ url, method: "GET", headers, signal, what });
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      await discard(res);
      throw new StratumError(
        "E_USAGE",
        `${what} refused to authenticate ${await this.#identity(repository)} (HTTP ${res.statusCode}); ` +
          "check the user name and password",
      );
    }
    if (res.statusCode !== 200) throw await this.#statusError(res, what, undefined);
    const text = await readLimited(res, 1024 * 1024);
    let reply: unknown;
    try {
      reply = JSON.parse(text?.toString("utf8") ?? "");
    } catch {
      reply = undefined;
    }
    const o = (typeof reply === "object" && reply !== null ? reply : {}) as Record<string, unknown>;
    const token =
      typeof o.token === "string" && o.token !== ""
        ? o.token
        : typeof o.access_token === "string" && o.access_token !== ""
          ? o.access_token
          : undefined;
    if (token === undefined) throw new StratumError("E_BAD_INPUT", `${what}: the reply has no token`);
    this.#secrets.add(token);
    if (typeof o.refresh_token === "string" && o.refresh_token !== "") this.#secrets.add(o.refresh_token);
    const expiresIn =
      typeof o.expires_in === "number" && Number.isFinite(o.expires_in) && o.expires_in > 0
        ? o.expires_in
        : DEFAULT_TOKEN_LIFETIME_S;
    const lifetimeMs = expiresIn * 1000;
    // Renew a little early: a token used right at its expiry would be refused mid-pull.
    const expiresAt = Date.now() + lifetimeMs - Math.min(10_000, lifetimeMs / 10);
    this.#tokens.set(repository, { token, expiresAt });
    this.#log(`${what}: new token for ${scopes.join(" ")}, expires in ${expiresIn} s`);
    return token;
  }

  /** A 401 on a registry request: learn the challenge and forget the token that was refused. */
  #unauthorized(
    res: Response,
    repository: string,
    usedAuthorization: string | undefined,
    what: string,
  ): void {
    const challenge = header(res, "www-authenticate");
    if (challenge !== undefined && challenge.trim() !== "") {
      const state = this.#authFromChallenge(challenge, what);
      if (state.kind === "bearer") {
        const scopes = bearerChallenge(parseWwwAuthenticate(challenge))?.scopes ?? [];
        const own = `repository:${repository}:pull`;
        const extra = scopes.filter((s) => s !== own);
        if (extra.length > 0) this.#extraScopes.set(repository, extra);
      }
      this.#auth = state;
    }
    const cached = this.#tokens.get(repository);
    if (cached !== undefined && usedAuthorization === `Bearer ${cached.token}`)
      this.#tokens.delete(repository);
  }

  // ---- requests ---------------------------------------------------------------------------------------------

  #log(line: string): void {
    this.#opts.log?.(line);
  }

  #backoff(failures: number): number {
    const d = Math.min(this.#maxDelay, this.#baseDelay * 2 ** Math.max(0, failures - 1));
    return d / 2 + Math.random() * (d / 2);
  }

  async #sleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
    try {
      await sleepTimer(ms, undefined, signal !== undefined ? { signal } : {});
    } catch (err) {
      if (signal?.aborted) throw abortError(signal, what);
      throw err;
    }
  }

  /**
   * One request with its retries: 401 renewals for registry requests (at most two in a row), 429/5xx/408 and
   * connection failures with backoff. Returns the final response, whatever its status; the caller reads or
   * discards the body.
   */
  async #send(req: SendRequest): Promise<Response> {
    if (this.#closed) throw new StratumError("E_USAGE", `${req.what}: the registry client is closed`);
    let failures = 0;
    let renewals = 0;
    for (;;) {
      if (req.signal?.aborted) throw abortError(req.signal, req.what);
      const headers: Record<string, string> = {
        "user-agent": this.#opts.userAgent ?? "stratum/0.1",
        ...req.headers,
      };
      let authorization: string | undefined;
      if (req.repository !== undefined) {
        authorization = await this.#authorization(req.repository, req.signal);
        if (authorization !== undefined) headers.authorization = authorization;
      }
      let res: Response;
      try {
        res = await this.#fetch(req, headers);
      } catch (err) {
        if (err instanceof StratumError) throw err;
        if (req.signal?.aborted) throw abortError(req.signal, req.what);
        failures++;
        if (req.noNetworkRetry || !isRetryableError(err) || failures >= this.maxAttempts)
          throw this.#networkError(err, req.what, failures);
        this.#log(`${req.what}: ${errorText(err)}; retry ${failures} of ${this.maxAttempts - 1}`);
        await this.#sleep(this.#backoff(failures), req.signal, req.what);
        continue;
      }
      if (res.statusCode === 401 && req.repository !== undefined && renewals < 2) {
        this.#unauthorized(res, req.repository, authorization, req.what);
        const auth = this.#auth;
        const again =
          auth?.kind === "bearer" ||
          (auth?.kind === "basic" &&
            authorization === undefined &&
            (await this.#credential(req.repository)) !== undefined);
        if (again) {
          renewals++;
          await discard(res);
          this.#log(`${req.what}: HTTP 401, renewing authorization`);
          continue;
        }
      }
      if (isRetryableStatus(res.statusCode) && failures + 1 < this.maxAttempts) {
        failures++;
        const retryAfter = parseRetryAfter(header(res, "retry-after"));
        const wait = Math.min(this.#maxDelay, retryAfter ?? this.#backoff(failures));
        await discard(res);
        this.#log(`${req.what}: HTTP ${res.statusCode}; retry ${failures} in ${Math.round(wait)} ms`);
        await this.#sleep(wait, req.signal, req.what);
        continue;
      }
      return res;
    }
  }

  /** The request, following redirects by hand: Authorization is dropped once the origin changes. */
  async #fetch(req: SendRequest, headers: Record<string, string>): Promise<Response> {
    let url = req.url;
    const h = { ...headers };
    for (let hop = 0; ; hop++) {
      if (url.protocol === "http:") this.#checkPlainHttp(url.host, req.what);
      else if (url.protocol !== "https:")
        throw new StratumError("E_BAD_INPUT", `${req.what}: cannot follow a redirect to ${url.protocol} URL`);
      this.#log(`${req.method} ${showUrl(url)}${h.range !== undefined ? ` (${h.range})` : ""}`);
      const res = await this.#dispatcherFor(url).request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: req.method,
        headers: h,
        body: req.body ?? null,
        signal: req.signal ?? null,
      });
      const location = header(res, "location");
      if (!REDIRECTS.has(res.statusCode) || location === undefined || req.method === "POST") return res;
      await discard(res);
      if (hop >= MAX_REDIRECTS)
        throw new StratumError(
          "E_IO",
          `${req.what}: more than ${MAX_REDIRECTS} redirects (last ${showUrl(url)})`,
        );
      const next = new URL(location, url);
      if (next.origin !== url.origin) delete h.authorization;
      url = next;
    }
  }

  #networkError(err: unknown, what: string, tries: number): StratumError {
    if (err instanceof StratumError) return err;
    const code = errorCode(err);
    const tls = code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code);
    const hint = tls
      ? `; to trust a private CA, put it in /etc/containers/certs.d/${this.apiHost}/ca.crt, in $SSL_CERT_FILE ` +
        "or in a certificate directory given for the pull"
      : "";
    const after = tries > 1 ? ` (after ${tries} tries)` : "";
    return new StratumError("E_IO", `${what}: ${this.#scrub(errorText(err))}${after}${hint}`, { cause: err });
  }

  #tooBig(what: string): StratumError {
    return new StratumError(
      "E_BAD_INPUT",
      `${what}: the manifest is larger than ${this.#maxManifestBytes} bytes, the most stratum reads`,
    );
  }

  /** An error for an unexpected status, with the registry's error codes (read from a bounded body). */
  async #statusError(res: Response, what: string, repository: string | undefined): Promise<StratumError> {
    let detail = "";
    try {
      const body = await readLimited(res, MAX_ERROR_TEXT);
      const text = body?.toString("utf8") ?? "";
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const errors =
        typeof parsed === "object" &&
        parsed !== null &&
        Array.isArray((parsed as { errors?: unknown }).errors)
          ? (parsed as { errors: unknown[] }).errors
          : [];
      const parts = errors.flatMap((e) => {
        if (typeof e !== "object" || e === null) return [];
        const { code, message } = e as { code?: unknown; message?: unknown };
        return [[code, message].filter((x) => typeof x === "string" && x !== "").join(": ")];
      });
      detail = parts.filter((p) => p !== "").join("; ");
      if (detail === "" && /^[\x20-\x7e\s]*$/.test(text)) detail = text.trim().split("\n")[0] ?? "";
      if (detail.length > 300) detail = detail.slice(0, 300) + "…";
      detail = this.#scrub(detail);
    } catch {
      drop(res);
    }
    const status = `HTTP ${res.statusCode}${detail !== "" ? ` ${detail}` : ""}`;
    switch (res.statusCode) {
      case 401:
      case 403:
        return new StratumError(
          "E_USAGE",
          `${what}: access denied ${await this.#identity(repository)} (${status}); the repository may not ` +
            "exist, or needs other credentials",
        );
      case 404:
        return new StratumError("E_NOT_FOUND", `${what}: not found (${status})`);
      default:
        return new StratumError(
          "E_IO",
          `${what}: ${status}${isRetryableStatus(res.statusCode) ? ` (after ${this.maxAttempts} tries)` : ""}`,
        );
    }
  }
}
