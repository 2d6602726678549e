// shoal_sim_soak: runs as many simulation seeds as asked.
//   shoal_sim_soak --seeds N [--first-seed S] [--threads T] [--unsafe]
//   shoal_sim_soak --seed S --trace      replays one seed, printing its trace
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "sim/sim_runner.h"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: shoal_sim_soak --seeds N [--first-seed S] [--threads T] [--fault-ticks K] [--unsafe] [--unsafe-send]\n"
               "       shoal_sim_soak --seed S [--trace] [--fault-ticks K] [--unsafe] [--unsafe-send]\n");
}

}  // namespace

int main(int argc, char** argv) {
  shoal::sim::SimOptions base;
  uint64_t seeds = 0;
  uint64_t first = 1;
  bool single = false;
  unsigned threads = std::max(1U, std::thread::hardware_concurrency());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> uint64_t {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (a == "--seeds") {
      seeds = value();
    } else if (a == "--first-seed") {
      first = value();
    } else if (a == "--seed") {
      base.seed = value();
      single = true;
    } else if (a == "--threads") {
      threads = static_cast<unsigned>(value());
    } else if (a == "--fault-ticks") {
      base.fault_ticks = static_cast<int>(value());
    } else if (a == "--trace") {
      base.trace = true;
    } else if (a == "--unsafe") {
      base.unsafe_commit_previous_term = true;
    } else if (a == "--unsafe-send") {
      base.unsafe_send_before_persist = true;
    } else {
      usage();
      return 2;
    }
  }
  shoal::sim::install_abort_reporter();
  if (single) {
    shoal::sim::SimResult r = shoal::sim::run_simulation(base);
    std::printf("seed %llu: %s (trace hash %016llx, %llu messages)\n",
                static_cast<unsigned long long>(base.seed), r.ok() ? "ok" : r.failure.c_str(),
                static_cast<unsigned long long>(r.trace_hash), static_cast<unsigned long long>(r.events));
    return r.ok() ? 0 : 1;
  }
  if (seeds == 0) {
    usage();
    return 2;
  }
  shoal::sim::SweepResult s = shoal::sim::run_seeds(base, first, seeds, threads, 20);
  for (const auto& f : s.failures) {
    std::printf("FAIL seed %llu: %s\n  replay: shoal_sim_soak --seed %llu --trace%s\n",
                static_cast<unsigned long long>(f.seed), f.failure.c_str(),
                static_cast<unsigned long long>(f.seed), base.unsafe_commit_previous_term ? " --unsafe" : "");
  }
  std::printf("%llu seeds run, %zu failed\n", static_cast<unsigned long long>(s.seeds_run), s.failures.size());
  return s.failures.empty() ? 0 : 1;
}
