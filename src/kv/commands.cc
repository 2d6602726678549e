#include "kv/commands.h"

#include <array>

#include "kv/string_commands.h"

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
    for (const CommandSpec& s : t.specs) {
      if (s.op == 0) continue;
      SHOAL_CHECK(s.op < kOpExpireKey && s.apply != nullptr);
      SHOAL_CHECK(t.apply_by_op[s.op] == nullptr);  // op ids are unique
      t.apply_by_op[s.op] = s.apply;
      t.alone_by_op[s.op] = (s.flags & kCmdNoBatch) != 0;
      // A prepared entry keeps the first key first (every keyed write's first_key is 1).
      SHOAL_CHECK(s.first_key == 0 || s.first_key == 1);
      t.keyed_by_op[s.op] = s.first_key == 1;
    }
    t.apply_by_op[kOpExpireKey] = ExpireKeyApplyFn();
    t.keyed_by_op[kOpExpireKey] = true;
    return t;
  }();
  return table;
}

}  // namespace

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
