// `stratum mkcomposefs`: write a composefs EROFS image from a directory or a dumpfile, option-compatible with
// C mkcomposefs (composefs-erofs.md §3.1). Errors exit with status 1, as the C tool does.

import type { Command } from "commander";
import * as fs from "node:fs";
import { StratumError, ioError } from "../../errors.ts";
import { parseDumpfileFlat } from "../../format/dumpfile.ts";
import { writeErofs } from "../../format/erofs/writer.ts";
import { fsverityDigest } from "../../format/fsverity.ts";
import type { ObjectSink } from "../../tree/from-dir.ts";
import type { FlatTree } from "../../tree/flat.ts";
import type { FileSystem } from "../../tree/tree.ts";
import { writeFileAtomic } from "../atomic-file.ts";
import { out } from "../output.ts";

interface Options {
  fromFile?: boolean;
  minVersion: string;
  maxVersion: string;
  digestStore?: string;
  printDigest?: boolean;
  printDigestOnly?: boolean;
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
}

function version(text: string, what: string): 0 | 1 {
  if (text === "0" || text === "1") return Number(text) as 0 | 1;
  throw new StratumError("E_USAGE", `${what} must be 0 or 1, not "${text}"`);
}

async function readSource(source: string, opts: Options): Promise<FileSystem | FlatTree> {
  if (opts.fromFile) {
    // Read as a byte string: the parser works on one, and no Buffer copy of the file stays alive beside it.
    let text: string;
    try {
      text = fs.readFileSync(source === "-" ? 0 : source, "latin1");
    } catch (err) {
      throw new StratumError("E_NOT_FOUND", ioError(err, `cannot read ${source}`).message);
    }
    try {
      return parseDumpfileFlat(text, { strict: process.env.CFS_PARSE_STRICT === "1" });
    } catch (err) {
      if (err instanceof StratumError)
        throw new StratumError(err.code, `${source === "-" ? "standard input" : source}: ${err.message}`);
      throw err;
    }
  }
  if (opts.userXattrs && opts.skipXattrs)
    throw new StratumError("E_USAGE", "--skip-xattrs and --user-xattrs cannot be used together");
  // Directory mode only: loaded here so that the dumpfile path starts faster.
  const [{ SHA256 }, { ObjectStore }, { readDirectory }] = await Promise.all([
    import("../../format/object-id.ts"),
    import("../../repo/objects.ts"),
    import("../../tree/from-dir.ts"),
  ]);
  let sink: ObjectSink | undefined;
  if (opts.digestStore) {
    const store = new ObjectStore(opts.digestStore, SHA256, "insecure");
    sink = { algorithm: SHA256, storeFile: (fd) => store.storeFd(fd).id };
  }
  return readDirectory(source, {
    sink,
    skipXattrs: opts.skipXattrs,
    userXattrsOnly: opts.userXattrs,
    useEpoch: opts.useEpoch,
    skipDevices: opts.skipDevices,
  }).fs;
}

export function register(program: Command): void {
  program
    .command("mkcomposefs")
    .description("write a composefs EROFS image from a directory or a dumpfile (like C mkcomposefs)")
    .argument("<source>", "directory, or a dumpfile with --from-file (- for standard input)")
    .argument("[image]", "output image file, or - for standard output")
    .option("--from-file", "SOURCE is a dumpfile")
    .option("--min-version <n>", "lowest composefs format version to use (0 or 1)", "0")
    .option("--max-version <n>", "highest composefs format version to use (0 or 1)", "1")
    .option("--digest-store <dir>", "directory mode: store file contents under DIR/xx/<digest rest>")
    .option("--print-digest", "also print the image's fs-verity digest")
    .option("--print-digest-only", "print the image's fs-verity digest and write no image")
    .option("--use-epoch", "directory mode: set every mtime to 0")
    .option("--skip-devices", "directory mode: leave out block and character devices")
    .option("--skip-xattrs", "directory mode: leave out all xattrs")
    .option("--user-xattrs", "directory mode: keep only user.* xattrs")
    .option("--threads <n>", "accepted for compatibility; stratum uses one thread")
    .action(async (source: string, image: string | undefined, opts: Options) => {
      const minVersion = version(opts.minVersion, "--min-version");
      const maxVersion = version(opts.maxVersion, "--max-version");
      if (minVersion > maxVersion) throw new StratumError("E_USAGE", "--min-version is above --max-version");
      if (!image && !opts.printDigestOnly) throw new StratumError("E_USAGE", "missing IMAGE argument");
      const tree = await readSource(source, opts);
      const bytes = writeErofs(tree, { minVersion, maxVersion });
      if (!opts.printDigestOnly && image) writeFileAtomic(image, bytes);
      if (opts.printDigest || opts.printDigestOnly) out(fsverityDigest(bytes).toString("hex"));
    });
}
