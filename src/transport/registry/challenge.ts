// WWW-Authenticate challenges (RFC 7235 §4.1 and §2.1, RFC 6750 §3 for Bearer; distribution-spec token auth)
// parsed from a registry's 401 response. One header may carry several challenges, and fetch joins repeated headers
// with ", ", so the parser splits challenges from their comma-separated auth-params itself. Scheme and parameter
// names are case-insensitive and returned lowercased; quoted-string values are unescaped. Malformed headers are
// E_BAD_INPUT. Pure: no I/O.

import { StratumError } from "../../errors.ts";

export interface Challenge {
  /** Lowercased auth-scheme: "bearer", "basic", … */
  scheme: string;
  /** auth-params with lowercased names; the first of repeated names wins. */
  params: Partial<Record<string, string>>;
  /** The token68 form (`Negotiate abc==`), when the challenge has one instead of params. */
  token68?: string;
}

export interface BearerChallenge {
  realm: string;
  service?: string;
  /** The scopes the registry asks for (the `scope` param split at spaces). */
  scopes: string[];
  /** `invalid_token`, `insufficient_scope`, … when the registry says why a token was refused. */
  error?: string;
  errorDescription?: string;
}

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;
const TOKEN68_RE = /^[A-Za-z0-9._~+/-]+=*/;

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}

  /** Skip spaces and tabs (OWS/BWS). */
  ws(): void {
    while (this.pos < this.text.length && (this.text[this.pos] === " " || this.text[this.pos] === "\t"))
      this.pos++;
  }

  /** Skip whitespace and list commas (the `#rule` allows empty list elements). */
  listSeparators(): void {
    while (this.pos < this.text.length && /[ \t,]/.test(this.text[this.pos])) this.pos++;
  }

  match(re: RegExp): string | undefined {
    const m = re.exec(this.text.slice(this.pos));
    if (m === null) return undefined;
    this.pos += m[0].length;
    return m[0];
  }

  peek(): string | undefined {
    return this.text[this.pos];
  }

  done(): boolean {
    return this.pos >= this.text.length;
  }

  fail(problem: string): StratumError {
    return new StratumError(
      "E_BAD_INPUT",
      `malformed WWW-Authenticate header at character ${this.pos + 1}: ${problem} (header: ${this.text})`,
    );
  }

  quotedString(): string {
    this.pos++; // opening quote
    let out = "";
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos++];
      if (ch === '"') return out;
      if (ch === "\\") {
        if (this.pos >= this.text.length) break;
        out += this.text[this.pos++];
      } else out += ch;
    }
    throw this.fail("unterminated quoted string");
  }

  /** Does an `auth-param` (token BWS "=") start here? Looks ahead without consuming. */
  atParam(): boolean {
    const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*=/.exec(this.text.slice(this.pos));
    if (m === null) return false;
    // `token68` may end in '=' too: it is one only when nothing but a list separator or the end follows.
    const after = this.text.slice(this.pos + m[0].length);
    return !/^=*[ \t]*(,|$)/.test(after);
  }
}

function parseChallenge(s: Scanner): Challenge {
  const scheme = s.match(TOKEN_RE);
  if (scheme === undefined) throw s.fail("expected an auth-scheme");
  const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
  const hadSpace = s.peek() === " " || s.peek() === "\t";
  s.ws();
  if (s.done() || s.peek() === ",") return challenge;
  if (!hadSpace) throw s.fail(`expected a space after "${scheme}"`);
  if (!s.atParam()) {
    const token68 = s.match(TOKEN68_RE);
    if (token68 === undefined) throw s.fail("expected auth-params or a token68");
    challenge.token68 = token68;
    s.ws();
    if (!s.done() && s.peek() !== ",") throw s.fail("unexpected text after token68");
    return challenge;
  }
  for (;;) {
    const name = s.match(TOKEN_RE)!.toLowerCase();
    s.ws();
    s.pos++; // "=", guaranteed by atParam
    s.ws();
    let value: string | undefined;
    if (s.peek() === '"') value = s.quotedString();
    else value = s.match(TOKEN_RE);
    if (value === undefined) throw s.fail(`parameter "${name}" has no value`);
    if (!(name in challenge.params)) challenge.params[name] = value;
    s.ws();
    if (s.done()) return challenge;
    if (s.peek() !== ",") throw s.fail(`expected "," after parameter "${name}"`);
    s.listSeparators();
    // Another auth-param of this challenge, or the next challenge's scheme.
    if (s.done() || !s.atParam()) return challenge;
  }
}

/**
 * Parse a WWW-Authenticate field value (or several, one per header line) into its challenges, in order.
 * An empty header yields no challenges.
 */
export function parseWwwAuthenticate(header: string | readonly string[]): Challenge[] {
  const out: Challenge[] = [];
  for (const line of typeof header === "string" ? [header] : header) {
    const s = new Scanner(line);
    s.listSeparators();
    while (!s.done()) {
      out.push(parseChallenge(s));
      s.listSeparators();
    }
  }
  return out;
}

/**
 * The Bearer challenge's token-service parameters, or undefined when there is no Bearer challenge. The realm
 * must be an absolute http(s) URL (the token request goes there); anything else is E_BAD_INPUT.
 */
export function bearerChallenge(challenges: readonly Challenge[]): BearerChallenge | undefined {
  const c = challenges.find((ch) => ch.scheme === "bearer");
  if (c === undefined) return undefined;
  const realm = c.params.realm;
  if (realm === undefined || realm === "")
    throw new StratumError("E_BAD_INPUT", "the registry's Bearer challenge has no realm");
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new StratumError("E_BAD_INPUT", `the registry's Bearer realm is not a URL: ${realm}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new StratumError("E_BAD_INPUT", `the registry's Bearer realm is not an http(s) URL: ${realm}`);
  const b: BearerChallenge = { realm, scopes: (c.params.scope ?? "").split(" ").filter((x) => x !== "") };
  if (c.params.service !== undefined) b.service = c.params.service;
  if (c.params.error !== undefined) b.error = c.params.error;
  if (c.params.error_description !== undefined) b.errorDescription = c.params.error_description;
  return b;
}

/** The realm of a Basic challenge ("" when it has none), or undefined when there is no Basic challenge. */
export function basicChallenge(challenges: readonly Challenge[]): { realm: string } | undefined {
  const c = challenges.find((ch) => ch.scheme === "basic");
  return c === undefined ? undefined : { realm: c.params.realm ?? "" };
}

/**
 * The token request URL for a Bearer challenge: the realm with `service` and one `scope` parameter per scope
 * (the challenge's own scopes, then `extraScopes`, without repeats), as the distribution token spec has it.
 */
export function tokenRequestUrl(bearer: BearerChallenge, extraScopes: readonly string[] = []): URL {
  const url = new URL(bearer.realm);
  if (bearer.service !== undefined) url.searchParams.set("service", bearer.service);
  for (const scope of new Set([...bearer.scopes, ...extraScopes])) url.searchParams.append("scope", scope);
  return url;
}
