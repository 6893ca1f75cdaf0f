// `stratum mount IMAGE MOUNTPOINT` and `stratum unmount MOUNTPOINT` (reference: composefs-repository.md §7;
// docs/mount.md): thin over src/mount/image-mount.ts. mount holds the repository's shared lock from resolving
// the image until its mount record is complete; unmount needs no repository (the record names it).

import type { Command } from "commander";
import { mountImage, unmountImage } from "../../mount/image-mount.ts";
import { withRepo } from "../context.ts";
import { out } from "../output.ts";

interface MountOpts {
  bootable?: boolean;
  upperdir?: string;
  workdir?: string;
  readWrite?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("mount")
    .description("mount an image's composefs EROFS (read-only unless --upperdir/--workdir or --read-write)")
    .argument("<image>", "image name, manifest digest (sha256:…, or a unique prefix), or EROFS image ID")
    .argument("<mountpoint>", "an existing directory")
    .option("--bootable", "mount the image's boot variant (composefs.image.boot.v1)")
    .option(
      "--upperdir <dir>",
      "writable overlay: the upper directory (with --workdir, on the same filesystem)",
    )
    .option("--workdir <dir>", "writable overlay: the work directory (with --upperdir)")
    .option("--read-write", "writable overlay on a transient tmpfs, discarded at unmount")
    .option("--json", "print {mountpoint, image, erofs, manifestDigest, options}")
    .action(async (image: string, mountpoint: string, opts: MountOpts, cmd: Command) => {
      await withRepo(cmd, (repo) => {
        const m = mountImage(repo, image, mountpoint, {
          bootable: opts.bootable,
          upperdir: opts.upperdir,
          workdir: opts.workdir,
          readWrite: opts.readWrite,
        });
        if (opts.json) {
          const { mountpoint: mp, image: img, erofs, manifestDigest, options } = m;
          out(JSON.stringify({ mountpoint: mp, image: img, erofs, manifestDigest, options }, null, 2));
          return;
        }
        const mode = opts.readWrite ? "writable, transient" : opts.upperdir ? "writable" : "read-only";
        out(`${m.mountpoint}: ${image} (EROFS ${m.erofs}, ${mode})`);
      });
    });

  program
    .command("unmount")
    .description("unmount a stratum mount and drop its mount record")
    .argument("<mountpoint>", "where the image is mounted")
    .option("--json", "print {mountpoint, erofs, repository}")
    .action((mountpoint: string, opts: { json?: boolean }) => {
      const r = unmountImage(mountpoint);
      if (opts.json) out(JSON.stringify(r, null, 2));
      else out(`unmounted ${r.mountpoint}`);
    });
}
