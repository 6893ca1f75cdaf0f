// fs-verity file digest computed in userspace, streaming, equal to the kernel's FS_IOC_MEASURE_VERITY and to
// `fsverity digest` (reference: composefs-repository.md §1.2; node-ecosystem.md §4). Merkle tree over 4096-byte
// blocks with no salt: each level hashes the 4 KiB blocks of the level below (the data is level 0; a short last
// block is zero-padded) and packs the hashes into 4 KiB blocks; the root is the hash of the single top block. The
// digest is the hash of a 256-byte descriptor holding version, algorithm, block size, data size and root.
// Memory use is one block per tree level, whatever the size of the data.

import { hash } from "node:crypto";
import { SHA256, type Algorithm } from "./object-id.ts";

const BLOCK = 4096;

class Level {
  readonly block = Buffer.alloc(BLOCK);
  fill = 0;
  /** True once a block of this level has been hashed into the level above. */
  flushed = false;
}

export class FsVerityHasher {
  readonly algorithm: Algorithm;
  private size = 0;
  /** levels[0] buffers a partial data block; levels[i>0] buffer hashes of level i-1 blocks. */
  private readonly levels: Level[] = [new Level()];
  private readonly hashHex: (data: Buffer) => string;

  constructor(algorithm: Algorithm = SHA256) {
    this.algorithm = algorithm;
    const name = algorithm.hash;
    this.hashHex = (data) => hash(name, data, "hex");
  }

  /** Number of data bytes fed so far. */
  get length(): number {
    return this.size;
  }

  update(data: Uint8Array): this {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let off = 0;
    const l0 = this.levels[0];
    // Complete a partially filled data block first.
    if (l0.fill > 0) {
      const n = Math.min(BLOCK - l0.fill, buf.length);
      buf.copy(l0.block, l0.fill, 0, n);
      l0.fill += n;
      off = n;
      if (l0.fill === BLOCK && off < buf.length) this.flush(this.levels, 0);
    }
    // Whole blocks straight from the input. A full block is only hashed once more data follows it, because the
    // last block of the top level is hashed differently (it becomes the root).
    while (buf.length - off > BLOCK) {
      if (l0.fill === BLOCK) this.flush(this.levels, 0);
      this.pushHash(this.levels, 1, this.hashHex(buf.subarray(off, off + BLOCK)));
      l0.flushed = true;
      off += BLOCK;
    }
    if (off < buf.length) {
      if (l0.fill === BLOCK) this.flush(this.levels, 0);
      buf.copy(l0.block, l0.fill, off);
      l0.fill += buf.length - off;
    }
    this.size += buf.length;
    return this;
  }

  /**
   * Feed the level-0 hashes of whole data blocks computed elsewhere (e.g. by another thread): `hashes` holds one
   * digest per 4096-byte block, in order. Only valid at a block boundary, and only for blocks that are followed
   * by more data (the last block of the file must go through update()).
   */
  updateBlockHashes(hashes: Buffer): this {
    const ds = this.algorithm.digestSize;
    const l0 = this.levels[0];
    if (l0.fill !== 0 && l0.fill !== BLOCK) throw new Error("updateBlockHashes needs a block boundary");
    if (hashes.length % ds !== 0) throw new Error("hashes must be whole digests");
    if (l0.fill === BLOCK) this.flush(this.levels, 0);
    for (let o = 0; o < hashes.length; o += ds)
      this.pushHashBytes(this.levels, 1, hashes.subarray(o, o + ds));
    if (hashes.length) l0.flushed = true;
    this.size += (hashes.length / ds) * BLOCK;
    return this;
  }

  /** The root hash of the Merkle tree (all zeros for empty data). */
  rootHash(): Buffer {
    if (this.size === 0) return Buffer.alloc(this.algorithm.digestSize);
    // Finalise on a copy so that more data may still be fed and digest() called again.
    const levels = this.levels.map((l) => Object.assign(new Level(), { fill: l.fill, flushed: l.flushed }));
    this.levels.forEach((l, i) => l.block.copy(levels[i].block));
    for (let i = 0; ; i++) {
      const level = levels[i];
      // A level none of whose blocks went up holds a single block: the top. Its hash is the root.
      if (!level.flushed) return hash(this.algorithm.hash, level.block.fill(0, level.fill), "buffer");
      if (level.fill > 0) this.flush(levels, i);
    }
  }

  /** The fs-verity file digest (hash of the descriptor). */
  digest(): Buffer {
    const desc = Buffer.alloc(256);
    desc[0] = 1; // version
    desc[1] = this.algorithm.id;
    desc[2] = this.algorithm.lgBlockSize;
    desc[3] = 0; // salt size
    desc.writeBigUInt64LE(BigInt(this.size), 8);
    this.rootHash().copy(desc, 16);
    return hash(this.algorithm.hash, desc, "buffer");
  }

  digestHex(): string {
    return this.digest().toString("hex");
  }

  /** Hash the (zero-padded) pending block of level `i` into level i+1. */
  private flush(levels: Level[], i: number): void {
    const level = levels[i];
    level.block.fill(0, level.fill);
    this.pushHash(levels, i + 1, this.hashHex(level.block));
    level.fill = 0;
    level.flushed = true;
  }

  private pushHashBytes(levels: Level[], i: number, digest: Buffer): void {
    if (i === levels.length) levels.push(new Level());
    const level = levels[i];
    if (level.fill === BLOCK) this.flush(levels, i);
    digest.copy(level.block, level.fill);
    level.fill += digest.length;
  }

  private pushHash(levels: Level[], i: number, hex: string): void {
    if (i === levels.length) levels.push(new Level());
    const level = levels[i];
    if (level.fill === BLOCK) this.flush(levels, i);
    level.block.write(hex, level.fill, "hex");
    level.fill += this.algorithm.digestSize;
  }
}

/** fs-verity digest of an in-memory buffer. */
export function fsverityDigest(data: Uint8Array, algorithm: Algorithm = SHA256): Buffer {
  return new FsVerityHasher(algorithm).update(data).digest();
}
