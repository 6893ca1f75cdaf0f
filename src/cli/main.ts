// The `stratum` command line: parses arguments with commander, runs one command over the library API, and maps
// errors to one-line messages and exit statuses (StratumError codes; 2 for usage errors, 70 for internal ones).

import { Command, CommanderError } from "commander";
import { readFileSync } from "node:fs";
import { StratumError } from "../errors.ts";
/** Commands that mirror the C composefs tools exit with status 1 on any error, as those tools do. */
const C_COMPATIBLE = new Set(["mkcomposefs", "composefs-info"]);

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

interface CommandModule {
  register(program: Command): void;
}

/**
 * Every command, loaded on demand: a run loads only the module of the command it names (start-up time is most
 * of a small command's run), `--help` and anything unrecognised load them all.
 */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  init: () => import("./commands/init.ts"),
  "import-tar": () => import("./commands/import-tar.ts"),
  cat: () => import("./commands/cat.ts"),
  "create-image": () => import("./commands/create-image.ts"),
  gc: () => import("./commands/gc.ts"),
  fsck: () => import("./commands/fsck.ts"),
  mkcomposefs: () => import("./commands/mkcomposefs.ts"),
  "composefs-info": () => import("./commands/composefs-info.ts"),
  pull: () => import("./commands/pull.ts"),
  images: () => import("./commands/images.ts"),
  inspect: () => import("./commands/images.ts"),
  tag: () => import("./commands/tags.ts"),
  untag: () => import("./commands/tags.ts"),
  rm: () => import("./commands/tags.ts"),
  mount: () => import("./commands/mount.ts"),
  unmount: () => import("./commands/mount.ts"),
};

/** Global options that take a value (the command name is the first other non-option argument). */
const VALUE_OPTIONS = new Set(["--repo"]);

/** The command an argument vector (without node and script) names, when it is a known one. */
function commandName(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return undefined;
    if (VALUE_OPTIONS.has(a)) i++;
    else if (!a.startsWith("-")) return Object.hasOwn(COMMANDS, a) ? a : undefined;
  }
  return undefined;
}

/** The program with the given commands (default: all). */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command("stratum")
    .description("container image store: OCI images in a composefs repository")
    .version(version(), "-V, --version")
    .option("--repo <path>", "repository path (default: $STRATUM_REPO, /var/lib/stratum as root)")
    .option("--require-verity", "fail when the repository's filesystem has no fs-verity")
    .showHelpAfterError()
    .exitOverride();
  const names = only === undefined ? Object.keys(COMMANDS) : [only];
  const modules = new Set(await Promise.all(names.map((name) => COMMANDS[name]())));
  for (const c of modules) c.register(program);
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
    const program = await buildProgram(commandName(argv.slice(2)));
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
