// xxHash32 (XXH32), the standard 32-bit xxHash by Yann Collet, in pure TypeScript. EROFS uses it for the
// xattr name Bloom filter (reference: composefs-erofs.md §1.10; format.ts XATTR_FILTER_SEED). All arithmetic
// is unsigned 32-bit: Math.imul for products, `>>> 0` to normalise.

const PRIME32_1 = 0x9e3779b1;
const PRIME32_2 = 0x85ebca77;
const PRIME32_3 = 0xc2b2ae3d;
const PRIME32_4 = 0x27d4eb2f;
const PRIME32_5 = 0x165667b1;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function round(acc: number, input: number): number {
  acc = (acc + Math.imul(input, PRIME32_2)) | 0;
  return Math.imul(rotl(acc, 13), PRIME32_1);
}

/** Byte `i` of the input: a byte array or a byte string (one char per byte, latin1). */
type ByteAt = (i: number) => number;

function xxh32Core(byteAt: ByteAt, len: number, seed: number): number {
  const u32 = (i: number): number =>
    byteAt(i) | (byteAt(i + 1) << 8) | (byteAt(i + 2) << 16) | (byteAt(i + 3) << 24);
  let p = 0;
  let h: number;
  if (len >= 16) {
    let v1 = (seed + PRIME32_1 + PRIME32_2) | 0;
    let v2 = (seed + PRIME32_2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - PRIME32_1) | 0;
    const limit = len - 16;
    do {
      v1 = round(v1, u32(p));
      v2 = round(v2, u32(p + 4));
      v3 = round(v3, u32(p + 8));
      v4 = round(v4, u32(p + 12));
      p += 16;
    } while (p <= limit);
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = (seed + PRIME32_5) | 0;
  }
  h = (h + len) | 0;
  while (p + 4 <= len) {
    h = (h + Math.imul(u32(p), PRIME32_3)) | 0;
    h = Math.imul(rotl(h, 17), PRIME32_4);
    p += 4;
  }
  while (p < len) {
    h = (h + Math.imul(byteAt(p), PRIME32_5)) | 0;
    h = Math.imul(rotl(h, 11), PRIME32_1);
    p++;
  }
  h ^= h >>> 15;
  h = Math.imul(h, PRIME32_2);
  h ^= h >>> 13;
  h = Math.imul(h, PRIME32_3);
  h ^= h >>> 16;
  return h >>> 0;
}

/** XXH32 of `data` with `seed` (an unsigned 32-bit value); returns an unsigned 32-bit number. */
export function xxh32(data: Uint8Array, seed = 0): number {
  return xxh32Core((i) => data[i], data.length, seed >>> 0);
}

/** XXH32 of a byte string (one char per byte) from `start` to its end, without copying it into a Buffer. */
export function xxh32ByteString(s: string, seed = 0, start = 0): number {
  return xxh32Core((i) => s.charCodeAt(start + i) & 0xff, s.length - start, seed >>> 0);
}
