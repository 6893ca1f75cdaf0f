// One OCI layer as a list of entries: the input of the image tree merge (src/oci/merge.ts). Implements the
// per-entry half of composefs-repository.md §5.1 (`process_entry`: what a tar entry becomes) and the split rule of
// §2.3 read backwards: a regular file's payload over 64 bytes is an external object (its fs-verity digest is the
// object ID), a smaller one is inline bytes. See docs/image-tree.md.
//
// Two ways in:
// - `LayerEntryBuilder`: sans-IO, fed TarSplitter events in order plus, at each `external-end`, the object ID the
//   payload was stored as; so a pull can build the entries in the same pass that splits the layer.
// - `readLayerEntries(repo, diffId)`: reads a stored layer splitstream. Inline chunks go through a TarSplitter;
//   an external chunk stands for the payload the splitter is waiting for, which is fed as zeros of the size the
//   tar header gives: object contents are never read (a stream whose chunks disagree with the split rule is
//   E_CORRUPT).
//
// Paths are normalised (`./` prefix, empty and `.` components and a trailing `/` dropped; the root is "");
// an absolute path or a `..` component (in an entry path or a hard link target) is E_UNSAFE_PATH. Memory: one
// entry per tar member (metadata plus at most 64 inline bytes), never payloads.

import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { ContentType } from "../format/splitstream.ts";
import {
  INLINE_CONTENT_MAX,
  TarFormatError,
  TarSplitter,
  type TarEntry,
  type TarEvent,
} from "../format/tar.ts";
import type { Repository } from "../repo/repository.ts";
import { byteString, type ByteString } from "../tree/tree.ts";
import { layerStreamName } from "./image-refs.ts";

export type LayerEntryType = "dir" | "reg" | "symlink" | "hardlink" | "chr" | "blk" | "fifo";

export interface LayerEntry {
  /** Normalised path, no leading or trailing `/`; "" is the root directory. Byte string. */
  path: ByteString;
  type: LayerEntryType;
  /** Permission and special bits (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** All xattrs of the tar entry, unfiltered (keys are byte strings). */
  xattrs: Map<ByteString, Buffer>;
  /** Symlink target (raw bytes) or hard link target (a normalised path). */
  linkTarget?: ByteString;
  /** Character and block devices. */
  devMajor?: number;
  devMinor?: number;
  /** Regular files: content size. */
  size?: number;
  /** Regular files over 64 bytes: the object holding the content (its fs-verity digest). */
  objectId?: ObjectId;
  /** Regular files of 1..64 bytes: the content. Empty files have neither inline nor objectId. */
  inline?: Buffer;
}

/**
 * Normalise a tar path: drop empty and `.` components (so `./a/b/` → `a/b`, `./` → ""). An absolute path or a
 * `..` component is refused with E_UNSAFE_PATH.
 */
export function normaliseLayerPath(raw: Buffer | ByteString, label = "layer"): ByteString {
  const s = typeof raw === "string" ? raw : raw.toString("latin1");
  const show = (): string => JSON.stringify(Buffer.from(s, "latin1").toString("utf8"));
  if (s.startsWith("/")) throw new StratumError("E_UNSAFE_PATH", `${label}: path ${show()} is absolute`);
  const parts: string[] = [];
  for (const c of s.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") throw new StratumError("E_UNSAFE_PATH", `${label}: path ${show()} has a ".." component`);
    parts.push(c);
  }
  return parts.join("/");
}

const TYPES: Record<string, LayerEntryType> = {
  "0": "reg",
  "\0": "reg",
  "7": "reg",
  "1": "hardlink",
  "2": "symlink",
  "3": "chr",
  "4": "blk",
  "5": "dir",
  "6": "fifo",
};

/**
 * Builds the entries of one layer from TarSplitter events (sans-IO). Call `push(event)` for every event in order,
 * passing the object ID with each `external-end`; then `finish()`.
 */
export class LayerEntryBuilder {
  readonly entries: LayerEntry[] = [];
  /** The regular file whose inline payload is being collected, and how much of it is still to come. */
  private collecting: { entry: LayerEntry; buf: Buffer; filled: number } | null = null;
  /** The regular file whose external payload is streaming by. */
  private external: LayerEntry | null = null;

  constructor(private readonly label = "layer") {}

  push(ev: TarEvent, objectId?: ObjectId): void {
    switch (ev.kind) {
      case "entry":
        this.onEntry(ev.entry);
        break;
      case "inline": {
        const c = this.collecting;
        if (c === null) break;
        const n = Math.min(ev.data.length, c.buf.length - c.filled);
        ev.data.copy(c.buf, c.filled, 0, n);
        c.filled += n;
        if (c.filled === c.buf.length) {
          c.entry.inline = c.buf;
          this.collecting = null;
        }
        break;
      }
      case "external": {
        const last = this.entries[this.entries.length - 1];
        if (last?.type !== "reg" || last.size !== ev.size || this.external !== null)
          throw new StratumError("E_CORRUPT", `${this.label}: external payload without its regular file`);
        this.external = last;
        break;
      }
      case "data":
        break;
      case "external-end": {
        if (this.external === null)
          throw new StratumError("E_CORRUPT", `${this.label}: external payload end without a start`);
        if (objectId === undefined)
          throw new StratumError("E_CORRUPT", `${this.label}: no object ID for an external payload`);
        this.external.objectId = objectId;
        this.external = null;
        break;
      }
    }
  }

  /** The entries; throws if a payload is incomplete. */
  finish(): LayerEntry[] {
    if (this.collecting !== null || this.external !== null)
      throw new StratumError("E_CORRUPT", `${this.label}: the layer ends inside a file's payload`);
    return this.entries;
  }

  private onEntry(e: TarEntry): void {
    if (this.collecting !== null || this.external !== null)
      throw new StratumError("E_CORRUPT", `${this.label}: entry header inside a file's payload`);
    const path = normaliseLayerPath(e.path, this.label);
    let type = TYPES[e.type];
    // Old (v7) archives mark directories as regular files whose name ends with "/".
    if (type === "reg" && e.type !== "7" && e.path.length > 0 && e.path[e.path.length - 1] === 0x2f)
      type = "dir";
    const name = (): string => JSON.stringify(e.path.toString("utf8"));
    if (type === undefined)
      throw new StratumError(
        "E_UNSUPPORTED",
        `${this.label}: entry ${name()} has tar type ${JSON.stringify(e.type)}, which an image cannot contain`,
      );
    if (e.sparse)
      throw new StratumError(
        "E_UNSUPPORTED",
        `${this.label}: entry ${name()} is a sparse file (not supported)`,
      );
    let xattrs = NO_XATTRS;
    if (e.xattrs.size > 0) {
      xattrs = new Map<ByteString, Buffer>();
      for (const [k, v] of e.xattrs) xattrs.set(byteString(k), v);
    }
    const entry: LayerEntry = {
      path,
      type,
      mode: e.mode & 0o7777,
      uid: e.uid,
      gid: e.gid,
      mtimeSec: e.mtimeSec,
      mtimeNsec: e.mtimeNsec,
      xattrs,
    };
    switch (type) {
      case "symlink":
        entry.linkTarget = e.linkPath.toString("latin1");
        break;
      case "hardlink":
        entry.linkTarget = normaliseLayerPath(e.linkPath, this.label);
        break;
      case "chr":
      case "blk":
        entry.devMajor = e.devMajor;
        entry.devMinor = e.devMinor;
        break;
      case "reg":
        entry.size = e.size;
        // allocUnsafe: small payloads share Node's pool (one ArrayBuffer per 8 KiB, not one per file); every
        // byte is overwritten before the entry is complete.
        if (e.size > 0 && e.size <= INLINE_CONTENT_MAX)
          this.collecting = { entry, buf: Buffer.allocUnsafe(e.size), filled: 0 };
        break;
      default:
        break;
    }
    this.entries.push(entry);
  }
}

const ZEROS = Buffer.alloc(1 << 20);

/** The xattrs of every entry that has none: one shared map, which nothing mutates (merge copies). */
const NO_XATTRS: Map<ByteString, Buffer> = new Map();

/**
 * The entries of the layer stored as `oci-layer-<diffId>` in `repo`, without reading any object. E_NOT_FOUND
 * when the stream is missing; E_CORRUPT when its tar does not parse or its chunks disagree with the split rule.
 */
export function readLayerEntries(repo: Repository, diffId: string): LayerEntry[] {
  const name = layerStreamName(diffId);
  if (!repo.hasStream(name)) throw new StratumError("E_NOT_FOUND", `no layer stream ${name}`);
  const reader = repo.openStream(name, ContentType.ociLayer);
  const label = `layer ${diffId}`;
  const builder = new LayerEntryBuilder(label);
  const splitter = new TarSplitter();
  /** Size of the external payload the splitter waits for, or -1. */
  let pending = -1;
  const feed = (events: TarEvent[], fromObject: boolean, objectId?: ObjectId): void => {
    for (const ev of events) {
      if (ev.kind === "external") pending = ev.size;
      else if (ev.kind === "data" && !fromObject)
        throw new StratumError("E_CORRUPT", `${label}: a file payload over 64 bytes is stored inline`);
      builder.push(ev, ev.kind === "external-end" ? objectId : undefined);
    }
  };
  try {
    for (const c of reader.chunks()) {
      if ("inline" in c) {
        if (pending >= 0 && c.inline.length > 0)
          throw new StratumError("E_CORRUPT", `${label}: a file payload over 64 bytes is stored inline`);
        feed(splitter.push(c.inline), false);
        continue;
      }
      if (pending < 0)
        throw new StratumError(
          "E_CORRUPT",
          `${label}: object ${c.external} where the tar has no file payload`,
        );
      let left = pending;
      pending = -1;
      while (left > 0) {
        const n = Math.min(left, ZEROS.length);
        left -= n;
        const events = splitter.push(ZEROS.subarray(0, n));
        // The object ID goes with the external-end event of this payload only.
        feed(events, true, left === 0 ? c.external : undefined);
        if (left > 0 && events.some((e) => e.kind !== "data"))
          throw new StratumError("E_CORRUPT", `${label}: object ${c.external} splits a file payload`);
      }
    }
    feed(splitter.end(), false);
  } catch (err) {
    if (err instanceof TarFormatError)
      throw new StratumError("E_CORRUPT", `${label}: stored tar does not parse: ${err.message}`);
    throw err;
  } finally {
    reader.close();
  }
  if (pending >= 0) throw new StratumError("E_CORRUPT", `${label}: a file payload has no object`);
  return builder.finish();
}
