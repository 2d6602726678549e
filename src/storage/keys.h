// On-disk key layouts (docs/design/storage.md). There is no global format
// version: change a layout only with a reader for the old one.
//
//   data   CF: [slot u16 BE][db u16 BE][user key]        -> encoded value (src/kv)
//              [slot u16 BE][db | 0x8000 u16 BE][key length u32 BE][user key][element]
//                                                        -> element value (a hash field's)
//   expiry CF: [expire_at_ms u64 BE][db u16 BE][user key] -> "" (an index, checked before use)
//   meta   CF: ascii names                                -> values (applied index, counters)
//   raft   CF: [kind u8][group u64 BE]                    -> a group's record (hard state, log start, ...)
//              ['L'][group u64 BE][index u64 BE]          -> a log entry
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::storage {

inline constexpr size_t kDataKeyPrefixBytes = 4;
inline constexpr size_t kExpiryKeyPrefixBytes = 10;
// The memtable buckets of the Raft and meta column families: a group's
// record, or its log; a meta record (names are shorter than this).
inline constexpr size_t kRaftKeyPrefixBytes = 9;
inline constexpr size_t kMetaKeyPrefixBytes = 32;

void PutU16BE(std::string* out, uint16_t v);
void PutU64BE(std::string* out, uint64_t v);
uint16_t GetU16BE(const char* p);
uint64_t GetU64BE(const char* p);

// The data key of `key` in database `db`.
std::string DataKey(uint16_t db, std::string_view key);
// As DataKey, with the slot already known.
std::string DataKeyInSlot(uint16_t slot, uint16_t db, std::string_view key);
// Appends DataKeyInSlot(slot, db, key) to *out.
void AppendDataKeyInSlot(std::string* out, uint16_t slot, uint16_t db, std::string_view key);
// The prefix of all keys of `db` in `slot`.
std::string DataSlotDbPrefix(uint16_t slot, uint16_t db);

// A collection's elements (a hash's fields) are keys of their own beside
// the collection's value, in the same slot, under the db number with its top
// bit set (databases are < 1024), so that no key scan meets them and a slot
// range holds them. The key's length keeps one key's elements contiguous.
inline constexpr uint16_t kElementDbFlag = 0x8000;
// The prefix of every element of `key`.
std::string ElementPrefix(uint16_t db, std::string_view key);
std::string ElementKey(uint16_t db, std::string_view key, std::string_view element);
// The first key past every key that starts with `prefix` (non-empty, not all 0xff).
std::string PrefixEnd(std::string_view prefix);

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
