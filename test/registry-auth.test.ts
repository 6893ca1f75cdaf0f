// Registry authentication inputs: WWW-Authenticate challenges (src/transport/registry/challenge.ts) as real
// registries send them, and credential lookup (src/transport/registry/credentials.ts) over podman/docker auth
// files, a real credential helper executable, and enroot's netrc file, in temporary homes. Secrets never show in
// String(), JSON or util.inspect, nor in error messages.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { format, inspect } from "node:util";
import { after, describe, test } from "node:test";
import { StratumError, type ErrorCode } from "../src/errors.ts";
import {
  basicChallenge,
  bearerChallenge,
  parseWwwAuthenticate,
  tokenRequestUrl,
} from "../src/transport/registry/challenge.ts";
import {
  credentialFiles,
  findCredential,
  normalizeAuthKey,
  parseCredsOption,
  parseNetrc,
  RegistryCredential,
  Secret,
  type CredentialEnvironment,
  type CredentialLookup,
} from "../src/transport/registry/credentials.ts";
import { makeTempDir, removeDir } from "./helpers/tmp.ts";

const tmp = makeTempDir("stratum-auth-");
after(() => removeDir(tmp));
let homeCounter = 0;

async function rejectsCode(p: Promise<unknown>, code: ErrorCode, ...mentions: string[]): Promise<string> {
  let message = "";
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StratumError, String(e));
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
    message = e.message;
    return true;
  });
  return message;
}

function throwsCode(fn: () => unknown, code: ErrorCode, ...mentions: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof StratumError, String(e));
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
    return true;
  });
}

describe("WWW-Authenticate", () => {
  test("Docker Hub's Bearer challenge", () => {
    const header =
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"';
    const challenges = parseWwwAuthenticate(header);
    assert.deepEqual(challenges, [
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/debian:pull",
        },
      },
    ]);
    assert.deepEqual(bearerChallenge(challenges), {
      realm: "https://auth.docker.io/token",
      service: "registry.docker.io",
      scopes: ["repository:library/debian:pull"],
    });
    assert.equal(basicChallenge(challenges), undefined);
  });

  test("insufficient_scope, with commas inside the quoted scope and several scopes", () => {
    const b = bearerChallenge(
      parseWwwAuthenticate(
        'Bearer realm="http://127.0.0.1:5001/auth",service="Docker registry",' +
          'scope="repository:test/small:pull,push repository:test/base:pull",error="insufficient_scope",' +
          'error_description="the token does not grant push"',
      ),
    );
    assert.deepEqual(b, {
      realm: "http://127.0.0.1:5001/auth",
      service: "Docker registry",
      scopes: ["repository:test/small:pull,push", "repository:test/base:pull"],
      error: "insufficient_scope",
      errorDescription: "the token does not grant push",
    });
  });

  test("several challenges in one header and across header lines; case; spacing; empty elements", () => {
    const one = parseWwwAuthenticate(
      ' , Basic realm="Registry Realm" ,, BEARER Realm = "https://a.example/t" , Service=reg.example',
    );
    assert.deepEqual(one, [
      { scheme: "basic", params: { realm: "Registry Realm" } },
      { scheme: "bearer", params: { realm: "https://a.example/t", service: "reg.example" } },
    ]);
    assert.deepEqual(basicChallenge(one), { realm: "Registry Realm" });
    const lines = parseWwwAuthenticate(['Basic realm="x"', 'Bearer realm="https://b.example/token"']);
    assert.deepEqual(
      lines.map((c) => c.scheme),
      ["basic", "bearer"],
    );
    assert.equal(bearerChallenge(lines)?.realm, "https://b.example/token");
    assert.deepEqual(parseWwwAuthenticate(""), []);
    assert.deepEqual(parseWwwAuthenticate("Basic"), [{ scheme: "basic", params: {} }]);
    assert.deepEqual(basicChallenge(parseWwwAuthenticate("Basic")), { realm: "" });
  });

  test("quoted-pair escapes, token68, repeated parameters", () => {
    assert.deepEqual(parseWwwAuthenticate('Basic realm="say \\"hi\\" \\\\ there, ok"')[0]?.params, {
      realm: 'say "hi" \\ there, ok',
    });
    assert.deepEqual(parseWwwAuthenticate('Negotiate YIIB+/x==, Basic realm="k"'), [
      { scheme: "negotiate", params: {}, token68: "YIIB+/x==" },
      { scheme: "basic", params: { realm: "k" } },
    ]);
    assert.deepEqual(
      parseWwwAuthenticate('Bearer realm="https://first/", realm="https://second/"')[0]?.params,
      {
        realm: "https://first/",
      },
    );
    assert.deepEqual(parseWwwAuthenticate('Basic realm=""')[0]?.params, { realm: "" });
    // RFC 7235: "realm=" with nothing after it is a token68, not an empty parameter.
    assert.deepEqual(parseWwwAuthenticate("Bearer realm="), [
      { scheme: "bearer", params: {}, token68: "realm=" },
    ]);
  });

  test("malformed headers are E_BAD_INPUT", () => {
    for (const h of [
      'Bearer realm="https://unterminated',
      'Bearer realm="x", service=',
      "Bearer realm=https://unquoted/url",
      '"quoted" realm="x"',
      'Bearer realm="a" service="b"',
      "Bearer,realm=x",
    ])
      throwsCode(() => parseWwwAuthenticate(h), "E_BAD_INPUT", "WWW-Authenticate");
  });

  test("the Bearer realm must be an http(s) URL", () => {
    throwsCode(() => bearerChallenge(parseWwwAuthenticate('Bearer service="x"')), "E_BAD_INPUT", "no realm");
    throwsCode(() => bearerChallenge(parseWwwAuthenticate('Bearer realm="/token"')), "E_BAD_INPUT", "/token");
    throwsCode(
      () => bearerChallenge(parseWwwAuthenticate('Bearer realm="ftp://h/t"')),
      "E_BAD_INPUT",
      "ftp://h/t",
    );
  });

  test("token request URL: realm query kept, service, each scope once", () => {
    const b = bearerChallenge(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.example/token?client=x",service="reg",scope="repository:a/b:pull"',
      ),
    )!;
    const url = tokenRequestUrl(b, ["repository:a/b:pull", "repository:c:pull"]);
    assert.equal(url.origin + url.pathname, "https://auth.example/token");
    assert.equal(url.searchParams.get("client"), "x");
    assert.equal(url.searchParams.get("service"), "reg");
    assert.deepEqual(url.searchParams.getAll("scope"), ["repository:a/b:pull", "repository:c:pull"]);
  });
});

// ---- credentials ----------------------------------------------------------------------------------------------

interface Home {
  dir: string;
  env: NodeJS.ProcessEnv;
  environment: CredentialEnvironment;
  write(rel: string, content: string | object, mode?: number): string;
}

/** A fresh home with XDG dirs in it and nothing from the real environment but PATH. */
function newHome(extraEnv: NodeJS.ProcessEnv = {}): Home {
  const dir = path.join(tmp, `home${homeCounter++}`);
  fs.mkdirSync(dir, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    XDG_RUNTIME_DIR: path.join(dir, "run"),
    XDG_CONFIG_HOME: path.join(dir, ".config"),
    ...extraEnv,
  };
  return {
    dir,
    env,
    environment: { env, homedir: dir },
    write(rel, content, mode = 0o600) {
      const file = path.join(dir, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content, null, 2));
      fs.chmodSync(file, mode);
      return file;
    },
  };
}

function basic(user: string, password: string): string {
  return Buffer.from(`${user}:${password}`).toString("base64");
}

async function find(home: Home, lookup: CredentialLookup): Promise<RegistryCredential | undefined> {
  return findCredential(lookup, home.environment);
}

async function findSecret(home: Home, lookup: CredentialLookup): Promise<string | undefined> {
  return (await find(home, lookup))?.reveal();
}

/** A docker-credential-NAME executable in the home's bin/, on the home's PATH; it logs each call. */
function installHelper(home: Home, name: string, script: string): string {
  const bin = path.join(home.dir, "bin");
  fs.mkdirSync(bin, { recursive: true });
  const file = path.join(bin, `docker-credential-${name}`);
  fs.writeFileSync(file, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  home.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
  home.env.HELPER_LOG = path.join(home.dir, "helper.log");
  return file;
}

const TEST_HELPER = `
url=""
read -r url || true
echo "$1 $url" >> "$HELPER_LOG"
case "$url" in
  ghcr.io) printf '{"ServerURL":"ghcr.io","Username":"helper-user","Secret":"helper-secret-ghcr"}' ;;
  https://index.docker.io/v1/) printf '{"ServerURL":"%s","Username":"<token>","Secret":"hub-identity"}' "$url" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac`;

describe("credential lookup", () => {
  test("the files, in order", () => {
    const home = newHome({ REGISTRY_AUTH_FILE: "/etc/auth.json", DOCKER_CONFIG: "/cfg/docker" });
    assert.deepEqual(credentialFiles(home.environment), [
      { format: "auth-json", path: "/etc/auth.json" },
      { format: "auth-json", path: path.join(home.dir, "run/containers/auth.json") },
      { format: "auth-json", path: path.join(home.dir, ".config/containers/auth.json") },
      { format: "auth-json", path: "/cfg/docker/config.json" },
      { format: "netrc", path: path.join(home.dir, ".config/enroot/.credentials") },
    ]);
    const bare = credentialFiles({ env: {}, homedir: "/h" });
    assert.deepEqual(
      bare.map((f) => f.path),
      ["/h/.config/containers/auth.json", "/h/.docker/config.json", "/h/.config/enroot/.credentials"],
    );
    assert.equal(
      credentialFiles({ env: { ENROOT_CONFIG_PATH: "/e" }, homedir: "/h" })[2]?.path,
      "/e/.credentials",
    );
  });

  test("explicit --creds first, then REGISTRY_AUTH_FILE, podman, docker, enroot", async () => {
    const home = newHome();
    const auth = (pw: string) => ({ auths: { "quay.io": { auth: basic("u", pw) } } });
    const files = [
      home.write("custom/auth.json", auth("from-registry-auth-file")),
      home.write("run/containers/auth.json", auth("from-runtime-dir")),
      home.write(".config/containers/auth.json", auth("from-config-home")),
      home.write(".docker/config.json", auth("from-docker")),
      home.write(".config/enroot/.credentials", "machine quay.io login u password from-enroot\n"),
    ];
    home.env.REGISTRY_AUTH_FILE = files[0];
    const lookup = { registry: "quay.io" };
    const explicit = parseCredsOption("cli-user:from:cli").credential;
    assert.equal((await find(home, { ...lookup, credential: explicit }))?.reveal(), "from:cli");
    for (const [i, want] of [
      "from-registry-auth-file",
      "from-runtime-dir",
      "from-config-home",
      "from-docker",
      "from-enroot",
    ].entries()) {
      const cred = await find(home, lookup);
      assert.equal(cred?.reveal(), want);
      assert.equal(cred?.source, files[i]);
      assert.equal(cred?.username, "u");
      fs.rmSync(files[i]);
    }
    assert.equal(await find(home, lookup), undefined);
  });

  test("Docker Hub's names are one registry; keys may name a repository, most specific wins", async () => {
    const home = newHome();
    home.write(".docker/config.json", {
      auths: {
        "https://index.docker.io/v1/": { auth: basic("hubuser", "hub-pass") },
        "quay.io": { auth: basic("q", "quay-any") },
        "quay.io/org": { username: "q", password: "quay-org" },
        "quay.io/org/repo": { auth: basic("q", "quay-org-repo") },
        "localhost:5000": { auth: basic("l", "local") },
      },
    });
    for (const registry of ["docker.io", "index.docker.io", "registry-1.docker.io"])
      assert.equal(await findSecret(home, { registry, repository: "library/debian" }), "hub-pass", registry);
    assert.equal(await findSecret(home, { registry: "quay.io", repository: "org/repo" }), "quay-org-repo");
    assert.equal(
      await findSecret(home, { registry: "quay.io", repository: "org/repo/sub" }),
      "quay-org-repo",
    );
    assert.equal(await findSecret(home, { registry: "quay.io", repository: "org/other" }), "quay-org");
    assert.equal(await findSecret(home, { registry: "quay.io", repository: "orgx/repo" }), "quay-any");
    assert.equal(await findSecret(home, { registry: "quay.io" }), "quay-any");
    assert.equal(await findSecret(home, { registry: "localhost:5000" }), "local");
    assert.equal(await find(home, { registry: "localhost:5001" }), undefined);
    assert.equal(normalizeAuthKey("https://index.docker.io/v1/"), "docker.io");
    assert.equal(normalizeAuthKey("http://Quay.IO/v2/"), "quay.io");
    assert.equal(normalizeAuthKey("registry-1.docker.io/library/x/"), "docker.io/library/x");
  });

  test("identity tokens, registry tokens, empty entries, a user filter", async () => {
    const home = newHome();
    home.write(".docker/config.json", {
      auths: {
        "a.example": { auth: basic("alice", ""), identitytoken: "refresh-token" },
        "b.example": { registrytoken: "bearer-token" },
        "c.example": {},
        "d.example": { auth: basic("alice", "alice-pw") },
      },
    });
    home.write(".config/enroot/.credentials", "machine d.example login bob password bob-pw\n");
    const a = await find(home, { registry: "a.example" });
    assert.equal(a?.kind, "identity-token");
    assert.equal(a?.username, "alice");
    assert.equal(a?.reveal(), "refresh-token");
    const b = await find(home, { registry: "b.example" });
    assert.equal(b?.kind, "registry-token");
    assert.equal(b?.reveal(), "bearer-token");
    assert.equal(
      await find(home, { registry: "c.example" }),
      undefined,
      "docker's {} entries are not credentials",
    );
    assert.equal(await findSecret(home, { registry: "d.example" }), "alice-pw");
    assert.equal(await findSecret(home, { registry: "d.example", username: "bob" }), "bob-pw");
    assert.equal(await find(home, { registry: "d.example", username: "carol" }), undefined);
  });

  test("malformed auth files are E_BAD_INPUT naming the file, never the secret", async () => {
    const home = newHome();
    const file = home.write(".docker/config.json", "{ not json");
    await rejectsCode(find(home, { registry: "x.example" }), "E_BAD_INPUT", file);
    home.write(".docker/config.json", { auths: { "x.example": { auth: "c2VjcmV0LW5vLWNvbG9u" } } });
    const msg = await rejectsCode(
      find(home, { registry: "x.example" }),
      "E_BAD_INPUT",
      file,
      "x.example",
      "auth",
    );
    assert.ok(!msg.includes("c2VjcmV0LW5vLWNvbG9u") && !msg.includes("secret-no-colon"), msg);
    home.write(".docker/config.json", { auths: [] });
    await rejectsCode(find(home, { registry: "x.example" }), "E_BAD_INPUT", "auths");
    home.write(".docker/config.json", "");
    assert.equal(await find(home, { registry: "x.example" }), undefined, "an empty file holds nothing");
  });
});

describe("credential helpers", () => {
  test("credHelpers for a host, credsStore for the rest, auths when the helper has nothing", async () => {
    const home = newHome();
    installHelper(home, "test", TEST_HELPER);
    home.write(".docker/config.json", {
      credHelpers: { "ghcr.io": "test" },
      auths: { "ghcr.io": {}, "quay.io": { auth: basic("q", "quay-from-auths") } },
    });
    const g = await find(home, { registry: "ghcr.io", repository: "org/app" });
    assert.equal(g?.kind, "password");
    assert.equal(g?.username, "helper-user");
    assert.equal(g?.reveal(), "helper-secret-ghcr");
    assert.equal(g?.source, "docker-credential-test");
    assert.equal(
      fs.readFileSync(home.env.HELPER_LOG!, "utf8"),
      "get ghcr.io\n",
      "`get`, server URL on stdin",
    );

    home.write(".docker/config.json", {
      credsStore: "test",
      auths: { "quay.io": { auth: basic("q", "quay-from-auths") } },
    });
    const hub = await find(home, { registry: "docker.io" });
    assert.equal(hub?.kind, "identity-token", "user <token> means an identity token");
    assert.equal(hub?.reveal(), "hub-identity");
    assert.equal(await findSecret(home, { registry: "quay.io" }), "quay-from-auths");
    assert.equal(await find(home, { registry: "nothing.example" }), undefined);
    assert.deepEqual(fs.readFileSync(home.env.HELPER_LOG!, "utf8").trim().split("\n").slice(1), [
      "get https://index.docker.io/v1/",
      "get quay.io",
      "get nothing.example",
    ]);
  });

  test("a missing helper is E_NOT_FOUND naming it and the config file", async () => {
    const home = newHome();
    const file = home.write(".docker/config.json", { credsStore: "desktop" });
    await rejectsCode(
      find(home, { registry: "x.example" }),
      "E_NOT_FOUND",
      "docker-credential-desktop",
      file,
    );
    home.write(".docker/config.json", { credsStore: "../../bin/sh" });
    await rejectsCode(find(home, { registry: "x.example" }), "E_BAD_INPUT", "helper name");
  });

  test("a failing, garbled or hanging helper: clear errors that do not echo its output", async () => {
    const home = newHome();
    home.write(".docker/config.json", { credsStore: "bad" });
    installHelper(
      home,
      "bad",
      `echo '{"Username":"u","Secret":"leaked-secret"}'; echo leaked-secret >&2; exit 3`,
    );
    let msg = await rejectsCode(
      find(home, { registry: "x.example" }),
      "E_IO",
      "docker-credential-bad",
      "exit status 3",
    );
    assert.ok(!msg.includes("leaked-secret"), msg);
    installHelper(home, "bad", `echo 'Secret: leaked-secret'`);
    msg = await rejectsCode(find(home, { registry: "x.example" }), "E_BAD_INPUT", "docker-credential-bad");
    assert.ok(!msg.includes("leaked-secret"), msg);
    installHelper(home, "bad", `exec sleep 20`);
    const started = Date.now();
    await rejectsCode(
      findCredential({ registry: "x.example" }, { ...home.environment, timeoutMs: 300 }),
      "E_IO",
      "did not finish",
    );
    assert.ok(Date.now() - started < 5000, "killed at the timeout");
  });
});

describe("enroot credentials file", () => {
  test("netrc syntax: one-line and multi-line entries, quotes, comments, macdef, default", () => {
    const entries = parseNetrc(
      [
        "# NGC needs both lines",
        "machine nvcr.io login $oauthtoken password nv-key",
        "machine authn.nvidia.com login $oauthtoken password nv-key",
        "",
        "machine multi.example",
        "  login  multi",
        '  password "with space and \\" quote"',
        "macdef init",
        "cd /pub",
        "",
        "default login anonymous password guest",
        "machine last.example login l password $(printf '%s' tok)",
      ].join("\n"),
      "creds",
    );
    assert.deepEqual(
      entries.map((e) => [e.machine, e.login, e.line]),
      [
        ["nvcr.io", "$oauthtoken", 2],
        ["authn.nvidia.com", "$oauthtoken", 3],
        ["multi.example", "multi", 5],
        ["last.example", "l", 12],
      ],
    );
    const pw = entries[2]?.password;
    assert.ok(pw !== undefined && "literal" in pw);
    assert.equal(pw.literal.reveal(), 'with space and " quote');
    const cmd = entries[3]?.password;
    assert.ok(cmd !== undefined && "command" in cmd);
    assert.equal(cmd.command.reveal(), "printf '%s' tok");
    throwsCode(() => parseNetrc("machine a login b password $A$B", "f"), "E_BAD_INPUT", "f:1", "$NAME");
    throwsCode(() => parseNetrc("machine a\nlogin b password $(echo x", "f"), "E_BAD_INPUT", "f:2", ")");
    throwsCode(() => parseNetrc("machine", "f"), "E_BAD_INPUT", "machine");
    throwsCode(() => parseNetrc("hostname x", "f"), "E_BAD_INPUT", "hostname");
  });

  test("lookup: host match without port, Hub aliases, first matching line or the given user", async () => {
    const home = newHome();
    const file = home.write(
      ".config/enroot/.credentials",
      [
        "machine nvcr.io login $oauthtoken password nv-key",
        "machine reg.example login first password first-pw",
        "machine reg.example login second password second-pw",
        "machine registry-1.docker.io login hub password hub-pw",
      ].join("\n"),
    );
    const nv = await find(home, { registry: "nvcr.io" });
    assert.equal(nv?.username, "$oauthtoken");
    assert.equal(nv?.reveal(), "nv-key");
    assert.equal(nv?.source, file);
    assert.equal(
      await findSecret(home, { registry: "reg.example:5000" }),
      "first-pw",
      "the port may be omitted",
    );
    assert.equal(await findSecret(home, { registry: "reg.example", username: "second" }), "second-pw");
    assert.equal(await findSecret(home, { registry: "docker.io" }), "hub-pw");
    assert.equal(await find(home, { registry: "other.example" }), undefined);
  });

  test("passwords from the environment and from commands, evaluated only when used", async () => {
    const home = newHome({ NGC_KEY: "key-from-env" });
    const marker = path.join(home.dir, "ran");
    home.write(
      ".config/enroot/.credentials",
      [
        "machine env.example login u password $NGC_KEY",
        "machine brace.example login u password ${NGC_KEY}",
        "machine unset.example login u password $NOT_SET",
        "machine cmd.example login AWS password $(printf '%s\\n' ' tok  en ')",
        `machine other.example login u password $(touch ${marker}; echo x)`,
        "machine fail.example login u password $(echo leaked-secret; exit 4)",
      ].join("\n"),
    );
    assert.equal(await findSecret(home, { registry: "env.example" }), "key-from-env");
    assert.equal(await findSecret(home, { registry: "brace.example" }), "key-from-env");
    await rejectsCode(find(home, { registry: "unset.example" }), "E_NOT_FOUND", "$NOT_SET", ":3");
    assert.equal(await findSecret(home, { registry: "cmd.example" }), "tok en", "as `echo $(…)` prints it");
    assert.equal(fs.existsSync(marker), false, "commands of other entries do not run");
    const msg = await rejectsCode(find(home, { registry: "fail.example" }), "E_IO", "exit status 4");
    assert.ok(!msg.includes("leaked-secret"), msg);
  });

  test("commands are not run from a file others can write", async () => {
    const home = newHome();
    const marker = path.join(home.dir, "ran");
    const file = home.write(
      ".config/enroot/.credentials",
      `machine cmd.example login u password $(touch ${marker})\nmachine lit.example login u password lit\n`,
      0o666,
    );
    await rejectsCode(find(home, { registry: "cmd.example" }), "E_BAD_INPUT", file, "writable");
    assert.equal(fs.existsSync(marker), false);
    assert.equal(await findSecret(home, { registry: "lit.example" }), "lit", "literal passwords still work");
  });
});

describe("secrets stay secret", () => {
  test("String, JSON, util.inspect and format show <redacted>", () => {
    const secret = "s3cr3t-value";
    const cred = new RegistryCredential("password", "alice", secret, "/home/a/.docker/config.json");
    const shown = [
      String(cred),
      [cred].join(""),
      JSON.stringify(cred),
      JSON.stringify({ nested: [cred] }),
      inspect(cred),
      inspect({ cred }, { showHidden: true, depth: 5 }),
      format("%o %O %s %j", cred, cred, cred, cred),
    ];
    for (const s of shown) {
      assert.ok(!s.includes(secret), s);
      assert.ok(s.includes("<redacted>"), s);
    }
    assert.ok(String(cred).includes("alice") && String(cred).includes("/home/a/.docker/config.json"));
    assert.deepEqual(JSON.parse(JSON.stringify(cred)), {
      kind: "password",
      username: "alice",
      source: "/home/a/.docker/config.json",
      secret: "<redacted>",
    });
    assert.deepEqual(Object.keys(cred).sort(), ["kind", "source", "username"]);
    assert.equal(cred.reveal(), secret);
    assert.equal(cred.basicAuthorization(), "Basic " + Buffer.from(`alice:${secret}`).toString("base64"));
    const s = new Secret(secret);
    for (const shownSecret of [String(s), JSON.stringify({ s }), inspect(s), format("%o", s)])
      assert.ok(!shownSecret.includes(secret), shownSecret);
    assert.equal(s.reveal(), secret);
  });

  test("--creds USER[:PASSWORD]", () => {
    const withPassword = parseCredsOption("bob:pa:ss");
    assert.equal(withPassword.username, "bob");
    assert.equal(withPassword.credential?.reveal(), "pa:ss");
    assert.equal(withPassword.credential?.source, "--creds");
    assert.deepEqual(parseCredsOption("bob"), { username: "bob" });
    assert.throws(
      () => parseCredsOption(":hunter2"),
      (e: unknown) => e instanceof StratumError && e.code === "E_USAGE" && !e.message.includes("hunter2"),
    );
  });
});
