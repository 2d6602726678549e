#include "resp/parser.h"

#include <gtest/gtest.h>

namespace shoal::resp {
namespace {

struct Parsed {
  ParseStatus status;
  std::vector<std::string> args;
  size_t consumed;
  std::string error;
};

Parsed ParseOne(std::string_view in, bool authenticated = true, ParserLimits limits = {}) {
  Parser parser(limits);
  std::vector<std::string_view> args;
  size_t consumed = 0;
  Parsed out;
  out.status = parser.Parse(in.data(), in.size(), authenticated, &args, &consumed);
  for (auto a : args) out.args.emplace_back(a);
  out.consumed = consumed;
  out.error = parser.error();
  return out;
}

TEST(Parser, Multibulk) {
  auto r = ParseOne("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nextra");
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_EQ(r.args, (std::vector<std::string>{"GET", "key"}));
  EXPECT_EQ(r.consumed, 22u);
}

TEST(Parser, BinarySafeBulk) {
  std::string in = std::string("*1\r\n$5\r\na\r\n\0b\r\n", 16);
  auto r = ParseOne(in);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_EQ(r.args[0], std::string("a\r\n\0b", 5));
}

TEST(Parser, IncompleteAtEveryPrefix) {
  std::string in = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
  for (size_t i = 0; i < in.size(); ++i) {
    auto r = ParseOne(in.substr(0, i));
    EXPECT_EQ(r.status, ParseStatus::kIncomplete) << i;
    EXPECT_EQ(r.consumed, 0u);
  }
  EXPECT_EQ(ParseOne(in).status, ParseStatus::kCommand);
}

TEST(Parser, Inline) {
  auto r = ParseOne("set k \"a b\\x41\" 'c d'\r\n");
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_EQ(r.args, (std::vector<std::string>{"set", "k", "a bA", "c d"}));
  auto blank = ParseOne("\r\n");
  ASSERT_EQ(blank.status, ParseStatus::kCommand);
  EXPECT_TRUE(blank.args.empty());
  EXPECT_EQ(blank.consumed, 2u);
}

TEST(Parser, ProtocolErrorsMatchRedis) {
  EXPECT_EQ(ParseOne("*abc\r\n").error, "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseOne("*1\r\n$-5\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOne("*1\r\n+x\r\n").error, "Protocol error: expected '$', got '+'");
  EXPECT_EQ(ParseOne("*1\r\n$1000000000000\r\n").error, "Protocol error: invalid bulk length");
  // Lengths are whole decimal numbers, short or long.
  EXPECT_EQ(ParseOne("*2x\r\n").error, "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseOne("*1\r\n$3a\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOne("*1\r\n$03\r\nabc\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOne("*1\r\n$\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOne("*1\r\n$999999999\r\n").error, "Protocol error: invalid bulk length");  // over 512 MiB
  EXPECT_EQ(ParseOne("*1\r\n$0\r\n\r\n").status, ParseStatus::kCommand);
  EXPECT_EQ(ParseOne("*1\r\n$12\r\nhello world!\r\n").args, (std::vector<std::string>{"hello world!"}));
  EXPECT_EQ(ParseOne("set \"a\r\n").error, "Protocol error: unbalanced quotes in request");
  EXPECT_EQ(ParseOne("*20\r\n", false).error, "Protocol error: unauthenticated multibulk length");
  EXPECT_EQ(ParseOne("*1\r\n$20000\r\n", false).error,
            "Protocol error: unauthenticated bulk length");
  ParserLimits small;
  small.inline_bytes_max = 8;
  EXPECT_EQ(ParseOne("aaaaaaaaaaaa", true, small).error, "Protocol error: too big inline request");
  EXPECT_EQ(ParseOne("*111111111111", true, small).error,
            "Protocol error: too big mbulk count string");
}

TEST(Parser, EmptyMultibulkIsNoop) {
  auto r = ParseOne("*0\r\n*-1\r\n");
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_TRUE(r.args.empty());
  EXPECT_EQ(r.consumed, 4u);
}

TEST(Parser, HugeCountDoesNotPreallocate) {
  auto r = ParseOne("*1048576\r\n$1\r\na\r\n");
  EXPECT_EQ(r.status, ParseStatus::kIncomplete);
}

TEST(SplitInlineArgs, ClosingQuoteMustEndArgument) {
  std::vector<std::string> out;
  EXPECT_FALSE(SplitInlineArgs("\"a\"b", &out));
  EXPECT_TRUE(SplitInlineArgs("  a   b  ", &out));
  EXPECT_EQ(out, (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace shoal::resp
