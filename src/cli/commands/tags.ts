// `stratum tag IMAGE NAME`, `stratum untag NAME…`, `stratum rm NAME…`: image names are refs under
// streams/refs/oci/; removing one leaves the data for the next gc to collect when nothing else reaches it.

import type { Command } from "commander";
import { resolveImage, tagImage, untagImage } from "../../oci/image-refs.ts";
import { withRepo } from "../context.ts";
import { out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("tag")
    .description("give an image another name")
    .argument("<image>", "image name or manifest digest")
    .argument("<name>", "the new name")
    .action(async (ref: string, name: string, _opts: unknown, cmd: Command) => {
      await withRepo(cmd, (repo) => {
        const t = resolveImage(repo, ref);
        tagImage(repo, name, t.manifestDigest);
        out(`${name}: ${t.manifestDigest}`);
      });
    });

  for (const [command, description] of [
    ["untag", "remove image names (the data stays until gc finds it unreferenced)"],
    ["rm", "remove images by name; their data goes at the next gc unless another name reaches it"],
  ] as const) {
    program
      .command(command)
      .description(description)
      .argument("<names...>", "image names")
      .action(async (names: string[], _opts: unknown, cmd: Command) => {
        await withRepo(cmd, (repo) => {
          for (const name of names) {
            untagImage(repo, name);
            out(`untagged ${name}`);
          }
        });
      });
  }
}
