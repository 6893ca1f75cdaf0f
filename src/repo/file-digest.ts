// The fs-verity digest of a file on disk, read once with large page-aligned reads (the hashing itself is
// src/format/fsverity.ts). Used to verify objects (fsck, reads), to digest directory trees, and by the bench.
//
// Hashing 4 KiB blocks one crypto call at a time is the bottleneck, so large files use both cores: each chunk's
// blocks are split between this thread and one worker thread that reads the same shared, page-aligned memory;
// the two halves' block digests are fed to the Merkle tree in order. The handoff is synchronous (Atomics), so
// callers stay synchronous. If the worker does not take a job within 5 s (it failed to start), this thread
// takes the job back, does it, and stops using the worker: a broken worker costs time, never a hang.
//
// Handoff word control[0]: 0 idle, 1 job posted, 4 job taken by the worker, 2 job done. control[1]: first byte,
// control[2]: byte count, control[3]: output offset, control[4]: 1 = sha256, 2 = sha512.

import { hash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import { Worker } from "node:worker_threads";
import { FsVerityHasher } from "../format/fsverity.ts";
import type { Algorithm } from "../format/object-id.ts";
import { alignedBuffer, alignedSharedMemory } from "../sys/aligned-buffer.ts";

const READ_SIZE = 1 << 20;
const BLOCK = 4096;
/** Parallel chunk: two halves of 1024 blocks. */
const CHUNK = 8 << 20;
/** Files at least this large are digested on two threads (starting the worker costs a few tens of ms). */
export const PARALLEL_MIN_SIZE = 32 << 20;
/** Fraction of each chunk's blocks hashed by this thread (it also does the reading). */
const MAIN_SHARE = 0.42;
/** A job the worker has not taken after this long (it failed to start, or the machine is swamped) is done here. */
const TAKEOVER_MS = 5000;

let shared: Buffer | null = null;

/** One reusable aligned read buffer per process (all callers are synchronous). */
export function readBuffer(): Buffer {
  shared ??= alignedBuffer(READ_SIZE);
  return shared;
}

interface DigestWorker {
  control: Int32Array;
  /** Two CHUNK-sized read buffers, back to back, in shared aligned memory. */
  data: Buffer;
  out: Buffer;
}

let worker: DigestWorker | null | undefined;

/**
 * The worker thread's code. It is started from this function's source text (so it works compiled and under a
 * TypeScript loader alike) and must use nothing from this module's scope.
 */
function workerMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports -- an eval'd worker is a CommonJS script */
  const { hash: hashBlock } = require("node:crypto") as typeof import("node:crypto");
  const shared = (require("node:worker_threads") as typeof import("node:worker_threads"))
    .workerData as unknown;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const {
    control: cb,
    data: db,
    out: ob,
  } = shared as { control: SharedArrayBuffer; data: SharedArrayBuffer; out: SharedArrayBuffer };
  const ctl = new Int32Array(cb);
  const data = Buffer.from(db);
  const out = Buffer.from(ob);
  for (;;) {
    Atomics.wait(ctl, 0, 0);
    if (Atomics.compareExchange(ctl, 0, 1, 4) !== 1) continue;
    const name = ctl[4] === 2 ? "sha512" : "sha256";
    const size = ctl[4] === 2 ? 64 : 32;
    const end = ctl[1] + ctl[2];
    for (let b = ctl[1], o = ctl[3]; b < end; b += 4096, o += size)
      out.write(hashBlock(name, data.subarray(b, b + 4096), "hex"), o, "hex");
    Atomics.store(ctl, 0, 2);
    Atomics.notify(ctl, 0);
  }
}

function digestWorker(): DigestWorker | null {
  if (worker !== undefined) return worker;
  if (os.availableParallelism() < 2) return (worker = null);
  const controlBuffer = new SharedArrayBuffer(5 * 4);
  const dataBuffer = alignedSharedMemory(2 * CHUNK);
  const outBuffer = new SharedArrayBuffer((CHUNK / BLOCK) * 64);
  const w = new Worker(`(${workerMain.toString()})()`, {
    eval: true,
    workerData: { control: controlBuffer, data: dataBuffer, out: outBuffer },
  });
  w.unref();
  w.on("error", () => (worker = null));
  worker = {
    control: new Int32Array(controlBuffer),
    data: Buffer.from(dataBuffer, 0, 2 * CHUNK),
    out: Buffer.from(outBuffer),
  };
  return worker;
}

function hashBlocks(
  data: Buffer,
  out: Buffer,
  start: number,
  end: number,
  outAt: number,
  algorithm: Algorithm,
): void {
  for (let b = start, o = outAt; b < end; b += BLOCK, o += algorithm.digestSize)
    out.write(hash(algorithm.hash, data.subarray(b, b + BLOCK), "hex"), o, "hex");
}

/** Post the worker's share of a chunk: the blocks after the first `mine` of `length` bytes at `offset`. */
function postJob(wk: DigestWorker, offset: number, length: number, mine: number, algorithm: Algorithm): void {
  const c = wk.control;
  c[1] = offset + mine * BLOCK;
  c[2] = length - mine * BLOCK;
  c[3] = mine * algorithm.digestSize;
  c[4] = algorithm.id;
  Atomics.store(c, 0, 1);
  Atomics.notify(c, 0);
}

/** Wait for the posted job; if the worker never took it, do it here and stop using the worker. */
function finishJob(wk: DigestWorker, posted: number, algorithm: Algorithm): void {
  const c = wk.control;
  for (;;) {
    const state = Atomics.load(c, 0);
    if (state === 2) break;
    if (state === 1 && Date.now() - posted > TAKEOVER_MS && Atomics.compareExchange(c, 0, 1, 0) === 1) {
      worker = null;
      hashBlocks(wk.data, wk.out, c[1], c[1] + c[2], c[3], algorithm);
      return;
    }
    Atomics.wait(c, 0, state, 50);
  }
  Atomics.store(c, 0, 0);
}

function digestFdParallel(
  fd: number,
  algorithm: Algorithm,
  wk: DigestWorker,
): { digest: string; size: number } {
  const h = new FsVerityHasher(algorithm);
  const read = (half: number): number => {
    let got = 0;
    for (;;) {
      const n = fs.readSync(fd, wk.data, half * CHUNK + got, CHUNK - got, null);
      if (n === 0 || (got += n) === CHUNK) return got;
    }
  };
  let cur = 0;
  let n = read(cur);
  while (n > 0) {
    const offset = cur * CHUNK;
    // Whole blocks, more than one block in the file so far: their digests can be computed out of line. (A
    // single-block file's root is that block's hash, which only update() handles.)
    const parallel = n % BLOCK === 0 && h.length % BLOCK === 0 && h.length + n > BLOCK;
    // This thread also reads the next chunk, so it hashes a smaller share than the worker.
    const mine = Math.floor((n / BLOCK) * MAIN_SHARE);
    const posted = Date.now();
    if (parallel) postJob(wk, offset, n, mine, algorithm);
    const next = read(1 - cur);
    if (parallel) {
      hashBlocks(wk.data, wk.out, offset, offset + mine * BLOCK, 0, algorithm);
      finishJob(wk, posted, algorithm);
      h.updateBlockHashes(wk.out.subarray(0, (n / BLOCK) * algorithm.digestSize));
    } else h.update(wk.data.subarray(offset, offset + n));
    cur = 1 - cur;
    n = next;
  }
  return { digest: h.digestHex(), size: h.length };
}

/** Digest the rest of an open file. */
export function digestFd(fd: number, algorithm: Algorithm): { digest: string; size: number } {
  const wk = fs.fstatSync(fd).size >= PARALLEL_MIN_SIZE ? digestWorker() : null;
  if (wk) return digestFdParallel(fd, algorithm, wk);
  const h = new FsVerityHasher(algorithm);
  const buf = readBuffer();
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) return { digest: h.digestHex(), size: h.length };
    h.update(buf.subarray(0, n));
  }
}

export function digestFile(path: string | Buffer, algorithm: Algorithm): { digest: string; size: number } {
  const fd = fs.openSync(path, "r");
  try {
    return digestFd(fd, algorithm);
  } finally {
    fs.closeSync(fd);
  }
}
