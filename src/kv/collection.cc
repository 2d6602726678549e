#include "kv/collection.h"

#include <algorithm>
#include <climits>
#include <bit>
#include <set>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/strings.h"

namespace shoal::kv {

uint64_t ElementHash(std::string_view element) {
  // A fixed seed: names are stored, so every replica and version must agree.
  return XXH3_64bits_withSeed(element.data(), element.size(), 0x73686f616cULL);
}

std::string HashedName(std::string_view element) {
  std::string out;
  out.reserve(8 + element.size());
  storage::PutU64BE(&out, ElementHash(element));
  out.append(element);
  return out;
}

std::string KeyFingerprint(const std::optional<std::string>& raw) {
  if (!raw) return "0";
  return std::to_string(XXH3_64bits(raw->data(), raw->size()) | 1);
}

std::string EncodeScore(double score) {
  std::string out;
  storage::PutU64BE(&out, std::bit_cast<uint64_t>(score));
  return out;
}

double DecodeScore(std::string_view stored) {
  return stored.size() == 8 ? std::bit_cast<double>(storage::GetU64BE(stored.data())) : 0;
}

std::string ScorePrefix(double score) {
  constexpr uint64_t kSign = 1ULL << 63;
  uint64_t bits = std::bit_cast<uint64_t>(score == 0 ? 0.0 : score);
  bits = (bits & kSign) != 0 ? ~bits : bits | kSign;  // negatives reversed, below positives
  std::string out(kZsetScoreTag);
  storage::PutU64BE(&out, bits);
  return out;
}

std::string ScoreName(double score, std::string_view member) {
  std::string out = ScorePrefix(score);
  out.append(member);
  return out;
}

bool DecodeScoreName(std::string_view name, double* score, std::string_view* member) {
  if (name.size() < 9 || !name.starts_with(kZsetScoreTag)) return false;
  constexpr uint64_t kSign = 1ULL << 63;
  uint64_t bits = storage::GetU64BE(name.data() + 1);
  bits = (bits & kSign) != 0 ? bits & ~kSign : ~bits;
  *score = std::bit_cast<double>(bits);
  *member = name.substr(9);
  return true;
}

bool CollectionRead::Open(std::string_view key, resp::Writer* reply) { return Open(key, type_, reply); }

bool CollectionRead::Open(std::string_view key, ValueType also, resp::Writer* reply) {
  key_.assign(key);
  if (!ReadLive(ctx_, key, &raw_, &value_, &found_, reply, snap_.get())) return false;
  if (found_ && value_.type == also) type_ = also;
  if (found_ && value_.type != type_) {
    reply->Error(kErrWrongType);
    return false;
  }
  return true;
}

bool CollectionRead::Get(std::string_view element, std::optional<std::string>* out, resp::Writer* reply) {
  out->reset();
  if (!found_) return true;
  std::string v;
  Status s = ctx_.engine->Get(storage::Cf::kData, storage::ElementKey(ctx_.db, key_, NameOf(type_, element)), &v,
                              snap_.get());
  if (s.code() == Code::kNotFound) return true;
  if (!StorageOk(s, reply)) return false;
  *out = std::move(v);
  return true;
}

bool CollectionRead::StorageOk(const Status& s, resp::Writer* reply) {
  if (s.ok()) return true;
  reply->Error("ERR storage error: " + s.ToString());
  return false;
}

std::optional<CollectionAt> GetCollectionForWrite(ApplyTxn& txn, uint16_t db, std::string_view key, ValueType type,
                                                  resp::Writer* reply, Status* status) {
  auto raw = txn.GetLive(db, key);
  if (!raw.ok()) {
    *status = raw.status();
    return std::nullopt;
  }
  CollectionAt out;
  if (!*raw) return out;
  Value v = DecodeOrDie(**raw);
  if (v.type != type) {
    reply->Error(kErrWrongType);
    return std::nullopt;
  }
  out.found = true;
  out.count = CollectionCount(v.payload);
  out.expire_at_ms = v.expire_at_ms;
  out.head = ListHead(v.payload);
  out.version.assign(CollectionVersion(type, v.payload));
  return out;
}

Status PutCollection(ApplyTxn& txn, uint16_t db, std::string_view key, ValueType type, const CollectionAt& at) {
  if (at.count == 0) {
    bool existed = false;
    return at.found ? txn.Delete(db, key, &existed) : Status::Ok();
  }
  return txn.Put(db, key,
                 EncodeValue(type, at.expire_at_ms,
                             type == ValueType::kList ? ListPayload(at.count, at.head, at.version)
                                                      : CollectionPayload(at.count, at.version)));
}

bool ParseOptionalCount(Args args, std::string* count, resp::Writer* reply) {
  count->clear();
  if (args.size() < 3) return true;
  auto c = ParseInt64(args[2]);
  if (!c || *c < 0) {
    reply->Error("ERR value is out of range, must be positive");
    return false;
  }
  *count = Int64ToString(*c);
  return true;
}

Status RemoveElementsApply(ApplyTxn& txn, const Entry& e, ValueType type, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status s;
  auto at = GetCollectionForWrite(txn, e.db, key, type, reply, &s);
  if (!at) return s;
  uint64_t removed = 0;
  for (size_t i = 1; i < e.args.size() && at->found; ++i) {
    std::string name = NameOf(type, e.args[i]);
    auto old = txn.GetElement(e.db, key, name);
    if (!old.ok()) return old.status();
    if (!old->has_value()) continue;
    txn.DeleteElement(e.db, key, name);
    ++removed;
  }
  if (removed > 0) {
    at->count = at->count > removed ? at->count - removed : 0;
    s = PutCollection(txn, e.db, key, type, *at);
    if (!s.ok()) return s;
  }
  reply->Integer(static_cast<int64_t>(removed));
  return Status::Ok();
}

uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

namespace {

// Collections up to this size are chosen from by position.
constexpr uint64_t kChooseByPosition = 1024;

std::string RandomPoint(uint64_t* state) {
  std::string from;
  storage::PutU64BE(&from, NextRandom(state));
  return from;
}

}  // namespace

bool ChooseElements(uint64_t size, uint64_t want, bool distinct, uint64_t seed, const ElementWalk& walk,
                    std::vector<std::pair<std::string, std::string>>* out) {
  out->clear();
  uint64_t state = seed;
  if (size > kChooseByPosition && want < size / 8) {
    // Each pick: the first element at or after a random name (wrapping),
    // drawn again if already chosen (fewer than one in eight are).
    std::set<std::string, std::less<>> chosen;
    bool ok = true;
    for (uint64_t i = 0; i < want && ok; ++i) {
      bool taken = false;
      for (int attempt = 0; attempt < 16 && !taken && ok; ++attempt) {
        bool met = false;
        auto take = [&](std::string_view e, std::string_view v) {
          met = true;
          if (distinct && !chosen.emplace(e).second) return false;
          out->emplace_back(e, v);
          taken = true;
          return false;
        };
        ok = walk(RandomPoint(&state), take);
        if (ok && !met) ok = walk({}, take);
      }
      if (!taken) break;  // very unlikely: choose by position below
    }
    if (!ok) return false;
    if (out->size() == want) return true;
    out->clear();
  }
  std::vector<uint64_t> picks;
  if (distinct && want >= size) {
    for (uint64_t i = 0; i < size; ++i) picks.push_back(i);
  } else if (distinct) {
    std::set<uint64_t> chosen;  // Floyd's algorithm
    for (uint64_t j = size - want; j < size; ++j) {
      uint64_t t = NextRandom(&state) % (j + 1);
      chosen.insert(chosen.contains(t) ? j : t);
    }
    picks.assign(chosen.begin(), chosen.end());
  } else {
    for (uint64_t i = 0; i < want; ++i) picks.push_back(NextRandom(&state) % size);
  }
  std::vector<uint64_t> order = picks;
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  std::vector<std::pair<std::string, std::string>> at(order.size());
  size_t next = 0;
  uint64_t index = 0;
  bool ok = walk({}, [&](std::string_view e, std::string_view v) {
    if (next < order.size() && order[next] == index) at[next++] = {std::string(e), std::string(v)};
    ++index;
    return next < order.size();
  });
  if (!ok) return false;
  for (uint64_t p : picks) {
    size_t i = static_cast<size_t>(std::lower_bound(order.begin(), order.end(), p) - order.begin());
    if (i < next) out->push_back(at[i]);  // fewer elements than counted: cannot happen within one view
  }
  return true;
}

bool ChooseRandom(ReadContext& ctx, Args args, ValueType type, std::string_view with_word, bool* with_count,
                  bool* with_values, std::vector<std::pair<std::string, std::string>>* picks, resp::Writer* reply) {
  *with_count = args.size() >= 3;
  *with_values = false;
  int64_t count = 1;
  if (*with_count) {
    auto c = ParseInt64(args[2]);
    if (!c) return reply->Error(kErrNotInteger), false;
    if (*c == LLONG_MIN) {
      return reply->Error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"),
             false;
    }
    count = *c;
    const size_t most = with_word.empty() ? 3 : 4;
    if (args.size() > most || (args.size() == 4 && !EqualsIgnoreCase(args[3], with_word))) {
      return reply->Error(kErrSyntax), false;
    }
    *with_values = args.size() == 4;
    if (*with_values && (count < -LLONG_MAX / 2 || count > LLONG_MAX / 2)) {
      return reply->Error("ERR value is out of range"), false;
    }
  }
  const uint64_t want = count >= 0 ? static_cast<uint64_t>(count) : static_cast<uint64_t>(-count);
  CollectionRead c(ctx, type);
  if (!c.Open(args[1], reply)) return false;
  const uint64_t size = c.count();
  if (!*with_count && size == 0) return reply->NullBulk(), false;
  if (want == 0 || size == 0) return reply->ArrayHeader(0), false;
  if (count < 0 && want > kRandomRepeatsMax) return reply->Error(kErrRandomRepeats), false;
  ElementWalk walk = [&](std::string_view from, const std::function<bool(std::string_view, std::string_view)>& fn) {
    return c.ForEach(from, fn, reply);
  };
  if (!ChooseElements(size, want, count >= 0, ctx.random, walk, picks)) return false;
  if (!*with_count && picks->empty()) return reply->NullBulk(), false;
  return true;
}

void ScanCollection(ReadContext& ctx, Args args, ValueType type, bool with_values, resp::Writer* reply) {
  ScanArgs scan;
  if (!ParseScanCursor(args, 2, &scan, reply)) return;
  CollectionRead c(ctx, type);
  if (!c.Open(args[1], reply)) return;
  if (!c.found()) {  // as Redis: no option is looked at
    reply->ArrayHeader(2);
    reply->Bulk("0");
    reply->ArrayHeader(0);
    return;
  }
  if (!ParseScanOptions(args, 2, false, &scan, reply)) return;
  const bool whole = c.count() <= 128;
  if (whole && type == ValueType::kZSet) {
    // As Redis's small encoding: in score order, integral scores as integers.
    std::vector<std::pair<std::string, std::string>> found;
    bool ok = c.ForEachName(
        kZsetScoreTag,
        [&](std::string_view name, std::string_view v) {
          double score;
          std::string_view m;
          if (!DecodeScoreName(name, &score, &m)) return false;
          if (scan.use_pattern && !GlobMatch(scan.pattern, m)) return true;
          score = DecodeScore(v);
          const bool integral = score > -9.2233720368547758e18 && score < 9.2233720368547758e18 &&
                                score == static_cast<double>(static_cast<int64_t>(score));
          found.emplace_back(m, integral ? std::to_string(static_cast<int64_t>(score))
                                         : resp::Writer::FormatDouble(score));
          return true;
        },
        reply);
    if (!ok) return;
    reply->ArrayHeader(2);
    reply->Bulk("0");
    reply->ArrayHeader(found.size() * 2);
    for (const auto& [m, v] : found) {
      reply->Bulk(m);
      reply->Bulk(v);
    }
    return;
  }
  const uint64_t count = static_cast<uint64_t>(scan.count);
  uint64_t taken = 0, next = 0, last = 0;  // last: the hash of the last element taken
  std::string from;
  if (!whole) storage::PutU64BE(&from, scan.cursor);
  std::vector<std::pair<std::string, std::string>> found;
  bool ok = c.ForEach(
      from,
      [&](std::string_view e, std::string_view v) {
        const uint64_t h = ElementHash(e);
        if (!whole && taken >= count && h != last) {
          next = h;  // > last >= 0: never 0, which would end the scan
          return false;
        }
        ++taken;
        last = h;
        if (!scan.use_pattern || GlobMatch(scan.pattern, e)) found.emplace_back(e, with_values ? v : std::string_view());
        return true;
      },
      reply);
  if (!ok) return;
  reply->ArrayHeader(2);
  reply->Bulk(std::to_string(next));
  reply->ArrayHeader(found.size() * (with_values ? 2 : 1));
  for (const auto& [e, v] : found) {
    reply->Bulk(e);
    if (with_values) type == ValueType::kZSet ? reply->Bulk(resp::Writer::FormatDouble(DecodeScore(v))) : reply->Bulk(v);
  }
}

}  // namespace shoal::kv
