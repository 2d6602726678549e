// A log entry: one write, made deterministic. The leader fills in the time
// (relative TTLs are already absolute in args) so that apply needs no clock
// and no randomness. Encoded form (little endian, versioned):
//   [version u8 = 1][op u16][db u16][now_ms i64][argc u32]{[len u32][bytes]}*
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::kv {

// What the leader knew of a key's committed state when it proposed a blind
// write of it (replica::KvStateMachine::Annotate): the state every replica
// will find when it applies the entry, so that none of them reads it. Never
// for a collection (replacing one must find its elements).
struct KeyHint {
  uint32_t arg = 0;  // the key is args[arg], in the entry's db
  bool exists = false;
  int64_t expire_at_ms = 0;
  bool operator==(const KeyHint&) const = default;
};

struct Entry {
  uint16_t op = 0;       // the command's stable op id (see command table)
  uint16_t db = 0;       // the client's selected database
  int64_t now_ms = 0;    // the leader's wall clock when it proposed the write
  std::vector<std::string> args;  // normalized arguments, command name excluded
  // Carried beside the entry, not in its encoding (replica::EncodeKvBatch
  // appends them to the log entry).
  std::vector<KeyHint> hints = {};
};

// Sets an entry's arguments, each built once: an initializer list's
// elements are const, so `args = {...}` copied every string it was given.
// The entry may be a recycled one (a connection reuses its flushed writes'
// entries): the arguments it keeps are assigned over, so their storage is
// reused where a view or a literal is given, and any beyond are dropped.
template <class... Parts>
void SetArgs(Entry* entry, Parts&&... parts) {
  entry->args.resize(sizeof...(parts));
  size_t i = 0;
  ((entry->args[i++] = std::forward<Parts>(parts)), ...);
}

std::string EncodeEntry(const Entry& entry);
// The same bytes appended to *out, and their count.
void AppendEncodedEntry(const Entry& entry, std::string* out);
size_t EncodedEntrySize(const Entry& entry);
// Returns false if `raw` is not a valid encoding.
bool DecodeEntry(std::string_view raw, Entry* out);

// An encoded entry read in place: its arguments point into the encoding.
struct EntryView {
  uint16_t op = 0;
  uint16_t db = 0;
  int64_t now_ms = 0;
  std::vector<std::string_view> args;
};
bool DecodeEntryView(std::string_view raw, EntryView* out);

}  // namespace shoal::kv
