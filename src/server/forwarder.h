// Forwarder: relays a plain client's request to the node that leads the
// key's shard, and the reply back unchanged. Each worker keeps a pool of
// connections per destination; a connection announces itself with
// SHOAL.ROUTED, so the receiving node answers with MOVED instead of
// forwarding again. While a shard has no leader (failover) the request is
// retried for a few seconds before the client sees CLUSTERDOWN.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kv/commands.h"

namespace shoal::server {

class Server;

class Forwarder {
 public:
  Forwarder(Server& server, int workers);
  ~Forwarder();
  // A blocking command (BLPOP...): it may wait its timeout (0: without
  // end) before it is answered, and Abandon() gives up on it at once (the
  // client left: the link is closed, so the node it waits on forgets it).
  // Touched on the forwarding worker only.
  struct Blocking {
    int64_t timeout_ms = 0;
    bool abandoned = false;
    asio::ip::tcp::socket* link = nullptr;  // while a request waits on it
    void Abandon();
  };
  // What a request runs under on the other node: the client's database and
  // protocol (RESP2 or RESP3: the reply is shaped as the client expects).
  // The client's user and the password it logged in with: the link to the
  // other node logs in as that user (links are kept per user), so the
  // request runs there with the client's rights, never more. No user: the
  // node's requirepass, as the default user; so does the default user while
  // requirepass defines it (no ACL SETUSER default), so that a changed
  // requirepass does not break links of clients logged in before.
  struct Session {
    uint16_t db = 0;
    int protocol = 2;
    std::string user;
    std::string password;
    std::string key;  // SHA-256 of password: links are pooled per user and credential
  };
  // Runs args (in the session) on the leader of `slot`'s shard; returns its
  // raw reply. Call on worker `w`.
  asio::awaitable<std::string> ToSlotLeader(int w, uint16_t slot, Session session, kv::Args args,
                                            std::shared_ptr<Blocking> blocking = nullptr);
  // Runs args on the node at host:port (as a routed connection) and returns
  // the raw reply, or an error reply if it cannot be reached.
  asio::awaitable<std::string> ToNode(int w, std::string host, uint16_t port, Session session, kv::Args args,
                                      bool* sent, std::shared_ptr<Blocking> blocking = nullptr);

 private:
  struct Link;
  Server& server_;
  // Per worker: "host:port" -> idle links.
  std::vector<std::map<std::string, std::vector<std::unique_ptr<Link>>>> idle_;
};

}  // namespace shoal::server
