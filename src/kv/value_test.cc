#include "kv/value.h"

#include <gtest/gtest.h>

namespace shoal::kv {
namespace {

TEST(Value, RoundTripWithAndWithoutExpiry) {
  for (int64_t exp : {int64_t{0}, int64_t{1234567890123}}) {
    std::string raw = EncodeValue(ValueType::kString, exp, std::string("a\0b", 3));
    Value v;
    ASSERT_TRUE(DecodeValue(raw, &v));
    EXPECT_EQ(v.type, ValueType::kString);
    EXPECT_EQ(v.expire_at_ms, exp);
    EXPECT_EQ(v.payload, std::string("a\0b", 3));
  }
}

TEST(Value, RejectsCorruptRecords) {
  Value v;
  EXPECT_FALSE(DecodeValue("", &v));
  EXPECT_FALSE(DecodeValue(std::string("\x09\x10", 2), &v));   // bad type
  EXPECT_FALSE(DecodeValue(std::string("\x01\x20", 2), &v));   // bad version
  EXPECT_FALSE(DecodeValue(std::string("\x01\x11\x01", 3), &v));  // short expiry
}

TEST(Value, Expiry) {
  Value v;
  v.expire_at_ms = 100;
  EXPECT_FALSE(v.ExpiredAt(99));
  EXPECT_TRUE(v.ExpiredAt(100));
  v.expire_at_ms = 0;
  EXPECT_FALSE(v.ExpiredAt(INT64_MAX));
}

}  // namespace
}  // namespace shoal::kv
