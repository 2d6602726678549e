// The memtable against a model (std::map), through a real RocksDB: every way
// our code reads (point, forward and reverse scans, prefix and total order,
// seeks to targets between, before and after the keys), with flushes, and
// with writers inserting concurrently while a reader scans. Both kinds of
// prefix: the data's four bytes, and whole record keys (the meta and Raft
// column families), where thousands of buckets share their first two bytes.
#include "storage/slot_memtable.h"

#include "storage/keys.h"

#include <gtest/gtest.h>
#include <rocksdb/comparator.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/slice_transform.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

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

  // `prefix` past 4: record keys, as the meta and Raft column families
  // (which read in total order only: no prefix extractor).
  void Open(size_t write_buffer = 64 << 20, size_t prefix = 4) {
    prefix_ = prefix;
    rocksdb::Options o;
    o.create_if_missing = true;
    factory_ = NewSlotMemTableFactory(prefix_);
    o.memtable_factory = factory_;
    if (!Records()) o.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(prefix_));
    o.memtable_whole_key_filtering = true;
    o.memtable_prefix_bloom_size_ratio = 0.05;
    o.allow_concurrent_memtable_write = true;
    o.write_buffer_size = write_buffer;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(o, dir_.string(), &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }

  bool Records() const { return prefix_ > 4; }

  // A key from a small alphabet, so that prefixes repeat and collide on
  // their first two bytes; with `short_keys`, some are shorter than a prefix
  // (RocksDB's prefix iterators assert that every key has one). Records, as
  // the Raft and meta column families write them, for one of 700 groups or
  // shards, all with the same first two bytes; two meta names are longer
  // than a prefix and alike up to past it (one bucket).
  std::string RandomKey(std::mt19937& rng, bool short_keys) const {
    if (Records()) {
      std::string k = RecordKey(rng() % 700, rng() % 5);
      if (short_keys && rng() % 8 == 0) k.resize(rng() % k.size());
      return k;
    }
    static const char kBytes[] = {'\x00', '\x01', '\x7f', '\x80', '\xff'};
    std::string k;
    size_t len = short_keys && rng() % 8 == 0 ? rng() % (prefix_ + 1) : prefix_ + rng() % 5;
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

  // Record `variant` (0..4) of group or shard `id`.
  std::string RecordKey(uint64_t id, uint32_t variant) const {
    std::string k;
    if (prefix_ == kRaftKeyPrefixBytes) {
      // [kind][group]: a group's records, and its log entries ('L').
      static const char kKinds[] = {'C', 'H', 'L', 'L', 'S'};
      k.push_back(kKinds[variant % 5]);
      PutU64BE(&k, id);
      if (k[0] == 'L') PutU64BE(&k, variant);
    } else {
      static const char* kNames[] = {"a", "applied", "k0", "a-name-longer-than-a-prefix-of-32-bytes-1",
                                     "a-name-longer-than-a-prefix-of-32-bytes-2"};
      k = "shard/" + std::to_string(id) + "/" + kNames[variant % 5];
    }
    return k;
  }

  bool SamePrefix(const std::string& a, const std::string& b) const {
    return a.size() >= prefix_ && b.size() >= prefix_ && a.compare(0, prefix_, b, 0, prefix_) == 0;
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
      if (!prefix_reads || target.size() < prefix_) continue;
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

  // `writes` random keys, one in `delete_one_in` deleted, the rest put, to
  // the memtable and the model alike.
  void WriteRandomly(std::mt19937& rng, int round, int writes, unsigned delete_one_in,
                     std::map<std::string, std::string>& model) {
    for (int i = 0; i < writes; ++i) {
      std::string k = RandomKey(rng, false);
      if (rng() % delete_one_in == 0) {
        ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), k).ok());
        model.erase(k);
      } else {
        std::string v = "v" + std::to_string(round) + "." + std::to_string(i);
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, v).ok());
        model[k] = v;
      }
    }
  }

  // A reader scanning in total order, at most 200 times and not once
  // `done`, that sets `disordered` if a key does not follow the one before.
  std::thread Scanner(const std::atomic<bool>& done, std::atomic<bool>& disordered) {
    return std::thread([this, &done, &disordered] {
      for (int scans = 0; scans < 200 && !done.load(); ++scans) {
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(Scan(false)));
        std::string last;
        bool first = true;
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          std::string k = it->key().ToString();
          if (!first && !(last < k)) disordered = true;
          last = std::move(k);
          first = false;
        }
      }
    });
  }

  void CheckRecords(size_t prefix);
  void CheckConcurrentRecords(size_t prefix);

  std::filesystem::path dir_;
  std::unique_ptr<rocksdb::DB> db_;
  size_t prefix_ = 4;
  std::shared_ptr<rocksdb::MemTableRepFactory> factory_;
};

TEST_F(SlotMemTableTest, ReadsMatchAModelInTheMemtable) {
  Open();
  std::mt19937 rng(7);
  std::map<std::string, std::string> model;
  for (int round = 0; round < 4; ++round) {
    WriteRandomly(rng, round, 1500, 4, model);
    if (HasFatalFailure()) return;
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
  for (const auto& [k, v] : model) short_ones += k.size() < prefix_;
  ASSERT_GT(short_ones, 10u);
  CheckAgainst(model, rng, false);
}

// Hash-tagged keys: a few buckets of thousands of keys that share a long
// stretch after the prefix and differ in tails of any length and any bytes
// (the word-wise compare, its tail and its ties of length), written in
// batches whose searches are walked first (PrefetchForWrites with keys).
TEST_F(SlotMemTableTest, KeysSharingLongStretchesKeepTheOrder) {
  Open();
  std::mt19937 rng(13);
  static const char kBytes[] = {'\x00', '\x01', '\x7f', '\x80', '\xff', 'a'};
  std::map<std::string, std::string> model;
  for (int batch = 0; batch < 300; ++batch) {
    rocksdb::WriteBatch wb;
    std::vector<std::string> keys;
    for (int i = 0; i < 1 + static_cast<int>(rng() % 60); ++i) {
      std::string k{'\x00', static_cast<char>(rng() % 2), '\x00', '\x00'};
      k += rng() % 4 == 0 ? "{user:1000}:" : "{user:1000}:key:0000000";
      for (size_t n = rng() % 21; n > 0; --n) k.push_back(kBytes[rng() % 6]);
      std::string v = "v" + std::to_string(batch) + "." + std::to_string(i);
      ASSERT_TRUE(wb.Put(k, v).ok());
      model[k] = v;
      keys.push_back(std::move(k));
    }
    std::vector<std::string_view> views(keys.begin(), keys.end());
    std::vector<uint32_t> prefixes;
    for (const auto& k : keys) prefixes.push_back(static_cast<uint32_t>(static_cast<uint8_t>(k[1])) << 16);
    PrefetchForWrites(factory_.get(), prefixes, views);
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &wb).ok());
  }
  ASSERT_GT(model.size(), 1500u);
  CheckAgainst(model, rng, true);
}

// An insert whose key was walked (PrefetchForWrites with keys) carries on
// from where the walk went down. Walks that do not match the write that
// follows (another order, other keys, none at all, another memtable since),
// and writes linked in between a walk and its insert (a key of the batch,
// another write, a bucket grown a level), must leave the order and every
// key's newest value as they would be, and cost an insert few steps.
TEST_F(SlotMemTableTest, InsertsCarryOnFromTheirWalksPastWhatCameSince) {
  Open();
  std::mt19937 rng(21);
  std::map<std::string, std::string> model;
  auto key = [&] {
    // Mostly one big bucket (a hash tag), some keys of small ones (never
    // walked: under 64 keys each).
    std::string k{'\x00', rng() % 8 == 0 ? static_cast<char>(2 + rng() % 200) : '\x01', '\x00', '\x00'};
    return k + "{tag}:key:" + std::to_string(rng() % 3000);
  };
  auto put = [&](rocksdb::WriteBatch& wb, const std::string& k, const std::string& v) {
    if (rng() % 10 == 0) {
      ASSERT_TRUE(wb.Delete(k).ok());
      model.erase(k);
    } else {
      ASSERT_TRUE(wb.Put(k, v).ok());
      model[k] = v;
    }
  };
  // Walks `walked`, then writes `keys` (values tagged with `tag`).
  auto write = [&](const std::vector<std::string>& walked, const std::vector<std::string>& keys,
                   const std::string& tag) {
    std::vector<std::string_view> views(walked.begin(), walked.end());
    std::vector<uint32_t> prefixes;
    for (const auto& k : walked) prefixes.push_back(static_cast<uint32_t>(static_cast<uint8_t>(k[1])) << 16);
    PrefetchForWrites(factory_.get(), prefixes, views);
    rocksdb::WriteBatch wb;
    for (size_t i = 0; i < keys.size(); ++i) put(wb, keys[i], tag + "." + std::to_string(i));
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &wb).ok());
  };
  for (int i = 0; i < 3000; ++i) {  // the big bucket is walked from 64 keys on
    std::string k = key();
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, "fill").ok());
    model[k] = "fill";
  }
  const WalkedInserts before = WalkedInsertsOnThisThread();
  for (int round = 0; round < 400; ++round) {
    std::vector<std::string> keys;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      keys.push_back(key());
      if (rng() % 6 == 0) keys.push_back(keys.back());  // a key twice in a batch
    }
    std::vector<std::string> walked = keys;
    const int kind = static_cast<int>(rng() % 6);
    if (kind == 1) std::shuffle(walked.begin(), walked.end(), rng);  // another order
    if (kind == 2) {
      for (auto& k : walked) k = key();  // other keys
    }
    if (kind == 3) walked.clear();  // no walk: last round's walks are not this one's
    std::vector<std::string_view> views(walked.begin(), walked.end());
    std::vector<uint32_t> prefixes;
    for (const auto& k : walked) prefixes.push_back(static_cast<uint32_t>(static_cast<uint8_t>(k[1])) << 16);
    PrefetchForWrites(factory_.get(), prefixes, views);
    if (kind == 4) {  // another write between the walk and its write
      rocksdb::WriteBatch between;
      for (int i = 0; i < 20; ++i) put(between, key(), "between" + std::to_string(round) + "." + std::to_string(i));
      ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &between).ok());
    }
    if (kind == 5) {  // walked in another memtable
      ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
    }
    rocksdb::WriteBatch wb;
    for (size_t i = 0; i < keys.size(); ++i) put(wb, keys[i], "v" + std::to_string(round) + "." + std::to_string(i));
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &wb).ok());
  }
  // Most inserts into the big bucket in rounds that walked them carried on
  // from their walk.
  const WalkedInserts mixed = WalkedInsertsOnThisThread();
  EXPECT_GT(mixed.inserts - before.inserts, 1200u);

  // The rounds may have flushed lately: the big bucket gets 100 keys more in
  // the active memtable, so that it is walked (from 64 keys) below.
  for (int i = 0; i < 100; ++i) {
    const std::string k = std::string{'\x00', '\x01', '\x00', '\x00'} + "{tag}:key:" + std::to_string(i);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, "refill").ok());
    model[k] = "refill";
  }

  // 256 new keys, in order, all in one gap of the big bucket: each walk went
  // down at the same nodes, so the insert of the i-th would step past the
  // i - 1 linked before it on level 0. It carries on from the node linked
  // last instead (and past a few steps, it would search from the top).
  {
    std::vector<std::string> keys;
    for (int i = 0; i < 256; ++i) {
      char tail[8];
      std::snprintf(tail, sizeof(tail), "a%03d", i);
      keys.push_back(std::string{'\x00', '\x01', '\x00', '\x00'} + "{tag}:key:1500" + tail);
    }
    const WalkedInserts start = WalkedInsertsOnThisThread();
    write(keys, keys, "gap");
    const WalkedInserts end = WalkedInsertsOnThisThread();
    ASSERT_GT(end.inserts - start.inserts, 200u);
    EXPECT_LT(end.steps - start.steps, 2 * (end.inserts - start.inserts)) << end.steps - start.steps;
  }

  // Another write puts 200 keys in the gap a key was walked to, between its
  // walk and its insert: that insert takes a few steps from its walk, then
  // searches from the top.
  {
    const std::string gap = std::string{'\x00', '\x01', '\x00', '\x00'} + "{tag}:key:2500";
    std::vector<std::string> crowd;
    for (int i = 0; i < 200; ++i) {
      char tail[8];
      std::snprintf(tail, sizeof(tail), "b%03d", i);
      crowd.push_back(gap + tail);
    }
    const std::vector<std::string> last{gap + "c"};
    std::vector<std::string_view> views(last.begin(), last.end());
    PrefetchForWrites(factory_.get(), std::vector<uint32_t>{0x00010000}, views);
    rocksdb::WriteBatch between;
    for (size_t i = 0; i < crowd.size(); ++i) put(between, crowd[i], "crowd." + std::to_string(i));
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &between).ok());  // not walked: takes no hint
    const WalkedInserts start = WalkedInsertsOnThisThread();
    rocksdb::WriteBatch wb;
    put(wb, last[0], "after the crowd");
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &wb).ok());
    const WalkedInserts end = WalkedInsertsOnThisThread();
    ASSERT_EQ(end.inserts - start.inserts, 1u);
    EXPECT_LT(end.steps - start.steps, 64u);
  }

  // Fresh buckets of 70 keys, each then given 256 walked keys in one batch:
  // the bucket grows levels that its walks did not see.
  for (int b = 0; b < 8; ++b) {
    const std::string prefix{'\x00', static_cast<char>(0xf0 + b), '\x00', '\x00'};
    std::vector<std::string> fill, keys;
    for (int i = 0; i < 70; ++i) fill.push_back(prefix + "fill:" + std::to_string(rng()));
    write({}, fill, "fill" + std::to_string(b));
    for (int i = 0; i < 256; ++i) keys.push_back(prefix + "new:" + std::to_string(rng()));
    write(keys, keys, "grown" + std::to_string(b));
  }

  CheckAgainst(model, rng, true);
  for (const auto& [k, v] : model) {
    std::string got;
    ASSERT_TRUE(db_->Get(rocksdb::ReadOptions(), k, &got).ok()) << k;
    ASSERT_EQ(got, v) << k;
  }
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
  std::atomic<bool> disordered{false};
  std::thread reader = Scanner(done, disordered);
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

// Prefetching for writes reads the newest memtable while others are made
// and destroyed (flushes every few writes): it must never read one that is
// gone (ASan would say so), and changes nothing that is read.
TEST_F(SlotMemTableTest, PrefetchForWritesWhileMemtablesComeAndGo) {
  Open(64 << 10);
  std::atomic<bool> done{false};
  std::thread prefetcher([&] {
    std::mt19937 rng(7);
    std::vector<uint32_t> prefixes(100);
    std::vector<std::string> keys(100);
    std::vector<std::string_view> views(100);
    for (int round = 0; round < 200000 && !done; ++round) {
      for (size_t i = 0; i < prefixes.size(); ++i) {
        prefixes[i] = static_cast<uint32_t>(rng() % 3) << 16 | static_cast<uint32_t>(rng() % 2);
        // The searches of these keys are walked too once their buckets are
        // big, while the writer below inserts into them.
        keys[i] = std::string{'\x00', static_cast<char>(prefixes[i] >> 16), '\x00',
                              static_cast<char>(prefixes[i] & 1)} + std::to_string(rng() % 500);
        views[i] = keys[i];
      }
      PrefetchForWrites(factory_.get(), prefixes, round % 2 == 0 ? std::span<const std::string_view>(views)
                                                                 : std::span<const std::string_view>());
    }
  });
  std::map<std::string, std::string> model;
  std::mt19937 rng(8);
  for (int i = 0; i < 3000; ++i) {
    std::string k = std::string{'\x00', static_cast<char>(rng() % 3), '\x00', static_cast<char>(rng() % 2)} +
                    std::to_string(rng() % 500);
    std::string v(200 + rng() % 300, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, v).ok());
    model[k] = v;
    if (i % 100 == 99) {
      ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
    }
  }
  done = true;
  prefetcher.join();
  for (const auto& [k, v] : model) {
    std::string got;
    ASSERT_TRUE(db_->Get(rocksdb::ReadOptions(), k, &got).ok());
    EXPECT_EQ(got, v);
  }
  // Once the database is closed its memtables are gone: nothing is read.
  db_.reset();
  PrefetchForWrites(factory_.get(), std::vector<uint32_t>{0x00010000, 0x00000001});
  // Another factory's memtables are left alone.
  auto skiplist = std::shared_ptr<rocksdb::MemTableRepFactory>(new rocksdb::SkipListFactory);
  PrefetchForWrites(skiplist.get(), std::vector<uint32_t>{1, 2, 3});
  PrefetchForWrites(nullptr, std::vector<uint32_t>{1});
}

// The meta and Raft column families: every round writes a new version of
// the same records. Thousands of record buckets (their hash table grows
// several times), versions, deletes, keys that share a bucket, and flushes.
TEST_F(SlotMemTableTest, RecordBucketsMatchAModel) {
  for (size_t prefix : {kRaftKeyPrefixBytes, kMetaKeyPrefixBytes}) {
    SCOPED_TRACE("prefix " + std::to_string(prefix));
    db_.reset();
    std::filesystem::remove_all(dir_);
    CheckRecords(prefix);
    if (HasFatalFailure()) return;
  }
}

TEST_F(SlotMemTableTest, ConcurrentWritersOfRecordsAndReadersSeeOrderedData) {
  for (size_t prefix : {kRaftKeyPrefixBytes, kMetaKeyPrefixBytes}) {
    SCOPED_TRACE("prefix " + std::to_string(prefix));
    db_.reset();
    std::filesystem::remove_all(dir_);
    CheckConcurrentRecords(prefix);
    if (HasFatalFailure()) return;
  }
}

void SlotMemTableTest::CheckRecords(size_t prefix) {
  Open(256 << 10, prefix);
  std::mt19937 rng(13);
  std::map<std::string, std::string> model;
  for (int round = 0; round < 4; ++round) {
    WriteRandomly(rng, round, 6000, 6, model);
    if (HasFatalFailure()) return;
    CheckAgainst(model, rng, false);
  }
  ASSERT_GT(model.size(), 2000u);
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  CheckAgainst(model, rng, false);
}

void SlotMemTableTest::CheckConcurrentRecords(size_t prefix) {
  Open(64 << 20, prefix);
  // Records written before the threads start: a seek to one finds it.
  std::mt19937 pre_rng(300);
  std::vector<std::string> preloaded;
  for (int i = 0; i < 300; ++i) {
    preloaded.push_back(RandomKey(pre_rng, false));
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), preloaded.back(), "pre").ok());
  }
  std::set<std::string> before(preloaded.begin(), preloaded.end());
  std::atomic<bool> done{false};
  std::atomic<bool> disordered{false};
  std::thread reader = Scanner(done, disordered);
  // Writer w writes new records (ids w, w + 4, ...: each write may make a
  // bucket) and versions of old ones, and says how far it got.
  constexpr int kWriters = 4;
  constexpr int kEach = 1500;
  std::array<std::atomic<int>, kWriters> progress{};
  // Seeks both ways, to records that exist, to records a writer is about to
  // make (a seek may land in a bucket being made), and to any target, each
  // with steps both ways.
  std::atomic<bool> misplaced{false};
  std::thread seeker([&] {
    std::mt19937 rng(400);
    std::unique_ptr<rocksdb::Iterator> it;
    for (int i = 0; i < 20000 && !done.load(); ++i) {
      if (i % 50 == 0) it.reset(db_->NewIterator(Scan(false)));
      const int kind = static_cast<int>(rng() % 4);
      const bool known = kind == 0;
      const int w = static_cast<int>(rng() % kWriters);
      const int at_write = progress[w].load();
      const std::string target = known ? preloaded[rng() % preloaded.size()]
                                 : kind == 3
                                     ? RandomKey(rng, true)
                                     : RecordKey(1000 + at_write * kWriters + w, static_cast<uint32_t>(at_write));
      const bool forward = rng() % 2 == 0;
      if (forward) {
        it->Seek(target);
      } else {
        it->SeekForPrev(target);
      }
      if (known && (!it->Valid() || it->key().ToString() != target)) misplaced = true;
      // Nothing is deleted, so the records written before the seeker began
      // bound where a seek may land: at or before the first of them at or
      // after the target, at or after the last at or before it.
      if (forward) {
        auto bound = before.lower_bound(target);
        if (bound != before.end() && (!it->Valid() || it->key().ToString() > *bound)) misplaced = true;
      } else {
        auto bound = before.upper_bound(target);
        if (bound != before.begin() && (!it->Valid() || it->key().ToString() < *std::prev(bound))) misplaced = true;
      }
      if (!it->Valid()) continue;
      std::string at = it->key().ToString();
      if (forward ? at < target : at > target) misplaced = true;
      for (int step = 0; step < 3 && it->Valid(); ++step) {
        if (forward) {
          it->Prev();
        } else {
          it->Next();
        }
        if (!it->Valid()) break;
        std::string next = it->key().ToString();
        if (forward ? !(next < at) : !(next > at)) misplaced = true;
        at = std::move(next);
      }
    }
  });
  // Writers make buckets at once (growing the hash table under each other's
  // lookups) and write new versions of each other's records.
  std::vector<std::set<std::string>> written(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 rng(200 + w);
      for (int i = 0; i < kEach; ++i) {
        progress[w].store(i);
        std::string k = i % 4 != 3 ? RecordKey(1000 + i * kWriters + w, static_cast<uint32_t>(i)) : RandomKey(rng, false);
        written[w].insert(k);
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, std::to_string(w)).ok());
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  seeker.join();
  EXPECT_FALSE(disordered.load());
  EXPECT_FALSE(misplaced.load());
  std::set<std::string> all = before;
  for (const auto& s : written) all.insert(s.begin(), s.end());
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(Scan(false)));
  auto want = all.begin();
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++want) {
    ASSERT_NE(want, all.end());
    ASSERT_EQ(it->key().ToString(), *want);
    std::string v;
    ASSERT_TRUE(db_->Get(rocksdb::ReadOptions(), *want, &v).ok());
    ASSERT_EQ(v, it->value().ToString());
  }
  EXPECT_EQ(want, all.end());
}

// Its compares are bytewise, inline: with any other comparator it stops the
// node when a memtable is made rather than misorder keys.
TEST(SlotMemTableDeathTest, StopsUnderAComparatorThatIsNotBytewise) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("shoal_slot_memtable_death_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  EXPECT_DEATH(
      {
        rocksdb::Options o;
        o.create_if_missing = true;
        o.comparator = rocksdb::ReverseBytewiseComparator();
        o.memtable_factory = NewSlotMemTableFactory(4);
        rocksdb::DB* raw = nullptr;
        auto s = rocksdb::DB::Open(o, dir.string(), &raw);
        delete raw;
      },
      "check failed");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shoal::storage
