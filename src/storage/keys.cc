#include "storage/keys.h"

#include "common/status.h"
#include "storage/slot.h"

namespace shoal::storage {

void PutU16BE(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}

void PutU64BE(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

uint16_t GetU16BE(const char* p) {
  return static_cast<uint16_t>((static_cast<unsigned char>(p[0]) << 8) | static_cast<unsigned char>(p[1]));
}

uint64_t GetU64BE(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string DataKeyInSlot(uint16_t slot, uint16_t db, std::string_view key) {
  std::string out;
  out.reserve(kDataKeyPrefixBytes + key.size());
  AppendDataKeyInSlot(&out, slot, db, key);
  return out;
}

void AppendDataKeyInSlot(std::string* out, uint16_t slot, uint16_t db, std::string_view key) {
  PutU16BE(out, slot);
  PutU16BE(out, db);
  out->append(key);
}

std::string DataKey(uint16_t db, std::string_view key) { return DataKeyInSlot(KeySlot(key), db, key); }

std::string DataSlotDbPrefix(uint16_t slot, uint16_t db) {
  std::string out;
  PutU16BE(&out, slot);
  PutU16BE(&out, db);
  return out;
}

std::string ElementPrefix(uint16_t db, std::string_view key) {
  std::string out;
  out.reserve(kDataKeyPrefixBytes + 4 + key.size());
  PutU16BE(&out, KeySlot(key));
  PutU16BE(&out, static_cast<uint16_t>(db | kElementDbFlag));
  const auto n = static_cast<uint32_t>(key.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(key);
  return out;
}

std::string ElementKey(uint16_t db, std::string_view key, std::string_view element) {
  std::string out = ElementPrefix(db, key);
  out.append(element);
  return out;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string out(prefix);
  while (!out.empty() && static_cast<unsigned char>(out.back()) == 0xff) out.pop_back();
  SHOAL_CHECK(!out.empty());
  out.back() = static_cast<char>(static_cast<unsigned char>(out.back()) + 1);
  return out;
}

bool DecodeDataKey(std::string_view raw, DecodedDataKey* out) {
  if (raw.size() < kDataKeyPrefixBytes) return false;
  out->slot = GetU16BE(raw.data());
  out->db = GetU16BE(raw.data() + 2);
  out->key = raw.substr(kDataKeyPrefixBytes);
  return true;
}

std::string ExpiryKey(int64_t expire_at_ms, uint16_t db, std::string_view key) {
  std::string out;
  out.reserve(kExpiryKeyPrefixBytes + key.size());
  PutU64BE(&out, static_cast<uint64_t>(expire_at_ms));
  PutU16BE(&out, db);
  out.append(key);
  return out;
}

bool DecodeExpiryKey(std::string_view raw, DecodedExpiryKey* out) {
  if (raw.size() < kExpiryKeyPrefixBytes) return false;
  out->expire_at_ms = static_cast<int64_t>(GetU64BE(raw.data()));
  out->db = GetU16BE(raw.data() + 8);
  out->key = raw.substr(kExpiryKeyPrefixBytes);
  return true;
}

}  // namespace shoal::storage
