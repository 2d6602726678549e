// List commands: LPUSH RPUSH and the rest of Redis's L* family (blocking
// pops and LMPOP are not here yet). A list is a value of type list holding
// its length and the position of its first element ([count][head]); its
// i-th element (from 0) is the element key at position head + i, encoded
// so that byte order is numeric order. Pushes and pops at either end,
// LINDEX and LSET touch one element, LRANGE reads its range, LTRIM deletes
// what it trims (a range tombstone when many); LINSERT moves the elements
// on the shorter side of the pivot and LREM the ones after the first it
// removes.
#include <algorithm>
#include <climits>
#include <deque>
#include <vector>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {


// A position as an element name: big endian with the sign bit flipped.
std::string Pos(int64_t p) {
  std::string out;
  storage::PutU64BE(&out, static_cast<uint64_t>(p) ^ (1ULL << 63));
  return out;
}

// Redis's index arithmetic: a negative index counts from the end.
// [start, end] clipped to the list; false if the range is empty.
bool ClipRange(int64_t len, int64_t* start, int64_t* end) {
  if (*start < 0) *start = len + *start;
  if (*end < 0) *end = len + *end;
  if (*start < 0) *start = 0;
  if (*start > *end || *start >= len) return false;
  if (*end >= len) *end = len - 1;
  return true;
}

// ---- reads

void LlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead l(ctx, ValueType::kList);
  if (!l.Open(args[1], reply)) return;
  reply->Integer(static_cast<int64_t>(l.count()));
}

void LindexRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead l(ctx, ValueType::kList);
  if (!l.Open(args[1], reply)) return;
  if (!l.found()) return reply->NullBulk();  // as Redis: the key first, then the index
  auto index = ParseInt64(args[2]);
  if (!index) return reply->Error(kErrNotInteger);
  const auto len = static_cast<int64_t>(l.count());
  int64_t i = *index < 0 ? len + *index : *index;
  if (i < 0 || i >= len) return reply->NullBulk();
  std::optional<std::string> v;
  if (!l.Get(Pos(l.head() + i), &v, reply)) return;
  v ? reply->Bulk(*v) : reply->NullBulk();
}

// Calls fn(value) for the elements [start, start + n) of an open list.
template <typename Fn>
bool ForRange(CollectionRead& l, int64_t start, int64_t n, Fn&& fn, resp::Writer* reply) {
  int64_t left = n;
  return l.ForEach(
      Pos(l.head() + start),
      [&](std::string_view, std::string_view v) {
        if (left-- <= 0) return false;
        fn(v);
        return left > 0;
      },
      reply);
}

void LrangeRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto start = ParseInt64(args[2]);
  auto end = ParseInt64(args[3]);
  if (!start || !end) return reply->Error(kErrNotInteger);
  CollectionRead l(ctx, ValueType::kList);
  if (!l.Open(args[1], reply)) return;
  int64_t s = *start, e = *end;
  if (!ClipRange(static_cast<int64_t>(l.count()), &s, &e)) return reply->ArrayHeader(0);
  std::string out;
  resp::Writer items(&out, reply->protocol());
  int64_t n = 0;
  auto add = [&](std::string_view v) {
    items.Bulk(v);
    ++n;
  };
  if (!ForRange(l, s, e - s + 1, add, reply)) return;
  reply->ArrayHeader(static_cast<size_t>(n));
  reply->Raw(out);
}

// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]
void LposRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  int64_t rank = 1, count = -1, maxlen = 0;
  for (size_t j = 3; j < args.size(); ++j) {
    const bool more = j + 1 < args.size();
    if (EqualsIgnoreCase(args[j], "rank") && more) {
      auto r = ParseInt64(args[++j]);
      if (!r) return reply->Error(kErrNotInteger);
      if (*r == LLONG_MIN) {
        return reply->Error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807");
      }
      if (*r == 0) {
        return reply->Error(
            "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to "
            "start from the end of the list");
      }
      rank = *r;
    } else if (EqualsIgnoreCase(args[j], "count") && more) {
      auto c = ParseInt64(args[++j]);
      if (!c || *c < 0) return reply->Error("ERR COUNT can't be negative");
      count = *c;
    } else if (EqualsIgnoreCase(args[j], "maxlen") && more) {
      auto m = ParseInt64(args[++j]);
      if (!m || *m < 0) return reply->Error("ERR MAXLEN can't be negative");
      maxlen = *m;
    } else {
      return reply->Error(kErrSyntax);
    }
  }
  CollectionRead l(ctx, ValueType::kList);
  if (!l.Open(args[1], reply)) return;
  if (!l.found()) return count >= 0 ? reply->ArrayHeader(0) : reply->NullBulk();
  const auto len = static_cast<int64_t>(l.count());
  const int64_t want = count < 0 ? 1 : (count == 0 ? LLONG_MAX : count);
  int64_t skip = (rank > 0 ? rank : -rank) - 1;
  std::vector<int64_t> found;
  // Walks forward; from the tail (rank < 0), keeps the last skip + want
  // matches in the window MAXLEN allows, then reads them backwards.
  std::deque<int64_t> matches;
  const uint64_t keep = want == LLONG_MAX ? UINT64_MAX : static_cast<uint64_t>(skip) + static_cast<uint64_t>(want);
  int64_t index = 0;
  bool ok = l.ForEach(
      {},
      [&](std::string_view, std::string_view v) {
        if (rank > 0) {
          if (maxlen != 0 && index >= maxlen) return false;
          if (v == args[2] && skip-- <= 0) found.push_back(index);
          ++index;
          return static_cast<int64_t>(found.size()) < want;
        }
        if ((maxlen == 0 || index >= len - maxlen) && v == args[2]) {
          matches.push_back(index);
          if (matches.size() > keep) matches.pop_front();
        }
        ++index;
        return true;
      },
      reply);
  if (!ok) return;
  if (rank < 0) {
    for (auto it = matches.rbegin(); it != matches.rend() && static_cast<int64_t>(found.size()) < want; ++it) {
      if (skip-- <= 0) found.push_back(*it);
    }
  }
  if (count < 0) return found.empty() ? reply->NullBulk() : reply->Integer(found[0]);
  reply->ArrayHeader(found.size());
  for (int64_t i : found) reply->Integer(i);
}

// ---- writes

// A list's elements [start, start + n) as values, in order (for writes).
Status ReadRange(ApplyTxn& txn, uint16_t db, std::string_view key, const CollectionAt& l, int64_t start, int64_t n,
                 std::vector<std::string>* out) {
  int64_t left = n;
  return txn.ForEachElement(
      db, key,
      [&](std::string_view, std::string_view v) {
        if (left-- <= 0) return false;
        out->emplace_back(v);
        return left > 0;
      },
      Pos(l.head + start));
}

// LPUSH RPUSH LPUSHX RPUSHX. args: key element [element ...]
Status PushImpl(ApplyTxn& txn, const Entry& e, resp::Writer* reply, bool left, bool only_existing) {
  const std::string& key = e.args[0];
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  if (only_existing && !l->found) {
    reply->Integer(0);
    return Status::Ok();
  }
  for (size_t i = 1; i < e.args.size(); ++i) {
    if (left) {
      l->head -= 1;
      txn.PutElement(e.db, key, Pos(l->head), e.args[i]);
    } else {
      txn.PutElement(e.db, key, Pos(l->head + static_cast<int64_t>(l->count)), e.args[i]);
    }
    l->count += 1;
  }
  st = PutCollection(txn, e.db, key, ValueType::kList, *l);
  if (st.ok()) reply->Integer(static_cast<int64_t>(l->count));
  return st;
}
Status LpushApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PushImpl(t, e, r, true, false); }
Status RpushApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PushImpl(t, e, r, false, false); }
Status LpushxApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PushImpl(t, e, r, true, true); }
Status RpushxApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PushImpl(t, e, r, false, true); }

// Removes up to n elements from one end; *out gets them in pop order.
Status PopN(ApplyTxn& txn, uint16_t db, std::string_view key, CollectionAt* l, bool left, uint64_t n,
            std::vector<std::string>* out) {
  n = std::min(n, l->count);
  const auto k = static_cast<int64_t>(n);
  const int64_t first = left ? 0 : static_cast<int64_t>(l->count) - k;
  Status st = ReadRange(txn, db, key, *l, first, k, out);
  if (!st.ok()) return st;
  if (!left) std::reverse(out->begin(), out->end());
  st = txn.DeleteElementRange(db, key, Pos(l->head + first), Pos(l->head + first + k), n);
  if (!st.ok()) return st;
  if (left) l->head += k;
  l->count -= n;
  return PutCollection(txn, db, key, ValueType::kList, *l);
}

// LPOP/RPOP key [count]: args key count|""
bool PopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() > 3) {
    reply->Error(ArityError(ToLower(args[0])));
    return false;
  }
  std::string count;
  if (!ParseOptionalCount(args, &count, reply)) return false;
  SetArgs(entry, std::string(args[1]), count);
  return true;
}

Status PopImpl(ApplyTxn& txn, const Entry& e, resp::Writer* reply, bool left) {
  const std::string& key = e.args[0];
  const bool with_count = !e.args[1].empty();
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  const uint64_t n = with_count ? static_cast<uint64_t>(*ParseInt64(e.args[1])) : 1;
  if (!l->found) {
    with_count ? reply->NullArray() : reply->NullBulk();
    return Status::Ok();
  }
  if (with_count && n == 0) {
    reply->ArrayHeader(0);
    return Status::Ok();
  }
  std::vector<std::string> popped;
  st = PopN(txn, e.db, key, &*l, left, n, &popped);
  if (!st.ok()) return st;
  if (!with_count) {
    popped.empty() ? reply->NullBulk() : reply->Bulk(popped[0]);
    return Status::Ok();
  }
  reply->ArrayHeader(popped.size());
  for (const auto& v : popped) reply->Bulk(v);
  return Status::Ok();
}
Status LpopApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PopImpl(t, e, r, true); }
Status RpopApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return PopImpl(t, e, r, false); }


// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]. Entry args: key
// [key ...] left|right count.
bool LmpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseMultiPop(args, 1, "left", "right", entry, reply);
}

// BLMPOP timeout numkeys ...: LMPOP's entry.
bool BlmpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseBlockingMultiPop(args, "left", "right", entry, reply);
}

// BLPOP/BRPOP key [key ...] timeout. Entry args: key [key ...] left|right ""
// (the empty count: BLPOP's reply, [key, element]).
template <bool kLeft>
bool BpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseBlockingPop(args, kLeft ? "left" : "right", entry, reply);
}

// Pops from the first of the keys that holds a list: [key, [element ...]]
// (LMPOP), or [key, element] (BLPOP); a null array if none does (a
// blocking pop then waits).
Status MultiPopApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const size_t nkeys = e.args.size() - 2;
  const bool left = e.args[nkeys] == "left";
  const bool single = e.args[nkeys + 1].empty();
  const uint64_t count = single ? 1 : static_cast<uint64_t>(*ParseInt64(e.args[nkeys + 1]));
  Status st;
  for (size_t i = 0; i < nkeys; ++i) {
    const std::string& key = e.args[i];
    auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
    if (!l) return st;
    if (!l->found) continue;
    std::vector<std::string> popped;
    st = PopN(txn, e.db, key, &*l, left, count, &popped);
    if (!st.ok()) return st;
    reply->ArrayHeader(2);
    reply->Bulk(key);
    if (single) {
      reply->Bulk(popped.at(0));
    } else {
      reply->ArrayHeader(popped.size());
      for (const auto& v : popped) reply->Bulk(v);
    }
    return Status::Ok();
  }
  reply->NullArray();
  return Status::Ok();
}

Status LsetApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  if (!l->found) {
    reply->Error("ERR no such key");
    return Status::Ok();
  }
  auto index = ParseInt64(e.args[1]);  // as Redis: after the key
  if (!index) {
    reply->Error(kErrNotInteger);
    return Status::Ok();
  }
  const auto len = static_cast<int64_t>(l->count);
  int64_t i = *index;
  if (i < 0) i += len;
  if (i < 0 || i >= len) {
    reply->Error("ERR index out of range");
    return Status::Ok();
  }
  txn.PutElement(e.db, key, Pos(l->head + i), e.args[2]);
  reply->Simple("OK");
  return Status::Ok();
}

// Checks that args[2] (and args[3] when `two`) are integers before the key
// is looked at, as Redis does for LREM and LTRIM.
bool IntegersPrepare(Args args, bool two, Entry* entry, resp::Writer* reply) {
  if (!ParseInt64(args[2]) || (two && !ParseInt64(args[3]))) {
    reply->Error(kErrNotInteger);
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}
// LREM key count element
bool LremPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return IntegersPrepare(args, false, entry, reply);
}
// LTRIM key start stop
bool LtrimPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return IntegersPrepare(args, true, entry, reply);
}

Status LtrimApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  if (!l->found) {
    reply->Simple("OK");
    return Status::Ok();
  }
  const auto len = static_cast<int64_t>(l->count);
  int64_t start = *ParseInt64(e.args[1]), end = *ParseInt64(e.args[2]);
  int64_t ltrim = len, rtrim = 0;
  if (ClipRange(len, &start, &end)) {
    ltrim = start;
    rtrim = len - end - 1;
  }
  if (ltrim > 0) {
    st = txn.DeleteElementRange(e.db, key, Pos(l->head), Pos(l->head + ltrim), static_cast<uint64_t>(ltrim));
  }
  if (st.ok() && rtrim > 0) {
    st = txn.DeleteElementRange(e.db, key, Pos(l->head + len - rtrim), Pos(l->head + len),
                                static_cast<uint64_t>(rtrim));
  }
  if (!st.ok()) return st;
  l->head += ltrim;
  l->count = static_cast<uint64_t>(len - ltrim - rtrim);
  st = PutCollection(txn, e.db, key, ValueType::kList, *l);
  if (st.ok()) reply->Simple("OK");
  return st;
}

// Rewrites the list's elements from index `from` on as `tail` (the list's
// length becomes from + tail.size()).
Status RewriteTail(ApplyTxn& txn, uint16_t db, std::string_view key, CollectionAt* l, int64_t from,
                   const std::vector<std::string>& tail) {
  const auto old_len = static_cast<int64_t>(l->count);
  for (size_t i = 0; i < tail.size(); ++i) txn.PutElement(db, key, Pos(l->head + from + static_cast<int64_t>(i)), tail[i]);
  const int64_t new_len = from + static_cast<int64_t>(tail.size());
  if (new_len < old_len) {
    Status st = txn.DeleteElementRange(db, key, Pos(l->head + new_len), Pos(l->head + old_len),
                                       static_cast<uint64_t>(old_len - new_len));
    if (!st.ok()) return st;
  }
  l->count = static_cast<uint64_t>(new_len);
  return PutCollection(txn, db, key, ValueType::kList, *l);
}

Status LremApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const int64_t count = *ParseInt64(e.args[1]);
  const std::string& element = e.args[2];
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  if (!l->found) {
    reply->Integer(0);
    return Status::Ok();
  }
  const auto len = static_cast<int64_t>(l->count);
  std::vector<std::string> all;
  st = ReadRange(txn, e.db, key, *l, 0, len, &all);
  if (!st.ok()) return st;
  // Which to remove: the first |count| from the head (count > 0), from the
  // tail (count < 0), or all.
  std::vector<bool> drop(all.size(), false);
  int64_t removed = 0;
  // |count| without overflow (count may be INT64_MIN); 0: all.
  const uint64_t limit = count == 0 ? UINT64_MAX
                                    : (count > 0 ? static_cast<uint64_t>(count) : ~static_cast<uint64_t>(count) + 1);
  for (size_t k = 0; k < all.size() && static_cast<uint64_t>(removed) < limit; ++k) {
    size_t i = count >= 0 ? k : all.size() - 1 - k;
    if (all[i] == element) {
      drop[i] = true;
      ++removed;
    }
  }
  if (removed == 0) {
    reply->Integer(0);
    return Status::Ok();
  }
  size_t first = 0;
  while (!drop[first]) ++first;
  std::vector<std::string> tail;
  for (size_t i = first; i < all.size(); ++i) {
    if (!drop[i]) tail.push_back(std::move(all[i]));
  }
  st = RewriteTail(txn, e.db, key, &*l, static_cast<int64_t>(first), tail);
  if (st.ok()) reply->Integer(removed);
  return st;
}

// LINSERT key BEFORE|AFTER pivot element: args key B|A pivot element
bool LinsertPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  const bool after = EqualsIgnoreCase(args[2], "after");
  if (!after && !EqualsIgnoreCase(args[2], "before")) {
    reply->Error(kErrSyntax);
    return false;
  }
  SetArgs(entry, std::string(args[1]), after ? "A" : "B", std::string(args[3]), std::string(args[4]));
  return true;
}

Status LinsertApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const bool after = e.args[1] == "A";
  Status st;
  auto l = GetCollectionForWrite(txn, e.db, key, ValueType::kList, reply, &st);
  if (!l) return st;
  if (!l->found) {
    reply->Integer(0);
    return Status::Ok();
  }
  const auto len = static_cast<int64_t>(l->count);
  std::vector<std::string> all;
  st = ReadRange(txn, e.db, key, *l, 0, len, &all);
  if (!st.ok()) return st;
  int64_t pivot = -1;
  for (size_t i = 0; i < all.size() && pivot < 0; ++i) {
    if (all[i] == e.args[2]) pivot = static_cast<int64_t>(i);
  }
  if (pivot < 0) {
    reply->Integer(-1);
    return Status::Ok();
  }
  const int64_t at = after ? pivot + 1 : pivot;  // the new element's index
  if (at < len - at) {
    // Fewer before it: those move one towards the head.
    for (int64_t i = 0; i < at; ++i) txn.PutElement(e.db, key, Pos(l->head - 1 + i), all[static_cast<size_t>(i)]);
    l->head -= 1;
    txn.PutElement(e.db, key, Pos(l->head + at), e.args[3]);
    l->count += 1;
    st = PutCollection(txn, e.db, key, ValueType::kList, *l);
  } else {
    std::vector<std::string> tail;
    tail.push_back(e.args[3]);
    for (int64_t i = at; i < len; ++i) tail.push_back(std::move(all[static_cast<size_t>(i)]));
    st = RewriteTail(txn, e.db, key, &*l, at, tail);
  }
  if (st.ok()) reply->Integer(static_cast<int64_t>(l->count));
  return st;
}

// LMOVE source destination LEFT|RIGHT LEFT|RIGHT; RPOPLPUSH source
// destination. args: source destination from(L|R) to(L|R)
bool ParseSide(std::string_view s, char* out) {
  if (EqualsIgnoreCase(s, "left")) *out = 'L';
  else if (EqualsIgnoreCase(s, "right")) *out = 'R';
  else return false;
  return true;
}

bool LmovePrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  char from = 0, to = 0;
  if (!ParseSide(args[3], &from) || !ParseSide(args[4], &to)) {
    reply->Error(kErrSyntax);
    return false;
  }
  SetArgs(entry, std::string(args[1]), std::string(args[2]), std::string(1, from), std::string(1, to));
  return true;
}

bool RpoplpushPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer*) {
  SetArgs(entry, std::string(args[1]), std::string(args[2]), "R", "L");
  return true;
}

// BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout (the sides are
// checked first, as Redis) and BRPOPLPUSH source destination timeout:
// LMOVE's entry.
bool BlmovePrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  int64_t ms = 0;
  return LmovePrepare(ctx, args.first(5), entry, reply) && ParseBlockTimeout(args[5], &ms, reply);
}
bool BrpoplpushPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  int64_t ms = 0;
  return ParseBlockTimeout(args[3], &ms, reply) && RpoplpushPrepare(ctx, args, entry, reply);
}

Status LmoveApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string &src = e.args[0], &dst = e.args[1];
  Status st;
  auto from = GetCollectionForWrite(txn, e.db, src, ValueType::kList, reply, &st);
  if (!from) return st;
  if (!from->found) {
    reply->NullBulk();
    return Status::Ok();
  }
  // The destination's type is checked before anything moves.
  if (!GetCollectionForWrite(txn, e.db, dst, ValueType::kList, reply, &st)) return st;
  if (src == dst && from->count == 1) {
    // Its only element goes back where it was: nothing changes (popping it
    // first would drop the key, and its TTL with it).
    auto only = txn.GetElement(e.db, src, Pos(from->head));
    if (!only.ok()) return only.status();
    only->has_value() ? reply->Bulk(**only) : reply->NullBulk();
    return Status::Ok();
  }
  std::vector<std::string> popped;
  st = PopN(txn, e.db, src, &*from, e.args[2] == "L", 1, &popped);
  if (!st.ok()) return st;
  if (popped.empty()) {
    reply->NullBulk();
    return Status::Ok();
  }
  // Read again: the source may be the destination.
  auto to = GetCollectionForWrite(txn, e.db, dst, ValueType::kList, reply, &st);
  if (!to) return st;
  if (e.args[3] == "L") {
    to->head -= 1;
    txn.PutElement(e.db, dst, Pos(to->head), popped[0]);
  } else {
    txn.PutElement(e.db, dst, Pos(to->head + static_cast<int64_t>(to->count)), popped[0]);
  }
  to->count += 1;
  st = PutCollection(txn, e.db, dst, ValueType::kList, *to);
  if (st.ok()) reply->Bulk(popped[0]);
  return st;
}

}  // namespace

void AppendListCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite | kCmdDenyOom;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"llen", 2, kR, 1, 1, 1, "list", 0, LlenRead},
      {"lindex", 3, kCmdReadonly, 1, 1, 1, "list", 0, LindexRead},
      {"lrange", 4, kCmdReadonly, 1, 1, 1, "list", 0, LrangeRead},
      {"lpos", -3, kCmdReadonly, 1, 1, 1, "list", 0, LposRead},
      {"lpush", -3, kWF, 1, 1, 1, "list", 60, nullptr, nullptr, LpushApply},
      {"rpush", -3, kWF, 1, 1, 1, "list", 61, nullptr, nullptr, RpushApply},
      {"lpushx", -3, kWF, 1, 1, 1, "list", 62, nullptr, nullptr, LpushxApply},
      {"rpushx", -3, kWF, 1, 1, 1, "list", 63, nullptr, nullptr, RpushxApply},
      {"lpop", -2, kCmdWrite | kCmdFast, 1, 1, 1, "list", 64, nullptr, PopPrepare, LpopApply},
      {"rpop", -2, kCmdWrite | kCmdFast, 1, 1, 1, "list", 65, nullptr, PopPrepare, RpopApply},
      {"lset", 4, kW, 1, 1, 1, "list", 66, nullptr, nullptr, LsetApply},
      {"ltrim", 4, kCmdWrite, 1, 1, 1, "list", 67, nullptr, LtrimPrepare, LtrimApply},
      {"lrem", 4, kCmdWrite, 1, 1, 1, "list", 68, nullptr, LremPrepare, LremApply},
      {"linsert", 5, kW, 1, 1, 1, "list", 69, nullptr, LinsertPrepare, LinsertApply},
      {"lmove", 5, kW, 1, 2, 1, "list", 70, nullptr, LmovePrepare, LmoveApply},
      {"rpoplpush", 3, kW, 1, 2, 1, "list", 71, nullptr, RpoplpushPrepare, LmoveApply},
      {"lmpop", -4, kCmdWrite, 0, 0, 0, "list", 72, nullptr, LmpopPrepare, MultiPopApply, 1},
      {"blpop", -3, kCmdWrite | kCmdBlocking, 1, -2, 1, "list", 73, nullptr, BpopPrepare<true>, MultiPopApply, 0,
       -1},
      {"brpop", -3, kCmdWrite | kCmdBlocking, 1, -2, 1, "list", 74, nullptr, BpopPrepare<false>, MultiPopApply, 0,
       -1},
      {"blmpop", -5, kCmdWrite | kCmdBlocking, 0, 0, 0, "list", 75, nullptr, BlmpopPrepare, MultiPopApply, 2, 1},
      {"blmove", 6, kW | kCmdBlocking, 1, 2, 1, "list", 76, nullptr, BlmovePrepare, LmoveApply, 0, -1},
      {"brpoplpush", 4, kW | kCmdBlocking, 1, 2, 1, "list", 77, nullptr, BrpoplpushPrepare, LmoveApply, 0, -1},
  });
}

}  // namespace shoal::kv
