// Write hints: the leader of a data shard tells its followers what a blind
// write's keys hold before the write (kv::KeyHint), so that no replica reads
// them when it applies it (docs/design/write_hints.md).
//
// A hint must be the state every replica finds when it applies the entry:
// the leader's state at its applied index, with no entry between that index
// and the new one touching the key. WriteHints keeps that second half true:
// it tracks the keys of every entry this leader proposed in its term that is
// not applied yet, and hints only keys none of them names. An entry whose keys
// it cannot name (FLUSHDB, EXEC, MOVE, a split...) stops all hints until it is
// applied; and none are given before the entries of earlier terms are applied.
// A key whose last write in flight is a blind one is hinted with what that
// write leaves (a hot key written over and over).
// Owner (worker) thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kv/entry.h"
#include "kv/shard.h"

namespace shoal::replica {

// Walks the kv batch in a log entry (EncodeKvBatch): sets its protocol (2 or
// 3), calls entry() with each encoded entry in order (false stops the walk,
// which fails) and sets *rest to what follows the entries (a hint trailer,
// or nothing). False if `data` is not a kv batch.
bool WalkKvBatch(std::string_view data, int* protocol, const std::function<bool(std::string_view)>& entry,
                 std::string_view* rest);

// The hints of a log entry's kv batch follow its entries (EncodeKvBatch):
//   ['H'][n u32]{[entry u32][arg u32][exists u8][expire_at_ms i64]}*
// Appends that trailer for the hints of `entries` (nothing if none).
void AppendHintTrailer(std::span<const kv::Entry> entries, std::string* out);
// Reads a trailer into the hints of `entries`; false unless `trailer` is
// exactly one whose hints name existing entries and arguments.
bool DecodeHintTrailer(std::string_view trailer, std::span<kv::Entry> entries);

class WriteHints {
 public:
  explicit WriteHints(kv::Shard* shard) : shard_(shard) {}
  // `data`, an encoded kv batch this leader is about to append at `index` in
  // `term`, with hints for its blind writes' keys where they are known.
  // Appended() must follow with whether it was appended.
  std::string Annotate(std::string data, uint64_t term, uint64_t index);
  void Appended(uint64_t index, bool ok);
  // Forgets what it tracked (the replica's leadership changed).
  void Reset();
  // Entries tracked (proposed, not yet applied), for tests.
  size_t tracked() const { return tracked_.size(); }
  // At most this many keys of one kv entry get hints (an apply finds a
  // key's hint by a scan of its entry's hints).
  static constexpr size_t kMaxHintsPerEntry = 32;

 private:
  struct Tracked {
    uint64_t index = 0;
    // [db u16][key] of everything it may write, each with what it leaves
    // there when that is known (a blind write's outcome).
    std::vector<std::pair<std::string, std::optional<kv::KeyMetaCache::Meta>>> keys;
    bool opaque = false;  // may write keys it does not name
  };
  struct KeyState {
    uint32_t pending = 0;  // tracked entries that may write it
    std::optional<kv::KeyMetaCache::Meta> after;  // what the last of them leaves, if known
  };
  void Prune();
  void Track(Tracked t);
  static std::string TrackKey(uint16_t db, std::string_view key);
  static void TrackKeyInto(uint16_t db, std::string_view key, std::string* out);
  kv::Shard* shard_;
  uint64_t term_ = 0;
  // Every entry of term_ after this index was proposed through Annotate.
  uint64_t from_ = 0;
  std::deque<Tracked> tracked_;
  std::unordered_map<std::string, KeyState> keys_;
  uint32_t opaque_ = 0;
  std::optional<Tracked> annotating_;
};

}  // namespace shoal::replica
