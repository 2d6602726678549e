// The encoding of a stored value (see docs/design/storage.md):
//   [type u8][flags u8][expire_at_ms i64 LE, only if flags & kHasExpiry][payload]
// The high nibble of flags is the encoding version (1). Types other than
// string are reserved for hashes, sets, sorted sets and lists; their payload
// will be a header, with elements under keys of their own.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::kv {

enum class ValueType : uint8_t { kString = 1, kHash = 2, kSet = 3, kZSet = 4, kList = 5 };

inline constexpr uint8_t kHasExpiry = 0x01;
inline constexpr uint8_t kEncodingVersion = 1;

struct Value {
  ValueType type = ValueType::kString;
  int64_t expire_at_ms = 0;  // 0: no expiry
  std::string_view payload;

  bool ExpiredAt(int64_t now_ms) const { return expire_at_ms != 0 && expire_at_ms <= now_ms; }
};

std::string EncodeValue(ValueType type, int64_t expire_at_ms, std::string_view payload);
// Returns false on a record that is not a valid encoding (corruption).
bool DecodeValue(std::string_view raw, Value* out);
// A collection's value holds its element count: [count u64 LE]; a list's
// also the position of its first element: [count u64 LE][head i64 LE].
// Then its version (opaque bytes; absent in older records): set by every
// log entry that writes the collection to that entry's own identity, never
// repeated (see ApplyTxn::set_version), so that a value says whether the
// collection changed (WATCH compares values).
inline bool IsCollection(ValueType type) { return type != ValueType::kString; }
std::string CollectionPayload(uint64_t count, std::string_view version = {});
std::string_view CollectionVersion(ValueType type, std::string_view payload);
// The payload with its version replaced.
std::string WithCollectionVersion(ValueType type, std::string_view payload, std::string_view version);
// 0 for a payload that is not a count.
uint64_t CollectionCount(std::string_view payload);
std::string ListPayload(uint64_t count, int64_t head, std::string_view version = {});
int64_t ListHead(std::string_view payload);
// The Redis TYPE name of a value type.
std::string_view TypeName(ValueType type);

}  // namespace shoal::kv
