// Registry credentials (docs/pull.md "Credentials"): where `stratum pull` finds a user name and secret for a
// registry, in this order, the first hit winning:
//   1. what the caller was given on the command line (`--creds USER:PASSWORD`);
//   2. `$REGISTRY_AUTH_FILE`;
//   3. `$XDG_RUNTIME_DIR/containers/auth.json`, then `$XDG_CONFIG_HOME/containers/auth.json` (podman, skopeo);
//   4. `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json` (docker);
//   5. enroot's netrc file, `$ENROOT_CONFIG_PATH/.credentials` or `$XDG_CONFIG_HOME/enroot/.credentials`
//      (enroot-zenroot.md §1.8).
// In the JSON files a `credHelpers` entry for the registry, else `credsStore`, names a docker credential helper
// that is run (`docker-credential-NAME get`, server URL on stdin); when it has nothing, `auths` is read. Keys
// may name a repository (`quay.io/org/repo`): the most specific key wins. Docker Hub's names (`docker.io`,
// `index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`) are one registry. Secrets live only
// inside RegistryCredential, which never prints them.

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { inspect } from "node:util";
import { isErrno, StratumError } from "../../errors.ts";
import { canonicalRegistry, DOCKER_HUB } from "../../oci/reference.ts";

export type CredentialKind =
  | "password" // user name and password (or access token): HTTP Basic, or the token service's GET
  | "identity-token" // OAuth2 refresh token for the token service (`docker login` to some registries)
  | "registry-token"; // a bearer token to send as is

const REDACTED = "<redacted>";

/** A user name and a secret, and where they came from. The secret is shown only by `reveal()`. */
export class RegistryCredential {
  readonly #secret: string;

  constructor(
    readonly kind: CredentialKind,
    readonly username: string,
    secret: string,
    /** Where it was found: "--creds", a file path, or "docker-credential-NAME". */
    readonly source: string,
  ) {
    this.#secret = secret;
  }

  reveal(): string {
    return this.#secret;
  }

  /** The `Authorization` header value for HTTP Basic. */
  basicAuthorization(): string {
    return `Basic ${Buffer.from(`${this.username}:${this.#secret}`).toString("base64")}`;
  }

  toString(): string {
    return `${this.kind} credential for "${this.username}" from ${this.source} (secret ${REDACTED})`;
  }

  toJSON(): Record<string, string> {
    return { kind: this.kind, username: this.username, source: this.source, secret: REDACTED };
  }

  [inspect.custom](): string {
    return `RegistryCredential { ${this.toString()} }`;
  }
}

/**
 * Split a `--creds USER[:PASSWORD]` value at its first `:`. Without a password there is no credential yet: the
 * caller looks up (or prompts for) one for that user.
 */
export function parseCredsOption(text: string): { username: string; credential?: RegistryCredential } {
  const colon = text.indexOf(":");
  const username = colon < 0 ? text : text.slice(0, colon);
  if (username === "") throw new StratumError("E_USAGE", "--creds: the user name before ':' is empty");
  if (colon < 0) return { username };
  return {
    username,
    credential: new RegistryCredential("password", username, text.slice(colon + 1), "--creds"),
  };
}

export interface CredentialLookup {
  /** Registry name as in the image reference: `docker.io`, `quay.io`, `localhost:5000`. */
  registry: string;
  /** Repository path (`library/debian`), for auth-file keys that name a repository. */
  repository?: string;
  /** Only credentials for this user count (enroot's `USER@`, `--creds USER`). */
  username?: string;
  /** Given explicitly (`--creds USER:PASSWORD`): returned as is. */
  credential?: RegistryCredential;
}

export interface CredentialEnvironment {
  /** Environment variables (file locations, PATH for helpers); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Home directory; default os.homedir(). */
  homedir?: string;
  /** How long a credential helper or netrc command may run; default 30 s. */
  timeoutMs?: number;
}

export interface CredentialFile {
  format: "auth-json" | "netrc";
  path: string;
}

/** The files consulted, in order (those that do not exist are skipped). */
export function credentialFiles(environment: CredentialEnvironment = {}): CredentialFile[] {
  const env = environment.env ?? process.env;
  const home = environment.homedir ?? os.homedir();
  const configHome = env.XDG_CONFIG_HOME || path.join(home, ".config");
  const files: CredentialFile[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push({ format: "auth-json", path: env.REGISTRY_AUTH_FILE });
  if (env.XDG_RUNTIME_DIR)
    files.push({ format: "auth-json", path: path.join(env.XDG_RUNTIME_DIR, "containers", "auth.json") });
  files.push({ format: "auth-json", path: path.join(configHome, "containers", "auth.json") });
  files.push({
    format: "auth-json",
    path: path.join(env.DOCKER_CONFIG || path.join(home, ".docker"), "config.json"),
  });
  files.push({
    format: "netrc",
    path: path.join(env.ENROOT_CONFIG_PATH || path.join(configHome, "enroot"), ".credentials"),
  });
  return files;
}

/** Find a credential for a registry (the order is in this file's header). Undefined: go anonymous or prompt. */
export async function findCredential(
  lookup: CredentialLookup,
  environment: CredentialEnvironment = {},
): Promise<RegistryCredential | undefined> {
  if (lookup.credential !== undefined) return lookup.credential;
  const ctx: Context = {
    registry: canonicalRegistry(lookup.registry),
    repository: lookup.repository,
    username: lookup.username,
    env: environment.env ?? process.env,
    timeoutMs: environment.timeoutMs ?? 30_000,
  };
  for (const file of credentialFiles(environment)) {
    const text = readIfExists(file.path);
    if (text === undefined) continue;
    const found =
      file.format === "auth-json"
        ? await fromAuthJson(text, file.path, ctx)
        : await fromNetrc(text, file.path, ctx);
    if (found !== undefined) return found;
  }
  return undefined;
}

interface Context {
  registry: string;
  repository: string | undefined;
  username: string | undefined;
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return undefined;
    throw new StratumError("E_IO", `cannot read credentials file ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function wanted(ctx: Context, cred: RegistryCredential | undefined): RegistryCredential | undefined {
  if (cred === undefined) return undefined;
  return ctx.username === undefined || cred.username === ctx.username ? cred : undefined;
}

// ---- auth.json / config.json ----------------------------------------------------------------------------------

/** An auth-file key as registry[/path]: legacy `https://host/v1/` keys reduce to the host; Hub aliases fold. */
export function normalizeAuthKey(key: string): string {
  let k = key.trim();
  const scheme = /^https?:\/\//i.exec(k);
  if (scheme !== null) k = k.slice(scheme[0].length).split("/")[0];
  k = k.replace(/\/+$/, "");
  const slash = k.indexOf("/");
  return slash < 0 ? canonicalRegistry(k) : canonicalRegistry(k.slice(0, slash)) + k.slice(slash);
}

/** `quay.io/a/b` → quay.io/a/b, quay.io/a, quay.io: the keys to try, most specific first. */
function candidateKeys(ctx: Context): string[] {
  const keys = [ctx.registry];
  let prefix = ctx.registry;
  for (const part of (ctx.repository ?? "").split("/").filter((p) => p !== "")) {
    prefix += `/${part}`;
    keys.unshift(prefix);
  }
  return keys;
}

function lookupKey<T>(map: Map<string, T>, ctx: Context): T | undefined {
  for (const key of candidateKeys(ctx)) {
    const v = map.get(key);
    if (v !== undefined) return v;
  }
  return undefined;
}

function normalizedMap(v: unknown, file: string, field: string): Map<string, unknown> {
  const map = new Map<string, unknown>();
  if (v === undefined || v === null) return map;
  if (typeof v !== "object" || Array.isArray(v))
    throw new StratumError("E_BAD_INPUT", `credentials file ${file}: "${field}" is not an object`);
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    const k = normalizeAuthKey(key);
    if (!map.has(k)) map.set(k, value);
  }
  return map;
}

function authEntry(v: unknown, file: string, key: string): RegistryCredential | undefined {
  const bad = (problem: string) =>
    new StratumError("E_BAD_INPUT", `credentials file ${file}: auths entry for ${key}: ${problem}`);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("not an object");
  const e = v as Record<string, unknown>;
  const str = (name: string): string => {
    const x = e[name];
    if (x === undefined || x === null) return "";
    if (typeof x !== "string") throw bad(`"${name}" is not a string`);
    return x;
  };
  let username = str("username");
  let password = str("password");
  const auth = str("auth");
  if (auth !== "") {
    const decoded = Buffer.from(auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(auth)) throw bad(`"auth" is not base64 of USER:PASSWORD`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const identityToken = str("identitytoken");
  if (identityToken !== "") return new RegistryCredential("identity-token", username, identityToken, file);
  const registryToken = str("registrytoken");
  if (registryToken !== "") return new RegistryCredential("registry-token", username, registryToken, file);
  if (username === "" && password === "") return undefined; // docker writes `{}` entries next to a credsStore
  return new RegistryCredential("password", username, password, file);
}

async function fromAuthJson(
  text: string,
  file: string,
  ctx: Context,
): Promise<RegistryCredential | undefined> {
  if (text.trim() === "") return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StratumError(
      "E_BAD_INPUT",
      `credentials file ${file}: not valid JSON: ${(err as Error).message}`,
    );
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new StratumError("E_BAD_INPUT", `credentials file ${file}: not a JSON object`);
  const o = doc as Record<string, unknown>;
  const helpers = normalizedMap(o.credHelpers, file, "credHelpers");
  const store = o.credsStore;
  if (store !== undefined && store !== null && typeof store !== "string")
    throw new StratumError("E_BAD_INPUT", `credentials file ${file}: "credsStore" is not a string`);
  const helper = lookupKey(helpers, ctx) ?? (store || undefined);
  if (helper !== undefined) {
    if (typeof helper !== "string")
      throw new StratumError("E_BAD_INPUT", `credentials file ${file}: a credHelpers value is not a string`);
    const found = wanted(ctx, await runCredentialHelper(helper, ctx, file));
    if (found !== undefined) return found;
  }
  const auths = normalizedMap(o.auths, file, "auths");
  for (const key of candidateKeys(ctx)) {
    if (!auths.has(key)) continue;
    const found = wanted(ctx, authEntry(auths.get(key), file, key));
    if (found !== undefined) return found;
  }
  return undefined;
}

// ---- credential helpers -------------------------------------------------------------------------------------

/** What docker sends a helper for a registry: Docker Hub's historical index URL, else the host. */
export function helperServerUrl(registry: string): string {
  return canonicalRegistry(registry) === DOCKER_HUB ? "https://index.docker.io/v1/" : registry;
}

const NOT_FOUND_MESSAGE = "credentials not found in native keychain";
const MAX_OUTPUT = 1 << 20;

interface RunResult {
  status: number | null;
  stdout: string;
}

/** Run a program with `input` on stdin; kill it after `timeoutMs`. Errors name `what`, never the output. */
function run(
  command: string,
  args: string[],
  input: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  what: string,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    let size = 0;
    let failure: StratumError | undefined;
    const timer = setTimeout(() => {
      failure = new StratumError("E_IO", `${what} did not finish within ${timeoutMs / 1000} s`);
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(
        failure ??
          (isErrno(err, "ENOENT")
            ? new StratumError("E_NOT_FOUND", `${what}: ${command} is not on PATH`)
            : new StratumError("E_IO", `${what}: cannot run ${command}: ${err.message}`)),
      );
    });
    child.stdout.on("data", (b: Buffer) => {
      size += b.length;
      if (size > MAX_OUTPUT) {
        failure ??= new StratumError("E_IO", `${what} printed more than ${MAX_OUTPUT} bytes`);
        child.kill("SIGKILL");
      } else chunks.push(b);
    });
    child.stdin.on("error", () => {}); // a helper that exits without reading its input
    child.stdin.end(input);
    child.on("close", (status) => {
      clearTimeout(timer);
      if (failure !== undefined) reject(failure);
      else resolve({ status, stdout: Buffer.concat(chunks).toString("utf8") });
    });
  });
}

/**
 * `docker-credential-NAME get` for the registry (credential helper protocol: server URL on stdin, JSON
 * `{ServerURL, Username, Secret}` on stdout, "credentials not found…" and a failure status when it has none).
 * User name `<token>` means the secret is an identity token.
 */
export async function runCredentialHelper(
  name: string,
  ctx: { registry: string; env: NodeJS.ProcessEnv; timeoutMs: number },
  configuredIn: string,
): Promise<RegistryCredential | undefined> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name))
    throw new StratumError(
      "E_BAD_INPUT",
      `credentials file ${configuredIn}: invalid credential helper name "${name}"`,
    );
  const program = `docker-credential-${name}`;
  const what = `credential helper ${program} (configured in ${configuredIn})`;
  const r = await run(program, ["get"], helperServerUrl(ctx.registry), ctx.env, ctx.timeoutMs, what);
  if (r.status !== 0) {
    if (r.stdout.trim() === NOT_FOUND_MESSAGE) return undefined;
    throw new StratumError("E_IO", `${what} failed with exit status ${r.status ?? "(killed)"}`);
  }
  let reply: unknown;
  try {
    reply = JSON.parse(r.stdout);
  } catch {
    reply = undefined;
  }
  const o = (typeof reply === "object" && reply !== null ? reply : {}) as Record<string, unknown>;
  if (typeof o.Username !== "string" || typeof o.Secret !== "string")
    throw new StratumError("E_BAD_INPUT", `${what} did not print {"Username", "Secret"} JSON`);
  if (o.Secret === "") return undefined;
  if (o.Username === "<token>") return new RegistryCredential("identity-token", "", o.Secret, program);
  return new RegistryCredential("password", o.Username, o.Secret, program);
}

// ---- enroot's netrc -----------------------------------------------------------------------------------------

/**
 * How a netrc password is given. Like enroot, a password starting with `$` is evaluated: `$NAME`/`${NAME}` from
 * the environment, `$(COMMAND)` by running COMMAND with /bin/sh and taking its output (as `echo $(COMMAND)`
 * would). Other `$` forms are refused. Evaluation happens only for the entry that is used.
 */
export type NetrcPassword = { literal: Secret } | { variable: string } | { command: Secret };

/** A string kept out of logs: printing it shows `<redacted>`. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return `Secret(${REDACTED})`;
  }
}

export interface NetrcEntry {
  machine: string;
  login?: string;
  password?: NetrcPassword;
  /** 1-based line of the `machine` token, for messages. */
  line: number;
}

/**
 * Parse netrc text: `machine HOST login USER password PASS` entries, tokens separated by any whitespace, `"…"`
 * quoting with backslash escapes, `#` comments, `macdef` bodies skipped to the next blank line, `default` and
 * `account` ignored. A password beginning `$(` runs to its matching `)`, spaces included.
 */
export function parseNetrc(text: string, file: string): NetrcEntry[] {
  const entries: NetrcEntry[] = [];
  let pos = 0;
  let line = 1;
  const bad = (problem: string) =>
    new StratumError("E_BAD_INPUT", `credentials file ${file}:${line}: ${problem}`);

  const skipSpace = (): void => {
    for (;;) {
      while (pos < text.length && /\s/.test(text[pos])) if (text[pos++] === "\n") line++;
      if (text[pos] !== "#") return;
      while (pos < text.length && text[pos] !== "\n") pos++;
    }
  };
  const token = (): string | undefined => {
    skipSpace();
    if (pos >= text.length) return undefined;
    if (text[pos] === '"') {
      let out = "";
      pos++;
      while (pos < text.length && text[pos] !== '"') {
        if (text[pos] === "\\" && pos + 1 < text.length) pos++;
        if (text[pos] === "\n") line++;
        out += text[pos++];
      }
      if (pos >= text.length) throw bad("unterminated quoted string");
      pos++;
      return out;
    }
    const start = pos;
    while (pos < text.length && !/\s/.test(text[pos])) pos++;
    return text.slice(start, pos);
  };
  const commandSubstitution = (): string => {
    pos += 2; // "$("
    const start = pos;
    let depth = 1;
    while (pos < text.length && text[pos] !== "\n") {
      if (text[pos] === "(") depth++;
      else if (text[pos] === ")" && --depth === 0) return text.slice(start, pos++);
      pos++;
    }
    throw bad("a password $( … ) has no closing ) on its line");
  };
  const value = (keyword: string): string => {
    const v = token();
    if (v === undefined) throw bad(`"${keyword}" has no value`);
    return v;
  };

  let current: NetrcEntry | undefined;
  for (;;) {
    const keyword = token();
    if (keyword === undefined) break;
    switch (keyword) {
      case "machine":
        current = { machine: value(keyword), line };
        entries.push(current);
        break;
      case "default":
        current = undefined;
        break;
      case "login": {
        const v = value(keyword);
        if (current !== undefined) current.login = v;
        break;
      }
      case "password": {
        skipSpace();
        let password: NetrcPassword;
        if (text.startsWith("$(", pos)) password = { command: new Secret(commandSubstitution()) };
        else {
          const raw = value(keyword);
          const variable = /^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$/.exec(raw);
          if (variable !== null) password = { variable: variable[1] ?? variable[2] };
          else if (raw.startsWith("$"))
            throw bad("a password starting with $ must be $NAME, ${NAME} or $(COMMAND); quote it otherwise");
          else password = { literal: new Secret(raw) };
        }
        if (current !== undefined) current.password = password;
        break;
      }
      case "account":
        value(keyword);
        break;
      case "macdef": {
        value(keyword);
        const end = text.indexOf("\n\n", pos);
        for (const ch of text.slice(pos, end < 0 ? text.length : end + 2)) if (ch === "\n") line++;
        pos = end < 0 ? text.length : end + 2;
        break;
      }
      default:
        throw bad(`unexpected "${keyword.length > 20 ? keyword.slice(0, 20) + "…" : keyword}"`);
    }
  }
  return entries;
}

/** Does a netrc `machine` name this registry? Hub aliases fold; a registry's port may be left out, as in enroot. */
function machineMatches(machine: string, registry: string): boolean {
  const m = canonicalRegistry(machine);
  return m === registry || m === registry.replace(/:\d+$/, "");
}

/** Refuse to run commands from a file others could have written. */
function checkCommandFileSafe(file: string): void {
  const st = fs.statSync(file);
  const uid = process.getuid?.();
  if ((uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0)
    throw new StratumError(
      "E_BAD_INPUT",
      `credentials file ${file}: not running its password command, the file is writable by others or not yours`,
    );
}

async function netrcPassword(
  p: NetrcPassword,
  entry: NetrcEntry,
  file: string,
  ctx: Context,
): Promise<string> {
  if ("literal" in p) return p.literal.reveal();
  if ("variable" in p) {
    const v = ctx.env[p.variable];
    if (v === undefined)
      throw new StratumError(
        "E_NOT_FOUND",
        `credentials file ${file}:${entry.line}: the password variable $${p.variable} is not set`,
      );
    return v;
  }
  checkCommandFileSafe(file);
  const what = `the password command of credentials file ${file}:${entry.line}`;
  const r = await run("/bin/sh", ["-c", p.command.reveal()], "", ctx.env, ctx.timeoutMs, what);
  if (r.status !== 0)
    throw new StratumError("E_IO", `${what} failed with exit status ${r.status ?? "(killed)"}`);
  return r.stdout.trim().split(/\s+/).join(" ");
}

async function fromNetrc(text: string, file: string, ctx: Context): Promise<RegistryCredential | undefined> {
  for (const entry of parseNetrc(text, file)) {
    const password = entry.password;
    if (!machineMatches(entry.machine, ctx.registry) || password === undefined) continue;
    const username = entry.login ?? "";
    if (ctx.username !== undefined && username !== ctx.username) continue;
    return new RegistryCredential(
      "password",
      username,
      await netrcPassword(password, entry, file, ctx),
      file,
    );
  }
  return undefined;
}
