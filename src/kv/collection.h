// Helpers for collection commands (hashes, sets, lists): a collection is a
// value holding its element count, with one element key per element
// (storage::ElementKey). Internal to src/kv.
//
// A hash field or set member is stored under its *name*: a 64-bit hash of
// its bytes (XXH3, big endian) and then the bytes. Names spread evenly over
// the key range, so a random pick is a seek to a random point and a scan
// cursor is the hash to resume at. A list's element names are positions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kv/command_util.h"
#include "storage/keys.h"

namespace shoal::kv {

// Hash fields and set members: the name an element is stored under, the
// hash it starts with, and the element a name holds.
std::string HashedName(std::string_view element);
uint64_t ElementHash(std::string_view element);
inline std::string_view ElementOfName(std::string_view name) { return name.size() >= 8 ? name.substr(8) : name; }
// A sorted set keeps two entries a member: its name under kZsetMemberTag
// (value: the score), and its place in score order under kZsetScoreTag
// (see zset_commands.cc). The names of the others have no tag.
inline constexpr std::string_view kZsetMemberTag{"\x00", 1};
inline constexpr std::string_view kZsetScoreTag{"\x01", 1};
inline std::string_view MemberTag(ValueType type) {
  return type == ValueType::kZSet ? kZsetMemberTag : std::string_view();
}
// What WATCH compares: a fingerprint of a key's live value ("0": none). A
// collection's value carries its version, so its elements count too.
std::string KeyFingerprint(const std::optional<std::string>& raw);

// A member's score as its entry holds it (its exact bits: -0 stays -0), and
// the score-order name of a member: [tag][order-preserving score][member],
// where -0 sorts as 0 (Redis compares scores as numbers).
std::string EncodeScore(double score);
double DecodeScore(std::string_view stored);
std::string ScoreName(double score, std::string_view member);
// The member and score a score-order name holds (false: not one).
bool DecodeScoreName(std::string_view name, double* score, std::string_view* member);
// The score-order name of every member of `score`: a prefix of theirs.
std::string ScorePrefix(double score);
// The name of an element of a collection of `type` (lists: positions, as given).
inline std::string NameOf(ValueType type, std::string_view element) {
  if (type == ValueType::kList) return std::string(element);
  return std::string(MemberTag(type)) + HashedName(element);
}

// A collection as a read sees it, from one storage view.
class CollectionRead {
 public:
  CollectionRead(ReadContext& ctx, ValueType type) : ctx_(ctx), type_(type), snap_(ctx.engine->NewSnapshot()) {}
  // Several collections read from one view (SINTER and friends).
  CollectionRead(ReadContext& ctx, ValueType type, std::shared_ptr<storage::Snapshot> snap)
      : ctx_(ctx), type_(type), snap_(std::move(snap)) {}

  // Reads the key: false if the command is answered (WRONGTYPE, storage
  // error); otherwise found() says whether a live collection is there.
  bool Open(std::string_view key, resp::Writer* reply);
  // As Open, also accepting a collection of type `also` (then read as one).
  bool Open(std::string_view key, ValueType also, resp::Writer* reply);
  ValueType type() const { return type_; }
  bool found() const { return found_; }
  uint64_t count() const { return found_ ? CollectionCount(value_.payload) : 0; }
  int64_t head() const { return found_ ? ListHead(value_.payload) : 0; }

  // One element's value: false on a storage error (replied).
  bool Get(std::string_view element, std::optional<std::string>* out, resp::Writer* reply);

  // Calls fn(element, value) in name order from the first name at or after
  // `from` on (a sorted set's members: after their tag), until fn returns
  // false: false on a storage error (replied).
  template <typename Fn>
  bool ForEach(std::string_view from, Fn&& fn, resp::Writer* reply) {
    const std::string_view tag = MemberTag(type_);
    const bool hashed = type_ != ValueType::kList;
    return ForEachName(
        std::string(tag) + std::string(from),
        [&](std::string_view name, std::string_view value) {
          if (!name.starts_with(tag)) return false;
          name.remove_prefix(tag.size());
          return fn(hashed ? ElementOfName(name) : name, value);
        },
        reply);
  }

  // Calls fn(name, value) for the stored names from the first at or after
  // `from`, in order, until fn returns false; ForEachNameReverse from the
  // last before `before` (empty: the last of all) down. false on a storage
  // error (replied).
  template <typename Fn>
  bool ForEachName(std::string_view from, Fn&& fn, resp::Writer* reply) {
    if (!found_) return true;
    std::string prefix = storage::ElementPrefix(ctx_.db, key_);
    auto it = ctx_.engine->NewIterator(storage::Cf::kData, snap_.get());
    for (it->Seek(prefix + std::string(from)); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      if (!fn(it->key().substr(prefix.size()), it->value())) break;
    }
    return StorageOk(it->status(), reply);
  }
  template <typename Fn>
  bool ForEachNameReverse(std::string_view before, Fn&& fn, resp::Writer* reply) {
    if (!found_) return true;
    std::string prefix = storage::ElementPrefix(ctx_.db, key_);
    const std::string end = before.empty() ? storage::PrefixEnd(prefix) : prefix + std::string(before);
    auto it = ctx_.engine->NewIterator(storage::Cf::kData, snap_.get());
    it->SeekForPrev(end);
    if (it->Valid() && it->key() >= std::string_view(end)) it->Prev();
    for (; it->Valid() && it->key().starts_with(prefix); it->Prev()) {
      if (!fn(it->key().substr(prefix.size()), it->value())) break;
    }
    return StorageOk(it->status(), reply);
  }

 private:
  static bool StorageOk(const Status& s, resp::Writer* reply);
  ReadContext& ctx_;
  ValueType type_;
  std::shared_ptr<storage::Snapshot> snap_;
  std::string key_;
  std::string raw_;
  Value value_;
  bool found_ = false;
};

// The live collection at a key a write is about to change.
struct CollectionAt {
  bool found = false;
  uint64_t count = 0;
  int64_t expire_at_ms = 0;
  int64_t head = 0;  // a list's: the position of its first element
  std::string version;  // as stored (see value.h)
};

// Reads key for a write on a collection of `type`. nullopt: the command is
// done (WRONGTYPE replied, *status ok) or storage failed (*status).
std::optional<CollectionAt> GetCollectionForWrite(ApplyTxn& txn, uint16_t db, std::string_view key, ValueType type,
                                                  resp::Writer* reply, Status* status);

// Stores the collection's value with its count, or deletes the key when the
// count is 0.
Status PutCollection(ApplyTxn& txn, uint16_t db, std::string_view key, ValueType type, const CollectionAt& at);

// The optional count of SPOP, LPOP and RPOP (args[2]): *count is its
// decimal text, or empty without one. false: a negative or non-integer
// count (error replied).
bool ParseOptionalCount(Args args, std::string* count, resp::Writer* reply);

// HDEL and SREM (args: key element [element ...]): removes the elements,
// replies how many were there, deletes the key once none is left.
Status RemoveElementsApply(ApplyTxn& txn, const Entry& e, ValueType type, resp::Writer* reply);

// splitmix64: a stream of random numbers from one seed (random replies:
// HRANDFIELD, SRANDMEMBER, SPOP).
uint64_t NextRandom(uint64_t* state);

// Walks a hash's or a set's elements from the first name at or after
// `from`, calling fn(element, value) until it returns false; false on a
// failure.
using ElementWalk =
    std::function<bool(std::string_view from, const std::function<bool(std::string_view, std::string_view)>& fn)>;

// Chooses `want` elements of a hash or a set of `size` (> 0) from `seed`:
// distinct ones (all of them if want >= size), or with repeats. From a small
// collection, or when many are wanted, by position in one pass (uniform);
// else each by a seek to a random name (names are hashes: near uniform),
// drawing again when it meets one already chosen.
// *out: (element, value) in the order chosen. false: the walk failed.
bool ChooseElements(uint64_t size, uint64_t want, bool distinct, uint64_t seed, const ElementWalk& walk,
                    std::vector<std::pair<std::string, std::string>>* out);

// HRANDFIELD, SRANDMEMBER, ZRANDMEMBER key [count [<with_word>]]: parses
// the count (and the option asking for values, if with_word is not empty)
// and chooses from the collection of `type` at args[1]. false: answered (an
// error, or nil or an empty array); else *picks are (element, value) in the
// order chosen, to be answered as one element (!*with_count) or an array.
bool ChooseRandom(ReadContext& ctx, Args args, ValueType type, std::string_view with_word, bool* with_count,
                  bool* with_values, std::vector<std::pair<std::string, std::string>>* picks, resp::Writer* reply);

// Counts with repeats (HRANDFIELD, SRANDMEMBER with a negative count) above
// this are refused: the reply would have to be built whole.
inline constexpr uint64_t kRandomRepeatsMax = 1'000'000;
inline constexpr std::string_view kErrRandomRepeats =
    "ERR a negative count (repeats allowed) is limited to -1000000 in shoal";

// HSCAN and SSCAN (args: name key cursor [MATCH p] [COUNT n]). The cursor
// is the hash of the next element's name, so a scan resumes by a seek
// (O(COUNT) a call) and returns every element present throughout, whatever
// is added or removed meanwhile (elements whose hashes collide come back in
// one call). A collection of up to 128 elements comes back whole with
// cursor 0, as Redis answers for its small encodings.
void ScanCollection(ReadContext& ctx, Args args, ValueType type, bool with_values, resp::Writer* reply);

}  // namespace shoal::kv
