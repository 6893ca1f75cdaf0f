// Benchmark driver: the fs-verity digest of one file, computed by the product code path
// (src/repo/file-digest.ts: page-aligned reads, two threads for large files). Prints the digest as
// `fsverity digest --compact FILE` does (lowercase hex, nothing else), so scripts/bench.sh can compare the two
// outputs. Run the compiled form (`node dist/bench/fsverity-digest.js FILE`) so that no TypeScript loader
// start-up is measured.

import { SHA256 } from "../src/format/object-id.ts";
import { digestFile } from "../src/repo/file-digest.ts";

const file = process.argv[2];
if (file === undefined || process.argv.length !== 3) {
  process.stderr.write("usage: node dist/bench/fsverity-digest.js FILE\n");
  process.exitCode = 2;
} else {
  process.stdout.write(`${digestFile(file, SHA256).digest}\n`);
}
