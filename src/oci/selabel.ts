// SELinux labelling of an image tree for the boot variant: the image's own policy (`/etc/selinux/config`
// names it, `/etc/selinux/<type>/contexts/files/file_contexts*` hold its rules) decides `security.selinux` on
// every inode. Implements the SELinux step of composefs-repository.md §8 as composefs-rs
// `composefs-boot/src/selabel.rs` does it. See docs/image-tree.md, "Boot variant".
//
// - No policy (no `/etc/selinux`, no `config` in it, or no `SELINUXTYPE=` line): every `security.selinux`
//   is removed. Otherwise `file_contexts` must exist; `file_contexts.local` and `file_contexts.homedirs` are
//   read after it when present, then the aliases of `file_contexts.subs` and `file_contexts.subs_dist`.
// - A spec line is `REGEX [-TYPE] CONTEXT`; `#` first-word lines and blank lines are skipped; the LAST
//   matching line of the concatenated files wins. A rule matches when `^(REGEX)T$` matches the path followed
//   by one file-type character T (`-` regular, `d` directory, `l` symlink, `b`/`c` devices, `p` fifo, `s`
//   socket; any one character when the rule has no type). `<<none>>` as the winning context means "no label".
// - Label values are the context's bytes, without a NUL terminator (as composefs-rs writes them).
// - Aliases map a whole path to another; the aliased path is used for the lookup and as the base of the
//   directory's descendants.
// - A hard-linked leaf takes the label of its first path (depth-first, bytewise order); a later path that
//   would get a different label gets its own copy of the leaf (the link is broken), as composefs-rs does.
//
// Patterns are composefs-rs's regex syntax (the Rust regex crate, bytes mode, ASCII classes; PCRE2 only for
// lookarounds); they are translated to JavaScript RegExps over byte strings. Constructs whose meaning differs
// between those engines and JavaScript, or that real policies do not use (inline flags, Unicode classes,
// class set operations, backreferences), are E_UNSUPPORTED rather than guessed.
//
// Speed: composefs-rs compiles all rules into one DFA. Here each rule is indexed under its literal prefixes
// (`/usr/(s)?bin/x` → `/usr/sbin/x`, `/usr/bin/x`), and the rules of one prefix are combined, highest index
// first, into RegExps of up to 128 alternatives; a lookup runs only the RegExps of the prefixes the path
// starts with and keeps the highest-index match.

import { StratumError } from "../errors.ts";
import type { ObjectId } from "../format/object-id.ts";
import { Directory, FileSystem, Leaf, byteString, isDirectory, type ByteString } from "../tree/tree.ts";

export const SECURITY_SELINUX = "security.selinux";

/** Reads the content of a repository object (e.g. `(id) => repo.objects.read(id)`). */
export type ObjectReader = (objectId: ObjectId) => Buffer;

/** The file-type character of selabel_file(5) that a rule's `-X` option names. */
export type FileTypeCode = "-" | "d" | "l" | "b" | "c" | "p" | "s";

export interface SelabelOptions {
  /** Content of object-backed regular files (the policy files); inline contents are read from the tree. */
  readFile: ObjectReader;
  /** Names the image in error messages. */
  label?: string;
}

const NONE_CONTEXT = "<<none>>";
const TYPE_CODES: readonly string[] = ["-", "d", "l", "b", "c", "p", "s"];

// Rust's `char::is_whitespace` (Unicode White_Space), which composefs-rs splits and trims lines with.
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS}]+`);
const WS_TRIM = new RegExp(`^[${WS}]+|[${WS}]+$`, "g");

function fail(code: "E_BAD_INPUT" | "E_UNSUPPORTED" | "E_CORRUPT", where: string, message: string): never {
  throw new StratumError(code, `${where}: ${message}`);
}

/** The lines of a text file as Rust's `BufRead::lines` yields them (`\n` or `\r\n` ends; UTF-8 required). */
function* textLines(data: Buffer, where: string): Generator<{ n: number; text: string }> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let start = 0;
  let n = 0;
  while (start < data.length) {
    const newline = data.indexOf(0x0a, start);
    const next = newline < 0 ? data.length : newline + 1;
    let end = newline < 0 ? data.length : newline;
    if (newline >= 0 && end > start && data[end - 1] === 0x0d) end--;
    n++;
    let text: string;
    try {
      text = decoder.decode(data.subarray(start, end));
    } catch {
      fail("E_BAD_INPUT", `${where} line ${n}`, "not UTF-8");
    }
    yield { n, text };
    start = next;
  }
}

function words(text: string): string[] {
  return text.split(WS_RUN).filter((w) => w !== "");
}

// --- regex translation -------------------------------------------------------------------------------------

const ASCII_CLASSES: Record<string, string> = {
  alnum: "0-9A-Za-z",
  alpha: "A-Za-z",
  ascii: "\\x00-\\x7f",
  blank: "\\t ",
  cntrl: "\\x00-\\x1f\\x7f",
  digit: "0-9",
  graph: "!-~",
  lower: "a-z",
  print: " -~",
  punct: "!-\\/:-@\\[-`{-~",
  space: "\\t\\n\\v\\f\\r ",
  upper: "A-Z",
  word: "0-9A-Za-z_",
  xdigit: "0-9A-Fa-f",
};
const SPACE_CLASS = "\\t\\n\\v\\f\\r ";

function isAlnum(c: string): boolean {
  return /^[0-9A-Za-z]$/.test(c);
}

/** A pattern translated to a JavaScript RegExp source (no `u` flag, `s` flag). */
export interface TranslatedPattern {
  source: string;
  /** Number of capturing groups in `source`. */
  groups: number;
}

/**
 * Translate a file_contexts pattern (a byte string: the UTF-8 bytes of the line's first word) to a JavaScript
 * RegExp source matching the same byte strings. Throws E_UNSUPPORTED for constructs with no faithful
 * translation (inline flags, Unicode classes, class set operations, backreferences, `\<`/`\>`, unbalanced
 * parentheses), naming `where`.
 */
export function translatePattern(pattern: ByteString, where: string): TranslatedPattern {
  let out = "";
  let depth = 0;
  let groups = 0;
  let i = 0;
  const unsupported: (what: string) => never = (what) =>
    fail("E_UNSUPPORTED", where, `regex construct ${what}`);
  const hex = (code: number): string => `\\x${code.toString(16).padStart(2, "0")}`;
  /** Escapes meaning the same in and out of classes: the translation and the length consumed, or null. */
  const commonEscape = (at: number): { text: string; len: number } | null => {
    const e = pattern[at + 1];
    if (e === "a") return { text: "\\x07", len: 2 };
    if ("ntrfv".includes(e)) return { text: `\\${e}`, len: 2 };
    if (e !== "x") return null;
    if (pattern[at + 2] === "{") {
      const close = pattern.indexOf("}", at + 3);
      const digits = close < 0 ? "" : pattern.slice(at + 3, close);
      if (!/^[0-9A-Fa-f]{1,8}$/.test(digits)) unsupported("\\x{…}");
      const code = parseInt(digits, 16);
      if (code > 0xff) unsupported(`\\x{${digits}}`);
      return { text: hex(code), len: close + 1 - at };
    }
    const digits = pattern.slice(at + 2, at + 4);
    if (!/^[0-9A-Fa-f]{2}$/.test(digits)) unsupported("\\x without two hex digits");
    return { text: hex(parseInt(digits, 16)), len: 4 };
  };

  while (i < pattern.length) {
    const c = pattern[i];
    const code = c.charCodeAt(0);
    if (code >= 0x80) {
      // A non-ASCII character is one literal (its UTF-8 bytes), so a quantifier after it repeats all of them.
      let end = i + 1;
      while (end < pattern.length && (pattern.charCodeAt(end) & 0xc0) === 0x80) end++;
      out += `(?:${[...pattern.slice(i, end)].map((b) => hex(b.charCodeAt(0))).join("")})`;
      i = end;
      continue;
    }
    if (c === "\\") {
      const e = pattern[i + 1];
      if (e === undefined) fail("E_BAD_INPUT", where, "regex ends with a backslash");
      const common = commonEscape(i);
      if (common !== null) {
        out += common.text;
        i += common.len;
        continue;
      }
      if (!isAlnum(e)) {
        if (e === "<" || e === ">") unsupported(`\\${e}`);
        // An escaped punctuation character is that literal character.
        out += `\\${e}`;
        i += 2;
        continue;
      }
      if ("dDwWbB".includes(e)) out += `\\${e}`;
      else if (e === "s") out += `[${SPACE_CLASS}]`;
      else if (e === "S") out += `[^${SPACE_CLASS}]`;
      else if (e === "A") out += "^";
      else if (e === "z") out += "$";
      else if (/[0-9]/.test(e)) unsupported(`\\${e} (backreferences and octal escapes)`);
      else unsupported(`\\${e}`);
      i += 2;
      continue;
    }
    if (c === "[") {
      i++;
      let cls = "[";
      if (pattern[i] === "^") {
        cls += "^";
        i++;
      }
      let first = true;
      for (;;) {
        const d = pattern[i];
        if (d === undefined) fail("E_BAD_INPUT", where, "unclosed character class");
        if (d.charCodeAt(0) >= 0x80) unsupported("non-ASCII character in a class");
        if (d === "]" && !first) {
          i++;
          break;
        }
        first = false;
        if (d === "]") {
          cls += "\\]";
          i++;
        } else if (d === "[") {
          const m = /^\[:(\^?)([a-z]+):\]/.exec(pattern.slice(i));
          if (m === null) unsupported("nested class");
          const set = ASCII_CLASSES[m[2]];
          if (set === undefined) unsupported(`[:${m[2]}:]`);
          if (m[1] === "^") unsupported(`[:^${m[2]}:]`);
          cls += set;
          i += m[0].length;
        } else if ((d === "&" || d === "-" || d === "~") && pattern[i + 1] === d) {
          unsupported(`class operator ${d}${d}`);
        } else if (d === "\\") {
          const e = pattern[i + 1];
          if (e === undefined) fail("E_BAD_INPUT", where, "unclosed character class");
          const common = commonEscape(i);
          if (common !== null) {
            cls += common.text;
            i += common.len;
          } else if (!isAlnum(e)) {
            cls += `\\${e}`;
            i += 2;
          } else if ("dDwW".includes(e)) {
            cls += `\\${e}`;
            i += 2;
          } else if (e === "s") {
            cls += SPACE_CLASS;
            i += 2;
          } else unsupported(`\\${e} in a class`);
        } else {
          cls += d;
          i++;
        }
      }
      out += `${cls}]`;
      continue;
    }
    if (c === "(") {
      depth++;
      if (pattern[i + 1] === "?") {
        const rest = pattern.slice(i + 2);
        const named = /^P?<([A-Za-z_][A-Za-z0-9_]*)>/.exec(rest);
        if (rest.startsWith(":") || rest.startsWith("=") || rest.startsWith("!")) {
          out += `(?${rest[0]}`;
          i += 3;
        } else if (rest.startsWith("<=") || rest.startsWith("<!")) {
          out += `(?${rest.slice(0, 2)}`;
          i += 4;
        } else if (named !== null) {
          // Names are useless without backreferences, and would clash once rules are combined.
          out += "(";
          groups++;
          i += 2 + named[0].length;
        } else unsupported(`(?${rest.slice(0, 2)}`);
        continue;
      }
      out += "(";
      groups++;
      i++;
      continue;
    }
    if (c === ")") {
      // Rules are combined into one RegExp: a stray `)` would close the group around its rule.
      if (--depth < 0) unsupported("unbalanced parentheses");
      out += ")";
      i++;
      continue;
    }
    out += c;
    i++;
  }
  if (depth !== 0) unsupported("unbalanced parentheses");
  return { source: out, groups };
}

/** How many literal prefixes one rule may be indexed under before the expansion stops. */
const MAX_PREFIXES = 32;

/**
 * Literal prefixes of a pattern: every path it matches starts with one of them (so `[""]` is always a
 * correct, if useless, answer). Literal characters and escaped punctuation extend every prefix; `x?` and
 * `(a|b)`, `(a|b)?` of literal alternatives multiply them (up to MAX_PREFIXES); anything else ends them.
 */
export function literalPrefixes(pattern: ByteString): ByteString[] {
  let i = 0;
  const quantifier = (): string => {
    const q = pattern[i];
    if (q === "?" || q === "*" || q === "+") {
      i++;
      if (pattern[i] === "?") i++;
      return q;
    }
    if (q === "{") {
      const close = pattern.indexOf("}", i);
      i = close < 0 ? pattern.length : close + 1;
      if (pattern[i] === "?") i++;
      return "{";
    }
    return "";
  };
  /** Skip one atom (escape, class, group or character) without interpreting it. */
  const skipAtom = (): void => {
    const c = pattern[i];
    if (c === "\\") {
      const close = pattern[i + 1] === "x" && pattern[i + 2] === "{" ? pattern.indexOf("}", i) : -1;
      i = close < 0 ? i + 2 : close + 1;
    } else if (c === "[") {
      i++;
      if (pattern[i] === "^") i++;
      if (pattern[i] === "]") i++;
      while (i < pattern.length && pattern[i] !== "]") {
        const posix = pattern.startsWith("[:", i) ? pattern.indexOf(":]", i + 2) : -1;
        if (pattern[i] === "\\") i += 2;
        else if (posix >= 0) i = posix + 2;
        else i++;
      }
      i++;
    } else if (c === "(") {
      i++;
      while (i < pattern.length && pattern[i] !== ")") skipAtom();
      i++;
    } else i++;
  };
  const cross = (a: ByteString[], b: ByteString[]): ByteString[] | null => {
    if (a.length * b.length > MAX_PREFIXES) return null;
    const out: ByteString[] = [];
    for (const x of a) for (const y of b) out.push(x + y);
    return out;
  };
  /** A sequence up to `|`, `)` or the end: its prefixes, and whether they are its whole language. */
  const sequence = (): { set: ByteString[]; complete: boolean } => {
    let set: ByteString[] = [""];
    let complete = true;
    while (i < pattern.length && pattern[i] !== "|" && pattern[i] !== ")") {
      if (!complete) {
        skipAtom();
        continue;
      }
      const c = pattern[i];
      let atom: { set: ByteString[]; complete: boolean } | null = null;
      if (c === "\\" && i + 1 < pattern.length && !isAlnum(pattern[i + 1]) && pattern[i + 1] < "\x80") {
        atom = { set: [pattern[i + 1]], complete: true };
        i += 2;
      } else if (c === "(" && (pattern[i + 1] !== "?" || pattern[i + 2] === ":")) {
        i += pattern[i + 1] === "?" ? 3 : 1;
        atom = alternation();
        i++;
      } else if (c < "\x80" && !".^$[(\\*+?{|)".includes(c)) {
        atom = { set: [c], complete: true };
        i++;
      }
      if (atom === null) {
        complete = false;
        continue;
      }
      const q = quantifier();
      let next: ByteString[] | null = null;
      if (q === "" || q === "+") next = cross(set, atom.set);
      else if (q === "?" && atom.complete) next = cross(set, [...atom.set, ""]);
      if (next !== null) set = next;
      if (next === null || q !== "" || !atom.complete) complete = next !== null && q === "?";
    }
    return { set, complete };
  };
  /** Alternatives separated by `|`, up to `)` or the end. */
  const alternation = (): { set: ByteString[]; complete: boolean } => {
    const first = sequence();
    const set = [...first.set];
    let complete = first.complete;
    while (pattern[i] === "|") {
      i++;
      const alt = sequence();
      set.push(...alt.set);
      complete &&= alt.complete;
    }
    return { set: set.length > MAX_PREFIXES ? [""] : set, complete: complete && set.length <= MAX_PREFIXES };
  };
  const { set } = alternation();
  if (i < pattern.length) return [""];
  return [...new Set(set)];
}

// --- policy ------------------------------------------------------------------------------------------------

interface Rule {
  /** `(?:SOURCE)T$`: the rule as one alternative of a combined RegExp. */
  alternative: string;
  /** Capturing groups in the alternative. */
  groups: number;
  /** null: `<<none>>`. */
  context: Buffer | null;
}

/**
 * Some rules of one prefix, highest index first, as one RegExp `^(?:ALT()|ALT()|…)`: JavaScript tries the
 * alternatives in order, so a match is the highest-index rule that matches, and the empty group after it (a
 * marker) says which one that is.
 */
interface Chunk {
  regex: RegExp;
  /** Rule indices, descending. */
  rules: number[];
  /** Group number of each rule's marker. */
  markers: number[];
}

/** Rules per combined RegExp: large enough to save most calls, small enough for V8's optimising compiler. */
const CHUNK_RULES = 128;

/** A parsed and compiled file_contexts policy. */
export class SelinuxPolicy {
  private readonly rules: Rule[] = [];
  /** Literal prefix → indices of the rules with it, ascending (while parsing). */
  private readonly byPrefix = new Map<ByteString, number[]>();
  /** Literal prefix → its rules as combined RegExps, highest indices first. */
  private readonly chunks = new Map<ByteString, Chunk[]>();
  /** The distinct prefix lengths, ascending. */
  private prefixLengths: number[] = [];
  private readonly aliases = new Map<ByteString, ByteString>();

  /**
   * Build the policy from its files, opened by name (`file_contexts`, `file_contexts.local`, …; undefined
   * when the file does not exist). `where` prefixes error messages.
   */
  static build(open: (name: string) => Buffer | undefined, where: string): SelinuxPolicy {
    const policy = new SelinuxPolicy();
    for (const suffix of ["", ".local", ".homedirs"]) {
      const name = `file_contexts${suffix}`;
      const data = open(name);
      if (data === undefined) {
        if (suffix === "") fail("E_BAD_INPUT", where, "the SELinux policy has no file_contexts");
        continue;
      }
      policy.addSpecFile(data, `${where}/${name}`);
    }
    for (const suffix of [".subs", ".subs_dist"]) {
      const name = `file_contexts${suffix}`;
      const data = open(name);
      if (data !== undefined) policy.addSubsFile(data, `${where}/${name}`);
    }
    policy.compile();
    return policy;
  }

  private compile(): void {
    for (const [prefix, indices] of this.byPrefix) {
      const chunks: Chunk[] = [];
      const descending = [...indices].reverse();
      for (let start = 0; start < descending.length; start += CHUNK_RULES) {
        const rules = descending.slice(start, start + CHUNK_RULES);
        const markers: number[] = [];
        let group = 0;
        const parts = rules.map((idx) => {
          const rule = this.rules[idx];
          group += rule.groups + 1;
          markers.push(group);
          return `${rule.alternative}()`;
        });
        chunks.push({ regex: new RegExp(`^(?:${parts.join("|")})`, "s"), rules, markers });
      }
      this.chunks.set(prefix, chunks);
    }
    this.prefixLengths = [...new Set([...this.chunks.keys()].map((p) => p.length))].sort((a, b) => a - b);
    this.byPrefix.clear();
  }

  private addSpecFile(data: Buffer, where: string): void {
    for (const { n, text } of textLines(data, where)) {
      const w = words(text);
      if (w.length === 0 || w[0].startsWith("#")) continue;
      const at = `${where} line ${n}`;
      if (w.length < 2) fail("E_BAD_INPUT", at, "no context after the regex");
      let type = ".";
      let context = w[1];
      let used = 2;
      if (w[1].startsWith("-")) {
        const t = w[1].slice(1);
        if (!TYPE_CODES.includes(t)) fail("E_BAD_INPUT", at, `invalid file type ${JSON.stringify(w[1])}`);
        if (w.length < 3) fail("E_BAD_INPUT", at, "no context after the file type");
        type = t;
        context = w[2];
        used = 3;
      }
      if (w.length > used) fail("E_BAD_INPUT", at, "trailing data after the context");
      const pattern = byteString(w[0]);
      const { source, groups } = translatePattern(pattern, at);
      const alternative = `(?:${source})${type}$`;
      try {
        // Compiled alone first, so a bad pattern is reported with its line.
        new RegExp(alternative, "s");
      } catch (err) {
        fail("E_BAD_INPUT", at, `invalid regex ${JSON.stringify(w[0])}: ${(err as Error).message}`);
      }
      const index = this.rules.length;
      this.rules.push({
        alternative,
        groups,
        context: context === NONE_CONTEXT ? null : Buffer.from(context, "utf8"),
      });
      for (const prefix of literalPrefixes(pattern)) {
        const list = this.byPrefix.get(prefix);
        if (list === undefined) this.byPrefix.set(prefix, [index]);
        else list.push(index);
      }
    }
  }

  private addSubsFile(data: Buffer, where: string): void {
    for (const { n, text } of textLines(data, where)) {
      const w = words(text);
      if (w.length === 0 || w[0].startsWith("#")) continue;
      if (w.length < 2) fail("E_BAD_INPUT", `${where} line ${n}`, "no original path after the alias");
      if (w.length > 2) fail("E_BAD_INPUT", `${where} line ${n}`, "trailing data after the original path");
      this.aliases.set(byteString(w[0]), byteString(w[1]));
    }
  }

  /** Number of rules. */
  get size(): number {
    return this.rules.length;
  }

  /** The path a `.subs` alias maps `path` to, if any (whole-path match). */
  alias(path: ByteString): ByteString | undefined {
    return this.aliases.get(path);
  }

  /** The label for `path` (absolute byte string) of file type `type`; null when none or `<<none>>`. */
  lookup(path: ByteString, type: FileTypeCode): Buffer | null {
    const key = path + type;
    let best = -1;
    for (const len of this.prefixLengths) {
      if (len > path.length) break;
      const chunks = this.chunks.get(len === path.length ? path : path.slice(0, len));
      if (chunks === undefined) continue;
      for (const chunk of chunks) {
        if (chunk.rules[0] <= best) break;
        const m = chunk.regex.exec(key);
        if (m === null) continue;
        // Only the alternative that matched has its marker set.
        const j = chunk.markers.findIndex((group) => m[group] !== undefined);
        if (j < 0) throw new Error("SelinuxPolicy.lookup: a match without its marker");
        best = Math.max(best, chunk.rules[j]);
        break;
      }
    }
    return best < 0 ? null : this.rules[best].context;
  }
}

// --- reading the policy from the tree ----------------------------------------------------------------------

function show(path: ByteString): string {
  return JSON.stringify(Buffer.from(path, "latin1").toString("utf8"));
}

/** The content of regular file `name` in `dir`; undefined when there is no such entry. */
function readRegular(
  dir: Directory,
  dirPath: ByteString,
  name: ByteString,
  readFile: ObjectReader,
  where: string,
): Buffer | undefined {
  const inode = dir.get(name);
  if (inode === undefined) return undefined;
  const path = `${dirPath}/${name}`;
  if (isDirectory(inode) || inode.content.type !== "reg")
    fail("E_BAD_INPUT", where, `${show(path)} is not a regular file`);
  const c = inode.content;
  const data = c.inline ?? (c.digest !== undefined ? readFile(c.digest) : Buffer.alloc(0));
  if (data.length !== c.size)
    fail("E_CORRUPT", where, `${show(path)} has ${data.length} bytes where the tree says ${c.size}`);
  return data;
}

function subdirectory(dir: Directory, dirPath: ByteString, name: ByteString, where: string): Directory {
  const inode = dir.get(name);
  if (inode === undefined) fail("E_BAD_INPUT", where, `${show(`${dirPath}/${name}`)} does not exist`);
  if (!isDirectory(inode)) fail("E_BAD_INPUT", where, `${show(`${dirPath}/${name}`)} is not a directory`);
  return inode;
}

/** The value of the first `SELINUXTYPE=` line (key case-insensitive, both sides trimmed), or undefined. */
export function policyType(config: Buffer, where: string): string | undefined {
  for (const { text } of textLines(config, where)) {
    const eq = text.indexOf("=");
    if (eq < 0) continue;
    if (text.slice(0, eq).replace(WS_TRIM, "").toUpperCase() === "SELINUXTYPE")
      return text.slice(eq + 1).replace(WS_TRIM, "");
  }
  return undefined;
}

/**
 * The image's SELinux policy, or null when it has none (no `/etc/selinux` directory, no `config` in it, or no
 * `SELINUXTYPE`). A broken policy (missing policy directory or file_contexts, unparsable rule) is an error.
 */
export function loadPolicy(fs: FileSystem, opts: SelabelOptions): SelinuxPolicy | null {
  const where = opts.label ?? "image";
  const etc = fs.root.get("etc");
  if (etc === undefined) return null;
  if (!isDirectory(etc)) fail("E_BAD_INPUT", where, `"/etc" is not a directory`);
  const selinux = etc.get("selinux");
  if (selinux === undefined) return null;
  if (!isDirectory(selinux)) fail("E_BAD_INPUT", where, `"/etc/selinux" is not a directory`);
  const config = readRegular(selinux, "/etc/selinux", "config", opts.readFile, where);
  if (config === undefined) return null;
  const type = policyType(config, `${where}: /etc/selinux/config`);
  if (type === undefined) return null;
  if (type === "" || type === "." || type === ".." || type.includes("/"))
    fail("E_BAD_INPUT", where, `/etc/selinux/config: invalid SELINUXTYPE ${JSON.stringify(type)}`);
  const typeName = byteString(type);
  let dir: Directory = subdirectory(selinux, "/etc/selinux", typeName, where);
  let dirPath = `/etc/selinux/${typeName}`;
  for (const name of ["contexts", "files"]) {
    dir = subdirectory(dir, dirPath, name, where);
    dirPath = `${dirPath}/${name}`;
  }
  const filesDir = dir;
  const filesPath = dirPath;
  return SelinuxPolicy.build(
    (name) => readRegular(filesDir, filesPath, name, opts.readFile, where),
    `${where}: ${Buffer.from(filesPath, "latin1").toString("utf8")}`,
  );
}

// --- labelling ---------------------------------------------------------------------------------------------

function typeCode(leaf: Leaf): FileTypeCode {
  switch (leaf.content.type) {
    case "reg":
      return "-";
    case "symlink":
      return "l";
    case "blk":
      return "b";
    case "chr":
      return "c";
    case "fifo":
      return "p";
    case "sock":
      return "s";
  }
}

/** Set or remove the label. Inodes with one label share the rule's Buffer (xattr values are read-only). */
function setLabel(xattrs: Map<ByteString, Buffer>, label: Buffer | null): void {
  if (label === null) xattrs.delete(SECURITY_SELINUX);
  else xattrs.set(SECURITY_SELINUX, label);
}

function sameLabel(a: Buffer | null, b: Buffer | null): boolean {
  return a === null || b === null ? a === b : a.equals(b);
}

/**
 * Label every inode of `fs` by `policy` (see the module header), mutating the tree. Hard links whose paths
 * get different labels are split into separate leaves; the caller recomputes link counts.
 */
export function applyPolicy(fs: FileSystem, policy: SelinuxPolicy): void {
  /** Label committed to each leaf at its first path. */
  const labelled = new Map<Leaf, Buffer | null>();
  // Pre-order, children in bytewise order (a subdirectory's contents before its later siblings), as
  // composefs-rs recurses: this order decides which path of a hard link is "first".
  type Item = { parent: Directory | null; name: ByteString; inode: Directory | Leaf; path: ByteString };
  const stack: Item[] = [{ parent: null, name: "", inode: fs.root, path: "/" }];
  while (stack.length > 0) {
    const { parent, name, inode, path } = stack.pop() as Item;
    if (isDirectory(inode)) {
      setLabel(inode.stat.xattrs, policy.lookup(path, "d"));
      const base = path === "/" ? "/" : `${path}/`;
      const children = inode.sorted();
      for (let k = children.length - 1; k >= 0; k--) {
        const [childName, child] = children[k];
        const own = base + childName;
        stack.push({ parent: inode, name: childName, inode: child, path: policy.alias(own) ?? own });
      }
      continue;
    }
    const label = policy.lookup(path, typeCode(inode));
    const first = labelled.get(inode);
    let target = inode;
    if (first !== undefined && !sameLabel(first, label)) {
      target = new Leaf({ ...inode.stat, xattrs: new Map(inode.stat.xattrs) }, { ...inode.content });
      (parent as Directory).entries.set(name, target);
    }
    setLabel(target.stat.xattrs, label);
    if (!labelled.has(target)) labelled.set(target, label);
  }
}

/** Remove `security.selinux` from every inode. */
export function stripLabels(fs: FileSystem): void {
  const seen = new Set<Leaf>();
  for (const { inode } of fs.walk()) {
    if (!isDirectory(inode)) {
      if (seen.has(inode)) continue;
      seen.add(inode);
    }
    inode.stat.xattrs.delete(SECURITY_SELINUX);
  }
}

/**
 * Apply the image's SELinux policy to every inode, or strip all labels when the image has none. Returns
 * whether a policy was applied.
 */
export function selabel(fs: FileSystem, opts: SelabelOptions): boolean {
  const policy = loadPolicy(fs, opts);
  if (policy === null) {
    stripLabels(fs);
    return false;
  }
  applyPolicy(fs, policy);
  return true;
}
