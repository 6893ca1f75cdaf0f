// Names the repository accepts for streams and refs (docs/repository.md "Names"). A stream name is one path
// component (`oci-layer-sha256:…`); a ref name is a relative path of components below `streams/refs/` or
// `images/refs/`. Nothing may climb out of its directory or hide a separator.

import { StratumError } from "../errors.ts";

function checkComponent(c: string, what: string, whole: string): void {
  if (c === "" || c === "." || c === "..")
    throw new StratumError("E_UNSAFE_PATH", `invalid ${what} "${whole}": empty, "." or ".." component`);
  if (c.includes("\0")) throw new StratumError("E_UNSAFE_PATH", `invalid ${what} "${whole}": contains NUL`);
  if (Buffer.byteLength(c) > 255)
    throw new StratumError("E_USAGE", `invalid ${what} "${whole}": a component is longer than 255 bytes`);
  if (c.startsWith(".tmp-") || c.startsWith(".symlink-"))
    throw new StratumError("E_USAGE", `invalid ${what} "${whole}": names starting with .tmp- are reserved`);
}

export function checkStreamName(name: string): string {
  if (name.includes("/")) throw new StratumError("E_USAGE", `invalid stream name "${name}": contains "/"`);
  checkComponent(name, "stream name", name);
  return name;
}

export function checkRefName(name: string): string {
  if (name.startsWith("/")) throw new StratumError("E_UNSAFE_PATH", `invalid ref name "${name}": absolute`);
  for (const c of name.split("/")) checkComponent(c, "ref name", name);
  return name;
}
