// What the repository commands share: the global options and opening the repository they name.

import type { Command } from "commander";
import { Repository, defaultRepoPath } from "../repo/repository.ts";
import { note } from "./output.ts";

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
