#include "raft/read_only.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

TEST(ReadOnlyTest, AdvanceReleasesEarlierRequestsToo) {
  ReadOnly ro;
  ro.add(5, 2, "a", 1);
  ro.add(6, kNoNode, "b", 1);
  ro.add(7, 3, "c", 1);
  ro.add(9, 3, "c", 1);  // duplicate context: ignored
  EXPECT_EQ(ro.size(), 3U);
  EXPECT_EQ(ro.last_pending_context(), "c");
  const std::set<NodeId>* acks = ro.ack(2, "b");
  ASSERT_NE(acks, nullptr);
  EXPECT_EQ(*acks, (std::set<NodeId>{1, 2}));
  EXPECT_EQ(ro.ack(2, "zzz"), nullptr);
  auto done = ro.advance("b");
  ASSERT_EQ(done.size(), 2U);
  EXPECT_EQ(done[0].context, "a");
  EXPECT_EQ(done[0].from, 2U);
  EXPECT_EQ(done[1].index, 6U);
  EXPECT_EQ(ro.size(), 1U);
  EXPECT_TRUE(ro.advance("unknown").empty());
  ro.clear();
  EXPECT_EQ(ro.last_pending_context(), "");
}

}  // namespace
}  // namespace shoal::raft
