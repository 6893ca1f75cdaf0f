{
  "targets": [
    {
      "target_name": "stratum_sys",
      "sources": ["native/stratum_sys.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
