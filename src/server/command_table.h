// The server's command table: the kv layer's data commands plus the
// connection and server commands, looked up case-insensitively by name.
#pragma once

#include <asio/awaitable.hpp>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kv/commands.h"
#include "resp/writer.h"

namespace shoal::server {

class Connection;

using SyncHandler = void (*)(Connection& conn, kv::Args args, resp::Writer* reply);
using AsyncHandler = asio::awaitable<void> (*)(Connection& conn, kv::Args args);

struct Subcommand {
  std::string_view name;  // lower case
  int arity;
};

// One row of the table: a data command (spec.read / spec.apply) or a server
// command (sync or async handler).
struct Command {
  kv::CommandSpec spec;
  SyncHandler sync = nullptr;
  AsyncHandler async = nullptr;
  std::vector<Subcommand> subcommands = {};  // for containers such as CLIENT
};

class CommandTable {
 public:
  CommandTable();
  // Finds a command by name, any case. nullptr if unknown.
  const Command* Find(std::string_view name) const;
  const std::vector<Command>& all() const { return commands_; }

 private:
  std::vector<Command> commands_;
  std::unordered_map<std::string, size_t> by_name_;
};

// Server command rows (defined in admin_commands.cc).
void AppendServerCommands(std::vector<Command>* out);
// CLUSTER, READONLY, READWRITE, ASKING, SHOAL.* (cluster_commands.cc).
void AppendClusterCommands(std::vector<Command>* out);
// MULTI EXEC DISCARD SHOAL.EXEC (transactions.cc).
void AppendTransactionCommands(std::vector<Command>* out);
// ACL (acl_commands.cc).
void AppendAclCommands(std::vector<Command>* out);

}  // namespace shoal::server
