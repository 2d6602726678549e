#include "kv/command_util.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>

#include "common/strings.h"
#include "storage/keys.h"

namespace shoal::kv {

std::string InvalidExpireError(std::string_view command) {
  return "ERR invalid expire time in '" + std::string(command) + "' command";
}

std::string ArityError(std::string_view name) {
  return "ERR wrong number of arguments for '" + std::string(name) + "' command";
}

bool ReadLive(ReadContext& ctx, std::string_view key, std::string* raw, Value* value, bool* found,
              resp::Writer* reply, const storage::Snapshot* snap) {
  // At the latest state, through the value cache (what GET reads, other
  // reads of a key's value fill too).
  Status s = ctx.engine->Get(storage::Cf::kData, storage::DataKey(ctx.db, key), raw, snap,
                             snap == nullptr ? storage::ReadVia::kCache : storage::ReadVia::kStore);
  return LiveFromRead(s, *raw, ctx.now_ms, value, found, reply);
}

bool LiveFromRead(const Status& s, const std::string& raw, int64_t now_ms, Value* value, bool* found,
                  resp::Writer* reply) {
  *found = false;
  if (s.code() == Code::kNotFound) return true;
  if (!s.ok() || !DecodeValue(raw, value)) {
    reply->Error("ERR storage error: " + (s.ok() ? std::string("corrupt value") : s.ToString()));
    return false;
  }
  *found = !value->ExpiredAt(now_ms);
  return true;
}

Value DecodeOrDie(const std::string& raw) {
  Value v;
  SHOAL_CHECK(DecodeValue(raw, &v));
  return v;
}

Status PutString(ApplyTxn& txn, uint16_t db, std::string_view key, std::string_view payload,
                 int64_t expire_at_ms) {
  if (expire_at_ms != 0 && expire_at_ms <= txn.now_ms()) {
    bool existed = false;
    return txn.Delete(db, key, &existed);
  }
  return txn.Put(db, key, EncodeValue(ValueType::kString, expire_at_ms, payload));
}

std::optional<StringAt> GetStringForWrite(ApplyTxn& txn, uint16_t db, std::string_view key,
                                          resp::Writer* reply, Status* status) {
  auto raw = txn.GetLive(db, key);
  if (!raw.ok()) {
    *status = raw.status();
    return std::nullopt;
  }
  StringAt out;
  if (!*raw) return out;
  Value v = DecodeOrDie(**raw);
  if (v.type != ValueType::kString) {
    reply->Error(kErrWrongType);
    return std::nullopt;
  }
  out.found = true;
  out.payload.assign(v.payload);
  out.expire_at_ms = v.expire_at_ms;
  return out;
}

std::string Int64ToString(int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, static_cast<size_t>(r.ptr - buf));
}

}  // namespace shoal::kv

namespace shoal::kv {

bool ParseScanArgs(Args args, size_t at, bool allow_type, ScanArgs* out, resp::Writer* reply) {
  return ParseScanCursor(args, at, out, reply) && ParseScanOptions(args, at, allow_type, out, reply);
}

bool ParseScanCursor(Args args, size_t at, ScanArgs* out, resp::Writer* reply) {
  std::string cursor_text(args[at]);
  if (cursor_text.empty() || std::isspace(static_cast<unsigned char>(cursor_text[0]))) {
    reply->Error("ERR invalid cursor");
    return false;
  }
  errno = 0;
  char* end = nullptr;
  out->cursor = std::strtoull(cursor_text.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) {
    reply->Error("ERR invalid cursor");
    return false;
  }
  return true;
}

bool ParseScanOptions(Args args, size_t at, bool allow_type, ScanArgs* out, resp::Writer* reply) {
  for (size_t i = at + 1; i < args.size();) {
    size_t left = args.size() - i;
    if (EqualsIgnoreCase(args[i], "count") && left >= 2) {
      auto c = ParseInt64(args[i + 1]);
      if (!c) {
        reply->Error(kErrNotInteger);
        return false;
      }
      if (*c < 1) {
        reply->Error(kErrSyntax);
        return false;
      }
      out->count = *c;
      i += 2;
    } else if (EqualsIgnoreCase(args[i], "match") && left >= 2) {
      out->pattern = args[i + 1];
      out->use_pattern = out->pattern != "*";
      i += 2;
    } else if (allow_type && EqualsIgnoreCase(args[i], "type") && left >= 2) {
      out->type = args[i + 1];
      out->use_type = true;
      i += 2;
    } else {
      reply->Error(kErrSyntax);
      return false;
    }
  }
  return true;
}

bool ParseMultiPop(Args args, size_t at, std::string_view where_a, std::string_view where_b, Entry* entry,
                   resp::Writer* reply) {
  auto n = ParseInt64(args[at]);
  if (!n || *n < 1) return reply->Error("ERR numkeys should be greater than 0"), false;
  if (static_cast<uint64_t>(*n) >= args.size() - at - 1) return reply->Error(kErrSyntax), false;
  const size_t where = at + 1 + static_cast<size_t>(*n);
  std::string_view chosen;
  if (EqualsIgnoreCase(args[where], where_a)) {
    chosen = where_a;
  } else if (EqualsIgnoreCase(args[where], where_b)) {
    chosen = where_b;
  } else {
    return reply->Error(kErrSyntax), false;
  }
  int64_t count = -1;
  for (size_t j = where + 1; j < args.size(); ++j) {
    if (count == -1 && EqualsIgnoreCase(args[j], "count") && j + 1 < args.size()) {
      auto c = ParseInt64(args[++j]);
      if (!c || *c < 1) return reply->Error("ERR count should be greater than 0"), false;
      count = *c;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  entry->args.assign(args.begin() + static_cast<std::ptrdiff_t>(at + 1), args.begin() + static_cast<std::ptrdiff_t>(where));
  entry->args.emplace_back(chosen);
  entry->args.push_back(std::to_string(count == -1 ? 1 : count));
  return true;
}

bool ParseBlockingMultiPop(Args args, std::string_view where_a, std::string_view where_b, Entry* entry,
                           resp::Writer* reply) {
  int64_t ms = 0;
  return ParseBlockTimeout(args[1], &ms, reply) && ParseMultiPop(args, 2, where_a, where_b, entry, reply);
}

bool ParseBlockingPop(Args args, std::string_view where, Entry* entry, resp::Writer* reply) {
  int64_t ms = 0;
  if (!ParseBlockTimeout(args.back(), &ms, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end() - 1);
  entry->args.emplace_back(where);
  entry->args.emplace_back();
  return true;
}

}  // namespace shoal::kv
