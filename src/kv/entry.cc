#include "kv/entry.h"

#include <cstring>

namespace shoal::kv {
namespace {

constexpr uint8_t kEntryVersion = 1;
constexpr uint32_t kArgsMax = 1u << 24;

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

template <typename T>
bool Get(std::string_view* in, T* v) {
  if (in->size() < sizeof(T)) return false;
  std::memcpy(v, in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}

}  // namespace

std::string EncodeEntry(const Entry& entry) {
  std::string out;
  size_t total = 1 + 2 + 2 + 8 + 4;
  for (const auto& a : entry.args) total += 4 + a.size();
  out.reserve(total);
  Put<uint8_t>(&out, kEntryVersion);
  Put<uint16_t>(&out, entry.op);
  Put<uint16_t>(&out, entry.db);
  Put<int64_t>(&out, entry.now_ms);
  Put<uint32_t>(&out, static_cast<uint32_t>(entry.args.size()));
  for (const auto& a : entry.args) {
    Put<uint32_t>(&out, static_cast<uint32_t>(a.size()));
    out.append(a);
  }
  return out;
}

bool DecodeEntry(std::string_view raw, Entry* out) {
  uint8_t version = 0;
  uint32_t argc = 0;
  if (!Get(&raw, &version) || version != kEntryVersion) return false;
  if (!Get(&raw, &out->op) || !Get(&raw, &out->db) || !Get(&raw, &out->now_ms)) return false;
  if (!Get(&raw, &argc) || argc > kArgsMax) return false;
  out->args.clear();
  if (argc > raw.size() / 4) return false;  // each argument needs at least its length
  out->args.reserve(argc);
  for (uint32_t i = 0; i < argc; ++i) {
    uint32_t len = 0;
    if (!Get(&raw, &len) || raw.size() < len) return false;
    out->args.emplace_back(raw.substr(0, len));
    raw.remove_prefix(len);
  }
  return raw.empty();
}

}  // namespace shoal::kv
