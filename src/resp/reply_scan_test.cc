#include "resp/reply_scan.h"

#include <gtest/gtest.h>

#include <string>

namespace shoal::resp {
namespace {

size_t Scan(const std::string& s) { return ScanReply(s.data(), s.size()); }

TEST(ReplyScan, SimpleTypes) {
  EXPECT_EQ(Scan("+OK\r\n"), 5u);
  EXPECT_EQ(Scan("-ERR x\r\nrest"), 8u);
  EXPECT_EQ(Scan(":-12\r\n"), 6u);
  EXPECT_EQ(Scan("$3\r\nabc\r\n+X"), 9u);
  EXPECT_EQ(Scan("$-1\r\n"), 5u);
  EXPECT_EQ(Scan("*-1\r\n"), 5u);
  EXPECT_EQ(Scan("_\r\n"), 3u);
}

TEST(ReplyScan, Nested) {
  std::string a = "*2\r\n$1\r\na\r\n*1\r\n:1\r\n";
  EXPECT_EQ(Scan(a), a.size());
  std::string m = "%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n";
  EXPECT_EQ(Scan(m + "tail"), m.size());
}

TEST(ReplyScan, IncompleteAtEveryCut) {
  std::string a = "*3\r\n$5\r\nhello\r\n:7\r\n%1\r\n+a\r\n$0\r\n\r\n";
  ASSERT_EQ(Scan(a), a.size());
  for (size_t cut = 0; cut < a.size(); ++cut) {
    EXPECT_EQ(ScanReply(a.data(), cut), kReplyIncomplete) << cut;
  }
}

TEST(ReplyScan, Malformed) {
  EXPECT_EQ(Scan("?x\r\n"), kReplyMalformed);
  EXPECT_EQ(Scan("$3\r\nabcd\r\n"), kReplyMalformed);
  EXPECT_EQ(Scan("$x\r\n"), kReplyMalformed);
  EXPECT_EQ(Scan("*-5\r\n"), kReplyMalformed);
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  EXPECT_EQ(Scan(deep), kReplyMalformed);
}

}  // namespace
}  // namespace shoal::resp
