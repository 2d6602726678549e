#include "kv/entry.h"

#include <gtest/gtest.h>

namespace shoal::kv {
namespace {

TEST(Entry, RoundTrip) {
  Entry e{.op = 7, .db = 3, .now_ms = 1700000000123, .args = {"k", std::string("v\0x", 3), ""}};
  Entry d;
  ASSERT_TRUE(DecodeEntry(EncodeEntry(e), &d));
  EXPECT_EQ(d.op, 7);
  EXPECT_EQ(d.db, 3);
  EXPECT_EQ(d.now_ms, 1700000000123);
  EXPECT_EQ(d.args, e.args);
}

TEST(Entry, RejectsTruncationAndGarbage) {
  std::string raw = EncodeEntry({.op = 1, .db = 0, .now_ms = 5, .args = {"key", "value"}});
  Entry d;
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_FALSE(DecodeEntry(raw.substr(0, i), &d)) << i;
  EXPECT_FALSE(DecodeEntry(raw + "x", &d));
  std::string huge_argc = raw.substr(0, 13) + std::string("\xff\xff\xff\x00", 4);
  EXPECT_FALSE(DecodeEntry(huge_argc, &d));
}

}  // namespace
}  // namespace shoal::kv
