#include "raft/raft_log.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

std::vector<Entry> ents(Index from, Index to, Term term) {
  std::vector<Entry> out;
  for (Index i = from; i <= to; ++i) out.push_back({term, i, EntryType::kNormal, "e"});
  return out;
}

TEST(RaftLogTest, UnstableEntriesBecomeStable) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  log.append(ents(1, 3, 1));
  EXPECT_EQ(log.last_index(), 3U);
  EXPECT_EQ(log.unstable_entries().size(), 3U);
  EXPECT_EQ(log.stable_last_index(), 0U);
  ASSERT_TRUE(s.append(ents(1, 3, 1)).ok());
  log.stable_to(3, 1);
  EXPECT_TRUE(log.unstable_entries().empty());
  EXPECT_EQ(log.stable_last_index(), 3U);
  log.stable_to(3, 2);  // a wrong term is ignored
  EXPECT_EQ(log.last_term(), 1U);
}

TEST(RaftLogTest, MaybeAppendTruncatesConflictsOnly) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  log.append(ents(1, 5, 1));
  // Mismatching previous entry: rejected.
  EXPECT_FALSE(log.maybe_append(5, 2, 0, ents(6, 6, 2)).has_value());
  // A stale, already-known prefix changes nothing.
  EXPECT_EQ(log.maybe_append(1, 1, 2, ents(2, 3, 1)), 3U);
  EXPECT_EQ(log.last_index(), 5U);
  EXPECT_EQ(log.committed(), 2U);
  // A conflict at 4 truncates the suffix.
  EXPECT_EQ(log.maybe_append(3, 1, 3, ents(4, 4, 2)), 4U);
  EXPECT_EQ(log.last_index(), 4U);
  EXPECT_EQ(log.term_or_zero(4), 2U);
}

TEST(RaftLogTest, FindConflictByTermSkipsWholeTerms) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  log.append(ents(1, 3, 1));
  log.append(ents(4, 8, 3));
  EXPECT_EQ(log.find_conflict_by_term(8, 2), (std::pair<Index, Term>{3, 1}));
  EXPECT_EQ(log.find_conflict_by_term(8, 3), (std::pair<Index, Term>{8, 3}));
  EXPECT_EQ(log.find_conflict_by_term(8, 0), (std::pair<Index, Term>{0, 0}));
}

TEST(RaftLogTest, CommitOnlyWithMatchingTerm) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  log.append(ents(1, 2, 1));
  log.append(ents(3, 3, 2));
  EXPECT_FALSE(log.maybe_commit(2, 2));
  EXPECT_TRUE(log.maybe_commit(3, 2));
  EXPECT_EQ(log.committed(), 3U);
  EXPECT_EQ(log.next_committed_entries().size(), 3U);
  log.applied_to(3);
  EXPECT_FALSE(log.has_next_committed_entries());
}

TEST(RaftLogTest, SliceSpansStorageAndUnstableWithByteLimit) {
  MemoryStorage s;
  ASSERT_TRUE(s.append(ents(1, 4, 1)).ok());
  RaftLog log(&s, kNoLimit);
  log.append(ents(5, 8, 1));
  auto all = log.slice(2, 9, kNoLimit);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 7U);
  auto some = log.slice(2, 9, 3 * entry_size(ents(1, 1, 1)[0]));
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->size(), 3U);
}

TEST(RaftLogTest, RestoreFromSnapshot) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  log.append(ents(1, 3, 1));
  Snapshot snap;
  snap.meta.index = 10;
  snap.meta.term = 4;
  log.restore(snap);
  EXPECT_EQ(log.first_index(), 11U);
  EXPECT_EQ(log.last_index(), 10U);
  EXPECT_EQ(log.committed(), 10U);
  EXPECT_EQ(log.term_or_zero(10), 4U);
  EXPECT_FALSE(log.stable_last_index().has_value());
  log.stable_snap_to(10);
  EXPECT_FALSE(log.unstable_snapshot().has_value());
}

}  // namespace
}  // namespace shoal::raft
