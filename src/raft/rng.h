// A small deterministic PRNG (splitmix64). The Raft core never uses global
// randomness: the caller seeds this through Config::seed.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace shoal::raft {

// splitmix64 (Steele, Lea, Flood 2014). Deterministic for a given seed.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  // Next 64 random bits.
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n must be positive. (Modulo bias is negligible here.)
  uint64_t uniform(uint64_t n) {
    SHOAL_CHECK(n > 0);
    return next() % n;
  }
  // True with probability num/den.
  bool chance(uint64_t num, uint64_t den) { return uniform(den) < num; }

 private:
  uint64_t state_;
};

}  // namespace shoal::raft
