#include "raft/storage.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

std::vector<Entry> ents(Index from, Index to, Term term) {
  std::vector<Entry> out;
  for (Index i = from; i <= to; ++i) out.push_back({term, i, EntryType::kNormal, "e" + std::to_string(i)});
  return out;
}

TEST(MemoryStorageTest, AppendReadAndTruncate) {
  MemoryStorage s;
  EXPECT_EQ(s.first_index(), 1U);
  EXPECT_EQ(s.last_index(), 0U);
  ASSERT_TRUE(s.append(ents(1, 5, 1)).ok());
  EXPECT_EQ(s.last_index(), 5U);
  EXPECT_EQ(*s.term(3), 1U);
  ASSERT_TRUE(s.append(ents(4, 6, 2)).ok());  // overwrites 4..5
  EXPECT_EQ(s.last_index(), 6U);
  EXPECT_EQ(*s.term(4), 2U);
  EXPECT_EQ(*s.term(3), 1U);
  EXPECT_FALSE(s.append(ents(9, 9, 2)).ok());  // gap
  auto got = s.entries(2, 7, kNoLimit);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 5U);
}

TEST(MemoryStorageTest, EntriesRespectByteLimitButReturnOne) {
  MemoryStorage s;
  ASSERT_TRUE(s.append(ents(1, 5, 1)).ok());
  auto one = s.entries(1, 6, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1U);
  auto two = s.entries(1, 6, 2 * entry_size(ents(1, 1, 1)[0]));
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2U);
}

TEST(MemoryStorageTest, CompactionAndSnapshots) {
  MemoryStorage s;
  ASSERT_TRUE(s.append(ents(1, 10, 1)).ok());
  ConfState cs{{1, 2, 3}, {}, {}};
  ASSERT_TRUE(s.create_snapshot(6, cs, "state").ok());
  ASSERT_TRUE(s.compact(6).ok());
  EXPECT_EQ(s.first_index(), 7U);
  EXPECT_TRUE(is_compacted(s.entries(5, 8, kNoLimit).status()));
  EXPECT_TRUE(is_compacted(s.term(5).status()));
  EXPECT_EQ(*s.term(6), 1U);  // the snapshot's term stays known
  EXPECT_EQ(s.snapshot()->meta.index, 6U);
  EXPECT_EQ(s.initial_state()->conf_state, cs);
  EXPECT_FALSE(s.create_snapshot(5, cs, "old").ok());
  Snapshot newer = bootstrap_snapshot(cs, "x");
  newer.meta.index = 20;
  newer.meta.term = 3;
  ASSERT_TRUE(s.apply_snapshot(newer).ok());
  EXPECT_EQ(s.first_index(), 21U);
  EXPECT_EQ(s.last_index(), 20U);
}

}  // namespace
}  // namespace shoal::raft
