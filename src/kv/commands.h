// The data commands of shoal as a table: name, arity, flags, key positions,
// and how each runs. A read runs against current state on any thread. A write
// is first *prepared* (validated, relative times made absolute) into an Entry,
// then *applied* by the shard that owns its keys (see shard.h).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/entry.h"
#include "kv/shard.h"
#include "resp/writer.h"
#include "storage/engine.h"

namespace shoal::kv {

enum CommandFlag : uint32_t {
  kCmdWrite = 1u << 0,
  kCmdReadonly = 1u << 1,
  kCmdFast = 1u << 2,
  kCmdAdmin = 1u << 3,
  kCmdNoAuth = 1u << 4,   // allowed before AUTH
  kCmdDenyOom = 1u << 5,
  kCmdLoading = 1u << 6,
  kCmdStale = 1u << 7,
  kCmdNoScript = 1u << 8,
  kCmdConnection = 1u << 9,  // runs on the connection (server layer)
  kCmdNoBatch = 1u << 10,    // a write that must be applied alone (FLUSHDB, FLUSHALL)
  kCmdMovableKeys = 1u << 11,  // COMMAND INFO's flag of a spec with numkeys_at (set there)
  kCmdBlocking = 1u << 12,     // may wait for data (BLPOP...): see timeout_at
};

using Args = std::span<const std::string_view>;  // args[0] is the command name

struct ReadContext {
  storage::Engine* engine = nullptr;
  uint16_t db = 0;
  int64_t now_ms = 0;
  const Limits* limits = nullptr;
  std::span<Shard* const> shards;  // for counts (DBSIZE, RANDOMKEY)
  uint64_t random = 0;             // fresh randomness for RANDOMKEY
};

struct PrepareContext {
  uint16_t db = 0;
  int64_t now_ms = 0;
  const Limits* limits = nullptr;
};

using ReadFn = void (*)(ReadContext& ctx, Args args, resp::Writer* reply);
// Fills *entry (op and db are set by the caller) and returns true, or writes
// an error reply and returns false. *entry may hold an earlier write's
// arguments (it is recycled for their storage): a prepare sets `args` whole
// (SetArgs, args.assign, or clear first), never only appends to them.
using PrepareFn = bool (*)(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply);

struct CommandSpec {
  std::string_view name;  // lower case
  int arity;              // > 0: exactly; < 0: at least -arity (name included)
  uint32_t flags;
  int first_key, last_key, key_step;  // as in COMMAND INFO
  std::string_view group;             // documentation group (string, keyspace, ...)
  uint16_t op;                        // stable log op id for writes; 0 for reads
  ReadFn read = nullptr;
  PrepareFn prepare = nullptr;
  ApplyFn apply = nullptr;
  // Commands whose keys are counted by an argument (ZUNION numkeys key ...):
  // its position; the keys follow it (besides any at first_key..last_key).
  int numkeys_at = 0;
  // Blocking commands (kCmdBlocking): the position of the timeout in
  // seconds (negative: from the end, -1 the last). Applied, such a command
  // is its non-blocking form, whose reply is null when there is nothing to
  // take; outside MULTI the server then waits for a write to its keys and
  // applies it again (server/blocking.h).
  int timeout_at = 0;
  // Keys that options name (SORT ... STORE destination), besides the others.
  std::vector<size_t> (*option_keys)(Args args) = nullptr;
};

// The positions in args of every key of a command (empty: keyless, or a
// count of keys that is not valid, which the command itself rejects).
std::vector<size_t> KeyPositions(const CommandSpec& spec, Args args);
// The same into *out (cleared first), whose storage a caller may reuse.
void KeyPositionsInto(const CommandSpec& spec, Args args, std::vector<size_t>* out);

// Every data command (reads and writes) that the kv layer implements.
std::span<const CommandSpec> DataCommands();
// The apply function of a write op id, or nullptr (also covers internal ops).
ApplyFn FindApply(uint16_t op);
// Whether entries of this op must be applied alone (kCmdNoBatch: FLUSHDB...).
bool MustApplyAlone(uint16_t op);

// The key a write entry changes (all its keys share that key's slot), or
// nullopt for a keyless one (FLUSHDB, FLUSHALL).
std::optional<std::string_view> EntryKey(const Entry& entry);

// Internal op: removes key args[0] if it still expires at args[1] (ms) and
// that time has passed at entry.now_ms. Proposed by active expiry.
inline constexpr uint16_t kOpExpireKey = 1000;

// The keys a blocking command waits on: those it takes from (BLMOVE's and
// BRPOPLPUSH's spec names two keys, source and destination: the source).
std::vector<size_t> BlockingKeyPositions(const CommandSpec& spec, Args args);
// A blocking command's timeout in milliseconds (0: none), as its prepare
// accepted it; nullopt if it has none or it is not valid.
std::optional<int64_t> BlockingTimeoutMs(const CommandSpec& spec, Args args);
// Parses a blocking timeout in seconds (Redis's rules: a float, not
// negative); false: the error is replied.
bool ParseBlockTimeout(std::string_view arg, int64_t* ms, resp::Writer* reply);

// A DUMP payload of an RDB object `body`: with the RDB version and the
// CRC-64 that RESTORE checks (dump_commands.cc).
std::string SealDumpPayload(std::string_view body);

// The error Redis sends for wrong arity of `name`.
std::string ArityError(std::string_view name);

// GETs read together. A connection adds the GETs of a pipeline that it can
// answer at once, reads them with one engine MultiGet, then writes their
// replies in order: each the reply GET gives (one code for both). Its
// buffers are kept from one batch to the next.
class GetBatch {
 public:
  // At most this many keys a batch: the caller reads when it is full.
  static constexpr size_t kMaxKeys = 64;
  // Adds GET `key` of `db`, whose slot the caller has computed.
  void Add(uint16_t slot, uint16_t db, std::string_view key);
  size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  bool full() const { return ends_.size() >= kMaxKeys; }
  // Reads every key added.
  void Read(storage::Engine& engine);
  // GET's reply for the i-th key added, as Read found it, at `now_ms`.
  void Reply(size_t i, int64_t now_ms, resp::Writer* reply) const;
  // The i-th key added (without its db and slot).
  std::string_view key(size_t i) const;
  // Forgets the keys and values (values larger than a small bound give
  // their storage back).
  void Clear();

 private:
  std::string keys_;  // the data keys, back to back
  std::vector<size_t> ends_;
  std::vector<std::string_view> views_;
  std::vector<std::string> values_;
  std::vector<Status> statuses_;
};

}  // namespace shoal::kv
