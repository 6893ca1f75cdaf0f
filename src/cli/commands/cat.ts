// `stratum cat NAME`: write a reassembled stream to standard output.

import type { Command } from "commander";
import { withRepo } from "../context.ts";

export function register(program: Command): void {
  program
    .command("cat")
    .description("write a stream, reassembled, to standard output (every object's digest is checked)")
    .argument("<name>", "stream name (e.g. oci-layer-sha256:…), refs/<ref>, or a ref name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await withRepo(cmd, async (repo) => {
        const stream =
          name.startsWith("refs/") || name.includes("/") || !repo.hasStream(name)
            ? `refs/${name.replace(/^refs\//, "")}`
            : name;
        const reader = repo.openStream(stream);
        try {
          await reader.cat(process.stdout);
        } finally {
          reader.close();
        }
      });
    });
}
