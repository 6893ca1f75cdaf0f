// `stratum init`: create a repository.

import type { Command } from "commander";
import { parseAlgorithm } from "../../format/object-id.ts";
import { Repository } from "../../repo/repository.ts";
import { globalOptions, repoPath } from "../context.ts";
import { note, out } from "../output.ts";

export function register(program: Command): void {
  program
    .command("init")
    .description("create a repository (at --repo, $STRATUM_REPO or the default location)")
    .argument("[path]", "repository directory (overrides --repo)")
    .option(
      "--algorithm <alg>",
      "object digest: fsverity-sha256-12 (sha256) or fsverity-sha512-12 (sha512)",
      "sha256",
    )
    .action((pathArg: string | undefined, opts: { algorithm: string }, cmd: Command) => {
      const root = pathArg ?? repoPath(cmd);
      const algorithm = parseAlgorithm(opts.algorithm);
      const { verity } = Repository.init(root, {
        algorithm,
        requireVerity: globalOptions(cmd).requireVerity,
      });
      out(`initialized repository ${root} (${algorithm.name})`);
      if (verity === "insecure")
        note(
          "this filesystem has no fs-verity: the repository runs in insecure mode (digests are checked in " +
            "userspace, the kernel does not enforce them); use --require-verity to refuse this",
        );
    });
}
