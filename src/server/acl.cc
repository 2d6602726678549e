#include "server/acl.h"

#include <algorithm>
#include <optional>

#include "common/secret.h"
#include "common/strings.h"
#include "meta.pb.h"
#include "server/command_table.h"

namespace shoal::server::acl {
namespace {

constexpr std::string_view kCategories[] = {"keyspace",  "read",        "write",       "set",     "sortedset",
                                            "list",      "hash",        "string",      "bitmap",  "hyperloglog",
                                            "geo",       "stream",      "pubsub",      "admin",   "fast",
                                            "slow",      "blocking",    "dangerous",   "connection",
                                            "transaction", "scripting"};

bool OneOf(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

bool IsHexHash(std::string_view h) {
  if (h.size() != 64) return false;
  for (char c : h) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void ForgetSubcommands(User* u, const std::string& name) {
  const std::string prefix = name + "|";
  std::erase_if(u->subcommands, [&](const std::string& s) { return s.starts_with(prefix); });
  std::erase_if(u->denied_subcommands, [&](const std::string& s) { return s.starts_with(prefix); });
}

// +cmd / -cmd: the whole command, whatever was said of its subcommands.
void AllowCommand(User* u, const std::string& name, bool allow) {
  ForgetSubcommands(u, name);
  if (allow) {
    u->commands.insert(name);
  } else {
    u->commands.erase(name);
    u->all_commands = false;
  }
}

void NoteCommandRule(User* u, std::string rule) {
  if (rule == "+@all" || rule == "-@all") u->command_rules.clear();
  u->command_rules.push_back(std::move(rule));
}

// Key patterns (~pattern, allkeys, resetkeys) and channel patterns (&...,
// allchannels, resetchannels) follow the same rules.
struct PatternRules {
  char sigil;
  std::string_view all, reset, flag;
};
constexpr PatternRules kKeyRules{'~', "allkeys", "resetkeys", "keys"};
constexpr PatternRules kChannelRules{'&', "allchannels", "resetchannels", "channels"};

// The outcome of `rule` if it is one of k's; nullopt if not.
std::optional<Status> ApplyPatternRule(const PatternRules& k, const std::string& rule, bool* all,
                                       std::vector<std::string>* patterns) {
  const std::string star = std::string(1, k.sigil) + "*";
  if (EqualsIgnoreCase(rule, k.all) || rule == star) {
    *all = true;
    *patterns = {"*"};
  } else if (EqualsIgnoreCase(rule, k.reset)) {
    *all = false;
    patterns->clear();
  } else if (!rule.empty() && rule[0] == k.sigil) {
    if (*all) {
      return Status::InvalidArgument("Adding a pattern after the * pattern (or the '" + std::string(k.all) +
                                     "' flag) is not valid and does not have any effect. Try '" +
                                     std::string(k.reset) + "' to start with an empty list of " +
                                     (k.sigil == '~' ? std::string("patterns") : std::string(k.flag)));
    }
    if (std::find(patterns->begin(), patterns->end(), rule.substr(1)) == patterns->end()) {
      patterns->push_back(rule.substr(1));
    }
  } else {
    return std::nullopt;
  }
  return Status::Ok();
}

}  // namespace

std::span<const std::string_view> Categories() { return kCategories; }

bool InCategory(const Command& cmd, std::string_view cat) {
  const auto& s = cmd.spec;
  const std::string_view g = s.group;
  if (cat == "all") return true;
  if (cat == "read") return (s.flags & kv::kCmdReadonly) != 0;
  if (cat == "write") return (s.flags & kv::kCmdWrite) != 0;
  if (cat == "fast") return (s.flags & kv::kCmdFast) != 0;
  if (cat == "slow") return (s.flags & kv::kCmdFast) == 0;
  if (cat == "admin") return (s.flags & kv::kCmdAdmin) != 0;
  if (cat == "blocking") return (s.flags & kv::kCmdBlocking) != 0;
  if (cat == "dangerous") {
    return (s.flags & kv::kCmdAdmin) != 0 ||
           OneOf(s.name, {"flushall", "flushdb", "keys", "info", "config", "client", "acl", "sort", "shutdown",
                          "debug", "monitor", "migrate", "restore", "cluster"});
  }
  if (cat == "keyspace") {
    return g == "keyspace" || g == "generic" || OneOf(s.name, {"dbsize", "flushdb", "flushall", "keys", "scan"});
  }
  if (cat == "sortedset") return g == "sorted_set";
  if (cat == "transaction") return OneOf(s.name, {"multi", "exec", "discard", "watch", "unwatch"});
  if (cat == "connection") return g == "connection" || OneOf(s.name, {"auth", "hello", "client", "readonly", "readwrite", "asking"});
  if (cat == "scripting") return g == "scripting";
  return g == cat;  // set list hash string bitmap hyperloglog geo stream pubsub
}

Status Apply(User* u, std::string_view rule_in, const CommandTable& table) {
  const std::string rule(rule_in);
  const std::string lower = ToLower(rule);
  auto syntax = [] { return Status::InvalidArgument("Syntax error"); };
  auto unknown = [] { return Status::InvalidArgument("Unknown command or category name in ACL"); };
  if (lower == "on") {
    u->enabled = true;
  } else if (lower == "off") {
    u->enabled = false;
  } else if (lower == "nopass") {
    u->nopass = true;
    u->passwords.clear();
  } else if (lower == "resetpass") {
    u->nopass = false;
    u->passwords.clear();
  } else if (rule.starts_with(">") || rule.starts_with("#")) {
    std::string hash = rule[0] == '>' ? Sha256Hex(std::string_view(rule).substr(1)) : rule.substr(1);
    if (rule[0] == '#' && !IsHexHash(hash)) {
      return Status::InvalidArgument(
          "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters");
    }
    if (std::find(u->passwords.begin(), u->passwords.end(), hash) == u->passwords.end()) u->passwords.push_back(hash);
    u->nopass = false;
  } else if (rule.starts_with("<") || rule.starts_with("!")) {
    std::string hash = rule[0] == '<' ? Sha256Hex(std::string_view(rule).substr(1)) : rule.substr(1);
    if (rule[0] == '!' && !IsHexHash(hash)) {
      return Status::InvalidArgument(
          "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters");
    }
    auto it = std::find(u->passwords.begin(), u->passwords.end(), hash);
    if (it == u->passwords.end()) {
      return Status::InvalidArgument("The password you are trying to remove from the user does not exist");
    }
    u->passwords.erase(it);
  } else if (auto keys = ApplyPatternRule(kKeyRules, rule, &u->all_keys, &u->keys)) {
    return *keys;
  } else if (rule.starts_with("%")) {
    return Status::InvalidArgument("Syntax error (read/write key permissions, %R~ and %W~, are not supported yet)");
  } else if (auto channels = ApplyPatternRule(kChannelRules, rule, &u->all_channels, &u->channels)) {
    return *channels;
  } else if (lower == "allcommands" || lower == "+@all") {
    u->all_commands = true;
    u->commands.clear();
    for (const auto& c : table.all()) u->commands.insert(std::string(c.spec.name));
    u->subcommands.clear();
    u->denied_subcommands.clear();
    NoteCommandRule(u, "+@all");
  } else if (lower == "nocommands" || lower == "-@all") {
    u->all_commands = false;
    u->commands.clear();
    u->subcommands.clear();
    u->denied_subcommands.clear();
    NoteCommandRule(u, "-@all");
  } else if (lower.starts_with("+@") || lower.starts_with("-@")) {
    const std::string cat = lower.substr(2);
    if (std::find(kCategories, std::end(kCategories), cat) == std::end(kCategories)) return unknown();
    const bool add = lower[0] == '+';
    for (const auto& c : table.all()) {
      if (!InCategory(c, cat)) continue;
      AllowCommand(u, std::string(c.spec.name), add);
    }
    NoteCommandRule(u, lower);
  } else if (lower.starts_with("+") || lower.starts_with("-")) {
    const bool add = lower[0] == '+';
    const std::string what = lower.substr(1);
    const auto bar = what.find('|');
    const Command* cmd = table.Find(what.substr(0, bar));
    if (cmd == nullptr || what.empty()) return unknown();
    const std::string name(cmd->spec.name);
    if (bar == std::string::npos) {
      AllowCommand(u, name, add);
    } else {
      const std::string sub = what.substr(bar + 1);
      bool known = false;
      for (const auto& s : cmd->subcommands) known |= s.name == sub;
      if (!known) return unknown();
      const std::string full = name + "|" + sub;
      if (u->commands.contains(name)) {
        if (add) {
          u->denied_subcommands.erase(full);
        } else {
          u->denied_subcommands.insert(full);
          u->all_commands = false;
        }
      } else if (add) {
        u->subcommands.insert(full);
      } else {
        u->subcommands.erase(full);
      }
    }
    NoteCommandRule(u, lower);
  } else if (lower == "reset") {
    const std::string name = u->name;
    const uint64_t created = u->created;
    *u = User{};
    u->name = name;
    u->created = created;
    u->command_rules = {"-@all"};
  } else {
    return syntax();
  }
  return Status::Ok();
}

std::string DescribeCommands(const User& u) {
  std::string out;
  const bool starts_reset = !u.command_rules.empty() &&
                            (u.command_rules.front() == "+@all" || u.command_rules.front() == "-@all");
  if (!starts_reset) out = "-@all";
  for (const auto& r : u.command_rules) {
    if (!out.empty()) out += " ";
    out += r;
  }
  return out;
}

std::string DescribeKeys(const User& u) {
  std::string out;
  for (const auto& k : u.keys) out += (out.empty() ? "~" : " ~") + k;
  return out;
}

std::string DescribeChannels(const User& u) {
  std::string out;
  for (const auto& c : u.channels) out += (out.empty() ? "&" : " &") + c;
  return out;
}

std::vector<std::string> Rules(const User& u) {
  std::vector<std::string> out = {u.enabled ? "on" : "off"};
  if (u.nopass) out.push_back("nopass");
  for (const auto& p : u.passwords) out.push_back("#" + p);
  if (u.keys.empty()) out.push_back("resetkeys");
  for (const auto& k : u.keys) out.push_back("~" + k);
  if (u.channels.empty()) out.push_back("resetchannels");
  for (const auto& c : u.channels) out.push_back("&" + c);
  if (u.command_rules.empty() || (u.command_rules.front() != "+@all" && u.command_rules.front() != "-@all")) {
    out.push_back("-@all");
  }
  for (const auto& r : u.command_rules) out.push_back(r);
  return out;
}

std::string Describe(const User& u) {
  std::string out;
  for (const auto& r : Rules(u)) out += (out.empty() ? "" : " ") + r;
  return out;
}

bool PasswordMatches(const User& u, std::string_view password) {
  if (!u.enabled) return false;
  if (u.nopass) return true;
  const std::string hash = Sha256Hex(password);
  bool match = false;
  for (const auto& p : u.passwords) match |= ConstantTimeEquals(p, hash);
  return match;
}

std::string CheckCommand(const User& u, const Command& cmd, kv::Args args) {
  const std::string name(cmd.spec.name);
  std::string sub;
  if (!cmd.subcommands.empty() && args.size() >= 2) sub = ToLower(args[1]);
  if (u.commands.contains(name)) {
    if (sub.empty() || !u.denied_subcommands.contains(name + "|" + sub)) return "";
  } else if (!sub.empty() && u.subcommands.contains(name + "|" + sub)) {
    return "";
  }
  return "NOPERM this user has no permissions to run the '" + (sub.empty() ? name : name + "|" + sub) +
         "' command";
}

bool KeysAllowed(const User& u, kv::Args args, const std::vector<size_t>& positions) {
  if (u.all_keys) return true;
  for (size_t p : positions) {
    if (p >= args.size()) continue;
    bool ok = false;
    for (const auto& pattern : u.keys) {
      if (GlobMatch(pattern, args[p])) {
        ok = true;
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

Users::Users() = default;

void Users::Rebuild(const proto::MetaState* meta, const CommandTable& table) {
  std::lock_guard lock(mu_);
  std::vector<Defined> defined;
  if (meta != nullptr) {
    for (const auto& u : meta->acl_users()) {
      defined.push_back(Defined{u.name(), u.created(), std::vector<std::string>(u.rules().begin(), u.rules().end())});
    }
  }
  if (defined == defined_ && !users_.empty()) return;
  defined_ = std::move(defined);
  RebuildLocked(table);
}

void Users::SetRequirepass(const std::string& requirepass, const CommandTable& table) {
  std::lock_guard lock(mu_);
  if (requirepass == requirepass_ && !users_.empty()) return;
  requirepass_ = requirepass;
  RebuildLocked(table);
}

void Users::RebuildLocked(const CommandTable& table) {
  std::map<std::string, std::shared_ptr<const User>> users;
  {
    auto d = std::make_shared<User>();
    d->name = "default";
    for (std::string_view r : {"on", "~*", "&*", "+@all"}) (void)Apply(d.get(), r, table);
    if (requirepass_.empty()) {
      (void)Apply(d.get(), "nopass", table);
    } else {
      (void)Apply(d.get(), ">" + requirepass_, table);
    }
    users["default"] = std::move(d);
  }
  for (const auto& [name, created, rules] : defined_) {
    auto u = std::make_shared<User>();
    if (name == "default") {
      *u = *users["default"];  // ACL SETUSER default changes the default user above
    } else {
      u->name = name;
      u->created = created;
      u->command_rules = {"-@all"};
    }
    // A rule this version cannot apply (a command it lacks) is left out:
    // the rest still hold.
    for (const auto& r : rules) (void)Apply(u.get(), r, table);
    users[name] = std::move(u);
  }
  users_ = std::move(users);
  default_from_requirepass_.store(
      std::none_of(defined_.begin(), defined_.end(), [](const Defined& d) { return d.name == "default"; }),
      std::memory_order_release);
  epoch_.fetch_add(1, std::memory_order_acq_rel);
}

std::shared_ptr<const User> Users::Find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = users_.find(name);
  return it == users_.end() ? nullptr : it->second;
}

std::vector<std::string> Users::Names() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, u] : users_) out.push_back(name);
  return out;
}

bool Users::DefaultOpen() const {
  std::lock_guard lock(mu_);
  auto it = users_.find("default");
  return it != users_.end() && it->second->enabled && it->second->nopass;
}

}  // namespace shoal::server::acl
