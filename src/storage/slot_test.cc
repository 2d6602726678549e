#include "storage/slot.h"

#include <gtest/gtest.h>

#include <string>

namespace shoal::storage {
namespace {

// Vectors from the Redis Cluster specification and redis-server's own
// CLUSTER KEYSLOT answers.
TEST(Crc16, RedisClusterSpecVector) { EXPECT_EQ(Crc16("123456789"), 0x31C3); }

// Eight bytes at a time must give what one at a time gives, at every length
// and alignment.
TEST(Crc16, MatchesTheBytewiseDefinition) {
  auto bytewise = [](std::string_view data) {
    uint16_t crc = 0;
    for (unsigned char c : data) {
      crc ^= static_cast<uint16_t>(c << 8);
      for (int bit = 0; bit < 8; ++bit) {
        crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
      }
    }
    return crc;
  };
  std::string buf;
  uint32_t x = 12345;
  for (int i = 0; i < 80; ++i) {
    x = x * 1103515245u + 12345u;
    buf.push_back(static_cast<char>(x >> 16));
  }
  for (size_t from = 0; from < 8; ++from) {
    for (size_t len = 0; from + len <= buf.size(); ++len) {
      std::string_view data(buf.data() + from, len);
      ASSERT_EQ(Crc16(data), bytewise(data)) << "from " << from << " length " << len;
    }
  }
}

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
