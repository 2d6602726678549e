// ACL users, as in Redis 7: who may run which commands on which keys. Pure:
// a user is built by applying ACL SETUSER's rules, in order, to a fresh
// user, against the command table; the rules themselves live in the meta
// shard (proto::MetaState::acl_users), so every node builds the same users.
// Passwords are kept only as SHA-256 (`#hash` rules): ACL SETUSER sends the
// user's Rules() (hashes only) from the node it was given to.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/commands.h"

namespace shoal::proto {
class MetaState;
}

namespace shoal::server {

class CommandTable;
struct Command;

namespace acl {

// Redis's command categories, in ACL CAT's order.
std::span<const std::string_view> Categories();
bool InCategory(const Command& cmd, std::string_view category);

struct User {
  std::string name;
  uint64_t created = 0;  // which making of the user (deleted and made again: another)
  bool enabled = false;
  bool nopass = false;
  std::vector<std::string> passwords;  // SHA-256, hex
  bool all_commands = false;            // every command, those to come too
  std::set<std::string> commands;       // allowed whole (lower case)
  std::set<std::string> subcommands;    // allowed "cmd|sub" beyond those
  std::set<std::string> denied_subcommands;  // "cmd|sub" of an allowed cmd
  std::vector<std::string> command_rules;    // as given since the last reset of commands
  bool all_keys = false;
  std::vector<std::string> keys;  // key patterns (~pattern)
  bool all_channels = false;
  std::vector<std::string> channels;

  // Nothing to check beyond authentication (the default user, as a rule).
  bool unrestricted() const { return all_commands && all_keys; }
};

// Applies one rule to *u. The error is Redis's reason ("Syntax error",
// "Unknown command or category name in ACL", ...), without the prefix.
Status Apply(User* u, std::string_view rule, const CommandTable& table);

// The rules that rebuild the user from `reset`, and the same as ACL LIST's
// line after "user <name> ".
std::vector<std::string> Rules(const User& u);
std::string Describe(const User& u);
// ACL GETUSER's "commands", "keys" and "channels" fields.
std::string DescribeCommands(const User& u);
std::string DescribeKeys(const User& u);
std::string DescribeChannels(const User& u);

// Whether the user may log in with `password` (constant time per hash).
bool PasswordMatches(const User& u, std::string_view password);

// "" if the user may run it, else the NOPERM error (without "-").
std::string CheckCommand(const User& u, const Command& cmd, kv::Args args);
// Whether every key at `positions` of args matches one of the user's patterns.
bool KeysAllowed(const User& u, kv::Args args, const std::vector<size_t>& positions);

// The users in force on this node: the meta shard's, and a default user
// that is requirepass's (nopass when empty) unless the metadata defines
// "default". Immutable once built; connections hold what they resolved and
// look again when epoch() changes.
class Users {
 public:
  Users();
  // Builds the users from `meta` (null: none yet).
  void Rebuild(const proto::MetaState* meta, const CommandTable& table);
  // The password of the default user while the metadata does not define
  // it (at start, and after CONFIG SET requirepass).
  void SetRequirepass(const std::string& requirepass, const CommandTable& table);
  // Whether the default user is requirepass's (no ACL SETUSER default).
  bool DefaultFromRequirepass() const { return default_from_requirepass_.load(std::memory_order_acquire); }
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // nullptr if no such user.
  std::shared_ptr<const User> Find(const std::string& name) const;
  std::vector<std::string> Names() const;
  // Whether a new connection is logged in as "default" at once (nopass).
  bool DefaultOpen() const;

 private:
  void RebuildLocked(const CommandTable& table);
  mutable std::mutex mu_;
  struct Defined {
    std::string name;
    uint64_t created;
    std::vector<std::string> rules;
    bool operator==(const Defined&) const = default;
  };
  std::vector<Defined> defined_;  // from the metadata
  std::string requirepass_;
  std::map<std::string, std::shared_ptr<const User>> users_;
  std::atomic<uint64_t> epoch_{1};
  // No "default" in the metadata (read by every forwarded request: no lock).
  std::atomic<bool> default_from_requirepass_{true};
};

}  // namespace acl
}  // namespace shoal::server
