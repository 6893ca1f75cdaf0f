// Object IDs and the repository hash algorithm (reference: composefs-repository.md §1.2).
// An object ID is the fs-verity digest of the object's bytes, written as lowercase hex; it is stored at
// `objects/<first byte hex>/<remaining hex>`. The algorithm string in meta.json is `fsverity-<hash>-12`.

import { StratumError } from "../errors.ts";

export type HashName = "sha256" | "sha512";

/** A repository's digest algorithm: fs-verity with SHA-256 or SHA-512 over 4 KiB blocks. */
export interface Algorithm {
  /** Node crypto hash name. */
  readonly hash: HashName;
  /** fs-verity / splitstream algorithm number: 1 = SHA-256, 2 = SHA-512. */
  readonly id: 1 | 2;
  /** Digest length in bytes. */
  readonly digestSize: 32 | 64;
  /** log2 of the Merkle tree block size; composefs supports only 12 (4096). */
  readonly lgBlockSize: 12;
  /** meta.json spelling, e.g. "fsverity-sha256-12". */
  readonly name: string;
}

export const SHA256: Algorithm = {
  hash: "sha256",
  id: 1,
  digestSize: 32,
  lgBlockSize: 12,
  name: "fsverity-sha256-12",
};
export const SHA512: Algorithm = {
  hash: "sha512",
  id: 2,
  digestSize: 64,
  lgBlockSize: 12,
  name: "fsverity-sha512-12",
};

/** Lowercase hex fs-verity digest naming an object. */
export type ObjectId = string;

/** Parse `fsverity-sha256-12` / `fsverity-sha512-12` (or the short forms `sha256`, `sha512`). */
export function parseAlgorithm(text: string): Algorithm {
  switch (text) {
    case "fsverity-sha256-12":
    case "sha256":
      return SHA256;
    case "fsverity-sha512-12":
    case "sha512":
      return SHA512;
    default:
      throw new StratumError(
        "E_REPO_FORMAT",
        `unsupported algorithm "${text}" (supported: fsverity-sha256-12, fsverity-sha512-12)`,
      );
  }
}

export function algorithmById(id: number): Algorithm | undefined {
  return id === 1 ? SHA256 : id === 2 ? SHA512 : undefined;
}

const HEX = /^[0-9a-f]+$/;

export function isObjectId(alg: Algorithm, text: string): boolean {
  return text.length === alg.digestSize * 2 && HEX.test(text);
}

/**
 * An object ID of either algorithm: 64 (SHA-256) or 128 (SHA-512) lowercase hex digits. A character loop rather
 * than a regular expression: it runs once per file of a 64k-entry dumpfile.
 */
export function isAnyObjectId(s: string): boolean {
  if (s.length !== 64 && s.length !== 128) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** `ab/cdef…`: the object's path below `objects/`. */
export function objectRelPath(id: ObjectId): string {
  return `${id.slice(0, 2)}/${id.slice(2)}`;
}

/**
 * Parse an object ID from the tail of a path such as `../objects/ab/cdef…` or `ab/cdef…`:
 * the last two components must be 2 hex digits and the rest of the digest.
 */
export function objectIdFromPath(alg: Algorithm, path: string): ObjectId | undefined {
  const parts = path.split("/");
  if (parts.length < 2) return undefined;
  const id = parts[parts.length - 2] + parts[parts.length - 1];
  return parts[parts.length - 2].length === 2 && isObjectId(alg, id) ? id : undefined;
}
