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
};

const Table& GetTable() {
  static const Table table = [] {
    Table t;
    AppendStringCommands(&t.specs);
    AppendKeyspaceCommands(&t.specs);
    for (const CommandSpec& s : t.specs) {
      if (s.op == 0) continue;
      SHOAL_CHECK(s.op < kOpExpireKey && s.apply != nullptr);
      SHOAL_CHECK(t.apply_by_op[s.op] == nullptr);  // op ids are unique
      t.apply_by_op[s.op] = s.apply;
      t.alone_by_op[s.op] = (s.flags & kCmdNoBatch) != 0;
    }
    t.apply_by_op[kOpExpireKey] = ExpireKeyApplyFn();
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

}  // namespace shoal::kv
