#include "kv/commands.h"

#include <array>
#include <cmath>

#include "common/strings.h"
#include "kv/string_commands.h"
#include "kv/transaction.h"

namespace shoal::kv {

ApplyFn ExpireKeyApplyFn();

namespace {

struct Table {
  std::vector<CommandSpec> specs;
  std::array<ApplyFn, 1024> apply_by_op{};
  std::array<bool, 1024> alone_by_op{};
  std::array<bool, 1024> keyed_by_op{};
};

const Table& GetTable() {
  static const Table table = [] {
    Table t;
    AppendStringCommands(&t.specs);
    AppendKeyspaceCommands(&t.specs);
    AppendHashCommands(&t.specs);
    AppendSetCommands(&t.specs);
    AppendListCommands(&t.specs);
    AppendZsetCommands(&t.specs);
    AppendBitmapCommands(&t.specs);
    AppendHllCommands(&t.specs);
    AppendDumpCommands(&t.specs);
    AppendWatchCommands(&t.specs);
    for (const CommandSpec& s : t.specs) {
      if (s.op == 0) continue;
      SHOAL_CHECK(s.op < kOpExpireKey && s.apply != nullptr);
      SHOAL_CHECK(t.apply_by_op[s.op] == nullptr);  // op ids are unique
      t.apply_by_op[s.op] = s.apply;
      t.alone_by_op[s.op] = (s.flags & kCmdNoBatch) != 0;
      // A prepared entry has its first key first: where the spec puts it
      // (first_key 1), or where prepare puts it (movable keys, numkeys_at;
      // a later first key, BITOP's destination).
      SHOAL_CHECK(s.first_key <= 1 || s.prepare != nullptr);
      t.keyed_by_op[s.op] = s.first_key >= 1 || s.numkeys_at > 0;
    }
    t.apply_by_op[kOpExpireKey] = ExpireKeyApplyFn();
    t.keyed_by_op[kOpExpireKey] = true;
    t.apply_by_op[kOpExec] = ExecApplyFn();
    t.keyed_by_op[kOpExec] = true;
    return t;
  }();
  return table;
}

}  // namespace

void KeyPositionsInto(const CommandSpec& spec, Args args, std::vector<size_t>* out) {
  out->clear();
  if (spec.first_key > 0) {
    const int argc = static_cast<int>(args.size());
    const int last = spec.last_key >= 0 ? spec.last_key : argc + spec.last_key;
    const int step = spec.key_step > 0 ? spec.key_step : 1;
    for (int i = spec.first_key; i <= last && i < argc; i += step) out->push_back(static_cast<size_t>(i));
  }
  const size_t at = static_cast<size_t>(spec.numkeys_at);
  if (at > 0 && at < args.size()) {
    auto n = ParseInt64(args[at]);
    if (!n || *n <= 0 || static_cast<uint64_t>(*n) > args.size() - at - 1) return out->clear();
    for (size_t i = 1; i <= static_cast<size_t>(*n); ++i) out->push_back(at + i);
  }
  if (spec.option_keys != nullptr) {
    for (size_t k : spec.option_keys(args)) out->push_back(k);
  }
}

std::vector<size_t> KeyPositions(const CommandSpec& spec, Args args) {
  std::vector<size_t> out;
  KeyPositionsInto(spec, args, &out);
  return out;
}

bool ParseBlockTimeout(std::string_view arg, int64_t* ms, resp::Writer* reply) {
  auto v = ParseDouble(arg);
  if (!v || std::isnan(*v)) return reply->Error("ERR timeout is not a float or out of range"), false;
  // As Redis: seconds to whole milliseconds, truncated (-0.0001 is 0: no
  // timeout); a number too big for that (inf too) ends up negative there.
  const double t = std::trunc(*v * 1000.0);
  if (!std::isfinite(t) || t < 0 || t >= 9.2e18) return reply->Error("ERR timeout is negative"), false;
  *ms = static_cast<int64_t>(t);
  return true;
}

std::vector<size_t> BlockingKeyPositions(const CommandSpec& spec, Args args) {
  std::vector<size_t> keys = KeyPositions(spec, args);
  if (spec.first_key == 1 && spec.last_key == 2 && keys.size() == 2) keys.resize(1);
  return keys;
}

std::optional<int64_t> BlockingTimeoutMs(const CommandSpec& spec, Args args) {
  if (!(spec.flags & kCmdBlocking) || spec.timeout_at == 0) return std::nullopt;
  const int64_t at = spec.timeout_at > 0 ? spec.timeout_at : static_cast<int64_t>(args.size()) + spec.timeout_at;
  if (at <= 0 || at >= static_cast<int64_t>(args.size())) return std::nullopt;
  std::string ignored;
  resp::Writer errors(&ignored, 2);
  int64_t ms = 0;
  if (!ParseBlockTimeout(args[static_cast<size_t>(at)], &ms, &errors)) return std::nullopt;
  return ms;
}

std::span<const CommandSpec> DataCommands() { return GetTable().specs; }

ApplyFn FindApply(uint16_t op) {
  const Table& t = GetTable();
  return op < t.apply_by_op.size() ? t.apply_by_op[op] : nullptr;
}

bool MustApplyAlone(uint16_t op) {
  const Table& t = GetTable();
  return op < t.alone_by_op.size() && t.alone_by_op[op];
}

std::optional<std::string_view> EntryKey(const Entry& entry) {
  const Table& t = GetTable();
  if (entry.op >= t.keyed_by_op.size() || !t.keyed_by_op[entry.op] || entry.args.empty()) return std::nullopt;
  return std::string_view(entry.args[0]);
}

}  // namespace shoal::kv
