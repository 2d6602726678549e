#include "kv/entry.h"

#include <cstring>

#include "common/bytes.h"

namespace shoal::kv {
namespace {

constexpr uint8_t kEntryVersion = 1;
constexpr uint32_t kArgsMax = 1u << 24;

}  // namespace

size_t EncodedEntrySize(const Entry& entry) {
  size_t total = 1 + 2 + 2 + 8 + 4;
  for (const auto& a : entry.args) total += 4 + a.size();
  return total;
}

void AppendEncodedEntry(const Entry& entry, std::string* out) {
  PutFixed<uint8_t>(out, kEntryVersion);
  PutFixed<uint16_t>(out, entry.op);
  PutFixed<uint16_t>(out, entry.db);
  PutFixed<int64_t>(out, entry.now_ms);
  PutFixed<uint32_t>(out, static_cast<uint32_t>(entry.args.size()));
  for (const auto& a : entry.args) {
    PutFixed<uint32_t>(out, static_cast<uint32_t>(a.size()));
    out->append(a);
  }
}

std::string EncodeEntry(const Entry& entry) {
  std::string out;
  out.reserve(EncodedEntrySize(entry));
  AppendEncodedEntry(entry, &out);
  return out;
}

namespace {

template <typename Arg>
bool DecodeInto(std::string_view raw, uint16_t* op, uint16_t* db, int64_t* now_ms, std::vector<Arg>* args) {
  uint8_t version = 0;
  uint32_t argc = 0;
  if (!GetFixed(&raw, &version) || version != kEntryVersion) return false;
  if (!GetFixed(&raw, op) || !GetFixed(&raw, db) || !GetFixed(&raw, now_ms)) return false;
  if (!GetFixed(&raw, &argc) || argc > kArgsMax) return false;
  if (argc > raw.size() / 4) {  // each argument needs at least its length
    args->clear();
    return false;
  }
  // Strings already there are assigned, keeping their storage (an entry
  // decoded again: replica::KvStateMachine's kept batch).
  args->resize(argc);
  for (uint32_t i = 0; i < argc; ++i) {
    uint32_t len = 0;
    if (!GetFixed(&raw, &len) || raw.size() < len) return false;
    (*args)[i] = raw.substr(0, len);
    raw.remove_prefix(len);
  }
  return raw.empty();
}

}  // namespace

bool DecodeEntry(std::string_view raw, Entry* out) {
  out->hints.clear();
  return DecodeInto(raw, &out->op, &out->db, &out->now_ms, &out->args);
}

bool DecodeEntryView(std::string_view raw, EntryView* out) {
  return DecodeInto(raw, &out->op, &out->db, &out->now_ms, &out->args);
}

}  // namespace shoal::kv
