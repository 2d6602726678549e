#include "sim/sim_runner.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <atomic>
#include <mutex>
#include <thread>

namespace shoal::sim {

namespace {

constexpr size_t kMaxWorkers = 64;
std::atomic<uint64_t> g_running[kMaxWorkers];  // seed + 1 per worker, 0 = idle

void report_running(int sig) {
  for (const auto& r : g_running) {
    const uint64_t v = r.load();
    if (v != 0) std::fprintf(stderr, "aborted while running seed %llu\n", static_cast<unsigned long long>(v - 1));
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

void install_abort_reporter() { std::signal(SIGABRT, report_running); }

SweepResult run_seeds(const SimOptions& base, uint64_t first, uint64_t count, unsigned threads,
                      size_t max_failures) {
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> ran{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  SweepResult out;
  std::atomic<size_t> slots{0};
  auto worker = [&] {
    const size_t slot = slots.fetch_add(1) % kMaxWorkers;
    while (!stop.load()) {
      const uint64_t k = next.fetch_add(1);
      if (k >= count) return;
      SimOptions o = base;
      o.seed = first + k;
      o.trace = false;
      g_running[slot].store(o.seed + 1);
      SimResult r = run_simulation(o);
      g_running[slot].store(0);
      ran.fetch_add(1);
      if (!r.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        out.failures.push_back({o.seed, r.failure});
        if (out.failures.size() >= max_failures) stop.store(true);
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::max(1U, threads); ++t) pool.emplace_back(worker);
  for (std::thread& t : pool) t.join();
  out.seeds_run = ran.load();
  std::sort(out.failures.begin(), out.failures.end(),
            [](const SeedFailure& a, const SeedFailure& b) { return a.seed < b.seed; });
  return out;
}

}  // namespace shoal::sim
