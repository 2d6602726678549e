#include "storage/engine.h"
#include "storage/fault_engine.h"
#include "storage/keys.h"
#include "storage/raft_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>
#include <vector>

// RocksDB's CRC-32C (not in its public headers), which the link sends to
// ours (rocksdb_crc.cc), and RocksDB's own, which --wrap names __real_.
namespace rocksdb::crc32c {
uint32_t Extend(uint32_t crc, const char* data, size_t n);
}  // namespace rocksdb::crc32c
extern "C" uint32_t __wrap__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data, size_t n);
extern "C" uint32_t __real__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data, size_t n);

namespace shoal::storage {
namespace {

TEST(RocksDbCrc, IsOursAndAgreesWithRocksDbsOwn) {
  // The link really hands RocksDB's calls to ours ...
  EXPECT_EQ(reinterpret_cast<void*>(&rocksdb::crc32c::Extend),
            reinterpret_cast<void*>(&__wrap__ZN7rocksdb6crc32c6ExtendEjPKcm));
  // ... and ours gives what RocksDB's gives (what a WAL written before
  // holds), for every length and start up to a few words, and continued.
  std::string bytes;
  for (int i = 0; i < 3000; ++i) bytes.push_back(static_cast<char>((i * 2654435761u) >> 13));
  for (size_t at = 0; at < 17; ++at) {
    for (size_t len = 0; len < 100; ++len) {
      for (uint32_t from : {0u, 0xDEADBEEFu}) {
        ASSERT_EQ(rocksdb::crc32c::Extend(from, bytes.data() + at, len),
                  __real__ZN7rocksdb6crc32c6ExtendEjPKcm(from, bytes.data() + at, len))
            << at << " " << len;
      }
    }
  }
  EXPECT_EQ(rocksdb::crc32c::Extend(0, bytes.data(), bytes.size()),
            __real__ZN7rocksdb6crc32c6ExtendEjPKcm(0, bytes.data(), bytes.size()));
  EXPECT_EQ(rocksdb::crc32c::Extend(0, "123456789", 9), 0xE3069283u);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal_engine_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Engine> Open() {
    auto r = Engine::Open({.dir = dir_.string(), .memory_budget_bytes = 64 << 20});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  }
  std::filesystem::path dir_;
};

TEST_F(EngineTest, WriteIsVisibleAndSurvivesReopen) {
  {
    auto engine = Open();
    auto batch = engine->NewBatch();
    batch->Put(Cf::kData, "slotk1", "v1");
    batch->Put(Cf::kMeta, "applied", "7");
    auto seq = engine->Write(*batch);
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, 1u);
    EXPECT_EQ(engine->durable_seq(), 0u);
    std::string v;
    ASSERT_TRUE(engine->Get(Cf::kData, "slotk1", &v).ok());
    EXPECT_EQ(v, "v1");
    EXPECT_EQ(engine->Get(Cf::kExpiry, "slotk1", &v).code(), Code::kNotFound);
    auto synced = engine->Sync();
    ASSERT_TRUE(synced.ok());
    EXPECT_EQ(*synced, 1u);
    EXPECT_EQ(engine->durable_seq(), 1u);
  }
  auto engine = Open();
  std::string v;
  ASSERT_TRUE(engine->Get(Cf::kMeta, "applied", &v).ok());
  EXPECT_EQ(v, "7");
}

// A column family written rarely (the meta records) keeps every WAL since
// its oldest unflushed write; RocksDB flushes it once the WALs pass
// max_total_wal_size. With a 256 MiB budget that is 64 MiB (it was twice
// the 64 MiB memtable budget): the WAL files on disk, all read again at a
// restart, stay near it while 150 MiB of data is written.
TEST_F(EngineTest, WalFilesStayBoundedWhileTheMetaFamilyIsWrittenRarely) {
  // RocksDB deletes obsolete WALs in the background: one may go between
  // the listing and its size, and counts for nothing then.
  auto wal_bytes = [&] {
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      if (e.path().extension() != ".log") continue;
      std::error_code size_ec;
      const uintmax_t size = std::filesystem::file_size(e.path(), size_ec);
      if (!size_ec) total += size;
    }
    return total;
  };
  uint64_t peak = 0;
  {
    auto r = Engine::Open({.dir = dir_.string(), .memory_budget_bytes = 256 << 20});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto engine = std::move(r).value();
    const std::string value(1024, 'v');
    for (int b = 0; b < 2400; ++b) {
      auto batch = engine->NewBatch();
      for (int i = 0; i < 64; ++i) {
        const int k = (b * 64 + i) % 50000;
        batch->Put(Cf::kData, std::string{static_cast<char>(k % 251), 0, 0, 0} + "key:" + std::to_string(k), value);
      }
      batch->Put(Cf::kMeta, "applied", std::to_string(b));
      ASSERT_TRUE(engine->Write(*batch).ok());
      if (b % 16 == 0) peak = std::max(peak, wal_bytes());
    }
    peak = std::max(peak, wal_bytes());
  }
  EXPECT_GT(peak, 8u << 20);           // the WALs did pile up
  // and were cut near 64 MiB, not 128 (besides what was written while the
  // meta flush waited behind data flushes, and zeros ahead of open WALs)
  EXPECT_LT(peak, 96u << 20) << peak;
  auto engine = Open();
  std::string v;
  ASSERT_TRUE(engine->Get(Cf::kMeta, "applied", &v).ok());
  EXPECT_EQ(v, "2399");
}

TEST_F(EngineTest, DeleteRangeAndIterate) {
  auto engine = Open();
  auto batch = engine->NewBatch();
  for (char c = 'a'; c <= 'e'; ++c) batch->Put(Cf::kExpiry, std::string(1, c), "x");
  ASSERT_TRUE(engine->Write(*batch).ok());
  batch->Clear();
  batch->DeleteRange(Cf::kExpiry, "b", "d");
  ASSERT_TRUE(engine->Write(*batch).ok());
  auto snap = engine->NewSnapshot();
  batch->Clear();
  batch->Put(Cf::kExpiry, "f", "x");
  ASSERT_TRUE(engine->Write(*batch).ok());
  std::string seen;
  auto it = engine->NewIterator(Cf::kExpiry, snap.get());
  for (it->SeekToFirst(); it->Valid(); it->Next()) seen += it->key();
  EXPECT_EQ(seen, "ade");
  EXPECT_TRUE(it->status().ok());
}

std::string Keys(Engine& e, Cf cf) {
  std::string seen;
  auto it = e.NewScanIterator(cf);  // all of it: a data iterator stays within one prefix
  for (it->SeekToFirst(); it->Valid(); it->Next()) seen += std::string(it->key()) + "=" + std::string(it->value()) + " ";
  return seen;
}

TEST_F(EngineTest, BatchVisitReportsEveryChangeInOrder) {
  auto engine = Open();
  auto batch = engine->NewBatch();
  batch->Put(Cf::kMeta, "a", "1");
  batch->Delete(Cf::kRaft, "b");
  batch->DeleteRange(Cf::kExpiry, "c", "d");
  struct Seen final : WriteBatch::Visitor {
    std::string out;
    void Visit(const WriteBatch::Op& op) override {
      out += std::to_string(static_cast<int>(op.kind)) + std::to_string(static_cast<int>(op.cf)) +
             std::string(op.key) + std::string(op.value) + ";";
    }
  } seen;
  batch->Visit(seen);
  EXPECT_EQ(seen.out, "02a1;13b;21cd;");
}

// A crash loses a suffix of the unsynced writes: the undone ones come back
// to what they replaced, Put, Delete and DeleteRange alike; synced ones stay.
TEST_F(EngineTest, FaultEngineLosesOnlyUnsyncedWrites) {
  auto disk = Open();
  FaultEngine engine(disk.get());
  engine.TrackUnsynced();
  auto batch = engine.NewBatch();
  batch->Put(Cf::kMeta, "a", "1");
  batch->Put(Cf::kMeta, "b", "1");
  batch->Put(Cf::kMeta, "c", "1");
  ASSERT_TRUE(engine.Write(*batch).ok());
  ASSERT_TRUE(engine.Sync().ok());
  EXPECT_EQ(engine.unsynced_writes(), 0u);
  batch->Clear();
  batch->Put(Cf::kMeta, "a", "2");
  batch->Delete(Cf::kMeta, "b");
  ASSERT_TRUE(engine.Write(*batch).ok());
  batch->Clear();
  batch->DeleteRange(Cf::kMeta, "a", "z");
  batch->Put(Cf::kMeta, "d", "3");
  ASSERT_TRUE(engine.Write(*batch).ok());
  EXPECT_EQ(Keys(engine, Cf::kMeta), "d=3 ");
  EXPECT_EQ(engine.unsynced_writes(), 2u);
  // Failed writes change nothing and leave no record.
  engine.FailNextWriteTo(Cf::kData);
  batch->Clear();
  batch->Put(Cf::kMeta, "e", "4");
  ASSERT_TRUE(engine.Write(*batch).ok());  // not a kData write: it goes through
  batch->Clear();
  batch->Put(Cf::kData, "slotk1", "v");
  EXPECT_FALSE(engine.Write(*batch).ok());
  EXPECT_EQ(engine.writes_failed(), 1);
  EXPECT_EQ(engine.unsynced_writes(), 3u);
  // The newest two are lost: the disk holds the first unsynced write.
  EXPECT_EQ(engine.LoseUnsynced(2), 2u);
  EXPECT_EQ(Keys(*disk, Cf::kMeta), "a=2 c=1 ");
  EXPECT_EQ(Keys(*disk, Cf::kData), "");
}

// Workers write from several threads at once (their batches meet in
// RocksDB's write group, whatever its write options). Each writer sees its batch whole as soon as Write returns, while another
// thread ingests a file over keys still in the memtable (RocksDB flushes
// them first) and range-deletes enough memtable keys to schedule a flush:
// neither may lose a write or stall a writer for good.
TEST_F(EngineTest, ConcurrentWritersSeeTheirBatchesThroughIngestsAndFlushes) {
  auto engine = Open();
  constexpr int kWriters = 3;
  constexpr int kBatches = 3000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  // A stuck writer would hang the test in the futures' destructors: it fails
  // it instead.
  auto check_deadline = [&] {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "writers stalled";
      std::abort();
    }
  };
  std::atomic<int> failures{0};
  std::atomic<int> written{0};
  auto writer = [&](int w) {
    auto batch = engine->NewBatch();
    for (int i = 0; i < kBatches; ++i) {
      batch->Clear();
      const std::string key = "sl" + std::to_string(w) + ":" + std::to_string(i);
      batch->Put(Cf::kData, key, "v" + std::to_string(i));
      batch->Put(Cf::kMeta, "applied" + std::to_string(w), std::to_string(i));
      if (!engine->Write(*batch).ok()) {
        ++failures;
        return;
      }
      std::string v, applied;
      if (!engine->Get(Cf::kData, key, &v).ok() || v != "v" + std::to_string(i) ||
          !engine->Get(Cf::kMeta, "applied" + std::to_string(w), &applied).ok() || applied != std::to_string(i)) {
        ++failures;
        return;
      }
      ++written;
    }
  };
  // Keys the ingest and the range delete cover, in the memtable first.
  {
    auto batch = engine->NewBatch();
    for (int i = 0; i < 200; ++i) batch->Put(Cf::kData, "zz:" + std::to_string(1000 + i), "old");
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  const std::string sst = (dir_ / "in.sst").string();
  {
    auto file = engine->NewSstWriter(Cf::kData, sst);
    ASSERT_TRUE(file->Put("zz:1000", "new").ok());
    ASSERT_TRUE(file->Put("zz:1001", "new").ok());
    ASSERT_TRUE(file->Finish().ok());
  }
  std::vector<std::future<void>> writers;
  for (int w = 0; w < kWriters; ++w) writers.push_back(std::async(std::launch::async, writer, w));
  while (written.load() < kBatches / 2 && failures.load() == 0) {
    check_deadline();
    std::this_thread::yield();
  }
  {
    auto batch = engine->NewBatch();
    batch->DeleteRange(Cf::kData, "zz:1100", "zz:1200");  // 100 memtable keys: a flush is scheduled
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  ASSERT_TRUE(engine->IngestSst(Cf::kData, sst, /*verify=*/true).ok());
  for (auto& f : writers) {
    while (f.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) check_deadline();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(written.load(), kWriters * kBatches);
  std::string v;
  ASSERT_TRUE(engine->Get(Cf::kData, "zz:1001", &v).ok());
  EXPECT_EQ(v, "new");  // the file's keys supersede the memtable's
  ASSERT_TRUE(engine->Get(Cf::kData, "zz:1002", &v).ok());
  EXPECT_EQ(v, "old");
  EXPECT_EQ(engine->Get(Cf::kData, "zz:1150", &v).code(), Code::kNotFound);
  // Every write is there after a reopen.
  engine.reset();
  engine = Open();
  for (int w = 0; w < kWriters; ++w) {
    ASSERT_TRUE(engine->Get(Cf::kData, "sl" + std::to_string(w) + ":" + std::to_string(kBatches - 1), &v).ok());
    EXPECT_EQ(v, "v" + std::to_string(kBatches - 1));
    ASSERT_TRUE(engine->Get(Cf::kMeta, "applied" + std::to_string(w), &v).ok());
    EXPECT_EQ(v, std::to_string(kBatches - 1));
  }
}

TEST_F(EngineTest, DataIteratorStaysWithinPrefix) {
  auto engine = Open();
  auto batch = engine->NewBatch();
  batch->Put(Cf::kData, std::string("\0\1\0\0a", 5), "1");
  batch->Put(Cf::kData, std::string("\0\1\0\0b", 5), "2");
  batch->Put(Cf::kData, std::string("\0\2\0\0a", 5), "3");
  ASSERT_TRUE(engine->Write(*batch).ok());
  std::string prefix("\0\1\0\0", 4), seen;
  auto it = engine->NewIterator(Cf::kData);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) seen += it->value();
  EXPECT_EQ(seen, "12");
  std::string v;
  ASSERT_TRUE(engine->Get(Cf::kData, std::string("\0\2\0\0a", 5), &v).ok());
  EXPECT_EQ(v, "3");
}

// A seek into a prefix with no live key ends there, at once: it does not walk
// on through the deleted keys of the prefixes after it to a live key (KEYS
// and SCAN seek all 16384 slots).
TEST_F(EngineTest, DataIteratorEndsAtItsPrefixPastDeletedKeys) {
  auto engine = Open();
  auto slot_key = [](int slot, int i) {
    return std::string{static_cast<char>(slot >> 8), static_cast<char>(slot & 0xff), 0, 0} + "k" + std::to_string(i);
  };
  auto batch = engine->NewBatch();
  for (int slot = 2; slot < 40; ++slot) {
    for (int i = 0; i < 50; ++i) batch->Put(Cf::kData, slot_key(slot, i), "x");
  }
  batch->Put(Cf::kData, slot_key(0, 0), "first");
  batch->Put(Cf::kData, slot_key(90, 0), "live");
  ASSERT_TRUE(engine->Write(*batch).ok());
  auto deletes = engine->NewBatch();
  for (int slot = 2; slot < 40; ++slot) {
    for (int i = 0; i < 50; ++i) deletes->Delete(Cf::kData, slot_key(slot, i));
  }
  ASSERT_TRUE(engine->Write(*deletes).ok());
  auto it = engine->NewIterator(Cf::kData);
  it->Seek(slot_key(1, 0).substr(0, 4));  // empty slot, deleted keys after it
  EXPECT_FALSE(it->Valid());
  it->Seek(slot_key(5, 0).substr(0, 4));  // only deleted keys in the slot
  EXPECT_FALSE(it->Valid());
  EXPECT_TRUE(it->status().ok());
  it->Seek(slot_key(90, 0).substr(0, 4));
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->value(), "live");
  // Backwards too: the last key before the end of slot 10 is not slot 0's.
  it->SeekForPrev(slot_key(10, 99));
  EXPECT_FALSE(it->Valid());
  // A scan iterator still crosses prefixes.
  auto scan = engine->NewScanIterator(Cf::kData);
  scan->Seek(slot_key(1, 0).substr(0, 4));
  ASSERT_TRUE(scan->Valid());
  EXPECT_EQ(scan->value(), "live");
}

// The data memtable's size estimates: a shard's size counts what is still in
// memory, and a range delete that covers many memtable entries has them
// flushed away (RocksEngine::MaybeFlushAfterRangeDelete), which needs the
// memtable to count the entries in a range.
TEST_F(EngineTest, DataMemtableCountsForSizesAndRangeDeletesFlushIt) {
  auto engine = Open();
  auto slot_key = [](int slot, int i) {
    return std::string{static_cast<char>(slot >> 8), static_cast<char>(slot & 0xff), 0, 0} + "k" + std::to_string(i);
  };
  auto slot_end = [](int slot) { return std::string{static_cast<char>(slot >> 8), static_cast<char>((slot & 0xff) + 1)}; };
  auto sst_count = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) n += e.path().extension() == ".sst";
    return n;
  };
  auto batch = engine->NewBatch();
  for (int i = 0; i < 2000; ++i) batch->Put(Cf::kData, slot_key(7, i), std::string(50, 'v'));
  ASSERT_TRUE(engine->Write(*batch).ok());
  ASSERT_EQ(sst_count(), 0);  // all of it in the memtable
  EXPECT_GT(engine->ApproximateSize(Cf::kData, slot_key(7, 0).substr(0, 4), slot_end(7)), 2000u * 50 / 2);
  EXPECT_EQ(engine->ApproximateSize(Cf::kData, slot_key(9, 0).substr(0, 4), slot_end(9)), 0u);

  auto deletes = engine->NewBatch();
  deletes->DeleteRange(Cf::kData, slot_key(7, 0).substr(0, 4), slot_end(7));
  ASSERT_TRUE(engine->Write(*deletes).ok());
  // The flush is scheduled, not waited for: bounded wait for its file.
  for (int i = 0; i < 200 && sst_count() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GT(sst_count(), 0);
  auto it = engine->NewIterator(Cf::kData);
  it->Seek(slot_key(7, 0).substr(0, 4));
  EXPECT_FALSE(it->Valid());
}

// The log keeps only its newest entries in memory; older ones are read back
// from the engine, across the boundary, with byte limits, after conflicts,
// compaction and a reopen.
TEST_F(EngineTest, RaftLogReadsEntriesNoLongerInMemory) {
  auto engine = Open();
  auto store = RaftStore::Open(engine.get(), 7);
  ASSERT_TRUE(store.ok());
  RaftStore& log = **store;
  auto entry = [](raft::Index i, raft::Term t) {
    return raft::Entry{.term = t, .index = i, .type = raft::EntryType::kNormal,
                       .data = "v" + std::to_string(i) + std::string(i % 7, 'x')};
  };
  auto append = [&](raft::Index lo, raft::Index hi, raft::Term t) {
    std::vector<raft::Entry> ents;
    for (raft::Index i = lo; i <= hi; ++i) ents.push_back(entry(i, t));
    auto batch = engine->NewBatch();
    log.Append(ents, *batch);
    ASSERT_TRUE(engine->Write(*batch).ok());
  };
  auto check = [&](RaftStore& l, raft::Index lo, raft::Index hi, raft::Term split_term, raft::Index split) {
    auto got = l.entries(lo, hi + 1, raft::kNoLimit);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), hi - lo + 1);
    for (raft::Index i = lo; i <= hi; ++i) {
      const raft::Entry want = entry(i, i < split ? 1 : split_term);
      EXPECT_EQ((*got)[i - lo].data, want.data) << i;
      EXPECT_EQ((*got)[i - lo].term, want.term) << i;
      EXPECT_EQ(*l.term(i), want.term) << i;
    }
  };
  append(1, 100, 1);
  const uint64_t all = log.log_bytes();
  EXPECT_EQ(log.cached_bytes(), all);
  log.Uncache(60, 0);  // entries 1..60 now only in the engine
  EXPECT_EQ(log.cache_start(), 61U);
  EXPECT_EQ(log.log_bytes(), all);
  EXPECT_LT(log.cached_bytes(), all);
  check(log, 1, 100, 1, 101);
  check(log, 55, 70, 1, 101);
  // A byte limit that ends inside the stored part, and one inside the cache.
  auto two = log.entries(10, 100, log.entry_bytes(10) + log.entry_bytes(11));
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2U);
  uint64_t budget = 0;
  for (raft::Index i = 58; i <= 63; ++i) budget += log.entry_bytes(i);
  auto six = log.entries(58, 100, budget);
  ASSERT_TRUE(six.ok());
  ASSERT_EQ(six->size(), 6U);
  EXPECT_EQ(six->back().index, 63U);
  // Uncache keeps the newest keep_bytes, and never goes past `upto`.
  log.Uncache(90, log.entry_bytes(100) + 1);
  EXPECT_EQ(log.cache_start(), 91U);
  log.Uncache(99, log.entry_bytes(100) + log.entry_bytes(99));
  EXPECT_EQ(log.cache_start(), 99U);
  // A conflicting suffix from 95 on (in memory, and below it on disk only).
  append(95, 110, 2);
  EXPECT_EQ(log.last_index(), 110U);
  EXPECT_EQ(log.cache_start(), 95U);
  check(log, 1, 110, 2, 95);
  log.Uncache(110, 0);
  check(log, 1, 110, 2, 95);
  // Compaction drops the oldest; what stays reads the same, after a reopen too.
  {
    auto batch = engine->NewBatch();
    log.Compact(40, *batch);
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  EXPECT_TRUE(raft::is_compacted(log.entries(40, 50, raft::kNoLimit).status()));
  check(log, 41, 110, 2, 95);
  auto again = RaftStore::Open(engine.get(), 7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->log_bytes(), log.log_bytes());
  check(**again, 41, 110, 2, 95);
  // An entry missing underneath is an error, not a short or wrong answer.
  {
    auto batch = engine->NewBatch();
    std::string key(1, 'L');
    for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>(uint64_t{7} >> (8 * i)));
    for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>(uint64_t{50} >> (8 * i)));
    batch->Delete(Cf::kRaft, key);
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  auto broken = log.entries(45, 60, raft::kNoLimit);
  EXPECT_FALSE(broken.ok());
  EXPECT_FALSE(raft::is_compacted(broken.status()));
  EXPECT_EQ(log.read_errors(), 1U);
  EXPECT_NE(log.last_read_error().ToString().find("raft group 7"), std::string::npos);
  check(log, 51, 110, 2, 95);
}

// A hard state whose commit index alone moved is kept in memory
// (NoteHardState); a new term or vote is written. At load the commit index
// is at least the log's start, which is committed.
TEST_F(EngineTest, RaftHardStateWritesTermAndVoteNotACommitAlone) {
  auto engine = Open();
  auto log = std::move(RaftStore::Open(engine.get(), 4).value());
  auto write = [&](auto&& stage) {
    auto batch = engine->NewBatch();
    stage(*batch);
    ASSERT_TRUE(engine->Write(*batch).ok());
  };
  auto stored = [&] { return std::move(RaftStore::Open(engine.get(), 4).value())->hard_state(); };
  std::vector<raft::Entry> ents;
  for (raft::Index i = 1; i <= 5; ++i) ents.push_back(raft::Entry{.term = 2, .index = i, .type = raft::EntryType::kNormal, .data = "e"});
  write([&](WriteBatch& b) {
    log->Append(ents, b);
    log->NoteHardState(raft::HardState{.term = 2, .vote = 1, .commit = 1}, b);
  });
  EXPECT_EQ(stored(), (raft::HardState{.term = 2, .vote = 1, .commit = 1}));
  write([&](WriteBatch& b) { log->NoteHardState(raft::HardState{.term = 2, .vote = 1, .commit = 4}, b); });
  EXPECT_EQ(log->hard_state().commit, 4u);
  EXPECT_EQ(stored(), (raft::HardState{.term = 2, .vote = 1, .commit = 1}));
  // Compacted up to 3: committed, whatever the record says.
  write([&](WriteBatch& b) { log->Compact(3, b); });
  EXPECT_EQ(stored(), (raft::HardState{.term = 2, .vote = 1, .commit = 3}));
  write([&](WriteBatch& b) { log->NoteHardState(raft::HardState{.term = 3, .vote = 2, .commit = 5}, b); });
  EXPECT_EQ(stored(), (raft::HardState{.term = 3, .vote = 2, .commit = 5}));
}

// A deferred append (a lone group's entries committed as they are logged)
// leaves no records where the batch that would hold them also holds their
// applies: the log starts after them, and what it held on disk before goes.
// Where the batch is written before they are applied, their records are
// staged as usual. Either way a reopen sees a log without gaps.
TEST_F(EngineTest, RaftLogDeferredAppendsLeaveNoRecordsOnceApplied) {
  auto engine = Open();
  auto log = std::move(RaftStore::Open(engine.get(), 9).value());
  auto entries = [](raft::Index lo, raft::Index hi) {
    std::vector<raft::Entry> ents;
    for (raft::Index i = lo; i <= hi; ++i) {
      ents.push_back(raft::Entry{.term = 2, .index = i, .type = raft::EntryType::kNormal, .data = "e" + std::to_string(i)});
    }
    return ents;
  };
  auto records = [&] {
    std::vector<raft::Index> out;
    std::string prefix(1, 'L');
    for (int i = 7; i >= 0; --i) prefix.push_back(static_cast<char>(uint64_t{9} >> (8 * i)));
    auto it = engine->NewIterator(Cf::kRaft);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      raft::Entry e;
      EXPECT_TRUE(DecodeRaftEntry(it->value(), &e));
      out.push_back(e.index);
    }
    return out;
  };
  auto round = [&](raft::Index lo, raft::Index hi, raft::Index applied_at_write) {
    auto batch = engine->NewBatch();
    log->Append(entries(lo, hi), *batch, true);
    log->SetHardState(raft::HardState{.term = 2, .vote = 1, .commit = hi}, *batch);
    EXPECT_TRUE(log->has_deferred());
    log->FinishDeferred(*batch, applied_at_write);
    EXPECT_FALSE(log->has_deferred());
    ASSERT_TRUE(engine->Write(*batch).ok());
  };
  // Written before they are applied: logged.
  round(1, 3, 0);
  EXPECT_EQ(records(), (std::vector<raft::Index>{1, 2, 3}));
  EXPECT_EQ(log->first_index(), 1U);
  // Applied in the same write: no records, and 1..3 go with them.
  round(4, 6, 6);
  EXPECT_EQ(records(), std::vector<raft::Index>{});
  EXPECT_EQ(log->first_index(), 7U);
  EXPECT_EQ(log->last_index(), 6U);
  EXPECT_EQ(*log->term(6), 2U);
  EXPECT_EQ(log->log_bytes(), 0U);
  // Applied only in part: all logged.
  round(7, 9, 8);
  EXPECT_EQ(records(), (std::vector<raft::Index>{7, 8, 9}));
  // A later append stages a pending one itself.
  {
    auto batch = engine->NewBatch();
    log->Append(entries(10, 10), *batch, true);
    log->Append(entries(11, 12), *batch);
    EXPECT_FALSE(log->has_deferred());
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  EXPECT_EQ(records(), (std::vector<raft::Index>{7, 8, 9, 10, 11, 12}));
  // Applied: the log starts after 13, 7..12 are deleted with it.
  round(13, 13, 13);
  EXPECT_EQ(records(), std::vector<raft::Index>{});
  auto again = std::move(RaftStore::Open(engine.get(), 9).value());
  EXPECT_EQ(again->first_index(), 14U);
  EXPECT_EQ(again->last_index(), 13U);
  EXPECT_EQ(*again->term(13), 2U);
  EXPECT_EQ(again->hard_state().commit, 13U);
  // Deferred entries stay in memory until they are written, whatever
  // Uncache is asked; a snapshot drops them.
  {
    auto batch = engine->NewBatch();
    log->Append(entries(14, 15), *batch, true);
    log->Uncache(15, 0);
    EXPECT_EQ(log->cache_start(), 14U);
    raft::SnapshotMeta meta;
    meta.index = 20;
    meta.term = 3;
    meta.conf_state.voters = {1};
    log->ApplySnapshot(meta, *batch);
    EXPECT_FALSE(log->has_deferred());
    log->FinishDeferred(*batch, 20);
    ASSERT_TRUE(engine->Write(*batch).ok());
  }
  EXPECT_EQ(records(), std::vector<raft::Index>{});
  EXPECT_EQ(log->first_index(), 21U);
}

// MultiGet gives each key what Get gives it: from files and memtables, over
// deletes, for keys asked twice, in batches past RocksDB's 32, under a
// snapshot, and through a FaultEngine.
TEST_F(EngineTest, MultiGetAnswersEachKeyAsGetDoes) {
  auto key = [](int i) { return DataKeyInSlot(static_cast<uint16_t>(i % 7), 0, "key" + std::to_string(i)); };
  auto value = [](int i) { return std::string(static_cast<size_t>(1 + (i * 37) % 5000), static_cast<char>('a' + i % 26)); };
  {
    auto engine = Open();
    auto batch = engine->NewBatch();
    for (int i = 0; i < 60; ++i) batch->Put(Cf::kData, key(i), value(i));
    ASSERT_TRUE(engine->Write(*batch).ok());
  }  // closed: flushed into a file
  auto engine = Open();
  auto batch = engine->NewBatch();
  for (int i = 10; i < 20; ++i) batch->Put(Cf::kData, key(i), value(i + 1000));
  for (int i = 20; i < 30; ++i) batch->Delete(Cf::kData, key(i));
  for (int i = 60; i < 70; ++i) batch->Put(Cf::kData, key(i), value(i));
  ASSERT_TRUE(engine->Write(*batch).ok());

  std::vector<std::string> asked;  // 0..79 (70..79 never written), shuffled, some twice
  for (int i = 0; i < 80; ++i) asked.push_back(key((i * 31) % 80));
  for (int i = 0; i < 20; ++i) asked.push_back(key(i * 3));
  auto check = [&](Engine& e, const Snapshot* snap) {
    std::vector<std::string_view> views(asked.begin(), asked.end());
    std::vector<std::string> values(asked.size(), "stale");
    std::vector<Status> statuses(asked.size());
    e.MultiGet(Cf::kData, views, values, statuses, snap);
    int found = 0;
    for (size_t i = 0; i < asked.size(); ++i) {
      std::string want;
      Status s = e.Get(Cf::kData, asked[i], &want, snap);
      EXPECT_EQ(statuses[i].code(), s.code()) << i;
      if (s.ok()) {
        EXPECT_EQ(values[i], want) << i;
        ++found;
      }
    }
    return found;
  };
  // 0..19 and 30..69 exist: 60 of the first 80 asked, 17 of the 20 repeats
  // (0, 3 ... 57).
  EXPECT_EQ(check(*engine, nullptr), 60 + 17);

  auto snap = engine->NewSnapshot();
  auto later = engine->NewBatch();
  for (int i = 0; i < 5; ++i) later->Delete(Cf::kData, key(i));
  later->Put(Cf::kData, key(75), "late");
  ASSERT_TRUE(engine->Write(*later).ok());
  EXPECT_EQ(check(*engine, snap.get()), 60 + 17);
  EXPECT_EQ(check(*engine, nullptr), 60 + 17 - 5 - 2 + 1);  // 0..4 gone (0 and 3 twice), 75 new

  FaultEngine faults(engine.get());
  EXPECT_EQ(check(faults, nullptr), 60 + 17 - 5 - 2 + 1);
}

}  // namespace
}  // namespace shoal::storage
