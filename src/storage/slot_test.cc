#include "storage/slot.h"

#include <gtest/gtest.h>

namespace shoal::storage {
namespace {

// Vectors from the Redis Cluster specification and redis-server's own
// CLUSTER KEYSLOT answers.
TEST(Crc16, RedisClusterSpecVector) { EXPECT_EQ(Crc16("123456789"), 0x31C3); }

TEST(KeySlot, KnownSlots) {
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("bar"), 5061);
  EXPECT_EQ(KeySlot("123456789"), 0x31C3 % kSlotCount);
}

TEST(KeySlot, HashTagRules) {
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("{user1000}.followers"));
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  // An empty tag hashes the whole key.
  EXPECT_EQ(KeySlot("foo{}{bar}"), Crc16("foo{}{bar}") % kSlotCount);
  // Only up to the first '}' after the first '{'.
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));
  EXPECT_EQ(KeySlot("foo{bar}{zap}"), KeySlot("bar"));
  // No closing brace: the whole key.
  EXPECT_EQ(KeySlot("foo{bar"), Crc16("foo{bar") % kSlotCount);
  EXPECT_EQ(KeySlot(""), 0);
}

}  // namespace
}  // namespace shoal::storage
