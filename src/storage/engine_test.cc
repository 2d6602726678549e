#include "storage/engine.h"

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
