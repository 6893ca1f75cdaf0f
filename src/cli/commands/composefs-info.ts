// `stratum composefs-info`: inspect composefs images, like C composefs-info (composefs-erofs.md §3.2):
// dump (dumpfile), ls (paths), objects (backing objects) and missing-objects (those absent from --basedir).

import type { Command } from "commander";
import * as fs from "node:fs";
import * as path from "node:path";
import { StratumError, ioError } from "../../errors.ts";
import { escapeDumpField, writeDumpfile } from "../../format/dumpfile.ts";
import { imageObjects, readErofs } from "../../format/erofs/reader.ts";
import { Directory, FileSystem, byteString, bytes, isDirectory } from "../../tree/tree.ts";

function readImage(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new StratumError("E_NOT_FOUND", ioError(err, `cannot read ${file}`).message);
  }
}

/** Keep only the named top-level entries (--filter). */
function filtered(tree: FileSystem, names: string[]): FileSystem {
  if (!names.length) return tree;
  const root = new Directory(tree.root.stat);
  for (const n of names) {
    const key = byteString(n);
    const child = tree.root.get(key);
    if (child) root.entries.set(key, child);
  }
  root.imageSize = tree.root.imageSize;
  return new FileSystem(root);
}

function ls(tree: FileSystem): string {
  const lines: string[] = [];
  for (const { path: p, inode } of tree.walk()) {
    if (p === "/") continue;
    let line = escapeDumpField(bytes(p));
    if (isDirectory(inode)) line += "/";
    else if (inode.content.type === "symlink") line += `\t-> ${escapeDumpField(bytes(inode.content.target))}`;
    else if (inode.content.type === "reg" && inode.content.payload !== undefined)
      line += `\t@ ${escapeDumpField(bytes(inode.content.payload))}`;
    lines.push(line);
  }
  return lines.map((l) => l + "\n").join("");
}

export function register(program: Command): void {
  program
    .command("composefs-info")
    .description("inspect composefs images: dump, ls, objects, missing-objects (like C composefs-info)")
    .argument("<command>", "dump | ls | objects | missing-objects")
    .argument("<images...>", "image files")
    .option("--basedir <dir>", "object directory for missing-objects")
    .option(
      "--filter <name>",
      "only this top-level entry (repeatable)",
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .action((command: string, images: string[], opts: { basedir?: string; filter: string[] }) => {
      if (!["dump", "ls", "objects", "missing-objects"].includes(command))
        throw new StratumError("E_USAGE", `unknown composefs-info command "${command}"`);
      if (command === "missing-objects" && !opts.basedir)
        throw new StratumError("E_USAGE", "missing-objects needs --basedir");
      const objects = new Set<string>();
      for (const file of images) {
        const image = readImage(file);
        if (command === "dump")
          process.stdout.write(writeDumpfile(filtered(readErofs(image, file), opts.filter)));
        else if (command === "ls") process.stdout.write(ls(filtered(readErofs(image, file), opts.filter)));
        else for (const o of imageObjects(image, file)) objects.add(o);
      }
      if (command === "objects" || command === "missing-objects") {
        const sorted = [...objects].sort();
        const shown =
          command === "objects"
            ? sorted
            : sorted.filter((o) => !fs.existsSync(path.join(opts.basedir as string, bytes(o).toString())));
        process.stdout.write(shown.map((o) => `${o}\n`).join(""));
      }
    });
}
