#include "storage/engine.h"
#include "storage/fault_engine.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace shoal::storage {
namespace {

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
  auto it = e.NewIterator(cf);
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

}  // namespace
}  // namespace shoal::storage
