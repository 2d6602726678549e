// Runs many simulation seeds, optionally on several threads, and reports
// the first failures. Shared by the CI test and the soak tool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/sim_cluster.h"

namespace shoal::sim {

struct SeedFailure {
  uint64_t seed = 0;
  std::string failure;
};

struct SweepResult {
  uint64_t seeds_run = 0;
  std::vector<SeedFailure> failures;  // sorted by seed
};

// Makes an abort (a failed SHOAL_CHECK inside the library) print the seeds
// that were running, so that they can be replayed.
void install_abort_reporter();

// Runs seeds [first, first + count) with `threads` workers (each seed is
// independent and deterministic). Stops early after `max_failures` failures.
SweepResult run_seeds(const SimOptions& base, uint64_t first, uint64_t count, unsigned threads,
                      size_t max_failures);

}  // namespace shoal::sim
