// A log entry: one write, made deterministic. The leader fills in the time
// (relative TTLs are already absolute in args) so that apply needs no clock
// and no randomness. Encoded form (little endian, versioned):
//   [version u8 = 1][op u16][db u16][now_ms i64][argc u32]{[len u32][bytes]}*
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::kv {

struct Entry {
  uint16_t op = 0;       // the command's stable op id (see command table)
  uint16_t db = 0;       // the client's selected database
  int64_t now_ms = 0;    // the leader's wall clock when it proposed the write
  std::vector<std::string> args;  // normalized arguments, command name excluded
};

std::string EncodeEntry(const Entry& entry);
// Returns false if `raw` is not a valid encoding.
bool DecodeEntry(std::string_view raw, Entry* out);

}  // namespace shoal::kv
