// `dockerd://IMAGE` and `podman://IMAGE`: an image a local daemon holds, fetched over the Docker Engine API on
// the daemon's unix socket (docs/pull.md "Archives, layouts and daemons"). Both daemons serve the same API:
// `GET /_ping`, `GET /images/{name}/json` (existence, ID, tags), then `GET /images/{id}/get`, which streams a
// docker-archive of exactly the image inspected (asked for by ID, so a tag moved meanwhile cannot change it).
// The archive is spooled to a private temporary file (disk, not memory, bounds it) and read in place by
// DockerArchiveImageSource; close() deletes it, and so does any failure. `export` (a flattened container
// filesystem) is never used: it loses the layers and the config.
//
// The socket comes from DOCKER_HOST (dockerd) or CONTAINER_HOST (podman), `unix://` only; defaults
// /var/run/docker.sock and /run/podman/podman.sock (rootless podman: $XDG_RUNTIME_DIR/podman/podman.sock).

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { isErrno, ioError, StratumError } from "../errors.ts";
import type { Descriptor, Platform } from "../oci/manifest.ts";
import type { DaemonSource } from "../oci/reference.ts";
import { DockerArchiveImageSource } from "./archive/docker-archive.ts";
import type { BlobOptions, ImageSource, SourceManifest } from "./source.ts";

export interface DaemonEndpoint {
  /** `unix:///path/to.sock` */
  readonly host: string;
  readonly socketPath: string;
  /** The environment variable it came from, or undefined for the default. */
  readonly fromEnv?: string;
}

export interface DaemonOpenOptions {
  /** Where the archive is spooled (a private directory is made inside); default the system temp dir. */
  spoolDir?: string;
  /** Environment to read DOCKER_HOST / CONTAINER_HOST / XDG_RUNTIME_DIR from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Socket inactivity limit for each API call, in ms (default 120 000). */
  timeoutMs?: number;
  /** Progress of the spool download: bytes written. */
  onSpoolBytes?: (n: number) => void;
  /** Cancels the API calls and the spool download. */
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 120_000;
const MAX_JSON_BODY = 8 << 20;
const MAX_ERROR_BODY = 64 << 10;

/** The API socket of a daemon: DOCKER_HOST (dockerd) or CONTAINER_HOST (podman), else the default. */
export function daemonEndpoint(
  transport: "dockerd" | "podman",
  env: NodeJS.ProcessEnv = process.env,
  uid: number | undefined = process.getuid?.(),
): DaemonEndpoint {
  const variable = transport === "dockerd" ? "DOCKER_HOST" : "CONTAINER_HOST";
  const value = env[variable];
  if (value === undefined || value === "") {
    let socketPath = "/var/run/docker.sock";
    if (transport === "podman") {
      const runtime = env.XDG_RUNTIME_DIR;
      socketPath =
        uid === 0 || uid === undefined
          ? "/run/podman/podman.sock"
          : path.join(
              runtime !== undefined && runtime !== "" ? runtime : `/run/user/${uid}`,
              "podman/podman.sock",
            );
    }
    return { host: `unix://${socketPath}`, socketPath };
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(value);
  if (scheme === null)
    throw new StratumError("E_USAGE", `${variable}=${value}: expected unix:///path/to/socket`);
  if (scheme[1].toLowerCase() !== "unix")
    throw new StratumError(
      "E_UNSUPPORTED",
      `${variable}=${value}: only unix:// sockets are supported for ${transport}:// (not ${scheme[1]}://)`,
    );
  const socketPath = value.slice(scheme[0].length);
  if (socketPath === "") throw new StratumError("E_USAGE", `${variable}=${value}: no socket path`);
  return { host: value, socketPath, fromEnv: variable };
}

/** The `message` of a daemon's JSON error body, or the body's start. */
function daemonMessage(body: Buffer): string {
  const text = body.toString("utf8").trim();
  try {
    const o = JSON.parse(text) as { message?: unknown };
    if (typeof o.message === "string") return o.message;
  } catch {
    // not JSON
  }
  return text.slice(0, 300);
}

/** One API call; resolves with the response head (the body is the caller's to read). */
function request(
  what: string,
  endpoint: DaemonEndpoint,
  urlPath: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath: endpoint.socketPath,
      method: "GET",
      path: urlPath,
      headers: { host: "docker", "user-agent": "stratum" },
      ...(signal !== undefined ? { signal } : {}),
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new StratumError("E_IO", `${what}: GET ${urlPath}: no data for ${timeoutMs / 1000} s`)),
    );
    req.on("response", resolve);
    req.on("error", (err) => {
      if (err instanceof StratumError) reject(err);
      else if (isErrno(err, "ENOENT") || isErrno(err, "ECONNREFUSED")) {
        const from = endpoint.fromEnv === undefined ? "the default socket" : endpoint.fromEnv;
        reject(
          new StratumError(
            "E_IO",
            `${what}: cannot connect to the daemon at ${endpoint.host} (${from}): ${err.code}; is it running?`,
            { cause: err },
          ),
        );
      } else reject(ioError(err, `${what}: GET ${urlPath}`));
    });
    req.end();
  });
}

async function readBody(res: http.IncomingMessage, max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > max) {
        res.destroy();
        throw new StratumError("E_BAD_INPUT", `${what}: the daemon's answer is larger than ${max} bytes`);
      }
      parts.push(chunk);
    }
  } catch (err) {
    throw ioError(err, what);
  }
  return Buffer.concat(parts);
}

function imagePath(name: string, suffix: "json" | "get"): string {
  return `/images/${encodeURIComponent(name)}/${suffix}`;
}

/** An image of a local Docker or Podman daemon, spooled as a docker-archive and read from there. */
export class DaemonImageSource implements ImageSource {
  readonly concurrency = 2;

  private constructor(
    readonly description: string,
    readonly endpoint: DaemonEndpoint,
    /** The daemon's image ID (`sha256:…`: the config digest, or with Docker's containerd store the index's). */
    readonly imageId: string,
    readonly repoTags: string[],
    /** The daemon's Server header (`Docker/20.10.24 (linux)`, `Libpod/4.3.1 (linux)`), if it sent one. */
    readonly server: string | undefined,
    /** The spooled archive (deleted by close()). */
    readonly spoolPath: string,
    private readonly inner: DockerArchiveImageSource,
  ) {}

  /** Ping the daemon, inspect the image, spool its `save` archive and open it. */
  static async open(src: DaemonSource, opts: DaemonOpenOptions = {}): Promise<DaemonImageSource> {
    const endpoint = daemonEndpoint(src.transport, opts.env ?? process.env);
    const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const what = `${src.toString()} (${endpoint.host})`;

    const ping = await request(src.toString(), endpoint, "/_ping", timeout, opts.signal);
    const pingBody = await readBody(ping, MAX_ERROR_BODY, what);
    if (ping.statusCode !== 200)
      throw new StratumError(
        "E_IO",
        `${what}: the daemon answered /_ping with ${ping.statusCode}: ${daemonMessage(pingBody)}`,
      );
    const server = typeof ping.headers.server === "string" ? ping.headers.server : undefined;

    const inspect = await request(
      src.toString(),
      endpoint,
      imagePath(src.image, "json"),
      timeout,
      opts.signal,
    );
    const inspectBody = await readBody(inspect, MAX_JSON_BODY, what);
    if (inspect.statusCode === 404)
      throw new StratumError(
        "E_NOT_FOUND",
        `${what}: no such image in the daemon (${daemonMessage(inspectBody)})`,
      );
    if (inspect.statusCode !== 200)
      throw new StratumError(
        "E_IO",
        `${what}: inspecting the image failed with ${inspect.statusCode}: ${daemonMessage(inspectBody)}`,
      );
    let info: { Id?: unknown; RepoTags?: unknown };
    try {
      info = JSON.parse(inspectBody.toString("utf8")) as { Id?: unknown; RepoTags?: unknown };
    } catch (err) {
      throw new StratumError("E_BAD_INPUT", `${what}: the daemon's image JSON is not valid JSON`, {
        cause: err,
      });
    }
    const id = info.Id;
    if (typeof id !== "string" || !/^sha256:[a-f0-9]{64}$/.test(id))
      throw new StratumError("E_BAD_INPUT", `${what}: the daemon's image JSON has no Id like sha256:<hex>`);
    const repoTags = Array.isArray(info.RepoTags)
      ? info.RepoTags.filter((t): t is string => typeof t === "string")
      : [];

    const spoolRoot = opts.spoolDir ?? os.tmpdir();
    let spoolDir: string;
    try {
      spoolDir = await fsp.mkdtemp(path.join(spoolRoot, "stratum-spool-"));
    } catch (err) {
      throw ioError(err, `${what}: creating a spool directory in ${spoolRoot}`);
    }
    const spoolPath = path.join(spoolDir, "image.tar");
    try {
      const get = await request(src.toString(), endpoint, imagePath(id, "get"), timeout, opts.signal);
      if (get.statusCode !== 200) {
        const body = await readBody(get, MAX_ERROR_BODY, what);
        throw new StratumError(
          get.statusCode === 404 ? "E_NOT_FOUND" : "E_IO",
          `${what}: saving image ${id} failed with ${get.statusCode}: ${daemonMessage(body)}`,
        );
      }
      const onBytes = opts.onSpoolBytes;
      try {
        await pipeline(
          get,
          async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
            for await (const chunk of source) {
              onBytes?.(chunk.length);
              yield chunk;
            }
          },
          fs.createWriteStream(spoolPath, { flags: "wx", mode: 0o600 }),
        );
      } catch (err) {
        throw ioError(err, `${what}: spooling the image to ${spoolPath}`);
      }
      const description = `${src.toString()} (image ${id}, ${server ?? src.transport} at ${endpoint.host})`;
      const inner = await DockerArchiveImageSource.open(spoolPath, undefined, { description });
      try {
        if (!inner.hasOciLayout && inner.configDigest !== id)
          throw new StratumError(
            "E_CORRUPT",
            `${what}: the daemon saved an image with config ${inner.configDigest}, not the inspected ${id}`,
          );
      } catch (err) {
        await inner.close();
        throw err;
      }
      return new DaemonImageSource(description, endpoint, id, repoTags, server, spoolPath, inner);
    } catch (err) {
      await fsp.rm(spoolDir, { recursive: true, force: true });
      throw err;
    }
  }

  manifest(platform: Platform): Promise<SourceManifest> {
    return this.inner.manifest(platform);
  }

  blob(descriptor: Descriptor, opts?: BlobOptions): AsyncIterable<Buffer> {
    return this.inner.blob(descriptor, opts);
  }

  async close(): Promise<void> {
    try {
      await this.inner.close();
    } finally {
      await fsp.rm(path.dirname(this.spoolPath), { recursive: true, force: true });
    }
  }
}
