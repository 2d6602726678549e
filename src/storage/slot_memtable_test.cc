// The data memtable against a model (std::map), through a real RocksDB: every
// way our code reads (point, forward and reverse scans, prefix and total
// order, seeks to targets between, before and after the keys), with flushes,
// and with writers inserting concurrently while a reader scans.
#include "storage/slot_memtable.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/slice_transform.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

constexpr size_t kPrefix = 4;

class SlotMemTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal_slot_memtable_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(size_t write_buffer = 64 << 20) {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.memtable_factory = NewSlotMemTableFactory(kPrefix);
    o.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(kPrefix));
    o.memtable_whole_key_filtering = true;
    o.memtable_prefix_bloom_size_ratio = 0.05;
    o.allow_concurrent_memtable_write = true;
    o.write_buffer_size = write_buffer;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(o, dir_.string(), &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }

  // A key from a small alphabet, so that prefixes repeat and collide on
  // their first two bytes; with `short_keys`, some are shorter than a prefix
  // (RocksDB's prefix iterators assert that every key has one).
  static std::string RandomKey(std::mt19937& rng, bool short_keys) {
    static const char kBytes[] = {'\x00', '\x01', '\x7f', '\x80', '\xff'};
    std::string k;
    size_t len = short_keys && rng() % 8 == 0 ? rng() % (kPrefix + 1) : kPrefix + rng() % 5;
    for (size_t i = 0; i < len; ++i) {
      k.push_back(i < 2 ? kBytes[rng() % 3] : kBytes[rng() % 5]);
    }
    return k;
  }

  rocksdb::ReadOptions Scan(bool prefix) const {
    rocksdb::ReadOptions ro;
    ro.total_order_seek = !prefix;
    ro.prefix_same_as_start = prefix;
    return ro;
  }

  static bool SamePrefix(const std::string& a, const std::string& b) {
    return a.size() >= kPrefix && b.size() >= kPrefix && a.compare(0, kPrefix, b, 0, kPrefix) == 0;
  }

  // Checks every read against the model: total order, and with
  // `prefix_reads` (no key shorter than a prefix), prefix iterators too.
  void CheckAgainst(const std::map<std::string, std::string>& model, std::mt19937& rng, bool prefix_reads) {
    // Full scans, both ways.
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(Scan(false)));
    auto m = model.begin();
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++m) {
      ASSERT_NE(m, model.end());
      ASSERT_EQ(it->key().ToString(), m->first);
      ASSERT_EQ(it->value().ToString(), m->second);
    }
    ASSERT_TRUE(it->status().ok());
    ASSERT_EQ(m, model.end());
    auto r = model.rbegin();
    for (it->SeekToLast(); it->Valid(); it->Prev(), ++r) {
      ASSERT_NE(r, model.rend());
      ASSERT_EQ(it->key().ToString(), r->first);
    }
    ASSERT_EQ(r, model.rend());

    for (int i = 0; i < 300; ++i) {
      std::string target = RandomKey(rng, true);
      // Point reads.
      std::string v;
      auto s = db_->Get(rocksdb::ReadOptions(), target, &v);
      auto found = model.find(target);
      if (found == model.end()) {
        ASSERT_TRUE(s.IsNotFound()) << s.ToString();
      } else {
        ASSERT_TRUE(s.ok()) << s.ToString();
        ASSERT_EQ(v, found->second);
      }
      // Total order: a seek and a few steps each way from it.
      auto lower = model.lower_bound(target);
      it->Seek(target);
      if (lower == model.end()) {
        ASSERT_FALSE(it->Valid());
      } else {
        ASSERT_TRUE(it->Valid());
        ASSERT_EQ(it->key().ToString(), lower->first);
        auto walk = lower;
        for (int step = 0; step < 3 && it->Valid(); ++step) {
          it->Prev();
          if (walk == model.begin()) {
            ASSERT_FALSE(it->Valid());
          } else {
            --walk;
            ASSERT_TRUE(it->Valid());
            ASSERT_EQ(it->key().ToString(), walk->first);
          }
        }
      }
      auto upper = model.upper_bound(target);
      it->SeekForPrev(target);
      if (upper == model.begin()) {
        ASSERT_FALSE(it->Valid());
      } else {
        auto at = std::prev(upper);
        ASSERT_TRUE(it->Valid());
        ASSERT_EQ(it->key().ToString(), at->first);
        for (int step = 0; step < 3; ++step) {
          it->Next();
          ++at;
          if (at == model.end()) {
            ASSERT_FALSE(it->Valid());
            break;
          }
          ASSERT_TRUE(it->Valid());
          ASSERT_EQ(it->key().ToString(), at->first);
        }
      }
      // Prefix order, as the data column family reads: within the target's
      // prefix, forwards from a seek and backwards from a seek for prev.
      if (!prefix_reads || target.size() < kPrefix) continue;
      std::unique_ptr<rocksdb::Iterator> pit(db_->NewIterator(Scan(true)));
      std::vector<std::string> want;
      for (auto w = model.lower_bound(target); w != model.end() && SamePrefix(w->first, target); ++w) {
        want.push_back(w->first);
      }
      std::vector<std::string> got;
      for (pit->Seek(target); pit->Valid(); pit->Next()) got.push_back(pit->key().ToString());
      ASSERT_EQ(got, want) << "forward from a target of " << target.size() << " bytes";
      want.clear();
      for (auto w = model.upper_bound(target); w != model.begin();) {
        --w;
        if (!SamePrefix(w->first, target)) break;
        want.push_back(w->first);
      }
      got.clear();
      for (pit->SeekForPrev(target); pit->Valid(); pit->Prev()) got.push_back(pit->key().ToString());
      ASSERT_EQ(got, want) << "backward from a target of " << target.size() << " bytes";
    }
  }

  std::filesystem::path dir_;
  std::unique_ptr<rocksdb::DB> db_;
};

TEST_F(SlotMemTableTest, ReadsMatchAModelInTheMemtable) {
  Open();
  std::mt19937 rng(7);
  std::map<std::string, std::string> model;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 1500; ++i) {
      std::string k = RandomKey(rng, false);
      if (rng() % 4 == 0) {
        ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), k).ok());
        model.erase(k);
      } else {
        std::string v = "v" + std::to_string(round) + "." + std::to_string(i);
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, v).ok());
        model[k] = v;
      }
    }
    CheckAgainst(model, rng, true);
  }
  ASSERT_FALSE(model.empty());
}

TEST_F(SlotMemTableTest, KeysShorterThanAPrefixKeepTheOrder) {
  Open();
  std::mt19937 rng(9);
  std::map<std::string, std::string> model;
  for (int i = 0; i < 3000; ++i) {
    std::string k = RandomKey(rng, true);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, "v" + std::to_string(i)).ok());
    model[k] = "v" + std::to_string(i);
  }
  size_t short_ones = 0;
  for (const auto& [k, v] : model) short_ones += k.size() < kPrefix;
  ASSERT_GT(short_ones, 10u);
  CheckAgainst(model, rng, false);
}

TEST_F(SlotMemTableTest, FlushesInOrderAndReadsAcrossMemtablesAndFiles) {
  Open(64 << 10);  // small memtables: many flushes, reads merge memtables and files
  std::mt19937 rng(11);
  std::map<std::string, std::string> model;
  for (int i = 0; i < 6000; ++i) {
    std::string k = RandomKey(rng, false);
    if (rng() % 5 == 0) {
      ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), k).ok());
      model.erase(k);
    } else {
      std::string v(20 + rng() % 40, static_cast<char>('a' + i % 26));
      ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, v).ok());
      model[k] = v;
    }
  }
  CheckAgainst(model, rng, true);
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  CheckAgainst(model, rng, true);
}

// RocksDB's size estimates ask the memtable how many entries lie in a
// range: whole prefixes, parts of one, none.
TEST_F(SlotMemTableTest, CountsTheEntriesOfARange) {
  Open();
  auto key = [](char slot, int i) {
    char digits[8];
    std::snprintf(digits, sizeof(digits), "%05d", i);
    return std::string{'\x00', slot, '\x00', '\x00'} + digits;
  };
  for (int i = 0; i < 4000; ++i) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key('\x01', i), "v").ok());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key('\x02', i), "v").ok());
  auto count = [&](const std::string& begin, const std::string& end) {
    uint64_t n = 0, bytes = 0;
    db_->GetApproximateMemTableStats(rocksdb::Range(begin, end), &n, &bytes);
    return n;
  };
  const std::string p1 = key('\x01', 0).substr(0, 4), p2 = key('\x02', 0).substr(0, 4);
  const std::string p3 = key('\x03', 0).substr(0, 4);
  EXPECT_EQ(count(p1, p2), 4000u);  // one whole prefix
  EXPECT_EQ(count(p1, p3), 5000u);  // two
  EXPECT_EQ(count(std::string(1, '\x00'), std::string(1, '\x01')), 5000u);
  EXPECT_EQ(count(p3, key('\x04', 0)), 0u);  // none there
  // Ranges within a prefix, or across the edges of prefixes, of up to 4096
  // entries are counted, not estimated.
  EXPECT_EQ(count(key('\x01', 0), key('\x01', 2000)), 2000u);
  EXPECT_EQ(count(key('\x01', 3000), key('\x02', 500)), 1500u);
  for (char slot = '\x10'; slot < '\x18'; ++slot) {
    for (int i = 0; i < 4500; ++i) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key(slot, i), "v").ok());
    for (int from : {0, 1500, 3000}) {
      EXPECT_EQ(count(key(slot, from), key(slot, from + 1500)), 1500u) << "slot " << int(slot) << " from " << from;
    }
  }
  EXPECT_EQ(count(key('\x10', 4000), key('\x11', 1000)), 1500u);
  EXPECT_EQ(count(key('\x10', 4000), key('\x12', 1000)), 500u + 4500 + 1000);
  // Larger parts of a prefix are estimated from the skiplist's levels, as
  // RocksDB's own skiplist does (off by up to 4x either way): never less
  // than what was counted, never past the prefixes it touches.
  for (int i = 0; i < 20000; ++i) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key('\x20', i), "v").ok());
  uint64_t big = count(key('\x20', 1000), key('\x20', 11000));
  EXPECT_GE(big, 4096u);
  EXPECT_LE(big, 20000u);
}

TEST_F(SlotMemTableTest, ConcurrentWritersAndAReaderSeeOrderedData) {
  Open();
  constexpr int kWriters = 4;
  constexpr int kEach = 3000;
  std::atomic<bool> done{false};
  std::atomic<int> scans{0};
  std::atomic<bool> disordered{false};
  std::thread reader([&] {
    // Bounded: at most 200 scans, and none once the writers are done.
    while (!done.load() && scans.load() < 200) {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(Scan(false)));
      std::string last;
      bool first = true;
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        std::string k = it->key().ToString();
        if (!first && !(last < k)) disordered = true;
        last = std::move(k);
        first = false;
      }
      scans.fetch_add(1);
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 rng(100 + w);
      for (int i = 0; i < kEach; ++i) {
        // Writers share prefixes (contending on a bucket) and index words.
        std::string k = std::string{'\x00', static_cast<char>(rng() % 3), '\x00', static_cast<char>(rng() % 2)} +
                        std::to_string(w) + "-" + std::to_string(i);
        rocksdb::WriteBatch batch;
        batch.Put(k, "x");
        batch.Put(k + "+", "y");
        ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &batch).ok());
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_FALSE(disordered.load());
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(Scan(false)));
  int count = 0;
  std::string last;
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++count) {
    if (count > 0) {
      ASSERT_LT(last, it->key().ToString());
    }
    last = it->key().ToString();
  }
  EXPECT_EQ(count, kWriters * kEach * 2);
}

}  // namespace
}  // namespace shoal::storage
