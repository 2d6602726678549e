// String commands: GET SET and friends, INCR family, APPEND, ranges.
#include <climits>
#include <cmath>
#include <optional>
#include <vector>
#include <algorithm>

#include "common/strings.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"
#include "storage/keys.h"

namespace shoal::kv {
namespace {

// SET/GETEX option flags, as letters in the entry.
constexpr char kNx = 'N', kXx = 'X', kGet = 'G', kKeepTtl = 'K', kPersist = 'P';

enum class ExpireUnit { kNone, kEx, kPx, kExAt, kPxAt };

struct ExtendedArgs {
  std::string flags;
  ExpireUnit unit = ExpireUnit::kNone;
  std::string_view expire;
};

bool HasFlag(std::string_view flags, char f) { return flags.find(f) != std::string_view::npos; }

// Parses SET's (for_get == false) or GETEX's (for_get == true) options, as
// Redis's parseExtendedStringArgumentsOrReply does.
bool ParseExtended(Args args, size_t first, bool for_get, ExtendedArgs* out) {
  for (size_t j = first; j < args.size(); ++j) {
    std::string_view a = args[j];
    bool has_next = j + 1 < args.size();
    bool any_expire = out->unit != ExpireUnit::kNone;
    auto expire_unit = [&]() -> ExpireUnit {
      if (EqualsIgnoreCase(a, "ex")) return ExpireUnit::kEx;
      if (EqualsIgnoreCase(a, "px")) return ExpireUnit::kPx;
      if (EqualsIgnoreCase(a, "exat")) return ExpireUnit::kExAt;
      if (EqualsIgnoreCase(a, "pxat")) return ExpireUnit::kPxAt;
      return ExpireUnit::kNone;
    }();
    if (!for_get && EqualsIgnoreCase(a, "nx") && !HasFlag(out->flags, kXx)) {
      out->flags += kNx;
    } else if (!for_get && EqualsIgnoreCase(a, "xx") && !HasFlag(out->flags, kNx)) {
      out->flags += kXx;
    } else if (!for_get && EqualsIgnoreCase(a, "get")) {
      out->flags += kGet;
    } else if (!for_get && EqualsIgnoreCase(a, "keepttl") && !any_expire) {
      out->flags += kKeepTtl;
    } else if (for_get && EqualsIgnoreCase(a, "persist") && !any_expire) {
      out->flags += kPersist;
    } else if (expire_unit != ExpireUnit::kNone && (!any_expire || out->unit == expire_unit) &&
               !HasFlag(out->flags, kKeepTtl) &&
               !HasFlag(out->flags, kPersist) && has_next) {
      out->unit = expire_unit;
      out->expire = args[++j];
    } else {
      return false;
    }
  }
  return true;
}

// Turns an expire argument into an absolute time in ms, or an error message.
std::optional<std::string> ExpireToAbsolute(const PrepareContext& ctx, std::string_view command,
                                            ExpireUnit unit, std::string_view arg, int64_t* out) {
  auto v = ParseInt64(arg);
  if (!v) return std::string(kErrNotInteger);
  int64_t ms = *v;
  bool seconds = unit == ExpireUnit::kEx || unit == ExpireUnit::kExAt;
  if (ms <= 0 || (seconds && ms > LLONG_MAX / 1000)) return InvalidExpireError(command);
  if (seconds) ms *= 1000;
  if (unit == ExpireUnit::kEx || unit == ExpireUnit::kPx) {
    if (ms > LLONG_MAX - ctx.now_ms) return InvalidExpireError(command);
    ms += ctx.now_ms;
  }
  *out = ms;
  return std::nullopt;
}

void ReplyStringOrNull(const StringAt& at, resp::Writer* reply) {
  at.found ? reply->Bulk(at.payload) : reply->NullBulk();
}

// ---- GET, STRLEN, GETRANGE, MGET (reads)

// GET's reply to what a read of its key found (GetRead, GetBatch).
void ReplyGet(const Status& s, const std::string& raw, int64_t now_ms, resp::Writer* reply) {
  Value v;
  bool found = false;
  if (!LiveFromRead(s, raw, now_ms, &v, &found, reply)) return;
  if (!found) return reply->NullBulk();
  if (v.type != ValueType::kString) return reply->Error(kErrWrongType);
  reply->Bulk(v.payload);
}

void GetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Status s = ctx.engine->Get(storage::Cf::kData, storage::DataKey(ctx.db, args[1]), &raw, nullptr,
                             storage::ReadVia::kCache);
  ReplyGet(s, raw, ctx.now_ms, reply);
}

void StrlenRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->Integer(0);
  if (v.type != ValueType::kString) return reply->Error(kErrWrongType);
  reply->Integer(static_cast<int64_t>(v.payload.size()));
}

void GetrangeRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto start = ParseInt64(args[2]);
  auto end = ParseInt64(args[3]);
  if (!start || !end) return reply->Error(kErrNotInteger);
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->Bulk("");
  if (v.type != ValueType::kString) return reply->Error(kErrWrongType);
  int64_t s = *start, e = *end, len = static_cast<int64_t>(v.payload.size());
  if (s < 0 && e < 0 && s > e) return reply->Bulk("");
  if (s < 0) s = len + s;
  if (e < 0) e = len + e;
  if (s < 0) s = 0;
  if (e < 0) e = 0;
  if (e >= len) e = len - 1;
  if (s > e || len == 0) return reply->Bulk("");
  reply->Bulk(v.payload.substr(static_cast<size_t>(s), static_cast<size_t>(e - s + 1)));
}

void MgetRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  // One snapshot: MGET sees a single point in time, as Redis's does.
  // Read together (one MultiGet: the read view, index and filter blocks
  // taken once for all the keys).
  auto snap = ctx.engine->NewSnapshot();
  const size_t n = args.size() - 1;
  std::vector<std::string> keys;
  keys.reserve(n);
  for (size_t i = 1; i < args.size(); ++i) keys.push_back(storage::DataKey(ctx.db, args[i]));
  std::vector<std::string_view> views(keys.begin(), keys.end());
  std::vector<std::string> raws(n);
  std::vector<Status> statuses(n);
  ctx.engine->MultiGet(storage::Cf::kData, views, raws, statuses, snap.get());
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (size_t i = 0; i < n; ++i) {
    const Status& s = statuses[i];
    Value v;
    if (s.code() == Code::kNotFound) {
      items.NullBulk();
    } else if (!s.ok() || !DecodeValue(raws[i], &v)) {
      // As GET answers it (LiveFromRead): a value that does not decode is
      // an error, not a missing key.
      return reply->Error("ERR storage error: " + (s.ok() ? std::string("corrupt value") : s.ToString()));
    } else if (!v.ExpiredAt(ctx.now_ms) && v.type == ValueType::kString) {
      items.Bulk(v.payload);
    } else {
      items.NullBulk();
    }
  }
  reply->ArrayHeader(n);
  reply->Raw(out);
}

// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: the longest
// common subsequence of two strings (a missing key is ""), by the classic
// table of prefix LCS lengths. Walking it back from the end, a match steps
// diagonally and otherwise the longer side is kept (the second string's
// prefix on a tie), as Redis walks it, so the same subsequence and the same
// ranges (runs of diagonal steps, last first) come out.
void LcsRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto snap = ctx.engine->NewSnapshot();
  std::string raw[2];
  Value v[2];
  bool found[2] = {false, false};
  for (int k = 0; k < 2; ++k) {
    if (!ReadLive(ctx, args[1 + k], &raw[k], &v[k], &found[k], reply, snap.get())) return;
  }
  if ((found[0] && v[0].type != ValueType::kString) || (found[1] && v[1].type != ValueType::kString)) {
    return reply->Error("ERR The specified keys must contain string values");
  }
  const std::string_view a = found[0] ? v[0].payload : std::string_view();
  const std::string_view b = found[1] ? v[1].payload : std::string_view();
  bool want_len = false, want_idx = false, with_len = false;
  int64_t min_len = 0;
  for (size_t j = 3; j < args.size(); ++j) {
    if (EqualsIgnoreCase(args[j], "idx")) {
      want_idx = true;
    } else if (EqualsIgnoreCase(args[j], "len")) {
      want_len = true;
    } else if (EqualsIgnoreCase(args[j], "withmatchlen")) {
      with_len = true;
    } else if (EqualsIgnoreCase(args[j], "minmatchlen") && j + 1 < args.size()) {
      auto m = ParseInt64(args[++j]);
      if (!m) return reply->Error(kErrNotInteger);
      min_len = std::max<int64_t>(*m, 0);
    } else {
      return reply->Error(kErrSyntax);
    }
  }
  if (want_idx && want_len) return reply->Error("ERR If you want both the length and indexes, please just use IDX.");
  // The table is (|a|+1) x (|b|+1) counters: bounded, as Redis is by memory.
  constexpr uint64_t kCellsMax = 64ull << 20;
  const uint64_t rows = a.size() + 1, cols = b.size() + 1;
  if (rows > kCellsMax / cols) {
    return reply->Error("ERR Insufficient memory, failed allocating transient memory for LCS");
  }
  std::vector<uint32_t> table(rows * cols, 0);
  auto at = [&](size_t i, size_t j) -> uint32_t& { return table[i * cols + j]; };
  for (size_t i = 1; i < rows; ++i) {
    for (size_t j = 1; j < cols; ++j) {
      at(i, j) = a[i - 1] == b[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
    }
  }
  const uint32_t total = at(rows - 1, cols - 1);
  if (want_len) return reply->Integer(total);
  std::string common(total, '\0');
  struct Run {
    size_t a_first, a_last, b_first, b_last;
  };
  std::vector<Run> runs;
  std::optional<Run> open;  // the run being walked (backwards)
  size_t i = rows - 1, j = cols - 1, left = total;
  while (i > 0 && j > 0) {
    bool close = false;
    if (a[i - 1] == b[j - 1]) {
      common[--left] = a[i - 1];
      if (!open) {
        open = Run{i - 1, i - 1, j - 1, j - 1};
      } else {
        open->a_first = i - 1;
        open->b_first = j - 1;
      }
      close = i == 1 || j == 1;  // it reached the start of a string
      --i;
      --j;
    } else {
      if (at(i - 1, j) > at(i, j - 1)) {
        --i;
      } else {
        --j;
      }
      close = open.has_value();
    }
    if (close && open) {
      if (open->a_last - open->a_first + 1 >= static_cast<uint64_t>(min_len)) runs.push_back(*open);
      open.reset();
    }
  }
  if (!want_idx) return reply->Bulk(common);
  reply->MapHeader(2);
  reply->Bulk("matches");
  reply->ArrayHeader(runs.size());
  for (const Run& r : runs) {
    reply->ArrayHeader(with_len ? 3 : 2);
    reply->ArrayHeader(2);
    reply->Integer(static_cast<int64_t>(r.a_first));
    reply->Integer(static_cast<int64_t>(r.a_last));
    reply->ArrayHeader(2);
    reply->Integer(static_cast<int64_t>(r.b_first));
    reply->Integer(static_cast<int64_t>(r.b_last));
    if (with_len) reply->Integer(static_cast<int64_t>(r.a_last - r.a_first + 1));
  }
  reply->Bulk("len");
  reply->Integer(total);
}

// ---- SET family

bool SetPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  ExtendedArgs ext;
  if (!ParseExtended(args, 3, false, &ext)) {
    reply->Error(kErrSyntax);
    return false;
  }
  int64_t expire_at = 0;
  if (ext.unit != ExpireUnit::kNone) {
    if (auto err = ExpireToAbsolute(ctx, "set", ext.unit, ext.expire, &expire_at)) {
      reply->Error(*err);
      return false;
    }
  }
  SetArgs(entry, args[1], args[2], ext.flags, Int64ToString(expire_at));
  return true;
}

// args: key value flags expire_at_ms
Status SetApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  std::string_view flags = e.args[2];
  int64_t expire_at = *ParseInt64(e.args[3]);
  bool get = HasFlag(flags, kGet);
  if (flags.empty()) {  // a blind write: nothing to read first
    Status s = PutString(txn, e.db, key, e.args[1], expire_at);
    if (s.ok()) reply->Simple("OK");
    return s;
  }
  StringAt old;
  Status s;
  if (get) {
    // SET ... GET answers WRONGTYPE for a non-string; plain SET overwrites any type.
    auto at = GetStringForWrite(txn, e.db, key, reply, &s);
    if (!at) return s;
    old = std::move(*at);
  } else {
    auto raw = txn.GetLive(e.db, key);
    if (!raw.ok()) return raw.status();
    old.found = raw->has_value();
    if (old.found) old.expire_at_ms = DecodeOrDie(**raw).expire_at_ms;
  }
  if ((HasFlag(flags, kNx) && old.found) || (HasFlag(flags, kXx) && !old.found)) {
    get ? ReplyStringOrNull(old, reply) : reply->NullBulk();
    return Status::Ok();
  }
  if (expire_at == 0 && HasFlag(flags, kKeepTtl) && old.found) expire_at = old.expire_at_ms;
  s = PutString(txn, e.db, key, e.args[1], expire_at);
  if (!s.ok()) return s;
  get ? ReplyStringOrNull(old, reply) : reply->Simple("OK");
  return Status::Ok();
}

bool SetexPrepareImpl(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply,
                      std::string_view name, ExpireUnit unit) {
  int64_t expire_at = 0;
  if (auto err = ExpireToAbsolute(ctx, name, unit, args[2], &expire_at)) {
    reply->Error(*err);
    return false;
  }
  SetArgs(entry, std::string(args[1]), std::string(args[3]), "", Int64ToString(expire_at));
  return true;
}

bool SetexPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  return SetexPrepareImpl(ctx, args, entry, reply, "setex", ExpireUnit::kEx);
}

bool PsetexPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  return SetexPrepareImpl(ctx, args, entry, reply, "psetex", ExpireUnit::kPx);
}

Status SetnxApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  auto old = txn.GetLive(e.db, e.args[0]);
  if (!old.ok()) return old.status();
  if (*old) {
    reply->Integer(0);
    return Status::Ok();
  }
  Status s = PutString(txn, e.db, e.args[0], e.args[1], 0);
  if (s.ok()) reply->Integer(1);
  return s;
}

Status GetsetApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  s = PutString(txn, e.db, e.args[0], e.args[1], 0);
  if (s.ok()) ReplyStringOrNull(*old, reply);
  return s;
}

Status GetdelApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  if (old->found) {
    bool existed = false;
    s = txn.Delete(e.db, e.args[0], &existed);
    if (!s.ok()) return s;
  }
  ReplyStringOrNull(*old, reply);
  return Status::Ok();
}

// GETEX validates its expire only when the key exists, so an invalid one is
// carried to apply as an error message: args key mode(E|P|-|!) value.
bool GetexPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  ExtendedArgs ext;
  if (!ParseExtended(args, 2, true, &ext)) {
    reply->Error(kErrSyntax);
    return false;
  }
  std::string mode = "-", value;
  if (ext.unit != ExpireUnit::kNone) {
    int64_t at = 0;
    if (auto err = ExpireToAbsolute(ctx, "getex", ext.unit, ext.expire, &at)) {
      mode = "!";
      value = *err;
    } else {
      mode = "E";
      value = Int64ToString(at);
    }
  } else if (HasFlag(ext.flags, kPersist)) {
    mode = "P";
  }
  SetArgs(entry, std::string(args[1]), mode, value);
  return true;
}

Status GetexApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status s;
  auto old = GetStringForWrite(txn, e.db, key, reply, &s);
  if (!old) return s;
  if (!old->found) {
    reply->NullBulk();
    return Status::Ok();
  }
  char mode = e.args[1][0];
  if (mode == '!') {
    reply->Error(e.args[2]);
    return Status::Ok();
  }
  if (mode == 'E') {
    s = PutString(txn, e.db, key, old->payload, *ParseInt64(e.args[2]));
  } else if (mode == 'P' && old->expire_at_ms != 0) {
    s = PutString(txn, e.db, key, old->payload, 0);
  }
  if (s.ok()) reply->Bulk(old->payload);
  return s;
}

// ---- MSET, MSETNX

bool MsetPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() % 2 == 0) {
    reply->Error(ArityError(ToLower(args[0])));
    return false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status MsetApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
    Status s = PutString(txn, e.db, e.args[i], e.args[i + 1], 0);
    if (!s.ok()) return s;
  }
  reply->Simple("OK");
  return Status::Ok();
}

Status MsetnxApply(ApplyTxn& txn, const Entry& e, const Limits& limits, resp::Writer* reply) {
  for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
    auto old = txn.GetLive(e.db, e.args[i]);
    if (!old.ok()) return old.status();
    if (*old) {
      reply->Integer(0);
      return Status::Ok();
    }
  }
  std::string ignored;
  resp::Writer sink(&ignored);
  Status s = MsetApply(txn, e, limits, &sink);
  if (s.ok()) reply->Integer(1);
  return s;
}

// ---- APPEND, SETRANGE

bool CheckLength(int64_t size, int64_t append, int64_t limit) {
  int64_t total = 0;
  if (__builtin_add_overflow(size, append, &total)) return false;
  return total <= limit;
}

// The longest string a write may make: the proposing node's
// proto-max-bulk-len, carried in the entry (arg `at`) so that every replica
// applies the same limit whatever its own setting. Entries from before it
// was carried use the default.
int64_t CarriedLimit(const Entry& e, size_t at) {
  std::optional<int64_t> v = e.args.size() > at ? ParseInt64(e.args[at]) : std::nullopt;
  return v && *v > 0 ? *v : Limits{}.proto_max_bulk_len;
}

bool AppendPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer*) {
  SetArgs(entry, std::string(args[1]), std::string(args[2]), std::to_string(ctx.limits->proto_max_bulk_len));
  return true;
}

Status AppendApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  if (old->found && !CheckLength(static_cast<int64_t>(old->payload.size()),
                                 static_cast<int64_t>(e.args[1].size()), CarriedLimit(e, 2))) {
    reply->Error(kErrStringTooLong);
    return Status::Ok();
  }
  std::string& payload = old->payload;
  payload.append(e.args[1]);
  s = PutString(txn, e.db, e.args[0], payload, old->expire_at_ms);
  if (s.ok()) reply->Integer(static_cast<int64_t>(payload.size()));
  return s;
}

bool SetrangePrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  auto offset = ParseInt64(args[2]);
  if (!offset) {
    reply->Error(kErrNotInteger);
    return false;
  }
  if (*offset < 0) {
    reply->Error("ERR offset is out of range");
    return false;
  }
  // The length is checked where it is applied, after the key's type (as
  // Redis does: WRONGTYPE comes first), against the limit carried here.
  SetArgs(entry, std::string(args[1]), std::string(args[2]), std::string(args[3]),
          std::to_string(ctx.limits->proto_max_bulk_len));
  return true;
}

Status SetrangeApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  int64_t offset = *ParseInt64(e.args[1]);
  const std::string& value = e.args[2];
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  std::string& payload = old->payload;
  if (value.empty()) {  // nothing to write: the current length (0 when absent)
    reply->Integer(static_cast<int64_t>(payload.size()));
    return Status::Ok();
  }
  if (!CheckLength(offset, static_cast<int64_t>(value.size()), CarriedLimit(e, 3))) {
    reply->Error(kErrStringTooLong);
    return Status::Ok();
  }
  size_t end = static_cast<size_t>(offset) + value.size();
  if (payload.size() < end) payload.resize(end, '\0');
  payload.replace(static_cast<size_t>(offset), value.size(), value);
  s = PutString(txn, e.db, e.args[0], payload, old->expire_at_ms);
  if (s.ok()) reply->Integer(static_cast<int64_t>(payload.size()));
  return s;
}

// ---- INCR family

bool IncrPrepareBy(Args args, Entry* entry, resp::Writer* reply, bool negate) {
  auto by = ParseInt64(args[2]);
  if (!by) {
    reply->Error(kErrNotInteger);
    return false;
  }
  if (negate) {
    if (*by == LLONG_MIN) {
      reply->Error("ERR decrement would overflow");
      return false;
    }
    *by = -*by;
  }
  SetArgs(entry, std::string(args[1]), Int64ToString(*by));
  return true;
}

bool IncrPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer*) {
  SetArgs(entry, std::string(args[1]), "1");
  return true;
}
bool DecrPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer*) {
  SetArgs(entry, std::string(args[1]), "-1");
  return true;
}
bool IncrbyPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return IncrPrepareBy(args, entry, reply, false);
}
bool DecrbyPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return IncrPrepareBy(args, entry, reply, true);
}

// args: key increment (all of INCR, DECR, INCRBY, DECRBY)
Status IncrApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  int64_t by = *ParseInt64(e.args[1]);
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  int64_t value = 0;
  if (old->found) {
    auto parsed = ParseInt64(old->payload);
    if (!parsed) {
      reply->Error(kErrNotInteger);
      return Status::Ok();
    }
    value = *parsed;
  }
  if ((by < 0 && value < 0 && by < (LLONG_MIN - value)) ||
      (by > 0 && value > 0 && by > (LLONG_MAX - value))) {
    reply->Error("ERR increment or decrement would overflow");
    return Status::Ok();
  }
  value += by;
  s = PutString(txn, e.db, e.args[0], Int64ToString(value), old->expire_at_ms);
  if (s.ok()) reply->Integer(value);
  return s;
}

Status IncrbyfloatApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  Status s;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &s);
  if (!old) return s;
  long double value = 0;
  if (old->found) {
    auto parsed = ParseLongDouble(old->payload);
    if (!parsed) {
      reply->Error(kErrNotFloat);
      return Status::Ok();
    }
    value = *parsed;
  }
  auto by = ParseLongDouble(e.args[1]);
  if (!by) {
    reply->Error(kErrNotFloat);
    return Status::Ok();
  }
  value += *by;
  if (std::isnan(value) || std::isinf(value)) {
    reply->Error("ERR increment would produce NaN or Infinity");
    return Status::Ok();
  }
  std::string text = FormatLongDoubleHuman(value);
  s = PutString(txn, e.db, e.args[0], text, old->expire_at_ms);
  if (s.ok()) reply->Bulk(text);
  return s;
}

}  // namespace

void AppendStringCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite | kCmdDenyOom;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"get", 2, kR, 1, 1, 1, "string", 0, GetRead},
      {"strlen", 2, kR, 1, 1, 1, "string", 0, StrlenRead},
      {"getrange", 4, kCmdReadonly, 1, 1, 1, "string", 0, GetrangeRead},
      {"substr", 4, kCmdReadonly, 1, 1, 1, "string", 0, GetrangeRead},
      {"mget", -2, kR, 1, -1, 1, "string", 0, MgetRead},
      {"lcs", -3, kCmdReadonly, 1, 2, 1, "string", 0, LcsRead},
      {"set", -3, kW, 1, 1, 1, "string", 1, nullptr, SetPrepare, SetApply},
      {"setnx", 3, kWF, 1, 1, 1, "string", 2, nullptr, nullptr, SetnxApply},
      {"setex", 4, kW, 1, 1, 1, "string", 3, nullptr, SetexPrepare, SetApply},
      {"psetex", 4, kW, 1, 1, 1, "string", 4, nullptr, PsetexPrepare, SetApply},
      {"getset", 3, kWF, 1, 1, 1, "string", 5, nullptr, nullptr, GetsetApply},
      {"getdel", 2, kWF, 1, 1, 1, "string", 6, nullptr, nullptr, GetdelApply},
      {"getex", -2, kWF, 1, 1, 1, "string", 7, nullptr, GetexPrepare, GetexApply},
      {"mset", -3, kW, 1, -1, 2, "string", 8, nullptr, MsetPrepare, MsetApply},
      {"msetnx", -3, kW, 1, -1, 2, "string", 9, nullptr, MsetPrepare, MsetnxApply},
      {"append", 3, kWF, 1, 1, 1, "string", 10, nullptr, AppendPrepare, AppendApply},
      {"setrange", 4, kW, 1, 1, 1, "string", 11, nullptr, SetrangePrepare, SetrangeApply},
      {"incr", 2, kWF, 1, 1, 1, "string", 12, nullptr, IncrPrepare, IncrApply},
      {"decr", 2, kWF, 1, 1, 1, "string", 13, nullptr, DecrPrepare, IncrApply},
      {"incrby", 3, kWF, 1, 1, 1, "string", 14, nullptr, IncrbyPrepare, IncrApply},
      {"decrby", 3, kWF, 1, 1, 1, "string", 15, nullptr, DecrbyPrepare, IncrApply},
      {"incrbyfloat", 3, kWF, 1, 1, 1, "string", 16, nullptr, nullptr, IncrbyfloatApply},
  });
}

void GetBatch::Add(uint16_t slot, uint16_t db, std::string_view key) {
  storage::AppendDataKeyInSlot(&keys_, slot, db, key);
  ends_.push_back(keys_.size());
}

void GetBatch::Read(storage::Engine& engine) {
  // The views are taken once every key is in: keys_ may move while it grows.
  views_.clear();
  size_t begin = 0;
  for (size_t end : ends_) {
    views_.emplace_back(keys_.data() + begin, end - begin);
    begin = end;
  }
  if (values_.size() < views_.size()) values_.resize(views_.size());
  statuses_.assign(views_.size(), Status::Ok());
  engine.MultiGet(storage::Cf::kData, views_, std::span<std::string>(values_.data(), views_.size()), statuses_,
                  nullptr, storage::ReadVia::kCache);
}

void GetBatch::Reply(size_t i, int64_t now_ms, resp::Writer* reply) const {
  ReplyGet(statuses_[i], values_[i], now_ms, reply);
}

std::string_view GetBatch::key(size_t i) const {
  const size_t begin = i == 0 ? 0 : ends_[i - 1];
  return std::string_view(keys_).substr(begin + storage::kDataKeyPrefixBytes, ends_[i] - begin - storage::kDataKeyPrefixBytes);
}

void GetBatch::Clear() {
  if (keys_.capacity() > 65536) std::string().swap(keys_);
  keys_.clear();
  ends_.clear();
  views_.clear();
  // A large value read once is not held on to (the others keep their
  // storage: the next batch reads into it without allocating).
  for (std::string& v : values_) {
    if (v.capacity() > 4096) std::string().swap(v);
  }
}

}  // namespace shoal::kv
