#include "server/command_table.h"

#include "common/strings.h"

namespace shoal::server {

CommandTable::CommandTable() {
  for (const kv::CommandSpec& spec : kv::DataCommands()) commands_.push_back(Command{spec});
  AppendServerCommands(&commands_);
  AppendClusterCommands(&commands_);
  AppendTransactionCommands(&commands_);
  AppendAclCommands(&commands_);
  for (size_t i = 0; i < commands_.size(); ++i) {
    SHOAL_CHECK(by_name_.emplace(std::string(commands_[i].spec.name), i).second);
  }
}

const Command* CommandTable::Find(std::string_view name) const {
  if (name.size() > 32) return nullptr;
  char buf[32];
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    buf[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  }
  auto it = by_name_.find(std::string(buf, name.size()));
  return it == by_name_.end() ? nullptr : &commands_[it->second];
}

}  // namespace shoal::server
