#include "server/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

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

TEST(Config, WalZeroAheadIsYesOrNo) {
  Config c;
  EXPECT_TRUE(c.wal_zero_ahead);
  auto path = WriteTemp("walzero", "wal-zero-ahead = \"no\"\n");
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  std::filesystem::remove(path);
  EXPECT_FALSE(c.wal_zero_ahead);
  path = WriteTemp("walzero2", "wal-zero-ahead = true\n");
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  std::filesystem::remove(path);
  EXPECT_TRUE(c.wal_zero_ahead);
  path = WriteTemp("walzero3", "wal-zero-ahead = \"sometimes\"\n");
  Status st = LoadConfigFile(path, &c);
  std::filesystem::remove(path);
  EXPECT_NE(st.message().find("wal-zero-ahead must be yes or no"), std::string::npos) << st.message();
}

TEST(Config, TlsSettingsAreCheckedTogether) {
  Config c;
  auto path = WriteTemp("tls", "tls-port = 7002\ntls-cert-file = \"n.crt\"\ntls-key-file = \"n.key\"\n"
                               "tls-ca-cert-file = \"ca.crt\"\ntls-auth-clients = \"optional\"\n"
                               "tls-cluster = \"yes\"\n");
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  std::filesystem::remove(path);
  EXPECT_EQ(c.tls_port, 7002);
  EXPECT_EQ(c.tls_auth_clients, "optional");
  EXPECT_TRUE(c.tls_cluster);
  EXPECT_TRUE(c.Validate().ok());
  Config bad = c;
  bad.tls_ca_cert_file.clear();  // nothing to verify peers with
  EXPECT_NE(bad.Validate().message().find("tls-ca-cert-file"), std::string::npos);
  bad = c;
  bad.tls_port = 0;  // tls-cluster announces the TLS port
  EXPECT_NE(bad.Validate().message().find("tls-cluster needs tls-port"), std::string::npos);
  bad = c;
  bad.tls_key_file.clear();
  EXPECT_FALSE(bad.Validate().ok());
  bad = c;
  bad.tls_port = bad.port;
  EXPECT_FALSE(bad.Validate().ok());
  auto typo = WriteTemp("tlsbad", "tls-auth-clients = \"maybe\"\n");
  Config t;
  EXPECT_NE(LoadConfigFile(typo, &t).message().find("yes, no or optional"), std::string::npos);
  std::filesystem::remove(typo);
}

TEST(Config, RejectsUnknownKeysAndBadValues) {
  Config c;
  auto typo = WriteTemp("typo", "prot = 1\n");
  Status s = LoadConfigFile(typo, &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unknown setting 'prot'"), std::string::npos);
  auto bad = WriteTemp("bad", "durability = \"sometimes\"\n");
  EXPECT_FALSE(LoadConfigFile(bad, &c).ok());
  auto level = WriteTemp("level", "loglevel = \"loud\"\n");
  Status ls = LoadConfigFile(level, &c);
  EXPECT_NE(ls.message().find("loglevel must be"), std::string::npos) << ls.message();
  std::filesystem::remove(level);
  auto verbose = WriteTemp("verbose", "loglevel = \"verbose\"\n");
  EXPECT_TRUE(LoadConfigFile(verbose, &c).ok());
  EXPECT_EQ(c.loglevel, "notice");
  std::filesystem::remove(verbose);
  auto broken = WriteTemp("broken", "port = = 3\n");
  EXPECT_FALSE(LoadConfigFile(broken, &c).ok());
  EXPECT_FALSE(LoadConfigFile("/nonexistent/shoal.toml", &c).ok());
  c.port = 70000;
  EXPECT_FALSE(c.Validate().ok());
  for (auto p : {typo, bad, broken}) std::filesystem::remove(p);
}

TEST(Config, SplitThresholds) {
  Config c;
  EXPECT_EQ(c.split_size_mb, 512);  // size-based splits on by default
  EXPECT_EQ(c.split_ops, 0);        // load-based ones off
  auto path = WriteTemp("split", "split-size-mb = 0\nsplit-ops = 25000\n");
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  EXPECT_EQ(c.split_size_mb, 0);
  EXPECT_EQ(c.split_ops, 25000);
  EXPECT_TRUE(c.Validate().ok());
  auto text = WriteTemp("split_text", "split-ops = \"many\"\n");
  Status s = LoadConfigFile(text, &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("split-ops must be an integer"), std::string::npos) << s.message();
  for (auto p : {path, text}) std::filesystem::remove(p);
  // name, field, values that validate, values that do not
  struct Case {
    const char* name;
    int64_t Config::*field;
    std::vector<int64_t> ok, bad;
  };
  const std::vector<Case> cases = {
      {"split-size-mb", &Config::split_size_mb, {0, 1, 1'000'000}, {-1, 1'000'001, INT64_MAX}},
      {"split-ops", &Config::split_ops, {0, 1, 100'000'000}, {-1, 100'000'001, INT64_MIN}},
  };
  for (const Case& k : cases) {
    for (int64_t v : k.ok) {
      Config cfg;
      cfg.*k.field = v;
      EXPECT_TRUE(cfg.Validate().ok()) << k.name << " = " << v;
    }
    for (int64_t v : k.bad) {
      Config cfg;
      cfg.*k.field = v;
      Status bad = cfg.Validate();
      EXPECT_FALSE(bad.ok()) << k.name << " = " << v;
      EXPECT_NE(bad.message().find(k.name), std::string::npos) << bad.message();
    }
  }
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
