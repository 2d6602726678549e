// On-disk key layouts. Every format here is versioned through the meta key
// "format" (see docs/design/storage.md); change a layout only with a new version.
//
//   data   CF: [slot u16 BE][db u16 BE][user key]        -> encoded value (src/kv)
//   expiry CF: [expire_at_ms u64 BE][db u16 BE][user key] -> "" (an index, checked before use)
//   meta   CF: ascii names                                -> values (applied index, counters)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::storage {

inline constexpr size_t kDataKeyPrefixBytes = 4;
inline constexpr size_t kExpiryKeyPrefixBytes = 10;

void PutU16BE(std::string* out, uint16_t v);
void PutU64BE(std::string* out, uint64_t v);
uint16_t GetU16BE(const char* p);
uint64_t GetU64BE(const char* p);

// The data key of `key` in database `db`.
std::string DataKey(uint16_t db, std::string_view key);
// As DataKey, with the slot already known.
std::string DataKeyInSlot(uint16_t slot, uint16_t db, std::string_view key);
// The prefix of all keys of `db` in `slot`.
std::string DataSlotDbPrefix(uint16_t slot, uint16_t db);

struct DecodedDataKey {
  uint16_t slot;
  uint16_t db;
  std::string_view key;
};
// Returns false if `raw` is too short to be a data key.
bool DecodeDataKey(std::string_view raw, DecodedDataKey* out);

std::string ExpiryKey(int64_t expire_at_ms, uint16_t db, std::string_view key);
struct DecodedExpiryKey {
  int64_t expire_at_ms;
  uint16_t db;
  std::string_view key;
};
bool DecodeExpiryKey(std::string_view raw, DecodedExpiryKey* out);

}  // namespace shoal::storage
