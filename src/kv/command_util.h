// Helpers shared by the command implementations (internal to src/kv).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kv/commands.h"
#include "kv/value.h"

namespace shoal::kv {

inline constexpr std::string_view kErrWrongType =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
inline constexpr std::string_view kErrNotInteger = "ERR value is not an integer or out of range";
inline constexpr std::string_view kErrNotFloat = "ERR value is not a valid float";
inline constexpr std::string_view kErrSyntax = "ERR syntax error";
inline constexpr std::string_view kErrStringTooLong =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

std::string InvalidExpireError(std::string_view command);

// Reads the live value of key for a read command. Returns false and writes
// an error reply on a storage failure; *found says whether a live value exists.
// With `snap`, reads from that view.
bool ReadLive(ReadContext& ctx, std::string_view key, std::string* raw, Value* value, bool* found,
              resp::Writer* reply, const storage::Snapshot* snap = nullptr);
// ReadLive's second half: what the read of a value found (`s`, `raw`) at
// `now_ms`.
bool LiveFromRead(const Status& s, const std::string& raw, int64_t now_ms, Value* value, bool* found,
                  resp::Writer* reply);

// Decodes a value fetched by ApplyTxn::GetLive (a corrupt record is a bug).
Value DecodeOrDie(const std::string& raw);

// Stores a string, or deletes the key if expire_at_ms is already past.
Status PutString(ApplyTxn& txn, uint16_t db, std::string_view key, std::string_view payload,
                 int64_t expire_at_ms);

std::string Int64ToString(int64_t v);

// The arguments of SCAN and HSCAN: args[at] is the cursor, options follow.
struct ScanArgs {
  uint64_t cursor = 0;
  int64_t count = 10;
  std::string_view pattern, type;
  bool use_pattern = false, use_type = false;
};
// False (an error replied) on a bad cursor or option; TYPE only if allow_type.
bool ParseScanArgs(Args args, size_t at, bool allow_type, ScanArgs* out, resp::Writer* reply);
// The two halves of it, for HSCAN and SSCAN, which (as Redis) read the key
// between them: the cursor args[at], then the options after it.
bool ParseScanCursor(Args args, size_t at, ScanArgs* out, resp::Writer* reply);
bool ParseScanOptions(Args args, size_t at, bool allow_type, ScanArgs* out, resp::Writer* reply);

// The live value at a key that a string command is about to change.
struct StringAt {
  bool found = false;
  std::string payload;
  int64_t expire_at_ms = 0;
};

// Reads key for a string write. Returns nullopt if the command must stop:
// WRONGTYPE was replied (*status ok), or storage failed (*status says why).
std::optional<StringAt> GetStringForWrite(ApplyTxn& txn, uint16_t db, std::string_view key,
                                          resp::Writer* reply, Status* status);

// LMPOP's and ZMPOP's "numkeys key [key ...] WHERE [COUNT count]" from
// args[at], checked in Redis's order: entry args become key [key ...]
// where count, `where` the one of `wheres` given (as listed there) and
// count 1 without COUNT. False: the error is replied.
bool ParseMultiPop(Args args, size_t at, std::string_view where_a, std::string_view where_b, Entry* entry,
                   resp::Writer* reply);

// BLMPOP's and BZMPOP's "timeout numkeys key ... WHERE [COUNT count]": the
// timeout checked, then as ParseMultiPop from args[2].
bool ParseBlockingMultiPop(Args args, std::string_view where_a, std::string_view where_b, Entry* entry,
                           resp::Writer* reply);
// BLPOP's and BZPOPMIN's "key [key ...] timeout": entry args key [key ...]
// `where` "" (the empty count asks for the one-element reply).
bool ParseBlockingPop(Args args, std::string_view where, Entry* entry, resp::Writer* reply);

}  // namespace shoal::kv
