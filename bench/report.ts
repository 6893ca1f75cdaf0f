// Benchmark report: reads the raw measurements scripts/bench.sh collected, prints Markdown tables (the format of
// BENCHMARKS.md) and writes the machine-readable results as JSON.
//
//   node dist/bench/report.js RUNS.tsv GROUPS.tsv RESULTS.json [KEY=VALUE...]
//
// RUNS.tsv, one measured run a line: group, tool, role (ours | peer | prototype), run number, wall seconds, user
// seconds, system seconds, peak RSS in KiB (GNU time's %e %U %S %M). GROUPS.tsv, one benchmark a line: group,
// title, input bytes, entries (0 when not applicable), notes. KEY=VALUE pairs are recorded under "environment".
// Throughputs use MB = 10^6 bytes. Ratios are always ours (or a prototype) divided by a peer measured in the same
// run: speed ratio = our throughput / peer throughput (> 1: we are faster), CPU and RSS ratios = ours / peer
// (< 1: we use less).

import * as fs from "node:fs";
import * as os from "node:os";

type Role = "ours" | "peer" | "prototype";

interface Run {
  run: number;
  wall: number;
  user: number;
  sys: number;
  cpu: number;
  rssKiB: number;
}

interface ToolSummary {
  tool: string;
  role: Role;
  runs: Run[];
  wallBest: number;
  wallMedian: number;
  cpuMedian: number;
  rssMaxMB: number;
  mbPerSecBest: number;
  mbPerSecMedian: number;
  entriesPerSecBest: number | null;
}

interface Ratio {
  subject: string;
  peer: string;
  speedBest: number;
  speedMedian: number;
  cpu: number;
  rss: number;
}

interface Group {
  id: string;
  title: string;
  bytes: number;
  entries: number | null;
  notes: string;
  tools: ToolSummary[];
  ratios: Ratio[];
}

const FSVERITY_TARGET = 0.9;
const RSS_LIMIT_MB = 200;
/** The EROFS step may add at most this fraction to pull wall time (issue 5). */
const EROFS_SHARE_TARGET = 0.05;
/** `stratum mount` wall time limit in seconds (issue 5). */
const MOUNT_TARGET_S = 0.1;
/** Pull wall-time targets: at most this fraction of each peer's time. */
const PULL_TARGETS: Record<string, number> = { "skopeo copy + umoci unpack": 0.5, "podman pull": 0.7 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function readTsv(file: string): string[][] {
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.split("\t"));
}

function num(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n)) throw new Error(`bad ${what}: ${JSON.stringify(text)}`);
  return n;
}

function isRole(s: string): s is Role {
  return s === "ours" || s === "peer" || s === "prototype";
}

function cpuModel(): string {
  try {
    const line = fs
      .readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    if (line !== undefined) return line.slice(line.indexOf(":") + 1).trim();
  } catch {
    // fall through
  }
  return os.cpus()[0]?.model ?? "unknown";
}

function buildGroups(runsFile: string, groupsFile: string): Group[] {
  const byGroup = new Map<string, Map<string, { role: Role; runs: Run[] }>>();
  for (const [group, tool, role, run, wall, user, sys, rss] of readTsv(runsFile)) {
    if (!isRole(role)) throw new Error(`bad role ${role}`);
    const tools = byGroup.get(group) ?? new Map<string, { role: Role; runs: Run[] }>();
    byGroup.set(group, tools);
    const t = tools.get(tool) ?? { role, runs: [] };
    tools.set(tool, t);
    const u = num(user, "user time");
    const s = num(sys, "system time");
    t.runs.push({
      run: num(run, "run"),
      wall: num(wall, "wall time"),
      user: u,
      sys: s,
      cpu: Math.round((u + s) * 100) / 100,
      rssKiB: num(rss, "RSS"),
    });
  }
  const groups: Group[] = [];
  for (const [id, title, bytesText, entriesText, notes] of readTsv(groupsFile)) {
    const bytes = num(bytesText, "bytes");
    const entries = num(entriesText, "entries") || null;
    const tools: ToolSummary[] = [];
    for (const [tool, { role, runs }] of byGroup.get(id) ?? []) {
      // A 0.00 s wall time (GNU time has 10 ms resolution) would give an infinite rate; count it as 10 ms.
      const walls = runs.map((r) => Math.max(r.wall, 0.01));
      const wallBest = Math.min(...walls);
      const wallMedian = median(walls);
      tools.push({
        tool,
        role,
        runs,
        wallBest,
        wallMedian,
        cpuMedian: median(runs.map((r) => r.cpu)),
        rssMaxMB: (Math.max(...runs.map((r) => r.rssKiB)) * 1024) / 1e6,
        mbPerSecBest: bytes / 1e6 / wallBest,
        mbPerSecMedian: bytes / 1e6 / wallMedian,
        entriesPerSecBest: entries === null ? null : entries / wallBest,
      });
    }
    const ratios: Ratio[] = [];
    for (const subject of tools.filter((t) => t.role !== "peer")) {
      for (const peer of tools.filter((t) => t.role === "peer")) {
        ratios.push({
          subject: subject.tool,
          peer: peer.tool,
          speedBest: peer.wallBest / subject.wallBest,
          speedMedian: peer.wallMedian / subject.wallMedian,
          cpu: subject.cpuMedian / Math.max(peer.cpuMedian, 0.01),
          rss: subject.rssMaxMB / peer.rssMaxMB,
        });
      }
    }
    groups.push({ id, title, bytes, entries, notes, tools, ratios });
  }
  return groups;
}

const f1 = (x: number): string => x.toFixed(1);
const f2 = (x: number): string => x.toFixed(2);
const int = (x: number): string => Math.round(x).toLocaleString("en-US");

/** A Markdown table; the first `textColumns` columns are left-aligned, the others (numbers) right-aligned. */
function table(header: string[], rows: string[][], textColumns = 1): string {
  const align = header.map((_, i) => (i < textColumns ? ":--" : "--:"));
  return [header, align, ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
}

function renderGroup(g: Group): string {
  const withEntries = g.entries !== null;
  const runs = Math.max(...g.tools.map((t) => t.runs.length));
  const size =
    g.bytes >= 1e9 ? `${f2(g.bytes / 1e9)} GB` : g.bytes >= 1e6 ? `${f1(g.bytes / 1e6)} MB` : `${g.bytes} B`;
  const lines = [`### ${g.title}`, ""];
  lines.push(
    `${size} (${int(g.bytes)} bytes)${withEntries ? `, ${int(g.entries ?? 0)} entries` : ""}; ${runs} run${runs === 1 ? "" : "s"} of each tool.` +
      (g.notes ? ` ${g.notes}` : ""),
    "",
  );
  const header = ["Tool", "Role", "MB/s best", "MB/s median"];
  if (withEntries) header.push("entries/s best");
  header.push("wall best (s)", "wall median (s)", "CPU median (s)", "peak RSS (MB)");
  lines.push(
    table(
      header,
      g.tools.map((t) => {
        const row = [`\`${t.tool}\``, t.role, f1(t.mbPerSecBest), f1(t.mbPerSecMedian)];
        if (withEntries) row.push(int(t.entriesPerSecBest ?? 0));
        row.push(f2(t.wallBest), f2(t.wallMedian), f2(t.cpuMedian), f1(t.rssMaxMB));
        return row;
      }),
      2,
    ),
    "",
  );
  lines.push(
    table(
      ["Ratio", "speed (best)", "speed (median)", "CPU", "peak RSS"],
      g.ratios.map((r) => [
        `\`${r.subject}\` ÷ \`${r.peer}\``,
        `${f2(r.speedBest)}×`,
        `${f2(r.speedMedian)}×`,
        `${f2(r.cpu)}×`,
        `${f2(r.rss)}×`,
      ]),
    ),
    "",
  );
  return lines.join("\n");
}

interface Check {
  name: string;
  value: string;
  target: string;
  ok: boolean;
  /** Within the target but close to it (RSS above 90 % of the limit). */
  near?: boolean;
}

function checks(groups: Group[], environment: Record<string, string>): Check[] {
  const out: Check[] = [];
  const fsv = groups.find((g) => g.id === "fsverity");
  const fsvRatio = fsv?.ratios.find((r) => fsv.tools.find((t) => t.tool === r.subject)?.role === "ours");
  if (fsvRatio !== undefined) {
    out.push({
      name: `fs-verity digest speed, ours ÷ \`${fsvRatio.peer}\` (best)`,
      value: `${f2(fsvRatio.speedBest)}×`,
      target: `≥ ${FSVERITY_TARGET}×`,
      ok: fsvRatio.speedBest >= FSVERITY_TARGET,
    });
  }
  // Peak RSS on the largest input, among the tar imports and the pull.
  const tars = groups.filter((g) => g.id.startsWith("tar-") || g.id.startsWith("pull-"));
  const largest = tars.sort((a, b) => b.bytes - a.bytes)[0];
  const ours = largest?.tools.find((t) => t.role === "ours");
  if (largest !== undefined && ours !== undefined) {
    out.push({
      name: `peak RSS of \`${ours.tool}\` on the largest input (${f2(largest.bytes / 1e9)} GB)`,
      value: `${f1(ours.rssMaxMB)} MB`,
      target: `≤ ~${RSS_LIMIT_MB} MB`,
      ok: ours.rssMaxMB <= RSS_LIMIT_MB,
      near: ours.rssMaxMB > 0.9 * RSS_LIMIT_MB,
    });
  }
  // Pull wall time against each peer (issue 4): ours ÷ peer wall time, median runs.
  const pull = groups.find((g) => g.id === "pull-debian");
  for (const r of pull?.ratios ?? []) {
    const limit = PULL_TARGETS[r.peer];
    if (limit === undefined) continue;
    const wall = 1 / r.speedMedian;
    out.push({
      name: `pull wall time, \`${r.subject}\` ÷ \`${r.peer}\` (median)`,
      value: `${f2(wall)}×`,
      target: `≤ ${limit}×`,
      ok: wall <= limit,
    });
  }
  // The EROFS step's share of pull time: the pull with it ÷ the pull without it, minus one (median runs).
  // The EROFS step's share of pull time. Preferred: the pull's own account (its --json timings: time added after
  // the last layer was durable ÷ the pull's time), which the VM's run-to-run drift does not blur. Also shown: the
  // two pulls of each run (with and without the step, back to back) compared pairwise.
  const shareGroup = groups.find((g) => g.id === "pull-erofs");
  const withStep = shareGroup?.tools.find((t) => t.role === "ours");
  const without = shareGroup?.tools.find((t) => t.role === "peer");
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const pct = (xs: number[]): string => xs.map((x) => f1(x * 100)).join(", ");
  const pairs =
    withStep === undefined || without === undefined
      ? []
      : withStep.runs
          .map((r) => {
            const w = without.runs.find((x) => x.run === r.run);
            return w === undefined ? undefined : r.wall / w.wall - 1;
          })
          .filter((x): x is number => x !== undefined);
  const inProcess = (environment.erofsShares ?? "")
    .split(",")
    .filter((x) => x !== "")
    .map(Number);
  if (inProcess.length > 0) {
    const added = median(inProcess);
    out.push({
      name: `time the EROFS step adds to \`stratum pull\` (its --json timings, median of ${inProcess.length})`,
      value: `${f1(added * 100)} % (runs: ${pct(inProcess)}; with ÷ without the step per run: ${pct(pairs)})`,
      target: `< ${EROFS_SHARE_TARGET * 100} %`,
      ok: added < EROFS_SHARE_TARGET,
      near: added > 0.8 * EROFS_SHARE_TARGET,
    });
  } else if (pairs.length > 0) {
    const added = median(pairs);
    out.push({
      name: `time the EROFS step adds to \`stratum pull\` (÷ \`stratum pull --skip-erofs\` of the same run, median of ${pairs.length})`,
      value: `${f1(added * 100)} % (runs: ${pct(pairs)})`,
      target: `< ${EROFS_SHARE_TARGET * 100} %`,
      ok: added < EROFS_SHARE_TARGET,
    });
  }
  const mount = groups.find((g) => g.id === "mount")?.tools.find((t) => t.role === "ours");
  if (mount !== undefined)
    out.push({
      name: `\`${mount.tool}\` wall time (median)`,
      value: `${Math.round(mount.wallMedian * 1000)} ms`,
      target: `< ${MOUNT_TARGET_S * 1000} ms`,
      ok: mount.wallMedian < MOUNT_TARGET_S,
    });
  return out;
}

function main(argv: string[]): number {
  const [runsFile, groupsFile, jsonFile, ...kv] = argv;
  if (runsFile === undefined || groupsFile === undefined || jsonFile === undefined) {
    process.stderr.write(
      "usage: node dist/bench/report.js RUNS.tsv GROUPS.tsv RESULTS.json [KEY=VALUE...]\n",
    );
    return 2;
  }
  const environment: Record<string, string> = {};
  for (const pair of kv) {
    const i = pair.indexOf("=");
    if (i > 0) environment[pair.slice(0, i)] = pair.slice(i + 1);
  }
  const machine = {
    nproc: os.availableParallelism(),
    cpu: cpuModel(),
    ramBytes: os.totalmem(),
    kernel: os.release(),
    node: process.version,
  };
  const groups = buildGroups(runsFile, groupsFile);
  const results = checks(groups, environment);
  const date = new Date().toISOString().slice(0, 10);
  fs.writeFileSync(
    jsonFile,
    JSON.stringify({ date, machine, environment, groups, checks: results }, null, 2) + "\n",
  );

  const out: string[] = [];
  out.push(
    `## ${date}`,
    "",
    `Machine: ${machine.nproc} CPUs (${machine.cpu}), ${f1(machine.ramBytes / 2 ** 30)} GiB RAM, ` +
      `Linux ${machine.kernel}, Node ${machine.node}.`,
  );
  if (environment.fs !== undefined) out.push(`Filesystem: ${environment.fs}.`);
  out.push("");
  for (const g of groups) out.push(renderGroup(g));
  if (results.length > 0) {
    out.push("### Targets", "");
    out.push(
      table(
        ["Check", "measured", "target", "status"],
        results.map((c) => [
          c.name,
          c.value,
          c.target,
          !c.ok ? "**FAIL**" : c.near ? "ok, **near the limit**" : "ok",
        ]),
        1,
      ),
      "",
    );
  }
  process.stdout.write(out.join("\n"));
  return 0;
}

process.exitCode = main(process.argv.slice(2));
