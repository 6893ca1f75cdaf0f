// `stratum pull SOURCE [NAME]`: bring an image from a registry, a daemon, an archive or a layout into the
// repository and tag it (docs/pull.md). Progress goes to stderr; the result to stdout (a summary, or --json).

import { Option, type Command } from "commander";
import { StratumError } from "../../errors.ts";
import { parsePlatform } from "../../oci/manifest.ts";
import { pullImage } from "../../oci/pull.ts";
import { parsePullSource } from "../../oci/reference.ts";
import { openSource } from "../../transport/open.ts";
import { withRepo } from "../context.ts";
import { formatBytes, out } from "../output.ts";
import { PullProgress, progressMode } from "../progress.ts";

interface Options {
  platform?: string;
  json?: boolean;
  quiet?: boolean;
  concurrency?: string;
  insecure?: boolean;
  creds?: string;
  certDir?: string;
  tmpdir?: string;
  keepUserXattrs?: boolean;
  skipErofs?: boolean;
  bootable?: boolean;
}

function concurrency(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new StratumError("E_USAGE", `--concurrency must be a whole number from 1 to 64, not "${text}"`);
  return n;
}

export function register(program: Command): void {
  program
    .command("pull")
    .description("pull an image into the repository and tag it (registry, daemon, archive or OCI layout)")
    .argument(
      "<source>",
      "docker://IMAGE, dockerd://IMAGE, podman://IMAGE, docker-archive:FILE[:REF], oci-archive:FILE[:REF], oci:DIR[:REF]",
    )
    .argument(
      "[name]",
      "name to tag the image with (default: its name in the source, else the reference or file name)",
    )
    .option(
      "--platform <os/arch[/variant]>",
      "platform to pull from a multi-platform image (default: this machine)",
    )
    .option("--json", "print a machine-readable report when done")
    .option("-q, --quiet", "no progress output")
    .option("--concurrency <n>", "layers downloaded at once")
    .option("--insecure", "allow plain HTTP and unverified TLS for registries that are not on loopback")
    .option(
      "--creds <user[:password]>",
      "registry credentials (default: auth.json, Docker config, enroot credentials)",
    )
    .option("--cert-dir <dir>", "directory with CA certificates (*.crt) for the registry")
    .option(
      "--keep-user-xattrs",
      "keep user.* xattrs in the image's composefs tree (security.capability is always kept)",
    )
    .option(
      "--bootable",
      "also build the boot variant of the composefs image (/boot and /sysroot emptied, SELinux labels)",
    )
    .option("--tmpdir <dir>", "where daemon sources spool the `save` archive (default: $TMPDIR)")
    // For `npm run bench` (the EROFS step's share of a pull): the image is left unmountable.
    .addOption(new Option("--skip-erofs", "store the layers only; no composefs image").hideHelp())
    .action(async (sourceText: string, name: string | undefined, opts: Options, cmd: Command) => {
      const source = parsePullSource(sourceText);
      const platform = opts.platform !== undefined ? parsePlatform(opts.platform) : undefined;
      const limit = concurrency(opts.concurrency);
      await withRepo(cmd, async (repo) => {
        const progress = new PullProgress(progressMode(opts.quiet || opts.json));
        const image = await openSource(source, {
          insecure: opts.insecure,
          creds: opts.creds,
          certDir: opts.certDir,
          tmpdir: opts.tmpdir,
        });
        try {
          const r = await pullImage(repo, image, {
            platform,
            tag: name ?? image.imageName ?? source.name,
            concurrency: limit,
            onEvent: progress.onEvent,
            keepUserXattrs: opts.keepUserXattrs,
            erofs: !opts.skipErofs,
            bootable: opts.bootable,
          });
          progress.finish();
          if (opts.json) {
            out(JSON.stringify(r, null, 2));
            return;
          }
          const fetched = r.layers.filter((l) => !l.present).length;
          out(`${r.tag ?? r.manifestDigest}: ${r.manifestDigest}`);
          out(
            `  ${r.layers.length} layers (${fetched} downloaded, ${r.layers.length - fetched} already present), ` +
              `${formatBytes(r.downloaded)} fetched, platform ${r.platform}`,
          );
        } finally {
          progress.finish();
          await image.close();
        }
      });
    });
}
