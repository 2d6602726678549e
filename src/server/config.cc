#include "server/config.h"

#include <thread>
#include <toml++/toml.h>

#include "common/secret.h"
#include "common/strings.h"

namespace shoal::server {

Status Config::Validate() const {
  if (port < 0 || port > 65535) return Status::InvalidArgument("port must be 0..65535");
  if (workers < 0 || workers > 256) return Status::InvalidArgument("workers must be 0..256");
  if (peer_port < 0 || peer_port > 65535) return Status::InvalidArgument("peer-port must be 0..65535");
  if (peer_port == 0 && (plain_port_off() ? tls_port : port) + 10000 > 65535) {
    return Status::InvalidArgument("port + 10000 is not a valid peer port: set peer-port");
  }
  if (shards < 1 || shards > 1024) return Status::InvalidArgument("shards must be 1..1024");
  if (replicas < 1 || replicas > 7) return Status::InvalidArgument("replicas must be 1..7");
  if (tick_ms < 10 || tick_ms > 1000) return Status::InvalidArgument("tick-ms must be 10..1000");
  if (down_after_ms < 1000 || down_after_ms > 86'400'000) {
    return Status::InvalidArgument("down-after-ms must be 1000..86400000");
  }
  if (snapshot_rate_mb < 0 || snapshot_rate_mb > 100'000) {
    return Status::InvalidArgument("snapshot-rate-mb must be 0..100000 (0: unlimited)");
  }
  if (split_size_mb < 0 || split_size_mb > 1'000'000) {
    return Status::InvalidArgument("split-size-mb must be 0..1000000 (0: no size-based splits)");
  }
  if (split_ops < 0 || split_ops > 100'000'000) {
    return Status::InvalidArgument("split-ops must be 0..100000000 (0: no load-based splits)");
  }
  if (!cluster_secret.empty() && !cluster_secret_file.empty()) {
    return Status::InvalidArgument("cluster-secret and cluster-secret-file: give one of them");
  }
  if (!cluster_secret.empty()) {
    Status s = CheckSecret(cluster_secret);
    if (!s.ok()) return s.WithContext("cluster-secret");
  }
  if (tls_port < 0 || tls_port > 65535) return Status::InvalidArgument("tls-port must be 0..65535");
  if (tls_port != 0 && tls_port == port) return Status::InvalidArgument("tls-port and port must differ");
  if (tls_auth_clients != "yes" && tls_auth_clients != "no" && tls_auth_clients != "optional") {
    return Status::InvalidArgument("tls-auth-clients must be yes, no or optional");
  }
  if (plain_port_off() && !tls_cluster) {
    return Status::InvalidArgument("port 0 (no plain-text port) needs tls-cluster yes: nodes then reach each "
                                   "other over TLS");
  }
  if (tls_port != 0 && tls_port == effective_peer_port()) {
    return Status::InvalidArgument("tls-port and the peer port must differ");
  }
  if (tls_cluster && tls_port == 0) {
    return Status::InvalidArgument(
        "tls-cluster needs tls-port: the node announces its TLS port to clients and to the other nodes");
  }
  if (tls_enabled() && (tls_cert_file.empty() || tls_key_file.empty())) {
    return Status::InvalidArgument("TLS needs tls-cert-file and tls-key-file");
  }
  if (tls_enabled() && (tls_cluster || tls_auth_clients != "no") && tls_ca_cert_file.empty() &&
      tls_ca_cert_dir.empty()) {
    return Status::InvalidArgument(
        "TLS needs tls-ca-cert-file (or tls-ca-cert-dir) to verify certificates, unless tls-auth-clients is no "
        "and tls-cluster is off");
  }
  if (!join.empty() && join.find(':') == std::string::npos) {
    return Status::InvalidArgument("join must be host:port");
  }
  if (databases < 1 || databases > 1024) return Status::InvalidArgument("databases must be 1..1024");
  if (maxmemory < (32LL << 20)) return Status::InvalidArgument("maxmemory must be at least 32mb");
  if (proto_max_bulk_len < 1024) return Status::InvalidArgument("proto-max-bulk-len must be >= 1kb");
  if (client_query_buffer_limit < 1024 * 1024) {
    return Status::InvalidArgument("client-query-buffer-limit must be >= 1mb");
  }
  if (maxclients < 1) return Status::InvalidArgument("maxclients must be >= 1");
  if (hz < 1 || hz > 500) return Status::InvalidArgument("hz must be 1..500");
  if (dir.empty()) return Status::InvalidArgument("dir must not be empty");
  return Status::Ok();
}

Result<int64_t> ParseMemory(std::string_view text) {
  std::string t = ToLower(text);
  int64_t mul = 1;
  auto strip = [&](std::string_view suffix, int64_t m) {
    if (t.size() > suffix.size() && t.ends_with(suffix)) {
      t.resize(t.size() - suffix.size());
      mul = m;
      return true;
    }
    return false;
  };
  strip("gb", 1LL << 30) || strip("mb", 1LL << 20) || strip("kb", 1LL << 10) ||
      strip("g", 1000LL * 1000 * 1000) || strip("m", 1000LL * 1000) || strip("k", 1000) ||
      strip("b", 1);
  auto v = ParseInt64(t);
  if (!v || *v < 0 || *v > INT64_MAX / mul) {
    return Status::InvalidArgument("invalid memory size '" + std::string(text) + "'");
  }
  return *v * mul;
}

std::string DurabilityName(Durability d) { return d == Durability::kFsync ? "fsync" : "none"; }

namespace {

Status SetFromNode(const std::string& key, const toml::node& node, Config* c) {
  auto want_int = [&](auto* field) -> Status {
    auto v = node.value<int64_t>();
    if (!v) return Status::InvalidArgument(key + " must be an integer");
    *field = static_cast<std::remove_pointer_t<decltype(field)>>(*v);
    return Status::Ok();
  };
  auto want_str = [&](std::string* field) -> Status {
    auto v = node.value<std::string>();
    if (!v) return Status::InvalidArgument(key + " must be a string");
    *field = *v;
    return Status::Ok();
  };
  auto want_mem = [&](int64_t* field) -> Status {
    if (auto i = node.value<int64_t>()) {
      *field = *i;
      return Status::Ok();
    }
    auto s = node.value<std::string>();
    if (!s) return Status::InvalidArgument(key + " must be a size");
    auto m = ParseMemory(*s);
    if (!m.ok()) return m.status().WithContext(key);
    *field = *m;
    return Status::Ok();
  };
  if (key == "bind") return want_str(&c->bind);
  if (key == "port") return want_int(&c->port);
  if (key == "dir") return want_str(&c->dir);
  if (key == "workers") return want_int(&c->workers);
  if (key == "requirepass") return want_str(&c->requirepass);
  if (key == "databases") return want_int(&c->databases);
  if (key == "maxclients") return want_int(&c->maxclients);
  if (key == "hz") return want_int(&c->hz);
  if (key == "peer-port") return want_int(&c->peer_port);
  if (key == "join") return want_str(&c->join);
  if (key == "cluster-secret") return want_str(&c->cluster_secret);
  if (key == "cluster-secret-file") return want_str(&c->cluster_secret_file);
  auto want_yes_no = [&](std::string* field, bool optional_too) -> Status {
    std::string v;
    if (auto b = node.value<bool>()) v = *b ? "yes" : "no";
    else if (auto t = node.value<std::string>()) v = ToLower(*t);
    if (v != "yes" && v != "no" && !(optional_too && v == "optional")) {
      return Status::InvalidArgument(key + (optional_too ? " must be yes, no or optional" : " must be yes or no"));
    }
    *field = v;
    return Status::Ok();
  };
  if (key == "tls-port") return want_int(&c->tls_port);
  if (key == "tls-cert-file") return want_str(&c->tls_cert_file);
  if (key == "tls-key-file") return want_str(&c->tls_key_file);
  if (key == "tls-ca-cert-file") return want_str(&c->tls_ca_cert_file);
  if (key == "tls-ca-cert-dir") return want_str(&c->tls_ca_cert_dir);
  if (key == "tls-auth-clients") return want_yes_no(&c->tls_auth_clients, true);
  if (key == "tls-cluster") {
    std::string v;
    Status s = want_yes_no(&v, false);
    if (s.ok()) c->tls_cluster = v == "yes";
    return s;
  }
  if (key == "wal-zero-ahead") {
    std::string v;
    Status s = want_yes_no(&v, false);
    if (s.ok()) c->wal_zero_ahead = v == "yes";
    return s;
  }
  if (key == "shards") return want_int(&c->shards);
  if (key == "replicas") return want_int(&c->replicas);
  if (key == "tick-ms") return want_int(&c->tick_ms);
  if (key == "down-after-ms") return want_int(&c->down_after_ms);
  if (key == "snapshot-rate-mb") return want_int(&c->snapshot_rate_mb);
  if (key == "split-size-mb") return want_int(&c->split_size_mb);
  if (key == "split-ops") return want_int(&c->split_ops);
  if (key == "loglevel") {
    Status st = want_str(&c->loglevel);
    if (!st.ok()) return st;
    // Redis's "verbose" is taken as "notice" (shoal has nothing between).
    if (c->loglevel == "verbose") c->loglevel = "notice";
    if (c->loglevel != "debug" && c->loglevel != "notice" && c->loglevel != "warning") {
      return Status::InvalidArgument("loglevel must be \"debug\", \"notice\" or \"warning\"");
    }
    return Status::Ok();
  }
  if (key == "maxmemory") return want_mem(&c->maxmemory);
  if (key == "proto-max-bulk-len") return want_mem(&c->proto_max_bulk_len);
  if (key == "client-query-buffer-limit") return want_mem(&c->client_query_buffer_limit);
  if (key == "durability") {
    std::string d;
    Status s = want_str(&d);
    if (!s.ok()) return s;
    if (d == "fsync") c->durability = Durability::kFsync;
    else if (d == "none") c->durability = Durability::kNone;
    else return Status::InvalidArgument("durability must be \"fsync\" or \"none\"");
    return Status::Ok();
  }
  return Status::InvalidArgument("unknown setting '" + key + "'");
}

}  // namespace

Status LoadConfigFile(const std::string& path, Config* config) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument("config " + path + ": " + std::string(e.description()) +
                                   " at line " + std::to_string(e.source().begin.line));
  }
  for (const auto& [key, node] : table) {
    Status s = SetFromNode(std::string(key.str()), node, config);
    if (!s.ok()) return s.WithContext("config " + path);
  }
  return Status::Ok();
}

}  // namespace shoal::server
