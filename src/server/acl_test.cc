#include "server/acl.h"

#include <gtest/gtest.h>

#include "common/secret.h"
#include "meta.pb.h"
#include "server/command_table.h"

namespace shoal::server::acl {
namespace {

const CommandTable& Table() {
  static const CommandTable table;
  return table;
}

User Build(std::initializer_list<std::string_view> rules) {
  User u;
  u.name = "app";
  u.command_rules = {"-@all"};
  for (auto r : rules) EXPECT_TRUE(Apply(&u, r, Table()).ok()) << r;
  return u;
}

std::string Check(const User& u, std::vector<std::string_view> args) {
  const Command* cmd = Table().Find(args[0]);
  EXPECT_NE(cmd, nullptr) << args[0];
  return CheckCommand(u, *cmd, args);
}

TEST(Acl, ReadOnlyUserOnItsKeys) {
  User u = Build({"on", ">secret", "~app:*", "+@read"});
  EXPECT_TRUE(PasswordMatches(u, "secret"));
  EXPECT_FALSE(PasswordMatches(u, "wrong"));
  EXPECT_EQ(Check(u, {"get", "app:1"}), "");
  EXPECT_EQ(Check(u, {"set", "app:1", "v"}), "NOPERM this user has no permissions to run the 'set' command");
  std::vector<std::string_view> get_other = {"get", "other:1"};
  EXPECT_FALSE(KeysAllowed(u, get_other, {1}));
  std::vector<std::string_view> get_app = {"get", "app:1"};
  EXPECT_TRUE(KeysAllowed(u, get_app, {1}));
  EXPECT_FALSE(u.unrestricted());
  EXPECT_EQ(Describe(u), "on #" + Sha256Hex("secret") + " ~app:* resetchannels -@all +@read");
}

TEST(Acl, CommandsSubcommandsAndOrder) {
  User u = Build({"+@all", "-@dangerous", "+config|get"});
  EXPECT_EQ(Check(u, {"get", "k"}), "");
  EXPECT_NE(Check(u, {"flushall"}), "");
  EXPECT_EQ(Check(u, {"config", "get", "port"}), "");
  EXPECT_EQ(Check(u, {"config", "set", "hz", "10"}), "NOPERM this user has no permissions to run the 'config|set' command");
  User v = Build({"+config", "-config|set"});
  EXPECT_EQ(Check(v, {"config", "get", "port"}), "");
  EXPECT_NE(Check(v, {"config", "set", "hz", "10"}), "");
  EXPECT_EQ(DescribeCommands(v), "-@all +config -config|set");
  User w = Build({"+@all", "-set", "nocommands", "+ping"});
  EXPECT_EQ(DescribeCommands(w), "-@all +ping");
  EXPECT_NE(Check(w, {"get", "k"}), "");
}

TEST(Acl, BadRulesAreRefusedWithRedisReasons) {
  User u = Build({});
  EXPECT_EQ(Apply(&u, "+nosuchcommand", Table()).message(), "Unknown command or category name in ACL");
  EXPECT_EQ(Apply(&u, "+@nosuchcategory", Table()).message(), "Unknown command or category name in ACL");
  EXPECT_EQ(Apply(&u, "bogus", Table()).message(), "Syntax error");
  EXPECT_NE(Apply(&u, "#nothex", Table()).message().find("exactly 64 characters"), std::string::npos);
  EXPECT_NE(Apply(&u, "<never-set", Table()).message().find("does not exist"), std::string::npos);
  ASSERT_TRUE(Apply(&u, "allkeys", Table()).ok());
  EXPECT_NE(Apply(&u, "~more:*", Table()).message().find("resetkeys"), std::string::npos);
}

TEST(Acl, RulesRebuildTheUserWithPasswordsHashed) {
  User u = Build({"on", ">pw", "~app:*", "&chan", "+@read", "-keys", "+config|get"});
  User again = Build({"reset"});
  for (const auto& r : Rules(u)) {
    EXPECT_FALSE(r.starts_with(">")) << r;
    ASSERT_TRUE(Apply(&again, r, Table()).ok()) << r;
  }
  EXPECT_EQ(Describe(again), Describe(u));
  EXPECT_TRUE(PasswordMatches(again, "pw"));
  EXPECT_EQ(Check(again, {"config", "get", "port"}), "");
  EXPECT_NE(Check(again, {"keys", "*"}), "");
}

TEST(Acl, UsersFromMetadataAndRequirepass) {
  Users users;
  users.SetRequirepass("", Table());
  EXPECT_TRUE(users.DefaultOpen());
  EXPECT_TRUE(users.DefaultFromRequirepass());
  const uint64_t e0 = users.epoch();
  users.SetRequirepass("pw", Table());
  EXPECT_FALSE(users.DefaultOpen());
  EXPECT_GT(users.epoch(), e0);
  EXPECT_TRUE(PasswordMatches(*users.Find("default"), "pw"));
  proto::MetaState meta;
  auto* app = meta.add_acl_users();
  app->set_name("app");
  app->set_created(7);
  for (const std::string& r : std::vector<std::string>{"on", "#" + Sha256Hex("apw"), "~app:*", "+@read"}) app->add_rules(r);
  auto* def = meta.add_acl_users();
  def->set_name("default");
  def->add_rules("-flushall");  // on top of the built-in default
  users.Rebuild(&meta, Table());
  EXPECT_FALSE(users.DefaultFromRequirepass());
  EXPECT_EQ(users.Names(), (std::vector<std::string>{"app", "default"}));
  EXPECT_TRUE(PasswordMatches(*users.Find("app"), "apw"));
  EXPECT_EQ(users.Find("app")->created, 7u);
  auto d = users.Find("default");
  EXPECT_TRUE(PasswordMatches(*d, "pw"));
  EXPECT_EQ(Check(*d, {"get", "k"}), "");
  EXPECT_NE(Check(*d, {"flushall"}), "");
  EXPECT_EQ(users.Find("nobody"), nullptr);
}

}  // namespace
}  // namespace shoal::server::acl
