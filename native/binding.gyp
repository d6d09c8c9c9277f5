{
  "targets": [
    {
      "target_name": "chainrule_native",
      "sources": ["addon.c", "sgemm.c", "elementwise.c", "conv.c", "threads.c"],
      "cflags": ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "ldflags": ["-pthread"],
      "cflags!": ["-O2"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-ffp-contract=off", "-fno-math-errno"] }
    }
  ]
}
