// Typed errors with stable codes. Every failure the library reports to a user is a StratumError; the CLI maps
// `code` to an exit status and prints `message` as one line. Messages name the input (file, ref, stream) and
// the problem; they never contain secrets.

export type ErrorCode =
  | "E_USAGE" // bad command-line usage or argument
  | "E_NOT_FOUND" // a named ref, stream, object or file does not exist
  | "E_EXISTS" // something that must not exist does
  | "E_REPO_FORMAT" // meta.json missing, unreadable or of an unsupported version/algorithm/feature
  | "E_CORRUPT" // stored data does not match its name or fails to parse
  | "E_BAD_INPUT" // user-supplied input (tar, JSON, …) is malformed
  | "E_UNSAFE_PATH" // a ref or path points outside its root, or a symlink loop
  | "E_VERITY" // fs-verity required but unavailable, or a measured digest mismatch
  | "E_LOCKED" // could not take the repository lock
  | "E_UNSUPPORTED" // a valid input this version cannot handle
  | "E_IO" // an operating-system error while reading or writing
  | "E_DAMAGED"; // fsck found damage (reported per item, summarised by this code)

const EXIT_CODES: Record<ErrorCode, number> = {
  E_USAGE: 2,
  E_NOT_FOUND: 3,
  E_EXISTS: 4,
  E_REPO_FORMAT: 5,
  E_CORRUPT: 6,
  E_BAD_INPUT: 7,
  E_UNSAFE_PATH: 8,
  E_VERITY: 9,
  E_LOCKED: 10,
  E_UNSUPPORTED: 11,
  E_IO: 12,
  E_DAMAGED: 1,
};

export class StratumError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StratumError";
    this.code = code;
  }

  get exitCode(): number {
    return EXIT_CODES[this.code];
  }
}

/** Narrow an unknown thrown value to a Node system error (has `code` like "ENOENT"). */
export function isErrno(err: unknown, code?: string): err is NodeJS.ErrnoException {
  return (
    err instanceof Error &&
    typeof (err as NodeJS.ErrnoException).code === "string" &&
    (code === undefined || (err as NodeJS.ErrnoException).code === code)
  );
}

/** Wrap an OS error as E_IO naming the path and the operation. StratumErrors pass through unchanged. */
export function ioError(err: unknown, what: string): StratumError {
  if (err instanceof StratumError) return err;
  const reason = isErrno(err) ? `${err.code ?? "error"}: ${err.message}` : String(err);
  return new StratumError("E_IO", `${what}: ${reason}`, { cause: err });
}
