// `stratum images` and `stratum inspect IMAGE`: what the repository holds, read from the manifest and config
// streams (src/oci/image-store.ts).

import type { Command } from "commander";
import type { Repository } from "../../repo/repository.ts";
import { readImage, type StoredImage } from "../../oci/image-store.ts";
import { BOOT_EROFS_REF, EROFS_REF, listTags, resolveImage } from "../../oci/image-refs.ts";
import { withRepo } from "../context.ts";
import { formatBytes, out } from "../output.ts";

function platformOf(img: StoredImage): string {
  return [img.config.os, img.config.architecture, img.config.variant].filter(Boolean).join("/");
}

/** The image's composefs EROFS (the config's named ref), when it links one that is stored: what mount uses. */
function erofsOf(repo: Repository, img: StoredImage, ref: string = EROFS_REF): string | null {
  const id = img.configRefs.get(ref);
  return id !== undefined && repo.objects.has(id) ? id : null;
}

function layerBytes(img: StoredImage): number {
  return img.manifest.layers.reduce((sum, l) => sum + l.size, 0);
}

export function register(program: Command): void {
  program
    .command("images")
    .description("list the tagged images")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withRepo(cmd, (repo) => {
        const rows = listTags(repo).map((t) => {
          const img = readImage(repo, t.manifestDigest);
          return {
            name: t.name,
            manifestDigest: t.manifestDigest,
            configDigest: img.configDigest,
            platform: platformOf(img),
            created: img.config.created ?? null,
            layers: img.manifest.layers.length,
            size: layerBytes(img),
            erofs: erofsOf(repo, img),
          };
        });
        if (opts.json) {
          out(JSON.stringify(rows, null, 2));
          return;
        }
        const table = [["NAME", "MANIFEST", "PLATFORM", "LAYERS", "SIZE", "MOUNTABLE", "CREATED"]];
        for (const r of rows)
          table.push([
            r.name,
            r.manifestDigest.slice(7, 19),
            r.platform,
            String(r.layers),
            formatBytes(r.size),
            r.erofs !== null ? "yes" : "no (pull again)",
            r.created ?? "",
          ]);
        const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
        for (const row of table)
          out(
            row
              .map((cell, c) => cell.padEnd(widths[c]))
              .join("  ")
              .trimEnd(),
          );
      });
    });

  program
    .command("inspect")
    .description("show an image's manifest, config and layers (by name or manifest digest)")
    .argument("<image>", "image name, or manifest digest (sha256:…, or a unique prefix)")
    .option("--json", "print JSON: the manifest and config documents and the layer table")
    .action(async (ref: string, opts: { json?: boolean }, cmd: Command) => {
      await withRepo(cmd, (repo) => {
        const t = resolveImage(repo, ref);
        const img = readImage(repo, t.manifestDigest);
        const layers = img.manifest.layers.map((l, i) => ({
          digest: l.digest,
          diffId: img.config.diffIds[i],
          mediaType: l.mediaType,
          size: l.size,
        }));
        if (opts.json) {
          out(
            JSON.stringify(
              {
                names: listTags(repo)
                  .filter((x) => x.manifestDigest === t.manifestDigest)
                  .map((x) => x.name),
                manifestDigest: img.manifestDigest,
                configDigest: img.configDigest,
                platform: platformOf(img),
                erofs: erofsOf(repo, img),
                bootErofs: erofsOf(repo, img, BOOT_EROFS_REF),
                layers,
                manifest: JSON.parse(img.manifestBytes.toString("utf8")) as unknown,
                config: JSON.parse(img.configBytes.toString("utf8")) as unknown,
              },
              null,
              2,
            ),
          );
          return;
        }
        out(`Manifest:  ${img.manifestDigest} (${img.manifest.mediaType})`);
        out(`Config:    ${img.configDigest}`);
        out(`Platform:  ${platformOf(img)}`);
        const erofs = erofsOf(repo, img);
        out(`EROFS:     ${erofs ?? "none (pull the image again to build it)"}`);
        const boot = erofsOf(repo, img, BOOT_EROFS_REF);
        if (boot !== null) out(`Boot EROFS: ${boot}`);
        if (img.config.created) out(`Created:   ${img.config.created}`);
        const c = img.config.config;
        if (c.entrypoint) out(`Entrypoint: ${JSON.stringify(c.entrypoint)}`);
        if (c.cmd) out(`Cmd:       ${JSON.stringify(c.cmd)}`);
        out(`Layers:    ${layers.length}, ${formatBytes(layerBytes(img))}`);
        for (const l of layers)
          out(`  ${l.digest}  ${formatBytes(l.size).padStart(10)}  diff_id ${l.diffId}`);
      });
    });
}
