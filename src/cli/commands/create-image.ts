// `stratum create-image DIR [NAME]`: store a directory's files in the repository and its composefs image under
// images/, optionally named images/refs/NAME.

import type { Command } from "commander";
import { commitImage } from "../../repo/images.ts";
import { readDirectory } from "../../tree/from-dir.ts";
import { withRepo } from "../context.ts";
import { formatBytes, out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("create-image")
    .description("store a directory's files as objects and its composefs EROFS image under images/")
    .argument("<dir>", "source directory")
    .argument("[name]", "also name the image images/refs/NAME")
    .option("--json", "print the result as JSON")
    .action(async (dir: string, name: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      await withRepo(cmd, (repo) => {
        repo.checkWritable();
        const sink = { algorithm: repo.algorithm, storeFile: (fd: number) => repo.objects.storeFd(fd).id };
        const { fs: tree, stats } = readDirectory(dir, { sink });
        const image = commitImage(repo, tree);
        if (name) repo.setImageRef(name, image.id);
        if (opts.json)
          out(JSON.stringify({ image: image.id, name: name ?? null, size: image.size, ...stats }, null, 2));
        else {
          out(image.id);
          out(
            `  ${stats.entries} entries, ${stats.externalFiles} files stored as objects ` +
              `(${formatBytes(stats.externalBytes)}), image ${formatBytes(image.size)}${name ? `, images/refs/${name}` : ""}`,
          );
        }
      });
    });
}
