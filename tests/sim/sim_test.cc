// The CI simulation: many seeds of the full fault mix, determinism of a
// seed's trace, and a mutation test proving the checkers catch a known bug.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "sim/sim_runner.h"

namespace shoal::sim {
namespace {

// Seeds the CI sweep runs; SHOAL_SIM_SEEDS overrides (e.g. for a quick local run).
uint64_t ci_seeds() {
  if (const char* env = std::getenv("SHOAL_SIM_SEEDS")) return std::strtoull(env, nullptr, 10);
  return 2000;
}

// Worker threads for sweeps; the CI machine has two cores.
constexpr unsigned kThreads = 2;

std::string describe(const SweepResult& r, bool unsafe = false) {
  std::string out;
  for (const SeedFailure& f : r.failures) {
    out += "seed " + std::to_string(f.seed) + ": " + f.failure +
           "\n  replay: shoal_sim_soak --seed " + std::to_string(f.seed) + " --trace" +
           (unsafe ? " --unsafe" : "") + "\n";
  }
  return out;
}

TEST(SimTest, CiSeedsPassEveryChecker) {
  install_abort_reporter();
  SimOptions base;
  const SweepResult r = run_seeds(base, 1, ci_seeds(), kThreads, 5);
  EXPECT_EQ(r.seeds_run, ci_seeds());
  EXPECT_TRUE(r.failures.empty()) << describe(r);
}

TEST(SimTest, SameSeedReproducesTraceBitForBit) {
  for (uint64_t seed : {7ULL, 1234ULL, 99991ULL}) {
    SimOptions o;
    o.seed = seed;
    const SimResult a = run_simulation(o);
    const SimResult b = run_simulation(o);
    EXPECT_EQ(a.trace_hash, b.trace_hash) << "seed " << seed;
    EXPECT_EQ(a.events, b.events) << "seed " << seed;
    EXPECT_EQ(a.failure, b.failure) << "seed " << seed;
    o.seed = seed + 1;
    EXPECT_NE(run_simulation(o).trace_hash, a.trace_hash) << "seed " << seed;
  }
}

TEST(SimTest, RunsMakeProgress) {
  SimOptions o;
  o.seed = 5;
  const SimResult r = run_simulation(o);
  EXPECT_TRUE(r.ok()) << r.failure;
  EXPECT_GT(r.max_commit, 20U);
  EXPECT_GT(r.ops_checked, 20U);
}

// Mutation test: commit previous-term entries by counting replicas (the
// bug of the Raft paper's Figure 8). Some seed within the CI budget must
// fail a checker; the test reports which one.
TEST(SimTest, MutationCommitPreviousTermIsCaught) {
  SimOptions base;
  base.unsafe_commit_previous_term = true;
  const SweepResult r = run_seeds(base, 1, ci_seeds(), kThreads, 1);
  ASSERT_FALSE(r.failures.empty()) << "the injected bug survived " << r.seeds_run << " seeds";
  std::printf("mutation caught after %llu seeds: %s\n", static_cast<unsigned long long>(r.seeds_run),
              describe(r, true).c_str());
}

// Mutation test of the Ready contract: the simulated node sends votes and
// acknowledgements before its write is durable. A crash then loses state a
// peer was promised; within the budget either a checker fails or the
// library's own invariants abort the process. Runs in a death-test child.
void sweep_until_caught_send_before_persist() {
  for (uint64_t seed = 1; seed <= ci_seeds(); ++seed) {
    SimOptions o;
    o.seed = seed;
    o.unsafe_send_before_persist = true;
    const SimResult r = run_simulation(o);
    if (!r.ok()) {
      std::fprintf(stderr, "checker caught seed %llu: %s\n", static_cast<unsigned long long>(seed),
                   r.failure.substr(0, 200).c_str());
      std::abort();
    }
  }
}

TEST(SimDeathTest, MutationSendBeforePersistIsCaught) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(sweep_until_caught_send_before_persist(), "check failed|checker caught");
}

}  // namespace
}  // namespace shoal::sim
