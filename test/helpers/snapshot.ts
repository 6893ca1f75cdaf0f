// A snapshot of everything below a directory (kinds, modes, sizes, content hashes, symlink targets), to prove that
// an operation changed nothing, or exactly what it reported.

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

export function snapshotTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = fs.lstatSync(abs);
      if (st.isSymbolicLink()) out.set(r, `link ${fs.readlinkSync(abs)}`);
      else if (st.isDirectory()) {
        out.set(r, `dir ${st.mode.toString(8)}`);
        walk(r);
      } else
        out.set(
          r,
          `file ${st.mode.toString(8)} ${st.size} ${createHash("sha256").update(fs.readFileSync(abs)).digest("hex")}`,
        );
    }
  };
  walk("");
  return out;
}
