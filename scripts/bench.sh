#!/usr/bin/env bash
# `npm run bench`: stratum's benchmarks, each measured against a peer tool in the same run (BENCHMARKS.md).
#
#   1. fs-verity digest of a 512 MiB random file: FsVerityHasher (dist/bench/fsverity-digest.js) vs
#      `fsverity digest --compact`, page cache warm, digests compared.
#   2. tar import: `stratum import-tar` into a fresh repository vs `tar -xf` (with and without `sync -f`, since
#      stratum makes its objects durable with syncfs), and `sha256sum` and `openssl dgst -sha256` (floors: read +
#      hash; coreutils' SHA-256 is generic C, OpenSSL's uses the CPU's SHA extensions like Node does), on a
#      Debian bookworm minbase tar (mmdebstrap, cached in /var/cache/stratum-bench/) and a tar of /usr/share +
#      /usr/bin.
#   3. composefs images: the cs9-x86_64-developer conformance vector written from its dumpfile (checked against
#      the vector's sha256), and /usr/share read into a repository as objects + EROFS image vs `cp -a; sync -f`
#      and `mkfs.erofs`.
#   4. pull: a realistic three-layer Debian image (about 530 MB, cached in /var/cache/stratum-bench/) from a
#      loopback docker-registry: `stratum pull` vs `skopeo copy` to an OCI dir + `umoci unpack`, and
#      `podman pull` (both followed by `sync -f`). The same pull with `--skip-erofs` (the EROFS step's share),
#      then `stratum mount` of the pulled image vs `podman image mount`, and pull start to mounted image.
#
# Everything runs on a journaled ext4 in a sparse image file loop-mounted on a private temporary directory (the
# root filesystem here is ext4 without a journal, where creating many files is erratically slow); the image is
# unmounted and deleted on exit. Wall, user and system time and peak RSS come from GNU time. Needs root.
#
# Environment: BENCH_RUNS (default 3), BENCH_MOUNT_REPS (mounts per run, default 5), BENCH_STAGES (default "fsverity tar images pull"), BENCH_IMAGE_SIZE
# (default 8G), BENCH_TMP (default /tmp),
# BENCH_MIRROR (default: the first Debian archive URI for bookworm in the apt sources),
# BENCH_CACHE (default /var/cache/stratum-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_RUNS:-3}
MOUNT_REPS=${BENCH_MOUNT_REPS:-5}
STAGES=" ${BENCH_STAGES:-fsverity tar images pull} "
stage() { [[ $STAGES == *" $1 "* ]]; }
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-8G}
CACHE=${BENCH_CACHE:-/var/cache/stratum-bench}
SUITE=bookworm
FSV_SIZE=512M
FSV_LABEL="512 MiB"

log() { printf '%s\n' "bench: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (it creates, loop-mounts and removes an ext4 image, and runs mmdebstrap --mode=root)" >&2
  exit 1
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"

# --- Debian packages -----------------------------------------------------------------------------------------
packages=(time fsverity e2fsprogs erofs-utils mount util-linux tar coreutils openssl mmdebstrap psmisc skopeo umoci
  podman docker-registry curl python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
TIME=/usr/bin/time
[ -x "$TIME" ] || die "GNU time not found at $TIME"

# --- build: the bench programs run as compiled JavaScript so no TypeScript loader start-up is measured ---------
log "building (npm run build)"
npm run build --silent >&2
[ -f build/Release/stratum_sys.node ] || npm run install --silent >&2

# --- work directory, loop-mounted journaled ext4, cleanup ---------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/stratum-bench.XXXXXXXX")
[[ $WORK =~ [[:space:]] ]] && die "the work directory $WORK must not contain white space"
IMG=$WORK/fs.img
MNT=$WORK/mnt
RESULTS=$WORK/results
APP=$WORK/app
mkdir -p "$MNT" "$RESULTS" "$APP"
MOUNTED=0

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # Children of this script still running (only on interruption).
  local pids
  pids=$(jobs -pr)
  [ -n "$pids" ] && kill $pids 2>/dev/null
  if [ "$MOUNTED" = 1 ]; then
    if ! umount "$MNT" 2>/dev/null; then
      # Anything still using the private mount was started by this run; stop it and retry.
      fuser -km "$MNT" >/dev/null 2>&1
      sleep 1
      umount "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
  fi
  # mount -o loop sets autoclear; detach explicitly should the loop device still be attached.
  local dev
  for dev in $(losetup -l -j "$IMG" -O NAME -n 2>/dev/null); do
    log "detaching leftover loop device $dev"
    losetup -d "$dev"
  done
  [ -n "$(losetup -j "$IMG" 2>/dev/null)" ] && log "warning: loop device still attached to $IMG"
  rm -f "$IMG"
  rmdir "$MNT" 2>/dev/null
  if [ "$rc" = 0 ]; then
    # Keep only the results.
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +
    log "results: $RESULTS/results.json and $RESULTS/report.md (raw runs: $RESULTS/runs.tsv)"
  else
    rm -rf "$WORK/scratch"
    log "failed (status $rc); logs and partial results kept in $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a private copy of the build, so that a rebuild of the working tree during the run changes nothing here.
cp -a dist bin package.json "$APP"/
ln -s "$PWD/node_modules" "$PWD/build" "$APP"/
for f in dist/bench/fsverity-digest.js dist/bench/report.js dist/src/cli/main.js; do
  [ -f "$APP/$f" ] || die "missing $f after the build"
done
# NODE_EXTRA_CA_CERTS (set on some machines, this one included, to the system CA bundle) makes every Node
# process parse that bundle at start-up, about 50 ms here, before any of our code runs. The benches talk to
# loopback over plain HTTP, so the figures are taken without it, as on a host that does not set it.
STRATUM=("env" "-u" "NODE_EXTRA_CA_CERTS" "node" "$APP/bin/stratum.js")

log "creating a $IMAGE_SIZE journaled ext4 image in $WORK"
truncate -s "$IMAGE_SIZE" "$IMG"
mkfs.ext4 -q -F "$IMG"
mount -o loop "$IMG" "$MNT"
MOUNTED=1
LOOPDEV=$(losetup -l -j "$IMG" -O NAME -n | head -n1)
tune2fs -l "$LOOPDEV" | grep -q '^Filesystem features:.*has_journal' || die "the bench filesystem has no journal"
log "mounted $LOOPDEV on $MNT"
mkdir -p "$WORK/scratch"

RUNS_TSV=$RESULTS/runs.tsv
GROUPS_TSV=$RESULTS/groups.tsv
: >"$RUNS_TSV"
: >"$GROUPS_TSV"

# run_timed GROUP TOOL ROLE RUN CMD...: run CMD under GNU time (stdout to $WORK/out, stderr to $WORK/err) and
# record wall, user, system time and peak RSS.
run_timed() {
  local group=$1 tool=$2 role=$3 run=$4
  shift 4
  if ! "$TIME" -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err"; then
    cat "$WORK/err" >&2
    die "$tool failed (run $run of $group)"
  fi
  local wall user sys rss
  read -r wall user sys rss < <(tail -n1 "$WORK/time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$tool" "$role" "$run" "$wall" "$user" "$sys" "$rss" \
    >>"$RUNS_TSV"
  printf '  %-40s run %s: wall %6.2f s  user %6.2f s  sys %6.2f s  peak RSS %6.1f MB\n' \
    "$tool" "$run" "$wall" "$user" "$sys" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')" >&2
}

# Let writeback of the previous step finish so that it is not charged to the next one.
settle() { sync -f "$MNT"; }

# last_run: the measurements of the run recorded last ("wall user sys rss").
last_run() { tail -n1 "$RUNS_TSV" | cut -f5-8 | tr '\t' ' '; }
# copy_last_run GROUP TOOL ROLE: record the run measured last under another group and tool name too.
copy_last_run() {
  local run
  run=$(tail -n1 "$RUNS_TSV" | cut -f4)
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$run" "$(last_run | tr ' ' '\t')" >>"$RUNS_TSV"
}
# add_runs GROUP TOOL ROLE RUN "A" "B": record the sum of two measured runs (wall, user, sys; the larger RSS).
add_runs() {
  local -a a b
  read -r -a a <<<"$5"
  read -r -a b <<<"$6"
  awk -v g="$1" -v t="$2" -v r="$3" -v n="$4" \
    -v w="$(awk -v x="${a[0]}" -v y="${b[0]}" 'BEGIN { print x + y }')" \
    -v u="$(awk -v x="${a[1]}" -v y="${b[1]}" 'BEGIN { print x + y }')" \
    -v s="$(awk -v x="${a[2]}" -v y="${b[2]}" 'BEGIN { print x + y }')" \
    -v m="$(( a[3] > b[3] ? a[3] : b[3] ))" \
    'BEGIN { printf "%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%d\n", g, t, r, n, w, u, s, m }' >>"$RUNS_TSV"
}

# --- 1. fs-verity digest ------------------------------------------------------------------------------------
if stage fsverity; then
log "1/4 fs-verity digest: generating a $FSV_SIZE random file"
RANDOM_FILE=$MNT/random.bin
head -c "$FSV_SIZE" /dev/urandom >"$RANDOM_FILE"
settle
cat "$RANDOM_FILE" >/dev/null # warm-up read: page cache warm for every tool

# Prototype: a native addon hashing many 4 KiB blocks per call with Node's own OpenSSL (the proposal in
# BENCHMARKS.md). Only an informational row; skipped when no C compiler or Node headers are available.
FSV_PEER="fsverity digest --compact"
FSV_OURS="stratum digestFile (node)"
fsv_tools=("peer|$FSV_PEER|fsverity digest --compact $RANDOM_FILE"
  "ours|$FSV_OURS|env -u NODE_EXTRA_CA_CERTS node $APP/dist/bench/fsverity-digest.js $RANDOM_FILE")
expected=$(fsverity digest --compact "$RANDOM_FILE")
for run in $(seq 1 "$RUNS"); do
  for spec in "${fsv_tools[@]}"; do
    IFS='|' read -r role tool cmd <<<"$spec"
    # shellcheck disable=SC2086 # cmd holds no quoting-sensitive words (paths without spaces)
    run_timed fsverity "$tool" "$role" "$run" $cmd
    got=$(tr -d '\n' <"$WORK/out")
    [ "$got" = "$expected" ] || die "$tool printed digest '$got', expected $expected"
  done
done
printf 'fsverity\tfs-verity digest of a %s random file\t%s\t0\t%s\n' "$FSV_LABEL" "$(stat -c %s "$RANDOM_FILE")" \
  "Page cache warm; digests checked equal." \
  >>"$GROUPS_TSV"
rm -f "$RANDOM_FILE"
settle

fi

# --- 2. tar inputs ------------------------------------------------------------------------------------------
# The first Debian archive URI whose suites include $SUITE: deb822 .sources files first, then one-line lists.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function stanza(   i, n, s, u) {
        if (!found && types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
          n = split(suites, s, /[ \t]+/)
          for (i = 1; i <= n; i++) if (s[i] == suite) { split(uris, u, /[ \t]+/); print u[1]; found = 1; break }
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { stanza(); next }
      { key = tolower($1); $1 = ""; sub(/^[ \t]+/, "") }
      key == "types:" { types = $0 }
      key == "uris:" { uris = $0 }
      key == "suites:" { suites = $0 }
      key == "enabled:" { enabled = $0 }
      END { stanza() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
  done
}

MIRROR=${BENCH_MIRROR:-$(find_mirror | head -n1)}
mkdir -p "$CACHE"
if stage tar; then
MINBASE=
log "2/4 tar inputs: minbase $SUITE (mmdebstrap, cached in $CACHE)"
exec 9>"$CACHE/.lock"
flock 9
if [ -z "$MIRROR" ]; then
  log "warning: no Debian archive for $SUITE in the apt sources"
else
  # Cache key: the package list (names and versions) mmdebstrap would install now, from a simulated run.
  if mmdebstrap -v --variant=minbase --mode=root --simulate "$SUITE" /dev/null "$MIRROR" \
    >"$WORK/simulate.log" 2>&1; then
    sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' "$WORK/simulate.log" | sort -u >"$WORK/minbase.packages"
    [ -s "$WORK/minbase.packages" ] || die "mmdebstrap --simulate listed no packages (see $WORK/simulate.log)"
    key=$(sha256sum <"$WORK/minbase.packages" | cut -c1-16)
    MINBASE=$CACHE/minbase-$SUITE-$key.tar
    if [ -f "$MINBASE" ]; then
      log "reusing $MINBASE ($(wc -l <"$WORK/minbase.packages") packages)"
    else
      log "building $MINBASE with mmdebstrap ($(wc -l <"$WORK/minbase.packages") packages)"
      if mmdebstrap --variant=minbase --mode=root --format=tar "$SUITE" "$MINBASE.tmp" "$MIRROR" \
        >"$WORK/mmdebstrap.log" 2>&1; then
        cp "$WORK/minbase.packages" "${MINBASE%.tar}.packages"
        mv "$MINBASE.tmp" "$MINBASE"
      else
        rm -f "$MINBASE.tmp"
        tail -n 20 "$WORK/mmdebstrap.log" >&2
        die "mmdebstrap failed"
      fi
    fi
  else
    log "warning: mmdebstrap --simulate failed (offline?); falling back to the newest cached minbase tar"
    tail -n 5 "$WORK/simulate.log" >&2
  fi
fi
if [ -z "$MINBASE" ]; then
  MINBASE=$(ls -t "$CACHE"/minbase-"$SUITE"-*.tar 2>/dev/null | head -n1 || true)
  [ -n "$MINBASE" ] || log "warning: no minbase tar available; skipping that benchmark"
fi
flock -u 9

USR_TAR=$MNT/usr.tar
log "writing $USR_TAR (tar of /usr/share and /usr/bin)"
rc=0
tar -cf "$USR_TAR" -C / usr/share usr/bin 2>"$WORK/err" || rc=$?
# Exit status 1 is "some files differ" (changed while being read); the archive is still usable.
[ "$rc" -le 1 ] || {
  cat "$WORK/err" >&2
  die "tar -c of /usr failed"
}
settle

# --- 3. tar import: stratum vs tar -x, tar -x + sync, sha256sum ---------------------------------------------
bench_tar() {
  local group=$1 title=$2 file=$3
  local bytes entries run repo dest diffid sum
  bytes=$(stat -c %s "$file")
  entries=$(tar -tf "$file" | wc -l)
  log "3/4 $title: $bytes bytes, $entries entries"
  cat "$file" >/dev/null # page cache warm for every tool
  for run in $(seq 1 "$RUNS"); do
    repo=$MNT/repo
    "${STRATUM[@]}" --repo "$repo" init >/dev/null 2>&1
    settle
    run_timed "$group" "stratum import-tar" ours "$run" "${STRATUM[@]}" --repo "$repo" import-tar "$file" bench
    diffid=$(head -n1 "$WORK/out" | cut -d' ' -f1)
    rm -rf "$repo"
    settle

    dest=$MNT/extract
    mkdir "$dest"
    settle
    run_timed "$group" "tar -x" peer "$run" tar -xf "$file" -C "$dest"
    settle
    rm -rf "$dest"
    settle

    mkdir "$dest"
    settle
    run_timed "$group" "tar -x; sync -f" peer "$run" sh -c 'tar -xf "$1" -C "$2" && sync -f "$2"' sh "$file" "$dest"
    rm -rf "$dest"
    settle

    run_timed "$group" "sha256sum" peer "$run" sha256sum "$file"
    sum=sha256:$(cut -d' ' -f1 "$WORK/out")
    [ "$diffid" = "$sum" ] || die "stratum import-tar reported diff_id $diffid, sha256sum says $sum"

    run_timed "$group" "openssl dgst -sha256" peer "$run" openssl dgst -sha256 -r "$file"
    sum=sha256:$(cut -d' ' -f1 "$WORK/out")
    [ "$diffid" = "$sum" ] || die "stratum import-tar reported diff_id $diffid, openssl says $sum"
  done
  printf '%s\t%s\t%s\t%s\t%s\n' "$group" "$title" "$bytes" "$entries" \
    "Input in the page cache; fresh repository / empty directory per run. \`stratum import-tar\` ends with syncfs, hence the \`tar -x; sync -f\` peer." \
    >>"$GROUPS_TSV"
}

if [ -n "$MINBASE" ]; then bench_tar tar-minbase "tar import: Debian $SUITE minbase (mmdebstrap)" "$MINBASE"; fi
bench_tar tar-usr "tar import: /usr/share + /usr/bin" "$USR_TAR"
rm -f "$USR_TAR"
fi

if stage images; then
# --- 4. composefs images -----------------------------------------------------------------------------------
# a) The largest conformance vector written from its dumpfile; the image must match the vector's sha256.
#    C mkcomposefs is not packaged for Debian 12 and cannot run here: BENCHMARKS.md compares with the figure
#    measured for it on this machine class (0.46 s wall, 70 MiB peak RSS).
CONFORMANCE=$PWD/../shared/conformance/composefs
if [ -f "$CONFORMANCE/cs9-x86_64-developer.dump.gz" ]; then
  gunzip -c "$CONFORMANCE/cs9-x86_64-developer.dump.gz" >"$MNT/cs9.dump"
  cs9_entries=$(wc -l <"$MNT/cs9.dump")
  cs9_sha=$(node -e 'const v = require(process.argv[1]); const e = v.images.find((i) => i.input === "cs9-x86_64-developer.dump.gz" && i.version === null) ?? v.images.find((i) => i.input === "cs9-x86_64-developer.dump.gz"); console.log(e.image_sha256, e.version ?? "")' "$CONFORMANCE/vectors.json")
  read -r cs9_want cs9_version <<<"$cs9_sha"
  cs9_args=(mkcomposefs --from-file)
  [ -n "$cs9_version" ] && cs9_args+=("--min-version=$cs9_version" "--max-version=$cs9_version")
  log "4/4 composefs image from the cs9-x86_64-developer dumpfile: $cs9_entries entries"
  for run in $(seq 1 "$RUNS"); do
    run_timed images-cs9 "stratum mkcomposefs --from-file" ours "$run" "${STRATUM[@]}" "${cs9_args[@]}" "$MNT/cs9.dump" "$MNT/cs9.img"
    got=$(sha256sum "$MNT/cs9.img" | cut -d' ' -f1)
    [ "$got" = "$cs9_want" ] || die "cs9 image sha256 $got, the vector says $cs9_want"
  done
  printf '%s\t%s\t%s\t%s\t%s\n' images-cs9 "composefs image from the cs9-x86_64-developer dumpfile" \
    "$(stat -c %s "$MNT/cs9.img")" "$cs9_entries" \
    "Bytes are the image's size. C mkcomposefs (the peer) is not packaged for Debian 12; measured on this machine class it takes 0.46 s wall and 70 MiB peak RSS." \
    >>"$GROUPS_TSV"
  rm -f "$MNT/cs9.dump" "$MNT/cs9.img"
fi

# b) A real directory tree into a repository: every file's content stored as an object (digest computed while
#    copying), the EROFS image written and linked, syncfs. Peers: cp -a of the same tree (the copy), with sync,
#    and mkfs.erofs (erofs-utils: a full EROFS image with the file data, uncompressed).
IMG_SRC=/usr/share
img_entries=$(find "$IMG_SRC" | wc -l)
img_bytes=$(du -sb --apparent-size "$IMG_SRC" | cut -f1)
log "4/4 directory to image: $IMG_SRC, $img_entries entries, $img_bytes bytes"
tar -cf - "$IMG_SRC" 2>/dev/null | cat >/dev/null # page cache warm
for run in $(seq 1 "$RUNS"); do
  repo=$MNT/repo
  "${STRATUM[@]}" --repo "$repo" init >/dev/null 2>&1
  settle
  run_timed images-dir "stratum create-image" ours "$run" "${STRATUM[@]}" --repo "$repo" create-image "$IMG_SRC" bench
  rm -rf "$repo"
  settle
  run_timed images-dir "cp -a; sync -f" peer "$run" sh -c 'cp -a "$1" "$2" && sync -f "$2"' sh "$IMG_SRC" "$MNT/copy"
  rm -rf "$MNT/copy"
  settle
  run_timed images-dir "mkfs.erofs" peer "$run" mkfs.erofs "$MNT/full.erofs" "$IMG_SRC"
  rm -f "$MNT/full.erofs"
  settle
done
printf '%s\t%s\t%s\t%s\t%s\n' images-dir "directory to composefs image with objects: $IMG_SRC" "$img_bytes" "$img_entries" \
  "Source in the page cache; fresh repository per run; create-image ends with syncfs, hence the sync in the cp peer." \
  >>"$GROUPS_TSV"

fi

# --- 5. pull: a realistic multi-layer image from a loopback registry -----------------------------------------
# The image: a Debian rootfs (mmdebstrap minbase plus compilers, Python with numpy, perl, git: about 530 MB),
# split into three gzip layers (everything but /usr/lib and /usr/share; /usr/lib; /usr/share), built with umoci
# and cached in $CACHE. It is pushed to a plain docker-registry on a free loopback port whose storage is on the
# bench filesystem. Each run starts from an empty repository / directory / podman root on the same filesystem:
#   stratum pull                 (ends with syncfs: every object and stream durable)
#   skopeo copy to an OCI dir, then umoci unpack, then sync -f
#   podman pull (overlay storage, own --root), then sync -f
PULL_PACKAGES=python3,python3-numpy,perl,git,gcc,libc6-dev,vim-tiny,iproute2
if stage pull; then
  for tool in skopeo umoci podman docker-registry; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
  done
  [ -n "$MIRROR" ] || die "no Debian archive for $SUITE in the apt sources: cannot build the pull image"
  exec 9>"$CACHE/.lock"
  flock 9
  key=$(printf '%s %s' "$SUITE" "$PULL_PACKAGES" | sha256sum | cut -c1-16)
  BIG_TAR=$CACHE/pull-$SUITE-$key.tar
  BIG_OCI=$CACHE/pull-$SUITE-$key.oci
  if [ ! -f "$BIG_TAR" ]; then
    log "5/5 building $BIG_TAR with mmdebstrap (minbase + $PULL_PACKAGES)"
    mmdebstrap --variant=minbase --mode=root --format=tar --include="$PULL_PACKAGES" "$SUITE" "$BIG_TAR.tmp" "$MIRROR" \
      >"$WORK/mmdebstrap-pull.log" 2>&1 || {
      rm -f "$BIG_TAR.tmp"
      tail -n 20 "$WORK/mmdebstrap-pull.log" >&2
      die "mmdebstrap failed"
    }
    mv "$BIG_TAR.tmp" "$BIG_TAR"
  fi
  if [ ! -f "$BIG_OCI/index.json" ]; then
    log "5/5 splitting it into three layers and building $BIG_OCI with umoci"
    root=$MNT/pull-rootfs
    mkdir -p "$root"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$BIG_TAR" -C "$root"
    lt() { tar --numeric-owner --xattrs --xattrs-include='*' --sort=name --format=posix -C "$root" -cf "$@"; }
    lt "$MNT/l1.tar" --exclude=./usr/lib --exclude=./usr/share .
    lt "$MNT/l2.tar" ./usr/lib
    lt "$MNT/l3.tar" ./usr/share
    rm -rf "$root" "$BIG_OCI.tmp"
    umoci init --layout "$BIG_OCI.tmp"
    umoci new --image "$BIG_OCI.tmp:bench"
    umoci config --image "$BIG_OCI.tmp:bench" --config.cmd /bin/bash
    for l in 1 2 3; do umoci raw add-layer --image "$BIG_OCI.tmp:bench" "$MNT/l$l.tar"; done
    umoci gc --layout "$BIG_OCI.tmp"
    rm -f "$MNT"/l[123].tar
    mv "$BIG_OCI.tmp" "$BIG_OCI"
  fi
  flock -u 9

  # The registry: plain, loopback, a free port, storage on the bench filesystem.
  REG=$MNT/registry
  mkdir -p "$REG/data"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog: { level: warn, accesslog: { disabled: true } }\nstorage:\n  filesystem: { rootdirectory: %s }\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$REG/data" "$port" >"$REG/config.yml"
  docker-registry serve "$REG/config.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null || die "docker-registry did not start (see $WORK/registry.log)"
  IMAGE_REF=127.0.0.1:$port/bench/debian:latest
  log "5/5 pushing the image to $IMAGE_REF"
  skopeo copy --quiet --dest-tls-verify=false "oci:$BIG_OCI:bench" "docker://$IMAGE_REF"
  pull_bytes=$(node -e '
    const fs = require("fs"), p = require("path"), d = process.argv[1];
    const blob = (x) => p.join(d, "blobs", ...x.split(":"));
    const idx = JSON.parse(fs.readFileSync(p.join(d, "index.json")));
    const m = JSON.parse(fs.readFileSync(blob(idx.manifests[0].digest)));
    const c = JSON.parse(fs.readFileSync(blob(m.config.digest)));
    let n = 0; for (const l of m.layers) n += l.size;
    console.log(n, m.layers.length, c.rootfs.diff_ids.join(","));' "$BIG_OCI")
  read -r pull_compressed pull_layers pull_diffids <<<"$pull_bytes"
  pull_entries=$(tar -tf "$BIG_TAR" | wc -l)
  log "5/5 pull: $pull_layers layers, $pull_compressed bytes compressed, $pull_entries entries"
  # Warm the registry's blobs into the page cache once, for every tool alike.
  cat "$REG"/data/docker/registry/v2/blobs/sha256/*/*/data >/dev/null
  mkdir -p "$MNT/mnt"
  erofs_shares=()
  podman_=(podman --root "$MNT/podman/root" --runroot "$MNT/podman/run" --storage-driver overlay)
  for run in $(seq 1 "$RUNS"); do
    repo=$MNT/repo
    "${STRATUM[@]}" --repo "$repo" init >/dev/null 2>&1
    settle
    run_timed pull-debian "stratum pull" ours "$run" "${STRATUM[@]}" --repo "$repo" pull -q --json "docker://$IMAGE_REF" bench
    got=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).layers.map((l) => l.diffId).join(","))' "$WORK/out")
    [ "$got" = "$pull_diffids" ] || die "stratum pull stored diff_ids $got, the image has $pull_diffids"
    copy_last_run pull-erofs "stratum pull" ours
    # The pull's own account of the EROFS step (docs/pull.md "Timings"): time added after the last layer was
    # durable, as a share of the pull.
    erofs_shares+=("$(node -e 'const t = JSON.parse(require("fs").readFileSync(process.argv[1])).timings; console.log((t.erofsAdded / t.total).toFixed(4))' "$WORK/out")")
    pull_row=$(last_run)
    # Mount (issue 5): the image just pulled, several times; the first mount also completes "pull to mounted".
    for m in $(seq 1 "$MOUNT_REPS"); do
      run_timed mount "stratum mount" ours "$run" "${STRATUM[@]}" --repo "$repo" mount bench "$MNT/mnt"
      [ "$m" = 1 ] && add_runs pull-mount "stratum pull + stratum mount" ours "$run" "$pull_row" "$(last_run)"
      [ -f "$MNT/mnt/usr/bin/python3" ] || die "stratum mount: /usr/bin/python3 is not in the mounted image"
      "${STRATUM[@]}" --repo "$repo" unmount "$MNT/mnt" >/dev/null 2>&1 || die "stratum unmount failed"
    done
    rm -rf "$repo"
    settle

    # The same pull without the EROFS step: the step's share of pull time.
    "${STRATUM[@]}" --repo "$repo" init >/dev/null 2>&1
    settle
    run_timed pull-erofs "stratum pull --skip-erofs" peer "$run" \
      "${STRATUM[@]}" --repo "$repo" pull -q --json --skip-erofs "docker://$IMAGE_REF" bench
    rm -rf "$repo"
    settle

    run_timed pull-debian "skopeo copy + umoci unpack" peer "$run" sh -c \
      'skopeo copy --quiet --src-tls-verify=false "docker://$1" "oci:$2:bench" && umoci unpack --image "$2:bench" "$3" >/dev/null && sync -f "$3"' \
      sh "$IMAGE_REF" "$MNT/oci" "$MNT/bundle"
    copy_last_run pull-mount "skopeo copy + umoci unpack" peer
    rm -rf "$MNT/oci" "$MNT/bundle"
    settle

    run_timed pull-debian "podman pull" peer "$run" sh -c \
      'podman --root "$2/root" --runroot "$2/run" --storage-driver overlay pull --quiet --tls-verify=false "$1" >/dev/null && sync -f "$2"' \
      sh "$IMAGE_REF" "$MNT/podman"
    pull_row=$(last_run)
    for m in $(seq 1 "$MOUNT_REPS"); do
      run_timed mount "podman image mount" peer "$run" "${podman_[@]}" image mount "$IMAGE_REF"
      [ "$m" = 1 ] && add_runs pull-mount "podman pull + podman image mount" peer "$run" "$pull_row" "$(last_run)"
      [ -f "$(head -n1 "$WORK/out")/usr/bin/python3" ] || die "podman image mount: /usr/bin/python3 is not in the mounted image"
      "${podman_[@]}" image unmount "$IMAGE_REF" >/dev/null || die "podman image unmount failed"
    done
    "${podman_[@]}" system reset --force >/dev/null 2>&1 || true
    umount -R "$MNT/podman/root/overlay" 2>/dev/null || true
    rm -rf "$MNT/podman"
    settle
  done
  kill "$REG_PID" 2>/dev/null
  wait "$REG_PID" 2>/dev/null || true
  rm -rf "$REG"
  printf '%s\t%s\t%s\t%s\t%s\n' pull-debian \
    "pull: Debian $SUITE with Python, numpy, gcc, perl, git ($pull_layers gzip layers) from a loopback registry" \
    "$pull_compressed" "$pull_entries" \
    "Bytes are the compressed layers. Registry blobs in the page cache; empty repository / directory / podman root per run, all on the bench filesystem. stratum pull ends with syncfs, so both peers end with sync -f. Wall-time ratio = 1 / speed ratio." \
    >>"$GROUPS_TSV"
  printf '%s\t%s\t%s\t%s\t%s\n' pull-erofs \
    "pull: the EROFS step's share (the same pull with and without it)" "$pull_compressed" "$pull_entries" \
    "The stratum pull runs above against the same pull with --skip-erofs (layers, config and manifest only), each into an empty repository. Wall-time ratio minus one is the time the EROFS step adds." \
    >>"$GROUPS_TSV"
  printf '%s\t%s\t%s\t%s\t%s\n' mount \
    "mount: the pulled image ($pull_entries entries), read-only, $MOUNT_REPS mounts per run" 0 0 \
    "stratum mount: EROFS (file-backed) + overlayfs with the objects as a data-only layer, mount record written. podman image mount: the overlay of its layer directories. Each followed by its unmount (not timed). Throughput columns do not apply; the wall times are the figures." \
    >>"$GROUPS_TSV"
  printf '%s\t%s\t%s\t%s\t%s\n' pull-mount \
    "pull start to a mounted image" "$pull_compressed" "$pull_entries" \
    "Each run's pull plus its first mount. skopeo copy + umoci unpack ends with an unpacked root filesystem, so it needs no mount." \
    >>"$GROUPS_TSV"
fi

# --- report -------------------------------------------------------------------------------------------------
node "$APP/dist/bench/report.js" "$RUNS_TSV" "$GROUPS_TSV" "$RESULTS/results.json" \
  "fs=journaled ext4 (mkfs.ext4 defaults, no fs-verity feature) on a loop-mounted sparse image of $IMAGE_SIZE" \
  "runs=$RUNS" "minbase=$(basename "${MINBASE:-none}")" \
  ${erofs_shares+"erofsShares=$(IFS=,; echo "${erofs_shares[*]}")"} >"$RESULTS/report.md"
echo
cat "$RESULTS/report.md"
echo
