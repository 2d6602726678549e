#include "common/strings.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace shoal {

std::optional<int64_t> ParseInt64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  size_t i = 0;
  bool negative = false;
  if (s[0] == '-') {
    negative = true;
    i = 1;
    if (s.size() == 1) return std::nullopt;
  }
  if (s[i] == '0') {
    if (s.size() == 1) return 0;
    return std::nullopt;  // leading zero or "-0"
  }
  uint64_t v = 0;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  if (negative) {
    if (v > static_cast<uint64_t>(INT64_MAX) + 1) return std::nullopt;
    return static_cast<int64_t>(0 - v);
  }
  if (v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<long double> ParseLongDouble(std::string_view s) {
  if (s.empty() || s.size() >= 5120) return std::nullopt;
  std::string buf(s);
  if (std::isspace(static_cast<unsigned char>(buf[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long double v = std::strtold(buf.c_str(), &end);
  if (end != buf.c_str() + buf.size() || errno == ERANGE || std::isnan(v)) return std::nullopt;
  return v;
}

std::optional<double> ParseDouble(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::string buf(s);
  if (std::isspace(static_cast<unsigned char>(buf[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(buf.c_str(), &end);
  if (end != buf.c_str() + buf.size() || std::isnan(v)) return std::nullopt;
  // Out of range: an overflow or an underflow to 0; subnormals are fine.
  if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL || v == 0)) return std::nullopt;
  return v;
}

std::string FormatLongDoubleHuman(long double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[5600];
  int n = std::snprintf(buf, sizeof(buf), "%.17Lf", v);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(buf)) return "0";
  std::string out(buf, static_cast<size_t>(n));
  if (out.find('.') != std::string::npos) {
    while (!out.empty() && out.back() == '0') out.pop_back();
    if (!out.empty() && out.back() == '.') out.pop_back();
  }
  if (out == "-0") out = "0";
  return out;
}

static char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (LowerAscii(a[i]) != LowerAscii(b[i])) return false;
  }
  return true;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = LowerAscii(c);
  return out;
}

std::string ToUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  }
  return out;
}

namespace {

// Matches the single-character token at p[0..plen) (a literal, '?', an escape
// or a [class]) against c. Sets *token_len to the token's length in p.
bool MatchToken(const char* p, size_t plen, char c, bool nocase, size_t* token_len) {
  auto eq = [nocase](char a, char b) { return nocase ? LowerAscii(a) == LowerAscii(b) : a == b; };
  if (*p == '?') {
    *token_len = 1;
    return true;
  }
  if (*p == '\\' && plen >= 2) {
    *token_len = 2;
    return eq(p[1], c);
  }
  if (*p != '[') {
    *token_len = 1;
    return eq(*p, c);
  }
  size_t i = 1;
  bool negate = i < plen && p[i] == '^';
  if (negate) ++i;
  bool match = false;
  while (i < plen && p[i] != ']') {
    if (p[i] == '\\' && i + 1 < plen) {
      if (p[i + 1] == c) match = true;
      i += 2;
    } else if (i + 2 < plen && p[i + 1] == '-') {
      char lo = p[i], hi = p[i + 2], x = c;
      if (lo > hi) std::swap(lo, hi);
      if (nocase) {
        lo = LowerAscii(lo);
        hi = LowerAscii(hi);
        x = LowerAscii(x);
      }
      if (x >= lo && x <= hi) match = true;
      i += 3;
    } else {
      if (eq(p[i], c)) match = true;
      ++i;
    }
  }
  *token_len = i < plen ? i + 1 : plen;  // an unterminated class runs to the end
  return negate ? !match : match;
}

}  // namespace

// Greedy matching with backtracking to the last '*' only: O(pattern * text),
// so no pattern can make it run away (a glob needs no deeper backtracking).
bool GlobMatch(std::string_view pattern, std::string_view text, bool nocase) {
  size_t p = 0, s = 0;
  size_t star_p = std::string_view::npos, star_s = 0;
  while (s < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star_p = ++p;
      star_s = s;
      continue;
    }
    size_t len = 0;
    if (p < pattern.size() &&
        MatchToken(pattern.data() + p, pattern.size() - p, text[s], nocase, &len)) {
      p += len;
      ++s;
      continue;
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    s = ++star_s;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace shoal
