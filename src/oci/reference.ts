// Pull sources: what `stratum pull SOURCE` accepts, parsed into a typed union (docs/pull.md "Sources"). Registry
// references follow the distribution reference grammar with Docker's defaults (enroot-zenroot.md §1.3 adds the
// `USER@` and `REGISTRY#IMAGE` forms); archive and layout paths are split from their optional reference at the
// first `:`, as skopeo does. Every parse error is E_USAGE and names the input; a well-formed digest with an
// algorithm other than sha256/sha512 is E_UNSUPPORTED.

import * as path from "node:path";
import { StratumError, type ErrorCode } from "../errors.ts";

/** The registry name Docker Hub images carry, and the host its API is served from. */
export const DOCKER_HUB = "docker.io";
export const DOCKER_HUB_API_HOST = "registry-1.docker.io";
const DOCKER_HUB_ALIASES = new Set([DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST]);

// Distribution reference grammar (docker/distribution reference/regexp.go), written out here.
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const REPOSITORY_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const REGISTRY_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const TAG_RE = /^\w[\w.-]{0,127}$/;
const NAME_MAX = 255;
// OCI image-spec descriptor digest grammar; the algorithm prefix alone tells a digest from a user name.
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const DIGEST_PREFIX_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:/;
const DIGEST_HEX_LENGTH: Partial<Record<string, number>> = { sha256: 64, sha512: 128 };
// The `org.opencontainers.image.ref.name` grammar from the OCI image layout (annotations.md).
const OCI_REF_COMPONENT = "[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*";
const OCI_REF_RE = new RegExp(`^${OCI_REF_COMPONENT}(?:/${OCI_REF_COMPONENT})*$`);
// What a daemon accepts as an image name or ID; no leading `-`, so it can never be read as an option.
const DAEMON_IMAGE_RE = /^[A-Za-z0-9][A-Za-z0-9/._:@-]*$/;
const USER_RE = /^[^\s/#:]+$/;

/**
 * Check a content digest (`sha256:` + 64 lowercase hex, or `sha512:` + 128). A string that is not a digest at all
 * fails with `code`; a well-formed digest of another algorithm is E_UNSUPPORTED. `what` names the input.
 */
export function checkDigest(digest: string, code: ErrorCode, what: string): string {
  if (!DIGEST_RE.test(digest)) throw new StratumError(code, `${what}: invalid digest "${digest}"`);
  const colon = digest.indexOf(":");
  const algorithm = digest.slice(0, colon);
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined)
    throw new StratumError(
      "E_UNSUPPORTED",
      `${what}: digest algorithm "${algorithm}" is not supported (sha256 and sha512 are)`,
    );
  if (!new RegExp(`^[a-f0-9]{${length}}$`).test(digest.slice(colon + 1)))
    throw new StratumError(
      code,
      `${what}: a ${algorithm} digest is ${length} lowercase hex digits: "${digest}"`,
    );
  return digest;
}

/** The host serving a registry's API: Docker Hub's images are named `docker.io/…` but served elsewhere. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** Canonical registry name: lowercase, Docker Hub aliases folded into `docker.io`. */
export function canonicalRegistry(registry: string): string {
  const r = registry.toLowerCase();
  return DOCKER_HUB_ALIASES.has(r) ? DOCKER_HUB : r;
}

/** A registry image reference, fully qualified: registry, repository path, and a tag, a digest or both. */
export class ImageName {
  constructor(
    readonly registry: string,
    readonly repository: string,
    readonly tag: string | undefined,
    readonly digest: string | undefined,
  ) {}

  /** What to ask the registry for: the digest when there is one (a tag next to it is informational). */
  get manifestReference(): string {
    return this.digest ?? this.tag ?? "latest";
  }

  /** Docker's short form: `debian:bookworm` for `docker.io/library/debian:bookworm`. */
  get familiar(): string {
    let name = `${this.registry}/${this.repository}`;
    if (this.registry === DOCKER_HUB) {
      name = this.repository.startsWith("library/") ? this.repository.slice(8) : this.repository;
    }
    return name + this.suffix();
  }

  /** Fully qualified: `docker.io/library/debian:bookworm`, `quay.io/a/b@sha256:…`. */
  toString(): string {
    return `${this.registry}/${this.repository}${this.suffix()}`;
  }

  private suffix(): string {
    return (
      (this.tag !== undefined ? `:${this.tag}` : "") + (this.digest !== undefined ? `@${this.digest}` : "")
    );
  }
}

/** `docker://[USER@]IMAGE`: an image in a registry. */
export class RegistrySource {
  readonly transport = "docker";
  constructor(
    readonly image: ImageName,
    /** The user name given as `USER@`, if any; credentials are looked up for it. */
    readonly user: string | undefined,
  ) {}

  get apiHost(): string {
    return registryApiHost(this.image.registry);
  }

  /** The fully qualified image name, e.g. `docker.io/library/debian:bookworm`. */
  get name(): string {
    return this.image.toString();
  }

  toString(): string {
    return `docker://${this.user !== undefined ? `${this.user}@` : ""}${this.image.toString()}`;
  }
}

/** `dockerd://IMAGE`, `podman://IMAGE`: an image a local daemon knows, by name or ID, passed to it unchanged. */
export class DaemonSource {
  constructor(
    readonly transport: "dockerd" | "podman",
    readonly image: string,
  ) {}

  get name(): string {
    return this.image;
  }

  toString(): string {
    return `${this.transport}://${this.image}`;
  }
}

/** Which image of an archive or layout: by name, by position (`@N`), or the only one (undefined). */
export type ArchiveSelector<Name> = { name: Name } | { index: number } | undefined;

function selectorText(s: ArchiveSelector<unknown>): string {
  if (s === undefined) return "";
  return "index" in s ? `:@${s.index}` : `:${String(s.name)}`;
}

/** `docker-archive:FILE[:REF|:@N]`: a `docker save` tar; REF is a tag inside it (`busybox:latest`). */
export class DockerArchiveSource {
  readonly transport = "docker-archive";
  constructor(
    readonly path: string,
    readonly select: ArchiveSelector<ImageName>,
  ) {}

  get name(): string {
    return this.select !== undefined && "name" in this.select
      ? this.select.name.toString()
      : path.basename(this.path);
  }

  toString(): string {
    return `${this.transport}:${this.path}${selectorText(this.select)}`;
  }
}

/** `oci-archive:FILE[:REF|:@N]` (a tar of an OCI layout) and `oci:DIR[:REF|:@N]`; REF is an image ref.name. */
export class OciLayoutSource {
  constructor(
    readonly transport: "oci" | "oci-archive",
    readonly path: string,
    readonly select: ArchiveSelector<string>,
  ) {}

  get name(): string {
    return this.select !== undefined && "name" in this.select ? this.select.name : path.basename(this.path);
  }

  toString(): string {
    return `${this.transport}:${this.path}${selectorText(this.select)}`;
  }
}

export type PullSource = RegistrySource | DaemonSource | DockerArchiveSource | OciLayoutSource;

function usage(input: string, problem: string): StratumError {
  return new StratumError("E_USAGE", `invalid image reference "${input}": ${problem}`);
}

/** Split `NAME[:TAG][@DIGEST]`; the tag's `:` is the last one after the last `/`. */
function splitTagAndDigest(text: string, input: string): { name: string; tag?: string; digest?: string } {
  let name = text;
  let digest: string | undefined;
  const at = name.indexOf("@");
  if (at >= 0) {
    digest = checkDigest(name.slice(at + 1), "E_USAGE", `invalid image reference "${input}"`);
    name = name.slice(0, at);
  }
  let tag: string | undefined;
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG_RE.test(tag))
      throw usage(input, `tag "${tag}" must be 1–128 of [A-Za-z0-9_.-] and not start with "." or "-"`);
  }
  return { name, tag, digest };
}

function checkRegistry(registry: string, input: string): string {
  if (!REGISTRY_RE.test(registry)) throw usage(input, `"${registry}" is not a registry host[:port]`);
  return canonicalRegistry(registry);
}

function checkRepository(registry: string, repository: string, input: string): string {
  if (repository === "") throw usage(input, "no image name");
  const repo = registry === DOCKER_HUB && !repository.includes("/") ? `library/${repository}` : repository;
  if (!REPOSITORY_RE.test(repo)) {
    const why = /[A-Z]/.test(repo)
      ? "repository names must be lowercase"
      : "each path component is lowercase letters and digits joined by '.', '_', '__' or dashes";
    throw usage(input, `"${repository}": ${why}`);
  }
  if (registry.length + 1 + repo.length > NAME_MAX)
    throw usage(input, `the name is longer than ${NAME_MAX} characters`);
  return repo;
}

/** The first path element names a registry when it has a `.` or `:`, is `localhost`, or has uppercase letters. */
function looksLikeRegistry(first: string): boolean {
  return /[.:]/.test(first) || first === "localhost" || first !== first.toLowerCase();
}

/**
 * Parse a Docker-style reference `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]` with Docker's defaults (`docker.io`,
 * `library/`, tag `latest` when there is neither tag nor digest). With `enrootRegistry`, the registry was given
 * in enroot's `REGISTRY#IMAGE` form and the whole text is the repository.
 */
export function parseImageName(text: string, input = text, enrootRegistry?: string): ImageName {
  const { name, tag, digest } = splitTagAndDigest(text, input);
  let registry = DOCKER_HUB;
  let repository = name;
  if (enrootRegistry !== undefined) {
    registry = checkRegistry(enrootRegistry, input);
  } else {
    const slash = name.indexOf("/");
    if (slash >= 0 && looksLikeRegistry(name.slice(0, slash))) {
      registry = checkRegistry(name.slice(0, slash), input);
      repository = name.slice(slash + 1);
    }
  }
  repository = checkRepository(registry, repository, input);
  return new ImageName(registry, repository, tag ?? (digest === undefined ? "latest" : undefined), digest);
}

/** The body of `docker://`: `[USER@][REGISTRY#]IMAGE[:TAG][@DIGEST]` or `[USER@]REGISTRY/IMAGE…`. */
function parseRegistrySource(body: string, input: string): RegistrySource {
  let rest = body;
  let digestPart = "";
  const lastAt = rest.lastIndexOf("@");
  if (lastAt >= 0 && DIGEST_PREFIX_RE.test(rest.slice(lastAt + 1))) {
    digestPart = rest.slice(lastAt);
    rest = rest.slice(0, lastAt);
  }
  let user: string | undefined;
  const userAt = rest.lastIndexOf("@");
  if (userAt >= 0) {
    user = rest.slice(0, userAt);
    rest = rest.slice(userAt + 1);
    // Never echo this input: it holds a password.
    if (user.includes(":"))
      throw new StratumError(
        "E_USAGE",
        "image reference: USER:PASSWORD@ is not accepted (it would be shown and recorded); " +
          "give the password with --creds or in a credentials file",
      );
    if (!USER_RE.test(user))
      throw usage(input, "the user name before '@' is empty or has a space, '/' or '#'");
  }
  let enrootRegistry: string | undefined;
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    enrootRegistry = rest.slice(0, hash);
    rest = rest.slice(hash + 1);
    if (rest.includes("#")) throw usage(input, "more than one '#'");
  }
  if (rest === "") throw usage(input, "no image name");
  return new RegistrySource(parseImageName(rest + digestPart, input, enrootRegistry), user);
}

function splitPathAndRef(body: string, input: string): { file: string; ref: string | undefined } {
  const colon = body.indexOf(":");
  const file = colon < 0 ? body : body.slice(0, colon);
  const ref = colon < 0 ? undefined : body.slice(colon + 1);
  if (file === "") throw usage(input, "no path");
  if (ref === "") throw usage(input, "empty reference after ':'");
  return { file, ref };
}

function parseIndex(ref: string, input: string): { index: number } | undefined {
  if (!ref.startsWith("@")) return undefined;
  if (!/^@\d{1,9}$/.test(ref)) throw usage(input, `"${ref}" is not an image position like @0`);
  return { index: Number(ref.slice(1)) };
}

function parseDockerArchive(body: string, input: string): DockerArchiveSource {
  const { file, ref } = splitPathAndRef(body, input);
  if (ref === undefined) return new DockerArchiveSource(file, undefined);
  const index = parseIndex(ref, input);
  if (index !== undefined) return new DockerArchiveSource(file, index);
  const name = parseImageName(ref, input);
  if (name.digest !== undefined) throw usage(input, "a docker-archive reference is a tag, not a digest");
  return new DockerArchiveSource(file, { name });
}

function parseOciLayout(transport: "oci" | "oci-archive", body: string, input: string): OciLayoutSource {
  const { file, ref } = splitPathAndRef(body, input);
  if (ref === undefined) return new OciLayoutSource(transport, file, undefined);
  const index = parseIndex(ref, input);
  if (index !== undefined) return new OciLayoutSource(transport, file, index);
  if (!OCI_REF_RE.test(ref))
    throw usage(input, `"${ref}" is not an OCI image ref name (letters, digits and . _ - : @ + /)`);
  return new OciLayoutSource(transport, file, { name: ref });
}

const FOREIGN_TRANSPORTS: Partial<Record<string, string>> = {
  "docker-daemon": "use dockerd://IMAGE",
  "containers-storage": "use podman://IMAGE",
  dir: "copy it to an OCI layout first (skopeo copy dir:… oci:…)",
  ostree: "",
  sif: "",
  tarball: "",
};

/**
 * Parse a pull SOURCE. Forms: `docker://…`, `dockerd://IMAGE`, `podman://IMAGE`, `docker-archive:FILE[:REF]`,
 * `oci-archive:FILE[:REF]`, `oci:DIR[:REF]`, and a bare reference without a transport, which means `docker://`.
 */
export function parsePullSource(input: string): PullSource {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(input);
  if (scheme !== null) {
    const body = input.slice(scheme[0].length);
    switch (scheme[1]) {
      case "docker":
        return parseRegistrySource(body, input);
      case "dockerd":
      case "podman":
        if (!DAEMON_IMAGE_RE.test(body))
          throw usage(input, "a daemon image is a name or ID of letters, digits and / . _ : @ -");
        return new DaemonSource(scheme[1], body);
      default:
        throw usage(
          input,
          `unknown transport "${scheme[1]}://" (docker://, dockerd://, podman:// are known)`,
        );
    }
  }
  const colon = input.indexOf(":");
  const prefix = colon < 0 ? "" : input.slice(0, colon);
  const body = input.slice(colon + 1);
  if (prefix === "docker-archive") return parseDockerArchive(body, input);
  if (prefix === "oci" || prefix === "oci-archive") return parseOciLayout(prefix, body, input);
  const hint = FOREIGN_TRANSPORTS[prefix];
  if (hint !== undefined)
    throw new StratumError(
      "E_UNSUPPORTED",
      `image reference "${input}": the ${prefix}: transport is not supported${hint !== "" ? `; ${hint}` : ""}`,
    );
  if (input.startsWith("/") || input.startsWith("."))
    throw usage(input, "looks like a path; name its format: docker-archive:, oci-archive: or oci:");
  return parseRegistrySource(input, input);
}
