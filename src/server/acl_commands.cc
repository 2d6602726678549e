// ACL: users and what they may do, as in Redis 7 (server/acl.h). Changes go
// through the meta shard (SETUSER, DELUSER), so every node enforces the
// same users; a change returns once this node has applied it.
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "common/secret.h"
#include "common/strings.h"
#include "server/acl.h"
#include "server/connection.h"
#include "server/forwarder.h"

namespace shoal::server {
namespace {

using kv::Args;

constexpr auto kAppliedWait = std::chrono::seconds(2);

// Runs a change on the meta leader (relaying the ACL command there when it
// is elsewhere); the reply is written to c. True if it was accepted.
asio::awaitable<bool> ChangeUsers(Connection& c, std::vector<std::string> verb, Args relay) {
  auto& cl = c.server().cluster();
  auto admin = [&cl, verb](std::function<void(cluster::AdminReply)> done) { cl.HandleAdmin(verb, std::move(done)); };
  cluster::AdminReply reply = co_await node::RunOnAsync<cluster::AdminReply>(
      c.server().runtime().worker(0).io(), c.worker().io(), std::move(admin));
  switch (reply.kind) {
    case cluster::AdminReply::Kind::kLines:
      if (!reply.lines.empty() && reply.lines[0] == "OK") {
        c.writer().Simple("OK");
      } else {
        c.writer().Integer(reply.lines.empty() ? 0 : std::atoll(reply.lines[0].c_str()));
      }
      co_return true;
    case cluster::AdminReply::Kind::kOk:
      c.writer().Simple("OK");
      co_return true;
    case cluster::AdminReply::Kind::kError:
      c.writer().Error(reply.error);
      co_return false;
    case cluster::AdminReply::Kind::kRedirect: {
      if (c.routed()) {  // one hop only: the meta leader moved meanwhile
        c.writer().Error("TRYAGAIN the meta leader moved; try again");
        co_return false;
      }
      bool sent = false;
      std::string raw = co_await c.server().forwarder().ToNode(c.worker().index(), reply.host, reply.port,
                                                               c.session(), relay, &sent);
      c.writer().Raw(raw);
      co_return !raw.starts_with("-");
    }
  }
  co_return false;
}

// Waits (bounded) until this node's users satisfy `done`.
asio::awaitable<void> WaitApplied(Connection& c, const std::function<bool()>& done) {
  asio::steady_timer pause(c.worker().io());
  const auto deadline = std::chrono::steady_clock::now() + kAppliedWait;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    pause.expires_after(std::chrono::milliseconds(10));
    co_await pause.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<void> SetUser(Connection& c, Args args) {
  const std::string name(args[2]);
  for (char ch : name) {
    if (ch == ' ' || ch == '\0') {
      c.writer().Error("ERR Usernames can't contain spaces or null characters");
      co_return;
    }
  }
  auto& users = c.server().users();
  acl::User want;
  if (auto existing = users.Find(name)) {
    want = *existing;
  } else {
    want.name = name;
    want.command_rules = {"-@all"};
  }
  for (size_t i = 3; i < args.size(); ++i) {
    Status s = acl::Apply(&want, args[i], c.server().commands());
    if (!s.ok()) {
      c.writer().Error("ERR Error in ACL SETUSER modifier '" + std::string(args[i]) + "': " + s.message());
      co_return;
    }
  }
  // The whole user goes, after a reset: replayed anywhere it gives `want`,
  // and the metadata keeps no history of its changes. (Passwords are in it
  // only as hashes.)
  std::vector<std::string> rules = acl::Rules(want);
  rules.insert(rules.begin(), "reset");
  std::vector<std::string> verb;
  verb.push_back("acl-setuser");
  verb.push_back(name);
  verb.insert(verb.end(), rules.begin(), rules.end());
  // Relayed the same way: passwords never leave this node as given.
  std::vector<std::string> relay;
  relay.push_back("ACL");
  relay.push_back("SETUSER");
  relay.push_back(name);
  relay.insert(relay.end(), rules.begin(), rules.end());
  std::vector<std::string_view> relay_args(relay.begin(), relay.end());
  if (!co_await ChangeUsers(c, std::move(verb), relay_args)) co_return;
  const std::string described = acl::Describe(want);
  co_await WaitApplied(c, [&] {
    auto u = users.Find(name);
    return u != nullptr && acl::Describe(*u) == described;
  });
}

asio::awaitable<void> DelUser(Connection& c, Args args) {
  for (size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "default") {
      c.writer().Error("ERR The 'default' user cannot be removed");
      co_return;
    }
  }
  int64_t deleted = 0;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string name(args[i]);
    std::string& buf = *c.writer().buffer();
    std::string saved = std::move(buf);
    buf.clear();
    // (no braced lists in coroutines: GCC 12 cannot keep their arrays)
    std::vector<std::string_view> relay_args;
    relay_args.push_back("ACL");
    relay_args.push_back("DELUSER");
    relay_args.push_back(name);
    std::vector<std::string> verb;
    verb.push_back("acl-deluser");
    verb.push_back(name);
    bool ok = co_await ChangeUsers(c, std::move(verb), relay_args);
    std::string one = std::move(buf);
    buf = std::move(saved);
    if (!ok) {
      c.writer().Raw(one);
      co_return;
    }
    if (one.starts_with(":")) deleted += std::atoll(one.c_str() + 1);
    co_await WaitApplied(c, [&] { return c.server().users().Find(name) == nullptr; });
  }
  c.writer().Integer(deleted);
}

void GetUser(Connection& c, const acl::User& u) {
  resp::Writer& r = c.writer();
  r.MapHeader(6);
  r.Bulk("flags");
  r.ArrayHeader(u.nopass ? 2 : 1);
  r.Bulk(u.enabled ? "on" : "off");
  if (u.nopass) r.Bulk("nopass");
  r.Bulk("passwords");
  r.ArrayHeader(u.passwords.size());
  for (const auto& p : u.passwords) r.Bulk(p);
  r.Bulk("commands");
  r.Bulk(acl::DescribeCommands(u));
  r.Bulk("keys");
  r.Bulk(acl::DescribeKeys(u));
  r.Bulk("channels");
  r.Bulk(acl::DescribeChannels(u));
  r.Bulk("selectors");
  r.ArrayHeader(0);
}

asio::awaitable<void> Acl(Connection& c, Args args) {
  const std::string sub = ToLower(args[1]);
  auto& users = c.server().users();
  resp::Writer& r = c.writer();
  if (sub == "whoami") {
    r.Bulk(c.user_name());
  } else if (sub == "users") {
    auto names = users.Names();
    r.ArrayHeader(names.size());
    for (const auto& n : names) r.Bulk(n);
  } else if (sub == "list") {
    auto names = users.Names();
    r.ArrayHeader(names.size());
    for (const auto& n : names) {
      auto u = users.Find(n);
      r.Bulk("user " + n + " " + (u ? acl::Describe(*u) : std::string("off resetkeys resetchannels -@all")));
    }
  } else if (sub == "getuser") {
    auto u = users.Find(std::string(args[2]));
    if (u == nullptr) {
      r.NullBulk();
    } else {
      GetUser(c, *u);
    }
  } else if (sub == "cat") {
    if (args.size() > 3) {
      r.Error("ERR Unknown subcommand or wrong number of arguments for 'cat'. Try ACL HELP.");
      co_return;
    }
    if (args.size() == 2) {
      auto cats = acl::Categories();
      r.ArrayHeader(cats.size());
      for (auto cat : cats) r.Bulk(cat);
      co_return;
    }
    const std::string cat = ToLower(args[2]);
    auto cats = acl::Categories();
    if (std::find(cats.begin(), cats.end(), cat) == cats.end()) {
      r.Error("ERR Unknown category '" + std::string(args[2]) + "'");
      co_return;
    }
    std::vector<std::string_view> names;
    for (const auto& cmd : c.server().commands().all()) {
      if (acl::InCategory(cmd, cat)) names.push_back(cmd.spec.name);
    }
    r.ArrayHeader(names.size());
    for (auto n : names) r.Bulk(n);
  } else if (sub == "setuser") {
    co_await SetUser(c, args);
  } else if (sub == "deluser") {
    co_await DelUser(c, args);
  } else if (sub == "genpass") {
    int64_t bits = 256;
    if (args.size() == 3) {
      auto v = ParseInt64(args[2]);
      if (!v || *v <= 0 || *v > 4096) {
        r.Error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number "
                "up to 4096");
        co_return;
      }
      bits = *v;
    } else if (args.size() > 3) {
      r.Error("ERR Unknown subcommand or wrong number of arguments for 'genpass'. Try ACL HELP.");
      co_return;
    }
    const size_t chars = static_cast<size_t>((bits + 3) / 4);
    std::string hex;
    while (hex.size() < chars) hex += ToHex(RandomNonce());
    hex.resize(chars);
    r.Bulk(hex);
  } else {  // help
    static constexpr std::string_view kHelp[] = {
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]", "    List all commands that belong to <category>, or all command categories",
        "    when no category is specified.",
        "DELUSER <username> [<username> ...]", "    Delete a list of users.",
        "GETUSER <username>", "    Get the user's details.",
        "GENPASS [<bits>]", "    Generate a secure 256-bit user password. The optional `bits` argument can",
        "    be used to specify a different size.",
        "LIST", "    Show users details in config file format.",
        "USERS", "    List all the registered usernames.",
        "SETUSER <username> <attribute> [<attribute> ...]", "    Create or modify a user with the specified attributes.",
        "WHOAMI", "    Return the current connection username.",
        "HELP", "    Print this help."};
    r.ArrayHeader(std::size(kHelp));
    for (auto l : kHelp) r.Simple(l);
  }
}

}  // namespace

void AppendAclCommands(std::vector<Command>* out) {
  using namespace kv;
  out->push_back(Command{CommandSpec{"acl", -2, kCmdAdmin | kCmdNoScript | kCmdLoading | kCmdStale | kCmdConnection,
                                     0, 0, 0, "server", 0},
                         nullptr,
                         Acl,
                         {{"cat", -2},
                          {"deluser", -3},
                          {"genpass", -2},
                          {"getuser", 3},
                          {"help", 2},
                          {"list", 2},
                          {"setuser", -3},
                          {"users", 2},
                          {"whoami", 2}}});
}

}  // namespace shoal::server
