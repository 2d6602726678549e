#include "kv/value.h"

#include <algorithm>
#include <cstring>

namespace shoal::kv {

std::string EncodeValue(ValueType type, int64_t expire_at_ms, std::string_view payload) {
  std::string out;
  bool has_expiry = expire_at_ms != 0;
  out.reserve(2 + (has_expiry ? 8 : 0) + payload.size());
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>((kEncodingVersion << 4) | (has_expiry ? kHasExpiry : 0)));
  if (has_expiry) {
    char buf[8];
    std::memcpy(buf, &expire_at_ms, 8);
    out.append(buf, 8);
  }
  out.append(payload);
  return out;
}

bool DecodeValue(std::string_view raw, Value* out) {
  if (raw.size() < 2) return false;
  auto type = static_cast<uint8_t>(raw[0]);
  auto flags = static_cast<uint8_t>(raw[1]);
  if (type < 1 || type > 5 || (flags >> 4) != kEncodingVersion) return false;
  out->type = static_cast<ValueType>(type);
  size_t pos = 2;
  out->expire_at_ms = 0;
  if (flags & kHasExpiry) {
    if (raw.size() < 10) return false;
    std::memcpy(&out->expire_at_ms, raw.data() + 2, 8);
    if (out->expire_at_ms <= 0) return false;
    pos = 10;
  }
  out->payload = raw.substr(pos);
  return true;
}

namespace {
size_t VersionAt(ValueType type) { return type == ValueType::kList ? 16 : 8; }
}  // namespace

std::string CollectionPayload(uint64_t count, std::string_view version) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &count, 8);
  out.append(version);
  return out;
}

std::string_view CollectionVersion(ValueType type, std::string_view payload) {
  return payload.size() > VersionAt(type) ? payload.substr(VersionAt(type)) : std::string_view();
}

std::string WithCollectionVersion(ValueType type, std::string_view payload, std::string_view version) {
  std::string out(payload.substr(0, std::min(payload.size(), VersionAt(type))));
  out.resize(VersionAt(type), '\0');
  out.append(version);
  return out;
}

uint64_t CollectionCount(std::string_view payload) {
  uint64_t n = 0;
  if (payload.size() >= 8) std::memcpy(&n, payload.data(), 8);
  return n;
}

std::string ListPayload(uint64_t count, int64_t head, std::string_view version) {
  std::string out = CollectionPayload(count);
  out.resize(16);
  std::memcpy(out.data() + 8, &head, 8);
  out.append(version);
  return out;
}

int64_t ListHead(std::string_view payload) {
  int64_t head = 0;
  if (payload.size() >= 16) std::memcpy(&head, payload.data() + 8, 8);
  return head;
}

std::string_view TypeName(ValueType type) {
  switch (type) {
    case ValueType::kString: return "string";
    case ValueType::kHash: return "hash";
    case ValueType::kSet: return "set";
    case ValueType::kZSet: return "zset";
    case ValueType::kList: return "list";
  }
  return "none";
}

}  // namespace shoal::kv
