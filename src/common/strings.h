// String helpers with Redis's exact semantics: integer and float parsing and
// formatting, and glob-style pattern matching (KEYS, SCAN MATCH, CONFIG GET).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shoal {

// Parses a signed 64-bit integer the way Redis's string2ll does: no leading
// '+', no leading zeros, no spaces, no overflow. Returns nullopt otherwise.
std::optional<int64_t> ParseInt64(std::string_view s);

// Parses a long double the way Redis's string2ld does (rejects spaces, NaN and
// empty input; accepts inf). Returns nullopt otherwise.
std::optional<long double> ParseLongDouble(std::string_view s);

// Parses a double the way Redis parses a float argument (used for timeouts and
// INCRBYFLOAT increments). Rejects NaN.
std::optional<double> ParseDouble(std::string_view s);

// Formats like Redis's ld2string(LD_STR_HUMAN): "%.17Lf" with trailing zeros
// (and a trailing '.') removed; used by INCRBYFLOAT.
std::string FormatLongDoubleHuman(long double v);

// Case-insensitive ASCII comparison.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string ToLower(std::string_view s);
std::string ToUpper(std::string_view s);

// Redis-style glob match (*, ?, [abc], [^a-z], \x escapes).
bool GlobMatch(std::string_view pattern, std::string_view text, bool nocase = false);

}  // namespace shoal
