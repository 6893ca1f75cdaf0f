// A registry token server for tests, run as its own process (`node [--import tsx] token-server.ts CONFIG.json`)
// so that tests may drive the stratum CLI with synchronous spawns. Node built-ins only. It implements the
// Docker registry bearer-token flow the way docker-registry's `auth.token` expects it:
//
//   GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=…][&account=…]   (anything else: 404, or 405)
//   - HTTP Basic against `users` (wrong password or unknown user: 401); no Authorization header = anonymous;
//   - scopes split on the first and last ':' (the name may contain ':' and '/'); anonymous callers get `pull`
//     only, known users every action they ask for;
//   - replies {token, access_token, expires_in, issued_at} with an RS256 JWT whose header carries the signing
//     certificate in x5c and whose claims are iss, sub, aud (= service), iat, nbf (now − 10 s), exp
//     (now + lifetime), jti and access.
//
// The config file (JSON, see TokenServerConfig) is re-read on every request, so a test can change the users or
// the token lifetime while the server runs. Every token request appends one JSON line to `logPath` (time, user,
// service, requested scopes, granted access, status, lifetime; never the password). Once listening, the port is
// written to `portFile`. With `parentPid`, the server exits when that process is gone.

import { createPrivateKey, randomUUID, sign, X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";

export interface TokenServerConfig {
  host: string;
  /** 0 picks a free port. */
  port: number;
  portFile: string;
  keyPath: string;
  certPath: string;
  issuer: string;
  users: Record<string, string>;
  /** Seconds from iat to exp. May be ≤ 0 to issue tokens that are already expired (see docs/testing.md). */
  lifetime: number;
  /** `expires_in` in the reply; defaults to max(lifetime, 1). */
  expiresIn?: number;
  logPath: string;
  parentPid?: number;
}

export interface TokenLogEntry {
  time: string;
  /** The Basic user name, or null when anonymous. */
  user: string | null;
  service: string | null;
  account: string | null;
  scopes: string[];
  access: { type: string; name: string; actions: string[] }[];
  status: number;
  lifetime: number;
}

const configPath = process.argv[2];
if (configPath === undefined) {
  // Run without a config, e.g. picked up by `node --test dist/test/`'s directory glob: nothing to do.
  process.stderr.write("usage: token-server CONFIG.json\n");
  process.exit(0);
}
const readConfig = (): TokenServerConfig =>
  JSON.parse(fs.readFileSync(configPath, "utf8")) as TokenServerConfig;
const startup = readConfig();
const key = createPrivateKey(fs.readFileSync(startup.keyPath));
const certDer = new X509Certificate(fs.readFileSync(startup.certPath)).raw.toString("base64");

const b64url = (b: Buffer | string): string => Buffer.from(b).toString("base64url");

function parseScope(scope: string): { type: string; name: string; actions: string[] } | null {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last === first) return null;
  const actions = scope
    .slice(last + 1)
    .split(",")
    .filter((a) => a !== "");
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

function basicUser(header: string | undefined): { user: string; password: string } | null | "malformed" {
  if (header === undefined) return null;
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m?.[1]) return "malformed";
  const text = Buffer.from(m[1], "base64").toString();
  const colon = text.indexOf(":");
  if (colon < 0) return "malformed";
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

function reply(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: http.OutgoingHttpHeaders = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://token.invalid");
  if (url.pathname !== "/token") return reply(res, 404, { error: "not found" });
  if (req.method !== "GET") return reply(res, 405, { error: "method not allowed" }, { allow: "GET" });
  const config = readConfig();
  const service = url.searchParams.get("service");
  const account = url.searchParams.get("account");
  const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(/\s+/).filter((x) => x !== ""));
  const log = (entry: Omit<TokenLogEntry, "time" | "service" | "account" | "scopes" | "lifetime">): void => {
    const line: TokenLogEntry = {
      time: new Date().toISOString(),
      service,
      account,
      scopes,
      lifetime: config.lifetime,
      ...entry,
    };
    fs.appendFileSync(config.logPath, JSON.stringify(line) + "\n");
  };

  const creds = basicUser(req.headers.authorization);
  if (creds === "malformed" || (creds !== null && config.users[creds.user] !== creds.password)) {
    log({ user: creds === "malformed" ? null : creds.user, access: [], status: 401 });
    return reply(
      res,
      401,
      { errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] },
      {
        "www-authenticate": 'Basic realm="stratum-test-token-server"',
      },
    );
  }
  const user = creds?.user ?? null;
  const access = scopes.flatMap((s) => {
    const p = parseScope(s);
    if (p === null) return [];
    const actions = user === null ? p.actions.filter((a) => a === "pull") : p.actions;
    return actions.length > 0 ? [{ ...p, actions }] : [];
  });

  const now = Math.floor(Date.now() / 1000);
  const header = { typ: "JWT", alg: "RS256", x5c: [certDer] };
  const claims = {
    iss: config.issuer,
    sub: user ?? "",
    aud: service ?? "",
    iat: now,
    nbf: now - 10,
    exp: now + config.lifetime,
    jti: randomUUID(),
    access,
  };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const token = `${signingInput}.${b64url(sign("sha256", Buffer.from(signingInput), key))}`;
  log({ user, access, status: 200 });
  reply(res, 200, {
    token,
    access_token: token,
    expires_in: config.expiresIn ?? Math.max(config.lifetime, 1),
    issued_at: new Date(now * 1000).toISOString(),
  });
}

const server = http.createServer((req, res) => {
  try {
    handle(req, res);
  } catch (e) {
    reply(res, 500, { error: String(e) });
  }
});
server.listen(startup.port, startup.host, () => {
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("unexpected listen address");
  fs.writeFileSync(startup.portFile + ".tmp", String(addr.port));
  fs.renameSync(startup.portFile + ".tmp", startup.portFile);
  process.stdout.write(`token server listening on ${startup.host}:${addr.port}\n`);
});
const parentPid = startup.parentPid;
if (parentPid !== undefined) {
  setInterval(() => {
    try {
      process.kill(parentPid, 0);
    } catch {
      process.exit(0);
    }
  }, 1000).unref();
}
process.on("SIGTERM", () => process.exit(0));
