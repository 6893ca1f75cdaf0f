// Repository lock, compatible with composefs-rs (reference: composefs-repository.md §1.5): every open repository
// holds flock(LOCK_SH) on the repository directory for its lifetime; garbage collection converts it to LOCK_EX,
// which waits until no other process has the repository open, then converts back. We poll with LOCK_NB so the
// event loop keeps running while we wait.

import { setTimeout as sleep } from "node:timers/promises";
import { StratumError } from "../errors.ts";
import { flock } from "../sys/native.ts";

export type LockMode = "sh" | "ex";

export class RepoLock {
  private mode: LockMode | "none" = "none";

  constructor(
    private readonly fd: number,
    private readonly what: string,
  ) {}

  get held(): LockMode | "none" {
    return this.mode;
  }

  /** Take the lock in `mode`, waiting up to `timeoutMs` (Infinity by default); `onWait` runs once if we wait. */
  async acquire(mode: LockMode, opts: { timeoutMs?: number; onWait?: () => void } = {}): Promise<void> {
    const deadline = Date.now() + (opts.timeoutMs ?? Infinity);
    let delay = 5;
    let waited = false;
    while (!flock(this.fd, mode, true)) {
      if (!waited) opts.onWait?.();
      waited = true;
      if (Date.now() >= deadline)
        throw new StratumError(
          "E_LOCKED",
          `${this.what}: could not take the ${mode === "ex" ? "exclusive" : "shared"} lock (held by another process)`,
        );
      await sleep(delay);
      delay = Math.min(delay * 2, 200);
    }
    this.mode = mode;
  }

  release(): void {
    if (this.mode !== "none") flock(this.fd, "un", false);
    this.mode = "none";
  }
}
