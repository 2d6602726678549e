// `shoal demo`: a local 3-node cluster for trying shoal out.
#pragma once

#include <string>

namespace shoal::cli {

struct DemoOptions {
  std::string dir = "./shoal-demo";
  std::string bind = "127.0.0.1";
  int port = 7001;
  int nodes = 3;
};

// Starts the nodes (this binary, `server` subcommand), prints how to connect,
// and stops them all on SIGINT/SIGTERM. Returns the exit status.
int RunDemo(const DemoOptions& opts, const std::string& self_exe);

}  // namespace shoal::cli
