// Transactions (MULTI ... EXEC) as one log entry: the commands of a
// transaction, all on keys of one slot, run in order within one apply, so
// that every replica applies all of them or none, and nothing else comes
// between them. Reads inside run at apply time on a view of the writes
// before them (ApplyTxn::NewReadView); the proposer's choices (prepared
// writes, a random seed) travel in the entry.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kv/commands.h"

namespace shoal::kv {

// Internal op: a transaction (see MakeExecEntry).
inline constexpr uint16_t kOpExec = 1001;

// One command of a transaction, as its proposer resolved it.
struct ExecItem {
  // kWatch: a WATCHed key (args[0] in db), whose fingerprint (KeyFingerprint)
  // must still be `reply` when the entry is applied, or nothing runs.
  enum class Kind : uint8_t { kReply, kWrite, kRead, kWatch };
  Kind kind = Kind::kReply;
  std::string reply;              // kReply: its reply, ready (an error, PING's PONG...)
  Entry write;                    // kWrite: the prepared entry (its now_ms: the transaction's)
  uint16_t db = 0;                // kRead: its database
  std::vector<std::string> args;  // kRead: the command, name first
};

// The entry of a transaction whose keys all share the slot of `key`.
Entry MakeExecEntry(std::string_view key, int64_t now_ms, uint64_t seed, const std::vector<ExecItem>& items);

// Applies a kOpExec entry: replies with the array of its commands' replies,
// or a null array (nothing run) when a watched key changed.
ApplyFn ExecApplyFn();

// SHOAL.FINGERPRINT key: the fingerprint of key's live value, for WATCH.
void AppendWatchCommands(std::vector<CommandSpec>* out);

}  // namespace shoal::kv
