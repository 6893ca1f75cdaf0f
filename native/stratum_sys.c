/*
 * stratum_sys: a tiny Node-API addon exposing the few Linux syscalls that Node's fs module lacks and stratum
 * needs: flock(2), syncfs(2), fs-verity enable/measure (FS_IOC_ENABLE_VERITY, FS_IOC_MEASURE_VERITY) and
 * linkat(2) of an O_TMPFILE descriptor via /proc/self/fd, and binary-safe no-follow xattr calls (llistxattr,
 * lgetxattr, lsetxattr) taking paths and names as Buffers, and mount(2)/umount2(2) for composefs mounts. Every
 * call is synchronous. Failures throw an Error
 * shaped like Node's own system errors: code "EEXIST", errno -17, syscall "linkat", and a message such as
 * "EEXIST: file exists, linkat". Wrong argument types throw TypeError; out-of-range numbers RangeError.
 * Typed wrapper: src/sys/native.ts. Build: node-gyp rebuild (run by `npm ci`).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fsverity.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define MAX_DIGEST 64

/* Throws a Node-style system error for errno value `err` from `syscall`; returns NULL for the caller. */
/* An Error like Node's system errors: code (ENOENT…), errno (negative), syscall, message "CODE: text, syscall". */
static napi_value errno_error(napi_env env, int err, const char *syscall) {
  const char *name = strerrorname_np(err);
  char msg[256], desc[128];
  snprintf(desc, sizeof desc, "%s", strerror(err));
  desc[0] = (char)tolower((unsigned char)desc[0]);
  snprintf(msg, sizeof msg, "%s: %s, %s", name ? name : "UNKNOWN", desc, syscall);
  napi_value code, message, error, errno_value, syscall_value;
  napi_create_string_utf8(env, name ? name : "UNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  napi_throw(env, errno_error(env, err, syscall));
  return NULL;
}

/* Reads `count` arguments (missing ones are undefined). Returns 0 on success. */
static int get_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv) {
  size_t argc = count;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok ? 0 : -1;
}

/* Reads an integer argument in [min, max]; throws TypeError/RangeError and returns -1 on misuse. */
static int get_int(napi_env env, napi_value value, const char *what, double min, double max, int *out) {
  napi_valuetype type;
  double d;
  char msg[128];
  napi_typeof(env, value, &type);
  if (type != napi_number) {
    snprintf(msg, sizeof msg, "The \"%s\" argument must be of type number", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return -1;
  }
  napi_get_value_double(env, value, &d);
  if (!isfinite(d) || d != floor(d) || d < min || d > max) {
    snprintf(msg, sizeof msg, "The \"%s\" argument must be an integer >= %.0f and <= %.0f", what, min, max);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return -1;
  }
  *out = (int)d;
  return 0;
}

static int get_fd(napi_env env, napi_value value, int *fd) {
  return get_int(env, value, "fd", 0, 2147483647.0, fd);
}

/* Returns a malloc'd UTF-8 copy of a string argument (caller frees), or NULL after throwing. */
static char *get_string(napi_env env, napi_value value, const char *what) {
  napi_valuetype type;
  size_t len;
  char msg[128];
  napi_typeof(env, value, &type);
  if (type != napi_string) {
    snprintf(msg, sizeof msg, "The \"%s\" argument must be of type string", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
  }
  napi_get_value_string_utf8(env, value, NULL, 0, &len);
  char *s = malloc(len + 1);
  if (s == NULL) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  napi_get_value_string_utf8(env, value, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    snprintf(msg, sizeof msg, "The \"%s\" argument must not contain null bytes", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return NULL;
  }
  return s;
}

/* flock(fd, "sh" | "ex" | "un", nonblock): true when taken; false when nonblock and already held elsewhere. */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  int fd, op;
  bool nonblock;
  char mode[4] = "";
  size_t len = 0;
  napi_valuetype type;
  if (get_args(env, info, 3, argv) || get_fd(env, argv[0], &fd)) return NULL;
  napi_typeof(env, argv[1], &type);
  if (type == napi_string) napi_get_value_string_utf8(env, argv[1], mode, sizeof mode, &len);
  if (strcmp(mode, "sh") == 0 && len == 2) op = LOCK_SH;
  else if (strcmp(mode, "ex") == 0 && len == 2) op = LOCK_EX;
  else if (strcmp(mode, "un") == 0 && len == 2) op = LOCK_UN;
  else {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"op\" argument must be \"sh\", \"ex\" or \"un\"");
    return NULL;
  }
  napi_typeof(env, argv[2], &type);
  if (type != napi_boolean) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"nonblock\" argument must be of type boolean");
    return NULL;
  }
  napi_get_value_bool(env, argv[2], &nonblock);
  int rc;
  do rc = flock(fd, op | (nonblock ? LOCK_NB : 0));
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && nonblock && errno == EWOULDBLOCK) {
    napi_get_boolean(env, false, &result);
    return result;
  }
  if (rc < 0) return throw_errno(env, errno, "flock");
  napi_get_boolean(env, true, &result);
  return result;
}

/* syncfs(fd): flush the whole filesystem containing fd. */
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  if (syncfs(fd) < 0) return throw_errno(env, errno, "syncfs");
  return NULL;
}

/*
 * syncfsAsync(fd): syncfs on a libuv worker thread; returns a promise, so the event loop runs meanwhile. It
 * resolves to the CLOCK_MONOTONIC time (ns, a bigint on process.hrtime.bigint()'s clock) at which syncfs returned,
 * which can be well before the promise settles when the main thread is busy.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int err;
  uint64_t done_ns;
} syncfs_job;

static void syncfs_execute(napi_env env, void *data) {
  (void)env;
  syncfs_job *job = data;
  job->err = syncfs(job->fd) < 0 ? errno : 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  job->done_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void syncfs_complete(napi_env env, napi_status status, void *data) {
  syncfs_job *job = data;
  if (status == napi_ok && job->err == 0) {
    napi_value done;
    napi_create_bigint_uint64(env, job->done_ns, &done);
    napi_resolve_deferred(env, job->deferred, done);
  } else {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->err ? job->err : ECANCELED, "syncfs"));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_syncfs_async(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  syncfs_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, ENOMEM, "syncfs");
  job->fd = fd;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "stratum.syncfs", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, syncfs_execute, syncfs_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

/* fsverityEnable(fd, 1 (sha256) | 2 (sha512)): 4096-byte blocks, no salt, no signature. */
static napi_value js_fsverity_enable(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, alg;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &fd)) return NULL;
  if (get_int(env, argv[1], "hashAlgorithm", FS_VERITY_HASH_ALG_SHA256, FS_VERITY_HASH_ALG_SHA512, &alg))
    return NULL;
  struct fsverity_enable_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.version = 1;
  arg.hash_algorithm = (__u32)alg;
  arg.block_size = 4096;
  int rc;
  do rc = ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, errno, "fsverity_enable");
  return NULL;
}

/* fsverityMeasure(fd) -> { algorithm, digest: Buffer }. */
static napi_value js_fsverity_measure(napi_env env, napi_callback_info info) {
  napi_value argv[1], result, algorithm, digest;
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  union {
    struct fsverity_digest d;
    unsigned char space[sizeof(struct fsverity_digest) + MAX_DIGEST];
  } buf;
  memset(&buf, 0, sizeof buf);
  buf.d.digest_size = MAX_DIGEST;
  if (ioctl(fd, FS_IOC_MEASURE_VERITY, &buf.d) < 0) return throw_errno(env, errno, "fsverity_measure");
  napi_create_object(env, &result);
  napi_create_uint32(env, buf.d.digest_algorithm, &algorithm);
  napi_create_buffer_copy(env, buf.d.digest_size, buf.d.digest, NULL, &digest);
  napi_set_named_property(env, result, "algorithm", algorithm);
  napi_set_named_property(env, result, "digest", digest);
  return result;
}

/* linkFd(fd, newPath): give an (O_TMPFILE) fd a name; never replaces an existing file (EEXIST). */
static napi_value js_link_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  char proc[64];
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &fd)) return NULL;
  char *path = get_string(env, argv[1], "newPath");
  if (path == NULL) return NULL;
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int rc = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
  int err = errno;
  free(path);
  if (rc < 0) return throw_errno(env, err, "linkat");
  return NULL;
}

/* Returns a malloc'd NUL-terminated copy of a Buffer argument (caller frees), or NULL after throwing. */
static char *get_bytes(napi_env env, napi_value value, const char *what) {
  bool is_buffer = false;
  char msg[128];
  void *data;
  size_t len;
  napi_is_buffer(env, value, &is_buffer);
  if (!is_buffer) {
    snprintf(msg, sizeof msg, "The \"%s\" argument must be a Buffer", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
  }
  napi_get_buffer_info(env, value, &data, &len);
  if (memchr(data, 0, len) != NULL) {
    snprintf(msg, sizeof msg, "The \"%s\" argument must not contain null bytes", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  memcpy(s, data, len);
  s[len] = 0;
  return s;
}

/* llistxattr(path: Buffer) -> Buffer of NUL-terminated names (the raw list), without following a symlink. */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  if (get_args(env, info, 1, argv)) return NULL;
  char *path = get_bytes(env, argv[0], "path");
  if (path == NULL) return NULL;
  for (;;) {
    ssize_t size = llistxattr(path, NULL, 0);
    if (size < 0) {
      int err = errno;
      free(path);
      return throw_errno(env, err, "llistxattr");
    }
    char *buf = malloc(size > 0 ? (size_t)size : 1);
    ssize_t got = buf ? llistxattr(path, buf, (size_t)size) : -1;
    if (got < 0 && buf && errno == ERANGE) { /* grew in between */
      free(buf);
      continue;
    }
    int err = errno;
    if (got < 0) {
      free(buf);
      free(path);
      return throw_errno(env, buf ? err : ENOMEM, "llistxattr");
    }
    napi_create_buffer_copy(env, (size_t)got, buf, NULL, &result);
    free(buf);
    free(path);
    return result;
  }
}

/* lgetxattr(path: Buffer, name: Buffer) -> Buffer, or null when the attribute does not exist (ENODATA). */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  if (get_args(env, info, 2, argv)) return NULL;
  char *path = get_bytes(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *name = get_bytes(env, argv[1], "name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  for (;;) {
    ssize_t size = lgetxattr(path, name, NULL, 0);
    char *buf = size >= 0 ? malloc(size > 0 ? (size_t)size : 1) : NULL;
    ssize_t got = buf ? lgetxattr(path, name, buf, (size_t)size) : -1;
    int err = size < 0 ? errno : (buf ? errno : ENOMEM);
    if (got < 0 && buf && err == ERANGE) {
      free(buf);
      continue;
    }
    free(path);
    free(name);
    if (got < 0) {
      free(buf);
      if (err == ENODATA) {
        napi_get_null(env, &result);
        return result;
      }
      return throw_errno(env, err, "lgetxattr");
    }
    napi_create_buffer_copy(env, (size_t)got, buf, NULL, &result);
    free(buf);
    return result;
  }
}

/* lsetxattr(path: Buffer, name: Buffer, value: Buffer): create or replace, without following a symlink. */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  bool is_buffer = false;
  void *value;
  size_t len;
  if (get_args(env, info, 3, argv)) return NULL;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (!is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"value\" argument must be a Buffer");
    return NULL;
  }
  char *path = get_bytes(env, argv[0], "path");
  if (path == NULL) return NULL;
  char *name = get_bytes(env, argv[1], "name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  napi_get_buffer_info(env, argv[2], &value, &len);
  int rc = lsetxattr(path, name, value, len, 0);
  int err = errno;
  free(path);
  free(name);
  if (rc < 0) return throw_errno(env, err, "lsetxattr");
  return NULL;
}

/*
 * mount(source, target, fstype, flags, data | null): mount(2) with the given MS_* flags. The flags are limited to
 * MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC: a new mount of a filesystem, never a bind, move or remount.
 */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  napi_valuetype type;
  int flags;
  if (get_args(env, info, 5, argv)) return NULL;
  if (get_int(env, argv[3], "flags", 0, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, &flags)) return NULL;
  if ((flags & ~(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) != 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "The \"flags\" argument may only hold MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC");
    return NULL;
  }
  char *source = get_string(env, argv[0], "source");
  if (source == NULL) return NULL;
  char *target = get_string(env, argv[1], "target");
  char *fstype = target == NULL ? NULL : get_string(env, argv[2], "fstype");
  char *data = NULL;
  int ok = fstype != NULL;
  if (ok) {
    napi_typeof(env, argv[4], &type);
    if (type != napi_null && type != napi_undefined) {
      data = get_string(env, argv[4], "data");
      ok = data != NULL;
    }
  }
  int rc = 0, err = 0;
  if (ok) {
    rc = mount(source, target, fstype, (unsigned long)flags, data);
    err = errno;
  }
  free(source);
  free(target);
  free(fstype);
  free(data);
  if (!ok) return NULL;
  if (rc < 0) return throw_errno(env, err, "mount");
  return NULL;
}

/* umount2(target, flags): flags is 0 or MNT_DETACH (2). */
static napi_value js_umount2(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int flags;
  if (get_args(env, info, 2, argv)) return NULL;
  if (get_int(env, argv[1], "flags", 0, MNT_DETACH, &flags)) return NULL;
  if (flags != 0 && flags != MNT_DETACH) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "The \"flags\" argument must be 0 or MNT_DETACH");
    return NULL;
  }
  char *target = get_string(env, argv[0], "target");
  if (target == NULL) return NULL;
  int rc = umount2(target, flags);
  int err = errno;
  free(target);
  if (rc < 0) return throw_errno(env, err, "umount2");
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"flock", NULL, js_flock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfsAsync", NULL, js_syncfs_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fsverityEnable", NULL, js_fsverity_enable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fsverityMeasure", NULL, js_fsverity_measure, NULL, NULL, NULL, napi_enumerable, NULL},
      {"linkFd", NULL, js_link_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"umount2", NULL, js_umount2, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
