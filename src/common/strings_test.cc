#include "common/crc32c.h"
#include "common/strings.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

TEST(ParseInt64, AcceptsRedisIntegers) {
  EXPECT_EQ(ParseInt64("0"), 0);
  EXPECT_EQ(ParseInt64("-1"), -1);
  EXPECT_EQ(ParseInt64("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(ParseInt64("-9223372036854775808"), INT64_MIN);
}

TEST(ParseInt64, RejectsWhatRedisRejects) {
  for (const char* s : {"", "-", "+1", "01", "-0", " 1", "1 ", "1a", "9223372036854775808",
                        "-9223372036854775809", "1.0", "99999999999999999999999"}) {
    EXPECT_FALSE(ParseInt64(s).has_value()) << s;
  }
}

TEST(ParseLongDouble, RejectsSpacesAndNan) {
  EXPECT_FALSE(ParseLongDouble(" 1").has_value());
  EXPECT_FALSE(ParseLongDouble("nan").has_value());
  EXPECT_FALSE(ParseLongDouble("").has_value());
  EXPECT_FALSE(ParseLongDouble("1x").has_value());
  EXPECT_EQ(*ParseLongDouble("1.5"), 1.5L);
}

TEST(FormatLongDoubleHuman, TrimsLikeRedis) {
  EXPECT_EQ(FormatLongDoubleHuman(10.5L), "10.5");
  EXPECT_EQ(FormatLongDoubleHuman(3.0L), "3");
  EXPECT_EQ(FormatLongDoubleHuman(-0.0L), "0");
  EXPECT_EQ(FormatLongDoubleHuman(5.0e3L), "5000");
}

TEST(GlobMatch, RedisPatterns) {
  EXPECT_TRUE(GlobMatch("*", "anything"));
  EXPECT_TRUE(GlobMatch("h?llo", "hello"));
  EXPECT_TRUE(GlobMatch("h*llo", "heeeello"));
  EXPECT_TRUE(GlobMatch("h[ae]llo", "hallo"));
  EXPECT_FALSE(GlobMatch("h[ae]llo", "hillo"));
  EXPECT_TRUE(GlobMatch("h[^e]llo", "hallo"));
  EXPECT_FALSE(GlobMatch("h[^e]llo", "hello"));
  EXPECT_TRUE(GlobMatch("h[a-b]llo", "hbllo"));
  EXPECT_TRUE(GlobMatch("h\\*llo", "h*llo"));
  EXPECT_FALSE(GlobMatch("h\\*llo", "hello"));
  EXPECT_TRUE(GlobMatch("MAXMEMORY*", "maxmemory-policy", true));
  EXPECT_FALSE(GlobMatch("a", ""));
  EXPECT_TRUE(GlobMatch("", ""));
}

TEST(GlobMatch, HostilePatternTerminates) {
  std::string pattern(200, '*');
  pattern += "b";
  EXPECT_FALSE(GlobMatch("*a*a*a*a*a*a*a*a*a*a*a*a*b", std::string(40, 'a')));
  EXPECT_FALSE(GlobMatch(pattern, std::string(100, 'a')));
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

TEST(Crc32c, MatchesTheStandardCheckValueAndContinues) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("6789", Crc32c("12345")), Crc32c("123456789"));
  EXPECT_NE(Crc32c("123456788"), Crc32c("123456789"));
  // Long inputs (eight bytes a step) agree with byte-at-a-time continuation.
  std::string big;
  for (int i = 0; i < 1000; ++i) big.push_back(static_cast<char>(i * 37 + 11));
  uint32_t bytewise = 0;
  for (char c : big) bytewise = Crc32c(std::string_view(&c, 1), bytewise);
  EXPECT_EQ(Crc32c(big), bytewise);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST(Crc32c, TheCpusInstructionAgreesWithTheTables) {
  EXPECT_EQ(Crc32cPortable("123456789"), 0xE3069283u);
  std::string big;
  for (int i = 0; i < 4096; ++i) big.push_back(static_cast<char>((i * 7919) >> 3));
  // Every length and start (alignment) up to a few words, and continued.
  for (size_t at = 0; at < 17; ++at) {
    for (size_t len = 0; len < 80; ++len) {
      std::string_view part(big.data() + at, len);
      ASSERT_EQ(Crc32c(part), Crc32cPortable(part)) << at << " " << len;
      ASSERT_EQ(Crc32c(part, 0x12345678u), Crc32cPortable(part, 0x12345678u)) << at << " " << len;
    }
  }
  EXPECT_EQ(Crc32c(big), Crc32cPortable(big));
}

}  // namespace
}  // namespace shoal
