// From a parsed pull SOURCE (src/oci/reference.ts) to the ImageSource that serves it. Each transport module is
// loaded only when its kind of source is used.

import type { PullSource } from "../oci/reference.ts";
import type { ImageSource } from "./source.ts";

export interface OpenSourceOptions {
  /** Registries: allow plain HTTP, and TLS without certificate checks, for a registry not on loopback. */
  insecure?: boolean;
  /** Registries: `USER[:PASSWORD]` given on the command line. */
  creds?: string;
  /** Registries: a directory of CA certificates (and client certificate/key) to use. */
  certDir?: string;
  /** Registries: blobs fetched at once. */
  concurrency?: number;
  /** Daemons: where the `save` archive is spooled. */
  tmpdir?: string;
}

export async function openSource(source: PullSource, opts: OpenSourceOptions = {}): Promise<ImageSource> {
  switch (source.transport) {
    case "docker": {
      const [{ RegistryImageSource }, { parseCredsOption }] = await Promise.all([
        import("./registry/source.ts"),
        import("./registry/credentials.ts"),
      ]);
      const creds = opts.creds !== undefined ? parseCredsOption(opts.creds) : undefined;
      return new RegistryImageSource(source, {
        insecure: opts.insecure,
        tlsVerify: opts.insecure !== true,
        credential: creds?.credential,
        username: creds?.username ?? source.user,
        certDir: opts.certDir,
        concurrency: opts.concurrency,
      });
    }
    case "dockerd":
    case "podman": {
      const { DaemonImageSource } = await import("./daemon.ts");
      return DaemonImageSource.open(source, { spoolDir: opts.tmpdir });
    }
    case "docker-archive": {
      const { DockerArchiveImageSource } = await import("./archive/docker-archive.ts");
      return DockerArchiveImageSource.openSource(source);
    }
    case "oci":
    case "oci-archive": {
      const { OciLayoutImageSource } = await import("./archive/oci-layout.ts");
      return OciLayoutImageSource.openSource(source);
    }
  }
}
