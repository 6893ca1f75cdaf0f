// `stratum gc`: delete everything no ref reaches.

import type { Command } from "commander";
import { gc } from "../../repo/gc.ts";
import { withRepo } from "../context.ts";
import { formatBytes, note, out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("gc")
    .description(
      "delete objects, streams and images that no ref under streams/refs or images/refs, and no live mount, reaches",
    )
    .option("-n, --dry-run", "only report what would be removed")
    .option("--json", "print the result as JSON")
    .action(async (opts: { dryRun?: boolean; json?: boolean }, cmd: Command) => {
      await withRepo(cmd, async (repo) => {
        const r = await gc(repo, {
          dryRun: opts.dryRun,
          onWait: () => note("waiting for other processes using the repository to finish…"),
        });
        if (opts.json) {
          out(JSON.stringify(r, null, 2));
          return;
        }
        const verb = r.dryRun ? "would remove" : "removed";
        out(`${verb} ${r.objectsRemoved} objects (${formatBytes(r.bytesRemoved)}); kept ${r.objectsKept}`);
        if (r.streamsPruned.length)
          out(`${verb} ${r.streamsPruned.length} streams: ${r.streamsPruned.join(", ")}`);
        if (r.imagesPruned.length)
          out(`${verb} ${r.imagesPruned.length} images: ${r.imagesPruned.join(", ")}`);
        if (r.refsPruned.length)
          out(`${verb} ${r.refsPruned.length} dangling refs: ${r.refsPruned.join(", ")}`);
        if (r.mountedImages.length)
          out(`kept ${r.mountedImages.length} mounted images: ${r.mountedImages.join(", ")}`);
        if (r.tempFilesRemoved.length) out(`${verb} ${r.tempFilesRemoved.length} temporary files`);
      });
    });
}
