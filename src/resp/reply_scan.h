// Finds where one RESP2/RESP3 reply ends in a byte stream, without building
// it: the server uses it to relay a forwarded request's reply as is.
#pragma once

#include <cstddef>

namespace shoal::resp {

inline constexpr size_t kReplyIncomplete = 0;
inline constexpr size_t kReplyMalformed = static_cast<size_t>(-1);

// The length of the first complete reply in [p, p+n), kReplyIncomplete if
// more bytes are needed, or kReplyMalformed. Nesting deeper than 64 levels
// counts as malformed.
size_t ScanReply(const char* p, size_t n);

}  // namespace shoal::resp
