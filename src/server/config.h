// Server settings: defaults, a TOML file (--config), then command-line flags.
// Names follow redis.conf wherever shoal has the same setting.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace shoal::server {

enum class Durability { kFsync, kNone };

struct Config {
  std::string bind = "127.0.0.1";  // safe by default: loopback only
  int port = 6379;
  std::string dir = "./shoal-data";
  int workers = 0;                  // 0: one fewer than the usable cores, at least one
  Durability durability = Durability::kFsync;
  // WAL files written ahead with zeros, so that a sync overwrites blocks
  // already on disk (storage/wal_file.h); no: RocksDB appends them alone.
  bool wal_zero_ahead = true;
  std::string requirepass;          // empty: no AUTH needed
  int databases = 16;
  int64_t maxmemory = 1LL << 30;    // memory budget (RocksDB cache + memtables + buffers)
  int64_t proto_max_bulk_len = 512LL * 1024 * 1024;
  int64_t client_query_buffer_limit = 1LL << 30;
  int maxclients = 10000;
  int hz = 10;                      // active expiry cycles per second
  std::string loglevel = "notice";
  // Cluster settings.
  int peer_port = 0;                // Raft traffic between nodes; 0: port + 10000
  std::string join;                 // host:port of any member; empty: bootstrap a new cluster
  // What every node of the cluster must prove before peers take its frames
  // or its join (empty: nothing, for private networks); given inline or read
  // from a file (the file's first line), not both.
  std::string cluster_secret;
  std::string cluster_secret_file;
  // TLS, with Redis's names. tls-port: a port for clients in TLS (0: none).
  // tls-cluster: every link between nodes (Raft traffic, forwarded requests,
  // joins) is TLS with certificates both ways, and the node announces its
  // tls-port to cluster-aware clients and to the other nodes.
  int tls_port = 0;
  std::string tls_cert_file, tls_key_file, tls_ca_cert_file, tls_ca_cert_dir;
  std::string tls_auth_clients = "yes";  // yes | optional | no: must clients show a certificate
  bool tls_cluster = false;
  bool tls_enabled() const { return tls_port != 0 || tls_cluster; }
  // port 0 with a tls-port: no plain-text port at all (as in Redis).
  bool plain_port_off() const { return port == 0 && tls_port != 0; }
  int shards = 16;                  // data shards of a new cluster
  int replicas = 3;                 // replication factor of a new cluster
  int tick_ms = 50;                 // Raft tick; elections time out after 10-20 ticks
  int64_t down_after_ms = 30'000;  // a node silent this long is down: its replicas are rebuilt elsewhere
  int64_t snapshot_rate_mb = 128;  // MB/s this node sends snapshots at, all together; 0: unlimited
  int64_t split_size_mb = 512;     // a shard bigger than this splits by itself; 0: never
  int64_t split_ops = 0;           // ... or busier than this (ops/s, sustained); 0: never

  int effective_peer_port() const {
    if (peer_port != 0) return peer_port;
    if (plain_port_off()) return tls_port + 10000;
    return port == 0 ? 0 : port + 10000;
  }

  // Validates ranges; returns InvalidArgument naming the bad setting.
  Status Validate() const;
};

// Reads a TOML file into *config (keys as in redis.conf, e.g. `port = 7000`,
// `durability = "none"`). Unknown keys are an error, so typos do not pass.
Status LoadConfigFile(const std::string& path, Config* config);

// Parses a memory size such as "64mb", "1gb", "1024" (bytes).
Result<int64_t> ParseMemory(std::string_view text);
std::string DurabilityName(Durability d);

}  // namespace shoal::server
