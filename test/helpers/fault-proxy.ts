// Starts fault-proxy-server.ts (a separate process: tests may run the stratum CLI with synchronous spawns) on a
// free loopback port in front of `upstream` (e.g. a test registry's host), with scripted faults:
//
//   const proxy = await startFaultProxy(reg.host, [
//     { path: "/blobs/sha256:", method: "GET", action: { kind: "status", status: 500 } },
//     { path: "/blobs/", range: false, action: { kind: "drop", afterBytes: 1000 } },
//   ]);
//   … pull from docker://${proxy.host}/repo:tag …
//   proxy.requests()          // what the client asked for, with Range headers and statuses
//   proxy.setRules([...])     // new rules (their counters start from zero)
//   await proxy.stop();
//
// The rule semantics are documented in fault-proxy-server.ts and docs/testing.md.

import * as fs from "node:fs";
import * as path from "node:path";
import { discardDir, nodeScript, shortTempDir, spawnManaged, waitUntil } from "./daemons.ts";
import type { FaultProxyConfig, FaultRule, ProxyLogEntry } from "./fault-proxy-server.ts";

export type { FaultAction, FaultRule, ProxyLogEntry } from "./fault-proxy-server.ts";

export interface FaultProxy {
  /** "127.0.0.1:PORT" */
  host: string;
  url: string;
  upstream: string;
  rulesPath: string;
  logPath: string;
  /** Replaces the rules; counters restart. */
  setRules(rules: FaultRule[]): void;
  /** The request log so far. */
  requests(): ProxyLogEntry[];
  /** Empties the request log. */
  clearLog(): void;
  stop(): Promise<void>;
}

function writeJsonAtomic(file: string, value: unknown): void {
  fs.writeFileSync(file + ".tmp", JSON.stringify(value, null, 2) + "\n");
  fs.renameSync(file + ".tmp", file);
}

export async function startFaultProxy(upstream: string, rules: FaultRule[] = []): Promise<FaultProxy> {
  const dir = shortTempDir("sf-");
  const rulesPath = path.join(dir, "rules.json");
  const logPath = path.join(dir, "requests.jsonl");
  const portFile = path.join(dir, "port");
  const configPath = path.join(dir, "config.json");
  for (const rule of rules) new RegExp(rule.path); // fail here, not in the proxy, on a bad pattern
  writeJsonAtomic(rulesPath, rules);
  fs.writeFileSync(logPath, "");
  const config: FaultProxyConfig = {
    host: "127.0.0.1",
    port: 0,
    portFile,
    upstream,
    rulesPath,
    logPath,
    parentPid: process.pid,
  };
  writeJsonAtomic(configPath, config);
  const proc = spawnManaged(process.execPath, [...nodeScript("fault-proxy-server"), configPath], {
    logPath: path.join(dir, "proxy.log"),
    cleanupDir: dir,
  });
  try {
    await waitUntil("fault proxy", () => fs.existsSync(portFile), { proc, timeoutMs: 15_000 });
  } catch (e) {
    await proc.stop();
    discardDir(dir);
    throw e;
  }
  const host = `127.0.0.1:${fs.readFileSync(portFile, "utf8").trim()}`;
  let stopping: Promise<void> | undefined;
  return {
    host,
    url: `http://${host}`,
    upstream,
    rulesPath,
    logPath,
    setRules(next) {
      for (const rule of next) new RegExp(rule.path);
      writeJsonAtomic(rulesPath, next);
    },
    requests() {
      return fs
        .readFileSync(logPath, "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as ProxyLogEntry);
    },
    clearLog() {
      fs.writeFileSync(logPath, "");
    },
    stop() {
      stopping ??= (async () => {
        await proc.stop();
        discardDir(dir);
      })();
      return stopping;
    },
  };
}
