// Fuzz target: the stored encodings of collections (docs/design/storage.md),
// read back from disk or a snapshot: a key's value record ([type][flags]
// [expiry][payload]: a collection's count, a list's head, its version) and
// a sorted set's score-order element names. Bad bytes must be refused or
// read as some value, never crash; what decodes must encode back to the
// same thing, and score-order names must sort as their scores do.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_seeds.h"
#include "kv/collection.h"
#include "kv/value.h"
#include "common/status.h"

using namespace shoal;

std::vector<std::string> FuzzSeeds() {
  return {
      kv::EncodeValue(kv::ValueType::kString, 0, "hello"),
      kv::EncodeValue(kv::ValueType::kHash, 1'900'000'000'000, kv::CollectionPayload(3, "ver")),
      kv::EncodeValue(kv::ValueType::kSet, 0, kv::CollectionPayload(1)),
      kv::EncodeValue(kv::ValueType::kZSet, 0, kv::CollectionPayload(2, std::string(12, '\x07'))),
      kv::EncodeValue(kv::ValueType::kList, 5, kv::ListPayload(4, -2, "v")),
      kv::ScoreName(1.5, "member") + kv::ScoreName(-3, "m2"),
      kv::ScoreName(-INFINITY, "") + kv::ScoreName(1e300, "x"),
  };
}

namespace {

void CheckValue(std::string_view raw) {
  kv::Value v;
  if (!kv::DecodeValue(raw, &v)) return;
  // What decodes encodes back to a record that decodes the same.
  const std::string again = kv::EncodeValue(v.type, v.expire_at_ms, v.payload);
  kv::Value w;
  SHOAL_CHECK(kv::DecodeValue(again, &w));
  SHOAL_CHECK(w.type == v.type && w.expire_at_ms == v.expire_at_ms && w.payload == v.payload);
  (void)kv::TypeName(v.type);
  (void)kv::KeyFingerprint(std::optional<std::string>(std::string(raw)));
  if (!kv::IsCollection(v.type)) return;
  const uint64_t count = kv::CollectionCount(v.payload);
  const int64_t head = v.type == kv::ValueType::kList ? kv::ListHead(v.payload) : 0;
  (void)kv::CollectionVersion(v.type, v.payload);
  // A new version keeps the count (and a list's head) and reads back.
  const std::string with = kv::WithCollectionVersion(v.type, v.payload, "new-version");
  SHOAL_CHECK(kv::CollectionVersion(v.type, with) == "new-version");
  const size_t fixed = v.type == kv::ValueType::kList ? 16 : 8;
  if (v.payload.size() >= fixed) {
    SHOAL_CHECK(kv::CollectionCount(with) == count);
    if (v.type == kv::ValueType::kList) SHOAL_CHECK(kv::ListHead(with) == head);
  }
}

struct Named {
  double score;
  std::string_view member;
};

std::optional<Named> ScoreNameOf(std::string_view name) {
  Named n{};
  if (!kv::DecodeScoreName(name, &n.score, &n.member)) return std::nullopt;
  if (!std::isnan(n.score) && n.score != 0) {
    // (0 and -0 share a place in score order; NaN is never stored.)
    SHOAL_CHECK(kv::ScoreName(n.score, n.member) == name);
  }
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  CheckValue(in);
  (void)kv::DecodeScore(in.substr(0, 8));
  // Two score-order names, split where the second begins with the tag.
  const size_t cut = in.find(kv::kZsetScoreTag, 1);
  const std::string_view a = in.substr(0, cut), b = cut == std::string_view::npos ? "" : in.substr(cut);
  const auto na = ScoreNameOf(a), nb = ScoreNameOf(b);
  if (na && nb && !std::isnan(na->score) && !std::isnan(nb->score) && na->score < nb->score) {
    SHOAL_CHECK(kv::ScorePrefix(na->score) < kv::ScorePrefix(nb->score));
  }
  return 0;
}
