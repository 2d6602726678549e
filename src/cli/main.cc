// shoal: the command-line entry point.
//   shoal server [flags]     run one node
//   shoal demo [flags]       run a local 3-node cluster
//   shoal --version
#include <malloc.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/admin.h"
#include "common/secret.h"
#include "cli/demo.h"
#include "server/config.h"
#include "server/server.h"

namespace {

using shoal::server::Config;
using shoal::server::Durability;

struct ServerFlags {
  std::string config_file, bind, dir, durability, requirepass, maxmemory, join, cluster_secret_file;
  std::string tls_cert_file, tls_key_file, tls_ca_cert_file, tls_ca_cert_dir, tls_auth_clients, tls_cluster;
  int tls_port = -1;
  int port = -1, workers = -1, databases = -1, peer_port = -1, shards = -1, replicas = -1;
  int64_t down_after_ms = -1;
  int64_t snapshot_rate_mb = -1;
  int64_t split_size_mb = -1;
  int64_t split_ops = -1;
};

void AddServerFlags(CLI::App* cmd, ServerFlags* f) {
  cmd->add_option("--config", f->config_file, "TOML file with settings (flags override it)");
  cmd->add_option("--bind", f->bind, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", f->port, "TCP port (default 6379)");
  cmd->add_option("--dir", f->dir, "Data directory (default ./shoal-data)");
  cmd->add_option("--workers", f->workers,
                  "Worker threads (default: one fewer than the cores this process may run on, at least one)");
  cmd->add_option("--durability", f->durability,
                  "fsync: acknowledge writes once on disk (default); none: leave it to the OS")
      ->check(CLI::IsMember({"fsync", "none"}));
  cmd->add_option("--requirepass", f->requirepass, "Password clients must AUTH with");
  cmd->add_option("--maxmemory", f->maxmemory, "Memory budget, e.g. 256mb (default 1gb)");
  cmd->add_option("--databases", f->databases, "Number of databases for SELECT (default 16)");
  cmd->add_option("--peer-port", f->peer_port, "Port for Raft traffic between nodes (default port+10000)");
  cmd->add_option("--join", f->join, "host:port of any member of the cluster to join (default: start a new one)");
  cmd->add_option("--cluster-secret-file", f->cluster_secret_file,
                  "File whose first line is the cluster secret every node must prove to its peers (16+ bytes)");
  cmd->add_option("--tls-port", f->tls_port, "TCP port for clients in TLS (default 0: none)");
  cmd->add_option("--tls-cert-file", f->tls_cert_file, "PEM certificate (chain) this node shows");
  cmd->add_option("--tls-key-file", f->tls_key_file, "PEM private key of that certificate");
  cmd->add_option("--tls-ca-cert-file", f->tls_ca_cert_file, "PEM CA certificates that verify clients and peers");
  cmd->add_option("--tls-ca-cert-dir", f->tls_ca_cert_dir, "Directory of CA certificates (c_rehash layout)");
  cmd->add_option("--tls-auth-clients", f->tls_auth_clients,
                  "yes: TLS clients must show a certificate the CA signed (default); optional; no")
      ->check(CLI::IsMember({"yes", "no", "optional"}));
  cmd->add_option("--tls-cluster", f->tls_cluster,
                  "yes: links between nodes use TLS with certificates both ways, and the node announces its "
                  "tls-port (default no)")
      ->check(CLI::IsMember({"yes", "no"}));
  cmd->add_option("--shards", f->shards, "Data shards of a new cluster (default 16)");
  cmd->add_option("--replicas", f->replicas, "Replication factor of a new cluster (default 3)");
  cmd->add_option("--down-after-ms", f->down_after_ms,
                  "A node silent this long is down and its replicas are rebuilt elsewhere (default 30000)");
  cmd->add_option("--snapshot-rate-mb", f->snapshot_rate_mb,
                  "MB/s this node sends snapshots at, all transfers together; 0: unlimited (default 128)");
  cmd->add_option("--split-size-mb", f->split_size_mb,
                  "A shard bigger than this splits in two by itself; 0: never (default 512)");
  cmd->add_option("--split-ops", f->split_ops,
                  "A shard busier than this (operations per second, sustained) splits; 0: never (default 0)");
}

shoal::Status BuildConfig(const ServerFlags& f, CLI::App* cmd, Config* c) {
  if (!f.config_file.empty()) {
    shoal::Status s = shoal::server::LoadConfigFile(f.config_file, c);
    if (!s.ok()) return s;
  }
  if (cmd->count("--bind")) c->bind = f.bind;
  if (cmd->count("--port")) c->port = f.port;
  if (cmd->count("--dir")) c->dir = f.dir;
  if (cmd->count("--workers")) c->workers = f.workers;
  if (cmd->count("--durability")) c->durability = f.durability == "none" ? Durability::kNone : Durability::kFsync;
  if (cmd->count("--requirepass")) c->requirepass = f.requirepass;
  if (cmd->count("--databases")) c->databases = f.databases;
  if (cmd->count("--peer-port")) c->peer_port = f.peer_port;
  if (cmd->count("--join")) c->join = f.join;
  if (cmd->count("--cluster-secret-file")) {
    c->cluster_secret_file = f.cluster_secret_file;
    c->cluster_secret.clear();  // the flag overrides the config file's setting
  }
  if (cmd->count("--tls-port")) c->tls_port = f.tls_port;
  if (cmd->count("--tls-cert-file")) c->tls_cert_file = f.tls_cert_file;
  if (cmd->count("--tls-key-file")) c->tls_key_file = f.tls_key_file;
  if (cmd->count("--tls-ca-cert-file")) c->tls_ca_cert_file = f.tls_ca_cert_file;
  if (cmd->count("--tls-ca-cert-dir")) c->tls_ca_cert_dir = f.tls_ca_cert_dir;
  if (cmd->count("--tls-auth-clients")) c->tls_auth_clients = f.tls_auth_clients;
  if (cmd->count("--tls-cluster")) c->tls_cluster = f.tls_cluster == "yes";
  if (cmd->count("--shards")) c->shards = f.shards;
  if (cmd->count("--replicas")) c->replicas = f.replicas;
  if (cmd->count("--down-after-ms")) c->down_after_ms = f.down_after_ms;
  if (cmd->count("--snapshot-rate-mb")) c->snapshot_rate_mb = f.snapshot_rate_mb;
  if (cmd->count("--split-size-mb")) c->split_size_mb = f.split_size_mb;
  if (cmd->count("--split-ops")) c->split_ops = f.split_ops;
  if (cmd->count("--maxmemory")) {
    auto m = shoal::server::ParseMemory(f.maxmemory);
    if (!m.ok()) return m.status();
    c->maxmemory = *m;
  }
  shoal::Status s = c->Validate();
  if (!s.ok() || c->cluster_secret_file.empty()) return s;
  std::string warning;
  auto secret = shoal::ReadSecretFile(c->cluster_secret_file, &warning);
  if (!secret.ok()) return secret.status().WithContext("cluster-secret-file");
  if (!warning.empty()) std::fprintf(stderr, "warning: %s\n", warning.c_str());
  c->cluster_secret = std::move(secret).value();
  c->cluster_secret_file.clear();  // read: the secret is what the node uses
  return shoal::Status::Ok();
}

// Raises the open-file limit so that maxclients connections fit, as far as
// the hard limit allows (RocksDB needs descriptors too).
void RaiseFileLimit(const Config& config) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = static_cast<rlim_t>(config.maxclients) + 2048 + 64;
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = std::min(want, rl.rlim_max);
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
    spdlog::warn("open file limit {} is below maxclients {} + storage needs", rl.rlim_cur,
                 config.maxclients);
  }
}

int RunServer(const Config& config) {
  std::signal(SIGPIPE, SIG_IGN);
  // Few glibc malloc arenas (a -DSHOAL_MALLOC=system build; jemalloc ignores
  // this): per-thread arenas fragment and hold memory outside the budget.
  mallopt(M_ARENA_MAX, 2);
  RaiseFileLimit(config);
  shoal::server::Server server(config);
  shoal::Status s = server.Start();
  if (!s.ok()) {
    spdlog::critical("cannot start: {}", s.ToString());
    return 1;
  }
  asio::io_context signals_io(1);
  asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code&, int sig) {
    spdlog::info("received signal {}", sig);
    signals_io.stop();
  });
  signals_io.run();
  server.Stop();
  spdlog::info("bye");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("shoal"));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  CLI::App app{"shoal: a distributed database that speaks the Redis protocol"};
  app.set_version_flag("--version", std::string("shoal ") + SHOAL_VERSION);
  app.require_subcommand(1);
  ServerFlags flags;
  CLI::App* server_cmd = app.add_subcommand("server", "Run a shoal node");
  AddServerFlags(server_cmd, &flags);
  shoal::cli::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand("demo", "Run a local 3-node cluster (3 processes on loopback)");
  demo_cmd->add_option("--dir", demo.dir, "Folder for the nodes' data and logs (default ./shoal-demo)");
  demo_cmd->add_option("--bind", demo.bind, "Address of all nodes (default 127.0.0.1)");
  demo_cmd->add_option("--port", demo.port, "Client port of node 1; nodes 2 and 3 use the next ones (default 7001)");
  shoal::cli::AdminOptions admin;
  CLI::App* admin_cmd = app.add_subcommand("admin", "Watch and steer a running cluster (through any node)");
  admin_cmd->add_option("--host", admin.host, "Any node's address (default 127.0.0.1)");
  admin_cmd->add_option("--port", admin.port, "Its client port (default 6379)");
  admin_cmd->add_option("--password", admin.password, "AUTH password, if the cluster has one");
  admin_cmd->add_option("--user", admin.user, "ACL user to AUTH as, with --password (default: the default user)");
  admin_cmd->add_flag("--tls", admin.tls, "Talk TLS to the node (its tls-port)");
  admin_cmd->add_option("--cacert", admin.cacert, "With --tls: the CA certificate that signed the node's");
  admin_cmd->add_option("--cert", admin.cert, "With --tls: this tool's certificate, if the node asks for one");
  admin_cmd->add_option("--key", admin.key, "With --tls: the key of --cert");
  admin_cmd->require_subcommand(1);
  auto verb = [&](const char* name, const char* help) {
    CLI::App* v = admin_cmd->add_subcommand(name, help);
    v->callback([&admin, name] { admin.verb = name; });
    return v;
  };
  verb("status", "Nodes (state, replicas, leaders), shards (slots, leader, members) and moves in flight");
  verb("plan", "The moves the placement driver would make now (a dry run)");
  CLI::App* drain_cmd = verb("drain", "Move every replica off a node, then remove it; shows progress");
  drain_cmd->add_option("node", admin.args, "Node id (16 or 40 hex) or host:port")->required()->expected(1);
  drain_cmd->add_flag("!--no-wait", admin.wait, "Return at once instead of following the drain");
  drain_cmd->add_option("--timeout", admin.timeout_s, "Seconds to follow the drain (default 3600)")
      ->check(CLI::PositiveNumber);
  CLI::App* remove_cmd = verb("remove", "Remove a node that is down or drained (its replicas are rebuilt elsewhere)");
  remove_cmd->add_option("node", admin.args, "Node id (16 or 40 hex) or host:port")->required()->expected(1);
  CLI::App* balance_cmd = verb("balance", "on: spread replicas and leaders (default); off: repair only");
  balance_cmd->add_option("mode", admin.args, "on or off")->required()->expected(1)->check(CLI::IsMember({"on", "off"}));
  CLI::App* move_cmd = verb("move", "Move a shard's replica from one node to another (balance off keeps it there)");
  move_cmd->add_option("args", admin.args, "SHARD FROM-NODE TO-NODE")->required()->expected(3);
  CLI::App* transfer_cmd = verb("transfer", "Make a voter of a shard its leader");
  transfer_cmd->add_option("args", admin.args, "SHARD NODE")->required()->expected(2);
  CLI::App* split_cmd = verb("split", "Split a shard in two at a slot (default: where its size or load halves)");
  split_cmd->add_option("args", admin.args, "SHARD [SLOT]")->required()->expected(1, 2);
  CLI::App* recover_cmd = verb("recover",
                              "UNSAFE: a shard that lost its majority for good takes one survivor's replica as "
                              "its only voter (writes only the lost voters held are gone). `recover meta` makes "
                              "the node at --host/--port the meta shard's only voter");
  recover_cmd->add_option("args", admin.args, "SHARD NODE, or meta")->required()->expected(1, 2);
  recover_cmd->add_flag("--unsafe", admin.unsafe, "Required: say that you accept losing writes");
  CLI::App* watch_cmd = verb("watch", "Follow moves until placement is balanced");
  watch_cmd->add_option("--timeout", admin.timeout_s, "Seconds to follow (default 3600)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (admin_cmd->parsed()) return shoal::cli::RunAdmin(admin);
  if (demo_cmd->parsed()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return shoal::cli::RunDemo(demo, ec ? std::string(argv[0]) : self.string());
  }
  if (server_cmd->parsed()) {
    Config config;
    shoal::Status s = BuildConfig(flags, server_cmd, &config);
    if (!s.ok()) {
      std::cerr << "shoal: " << s.message() << "\n";
      return 2;
    }
    if (config.loglevel == "debug") spdlog::set_level(spdlog::level::debug);
    if (config.loglevel == "warning") spdlog::set_level(spdlog::level::warn);
    return RunServer(config);
  }
  return 0;
}
