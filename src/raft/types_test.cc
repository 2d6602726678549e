#include "raft/types.h"

#include <gtest/gtest.h>

namespace shoal::raft {
namespace {

TEST(TypesTest, ConfChangeRoundTrips) {
  ConfChange cc{{{ConfChangeType::kAddVoter, 7}, {ConfChangeType::kRemoveNode, 0x0102030405060708ULL},
                 {ConfChangeType::kAddLearner, 3}}};
  auto back = decode_conf_change(encode_conf_change(cc));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, cc);
  auto empty = decode_conf_change(encode_conf_change(ConfChange{}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->changes.empty());
}

TEST(TypesTest, MalformedConfChangeIsRejected) {
  EXPECT_FALSE(decode_conf_change("").ok());
  EXPECT_FALSE(decode_conf_change(std::string("\x02\x00", 2)).ok());  // unknown version
  std::string bad = encode_conf_change({{{ConfChangeType::kAddVoter, 1}}});
  bad.pop_back();
  EXPECT_FALSE(decode_conf_change(bad).ok());  // truncated
  bad = encode_conf_change({{{ConfChangeType::kAddVoter, 1}}});
  bad[2] = 9;
  EXPECT_FALSE(decode_conf_change(bad).ok());  // unknown type
}

TEST(TypesTest, MessageClassification) {
  EXPECT_TRUE(is_local_message(MessageType::kHup));
  EXPECT_FALSE(is_local_message(MessageType::kApp));
  EXPECT_TRUE(is_response_message(MessageType::kVoteResp));
  EXPECT_FALSE(is_response_message(MessageType::kVote));
  EXPECT_STREQ(to_string(MessageType::kSnap), "Snap");
}

TEST(TypesTest, EntrySizeCountsPayload) {
  Entry a{1, 1, EntryType::kNormal, "abc"};
  Entry b{1, 2, EntryType::kNormal, ""};
  EXPECT_EQ(entry_size(a), entry_size(b) + 3);
  EXPECT_EQ(entries_size({a, b}), entry_size(a) + entry_size(b));
}

}  // namespace
}  // namespace shoal::raft
