// Set commands: SADD SREM and the rest of Redis's S* family. A set is a value
// of type set holding its member count, and one element key per member
// (storage::ElementKey named by HashedName, empty value). SMEMBERS and the
// combining commands answer in byte order, SSCAN in name order.
// SPOP's random choice is made by the proposer (a seed in the entry), so
// every replica pops the same members.
#include <algorithm>
#include <climits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {

using Members = std::set<std::string, std::less<>>;

// ---- reads

void SismemberRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead s(ctx, ValueType::kSet);
  std::optional<std::string> v;
  if (!s.Open(args[1], reply) || !s.Get(args[2], &v, reply)) return;
  reply->Integer(v ? 1 : 0);
}

void SmismemberRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead s(ctx, ValueType::kSet);
  if (!s.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (size_t i = 2; i < args.size(); ++i) {
    std::optional<std::string> v;
    if (!s.Get(args[i], &v, reply)) return;
    items.Integer(v ? 1 : 0);
  }
  reply->ArrayHeader(args.size() - 2);
  reply->Raw(out);
}

void ScardRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead s(ctx, ValueType::kSet);
  if (!s.Open(args[1], reply)) return;
  reply->Integer(static_cast<int64_t>(s.count()));
}

// Every member of an open set into *out: false on a storage error (replied).
bool ReadMembers(CollectionRead& s, Members* out, resp::Writer* reply) {
  return s.ForEach(
      {},
      [&](std::string_view m, std::string_view) {
        out->emplace(m);
        return true;
      },
      reply);
}

void ReplySet(const Members& members, resp::Writer* reply) {
  reply->SetHeader(members.size());
  for (const auto& m : members) reply->Bulk(m);
}

void SmembersRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead s(ctx, ValueType::kSet);
  Members members;
  if (!s.Open(args[1], reply) || !ReadMembers(s, &members, reply)) return;
  ReplySet(members, reply);
}

enum class SetOp { kInter, kUnion, kDiff };

// SINTER, SUNION, SDIFF over sets that `open(key, &members)` reads (false:
// the command is answered). Every key is read and type-checked first, as
// Redis does: a WRONGTYPE anywhere wins over an empty result.
template <typename Open>
bool Combine(SetOp op, Args keys, Open&& open, Members* result) {
  std::vector<Members> sets(keys.size());
  std::vector<bool> present(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    bool found = false;
    if (!open(keys[i], &sets[i], &found)) return false;
    present[i] = found;
  }
  result->clear();
  if (op == SetOp::kUnion) {
    for (auto& s : sets) result->merge(s);
  } else if (op == SetOp::kDiff) {
    *result = std::move(sets[0]);
    for (size_t i = 1; i < sets.size() && !result->empty(); ++i) {
      for (const auto& m : sets[i]) result->erase(m);
    }
  } else if (std::all_of(present.begin(), present.end(), [](bool p) { return p; })) {
    // Smallest first: every member of the result is in it.
    size_t smallest = 0;
    for (size_t i = 1; i < sets.size(); ++i) {
      if (sets[i].size() < sets[smallest].size()) smallest = i;
    }
    for (const auto& m : sets[smallest]) {
      bool everywhere = true;
      for (size_t i = 0; i < sets.size() && everywhere; ++i) everywhere = sets[i].contains(m);
      if (everywhere) result->insert(m);
    }
  }
  return true;
}

// Combine over the sets at keys as one snapshot shows them.
bool CombineRead(ReadContext& ctx, SetOp op, Args keys, Members* result, resp::Writer* reply) {
  std::shared_ptr<storage::Snapshot> snap = ctx.engine->NewSnapshot();
  return Combine(op, keys,
                 [&](std::string_view key, Members* out, bool* found) {
                   CollectionRead s(ctx, ValueType::kSet, snap);
                   if (!s.Open(key, reply) || !ReadMembers(s, out, reply)) return false;
                   *found = s.found();
                   return true;
                 },
                 result);
}

void CombineRead(ReadContext& ctx, Args args, resp::Writer* reply, SetOp op) {
  Members result;
  if (CombineRead(ctx, op, args.subspan(1), &result, reply)) ReplySet(result, reply);
}
void SinterRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, r, SetOp::kInter); }
void SunionRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, r, SetOp::kUnion); }
void SdiffRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, r, SetOp::kDiff); }

// SINTERCARD numkeys key [key ...] [LIMIT limit]: the size of the
// intersection (counting stops at a limit above 0).
void SintercardRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto n = ParseInt64(args[1]);
  if (!n || *n < 1) return reply->Error("ERR numkeys should be greater than 0");
  if (static_cast<uint64_t>(*n) > args.size() - 2) return reply->Error("ERR Number of keys can't be greater than number of args");
  const size_t nkeys = static_cast<size_t>(*n);
  int64_t limit = 0;
  for (size_t j = 2 + nkeys; j < args.size(); ++j) {
    if (EqualsIgnoreCase(args[j], "limit") && j + 1 < args.size()) {
      auto l = ParseInt64(args[++j]);
      if (!l || *l < 0) return reply->Error("ERR LIMIT can't be negative");
      limit = *l;
    } else {
      return reply->Error(kErrSyntax);
    }
  }
  Members result;
  if (!CombineRead(ctx, SetOp::kInter, args.subspan(2, nkeys), &result, reply)) return;
  const auto size = static_cast<int64_t>(result.size());
  reply->Integer(limit > 0 ? std::min(limit, size) : size);
}

void SrandmemberRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  if (args.size() > 3) return reply->Error(kErrSyntax);  // as Redis: before the count
  bool with_count = false, with_values = false;
  std::vector<std::pair<std::string, std::string>> picks;
  if (!ChooseRandom(ctx, args, ValueType::kSet, {}, &with_count, &with_values, &picks, reply)) return;
  if (!with_count) return reply->Bulk(picks[0].first);
  reply->ArrayHeader(picks.size());
  for (const auto& [m, v] : picks) reply->Bulk(m);
}

void SscanRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  ScanCollection(ctx, args, ValueType::kSet, false, reply);
}

// ---- writes

Status SaddApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status st;
  auto s = GetCollectionForWrite(txn, e.db, key, ValueType::kSet, reply, &st);
  if (!s) return st;
  int64_t added = 0;
  for (size_t i = 1; i < e.args.size(); ++i) {
    std::string name = HashedName(e.args[i]);
    auto old = txn.GetElement(e.db, key, name);
    if (!old.ok()) return old.status();
    if (old->has_value()) continue;
    txn.PutElement(e.db, key, name, "");
    ++added;
  }
  s->count += static_cast<uint64_t>(added);
  if (added > 0) st = PutCollection(txn, e.db, key, ValueType::kSet, *s);
  if (st.ok()) reply->Integer(added);
  return st;
}

Status SremApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  return RemoveElementsApply(txn, e, ValueType::kSet, reply);
}

// Reads a set for a write into *members. false: answered (WRONGTYPE) or
// storage failed (*status).
bool ReadSetForWrite(ApplyTxn& txn, uint16_t db, std::string_view key, Members* members, bool* found,
                     resp::Writer* reply, Status* status) {
  auto s = GetCollectionForWrite(txn, db, key, ValueType::kSet, reply, status);
  if (!s) return false;
  *found = s->found;
  if (!s->found) return true;
  *status = txn.ForEachElement(db, key, [&](std::string_view name, std::string_view) {
    members->emplace(ElementOfName(name));
    return true;
  });
  return status->ok();
}

// Replaces whatever key holds by a set of `members` (deletes it if empty).
Status StoreSet(ApplyTxn& txn, uint16_t db, std::string_view key, const Members& members) {
  bool existed = false;
  Status s = txn.Delete(db, key, &existed);
  if (!s.ok()) return s;
  for (const auto& m : members) txn.PutElement(db, key, HashedName(m), "");
  CollectionAt at;
  at.count = members.size();
  return PutCollection(txn, db, key, ValueType::kSet, at);
}

// args: destination key [key ...]
Status CombineStoreApply(ApplyTxn& txn, const Entry& e, resp::Writer* reply, SetOp op) {
  std::vector<std::string_view> keys(e.args.begin() + 1, e.args.end());
  Status st;
  Members result;
  bool ok = Combine(op, keys,
                    [&](std::string_view key, Members* out, bool* found) {
                      return ReadSetForWrite(txn, e.db, key, out, found, reply, &st);
                    },
                    &result);
  if (!ok) return st;
  st = StoreSet(txn, e.db, e.args[0], result);
  if (st.ok()) reply->Integer(static_cast<int64_t>(result.size()));
  return st;
}
Status SinterstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, r, SetOp::kInter);
}
Status SunionstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, r, SetOp::kUnion);
}
Status SdiffstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, r, SetOp::kDiff);
}

// args: source destination member
Status SmoveApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string &src = e.args[0], &dst = e.args[1], &member = e.args[2];
  Status st;
  auto from = GetCollectionForWrite(txn, e.db, src, ValueType::kSet, reply, &st);
  if (!from) return st;
  if (!from->found) {
    reply->Integer(0);
    return Status::Ok();
  }
  auto to = GetCollectionForWrite(txn, e.db, dst, ValueType::kSet, reply, &st);
  if (!to) return st;
  const std::string name = HashedName(member);
  auto in = txn.GetElement(e.db, src, name);
  if (!in.ok()) return in.status();
  if (src == dst || !in->has_value()) {
    reply->Integer(in->has_value() ? 1 : 0);
    return Status::Ok();
  }
  txn.DeleteElement(e.db, src, name);
  from->count -= 1;
  st = PutCollection(txn, e.db, src, ValueType::kSet, *from);
  if (!st.ok()) return st;
  auto there = txn.GetElement(e.db, dst, name);
  if (!there.ok()) return there.status();
  if (!there->has_value()) {
    txn.PutElement(e.db, dst, name, "");
    to->count += 1;
    st = PutCollection(txn, e.db, dst, ValueType::kSet, *to);
    if (!st.ok()) return st;
  }
  reply->Integer(1);
  return Status::Ok();
}

// SPOP key [count]: the proposer adds a random seed. args: key count|"" seed
bool SpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() > 3) {
    reply->Error(kErrSyntax);
    return false;
  }
  std::string count;
  if (!ParseOptionalCount(args, &count, reply)) return false;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  SetArgs(entry, std::string(args[1]), count, std::to_string(rng()));
  return true;
}

Status SpopApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const bool with_count = !e.args[1].empty();
  const uint64_t want = with_count ? static_cast<uint64_t>(*ParseInt64(e.args[1])) : 1;
  const uint64_t seed = std::stoull(e.args[2]);  // the proposer's, in the entry
  Status st;
  auto s = GetCollectionForWrite(txn, e.db, key, ValueType::kSet, reply, &st);
  if (!s) return st;
  if (!s->found || want == 0) {
    with_count ? reply->SetHeader(0) : reply->NullBulk();
    return Status::Ok();
  }
  std::set<std::string> at;  // popped, in member order
  if (want >= s->count) {
    // All of it: one walk, then the key goes (its members with it).
    st = txn.ForEachElement(e.db, key, [&](std::string_view name, std::string_view) {
      at.emplace(ElementOfName(name));
      return true;
    });
    if (!st.ok()) return st;
  } else {
    std::vector<std::pair<std::string, std::string>> picks;
    ElementWalk walk = [&](std::string_view from, const std::function<bool(std::string_view, std::string_view)>& fn) {
      st = txn.ForEachElement(
          e.db, key, [&](std::string_view name, std::string_view v) { return fn(ElementOfName(name), v); }, from);
      return st.ok();
    };
    if (!ChooseElements(s->count, want, true, seed, walk, &picks)) return st;
    for (auto& [m, v] : picks) at.insert(std::move(m));
    for (const auto& m : at) txn.DeleteElement(e.db, key, HashedName(m));
  }
  s->count = s->count > at.size() ? s->count - at.size() : 0;
  st = PutCollection(txn, e.db, key, ValueType::kSet, *s);
  if (!st.ok()) return st;
  if (!with_count) {
    at.empty() ? reply->NullBulk() : reply->Bulk(*at.begin());
    return Status::Ok();
  }
  reply->SetHeader(at.size());
  for (const auto& m : at) reply->Bulk(m);
  return Status::Ok();
}

}  // namespace

void AppendSetCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite | kCmdDenyOom;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"sismember", 3, kR, 1, 1, 1, "set", 0, SismemberRead},
      {"smismember", -3, kR, 1, 1, 1, "set", 0, SmismemberRead},
      {"scard", 2, kR, 1, 1, 1, "set", 0, ScardRead},
      {"smembers", 2, kCmdReadonly, 1, 1, 1, "set", 0, SmembersRead},
      {"srandmember", -2, kCmdReadonly, 1, 1, 1, "set", 0, SrandmemberRead},
      {"sscan", -3, kCmdReadonly, 1, 1, 1, "set", 0, SscanRead},
      {"sinter", -2, kCmdReadonly, 1, -1, 1, "set", 0, SinterRead},
      {"sunion", -2, kCmdReadonly, 1, -1, 1, "set", 0, SunionRead},
      {"sdiff", -2, kCmdReadonly, 1, -1, 1, "set", 0, SdiffRead},
      {"sintercard", -3, kCmdReadonly, 0, 0, 0, "set", 0, SintercardRead, nullptr, nullptr, 1},
      {"sadd", -3, kWF, 1, 1, 1, "set", 50, nullptr, nullptr, SaddApply},
      {"srem", -3, kCmdWrite | kCmdFast, 1, 1, 1, "set", 51, nullptr, nullptr, SremApply},
      {"smove", 4, kWF, 1, 2, 1, "set", 52, nullptr, nullptr, SmoveApply},
      {"spop", -2, kCmdWrite | kCmdFast, 1, 1, 1, "set", 53, nullptr, SpopPrepare, SpopApply},
      {"sinterstore", -3, kW, 1, -1, 1, "set", 54, nullptr, nullptr, SinterstoreApply},
      {"sunionstore", -3, kW, 1, -1, 1, "set", 55, nullptr, nullptr, SunionstoreApply},
      {"sdiffstore", -3, kW, 1, -1, 1, "set", 56, nullptr, nullptr, SdiffstoreApply},
  });
}

}  // namespace shoal::kv
