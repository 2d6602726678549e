#include "resp/reply_scan.h"

#include <cstdint>
#include <cstring>

namespace shoal::resp {
namespace {

constexpr int kMaxDepth = 64;
constexpr int64_t kMaxLen = 1LL << 40;

// Parses the integer of a header line starting at p (after the type byte);
// sets *next past "\r\n". Returns false on incomplete (with *malformed false)
// or malformed input.
bool ReadLine(const char* p, const char* end, int64_t* value, const char** next, bool* malformed) {
  const char* cr = static_cast<const char*>(std::memchr(p, '\r', static_cast<size_t>(end - p)));
  if (cr == nullptr || cr + 1 >= end) return false;
  if (cr[1] != '\n') {
    *malformed = true;
    return false;
  }
  bool neg = false;
  const char* q = p;
  if (q < cr && *q == '-') {
    neg = true;
    ++q;
  }
  if (q == cr) {
    *malformed = true;
    return false;
  }
  int64_t v = 0;
  for (; q < cr; ++q) {
    if (*q < '0' || *q > '9' || v > kMaxLen) {
      *malformed = true;
      return false;
    }
    v = v * 10 + (*q - '0');
  }
  *value = neg ? -v : v;
  *next = cr + 2;
  return true;
}

// Returns the end of one reply starting at p, nullptr when incomplete;
// sets *malformed for bad input.
const char* Scan(const char* p, const char* end, int depth, bool* malformed) {
  if (p >= end) return nullptr;
  if (depth > kMaxDepth) {
    *malformed = true;
    return nullptr;
  }
  char type = *p++;
  switch (type) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(': {
      const char* cr = static_cast<const char*>(std::memchr(p, '\r', static_cast<size_t>(end - p)));
      if (cr == nullptr || cr + 1 >= end) return nullptr;
      if (cr[1] != '\n') {
        *malformed = true;
        return nullptr;
      }
      return cr + 2;
    }
    case '$': case '!': case '=': {
      int64_t len = 0;
      const char* next = nullptr;
      if (!ReadLine(p, end, &len, &next, malformed)) return nullptr;
      if (len == -1 && type == '$') return next;
      if (len < 0) {
        *malformed = true;
        return nullptr;
      }
      if (end - next < len + 2) return nullptr;
      if (next[len] != '\r' || next[len + 1] != '\n') {
        *malformed = true;
        return nullptr;
      }
      return next + len + 2;
    }
    case '*': case '~': case '>': case '%': case '|': {
      int64_t count = 0;
      const char* next = nullptr;
      if (!ReadLine(p, end, &count, &next, malformed)) return nullptr;
      if (count == -1 && type == '*') return next;
      if (count < 0) {
        *malformed = true;
        return nullptr;
      }
      int64_t items = (type == '%' || type == '|') ? count * 2 : count;
      const char* q = next;
      for (int64_t i = 0; i < items; ++i) {
        q = Scan(q, end, depth + 1, malformed);
        if (q == nullptr) return nullptr;
      }
      // An attribute (|) precedes the reply it annotates.
      if (type == '|') return Scan(q, end, depth + 1, malformed);
      return q;
    }
    default:
      *malformed = true;
      return nullptr;
  }
}

}  // namespace

size_t ScanReply(const char* p, size_t n) {
  bool malformed = false;
  const char* end = Scan(p, p + n, 0, &malformed);
  if (malformed) return kReplyMalformed;
  if (end == nullptr) return kReplyIncomplete;
  return static_cast<size_t>(end - p);
}

}  // namespace shoal::resp
