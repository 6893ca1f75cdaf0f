// Pull progress on stderr. On a terminal: one line per layer redrawn in place, like `docker pull` (short digest,
// state, bytes of total, rate, a bar). Elsewhere: one plain line per state change, nothing periodic, so logs stay
// short. Quiet: nothing.

import type { PullEvent } from "../oci/pull.ts";
import { formatBytes } from "./output.ts";

interface LayerLine {
  digest: string;
  size: number;
  state: string;
  bytes: number;
  started: number;
}

export type ProgressMode = "tty" | "lines" | "quiet";

export function progressMode(
  quiet: boolean | undefined,
  stream: NodeJS.WriteStream = process.stderr,
): ProgressMode {
  if (quiet) return "quiet";
  return stream.isTTY ? "tty" : "lines";
}

function short(digest: string): string {
  return digest.replace(/^sha(256|512):/, "").slice(0, 12);
}

export class PullProgress {
  private readonly layers: LayerLine[] = [];
  private drawn = 0;
  /** Layer state changed since the last draw (tty). */
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly mode: ProgressMode,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  readonly onEvent = (e: PullEvent): void => {
    if (this.mode === "quiet") return;
    switch (e.kind) {
      case "resolved":
        this.line(`manifest ${e.manifestDigest} (${e.layers} layers)`);
        break;
      case "layer": {
        const l = (this.layers[e.index] ??= {
          digest: e.digest,
          size: e.size,
          state: e.state,
          bytes: 0,
          started: Date.now(),
        });
        if (e.state === "downloading") l.started = Date.now();
        l.state = e.state === "present" ? "already present" : e.state;
        if (e.state === "done") l.bytes = l.size;
        if (this.mode === "lines") {
          if (e.state !== "waiting") this.line(`${short(e.digest)}: ${l.state} (${formatBytes(e.size)})`);
        } else this.schedule();
        break;
      }
      case "progress": {
        const l = this.layers[e.index];
        if (l) l.bytes = e.bytes;
        if (this.mode === "tty") this.schedule();
        break;
      }
      case "image":
        this.line(
          `composefs ${e.boot ? "boot image" : "image"} ${e.erofs.slice(0, 12)}: ${e.built ? "written" : "already present"}`,
        );
        break;
      case "committed":
        this.finish();
        this.line(`tagged ${e.tag}`);
        break;
    }
  };

  /** Draw the final state and stop redrawing. Nothing to draw when the block on screen is current. */
  finish(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.mode === "tty" && this.dirty) this.draw();
    this.drawn = 0;
  }

  private line(text: string): void {
    if (this.mode === "tty") {
      this.finish();
      this.stream.write(`${text}\n`);
    } else this.stream.write(`${text}\n`);
  }

  private schedule(): void {
    this.dirty = true;
    if (this.timer === null)
      this.timer = setTimeout(() => {
        this.timer = null;
        this.draw();
      }, 100);
  }

  private draw(): void {
    const cols = this.stream.columns || 100;
    let text = this.drawn > 0 ? `\x1b[${this.drawn}A` : "";
    let count = 0;
    this.dirty = false;
    for (const l of this.layers) {
      if (!l) continue;
      count++;
      let s = `${short(l.digest)}: ${l.state.padEnd(15)}`;
      if (l.state === "downloading") {
        const secs = Math.max((Date.now() - l.started) / 1000, 0.001);
        const width = 30;
        const filled = l.size > 0 ? Math.min(width, Math.round((l.bytes / l.size) * width)) : 0;
        s += ` [${"=".repeat(filled)}${" ".repeat(width - filled)}] ${formatBytes(l.bytes)}/${formatBytes(l.size)}`;
        s += ` ${formatBytes(l.bytes / secs)}/s`;
      } else if (l.state !== "waiting") s += ` ${formatBytes(l.size)}`;
      text += `\x1b[2K${s.slice(0, cols - 1)}\n`;
    }
    this.drawn = count;
    this.stream.write(text);
  }
}
