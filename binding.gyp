# Builds the TUN addon (native/tun.cc, its io_uring in native/ring.cc) into build/Release/hostlb_tun.node.
# npm runs `node-gyp rebuild` on install because this file sits at the root;
# src/native/addon.ts loads the result. Linux only: it talks to /dev/net/tun.
{
  "targets": [
    {
      "target_name": "hostlb_tun",
      "sources": ["native/tun.cc", "native/ring.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
