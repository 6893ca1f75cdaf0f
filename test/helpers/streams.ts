// Reassembling a repository stream into memory (through StreamReader.cat, which checks every object's digest).

import { PassThrough } from "node:stream";
import type { Repository } from "../../src/repo/repository.ts";

export async function catStream(repo: Repository, name: string, contentType?: bigint): Promise<Buffer> {
  const reader = repo.openStream(name, contentType);
  const sink = new PassThrough();
  const parts: Buffer[] = [];
  sink.on("data", (c: Buffer) => parts.push(c));
  try {
    await reader.cat(sink);
  } finally {
    reader.close();
  }
  return Buffer.concat(parts);
}
