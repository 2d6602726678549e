// `shoal admin`: the operator's view of a running cluster, over RESP to any
// node (which relays to the meta leader). Every verb is also a RESP command
// (SHOAL.ADMIN ...), so redis-cli can do the same.
#pragma once

#include <string>
#include <vector>

namespace shoal::cli {

struct AdminOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string password;
  std::string user;               // ACL user to AUTH as (default: the default user)
  // TLS (the node's tls-port): the CA that signed the node's certificate,
  // and this tool's certificate and key when the node asks for one.
  bool tls = false;
  std::string cacert, cert, key;
  std::string verb;               // status, plan, drain, remove, move, transfer, recover, balance, watch
  std::vector<std::string> args;  // the verb's arguments
  bool wait = true;               // drain/watch: follow the moves until they finish
  int timeout_s = 3600;           // ... for at most this long
  bool unsafe = false;            // recover: the operator accepts losing writes
};

// Runs one admin verb; returns the process exit code (0 ok, 1 refused or
// failed, 2 bad usage or unreachable).
int RunAdmin(const AdminOptions& opts);

}  // namespace shoal::cli
