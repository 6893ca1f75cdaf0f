// Incremental zstd frame encoder and decoder over the zstd-napi native binding (node-ecosystem.md §1).
// Splitstream sections are single zstd frames at the library's default level, no checksum, no dictionary
// (composefs-repository.md §2.1). The decoder accepts any sequence of frames, including skippable frames, so it
// also serves multi-frame (zstd:chunked) layers. Both are synchronous push APIs: output comes back as Buffers.

import { createRequire } from "node:module";
import type * as ZstdBinding from "zstd-napi/binding.js";

const binding = createRequire(import.meta.url)("zstd-napi/binding") as typeof ZstdBinding;

const OUT_SIZE = 1 << 17;

/** Encodes one zstd frame incrementally. */
export class ZstdEncoder {
  private readonly cctx = new binding.CCtx();
  private out = Buffer.allocUnsafe(OUT_SIZE);

  constructor(level = 3) {
    this.cctx.setParameter(binding.CParameter.compressionLevel, level);
  }

  /** Compress `data`; returns whatever compressed bytes are ready (possibly none). */
  push(data: Uint8Array): Buffer[] {
    return this.run(data, binding.EndDirective.continue);
  }

  /** End the frame; returns the remaining compressed bytes. */
  end(): Buffer[] {
    return this.run(Buffer.alloc(0), binding.EndDirective.end);
  }

  private run(input: Uint8Array, op: ZstdBinding.EndDirective): Buffer[] {
    const chunks: Buffer[] = [];
    let src = input;
    for (;;) {
      const [remaining, produced, consumed] = this.cctx.compressStream2(this.out, src, op);
      if (produced > 0) {
        chunks.push(this.out.subarray(0, produced));
        this.out = Buffer.allocUnsafe(OUT_SIZE);
      }
      src = src.subarray(consumed);
      const done = op === binding.EndDirective.end ? remaining === 0 : src.length === 0;
      if (done) return chunks;
    }
  }
}

/** Compress a whole buffer into one frame. */
export function zstdCompress(data: Uint8Array, level = 3): Buffer {
  const enc = new ZstdEncoder(level);
  return Buffer.concat([...enc.push(data), ...enc.end()]);
}

/** Decodes a sequence of zstd frames incrementally. */
export class ZstdDecoder {
  private readonly dctx = new binding.DCtx();
  private out = Buffer.allocUnsafe(OUT_SIZE);
  /** True between frames (nothing buffered inside the decoder). */
  private atFrameBoundary = true;

  /** Decompress `data`; returns the decompressed bytes that are ready. */
  push(data: Uint8Array): Buffer[] {
    const chunks: Buffer[] = [];
    let src = data;
    for (;;) {
      const [hint, produced, consumed] = this.dctx.decompressStream(this.out, src);
      src = src.subarray(consumed);
      this.atFrameBoundary = hint === 0;
      if (produced > 0) {
        chunks.push(this.out.subarray(0, produced));
        this.out = Buffer.allocUnsafe(OUT_SIZE);
      }
      // Done when all input is consumed and the output buffer was not filled (nothing more is pending).
      if (src.length === 0 && produced < OUT_SIZE) return chunks;
    }
  }

  /** Throws if the input ended inside a frame. */
  end(): void {
    if (!this.atFrameBoundary) throw new Error("zstd data is truncated (input ended inside a frame)");
  }
}

/** Decompress a whole buffer (one or more frames). */
export function zstdDecompress(data: Uint8Array): Buffer {
  const dec = new ZstdDecoder();
  const out = Buffer.concat(dec.push(data));
  dec.end();
  return out;
}
