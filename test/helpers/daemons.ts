// Container daemons for tests, each isolated in a per-run temporary directory: podman's Docker-compatible API
// service and dockerd (own roots, run dirs and unix sockets; nothing under /var/lib or /run is used). Also the
// process plumbing the other helpers (registry.ts, fault-proxy.ts) share: detached process groups stopped by PID,
// a watchdog that tears a daemon down if the test process dies without running its `after` hooks, readiness
// polling, plain async command runs, and HTTP over a unix socket (the Docker Engine API).

import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

// --- commands ----------------------------------------------------------------------------------------------

export interface RunResult {
  status: number;
  stdout: Buffer;
  stderr: string;
}

export interface RunOptions {
  input?: Buffer | string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw when the exit status is not 0 (default true). */
  check?: boolean;
  timeoutMs?: number;
}

/** Runs a command without blocking the event loop; stdout is collected whole, stderr as text. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: opts.timeoutMs ?? 300_000,
      killSignal: "SIGKILL",
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.stdin.on("error", () => undefined); // a command that does not read its input
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const r: RunResult = {
        status: code ?? -1,
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err).toString(),
      };
      if ((opts.check ?? true) && r.status !== 0) {
        const why = signal !== null ? `killed by ${signal}` : `exit ${r.status}`;
        reject(new Error(`${cmd} ${args.join(" ")}: ${why}\n${r.stderr.slice(-4000)}`));
      } else {
        resolve(r);
      }
    });
    child.stdin.end(opts.input);
  });
}

export function hasCommand(cmd: string): boolean {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .some((d) => d !== "" && fs.existsSync(path.join(d, cmd)));
}

/** Why infrastructure needing root and `commands` cannot run here, or null when it can. */
export function unavailable(commands: string[], packages: string): string | null {
  if (process.getuid?.() !== 0) return "needs root";
  const missing = commands.filter((c) => !hasCommand(c));
  if (missing.length > 0) {
    return `${missing.join(", ")} not installed (bash scripts/install-deps.sh, or apt-get install ${packages})`;
  }
  return null;
}

// --- temporary directories ---------------------------------------------------------------------------------

/**
 * A fresh directory for one daemon or server. Unix socket paths are limited to 108 bytes, so it lives directly
 * under the temp dir, or under /tmp when $TMPDIR is long.
 */
export function shortTempDir(prefix: string): string {
  const base = os.tmpdir().length <= 40 ? os.tmpdir() : "/tmp";
  return fs.mkdtempSync(path.join(base, prefix));
}

/** Mount points at or below `dir` (this process's mount namespace), deepest first. */
export function mountsUnder(dir: string): string[] {
  const root = path.resolve(dir);
  const out: string[] = [];
  for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === root || mp.startsWith(root + "/")) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/**
 * STRATUM_TEST_KEEP=1: helpers still stop their processes and release their mounts, but leave their
 * directories (configs, logs, storage) behind for inspection and say where on stderr.
 */
export const KEEP_DIRS = process.env.STRATUM_TEST_KEEP === "1";

/** Removes a helper's directory, unless STRATUM_TEST_KEEP=1. */
export function discardDir(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (KEEP_DIRS) process.stderr.write(`STRATUM_TEST_KEEP: kept ${dir}\n`);
  else fs.rmSync(dir, { recursive: true, force: true });
}

/** Unmounts everything at or below `dir` (lazily if busy), then removes it (see discardDir). */
export async function removeTree(dir: string): Promise<void> {
  for (const mp of mountsUnder(dir)) {
    const r = await run("umount", [mp], { check: false });
    if (r.status !== 0) await run("umount", ["-l", mp], { check: false });
  }
  discardDir(dir);
}

// --- processes ---------------------------------------------------------------------------------------------

/**
 * Runs while the test process lives; when it is gone (killed, crashed, timed out before its `after` hooks),
 * terminates the daemon's process group and every other process whose command line names the daemon's own
 * directory (dockerd puts its containerd in a group of its own), unmounts whatever is left below the directory
 * and removes it. $1 = the test process, $2 = the daemon's process group, $3 = its directory (may be empty),
 * $4 = 1 to keep the directory (STRATUM_TEST_KEEP).
 * (dash: `kill -SIG -PGID`, no `--`.)
 */
const WATCHDOG_NAME = "stratum-watchdog";
const WATCHDOG = `
trap 'exit 0' TERM
while kill -0 "$1" 2>/dev/null; do sleep 1; done
members() {
  [ -n "$3" ] || return 0
  for f in /proc/[0-9]*/cmdline; do
    c=$(tr '\\0' ' ' < "$f" 2>/dev/null) || continue
    case "$c" in *${WATCHDOG_NAME}*) ;; *"$3"*) p=\${f#/proc/}; echo "\${p%/cmdline}" ;; esac
  done
}
kill -TERM -"$2" 2>/dev/null
for p in $(members "$@"); do kill -TERM "$p" 2>/dev/null; done
i=0
while { ps -o stat= --pgid "$2" | grep -qv '^Z' || [ -n "$(members "$@")" ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL -"$2" 2>/dev/null
for p in $(members "$@"); do kill -KILL "$p" 2>/dev/null; done
if [ -n "$3" ] && [ -d "$3" ]; then
  awk '{print $5}' /proc/self/mountinfo | grep -e "^$3/" -e "^$3$" | sort -r | while read -r m; do umount -l "$m"; done
  [ "$4" = 1 ] || rm -rf "$3"
fi
`;

/** PIDs of processes (other than this one and watchdogs) whose command line contains `dir`. */
export function processesUsing(dir: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`);
      if (cmdline.includes(dir) && !cmdline.includes(WATCHDOG_NAME)) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

export interface ManagedProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  readonly logPath: string;
  /** Set once the process has exited: its exit code or signal. */
  readonly exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** The last `bytes` of its log. */
  logTail(bytes?: number): string;
  /** SIGTERM to its process group; SIGKILL after `timeoutMs`. Also ends the watchdog. Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
}

const live = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a test forgot stop(): the watchdogs finish the cleanup.
  process.on("exit", () => {
    for (const pgid of live) signal(-pgid, "SIGKILL");
  });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `cmd` as the leader of its own process group, output (both streams) appended to `logPath`, with a
 * watchdog for `cleanupDir` (see WATCHDOG). The process does not keep the test's event loop alive.
 */
export function spawnManaged(
  cmd: string,
  args: string[],
  opts: { logPath: string; env?: NodeJS.ProcessEnv; cwd?: string; cleanupDir?: string },
): ManagedProcess {
  installExitHook();
  const fd = fs.openSync(opts.logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${cmd}`);
  child.unref();
  live.add(pid);
  const watchdog = spawn(
    "sh",
    [
      "-c",
      WATCHDOG,
      WATCHDOG_NAME,
      String(process.pid),
      String(pid),
      opts.cleanupDir ?? "",
      KEEP_DIRS ? "1" : "0",
    ],
    {
      detached: true,
      stdio: "ignore",
    },
  );
  watchdog.unref();
  let exit: ManagedProcess["exit"] = null;
  const exited = new Promise<void>((resolve) => {
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      resolve();
    });
    child.on("error", () => {
      exit ??= { code: -1, signal: null };
      resolve();
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    pid,
    child,
    logPath: opts.logPath,
    get exit() {
      return exit;
    },
    logTail(bytes = 3000) {
      try {
        const text = fs.readFileSync(opts.logPath, "utf8");
        return text.slice(-bytes);
      } catch {
        return "";
      }
    },
    stop(timeoutMs = 20_000) {
      stopping ??= (async () => {
        if (watchdog.pid !== undefined) signal(-watchdog.pid, "SIGTERM"); // the shell reaps its `sleep` first
        if (exit === null) {
          signal(-pid, "SIGTERM");
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
          const first = await Promise.race([exited.then(() => "exited" as const), timeout]);
          clearTimeout(timer);
          if (first === "timeout") {
            signal(-pid, "SIGKILL");
            await exited;
          }
        }
        // Other members of the group, and processes started elsewhere that name the daemon's directory
        // (dockerd's containerd, in a group of its own), get a moment to follow their leader.
        const dir = opts.cleanupDir;
        const others = (): number[] => (dir !== undefined ? processesUsing(dir) : []);
        for (let i = 0; i < 50 && (groupAlive(pid) || others().length > 0); i++) {
          if (i === 20) for (const p of others()) signal(p, "SIGTERM");
          await sleep(100);
        }
        signal(-pid, "SIGKILL");
        for (const p of others()) signal(p, "SIGKILL");
        live.delete(pid);
      })();
      return stopping;
    },
  };
}

/** Polls `ready` every 100 ms until it returns true; fails early if `proc` exits, and after `timeoutMs`. */
export async function waitUntil(
  what: string,
  ready: () => boolean | Promise<boolean>,
  opts: { proc?: ManagedProcess; timeoutMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    let ok = false;
    try {
      ok = await ready();
    } catch {
      ok = false;
    }
    if (ok) return;
    const proc = opts.proc;
    if (proc?.exit) {
      throw new Error(
        `${what}: process ${proc.pid} exited (${JSON.stringify(proc.exit)}) before it was ready; ` +
          `log ${proc.logPath}:\n${proc.logTail()}`,
      );
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not ready after ${opts.timeoutMs ?? 30_000} ms${proc ? `; log:\n${proc.logTail()}` : ""}`,
      );
    }
    await sleep(100);
  }
}

/**
 * The command line that runs one of the sibling server scripts (token-server, fault-proxy) in a separate
 * process: through the tsx loader when running from TypeScript sources, directly when compiled to dist/.
 */
export function nodeScript(name: string): string[] {
  const self = fileURLToPath(import.meta.url);
  const ext = path.extname(self);
  const script = path.join(path.dirname(self), name + ext);
  return ext === ".ts" ? ["--import", import.meta.resolve("tsx"), script] : [script];
}

// --- HTTP over a unix socket -------------------------------------------------------------------------------

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request to an HTTP server on a unix socket; the body is collected, or streamed to `toFile`. */
export function unixRequest(
  socket: string,
  method: string,
  urlPath: string,
  opts: {
    body?: Buffer | string;
    headers?: http.OutgoingHttpHeaders;
    toFile?: string;
    timeoutMs?: number;
  } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: socket, method, path: urlPath, headers: { host: "d", ...opts.headers } },
      (res) => {
        const parts: Buffer[] = [];
        const status = res.statusCode ?? 0;
        if (opts.toFile !== undefined && status === 200) {
          const out = fs.createWriteStream(opts.toFile);
          res.pipe(out);
          out.on("finish", () => resolve({ status, headers: res.headers, body: Buffer.alloc(0) }));
          out.on("error", reject);
          res.on("error", reject);
          return;
        }
        res.on("data", (c: Buffer) => parts.push(c));
        res.on("end", () => resolve({ status, headers: res.headers, body: Buffer.concat(parts) }));
        res.on("error", reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 120_000, () => req.destroy(new Error(`${method} ${urlPath}: timeout`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

// --- the daemons -------------------------------------------------------------------------------------------

export interface Daemon {
  kind: "podman" | "docker";
  /** The daemon's own directory (roots, run dirs, socket, log); removed by stop(). */
  dir: string;
  /** The Docker Engine API socket. */
  socket: string;
  /** `unix://<socket>` */
  host: string;
  /** For clients of this daemon: DOCKER_HOST (and CONTAINER_HOST for podman). */
  env: Record<string, string>;
  logPath: string;
  pid: number;
  /** Runs the daemon's own CLI against it (`podman` with this root, or `docker -H`). Throws unless exit 0. */
  cli(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** One Engine API request on the socket, e.g. api("GET", "/v1.41/images/json"). */
  api(
    method: string,
    urlPath: string,
    opts?: { body?: Buffer | string; headers?: http.OutgoingHttpHeaders; toFile?: string },
  ): Promise<HttpResult>;
  stop(): Promise<void>;
}

export const PODMAN_COMMANDS = ["podman", "conmon"];
export const DOCKERD_COMMANDS = ["dockerd", "docker", "containerd"];

/** Why the podman service cannot run here, or null. */
export function podmanUnavailable(): string | null {
  return unavailable(PODMAN_COMMANDS, "podman");
}

/** Why dockerd cannot run here, or null. */
export function dockerdUnavailable(): string | null {
  return unavailable(DOCKERD_COMMANDS, "docker.io");
}

async function ping(socket: string): Promise<boolean> {
  if (!fs.existsSync(socket)) return false;
  const r = await unixRequest(socket, "GET", "/_ping", { timeoutMs: 2000 });
  return r.status === 200;
}

function makeDaemon(
  kind: Daemon["kind"],
  dir: string,
  socket: string,
  proc: ManagedProcess,
  env: Record<string, string>,
  cli: Daemon["cli"],
): Daemon {
  let stopping: Promise<void> | undefined;
  return {
    kind,
    dir,
    socket,
    host: `unix://${socket}`,
    env,
    logPath: proc.logPath,
    pid: proc.pid,
    cli,
    api: (method, urlPath, opts = {}) => unixRequest(socket, method, urlPath, opts),
    stop() {
      stopping ??= (async () => {
        await proc.stop();
        await removeTree(dir);
      })();
      return stopping;
    },
  };
}

/**
 * podman's Docker-compatible API service as root, with its own storage root, run root, libpod tmp dir and
 * containers.conf (cgroupfs, file events, no systemd), storage driver vfs by default (no mounts to clean up).
 * `cli()` runs podman directly on the same storage (not through the service).
 */
export async function startPodman(opts: { storageDriver?: "vfs" | "overlay" } = {}): Promise<Daemon> {
  const dir = shortTempDir("sp-");
  let daemon: Daemon | undefined;
  try {
    const driver = opts.storageDriver ?? "vfs";
    const socket = path.join(dir, "podman.sock");
    const conf = path.join(dir, "containers.conf");
    fs.writeFileSync(
      conf,
      [
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = "${dir}/events.log"`,
        "",
      ].join("\n"),
    );
    const env: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_CONF: conf };
    delete env.CONTAINER_HOST;
    delete env.DOCKER_HOST;
    const global = [
      "--root",
      path.join(dir, "root"),
      "--runroot",
      path.join(dir, "run"),
      "--tmpdir",
      path.join(dir, "tmp"),
      "--storage-driver",
      driver,
    ];
    const proc = spawnManaged("podman", [...global, "system", "service", "--time=0", `unix://${socket}`], {
      logPath: path.join(dir, "podman.log"),
      env,
      cleanupDir: dir,
    });
    daemon = makeDaemon(
      "podman",
      dir,
      socket,
      proc,
      { CONTAINER_HOST: `unix://${socket}`, DOCKER_HOST: `unix://${socket}` },
      (args, o = {}) => run("podman", [...global, ...args], { ...o, env: { ...env, ...o.env } }),
    );
    await waitUntil("podman system service", () => ping(socket), { proc });
    return daemon;
  } catch (e) {
    if (daemon) await daemon.stop();
    else discardDir(dir);
    throw e;
  }
}

/**
 * dockerd (with the containerd it starts itself) with its own data root, exec root, pid file, daemon.json
 * and trust key, no iptables and no bridge. The storage driver is dockerd's default (overlay2)
 * unless given; stop() unmounts whatever is left under the directory.
 */
export async function startDockerd(opts: { storageDriver?: string } = {}): Promise<Daemon> {
  const dir = shortTempDir("sd-");
  let daemon: Daemon | undefined;
  try {
    const socket = path.join(dir, "docker.sock");
    const daemonJson = path.join(dir, "daemon.json");
    // The trust key would otherwise be created as /etc/docker/key.json.
    fs.writeFileSync(
      daemonJson,
      JSON.stringify({ "deprecated-key-path": path.join(dir, "key.json") }) + "\n",
    );
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.DOCKER_HOST;
    const args = [
      "--config-file",
      daemonJson,
      "--data-root",
      path.join(dir, "root"),
      "--exec-root",
      path.join(dir, "exec"),
      "--pidfile",
      path.join(dir, "docker.pid"),
      "-H",
      `unix://${socket}`,
      "--iptables=false",
      "--ip6tables=false",
      "--bridge=none",
      ...(opts.storageDriver !== undefined ? ["--storage-driver", opts.storageDriver] : []),
    ];
    const proc = spawnManaged("dockerd", args, {
      logPath: path.join(dir, "dockerd.log"),
      env,
      cleanupDir: dir,
    });
    daemon = makeDaemon("docker", dir, socket, proc, { DOCKER_HOST: `unix://${socket}` }, (a, o = {}) =>
      run("docker", ["-H", `unix://${socket}`, ...a], { ...o, env: { ...env, ...o.env } }),
    );
    await waitUntil("dockerd", () => ping(socket), { proc, timeoutMs: 60_000 });
    return daemon;
  } catch (e) {
    if (daemon) await daemon.stop();
    else discardDir(dir);
    throw e;
  }
}
