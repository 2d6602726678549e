// Keyspace commands: DEL, EXISTS, TYPE, RENAME, KEYS, SCAN, RANDOMKEY, the
// EXPIRE and TTL families, DBSIZE, FLUSHDB, FLUSHALL, and active expiry's op.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::kv {
namespace {

// ---- reads

void ExistsRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  int64_t n = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    std::string raw;
    Value v;
    bool found = false;
    if (!ReadLive(ctx, args[i], &raw, &v, &found, reply)) return;
    n += found;
  }
  reply->Integer(n);
}

// The encoding Redis 7.0 would show for this value with its default limits
// (a collection that once grew past them keeps its big encoding in Redis;
// here only what it holds now counts).
std::string_view EncodingOf(ReadContext& ctx, std::string_view key, const Value& v, resp::Writer* reply, bool* ok) {
  *ok = true;
  switch (v.type) {
    case ValueType::kString: {
      if (v.payload.size() <= 20 && ParseInt64(v.payload)) return "int";
      return v.payload.size() <= 44 ? "embstr" : "raw";
    }
    case ValueType::kList:
      return "quicklist";
    default:
      break;
  }
  const uint64_t max_count = v.type == ValueType::kSet ? 512 : 128;
  CollectionRead c(ctx, v.type);
  if (!c.Open(key, reply)) return *ok = false, "";
  bool small = c.count() <= max_count;
  if (small) {
    *ok = c.ForEach(
        {},
        [&](std::string_view element, std::string_view value) {
          if (v.type == ValueType::kSet) {
            small = ParseInt64(element).has_value();
          } else {
            small = element.size() <= 64 && (v.type != ValueType::kHash || value.size() <= 64);
          }
          return small;
        },
        reply);
    if (!*ok) return "";
  }
  if (v.type == ValueType::kSet) return small ? "intset" : "hashtable";
  if (v.type == ValueType::kHash) return small ? "listpack" : "hashtable";
  return small ? "listpack" : "skiplist";
}

// OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ key, OBJECT HELP. shoal keeps no
// access times or frequencies: IDLETIME is 0, FREQ answers as Redis does
// without an LFU policy.
void ObjectRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  const std::string sub = ToLower(args[1]);
  const size_t arity = sub == "help" ? 2 : (sub == "encoding" || sub == "refcount" || sub == "idletime" || sub == "freq") ? 3 : 0;
  if (arity == 0) {
    return reply->Error("ERR unknown subcommand '" + std::string(args[1].substr(0, 128)) + "'. Try OBJECT HELP.");
  }
  if (args.size() != arity) return reply->Error(ArityError("object|" + sub));
  if (sub == "help") {
    reply->ArrayHeader(5);
    reply->Simple("OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
    reply->Simple("ENCODING <key>");
    reply->Simple("FREQ <key>");
    reply->Simple("IDLETIME <key>");
    reply->Simple("REFCOUNT <key>");
    return;
  }
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[2], &raw, &v, &found, reply)) return;
  if (!found) return reply->NullBulk();
  if (sub == "refcount") {
    // Redis shares the integers 0..9999 (their count reads as INT_MAX).
    auto n = v.type == ValueType::kString && v.payload.size() <= 20 ? ParseInt64(v.payload) : std::nullopt;
    return reply->Integer(n && *n >= 0 && *n < 10000 ? INT32_MAX : 1);
  }
  if (sub == "idletime") return reply->Integer(0);
  if (sub == "freq") {
    return reply->Error(
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when "
        "switching between policies at runtime LRU and LFU data will take some time to adjust.");
  }
  bool ok = true;
  std::string_view encoding = EncodingOf(ctx, args[2], v, reply, &ok);
  if (ok) reply->Bulk(encoding);
}

void TypeRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  reply->Simple(found ? TypeName(v.type) : "none");
}

// TTL, PTTL, EXPIRETIME, PEXPIRETIME.
void TtlImpl(ReadContext& ctx, Args args, resp::Writer* reply, bool ms, bool absolute) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->Integer(-2);
  if (v.expire_at_ms == 0) return reply->Integer(-1);
  int64_t t = absolute ? v.expire_at_ms : v.expire_at_ms - ctx.now_ms;
  if (t < 0) t = 0;
  reply->Integer(ms ? t : (t + 500) / 1000);
}
void TtlRead(ReadContext& c, Args a, resp::Writer* r) { TtlImpl(c, a, r, false, false); }
void PttlRead(ReadContext& c, Args a, resp::Writer* r) { TtlImpl(c, a, r, true, false); }
void ExpiretimeRead(ReadContext& c, Args a, resp::Writer* r) { TtlImpl(c, a, r, false, true); }
void PexpiretimeRead(ReadContext& c, Args a, resp::Writer* r) { TtlImpl(c, a, r, true, true); }

void DbsizeRead(ReadContext& ctx, Args, resp::Writer* reply) {
  int64_t n = 0;
  for (const Shard* s : ctx.shards) n += s->KeyCount(ctx.db);
  reply->Integer(n);
}

// Visits the keys of ctx.db in slot order starting at (slot, skip), calling
// fn(key, value) for each stored key; fn returns false to stop. Returns the
// position after the last visited key as (slot, offset in slot).
template <typename Fn>
bool VisitKeys(ReadContext& ctx, const storage::Snapshot* snap, uint32_t slot, uint64_t skip,
               Fn&& fn, resp::Writer* reply) {
  auto it = ctx.engine->NewIterator(storage::Cf::kData, snap);
  for (; slot < storage::kSlotCount; ++slot, skip = 0) {
    std::string prefix = storage::DataSlotDbPrefix(static_cast<uint16_t>(slot), ctx.db);
    uint64_t index = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next(), ++index) {
      if (index < skip) continue;
      if (!fn(slot, index, it->key().substr(prefix.size()), it->value())) return true;
    }
    if (!it->status().ok()) {
      reply->Error("ERR storage error: " + it->status().ToString());
      return false;
    }
    if (!fn(slot, UINT64_MAX, std::string_view(), std::string_view())) return true;
  }
  return true;
}

void KeysRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string_view pattern = args[1];
  bool all = pattern == "*";
  auto snap = ctx.engine->NewSnapshot();
  std::string out;
  resp::Writer items(&out, reply->protocol());
  size_t n = 0;
  bool ok = VisitKeys(
      ctx, snap.get(), 0, 0,
      [&](uint32_t, uint64_t index, std::string_view key, std::string_view raw) {
        if (index == UINT64_MAX) return true;
        Value v;
        if (!DecodeValue(raw, &v) || v.ExpiredAt(ctx.now_ms)) return true;
        if (all || GlobMatch(pattern, key)) {
          items.Bulk(key);
          ++n;
        }
        return true;
      },
      reply);
  if (!ok) return;
  reply->ArrayHeader(n);
  reply->Raw(out);
}

// A SCAN cursor is (offset in slot << 14) | slot; 0 starts and ends a scan.
// A scan normally stops at a slot boundary, so keys that stay are returned
// exactly once; only a slot with very many keys is split by an offset.
void ScanRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  ScanArgs scan;
  if (!ParseScanArgs(args, 1, true, &scan, reply)) return;
  const uint64_t cursor = scan.cursor;
  const int64_t count = scan.count;
  const std::string_view pattern = scan.pattern, type = scan.type;
  const bool use_pattern = scan.use_pattern, use_type = scan.use_type;
  uint32_t slot = static_cast<uint32_t>(cursor & (storage::kSlotCount - 1));
  uint64_t skip = cursor >> 14;
  const uint64_t split_at = static_cast<uint64_t>(std::max<int64_t>(count, 1000));
  int64_t visited = 0;
  uint64_t next = 0;
  std::vector<std::string> keys;
  bool ok = VisitKeys(
      ctx, nullptr, slot, skip,
      [&](uint32_t s, uint64_t index, std::string_view key, std::string_view raw) {
        if (index == UINT64_MAX) {  // end of slot s
          next = s + 1 < storage::kSlotCount ? s + 1 : 0;
          return visited < count;
        }
        if (index - skip >= split_at && visited >= count) {
          next = (index << 14) | s;
          return false;
        }
        ++visited;
        Value v;
        if (!DecodeValue(raw, &v) || v.ExpiredAt(ctx.now_ms)) return true;
        if (use_type && !EqualsIgnoreCase(TypeName(v.type), type)) return true;
        if (use_pattern && !GlobMatch(pattern, key)) return true;
        keys.emplace_back(key);
        return true;
      },
      reply);
  if (!ok) return;
  reply->ArrayHeader(2);
  reply->Bulk(std::to_string(next));
  reply->ArrayHeader(keys.size());
  for (const auto& k : keys) reply->Bulk(k);
}

void RandomkeyRead(ReadContext& ctx, Args, resp::Writer* reply) {
  int64_t total = 0;
  for (const Shard* s : ctx.shards) total += s->KeyCount(ctx.db);
  if (total <= 0) return reply->NullBulk();
  // Start at a random slot and take the first live key from there, wrapping once.
  uint32_t start = static_cast<uint32_t>(ctx.random % storage::kSlotCount);
  std::string found;
  bool have = false;
  for (int pass = 0; pass < 2 && !have; ++pass) {
    uint32_t from = pass == 0 ? start : 0;
    bool ok = VisitKeys(
        ctx, nullptr, from, 0,
        [&](uint32_t s, uint64_t index, std::string_view key, std::string_view raw) {
          if (pass == 1 && s > start) return false;
          if (index == UINT64_MAX) return true;
          Value v;
          if (!DecodeValue(raw, &v) || v.ExpiredAt(ctx.now_ms)) return true;
          found.assign(key);
          have = true;
          return false;
        },
        reply);
    if (!ok) return;
  }
  have ? reply->Bulk(found) : reply->NullBulk();
}

// ---- writes

Status DelApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  int64_t n = 0;
  for (const auto& key : e.args) {
    bool existed = false;
    Status s = txn.Delete(e.db, key, &existed);
    if (!s.ok()) return s;
    n += existed;
  }
  reply->Integer(n);
  return Status::Ok();
}

// Writes `raw` (src's live value in src_db) at dst in dst_db, with its
// elements if it is a collection (O(elements): they are keys named after
// it) and its TTL. Whatever dst held goes first, with its own elements.
Status CopyValue(ApplyTxn& txn, uint16_t src_db, const std::string& src, uint16_t dst_db, const std::string& dst,
                 std::string raw) {
  bool existed = false;
  Status s = txn.Delete(dst_db, dst, &existed);
  if (!s.ok()) return s;
  if (IsCollection(DecodeOrDie(raw).type)) {
    std::vector<std::pair<std::string, std::string>> elements;
    s = txn.ForEachElement(src_db, src, [&](std::string_view element, std::string_view v) {
      elements.emplace_back(element, v);
      return true;
    });
    if (!s.ok()) return s;
    for (const auto& [element, v] : elements) txn.PutElement(dst_db, dst, element, v);
  }
  return txn.Put(dst_db, dst, std::move(raw));
}

// args: src dst nx(0|1)
Status RenameImpl(ApplyTxn& txn, const Entry& e, resp::Writer* reply, bool nx) {
  const std::string &src = e.args[0], &dst = e.args[1];
  auto value = txn.GetLive(e.db, src);
  if (!value.ok()) return value.status();
  if (!*value) {
    reply->Error("ERR no such key");
    return Status::Ok();
  }
  if (src == dst) {
    nx ? reply->Integer(0) : reply->Simple("OK");
    return Status::Ok();
  }
  if (nx) {
    auto target = txn.GetLive(e.db, dst);
    if (!target.ok()) return target.status();
    if (*target) {
      reply->Integer(0);
      return Status::Ok();
    }
  }
  Status s = CopyValue(txn, e.db, src, e.db, dst, std::move(**value));
  bool existed = false;
  if (s.ok()) s = txn.Delete(e.db, src, &existed);
  if (!s.ok()) return s;
  nx ? reply->Integer(1) : reply->Simple("OK");
  return Status::Ok();
}

// A database number of COPY's DB and MOVE; false: the error is replied.
bool ParseDb(std::string_view arg, const Limits* limits, int64_t* db, resp::Writer* reply) {
  auto v = ParseInt64(arg);
  if (!v || *v < INT32_MIN || *v > INT32_MAX) return reply->Error(kErrNotInteger), false;
  if (*v < 0 || *v >= limits->databases) return reply->Error("ERR DB index is out of range"), false;
  *db = *v;
  return true;
}

constexpr std::string_view kErrSameObject = "ERR source and destination objects are the same";

// COPY source destination [DB db] [REPLACE]. Entry args: source
// destination db replace(0|1).
bool CopyPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  int64_t db = ctx.db;
  bool replace = false;
  for (size_t j = 3; j < args.size(); ++j) {
    if (EqualsIgnoreCase(args[j], "replace")) {
      replace = true;
    } else if (EqualsIgnoreCase(args[j], "db") && j + 1 < args.size()) {
      if (!ParseDb(args[++j], ctx.limits, &db, reply)) return false;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  if (db == ctx.db && args[1] == args[2]) return reply->Error(kErrSameObject), false;
  SetArgs(entry, std::string(args[1]), std::string(args[2]), std::to_string(db), replace ? "1" : "0");
  return true;
}

Status CopyApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string &src = e.args[0], &dst = e.args[1];
  const auto dst_db = static_cast<uint16_t>(*ParseInt64(e.args[2]));
  auto value = txn.GetLive(e.db, src);
  if (!value.ok()) return value.status();
  if (!*value) {
    reply->Integer(0);
    return Status::Ok();
  }
  if (e.args[3] != "1") {
    auto target = txn.GetLive(dst_db, dst);
    if (!target.ok()) return target.status();
    if (*target) {
      reply->Integer(0);
      return Status::Ok();
    }
  }
  Status s = CopyValue(txn, e.db, src, dst_db, dst, std::move(**value));
  if (s.ok()) reply->Integer(1);
  return s;
}

// MOVE key db: to the same key of another database (the same slot, so the
// same shard), unless it exists there. Entry args: key db.
bool MovePrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  int64_t db = 0;
  if (!ParseDb(args[2], ctx.limits, &db, reply)) return false;
  if (db == ctx.db) return reply->Error(kErrSameObject), false;
  SetArgs(entry, std::string(args[1]), std::to_string(db));
  return true;
}

Status MoveApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const auto dst_db = static_cast<uint16_t>(*ParseInt64(e.args[1]));
  auto value = txn.GetLive(e.db, key);
  if (!value.ok()) return value.status();
  if (!*value) {
    reply->Integer(0);
    return Status::Ok();
  }
  auto target = txn.GetLive(dst_db, key);
  if (!target.ok()) return target.status();
  if (*target) {
    reply->Integer(0);
    return Status::Ok();
  }
  Status s = CopyValue(txn, e.db, key, dst_db, key, std::move(**value));
  bool existed = false;
  if (s.ok()) s = txn.Delete(e.db, key, &existed);
  if (s.ok()) reply->Integer(1);
  return s;
}

Status RenameApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return RenameImpl(t, e, r, false);
}
Status RenamenxApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return RenameImpl(t, e, r, true);
}

enum ExpireFlag : unsigned { kExpNx = 1, kExpXx = 2, kExpGt = 4, kExpLt = 8 };

// EXPIRE family: validated here, applied as [key, absolute ms, flags].
bool ExpirePrepareImpl(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply,
                       bool seconds, bool relative) {
  unsigned flags = 0;
  for (size_t j = 3; j < args.size(); ++j) {
    if (EqualsIgnoreCase(args[j], "nx")) flags |= kExpNx;
    else if (EqualsIgnoreCase(args[j], "xx")) flags |= kExpXx;
    else if (EqualsIgnoreCase(args[j], "gt")) flags |= kExpGt;
    else if (EqualsIgnoreCase(args[j], "lt")) flags |= kExpLt;
    else {
      reply->Error("ERR Unsupported option " + std::string(args[j]));
      return false;
    }
  }
  if ((flags & kExpNx) && (flags & (kExpXx | kExpGt | kExpLt))) {
    reply->Error("ERR NX and XX, GT or LT options at the same time are not compatible");
    return false;
  }
  if ((flags & kExpGt) && (flags & kExpLt)) {
    reply->Error("ERR GT and LT options at the same time are not compatible");
    return false;
  }
  auto when = ParseInt64(args[2]);
  if (!when) {
    reply->Error(kErrNotInteger);
    return false;
  }
  int64_t ms = *when;
  std::string name = ToLower(args[0]);
  if (seconds) {
    if (ms > LLONG_MAX / 1000 || ms < LLONG_MIN / 1000) {
      reply->Error(InvalidExpireError(name));
      return false;
    }
    ms *= 1000;
  }
  if (relative) {
    if (ms > LLONG_MAX - ctx.now_ms) {
      reply->Error(InvalidExpireError(name));
      return false;
    }
    ms += ctx.now_ms;
  }
  SetArgs(entry, std::string(args[1]), Int64ToString(ms), std::to_string(flags));
  return true;
}
bool ExpirePrepare(const PrepareContext& c, Args a, Entry* e, resp::Writer* r) {
  return ExpirePrepareImpl(c, a, e, r, true, true);
}
bool PexpirePrepare(const PrepareContext& c, Args a, Entry* e, resp::Writer* r) {
  return ExpirePrepareImpl(c, a, e, r, false, true);
}
bool ExpireatPrepare(const PrepareContext& c, Args a, Entry* e, resp::Writer* r) {
  return ExpirePrepareImpl(c, a, e, r, true, false);
}
bool PexpireatPrepare(const PrepareContext& c, Args a, Entry* e, resp::Writer* r) {
  return ExpirePrepareImpl(c, a, e, r, false, false);
}

Status ExpireApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  int64_t when = *ParseInt64(e.args[1]);
  unsigned flags = static_cast<unsigned>(std::stoul(e.args[2]));
  auto old = txn.GetLive(e.db, key);
  if (!old.ok()) return old.status();
  if (!*old) {
    reply->Integer(0);
    return Status::Ok();
  }
  Value v = DecodeOrDie(**old);
  int64_t current = v.expire_at_ms == 0 ? -1 : v.expire_at_ms;
  if (((flags & kExpNx) && current != -1) || ((flags & kExpXx) && current == -1) ||
      ((flags & kExpGt) && (when <= current || current == -1)) ||
      ((flags & kExpLt) && current != -1 && when >= current)) {
    reply->Integer(0);
    return Status::Ok();
  }
  Status s;
  if (when <= txn.now_ms()) {
    bool existed = false;
    s = txn.Delete(e.db, key, &existed);
  } else {
    s = txn.Put(e.db, key, EncodeValue(v.type, when, v.payload));
  }
  if (s.ok()) reply->Integer(1);
  return s;
}

Status PersistApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  auto old = txn.GetLive(e.db, e.args[0]);
  if (!old.ok()) return old.status();
  if (!*old || DecodeOrDie(**old).expire_at_ms == 0) {
    reply->Integer(0);
    return Status::Ok();
  }
  Value v = DecodeOrDie(**old);
  Status s = txn.Put(e.db, e.args[0], EncodeValue(v.type, 0, v.payload));
  if (s.ok()) reply->Integer(1);
  return s;
}

bool FlushPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() > 2 || (args.size() == 2 && !EqualsIgnoreCase(args[1], "sync") &&
                          !EqualsIgnoreCase(args[1], "async"))) {
    reply->Error(kErrSyntax);
    return false;
  }
  entry->args.clear();
  return true;
}

Status FlushdbApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  Status s = txn.Flush(e.db);
  if (!s.ok()) return s;
  reply->Simple("OK");
  return Status::Ok();
}

Status FlushallApply(ApplyTxn& txn, const Entry&, const Limits&, resp::Writer* reply) {
  Status s = txn.Flush(std::nullopt);
  if (!s.ok()) return s;
  reply->Simple("OK");
  return Status::Ok();
}

// Internal: args key expire_at_ms. Deletes the key only if it still carries
// that expiry and it has passed; either way the index entry goes.
Status ExpireKeyApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer*) {
  int64_t when = *ParseInt64(e.args[1]);
  auto old = txn.GetLive(e.db, e.args[0]);  // deletes it if expired
  if (!old.ok()) return old.status();
  if (!*old || DecodeOrDie(**old).expire_at_ms != when) txn.DropExpiryIndex(e.db, e.args[0], when);
  return Status::Ok();
}

}  // namespace

ApplyFn ExpireKeyApplyFn() { return ExpireKeyApply; }

void AppendKeyspaceCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite;
  constexpr uint32_t kWF = kCmdWrite | kCmdFast;
  out->insert(out->end(), {
      {"exists", -2, kR, 1, -1, 1, "keyspace", 0, ExistsRead},
      {"type", 2, kR, 1, 1, 1, "keyspace", 0, TypeRead},
      {"touch", -2, kR, 1, -1, 1, "keyspace", 0, ExistsRead},  // shoal keeps no access times: EXISTS
      {"object", -2, kCmdReadonly, 2, 2, 1, "keyspace", 0, ObjectRead},
      {"ttl", 2, kR, 1, 1, 1, "keyspace", 0, TtlRead},
      {"pttl", 2, kR, 1, 1, 1, "keyspace", 0, PttlRead},
      {"expiretime", 2, kR, 1, 1, 1, "keyspace", 0, ExpiretimeRead},
      {"pexpiretime", 2, kR, 1, 1, 1, "keyspace", 0, PexpiretimeRead},
      {"dbsize", 1, kR, 0, 0, 0, "server", 0, DbsizeRead},
      {"keys", 2, kCmdReadonly, 0, 0, 0, "keyspace", 0, KeysRead},
      {"scan", -2, kCmdReadonly, 0, 0, 0, "keyspace", 0, ScanRead},
      {"randomkey", 1, kCmdReadonly, 0, 0, 0, "keyspace", 0, RandomkeyRead},
      {"del", -2, kW, 1, -1, 1, "keyspace", 20, nullptr, nullptr, DelApply},
      {"unlink", -2, kWF, 1, -1, 1, "keyspace", 21, nullptr, nullptr, DelApply},
      {"rename", 3, kW, 1, 2, 1, "keyspace", 22, nullptr, nullptr, RenameApply},
      {"renamenx", 3, kWF, 1, 2, 1, "keyspace", 23, nullptr, nullptr, RenamenxApply},
      {"copy", -3, kCmdWrite | kCmdDenyOom, 1, 2, 1, "keyspace", 31, nullptr, CopyPrepare, CopyApply},
      {"move", 3, kWF, 1, 1, 1, "keyspace", 32, nullptr, MovePrepare, MoveApply},
      {"expire", -3, kWF, 1, 1, 1, "keyspace", 24, nullptr, ExpirePrepare, ExpireApply},
      {"pexpire", -3, kWF, 1, 1, 1, "keyspace", 25, nullptr, PexpirePrepare, ExpireApply},
      {"expireat", -3, kWF, 1, 1, 1, "keyspace", 26, nullptr, ExpireatPrepare, ExpireApply},
      {"pexpireat", -3, kWF, 1, 1, 1, "keyspace", 27, nullptr, PexpireatPrepare, ExpireApply},
      {"persist", 2, kWF, 1, 1, 1, "keyspace", 28, nullptr, nullptr, PersistApply},
      {"flushdb", -1, kW | kCmdNoBatch, 0, 0, 0, "server", 29, nullptr, FlushPrepare, FlushdbApply},
      {"flushall", -1, kW | kCmdNoBatch, 0, 0, 0, "server", 30, nullptr, FlushPrepare, FlushallApply},
  });
}

}  // namespace shoal::kv
