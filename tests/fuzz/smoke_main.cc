// A driver for the libFuzzer targets without libFuzzer (GCC, the ASan/UBSan
// debug tree): it runs each target on its seeds and then on a bounded number
// of deterministic mutations of them (byte flips, inserted and dropped runs,
// splices, truncations), so CI exercises every decoder of untrusted bytes
// on every run. A crash or sanitizer report fails the test.
//   <target>_fuzz_smoke [--rounds N] [--seconds S] [--seed X] | --input FILE
// With SHOAL_FUZZ_DUMP=file, each input is written there before it runs.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fuzz_seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string Mutate(const std::vector<std::string>& seeds, std::mt19937_64& rng) {
  std::string s = seeds[rng() % seeds.size()];
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int k = 0; k < edits; ++k) {
    switch (rng() % 6) {
      case 0:  // flip a byte
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 1:  // set a byte to an edge value
        if (!s.empty()) {
          static const char kEdges[] = {0, 1, 0x7f, static_cast<char>(0x80), static_cast<char>(0xff)};
          s[rng() % s.size()] = kEdges[rng() % sizeof kEdges];
        }
        break;
      case 2: {  // insert random bytes
        std::string ins(rng() % 16, '\0');
        for (char& c : ins) c = static_cast<char>(rng());
        s.insert(s.empty() ? 0 : rng() % s.size(), ins);
        break;
      }
      case 3:  // drop a run
        if (!s.empty()) {
          size_t at = rng() % s.size();
          s.erase(at, rng() % (s.size() - at + 1));
        }
        break;
      case 4: {  // splice another seed in
        const std::string& o = seeds[rng() % seeds.size()];
        if (!o.empty()) s.insert(s.empty() ? 0 : rng() % s.size(), o.substr(rng() % o.size()));
        break;
      }
      default:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long rounds = 20000, seconds = 30;
  uint64_t seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::atol(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atol(argv[i + 1]);
    if (std::strcmp(argv[i], "--seed") == 0) seed = std::strtoull(argv[i + 1], nullptr, 10);
  }
  const char* dump = std::getenv("SHOAL_FUZZ_DUMP");
  std::vector<std::string> seeds = FuzzSeeds();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--input") != 0) continue;  // replay one input (a crasher)
    std::string in;
    if (FILE* f = std::fopen(argv[i + 1], "rb")) {
      char buf[4096];
      for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) in.append(buf, n);
      std::fclose(f);
    }
    return LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  }
  seeds.emplace_back();
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  std::mt19937_64 rng(seed);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  long done = 0;
  for (; done < rounds && std::chrono::steady_clock::now() < until; ++done) {
    std::string in = Mutate(seeds, rng);
    if (dump != nullptr) {  // the input about to run: after a crash, the crasher
      if (FILE* f = std::fopen(dump, "wb")) {
        std::fwrite(in.data(), 1, in.size(), f);
        std::fclose(f);
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  }
  std::printf("%ld mutated inputs from %zu seeds, no crash\n", done, seeds.size());
  return 0;
}
