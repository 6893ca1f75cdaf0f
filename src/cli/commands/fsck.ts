// `stratum fsck`: check the repository without changing it.

import type { Command } from "commander";
import { StratumError } from "../../errors.ts";
import { fsck } from "../../repo/fsck.ts";
import { withRepo } from "../context.ts";
import { formatBytes, out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("fsck")
    .description("check every object, stream and ref; exit status 1 when anything is damaged")
    .option("--json", "print the report as JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const report = await withRepo(cmd, (repo) => fsck(repo));
      if (opts.json) out(JSON.stringify(report, null, 2));
      else {
        for (const p of report.problems) out(`damaged: ${p.item}: ${p.problem}`);
        for (const n of report.notes) out(`note: ${n.item}: ${n.problem}`);
        out(
          `${report.objects.checked} objects (${formatBytes(report.objects.bytes)}), ${report.streams.checked} streams, ` +
            `${report.images.checked} images, ${report.refs.checked} refs checked; verity ${report.verity}; ` +
            (report.ok ? "no problems" : `${report.problems.length} problems`),
        );
      }
      if (!report.ok)
        throw new StratumError("E_DAMAGED", `repository is damaged (${report.problems.length} problems)`);
    });
}
