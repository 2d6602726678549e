// What a leader's write hints pay to learn a key's state (kv::Shard::
// CommittedMeta, one key at a time, as before the twenty-seventh session;
// CommittedMetas, a proposal's keys together): over a store of 300k keys in
// one slot, half of them flushed to SST files, for keys the store does not
// hold (a bulk load's first writes) and for keys the key metadata cache
// already knows. Argument 0: keys a call; argument 1: 0 one by one, 1
// together.
//
//   build/release/bench/shoal_key_meta_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kv/shard.h"
#include "storage/engine.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace {

using shoal::kv::KeyMetaCache;
using shoal::kv::Shard;
namespace storage = shoal::storage;

struct Store {
  std::filesystem::path dir;
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<Shard> shard;
  uint64_t next = 0;  // the next key never written
  ~Store() {
    shard.reset();
    engine.reset();
    std::filesystem::remove_all(dir);
  }
};

std::string KeyOf(uint64_t n) {
  char k[40];
  std::snprintf(k, sizeof k, "{t}key:%012llu", static_cast<unsigned long long>(n));
  return k;
}

Store& TheStore() {
  static Store st;
  if (st.engine) return st;
  st.dir = std::filesystem::temp_directory_path() / ("shoal_key_meta_bench_" + std::to_string(::getpid()));
  std::filesystem::remove_all(st.dir);
  st.engine = std::move(storage::Engine::Open({.dir = st.dir.string()}).value());
  std::mt19937_64 rng(1);
  for (int b = 0; b < 300000 / 64; ++b) {
    auto batch = st.engine->NewBatch();
    for (int i = 0; i < 64; ++i) batch->Put(storage::Cf::kData, storage::DataKey(0, KeyOf(rng() % 100000000)), "v");
    SHOAL_CHECK(st.engine->Write(*batch).ok());
  }
  // The key metadata budget of a node with the default maxmemory (1 GiB / 128).
  st.shard = std::make_unique<Shard>(st.engine.get(), 1, 0, storage::kSlotCount, 8 << 20);
  SHOAL_CHECK(st.shard->Load().ok());
  st.next = 200000000;
  return st;
}

void Lookup(Shard& shard, const std::vector<std::string>& keys, size_t n, bool together) {
  std::vector<Shard::KeyRef> refs;
  for (const auto& k : keys) refs.push_back({0, k});
  std::vector<std::optional<KeyMetaCache::Meta>> out(n);
  for (size_t i = 0; i + n <= keys.size(); i += n) {
    if (together) {
      shard.CommittedMetas(std::span(refs.data() + i, n), out);
      benchmark::DoNotOptimize(out.data());
    } else {
      for (size_t j = i; j < i + n; ++j) benchmark::DoNotOptimize(shard.CommittedMeta(0, keys[j]));
    }
  }
}

// Keys the store does not hold, new to the cache each time.
void BM_MissingKeys(benchmark::State& state) {
  Store& st = TheStore();
  const auto n = static_cast<size_t>(state.range(0));
  const bool together = state.range(1) == 1;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::string> keys;
    for (size_t i = 0; i < 1024; ++i) keys.push_back(KeyOf(st.next++));
    state.ResumeTiming();
    Lookup(*st.shard, keys, n, together);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 1024);
}
BENCHMARK(BM_MissingKeys)->ArgsProduct({{1, 4, 16}, {0, 1}});

// Keys the cache knows (read once before).
void BM_CachedKeys(benchmark::State& state) {
  Store& st = TheStore();
  const auto n = static_cast<size_t>(state.range(0));
  const bool together = state.range(1) == 1;
  std::vector<std::string> keys;
  for (size_t i = 0; i < 50000; ++i) keys.push_back(KeyOf(st.next++));
  Lookup(*st.shard, keys, 1, false);
  for (auto _ : state) Lookup(*st.shard, keys, n, together);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * keys.size()));
}
BENCHMARK(BM_CachedKeys)->ArgsProduct({{1, 16}, {0, 1}});

}  // namespace

BENCHMARK_MAIN();
