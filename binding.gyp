{
  "targets": [
    {
      "target_name": "uffd_hmm",
      "sources": [
        "native/addon.cc",
        "native/napi_util.cc",
        "native/uffd.cc",
        "native/device.cc",
        "native/region.cc",
        "native/fault.cc",
        "native/refusal.cc",
        "native/migrate_device.cc",
        "native/dispatch.cc",
        "native/fault_napi.cc",
        "native/span.cc",
        "native/probe.cc",
        "native/proc.cc",
        "native/mmap.cc",
        "native/mremap.cc",
        "native/guard.cc",
        "native/test_hooks.cc",
        "native/servicer_thread.cc",
        "native/poller.cc",
        "native/watchdog.cc",
        "native/bench.cc",
        "native/bench_handlers.cc",
        "native/bench_host.cc",
        "native/bench_move.cc",
        "native/toucher.cc",
        "native/inline_servicer.cc",
        "native/fork.cc",
        "native/protocol.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": [
        "-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
        "-Wno-missing-field-initializers", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-fPIC"
      ],
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now", "-pthread"]
    }
  ]
}
