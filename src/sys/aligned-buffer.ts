// Page-aligned Buffers for bulk reads. read(2) into a destination that is not page-aligned is several times
// slower on some CPUs (measured here: 1.7 GB/s into a Node Buffer, whose large allocations start 16 bytes past a
// page boundary, against 6 GB/s into an aligned one; BENCHMARKS.md). WebAssembly memory is always allocated in
// whole, page-aligned 64 KiB pages, so it gives aligned memory without native code. These buffers are meant to
// be reused for many reads; their contents must be consumed (or copied) before the next read into them.

// The global exists in Node, but TypeScript declares it only in the DOM library, which this project does not load.
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => {
    buffer: ArrayBuffer | SharedArrayBuffer;
  };
};

const WASM_PAGE = 1 << 16;

/** A zero-filled Buffer of at least `size` bytes whose first byte is page-aligned. */
export function alignedBuffer(size: number): Buffer {
  const pages = Math.max(1, Math.ceil(size / WASM_PAGE));
  return Buffer.from(
    new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer as ArrayBuffer,
    0,
    size,
  );
}

/** Page-aligned memory that can be shared with worker threads (at least `size` bytes). */
export function alignedSharedMemory(size: number): SharedArrayBuffer {
  const pages = Math.max(1, Math.ceil(size / WASM_PAGE));
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer as SharedArrayBuffer;
}
