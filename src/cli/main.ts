// The `stratum` command line: parses arguments with commander, runs one command over the library API, and maps
// errors to one-line messages and exit statuses (StratumError codes; 2 for usage errors, 70 for internal ones).

import { Command, CommanderError } from "commander";
import { readFileSync } from "node:fs";
import { StratumError } from "../errors.ts";
import * as cat from "./commands/cat.ts";
import * as composefsInfo from "./commands/composefs-info.ts";
import * as createImage from "./commands/create-image.ts";
import * as fsckCmd from "./commands/fsck.ts";
import * as gcCmd from "./commands/gc.ts";
import * as importTar from "./commands/import-tar.ts";
import * as init from "./commands/init.ts";
import * as mkcomposefs from "./commands/mkcomposefs.ts";

/** Commands that mirror the C composefs tools exit with status 1 on any error, as those tools do. */
const C_COMPATIBLE = new Set(["mkcomposefs", "composefs-info"]);

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command("stratum")
    .description("container image store: OCI images in a composefs repository")
    .version(version(), "-V, --version")
    .option("--repo <path>", "repository path (default: $STRATUM_REPO, /var/lib/stratum as root)")
    .option("--require-verity", "fail when the repository's filesystem has no fs-verity")
    .showHelpAfterError()
    .exitOverride();
  for (const c of [init, importTar, cat, createImage, gcCmd, fsckCmd, mkcomposefs, composefsInfo])
    c.register(program);
  for (const c of program.commands) c.exitOverride();
  return program;
}

/** Run the CLI; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
  });
  let command = "";
  try {
    const program = buildProgram();
    program.hook("preAction", (_program, action) => {
      command = action.name();
    });
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof StratumError) {
      process.stderr.write(`stratum: error: ${err.message}\n`);
      return C_COMPATIBLE.has(command) && err.code !== "E_USAGE" ? 1 : err.exitCode;
    }
    process.stderr.write(
      `stratum: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 70;
  }
}
