// Hash commands: HSET HGET and the rest of Redis's H* family. A hash is a
// value of type hash holding its field count, and one element key per field
// (storage::ElementKey, named by HashedName), so a one-field change reads
// and writes one field. Fields come back in the order of their names' hashes
// (Redis gives a small hash's fields in insertion order; neither promises
// an order).
#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"
#include "storage/keys.h"

namespace shoal::kv {
namespace {

constexpr std::string_view kErrHashNotInteger = "ERR hash value is not an integer";
constexpr std::string_view kErrHashNotFloat = "ERR hash value is not a float";

// ---- reads

void HgetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead h(ctx, ValueType::kHash);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  v ? reply->Bulk(*v) : reply->NullBulk();
}

void HmgetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead h(ctx, ValueType::kHash);
  if (!h.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (size_t i = 2; i < args.size(); ++i) {
    std::optional<std::string> v;
    if (!h.Get(args[i], &v, reply)) return;
    v ? items.Bulk(*v) : items.NullBulk();
  }
  reply->ArrayHeader(args.size() - 2);
  reply->Raw(out);
}

void HexistsRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead h(ctx, ValueType::kHash);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  reply->Integer(v ? 1 : 0);
}

void HstrlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead h(ctx, ValueType::kHash);
  std::optional<std::string> v;
  if (!h.Open(args[1], reply) || !h.Get(args[2], &v, reply)) return;
  reply->Integer(v ? static_cast<int64_t>(v->size()) : 0);
}

void HlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead h(ctx, ValueType::kHash);
  if (!h.Open(args[1], reply)) return;
  reply->Integer(static_cast<int64_t>(h.count()));
}

// HKEYS, HVALS, HGETALL.
void HashAll(ReadContext& ctx, Args args, resp::Writer* reply, bool fields, bool values) {
  CollectionRead h(ctx, ValueType::kHash);
  if (!h.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  uint64_t n = 0;
  bool ok = h.ForEach(
      {},
      [&](std::string_view field, std::string_view value) {
        if (fields) items.Bulk(field);
        if (values) items.Bulk(value);
        ++n;
        return true;
      },
      reply);
  if (!ok) return;
  fields && values ? reply->MapHeader(n) : reply->ArrayHeader(n);
  reply->Raw(out);
}
void HkeysRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, true, false); }
void HvalsRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, false, true); }
void HgetallRead(ReadContext& c, Args a, resp::Writer* r) { HashAll(c, a, r, true, true); }

void HrandfieldRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  bool with_count = false, with_values = false;
  std::vector<std::pair<std::string, std::string>> picks;
  if (!ChooseRandom(ctx, args, ValueType::kHash, "withvalues", &with_count, &with_values, &picks, reply)) return;
  if (!with_count) return reply->Bulk(picks[0].first);
  reply->ArrayHeader(with_values && reply->protocol() < 3 ? 2 * picks.size() : picks.size());
  for (const auto& [f, v] : picks) {
    if (with_values && reply->protocol() >= 3) reply->ArrayHeader(2);
    reply->Bulk(f);
    if (with_values) reply->Bulk(v);
  }
}

void HscanRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  ScanCollection(ctx, args, ValueType::kHash, true, reply);
}

// ---- writes

bool HsetPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() % 2 == 1) {
    reply->Error(ArityError(ToLower(args[0])));
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

// args: key field value [field value ...]
Status HsetImpl(ApplyTxn& txn, const Entry& e, resp::Writer* reply, bool hmset) {
  const std::string& key = e.args[0];
  Status s;
  auto h = GetCollectionForWrite(txn, e.db, key, ValueType::kHash, reply, &s);
  if (!h) return s;
  int64_t added = 0;
  for (size_t i = 1; i + 1 < e.args.size(); i += 2) {
    std::string name = HashedName(e.args[i]);
    auto old = txn.GetElement(e.db, key, name);
    if (!old.ok()) return old.status();
    added += !old->has_value();
    txn.PutElement(e.db, key, name, e.args[i + 1]);
  }
  h->count += static_cast<uint64_t>(added);
  s = PutCollection(txn, e.db, key, ValueType::kHash, *h);
  if (!s.ok()) return s;
  hmset ? reply->Simple("OK") : reply->Integer(added);
  return Status::Ok();
}
Status HsetApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return HsetImpl(t, e, r, false); }
Status HmsetApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) { return HsetImpl(t, e, r, true); }

// args: key field value
Status HsetnxApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status s;
  auto h = GetCollectionForWrite(txn, e.db, key, ValueType::kHash, reply, &s);
  if (!h) return s;
  const std::string name = HashedName(e.args[1]);
  auto old = txn.GetElement(e.db, key, name);
  if (!old.ok()) return old.status();
  if (old->has_value()) {
    reply->Integer(0);
    return Status::Ok();
  }
  txn.PutElement(e.db, key, name, e.args[2]);
  h->count += 1;
  s = PutCollection(txn, e.db, key, ValueType::kHash, *h);
  if (s.ok()) reply->Integer(1);
  return s;
}

// args: key field [field ...]
Status HdelApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  return RemoveElementsApply(txn, e, ValueType::kHash, reply);
}

bool HincrbyPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (!ParseInt64(args[3])) {
    reply->Error(kErrNotInteger);
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

// HINCRBY, HINCRBYFLOAT (args: key field increment): the field's new value
// from its old one (nullopt: no such field) by `next`, which replies an
// error and returns nullopt to change nothing. Returns the new value, or
// nullopt when the command is done.
template <typename Next>
std::optional<std::string> UpdateField(ApplyTxn& txn, const Entry& e, resp::Writer* reply, Status* status,
                                       Next&& next) {
  const std::string& key = e.args[0];
  auto h = GetCollectionForWrite(txn, e.db, key, ValueType::kHash, reply, status);
  if (!h) return std::nullopt;
  const std::string name = HashedName(e.args[1]);
  auto old = txn.GetElement(e.db, key, name);
  if (!old.ok()) {
    *status = old.status();
    return std::nullopt;
  }
  std::optional<std::string> value = next(*old);
  if (!value) return std::nullopt;
  txn.PutElement(e.db, key, name, *value);
  if (!old->has_value()) {
    h->count += 1;
    *status = PutCollection(txn, e.db, key, ValueType::kHash, *h);
    if (!status->ok()) return std::nullopt;
  }
  return value;
}

Status HincrbyApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const int64_t by = *ParseInt64(e.args[2]);
  int64_t result = 0;
  Status s;
  auto done = UpdateField(txn, e, reply, &s, [&](const std::optional<std::string>& old) -> std::optional<std::string> {
    int64_t value = 0;
    if (old) {
      auto parsed = ParseInt64(*old);
      if (!parsed) {
        reply->Error(kErrHashNotInteger);
        return std::nullopt;
      }
      value = *parsed;
    }
    if ((by < 0 && value < 0 && by < (LLONG_MIN - value)) || (by > 0 && value > 0 && by > (LLONG_MAX - value))) {
      reply->Error("ERR increment or decrement would overflow");
      return std::nullopt;
    }
    result = value + by;
    return Int64ToString(result);
  });
  if (done) reply->Integer(result);
  return s;
}

bool HincrbyfloatPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  auto by = ParseLongDouble(args[3]);
  if (!by) {
    reply->Error(kErrNotFloat);
    return false;
  }
  if (std::isnan(*by) || std::isinf(*by)) {
    reply->Error("ERR value is NaN or Infinity");
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status HincrbyfloatApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const long double by = *ParseLongDouble(e.args[2]);
  Status s;
  auto done = UpdateField(txn, e, reply, &s, [&](const std::optional<std::string>& old) -> std::optional<std::string> {
    long double value = 0;
    if (old) {
      auto parsed = ParseLongDouble(*old);
      if (!parsed) {
        reply->Error(kErrHashNotFloat);
        return std::nullopt;
      }
      value = *parsed;
    }
    value += by;
    if (std::isnan(value) || std::isinf(value)) {
      reply->Error("ERR increment would produce NaN or Infinity");
      return std::nullopt;
    }
    return FormatLongDoubleHuman(value);
  });
  if (done) reply->Bulk(*done);
  return s;
}

}  // namespace

void AppendHashCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"hget", 3, kR, 1, 1, 1, "hash", 0, HgetRead},
      {"hmget", -3, kR, 1, 1, 1, "hash", 0, HmgetRead},
      {"hexists", 3, kR, 1, 1, 1, "hash", 0, HexistsRead},
      {"hstrlen", 3, kR, 1, 1, 1, "hash", 0, HstrlenRead},
      {"hlen", 2, kR, 1, 1, 1, "hash", 0, HlenRead},
      {"hkeys", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HkeysRead},
      {"hvals", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HvalsRead},
      {"hgetall", 2, kCmdReadonly, 1, 1, 1, "hash", 0, HgetallRead},
      {"hrandfield", -2, kCmdReadonly, 1, 1, 1, "hash", 0, HrandfieldRead},
      {"hscan", -3, kCmdReadonly, 1, 1, 1, "hash", 0, HscanRead},
      {"hset", -4, kWF, 1, 1, 1, "hash", 40, nullptr, HsetPrepare, HsetApply},
      {"hmset", -4, kWF, 1, 1, 1, "hash", 41, nullptr, HsetPrepare, HmsetApply},
      {"hsetnx", 4, kWF, 1, 1, 1, "hash", 42, nullptr, nullptr, HsetnxApply},
      {"hdel", -3, kCmdWrite | kCmdFast, 1, 1, 1, "hash", 43, nullptr, nullptr, HdelApply},
      {"hincrby", 4, kWF, 1, 1, 1, "hash", 44, nullptr, HincrbyPrepare, HincrbyApply},
      {"hincrbyfloat", 4, kWF, 1, 1, 1, "hash", 45, nullptr, HincrbyfloatPrepare, HincrbyfloatApply},
  });
}

}  // namespace shoal::kv
