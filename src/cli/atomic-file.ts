// Writing a command's output file atomically: the bytes go to a temporary file beside the destination, which is
// renamed over it only when complete, so a failure never leaves a partial file. `-` means standard output.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError } from "../errors.ts";

export function writeFileAtomic(dest: string, data: Buffer): void {
  if (dest === "-") {
    if (process.stdout.isTTY) throw new StratumError("E_USAGE", "refusing to write an image to a terminal");
    fs.writeSync(1, data);
    return;
  }
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp-${randomBytes(4).toString("hex")}`);
  try {
    const fd = fs.openSync(tmp, "wx", 0o644);
    try {
      let off = 0;
      while (off < data.length) off += fs.writeSync(fd, data, off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw ioError(err, `cannot write ${dest}`);
  }
}
