// Our memtable (storage/slot_memtable.cc) against RocksDB's default skiplist,
// through a real RocksDB with the WAL off, in the shapes the engine writes:
// data keys spread over the 16384 slots, keys that share one hash tag (one
// slot: redis-benchmark --cluster's), new versions of a few Raft and
// meta records (what every apply round writes), a full scan of a memtable
// and its flush. Argument 0: RocksDB's skiplist; 1: ours.
//
//   build/release/bench/shoal_memtable_bench
#include <benchmark/benchmark.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/write_batch.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <unistd.h>

#include "storage/keys.h"
#include "storage/slot_memtable.h"

namespace {

using shoal::storage::kDataKeyPrefixBytes;

struct Db {
  std::filesystem::path dir;
  std::unique_ptr<rocksdb::DB> db;
  ~Db() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

// A fresh database whose memtable is ours (with `prefix` bytes) or the default.
std::unique_ptr<Db> Open(bool ours, size_t prefix) {
  auto d = std::make_unique<Db>();
  static int opened = 0;
  d->dir = std::filesystem::temp_directory_path() /
           ("shoal_memtable_bench_" + std::to_string(::getpid()) + "_" + std::to_string(opened++));
  std::filesystem::remove_all(d->dir);
  rocksdb::Options o;
  o.create_if_missing = true;
  o.allow_concurrent_memtable_write = true;
  o.write_buffer_size = 512 << 20;  // nothing flushes unless asked
  if (ours) o.memtable_factory = shoal::storage::NewSlotMemTableFactory(prefix);
  if (prefix == kDataKeyPrefixBytes) o.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(prefix));
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(o, d->dir.string(), &raw).ok()) return nullptr;
  d->db.reset(raw);
  return d;
}

rocksdb::WriteOptions NoWal() {
  rocksdb::WriteOptions w;
  w.disableWAL = true;
  return w;
}

// A data key of one of 100k keys, in its slot.
std::string DataKey(uint32_t k) {
  const uint32_t slot = k % 16384;
  std::string key{static_cast<char>(slot >> 8), static_cast<char>(slot & 255), 0, 0};
  return key + "key:" + std::to_string(k);
}

// Fills a memtable with 300k writes of 100-byte values to 100k data keys.
void Fill(rocksdb::DB* db) {
  std::mt19937 rng(1);
  const std::string v(100, 'x');
  for (int i = 0; i < 300000; ++i) db->Put(NoWal(), DataKey(rng() % 100000), v);
}

void BM_DataPut(benchmark::State& state) {
  auto d = Open(state.range(0) == 1, kDataKeyPrefixBytes);
  if (!d) return state.SkipWithError("open");
  std::mt19937 rng(1);
  const std::string v(100, 'x');
  for (auto _ : state) d->db->Put(NoWal(), DataKey(rng() % 100000), v);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DataPut)->Arg(0)->Arg(1);

// 300k writes of 100k keys that share one hash tag, so one slot and one of
// our memtable's skiplists, as `redis-benchmark --cluster` writes them (each
// node's keys carry one tag): the search of a large bucket, not of ~7 keys.
void BM_HotSlotPut(benchmark::State& state) {
  const std::string v(100, 'x');
  for (auto _ : state) {
    state.PauseTiming();
    auto d = Open(state.range(0) == 1, kDataKeyPrefixBytes);
    if (!d) return state.SkipWithError("open");
    std::mt19937 rng(1);
    const std::string slot{0x12, 0x34, 0, 0};
    state.ResumeTiming();
    for (int i = 0; i < 300000; ++i) {
      char key[32];
      const int len = std::snprintf(key, sizeof(key), "key:{06S}:%012u", static_cast<unsigned>(rng() % 100000));
      d->db->Put(NoWal(), slot + std::string(key, len), v);
    }
    state.PauseTiming();
    d.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * 300000);
}
BENCHMARK(BM_HotSlotPut)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3);

// The same writes in batches of range(0) keys, as a round writes them,
// each batch's bucket prefetched as the engine does (PrefetchForWrites);
// with range(1) = 1 the batch's keys are passed as well, and their inserts'
// searches are walked ahead, side by side, each insert then carrying on from
// its walk; with 2, the same for new keys in ascending order (a load in key
// order: a batch's keys all fall in one gap, past the keys loaded before).
void BM_HotSlotBatchPut(benchmark::State& state) {
  const std::string v(100, 'x');
  const size_t batch = static_cast<size_t>(state.range(0));
  const bool walk = state.range(1) >= 1;
  const bool ascending = state.range(1) == 2;
  for (auto _ : state) {
    state.PauseTiming();
    auto d = Open(true, kDataKeyPrefixBytes);
    if (!d) return state.SkipWithError("open");
    rocksdb::MemTableRepFactory* factory = d->db->GetOptions().memtable_factory.get();
    std::mt19937 rng(1);
    const std::string slot{0x12, 0x34, 0, 0};
    std::vector<std::string> keys(batch);
    std::vector<std::string_view> views(batch);
    const std::vector<uint32_t> prefixes(batch, 0x12340000u);
    state.ResumeTiming();
    for (int i = 0; i < 300000; i += static_cast<int>(batch)) {
      rocksdb::WriteBatch wb;
      for (size_t k = 0; k < batch; ++k) {
        char key[32];
        const unsigned n = ascending ? static_cast<unsigned>(i) + static_cast<unsigned>(k) : static_cast<unsigned>(rng() % 100000);
        const int len = std::snprintf(key, sizeof(key), "key:{06S}:%012u", n);
        keys[k] = slot + std::string(key, len);
        views[k] = keys[k];
        wb.Put(keys[k], v);
      }
      shoal::storage::PrefetchForWrites(factory, prefixes, walk ? std::span<const std::string_view>(views)
                                                                : std::span<const std::string_view>());
      d->db->Write(NoWal(), &wb);
    }
    state.PauseTiming();
    d.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * 300000);
}
BENCHMARK(BM_HotSlotBatchPut)
    ->Args({8, 0})
    ->Args({8, 1})
    ->Args({64, 0})
    ->Args({64, 1})
    ->Args({64, 2})
    ->Args({1024, 0})
    ->Args({1024, 1})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

// A round's records for 16 groups: hard state and log start (raft), the
// applied index (meta), each a new version of the same key.
void BM_RecordVersions(benchmark::State& state) {
  const bool ours = state.range(0) == 1;
  auto raft = Open(ours, shoal::storage::kRaftKeyPrefixBytes);
  auto meta = Open(ours, shoal::storage::kMetaKeyPrefixBytes);
  if (!raft || !meta) return state.SkipWithError("open");
  uint64_t round = 0;
  std::string value(25, 'v');
  for (auto _ : state) {
    const uint64_t group = round++ % 16;
    std::memcpy(value.data(), &round, sizeof(round));
    for (char kind : {'H', 'S'}) {
      std::string key(1, kind);
      shoal::storage::PutU64BE(&key, group);
      raft->db->Put(NoWal(), key, value);
    }
    meta->db->Put(NoWal(), "shard/" + std::to_string(group) + "/applied", value);
  }
  state.SetItemsProcessed(state.iterations() * 3);
}
BENCHMARK(BM_RecordVersions)->Arg(0)->Arg(1);

void BM_ScanMemtable(benchmark::State& state) {
  auto d = Open(state.range(0) == 1, kDataKeyPrefixBytes);
  if (!d) return state.SkipWithError("open");
  Fill(d->db.get());
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  for (auto _ : state) {
    std::unique_ptr<rocksdb::Iterator> it(d->db->NewIterator(ro));
    size_t bytes = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) bytes += it->value().size();
    benchmark::DoNotOptimize(bytes);
  }
}
BENCHMARK(BM_ScanMemtable)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_FlushMemtable(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto d = Open(state.range(0) == 1, kDataKeyPrefixBytes);
    if (!d) return state.SkipWithError("open");
    Fill(d->db.get());
    state.ResumeTiming();
    d->db->Flush(rocksdb::FlushOptions());
    state.PauseTiming();
    d.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_FlushMemtable)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace

BENCHMARK_MAIN();
