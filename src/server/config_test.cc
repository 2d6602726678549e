#include "server/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace shoal::server {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / (name + std::to_string(::getpid()) + ".toml");
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, DefaultsAreSafe) {
  Config c;
  EXPECT_EQ(c.bind, "127.0.0.1");
  EXPECT_EQ(c.durability, Durability::kFsync);
  EXPECT_TRUE(c.Validate().ok());
}

TEST(Config, LoadsToml) {
  Config c;
  auto path = WriteTemp("good", "port = 7001\ndurability = \"none\"\nmaxmemory = \"64mb\"\n"
                                "requirepass = \"pw\"\nworkers = 2\n");
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  EXPECT_EQ(c.port, 7001);
  EXPECT_EQ(c.durability, Durability::kNone);
  EXPECT_EQ(c.maxmemory, 64LL << 20);
  EXPECT_EQ(c.requirepass, "pw");
  EXPECT_EQ(c.workers, 2);
  std::filesystem::remove(path);
}

TEST(Config, RejectsUnknownKeysAndBadValues) {
  Config c;
  auto typo = WriteTemp("typo", "prot = 1\n");
  Status s = LoadConfigFile(typo, &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unknown setting 'prot'"), std::string::npos);
  auto bad = WriteTemp("bad", "durability = \"sometimes\"\n");
  EXPECT_FALSE(LoadConfigFile(bad, &c).ok());
  auto broken = WriteTemp("broken", "port = = 3\n");
  EXPECT_FALSE(LoadConfigFile(broken, &c).ok());
  EXPECT_FALSE(LoadConfigFile("/nonexistent/shoal.toml", &c).ok());
  c.port = 70000;
  EXPECT_FALSE(c.Validate().ok());
  for (auto p : {typo, bad, broken}) std::filesystem::remove(p);
}

TEST(Config, ParseMemory) {
  EXPECT_EQ(*ParseMemory("1gb"), 1LL << 30);
  EXPECT_EQ(*ParseMemory("10MB"), 10LL << 20);
  EXPECT_EQ(*ParseMemory("123"), 123);
  EXPECT_EQ(*ParseMemory("1k"), 1000);
  EXPECT_FALSE(ParseMemory("lots").ok());
  EXPECT_FALSE(ParseMemory("-5mb").ok());
}

}  // namespace
}  // namespace shoal::server
