#include "storage/value_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/engine.h"

namespace shoal::storage {
namespace {

TEST(ValueCache, KeepsWhatAReadFoundUntilAWriteOfItsKey) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  EXPECT_FALSE(cache.Find("k1", &v));
  auto t = cache.BeginRead("k1");
  cache.Fill(t, "k1", "v1");
  ASSERT_TRUE(cache.Find("k1", &v));
  EXPECT_EQ(v, "v1");
  const std::string_view keys[] = {"k1"};
  cache.BeginWrite(keys, {}, false, &w);
  EXPECT_FALSE(cache.Find("k1", &v));  // forgotten before the store changes
  cache.EndWrite(&w);
  EXPECT_FALSE(cache.Find("k1", &v));
  EXPECT_EQ(cache.usage(), 0u);
  // A write of another key leaves an entry be.
  auto t2 = cache.BeginRead("k2");
  cache.Fill(t2, "k2", "v2");
  cache.BeginWrite(keys, {}, false, &w);
  cache.EndWrite(&w);
  ASSERT_TRUE(cache.Find("k2", &v));
  EXPECT_EQ(v, "v2");
}

TEST(ValueCache, KeepsThatAKeyIsAbsentUntilAWriteOfIt) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v = "untouched";
  bool absent = false;
  auto t = cache.BeginRead("k1");
  cache.FillAbsent(t, "k1");
  EXPECT_FALSE(cache.Find("k1", &v));  // a caller that cannot take an absence sees none
  ASSERT_TRUE(cache.Find("k1", &v, &absent));
  EXPECT_TRUE(absent);
  EXPECT_EQ(v, "untouched");
  EXPECT_GT(cache.usage(), 0u);
  // A write of the key forgets its absence before the store changes.
  const std::string_view keys[] = {"k1"};
  cache.BeginWrite(keys, {}, false, &w);
  EXPECT_FALSE(cache.Find("k1", &v, &absent));
  cache.EndWrite(&w);
  EXPECT_EQ(cache.usage(), 0u);
  // An absence read before a write began is not kept.
  auto before = cache.BeginRead("k1");
  cache.BeginWrite(keys, {}, false, &w);
  cache.EndWrite(&w);
  cache.FillAbsent(before, "k1");
  EXPECT_FALSE(cache.Find("k1", &v, &absent));
  // A value read later takes the absence's place, and the other way round.
  auto t2 = cache.BeginRead("k1");
  cache.FillAbsent(t2, "k1");
  cache.Fill(cache.BeginRead("k1"), "k1", "v1");
  ASSERT_TRUE(cache.Find("k1", &v, &absent));
  EXPECT_FALSE(absent);
  EXPECT_EQ(v, "v1");
  cache.FillAbsent(cache.BeginRead("k1"), "k1");
  ASSERT_TRUE(cache.Find("k1", &v, &absent));
  EXPECT_TRUE(absent);
  // A range write forgets the absences inside it and keeps the rest.
  cache.FillAbsent(cache.BeginRead("a5"), "a5");
  cache.FillAbsent(cache.BeginRead("b5"), "b5");
  const ValueCache::Range range{"a", "b"};
  cache.BeginWrite({}, std::span(&range, 1), false, &w);
  cache.EndWrite(&w);
  EXPECT_FALSE(cache.Find("a5", &v, &absent));
  EXPECT_TRUE(cache.Find("b5", &v, &absent));
  EXPECT_TRUE(absent);
  EXPECT_TRUE(cache.ConsistentForTest());
}

TEST(ValueCache, PrefetchChangesNothing) {
  ValueCache cache(1 << 20);
  std::vector<ValueCache::Ticket> tickets;
  const std::string long_key(ValueCache::kKeyBytesMax + 1, 'L');  // not cacheable
  tickets.push_back(cache.BeginRead("p0"));
  tickets.push_back(cache.BeginRead(long_key));
  cache.Prefetch(tickets);  // every stripe empty, no table
  for (int i = 0; i < 100; ++i) {
    const std::string k = "p" + std::to_string(i);
    if (i % 3 == 0) {
      cache.FillAbsent(cache.BeginRead(k), k);
    } else {
      cache.Fill(cache.BeginRead(k), k, "v" + std::to_string(i));
    }
  }
  const size_t usage = cache.usage();
  tickets.clear();
  for (int i = 0; i < 120; ++i) tickets.push_back(cache.BeginRead("p" + std::to_string(i)));
  tickets.push_back(cache.BeginRead(long_key));
  cache.Prefetch(tickets);
  EXPECT_EQ(cache.usage(), usage);
  for (int i = 0; i < 120; ++i) {
    std::string v;
    bool absent = false;
    const bool found = cache.Find(tickets[i], "p" + std::to_string(i), &v, &absent);
    EXPECT_EQ(found, i < 100) << i;
    if (found) {
      EXPECT_EQ(absent, i % 3 == 0) << i;
      EXPECT_EQ(v, absent ? "" : "v" + std::to_string(i)) << i;
    }
    EXPECT_TRUE(cache.Unchanged(tickets[i]));
  }
  EXPECT_TRUE(cache.ConsistentForTest());
}

TEST(ValueCache, AReadThatAWriteOverlapsDoesNotFill) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  const std::string_view keys[] = {"k1"};
  // The write began after the read did: what the read found may be old.
  auto before = cache.BeginRead("k1");
  cache.BeginWrite(keys, {}, false, &w);
  cache.EndWrite(&w);
  cache.Fill(before, "k1", "old");
  EXPECT_FALSE(cache.Find("k1", &v));
  // The write is in flight when the read begins.
  cache.BeginWrite(keys, {}, false, &w);
  auto during = cache.BeginRead("k1");
  EXPECT_FALSE(cache.Unchanged(during));
  cache.Fill(during, "k1", "old");
  cache.EndWrite(&w);
  EXPECT_FALSE(cache.Find("k1", &v));
  // A read after the write fills.
  auto after = cache.BeginRead("k1");
  cache.Fill(after, "k1", "new");
  ASSERT_TRUE(cache.Find("k1", &v));
  EXPECT_EQ(v, "new");
}

TEST(ValueCache, AWriteOverARangeForgetsEveryKey) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  for (std::string k : {"a", "b", "c"}) {
    auto t = cache.BeginRead(k);
    cache.Fill(t, k, "v" + k);
  }
  ASSERT_TRUE(cache.Find("b", &v));
  auto before = cache.BeginRead("d");
  cache.BeginWrite({}, {}, /*all=*/true, &w);
  for (std::string k : {"a", "b", "c"}) EXPECT_FALSE(cache.Find(k, &v)) << k;
  EXPECT_FALSE(cache.Unchanged(cache.BeginRead("a")));
  cache.EndWrite(&w);
  cache.Fill(before, "d", "old");  // began before the range write
  EXPECT_FALSE(cache.Find("d", &v));
  auto t = cache.BeginRead("a");
  cache.Fill(t, "a", "new");
  ASSERT_TRUE(cache.Find("a", &v));
  EXPECT_EQ(v, "new");
}

TEST(ValueCache, ABatchOfManyKeysForgetsEveryKeyAndCountsOncePerStripe) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  auto t = cache.BeginRead("kept");
  cache.Fill(t, "kept", "v");
  // One key many times: its stripe counts the write once.
  std::vector<std::string_view> same(ValueCache::kWriteKeysMax, "other");
  cache.BeginWrite(same, {}, false, &w);
  EXPECT_EQ(w.stripes.size(), 1u);
  cache.EndWrite(&w);
  EXPECT_TRUE(cache.Unchanged(cache.BeginRead("other")));
  ASSERT_TRUE(cache.Find("kept", &v));
  // More keys than kWriteKeysMax: every key is forgotten.
  std::vector<std::string> names;
  for (size_t i = 0; i <= ValueCache::kWriteKeysMax; ++i) names.push_back("many" + std::to_string(i));
  std::vector<std::string_view> many(names.begin(), names.end());
  cache.BeginWrite(many, {}, false, &w);
  EXPECT_TRUE(w.all);
  EXPECT_FALSE(cache.Find("kept", &v));
  EXPECT_EQ(cache.usage(), 0u);  // given back at once
  cache.EndWrite(&w);
  EXPECT_FALSE(cache.Find("kept", &v));
}

// A range write forgets the keys inside its ranges, gives their memory
// back, and keeps every other entry; while it is in flight no read of any
// stripe fills, nor does one that began before it.
TEST(ValueCache, ARangeWriteForgetsTheKeysInsideItAndKeepsTheRest) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) names.push_back("sl" + std::to_string(10 + i % 3) + "k" + std::to_string(i));
  for (const std::string& k : names) cache.Fill(cache.BeginRead(k), k, "v" + k);
  const size_t full = cache.usage();
  auto before = cache.BeginRead("sl11new");
  const ValueCache::Range ranges[] = {{"sl11", "sl12"}};
  const std::string_view point[] = {"sl10k0"};
  cache.BeginWrite(point, ranges, false, &w);
  EXPECT_TRUE(w.all);
  EXPECT_FALSE(cache.Unchanged(cache.BeginRead("sl10k3")));  // every stripe is written
  for (const std::string& k : names) {
    const bool inside = k.starts_with("sl11") || k == "sl10k0";
    EXPECT_EQ(cache.Find(k, &v), !inside) << k;
    if (!inside) {
      EXPECT_EQ(v, "v" + k);
    }
  }
  EXPECT_LT(cache.usage() + 101 * 12, full);  // the entries of 101 keys and values of 6 bytes or more
  EXPECT_TRUE(cache.ConsistentForTest());
  cache.EndWrite(&w);
  cache.Fill(before, "sl11new", "old");  // began before the range write
  EXPECT_FALSE(cache.Find("sl11new", &v));
  cache.Fill(cache.BeginRead("sl11new"), "sl11new", "new");
  ASSERT_TRUE(cache.Find("sl11new", &v));
  EXPECT_EQ(v, "new");
}

// A collection's elements are never cached, so a range of them only (both
// ends under one [slot][db] prefix with the element flag) writes nothing
// of the cache; a range that reaches past that prefix erases as any other.
TEST(ValueCache, ARangeOfElementsOnlyLeavesTheCacheBe) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  const std::string slot_db("\x00\x07\x00\x00", 4);
  const std::string element_db("\x00\x07\x80\x00", 4);
  const std::string length("\x00\x00\x00\x01", 4);
  EXPECT_FALSE(ValueCache::Cacheable(element_db + length + "hf"));
  const std::string key = slot_db + "h";
  cache.Fill(cache.BeginRead(key), key, "header");
  const std::string lo = element_db + length + "h", hi = element_db + length + "i";
  const ValueCache::Range elements[] = {{lo, hi}};
  cache.BeginWrite({}, elements, false, &w);
  EXPECT_FALSE(w.all);
  EXPECT_TRUE(cache.Unchanged(cache.BeginRead(key)));
  cache.EndWrite(&w);
  ASSERT_TRUE(cache.Find(key, &v));
  EXPECT_EQ(v, "header");
  const std::string past("\x00\x08\x00\x00", 4);
  const ValueCache::Range slot[] = {{slot_db, past}};
  cache.BeginWrite({}, slot, false, &w);
  EXPECT_TRUE(w.all);
  EXPECT_FALSE(cache.Find(key, &v));
  cache.EndWrite(&w);
}

// Random fills, writes and range writes against a model of the store: a
// hit is always the model's value, or its absence, through eviction and
// range writes.
TEST(ValueCache, HitsAreTheLatestValueUnderRandomOperations) {
  ValueCache cache(64 << 10);  // eviction all the time
  ValueCache::Writing w;
  std::map<std::string, std::optional<std::string>> model;  // nullopt (or not in it): absent
  std::mt19937_64 rng(7);
  int hits = 0, absent_hits = 0;
  for (int step = 0; step < 200000; ++step) {
    const std::string key = "k" + std::to_string(rng() % 3000);
    const uint64_t op = rng() % 100;
    std::string v;
    bool absent = false;
    if (op < 50) {
      const std::optional<std::string> stored = model.contains(key) ? model[key] : std::nullopt;
      if (cache.Find(key, &v, &absent)) {
        if (absent) {
          ASSERT_FALSE(stored.has_value()) << key << " at step " << step;
          ++absent_hits;
        } else {
          ASSERT_TRUE(stored.has_value()) << key << " at step " << step;
          ASSERT_EQ(v, *stored) << key << " at step " << step;
          ++hits;
        }
      } else {
        auto t = cache.BeginRead(key);
        if (stored) {
          cache.Fill(t, key, *stored);
        } else {
          cache.FillAbsent(t, key);
        }
      }
    } else if (op < 97) {
      const std::string_view keys[] = {key};
      cache.BeginWrite(keys, {}, false, &w);
      if (op < 85) {
        model[key] = std::to_string(step) + std::string(rng() % 40, 'v');
      } else {
        model[key] = std::nullopt;  // deleted
      }
      cache.EndWrite(&w);
    } else if (op < 99) {
      // A range of keys: "k1" up to "k2" holds k1, k10.., k100.., k1000...:
      // written, or deleted.
      const ValueCache::Range ranges[] = {{"k1", "k2"}};
      const bool del = step % 2 == 0;
      cache.BeginWrite({}, ranges, false, &w);
      for (auto& [k, val] : model) {  // a key not in the model stays absent
        if (k >= "k1" && k < "k2") val = del ? std::nullopt : std::optional<std::string>("r" + std::to_string(step));
      }
      cache.EndWrite(&w);
    } else {
      cache.BeginWrite({}, {}, true, &w);
      for (auto& [k, val] : model) val = "r" + std::to_string(step);
      cache.EndWrite(&w);
    }
    if (step % 10000 == 0) {
      ASSERT_TRUE(cache.ConsistentForTest()) << "at step " << step;
    }
  }
  EXPECT_TRUE(cache.ConsistentForTest());
  EXPECT_GT(hits, 1000);
  EXPECT_GT(absent_hits, 20);  // few: a full cache takes an absence only where a removal left room
  EXPECT_LE(cache.usage(), cache.capacity());
}

// Absences take free room only: a stripe full of values keeps them.
TEST(ValueCache, AnAbsenceNeverEvictsAValue) {
  ValueCache cache(64 << 10);  // 64 stripes of 1 KiB
  std::string v;
  bool absent = false;
  // Values until nothing more fits without eviction, each found since.
  std::vector<std::string> keys;
  for (int i = 0; i < 2000; ++i) {
    const std::string k = "v" + std::to_string(i);
    cache.Fill(cache.BeginRead(k), k, std::string(100, 'x'));
    keys.push_back(k);
  }
  for (const std::string& k : keys) cache.Find(k, &v);  // every CLOCK bit set where kept
  const size_t usage = cache.usage();
  size_t kept = 0;
  for (const std::string& k : keys) kept += cache.Find(k, &v) ? 1 : 0;
  ASSERT_GT(kept, 100u);
  for (int i = 0; i < 5000; ++i) {
    const std::string k = "absent" + std::to_string(i);
    cache.FillAbsent(cache.BeginRead(k), k);
  }
  size_t still = 0;
  for (const std::string& k : keys) still += cache.Find(k, &v) ? 1 : 0;
  EXPECT_EQ(still, kept);  // no value went for an absence
  EXPECT_LE(cache.usage(), cache.capacity());
  EXPECT_GE(cache.usage(), usage);
  // With room free again, absences are kept.
  ValueCache roomy(1 << 20);
  roomy.FillAbsent(roomy.BeginRead("a"), "a");
  EXPECT_TRUE(roomy.Find("a", &v, &absent));
  EXPECT_TRUE(absent);
  EXPECT_TRUE(cache.ConsistentForTest());
}

// The engine's cache at the smallest budget (maxmemory 32mb: 2 MiB).
TEST(ValueCache, KeepsAValueOfTheLargestCacheableSize) {
  ValueCache cache(2 << 20);
  const std::string k(16, 'k'), v(ValueCache::kValueBytesMax, 'v');
  cache.Fill(cache.BeginRead(k), k, v);
  std::string got;
  ASSERT_TRUE(cache.Find(k, &got));
  EXPECT_EQ(got, v);
  EXPECT_TRUE(cache.ConsistentForTest());
}

// A large value evicts what it needs from its stripe, even after every
// entry there was found lately (CLOCK's second pass).
TEST(ValueCache, MakesRoomForALargeValueAmongRecentlyFoundOnes) {
  ValueCache cache(4 << 20);  // 64 stripes of 64 KiB
  std::vector<std::string> keys;
  std::string big;
  // Keys of one stripe (the hash's low 6 bits).
  for (int i = 0; keys.size() < 12 || big.empty(); ++i) {
    std::string k = "k" + std::to_string(i);
    if ((std::hash<std::string_view>{}(k) & 63) != 0) continue;
    if (keys.size() < 12) {
      keys.push_back(k);
    } else {
      big = k;
    }
  }
  std::string v;
  for (auto& k : keys) cache.Fill(cache.BeginRead(k), k, std::string(5000, 'v'));
  for (auto& k : keys) ASSERT_TRUE(cache.Find(k, &v)) << k;
  cache.Fill(cache.BeginRead(big), big, std::string(ValueCache::kValueBytesMax, 'b'));
  ASSERT_TRUE(cache.Find(big, &v));
  int kept = 0;
  for (auto& k : keys) kept += cache.Find(k, &v) ? 1 : 0;
  EXPECT_GE(kept, 8);  // only what the big value needed went
  EXPECT_TRUE(cache.ConsistentForTest());
}

// What a stripe's table takes is charged too, and given back when the
// stripe is emptied.
TEST(ValueCache, ChargesItsTablesAndGivesThemBack) {
  ValueCache cache(4 << 20);
  ValueCache::Writing w;
  std::vector<std::string> names;
  for (int i = 0; i < 20000; ++i) names.push_back("t" + std::to_string(i));
  for (auto& k : names) cache.Fill(cache.BeginRead(k), k, "");
  EXPECT_LE(cache.usage(), cache.capacity());
  EXPECT_GT(cache.usage(), 20000u * 24);
  EXPECT_TRUE(cache.ConsistentForTest());
  std::vector<std::string_view> keys(names.begin(), names.end());
  for (size_t at = 0; at < keys.size(); at += ValueCache::kWriteKeysMax) {
    auto part = std::span(keys).subspan(at, std::min(ValueCache::kWriteKeysMax, keys.size() - at));
    cache.BeginWrite(part, {}, false, &w);
    cache.EndWrite(&w);
  }
  EXPECT_EQ(cache.usage(), 0u);
  EXPECT_TRUE(cache.ConsistentForTest());
}

TEST(ValueCache, LargeKeysAndValuesAreNotKept) {
  ValueCache cache(1 << 20);
  ValueCache::Writing w;
  std::string v;
  const std::string big_key(ValueCache::kKeyBytesMax + 1, 'k');
  auto t = cache.BeginRead(big_key);
  cache.Fill(t, big_key, "v");
  EXPECT_FALSE(cache.Find(big_key, &v));
  auto t2 = cache.BeginRead("k");
  cache.Fill(t2, "k", std::string(ValueCache::kValueBytesMax + 1, 'v'));
  EXPECT_FALSE(cache.Find("k", &v));
  EXPECT_EQ(cache.usage(), 0u);
}

TEST(ValueCache, StaysWithinItsCapacity) {
  ValueCache cache(256 << 10);
  for (int i = 0; i < 20000; ++i) {
    const std::string k = "key" + std::to_string(i);
    auto t = cache.BeginRead(k);
    cache.Fill(t, k, std::string(100, 'v'));
  }
  EXPECT_LE(cache.usage(), cache.capacity());
  EXPECT_GT(cache.usage(), cache.capacity() / 2);
  std::string v;
  EXPECT_TRUE(cache.Find("key19999", &v));
}

class ValueCacheEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal_value_cache_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    engine_ = std::move(Engine::Open({.dir = (dir_ / "db").string(), .memory_budget_bytes = 64 << 20}).value());
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  // What a client's read finds: "" for NotFound.
  std::string Cached(std::string_view key) {
    std::string v;
    Status s = engine_->Get(Cf::kData, key, &v, nullptr, ReadVia::kCache);
    EXPECT_TRUE(s.ok() || s.code() == Code::kNotFound) << s.ToString();
    return s.ok() ? v : "";
  }
  void Put(std::string_view key, std::string_view value) {
    auto b = engine_->NewBatch();
    b->Put(Cf::kData, key, value);
    ASSERT_TRUE(engine_->Write(*b).ok());
  }
  std::filesystem::path dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(ValueCacheEngineTest, ReadsSeeEveryKindOfWrite) {
  Put("sl01a", "1");
  Put("sl01b", "2");
  EXPECT_EQ(Cached("sl01a"), "1");
  EXPECT_EQ(Cached("sl01a"), "1");  // a hit
  MemoryUsage m = engine_->Memory();
  EXPECT_EQ(m.value_cache_hits, 1u);
  EXPECT_EQ(m.value_cache_misses, 1u);
  EXPECT_GT(m.value_cache_bytes, 0);
  EXPECT_GT(m.value_cache_capacity_bytes, 0);

  Put("sl01a", "3");
  EXPECT_EQ(Cached("sl01a"), "3");
  auto b = engine_->NewBatch();
  b->Delete(Cf::kData, "sl01a");
  ASSERT_TRUE(engine_->Write(*b).ok());
  EXPECT_EQ(Cached("sl01a"), "");

  // A range deletion, then a file ingested over the range.
  EXPECT_EQ(Cached("sl01b"), "2");
  b->Clear();
  b->DeleteRange(Cf::kData, "sl01", "sl02");
  ASSERT_TRUE(engine_->Write(*b).ok());
  EXPECT_EQ(Cached("sl01b"), "");
  Put("sl01b", "4");
  EXPECT_EQ(Cached("sl01b"), "4");
  const std::string sst = (dir_ / "in.sst").string();
  auto file = engine_->NewSstWriter(Cf::kData, sst);
  ASSERT_TRUE(file->Put("sl01b", "5").ok());
  ASSERT_TRUE(file->Finish().ok());
  ASSERT_TRUE(engine_->IngestSst(Cf::kData, sst, /*verify=*/false).ok());
  EXPECT_EQ(Cached("sl01b"), "5");

  // MultiGet: hits, misses and absent keys together, in the caller's order.
  Put("sl01c", "6");
  std::vector<std::string_view> keys = {"sl01c", "sl01b", "sl01x", "sl01b"};
  std::vector<std::string> values(keys.size());
  std::vector<Status> statuses(keys.size());
  engine_->MultiGet(Cf::kData, keys, values, statuses, nullptr, ReadVia::kCache);
  EXPECT_EQ(values[0], "6");
  EXPECT_EQ(values[1], "5");
  EXPECT_EQ(statuses[2].code(), Code::kNotFound);
  EXPECT_EQ(values[3], "5");
  Put("sl01c", "7");
  engine_->MultiGet(Cf::kData, keys, values, statuses, nullptr, ReadVia::kCache);
  EXPECT_EQ(values[0], "7");
  EXPECT_TRUE(statuses[0].ok());
}

// A read that finds no value keeps the key's absence: the next read of it
// is a hit and says NotFound, until a write of the key.
TEST_F(ValueCacheEngineTest, AKeyFoundAbsentIsAHitUntilItIsWritten) {
  EXPECT_EQ(Cached("sl07a"), "");
  EXPECT_EQ(Cached("sl07a"), "");
  MemoryUsage m = engine_->Memory();
  EXPECT_EQ(m.value_cache_misses, 1u);
  EXPECT_EQ(m.value_cache_hits, 1u);
  Put("sl07a", "1");
  EXPECT_EQ(Cached("sl07a"), "1");
  // In a MultiGet: the absence found by the first is a hit in the second.
  std::vector<std::string_view> keys = {"sl07a", "sl07b", "sl07c"};
  std::vector<std::string> values(keys.size());
  std::vector<Status> statuses(keys.size());
  engine_->MultiGet(Cf::kData, keys, values, statuses, nullptr, ReadVia::kCache);
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_EQ(statuses[1].code(), Code::kNotFound);
  EXPECT_EQ(statuses[2].code(), Code::kNotFound);
  const uint64_t hits = engine_->Memory().value_cache_hits;
  engine_->MultiGet(Cf::kData, keys, values, statuses, nullptr, ReadVia::kCache);
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 3);
  EXPECT_EQ(statuses[1].code(), Code::kNotFound);
  Put("sl07b", "2");
  auto b = engine_->NewBatch();
  b->DeleteRange(Cf::kData, "sl07a", "sl07b");
  ASSERT_TRUE(engine_->Write(*b).ok());
  engine_->MultiGet(Cf::kData, keys, values, statuses, nullptr, ReadVia::kCache);
  EXPECT_EQ(statuses[0].code(), Code::kNotFound);
  ASSERT_TRUE(statuses[1].ok());
  EXPECT_EQ(values[1], "2");
  EXPECT_EQ(statuses[2].code(), Code::kNotFound);
  // A store read (no cache) agrees.
  std::string v;
  EXPECT_EQ(engine_->Get(Cf::kData, "sl07b", &v).code(), Code::kOk);
  EXPECT_EQ(v, "2");
}

// A file ingested over keys whose absence is cached makes their values
// visible: the absences inside its range are erased.
TEST_F(ValueCacheEngineTest, AnIngestedFileReplacesTheAbsencesInsideItsRange) {
  EXPECT_EQ(Cached("sl08m"), "");
  EXPECT_EQ(Cached("sl08m"), "");  // a hit: the absence is cached
  EXPECT_EQ(Cached("sl09a"), "");  // outside the file's range
  const uint64_t hits = engine_->Memory().value_cache_hits;
  const std::string sst = (dir_ / "in8.sst").string();
  auto file = engine_->NewSstWriter(Cf::kData, sst);
  ASSERT_TRUE(file->Put("sl08a", "a").ok());
  ASSERT_TRUE(file->Put("sl08m", "m").ok());
  ASSERT_TRUE(file->Put("sl08z", "z").ok());
  ASSERT_TRUE(file->Finish().ok());
  ASSERT_TRUE(engine_->IngestSst(Cf::kData, sst, /*verify=*/false).ok());
  EXPECT_EQ(Cached("sl08m"), "m");
  EXPECT_EQ(Cached("sl09a"), "");
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 1);  // sl09a's absence stayed
}

// Range writes (a range deletion, an ingested file) forget what lies inside
// them, give its memory back, and leave every other value cached.
TEST_F(ValueCacheEngineTest, RangeWritesKeepWhatLiesOutsideThem) {
  Put("sl01a", "1");
  Put("sl02a", "2");
  Put("sl03a", "3");
  EXPECT_EQ(Cached("sl01a"), "1");
  EXPECT_EQ(Cached("sl02a"), "2");
  EXPECT_EQ(Cached("sl03a"), "3");
  const int64_t three = engine_->Memory().value_cache_bytes;
  auto b = engine_->NewBatch();
  b->DeleteRange(Cf::kData, "sl01", "sl02");
  ASSERT_TRUE(engine_->Write(*b).ok());
  EXPECT_LT(engine_->Memory().value_cache_bytes, three);
  uint64_t hits = engine_->Memory().value_cache_hits;
  EXPECT_EQ(Cached("sl02a"), "2");
  EXPECT_EQ(Cached("sl03a"), "3");
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 2);
  EXPECT_EQ(Cached("sl01a"), "");

  const std::string sst = (dir_ / "in.sst").string();
  auto file = engine_->NewSstWriter(Cf::kData, sst);
  ASSERT_TRUE(file->Put("sl03a", "4").ok());
  ASSERT_TRUE(file->Put("sl03b", "5").ok());
  ASSERT_TRUE(file->Finish().ok());
  ASSERT_TRUE(engine_->IngestSst(Cf::kData, sst, /*verify=*/false).ok());
  hits = engine_->Memory().value_cache_hits;
  EXPECT_EQ(Cached("sl02a"), "2");  // outside the file's keys: still a hit
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 1);
  EXPECT_EQ(Cached("sl03a"), "4");  // inside: read again
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 1);
}

// A batch of more elements than kWriteKeysMax (an HSET of thousands of
// fields) writes no cached key: the cache keeps its values.
TEST_F(ValueCacheEngineTest, ABatchOfManyElementsKeepsTheCache) {
  Put("sl05a", "1");
  EXPECT_EQ(Cached("sl05a"), "1");
  auto b = engine_->NewBatch();
  const std::string element_db("sl\x80\x00", 4);
  for (size_t i = 0; i <= ValueCache::kWriteKeysMax; ++i) b->Put(Cf::kData, element_db + "h" + std::to_string(i), "v");
  ASSERT_TRUE(engine_->Write(*b).ok());
  const uint64_t hits = engine_->Memory().value_cache_hits;
  EXPECT_EQ(Cached("sl05a"), "1");
  EXPECT_EQ(engine_->Memory().value_cache_hits, hits + 1);
}

// Readers through the cache against a writer of a few keys, with range
// deletions: no read returns a value older than one a read that finished
// before it began returned, or than the last write done before it began.
TEST_F(ValueCacheEngineTest, ConcurrentReadsAreLinearizable) {
  constexpr int kKeys = 4;
  constexpr int kSteps = 4000;
  constexpr int kReaders = 2;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto key = [](int k) { return "sl01key" + std::to_string(k); };
  // Per key: the step of the last write done (a put writes its step as the
  // value; a deletion is recorded as its step with deleted set), and the
  // newest step a finished read returned.
  struct KeyState {
    std::atomic<int64_t> done_step{0};
    std::atomic<bool> done_deleted{true};
    std::atomic<int64_t> seen_step{0};
  };
  std::vector<KeyState> state(kKeys);
  std::atomic<int64_t> deletes_begun{0}, deletes_done{0};
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<int64_t> reads{0};

  std::thread writer([&] {
    auto b = engine_->NewBatch();
    for (int step = 1; step <= kSteps && std::chrono::steady_clock::now() < deadline; ++step) {
      b->Clear();
      if (step % 97 == 0) {
        deletes_begun.fetch_add(1);
        b->DeleteRange(Cf::kData, "sl01", "sl02");
        if (!engine_->Write(*b).ok()) ++failures;
        for (auto& s : state) {
          s.done_deleted.store(true);
          s.done_step.store(step);
        }
        deletes_done.fetch_add(1);
      } else {
        const int k = step % kKeys;
        b->Put(Cf::kData, key(k), std::to_string(step));
        if (!engine_->Write(*b).ok()) ++failures;
        state[k].done_deleted.store(false);
        state[k].done_step.store(step);
      }
    }
    stop.store(true);
  });
  auto reader = [&](int r) {
    std::vector<std::string> values(kKeys);
    std::vector<Status> statuses(kKeys);
    std::vector<std::string> names;
    for (int k = 0; k < kKeys; ++k) names.push_back(key(k));
    std::vector<std::string_view> views(names.begin(), names.end());
    for (int i = 0; !stop.load() && std::chrono::steady_clock::now() < deadline; ++i) {
      int64_t done[kKeys], seen[kKeys];
      bool deleted[kKeys];
      const int64_t deletes = deletes_done.load();
      for (int k = 0; k < kKeys; ++k) {
        deleted[k] = state[k].done_deleted.load();
        done[k] = state[k].done_step.load();
        seen[k] = state[k].seen_step.load();
      }
      if ((i + r) % 2 == 0) {
        engine_->MultiGet(Cf::kData, views, values, statuses, nullptr, ReadVia::kCache);
      } else {
        for (int k = 0; k < kKeys; ++k) statuses[k] = engine_->Get(Cf::kData, views[k], &values[k], nullptr, ReadVia::kCache);
      }
      // A deletion not known to be done when the read began may explain an
      // absent key.
      const bool deletes_overlapped = deletes_begun.load() != deletes;
      for (int k = 0; k < kKeys; ++k) {
        if (statuses[k].ok()) {
          const int64_t v = std::stoll(values[k]);
          if (v < done[k] || v < seen[k]) {
            ADD_FAILURE() << "key " << k << " read step " << v << " after step " << done[k] << " was done and "
                          << seen[k] << " was read";
            ++failures;
          }
          int64_t prev = state[k].seen_step.load();
          while (prev < v && !state[k].seen_step.compare_exchange_weak(prev, v)) {
          }
        } else if (statuses[k].code() != Code::kNotFound) {
          ++failures;
        } else if (!deleted[k] && !deletes_overlapped) {
          ADD_FAILURE() << "key " << k << " not found after step " << done[k] << " put it";
          ++failures;
        }
      }
      ++reads;
    }
  };
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) readers.emplace_back(reader, r);
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(reads.load(), 100);
  const MemoryUsage m = engine_->Memory();
  EXPECT_GT(m.value_cache_hits, 0u);  // the cache answered some of them
}

// A batch of reads (a connection's pipelined GETs) answers in its order
// when some keys hit and others miss: b is always written before a, so a
// batch reading a then b never finds a newer than b, even while another
// reader keeps b in the cache and a keeps missing.
TEST_F(ValueCacheEngineTest, MultiGetAnswersInTheOrderOfItsKeys) {
  Put("sl01a", "0");
  Put("sl01b", "0");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 1; i <= 20000 && std::chrono::steady_clock::now() < deadline; ++i) {
      Put("sl01b", std::to_string(i));
      Put("sl01a", std::to_string(i));
    }
    stop.store(true);
  });
  std::thread warm([&] {
    while (!stop.load()) Cached("sl01b");
  });
  std::vector<std::string_view> keys = {"sl01a", "sl01b"};
  std::vector<std::string> v(2);
  std::vector<Status> st(2);
  int bad = 0, batches = 0;
  while (!stop.load()) {
    engine_->MultiGet(Cf::kData, keys, v, st, nullptr, ReadVia::kCache);
    ASSERT_TRUE(st[0].ok() && st[1].ok());
    bad += std::stoll(v[0]) > std::stoll(v[1]) ? 1 : 0;
    ++batches;
  }
  writer.join();
  warm.join();
  EXPECT_EQ(bad, 0) << "of " << batches;
  EXPECT_GT(batches, 100);
}

// The store alone (ReadVia::kStore), read at one sequence number (one
// MultiGet, or Gets at one snapshot) while b then a are written in turn:
// a never newer than b. The data memtable's lookup once took the node after
// its search position by reading the link again, and a writer could have
// linked a newer version of the key there, above the reader's sequence
// number: about one read in 80k found a version its snapshot did not hold.
TEST_F(ValueCacheEngineTest, StoreReadsAtOneSequenceSeeNoLaterWrite) {
  Put("sl01a", "0");
  Put("sl01b", "0");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 1; i <= 20000 && std::chrono::steady_clock::now() < deadline; ++i) {
      Put("sl01b", std::to_string(i));
      Put("sl01a", std::to_string(i));
    }
    stop.store(true);
  });
  std::vector<std::string_view> keys = {"sl01a", "sl01b"};
  std::vector<std::string> v(2);
  std::vector<Status> st(2);
  int bad = 0, reads = 0;
  while (!stop.load()) {
    if (reads % 2 == 0) {
      engine_->MultiGet(Cf::kData, keys, v, st, nullptr, ReadVia::kStore);
    } else {
      auto snap = engine_->NewSnapshot();
      for (int k = 0; k < 2; ++k) st[k] = engine_->Get(Cf::kData, keys[k], &v[k], snap.get());
    }
    ASSERT_TRUE(st[0].ok() && st[1].ok());
    bad += std::stoll(v[0]) > std::stoll(v[1]) ? 1 : 0;
    ++reads;
  }
  writer.join();
  EXPECT_EQ(bad, 0) << "of " << reads;
  EXPECT_GT(reads, 100);
}

}  // namespace
}  // namespace shoal::storage
