// libFuzzer target: the RESP request parser must never crash, hang, read out
// of bounds, or report a command that is not inside the input.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "resp/parser.h"
#include "resp/writer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* begin = reinterpret_cast<const char*>(data);
  shoal::resp::ParserLimits limits;
  limits.bulk_bytes_max = 1 << 20;
  limits.inline_bytes_max = 4096;
  shoal::resp::Parser parser(limits);
  std::vector<std::string_view> args;
  bool authenticated = size % 2 == 0;
  size_t pos = 0;
  // Each round consumes bytes or stops, so this ends within size + 1 rounds.
  while (pos < size) {
    size_t consumed = 0;
    auto st = parser.Parse(begin + pos, size - pos, authenticated, &args, &consumed);
    if (st != shoal::resp::ParseStatus::kCommand) break;
    SHOAL_CHECK(consumed > 0 && consumed <= size - pos);
    for (std::string_view a : args) {
      // Multibulk arguments point into the input; inline ones may be unescaped copies.
      bool inside = a.data() >= begin && a.data() + a.size() <= begin + size;
      SHOAL_CHECK(inside || begin[pos] != '*');
    }
    std::string out;
    shoal::resp::Writer writer(&out, 3);
    for (std::string_view a : args) writer.Bulk(a);
    pos += consumed;
  }
  return 0;
}
