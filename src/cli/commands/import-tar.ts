// `stratum import-tar FILE NAME`: store a tar (plain, gzip or zstd) as a layer splitstream under a ref.

import type { Command } from "commander";
import * as fs from "node:fs";
import { StratumError, ioError } from "../../errors.ts";
import { ingestLayer } from "../../oci/layer-ingest.ts";
import { checkRefName } from "../../repo/refnames.ts";
import { withRepo } from "../context.ts";
import { out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("import-tar")
    .description(
      "store a tar file (plain, gzip or zstd) as a layer splitstream and point streams/refs/NAME at it",
    )
    .argument("<file>", "tar file, or - for standard input")
    .argument("<name>", "ref name below streams/refs/")
    .option("--json", "print the result as JSON")
    .action(async (file: string, name: string, opts: { json?: boolean }, cmd: Command) => {
      checkRefName(name); // before reading anything, so a bad name stores nothing
      let input: AsyncIterable<Buffer>;
      if (file === "-") input = process.stdin;
      else {
        try {
          if (!fs.statSync(file).isFile())
            throw new StratumError("E_BAD_INPUT", `${file} is not a regular file`);
        } catch (err) {
          if (err instanceof StratumError) throw err;
          throw new StratumError("E_NOT_FOUND", ioError(err, `cannot read ${file}`).message);
        }
        input = fs.createReadStream(file, { highWaterMark: 1 << 20 });
      }
      await withRepo(cmd, async (repo) => {
        const r = await ingestLayer(repo, input, { label: file === "-" ? "standard input" : file });
        repo.setStreamRef(name, r.streamName);
        if (opts.json) out(JSON.stringify({ ref: name, ...r }, null, 2));
        else {
          out(`${r.diffId} ${r.streamName} -> refs/${name}`);
          out(
            `  ${r.compression === "none" ? "tar" : r.compression}, ${r.tarSize} bytes, ${r.entries} entries, ` +
              `${r.externalObjects} external objects (${r.newObjects} new)${r.stored ? "" : ", layer was already stored"}`,
          );
        }
      });
    });
}
