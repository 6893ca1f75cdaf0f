// Run the real `stratum` executable (bin/stratum.js over the compiled dist/) and capture its output.

import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const STRATUM_BIN = path.join(PROJECT_ROOT, "bin/stratum.js");

export interface CliResult {
  status: number;
  stdout: Buffer;
  stderr: string;
}

export function stratum(args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [STRATUM_BIN, ...args], {
    input: opts.input,
    env: { ...process.env, ...opts.env },
    maxBuffer: 1 << 30,
  });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}
