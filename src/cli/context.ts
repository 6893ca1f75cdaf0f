// What every command shares: the global options, opening the repository they name, and output helpers.

import type { Command } from "commander";
import { Repository, defaultRepoPath } from "../repo/repository.ts";

export interface GlobalOptions {
  repo?: string;
  requireVerity?: boolean;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

export function repoPath(cmd: Command): string {
  return globalOptions(cmd).repo ?? defaultRepoPath();
}

/** Open the repository named by --repo / $STRATUM_REPO / the default, saying so if we wait for a lock. */
export async function openRepo(cmd: Command): Promise<Repository> {
  return Repository.open(repoPath(cmd), {
    requireVerity: globalOptions(cmd).requireVerity,
    onLockWait: () => note("waiting for another process to release the repository lock…"),
  });
}

/** Run `fn` with the repository open, closing it afterwards. */
export async function withRepo<T>(cmd: Command, fn: (repo: Repository) => Promise<T> | T): Promise<T> {
  const repo = await openRepo(cmd);
  try {
    return await fn(repo);
  } finally {
    repo.close();
  }
}

/** A message for the user on stderr. */
export function note(text: string): void {
  process.stderr.write(`stratum: ${text}\n`);
}

export function out(text: string): void {
  process.stdout.write(text + "\n");
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}
