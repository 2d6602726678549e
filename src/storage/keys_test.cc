#include "storage/keys.h"

#include <gtest/gtest.h>

#include "storage/slot.h"

namespace shoal::storage {
namespace {

TEST(Keys, DataKeyRoundTrip) {
  std::string raw = DataKey(7, std::string("a\0b", 3));
  DecodedDataKey d;
  ASSERT_TRUE(DecodeDataKey(raw, &d));
  EXPECT_EQ(d.slot, KeySlot(std::string("a\0b", 3)));
  EXPECT_EQ(d.db, 7);
  EXPECT_EQ(d.key, std::string("a\0b", 3));
  EXPECT_FALSE(DecodeDataKey("abc", &d));
}

TEST(Keys, DataKeysSortBySlotThenDb) {
  EXPECT_LT(DataKeyInSlot(1, 9, "zzz"), DataKeyInSlot(2, 0, "a"));
  EXPECT_LT(DataKeyInSlot(1, 0, "zzz"), DataKeyInSlot(1, 1, "a"));
  EXPECT_LT(DataKeyInSlot(255, 0, ""), DataKeyInSlot(256, 0, ""));
}

TEST(Keys, ExpiryKeysSortByTime) {
  EXPECT_LT(ExpiryKey(1000, 5, "z"), ExpiryKey(1001, 0, "a"));
  EXPECT_LT(ExpiryKey(255, 0, "z"), ExpiryKey(256, 0, "a"));
  DecodedExpiryKey d;
  std::string raw = ExpiryKey(1234567890123, 3, "k");
  ASSERT_TRUE(DecodeExpiryKey(raw, &d));
  EXPECT_EQ(d.expire_at_ms, 1234567890123);
  EXPECT_EQ(d.db, 3);
  EXPECT_EQ(d.key, "k");
}

}  // namespace
}  // namespace shoal::storage
