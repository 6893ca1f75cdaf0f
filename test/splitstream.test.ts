// Splitstream byte format: layout of header and sections, chunk encoding, named refs, legacy header on read,
// and rejection of malformed files.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { SHA256, SHA512, type Algorithm } from "../src/format/object-id.ts";
import {
  ChunkDecoder,
  ContentType,
  SplitStreamWriter,
  parseDigests,
  parseHeader,
  parseNamedRefs,
  type Chunk,
} from "../src/format/splitstream.ts";
import { zstdDecompress } from "../src/format/zstd.ts";
import { StratumError } from "../src/errors.ts";

const idA = "aa".repeat(32);
const idB = "bb".repeat(32);
const idC = "cc".repeat(32);

function build(
  alg: Algorithm,
  fn: (w: SplitStreamWriter) => void,
  contentType = ContentType.ociLayer,
): { file: Buffer; streamSize: number } {
  const parts: Buffer[] = [];
  const w = new SplitStreamWriter(alg, contentType, (c) => parts.push(Buffer.from(c)));
  fn(w);
  const res = w.finish();
  return { file: Buffer.concat([res.prefix, ...parts]), streamSize: res.streamSize };
}

function decodeAll(file: Buffer): { chunks: Chunk[]; ids: string[]; named: Map<string, string> } {
  const h = parseHeader(file, file.length, "test");
  const ids = parseDigests(file.subarray(h.objectRefs.start, h.objectRefs.end), h.algorithm);
  const streamRefs = parseDigests(file.subarray(h.streamRefs.start, h.streamRefs.end), h.algorithm);
  const namedRaw =
    h.namedRefs.end > h.namedRefs.start
      ? zstdDecompress(file.subarray(h.namedRefs.start, h.namedRefs.end))
      : Buffer.alloc(0);
  const dec = new ChunkDecoder("test");
  const chunks: Chunk[] = [];
  // Feed in small pieces to exercise the incremental decoder.
  const raw = zstdDecompress(file.subarray(h.stream.start, h.stream.end));
  for (let o = 0; o < raw.length; o += 5) chunks.push(...dec.push(raw.subarray(o, o + 5)));
  dec.end();
  return { chunks, ids, named: parseNamedRefs(namedRaw, streamRefs, "test") };
}

/** Merge adjacent inline pieces so assertions see logical chunks. */
function merge(chunks: Chunk[]): (string | number)[] {
  const out: (string | number)[] = [];
  for (const c of chunks) {
    if (c.kind === "external") out.push(c.index);
    else if (typeof out[out.length - 1] === "string") out[out.length - 1] += c.data.toString("latin1");
    else out.push(c.data.toString("latin1"));
  }
  return out;
}

describe("splitstream format", () => {
  test("header, info and section layout", () => {
    const { file } = build(SHA256, (w) => {
      w.writeInline(Buffer.from("head"));
      w.writeExternal(idA, 100);
      w.writeInline(Buffer.from("mid"));
      w.writeExternal(idB, 50);
      w.writeExternal(idA, 100);
      w.addNamedRef("config:sha256:x", idC);
      w.addNamedRef("a-layer", idA);
    });
    assert.equal(file.toString("latin1", 0, 11), "SplitStream");
    assert.equal(file[11], 0); // version
    assert.equal(file.readUInt16LE(12), 0); // flags
    assert.equal(file[14], 1); // sha256
    assert.equal(file[15], 12); // lg_blocksize
    assert.equal(file.readBigUInt64LE(16), 32n);
    assert.equal(file.readBigUInt64LE(24), 112n);
    assert.equal(file.toString("latin1", 96, 104), "ocilayer"); // content type as 8 ASCII bytes
    assert.equal(file.readBigUInt64LE(104), BigInt(4 + 100 + 3 + 50 + 100)); // stream_size
    const h = parseHeader(file, file.length, "t");
    // Section order in the file: stream_refs, object_refs, named_refs, stream.
    assert.equal(h.streamRefs.start, 112);
    assert.equal(h.objectRefs.start, h.streamRefs.end);
    assert.equal(h.namedRefs.start, h.objectRefs.end);
    assert.equal(h.stream.start, h.namedRefs.end);
    assert.equal(h.stream.end, file.length);
    const { chunks, ids, named } = decodeAll(file);
    assert.deepEqual(ids, [idA, idB]); // deduplicated, first-insertion order
    assert.deepEqual(merge(chunks), ["head", 0, "mid", 1, 0]);
    assert.deepEqual(
      [...named.entries()],
      [
        ["a-layer", idA],
        ["config:sha256:x", idC],
      ],
    );
    // Named refs section holds sorted "idx:name\0" records; stream_refs in that order.
    const namedRaw = zstdDecompress(file.subarray(h.namedRefs.start, h.namedRefs.end)).toString();
    assert.equal(namedRaw, "0:a-layer\x001:config:sha256:x\x00");
  });

  test("adjacent inline writes are coalesced into one chunk; long runs are cut but reassemble", () => {
    const big = randomBytes(3 << 20);
    const { file, streamSize } = build(SHA512, (w) => {
      w.writeInline(Buffer.from("a"));
      w.writeInline(Buffer.from("b"));
      w.writeExternal("dd".repeat(64), 7);
      w.writeInline(big);
    });
    assert.equal(file[14], 2);
    assert.equal(streamSize, 2 + 7 + big.length);
    const h = parseHeader(file, file.length, "t");
    const raw = zstdDecompress(file.subarray(h.stream.start, h.stream.end));
    assert.equal(raw.readBigInt64LE(0), -2n); // "ab" as one chunk
    assert.equal(raw.toString("latin1", 8, 10), "ab");
    assert.equal(raw.readBigInt64LE(10), 0n);
    const { chunks } = decodeAll(file);
    const inline = Buffer.concat(chunks.flatMap((c) => (c.kind === "inline" ? [c.data] : [])));
    assert.ok(inline.subarray(2).equals(big));
    assert.ok(chunks.every((c) => c.kind !== "inline" || c.data.length > 0));
  });

  test("legacy header layout is read", () => {
    const { file } = build(SHA256, (w) => {
      w.writeInline(Buffer.from("legacy"));
      w.addNamedRef("n", idB);
    });
    const legacy = Buffer.from(file);
    legacy.fill(0, 0, 32);
    file.copy(legacy, 0, 16, 32); // info range at 0..16
    legacy.writeUInt16LE(0, 16); // flags
    file.copy(legacy, 18, 0, 11); // magic at 18
    legacy[29] = 0;
    legacy[30] = 1;
    legacy[31] = 12;
    const h = parseHeader(legacy, legacy.length, "t");
    assert.equal(h.legacy, true);
    assert.equal(h.algorithm, SHA256);
    const { chunks, named } = decodeAll(legacy);
    assert.deepEqual(merge(chunks), ["legacy"]);
    assert.equal(named.get("n"), idB);
  });

  test("malformed files are rejected naming the file and the problem", () => {
    const { file } = build(SHA256, (w) => w.writeExternal(idA, 1));
    const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
      ["wrong magic", (b) => (b.write("Xplit", 0), b), /wrong magic/],
      ["unknown version", (b) => ((b[11] = 1), b), /unknown header version 1/],
      ["unknown algorithm", (b) => ((b[14] = 9), b), /unknown algorithm 9/],
      ["block size", (b) => ((b[15] = 16), b), /block size/],
      ["truncated", (b) => b.subarray(0, 100), /shorter|outside/],
      ["range past end", (b) => (b.writeBigUInt64LE(99999n, 72), b), /outside the/],
      ["refs not a multiple of the digest size", (b) => (b.writeBigUInt64LE(113n, 40), b), /not a multiple/],
    ];
    for (const [name, damage, re] of cases) {
      const b = damage(Buffer.from(file));
      assert.throws(
        () => parseHeader(b, b.length, "streams/x"),
        (e: unknown) =>
          e instanceof StratumError &&
          e.code === "E_CORRUPT" &&
          /^streams\/x: /.test(e.message) &&
          re.test(e.message),
        name,
      );
    }
  });

  test("chunk decoder rejects a truncated chunk stream; named refs must index stream_refs", () => {
    const dec = new ChunkDecoder("s");
    const head = Buffer.alloc(8);
    head.writeBigInt64LE(-10n);
    dec.push(Buffer.concat([head, Buffer.from("12345")]));
    assert.throws(() => dec.end(), /truncated/);
    assert.throws(() => parseNamedRefs(Buffer.from("3:x\0"), [idA], "s"), /no valid stream_refs index/);
    assert.throws(() => parseNamedRefs(Buffer.from("0:x"), [idA], "s"), /NUL-terminated/);
  });
});
