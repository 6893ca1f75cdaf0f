// A loopback HTTP reverse proxy that injects scripted faults, run as its own process
// (`node [--import tsx] fault-proxy-server.ts CONFIG.json`; start it through fault-proxy.ts). Node built-ins
// only. Every request is forwarded to `upstream` as is (method, path, headers including Host, Authorization and
// Range, request body), unless a rule from the rules file (re-read whenever it changes; counters restart then)
// says otherwise. The first rule whose `path` regex, `method` and `range` match and that is not used up decides:
//
//   status    answer with `status` (and Retry-After, headers, body) without asking upstream. A 401 without an
//             explicit www-authenticate header relays upstream's own 401 for the request sent without its
//             Authorization header (the registry's real Bearer challenge), or a bare 401 if upstream accepts it.
//   delay     wait `ms`, then forward normally.
//   drop      forward; relay status, headers and the first `afterBytes` bytes of the body, then close the
//             connection (the client sees a premature end against Content-Length: the Range-resume case).
//   truncate  forward; send only the first `bytes` bytes, with Content-Length set to match (valid HTTP, short
//             content).
//   corrupt   forward; flip every bit of the byte at `offset` of the body (default: the middle when the length is
//             known, else 0).
//   stall     forward; relay the first `afterBytes` bytes, then send nothing more while the connection lasts.
//
// Body faults (drop, truncate, corrupt, stall) apply only to 2xx answers and only those count against `skip`
// and `times`; other answers (a 401 challenge before the client has a token, a 404) pass through untouched.
// Every request appends one JSON line to `logPath`: time, method, path, range, status, body bytes sent, and the
// rule index and fault kind when one applied. Once listening, the port is written to `portFile`.

import * as fs from "node:fs";
import * as http from "node:http";

export type FaultAction =
  | {
      kind: "status";
      status: number;
      retryAfter?: number | string;
      headers?: Record<string, string>;
      body?: string;
    }
  | { kind: "delay"; ms: number }
  | { kind: "drop"; afterBytes: number }
  | { kind: "truncate"; bytes: number }
  | { kind: "corrupt"; offset?: number }
  | { kind: "stall"; afterBytes: number };

export interface FaultRule {
  /** A JavaScript regular expression tested against the request target (path and query). */
  path: string;
  /** Only this method (default: any). */
  method?: string;
  /** Only requests with (true) or without (false) a Range header (default: either). */
  range?: boolean;
  /** Let this many counted matches through untouched before the fault applies (default 0). */
  skip?: number;
  /** How many counted matches get the fault (default 1), or "always". */
  times?: number | "always";
  action: FaultAction;
}

export interface FaultProxyConfig {
  host: string;
  port: number;
  portFile: string;
  /** "HOST:PORT" of the server behind the proxy (plain HTTP). */
  upstream: string;
  /** JSON file holding FaultRule[]. */
  rulesPath: string;
  logPath: string;
  parentPid?: number;
}

export interface ProxyLogEntry {
  time: string;
  method: string;
  path: string;
  range: string | null;
  /** The status sent to the client (0 if none was sent). */
  status: number;
  /** Body bytes sent to the client. */
  bytes: number;
  /** Index of the rule that applied, or null. */
  rule: number | null;
  fault: FaultAction["kind"] | null;
}

const configPath = process.argv[2];
if (configPath === undefined) {
  // Run without a config, e.g. picked up by `node --test dist/test/`'s directory glob: nothing to do.
  process.stderr.write("usage: fault-proxy-server CONFIG.json\n");
  process.exit(0);
}
const config = JSON.parse(fs.readFileSync(configPath, "utf8")) as FaultProxyConfig;
const [upstreamHost, upstreamPort] = [
  config.upstream.slice(0, config.upstream.lastIndexOf(":")),
  Number(config.upstream.slice(config.upstream.lastIndexOf(":") + 1)),
];
const agent = new http.Agent({ keepAlive: true });

interface RuleState {
  rule: FaultRule;
  re: RegExp;
  seen: number;
  fired: number;
}
let rulesText = "";
let rules: RuleState[] = [];

function currentRules(): RuleState[] {
  let text = "[]";
  try {
    text = fs.readFileSync(config.rulesPath, "utf8");
  } catch {
    // no rules file: plain proxy
  }
  if (text !== rulesText) {
    rulesText = text;
    rules = (JSON.parse(text) as FaultRule[]).map((rule) => ({
      rule,
      re: new RegExp(rule.path),
      seen: 0,
      fired: 0,
    }));
  }
  return rules;
}

const usedUp = (s: RuleState): boolean => s.rule.times !== "always" && s.fired >= (s.rule.times ?? 1);

/** Counts one match; true when the fault applies to it. */
function count(s: RuleState): boolean {
  if (usedUp(s)) return false;
  s.seen++;
  if (s.seen <= (s.rule.skip ?? 0)) return false;
  s.fired++;
  return true;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"]);

function relayHeaders(raw: string[], contentLength?: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? "";
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (contentLength !== undefined && lower === "content-length") continue;
    out.push(name, raw[i + 1] ?? "");
  }
  if (contentLength !== undefined) out.push("Content-Length", String(contentLength));
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const target = req.url ?? "/";
  const method = req.method ?? "GET";
  const range = req.headers.range ?? null;
  const entry: ProxyLogEntry = {
    time: new Date().toISOString(),
    method,
    path: target,
    range,
    status: 0,
    bytes: 0,
    rule: null,
    fault: null,
  };
  let logged = false;
  const writeLog = (): void => {
    if (logged) return;
    logged = true;
    entry.status = res.headersSent ? res.statusCode : entry.status;
    fs.appendFileSync(config.logPath, JSON.stringify(entry) + "\n");
  };
  res.on("finish", writeLog);
  res.on("close", writeLog);

  const all = currentRules();
  const index = all.findIndex(
    (s) =>
      !usedUp(s) &&
      s.re.test(target) &&
      (s.rule.method === undefined || s.rule.method.toUpperCase() === method) &&
      (s.rule.range === undefined || s.rule.range === (range !== null)),
  );
  const state = index >= 0 ? all[index] : undefined;
  const action = state?.rule.action;

  if (state && action && (action.kind === "status" || action.kind === "delay")) {
    if (count(state)) {
      entry.rule = index;
      entry.fault = action.kind;
      if (action.kind === "delay") {
        void sleep(action.ms).then(() => forward(req, res, entry, null));
        return;
      }
      req.resume();
      const headers: Record<string, string> = { ...action.headers };
      if (action.retryAfter !== undefined) headers["retry-after"] = String(action.retryAfter);
      const hasChallenge = Object.keys(headers).some((h) => h.toLowerCase() === "www-authenticate");
      if (action.status === 401 && !hasChallenge) {
        challenge(req, res, entry, headers, action.body);
        return;
      }
      const body =
        action.body ?? JSON.stringify({ errors: [{ code: "FAULT", message: `injected ${action.status}` }] });
      res.writeHead(action.status, { "content-type": "application/json", ...headers });
      res.end(body);
      entry.bytes = Buffer.byteLength(body);
      return;
    }
  }
  forward(
    req,
    res,
    entry,
    state && action && action.kind !== "status" && action.kind !== "delay" ? state : null,
  );
}

/** A 401 carrying upstream's real challenge for this request made without credentials. */
function challenge(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  entry: ProxyLogEntry,
  headers: Record<string, string>,
  body: string | undefined,
): void {
  const h = { ...req.headers };
  delete h.authorization;
  delete h.range;
  const up = http.request(
    {
      host: upstreamHost,
      port: upstreamPort,
      method: req.method === "HEAD" ? "HEAD" : "GET",
      path: req.url,
      headers: h,
      agent,
    },
    (upRes) => {
      const parts: Buffer[] = [];
      upRes.on("data", (c: Buffer) => parts.push(c));
      upRes.on("end", () => {
        if (upRes.statusCode === 401) {
          const text = body ?? Buffer.concat(parts).toString();
          res.writeHead(401, [
            ...relayHeaders(upRes.rawHeaders, Buffer.byteLength(text)),
            ...Object.entries(headers).flat(),
          ]);
          res.end(text);
          entry.bytes = Buffer.byteLength(text);
        } else {
          const text =
            body ?? JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "injected 401" }] });
          res.writeHead(401, { "content-type": "application/json", ...headers });
          res.end(text);
          entry.bytes = Buffer.byteLength(text);
        }
      });
    },
  );
  up.on("error", () => {
    res.writeHead(401, headers);
    res.end();
  });
  up.end();
}

function forward(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  entry: ProxyLogEntry,
  bodyRule: RuleState | null,
): void {
  const headers = { ...req.headers };
  delete headers.connection;
  delete headers["keep-alive"];
  let cut = false; // the fault ended the relay; errors from our own up.destroy() are expected then
  const up = http.request(
    { host: upstreamHost, port: upstreamPort, method: req.method, path: req.url, headers, agent },
    (upRes) => {
      const status = upRes.statusCode ?? 502;
      const ok = status >= 200 && status < 300;
      const action = bodyRule && ok && count(bodyRule) ? bodyRule.rule.action : null;
      if (action && bodyRule) {
        entry.rule = rules.indexOf(bodyRule);
        entry.fault = action.kind;
      }
      const length =
        upRes.headers["content-length"] !== undefined ? Number(upRes.headers["content-length"]) : null;
      let limit = Infinity;
      let flipAt = -1;
      let after: "drop" | "stall" | "end" = "end";
      let newLength: number | undefined;
      if (action?.kind === "drop") {
        limit = action.afterBytes;
        after = "drop";
      } else if (action?.kind === "stall") {
        limit = action.afterBytes;
        after = "stall";
      } else if (action?.kind === "truncate") {
        limit = action.bytes;
        newLength = length === null ? action.bytes : Math.min(action.bytes, length);
      } else if (action?.kind === "corrupt") {
        flipAt = action.offset ?? (length !== null ? Math.floor(length / 2) : 0);
      }
      res.writeHead(status, upRes.statusMessage, relayHeaders(upRes.rawHeaders, newLength));
      if (req.method === "HEAD") {
        upRes.resume();
        res.end();
        return;
      }
      let sent = 0;
      upRes.on("data", (chunk: Buffer) => {
        if (cut) return;
        let c = chunk;
        if (flipAt >= sent && flipAt < sent + c.length) {
          c = Buffer.from(c);
          c[flipAt - sent] = (c[flipAt - sent] ?? 0) ^ 0xff;
        }
        if (sent + c.length >= limit) {
          c = c.subarray(0, limit - sent);
          cut = true;
        }
        if (c.length > 0) res.write(c);
        sent += c.length;
        entry.bytes = sent;
        if (cut) {
          up.destroy();
          if (after === "drop") {
            // Let the bytes written so far reach the client, then close the connection.
            res.socket?.end();
            setTimeout(() => res.socket?.destroy(), 50);
          } else if (after === "end") {
            res.end();
          }
          // stall: leave the response open; the client gives up or the proxy is stopped.
        }
      });
      upRes.on("end", () => {
        if (!cut) res.end();
      });
      upRes.on("error", () => {
        if (!cut) res.destroy(); // after a cut, the error is our own up.destroy()
      });
    },
  );
  up.on("error", (e) => {
    if (cut) return;
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`fault proxy: upstream error: ${e.message}\n`);
    } else {
      res.destroy();
    }
  });
  res.on("close", () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
}

const server = http.createServer(handle);
server.keepAliveTimeout = 30_000;
server.listen(config.port, config.host, () => {
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("unexpected listen address");
  fs.writeFileSync(config.portFile + ".tmp", String(addr.port));
  fs.renameSync(config.portFile + ".tmp", config.portFile);
  process.stdout.write(`fault proxy listening on ${config.host}:${addr.port} for ${config.upstream}\n`);
});
const parentPid = config.parentPid;
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
