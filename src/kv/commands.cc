#include "kv/commands.h"

#include <array>

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
    AppendWatchCommands(&t.specs);
    for (const CommandSpec& s : t.specs) {
      if (s.op == 0) continue;
      SHOAL_CHECK(s.op < kOpExpireKey && s.apply != nullptr);
      SHOAL_CHECK(t.apply_by_op[s.op] == nullptr);  // op ids are unique
      t.apply_by_op[s.op] = s.apply;
      t.alone_by_op[s.op] = (s.flags & kCmdNoBatch) != 0;
      // A prepared entry keeps the first key first (every keyed write's first_key is 1).
      // Movable keys (numkeys_at): prepare puts the first key first.
      SHOAL_CHECK(s.first_key == 0 || s.first_key == 1);
      t.keyed_by_op[s.op] = s.first_key == 1 || s.numkeys_at > 0;
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

std::vector<size_t> KeyPositions(const CommandSpec& spec, Args args) {
  std::vector<size_t> out;
  if (spec.first_key > 0) {
    const int argc = static_cast<int>(args.size());
    const int last = spec.last_key >= 0 ? spec.last_key : argc + spec.last_key;
    const int step = spec.key_step > 0 ? spec.key_step : 1;
    for (int i = spec.first_key; i <= last && i < argc; i += step) out.push_back(static_cast<size_t>(i));
  }
  const size_t at = static_cast<size_t>(spec.numkeys_at);
  if (at > 0 && at < args.size()) {
    auto n = ParseInt64(args[at]);
    if (!n || *n <= 0 || static_cast<uint64_t>(*n) > args.size() - at - 1) return {};
    for (size_t i = 1; i <= static_cast<size_t>(*n); ++i) out.push_back(at + i);
  }
  return out;
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
