// RESP request parser: bytes in, commands out. Knows nothing of the database.
// Handles RESP multibulk requests and inline commands (as telnet and redis-cli
// send them), and reports protocol errors with redis-server's exact wording.
#pragma once

#include <cstddef>
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::resp {

// Limits on what a request may be; exceeding one is a protocol error.
struct ParserLimits {
  int64_t bulk_bytes_max = 512LL * 1024 * 1024;  // proto-max-bulk-len
  int64_t multibulk_args_max = INT32_MAX;        // arguments in one command (as Redis 7)
  size_t inline_bytes_max = 64 * 1024;           // an inline line without "\n"
  // While the client has not authenticated, Redis allows at most these.
  int64_t unauthenticated_args_max = 10;
  int64_t unauthenticated_bulk_bytes_max = 16384;
};

enum class ParseStatus { kCommand, kIncomplete, kError };

// Parses one request at a time from a caller-owned buffer. The argument views
// point into that buffer and stay valid until the caller changes it. A parser
// holds no bytes itself, so it may be reset between buffers. Not thread-safe.
class Parser {
 public:
  explicit Parser(ParserLimits limits = {}) : limits_(limits) {}

  // Tries to parse one command from data[0..len). On kCommand fills *args and
  // sets *consumed to the bytes used (an empty args means "nothing to run",
  // e.g. a blank inline line). On kIncomplete nothing is consumed: call again
  // with more bytes. On kError, error() holds the message (without "-ERR ")
  // and the connection must be closed after replying.
  ParseStatus Parse(const char* data, size_t len, bool authenticated,
                    std::vector<std::string_view>* args, size_t* consumed);

  const std::string& error() const { return error_; }
  // Bytes this request needs before it can be complete (a hint for reads).
  size_t bytes_wanted_hint() const { return wanted_hint_; }

 private:
  ParseStatus ParseInline(const char* data, size_t len, std::vector<std::string_view>* args,
                          size_t* consumed);
  ParseStatus ParseMultibulk(const char* data, size_t len, bool authenticated,
                             std::vector<std::string_view>* args, size_t* consumed);
  ParseStatus Fail(std::string msg);

  ParserLimits limits_;
  std::string error_;
  size_t wanted_hint_ = 0;
  // Inline arguments that needed unescaping live here (views point into it).
  std::vector<std::string> inline_storage_;
};

// Splits an inline command line the way redis-server's sdssplitargs does
// (quotes, \x hex escapes). Returns false on unbalanced quotes.
bool SplitInlineArgs(std::string_view line, std::vector<std::string>* out);

}  // namespace shoal::resp
