#include "server/forwarder.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <tuple>

#include "common/clock.h"
#include "node/deadline.h"
#include "resp/reply_scan.h"
#include "server/server.h"

namespace shoal::server {
namespace {

using asio::experimental::as_tuple;

constexpr int64_t kRetryForUs = 6'000'000;
constexpr int64_t kLoginRetryForUs = 1'000'000;  // a user's change reaching the other nodes
constexpr auto kRetryPause = std::chrono::milliseconds(50);
constexpr size_t kIdleLinksMax = 16;
// Deadlines: connecting to a node, and its answer to one request: 30 s (a
// write waits at most 8 s for its quorum, a FLUSHALL that long per shard the
// node leads) plus a second per MiB of request (a large value on a slow link).
constexpr auto kConnectMax = std::chrono::seconds(2);
std::chrono::seconds ReplyMax(size_t request_bytes) { return std::chrono::seconds(30 + (request_bytes >> 20)); }
constexpr int kHopsMax = 16;

void AppendCommand(std::string* out, kv::Args args) {
  *out += "*" + std::to_string(args.size()) + "\r\n";
  for (auto a : args) {
    *out += "$" + std::to_string(a.size()) + "\r\n";
    out->append(a);
    *out += "\r\n";
  }
}

}  // namespace

struct Forwarder::Link {
  Link(asio::io_context& io, std::shared_ptr<node::TlsContext> tls) : stream(asio::ip::tcp::socket(io), std::move(tls)) {}
  node::Stream stream;  // TLS with tls-cluster
  asio::ip::tcp::socket& socket = stream.socket();
  uint16_t db = 0;
  int protocol = 2;
  std::string buf;
};

void Forwarder::Blocking::Abandon() {
  abandoned = true;
  if (link != nullptr) {
    asio::error_code ignored;
    link->close(ignored);
  }
}

Forwarder::Forwarder(Server& server, int workers) : server_(server), idle_(static_cast<size_t>(workers)) {}
Forwarder::~Forwarder() = default;

asio::awaitable<std::string> Forwarder::ToNode(int w, std::string host, uint16_t port, Session session,
                                               kv::Args args, bool* sent, std::shared_ptr<Blocking> blocking) {
  *sent = false;
  if (blocking && blocking->abandoned) co_return "-ERR the client left\r\n";
  // The default user of requirepass logs in with this node's requirepass.
  const bool own_credentials =
      !session.user.empty() && !(session.user == "default" && server_.users().DefaultFromRequirepass());
  auto& pool = idle_[static_cast<size_t>(w)][host + ":" + std::to_string(port) + " " +
                                             (own_credentials ? session.user + " " + session.key : std::string())];
  std::unique_ptr<Link> link;
  // A blocking request's link, while it is in use (see Blocking::Abandon).
  struct Watched {
    Blocking* b;
    ~Watched() {
      if (b != nullptr) b->link = nullptr;
    }
  } watched{blocking.get()};
  std::string req;
  size_t skip_replies = 0;
  while (!pool.empty() && !link) {
    link = std::move(pool.back());
    pool.pop_back();
    // An idle link the other node closed meanwhile (it restarted) would
    // take the request and lose it ("outcome unknown"): such a link reads
    // as ended, or has something unasked for; it is dropped.
    char probe;
    asio::error_code pec;
    if (link->stream.ReadNow(asio::buffer(&probe, 1), pec) != 0 || pec) link.reset();
  }
  if (!link) {
    link = std::make_unique<Link>(server_.runtime().worker(w).io(),
                                  server_.config().tls_cluster ? server_.tls() : nullptr);
    asio::error_code ec;
    auto addr = asio::ip::make_address(host, ec);
    if (ec) co_return "-ERR bad node address " + host + "\r\n";
    // Originate from our bind address, like peer traffic, so that a node cut
    // off by address rules cannot reach around them.
    auto local = asio::ip::make_address(server_.config().bind, ec);
    link->socket.open(addr.is_v4() ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), ec);
    if (!ec && !local.is_unspecified() && local.is_v4() == addr.is_v4()) {
      link->socket.bind(asio::ip::tcp::endpoint(local, 0), ec);
    }
    if (ec) co_return "-TRYAGAIN cannot open a connection to " + host + "\r\n";
    // A node that dies without a word (power, network) is noticed within
    // about half a minute even by a request that waits long (a blocking pop).
    link->socket.set_option(asio::socket_base::keep_alive(true), ec);
    const int idle = 10, interval = 5, probes = 3;
    ::setsockopt(link->socket.native_handle(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    ::setsockopt(link->socket.native_handle(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    ::setsockopt(link->socket.native_handle(), IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
    if (blocking) blocking->link = &link->socket;  // a client that leaves now cuts the connect short
    asio::error_code cec;
    {
      node::Deadline deadline(link->socket, kConnectMax);
      std::tie(cec) = co_await link->socket.async_connect(asio::ip::tcp::endpoint(addr, port),
                                                          as_tuple(asio::use_awaitable));
    }
    if (cec) co_return "-TRYAGAIN cannot reach " + host + ":" + std::to_string(port) + "\r\n";
    {
      node::Deadline deadline(link->socket, kConnectMax);
      const asio::error_code hec = co_await link->stream.Handshake(/*accepting=*/false);
      if (hec) {
        co_return "-TRYAGAIN TLS handshake with " + host + ":" + std::to_string(port) + " failed: " + hec.message() +
            "\r\n";
      }
    }
    link->socket.set_option(asio::ip::tcp::no_delay(true), ec);
    std::string_view hello[] = {"SHOAL.ROUTED"};
    AppendCommand(&req, hello);
    ++skip_replies;
    if (own_credentials) {
      std::string_view auth[] = {"AUTH", session.user, session.password};
      AppendCommand(&req, auth);
      ++skip_replies;
    } else if (!server_.config().requirepass.empty()) {
      std::string_view auth[] = {"AUTH", server_.config().requirepass};
      AppendCommand(&req, auth);
      ++skip_replies;
    }
  }
  if (link->protocol != session.protocol) {
    std::string proto = std::to_string(session.protocol);
    std::string_view hello[] = {"HELLO", proto};
    AppendCommand(&req, hello);
    ++skip_replies;
    link->protocol = session.protocol;
  }
  if (link->db != session.db) {
    std::string dbs = std::to_string(session.db);
    std::string_view sel[] = {"SELECT", dbs};
    AppendCommand(&req, sel);
    ++skip_replies;
    link->db = session.db;
  }
  // What the link needs first (SHOAL.ROUTED, AUTH, HELLO, SELECT) goes, and
  // its replies are read, before the request: a refused AUTH or SELECT must
  // not let the request run in the wrong database, or run while the client
  // is told it failed.
  std::string setup = std::move(req);
  req.clear();
  AppendCommand(&req, args);
  // A blocking command may wait its timeout first; without one, a year.
  std::chrono::steady_clock::duration reply_max = ReplyMax(setup.size() + req.size());
  if (blocking) {
    constexpr int64_t kYearMs = 365LL * 86'400'000;
    const int64_t ms = blocking->timeout_ms;
    reply_max += std::chrono::milliseconds(ms > 0 && ms < kYearMs ? ms : kYearMs);
  }
  node::Deadline deadline(link->socket, reply_max);
  if (blocking) {
    if (blocking->abandoned) co_return "-ERR the client left\r\n";
    blocking->link = &link->socket;
  }
  const std::string failed = "-TRYAGAIN connection to " + host + " failed\r\n";
  auto [wec, wn] = co_await link->stream.Write(asio::buffer(setup.empty() ? req : setup));
  (void)wn;
  if (wec) co_return failed;
  *sent = setup.empty();
  link->buf.clear();
  size_t pos = 0;
  char chunk[16 * 1024];
  for (;;) {
    size_t len = resp::ScanReply(link->buf.data() + pos, link->buf.size() - pos);
    if (len == resp::kReplyMalformed) co_return "-ERR malformed reply from " + host + "\r\n";
    if (len != resp::kReplyIncomplete) {
      if (skip_replies > 0) {
        std::string_view first(link->buf.data() + pos, len);
        if (first.starts_with("-")) co_return std::string(first);  // refused: the request was not sent
        --skip_replies;
        pos += len;
        if (skip_replies == 0) {
          link->buf.erase(0, pos);
          pos = 0;
          auto [rwec, rwn] = co_await link->stream.Write(asio::buffer(req));
          (void)rwn;
          if (rwec) co_return failed;
          *sent = true;
        }
        continue;
      }
      std::string reply = link->buf.substr(pos, len);
      if (pos + len == link->buf.size() && pool.size() < kIdleLinksMax) pool.push_back(std::move(link));
      co_return reply;
    }
    // Checked before each read too: a deadline that passed between two
    // reads had nothing to cancel. Before the request went, it did not run.
    const std::string late =
        *sent ? "-ERR " + host + ":" + std::to_string(port) +
                    " did not answer in time; the request's outcome is unknown\r\n"
              : "-TRYAGAIN " + host + ":" + std::to_string(port) + " did not answer in time\r\n";
    if (deadline.expired()) co_return late;  // -ERR, not TRYAGAIN, once sent: a retry could run it twice
    auto [rec, rn] = co_await link->stream.ReadSome(asio::buffer(chunk));
    if (rec && deadline.expired()) co_return late;
    if (rec) {
      co_return *sent ? "-ERR connection to " + host + " lost; the request's outcome is unknown\r\n" : failed;
    }
    link->buf.append(chunk, rn);
  }
}

asio::awaitable<std::string> Forwarder::ToSlotLeader(int w, uint16_t slot, Session session, kv::Args args,
                                                     std::shared_ptr<Blocking> blocking) {
  auto& cluster = server_.cluster();
  asio::steady_timer pause(server_.runtime().worker(w).io());
  int64_t deadline = RealClock().NowMonoUs() + kRetryForUs;
  const int64_t login_deadline = RealClock().NowMonoUs() + kLoginRetryForUs;
  std::string host;
  uint16_t port = 0;
  std::string last = "-CLUSTERDOWN The cluster is down: no leader for the key's shard\r\n";
  for (int hop = 0; hop < 1000; ++hop) {
    if (host.empty()) {
      auto rt = cluster.routing();
      uint64_t group = cluster.GroupOfSlot(slot);
      const cluster::NodeAddr* addr = group != 0 ? rt->Node(cluster.LeaderOf(group)) : nullptr;
      if (addr != nullptr) {
        host = addr->host;
        port = addr->port;
      }
    }
    if (!host.empty()) {
      bool sent = false;
      std::string reply = co_await ToNode(w, host, port, session, args, &sent, blocking);
      if (blocking && blocking->abandoned) co_return reply;
      host.clear();
      // Never a request that may have run ("outcome is unknown"). A link
      // that could not log in as the client's user, for a moment: that node
      // has not applied the user's latest change yet.
      bool retry = ((reply.starts_with("-TRYAGAIN") || reply.starts_with("-CLUSTERDOWN")) &&
                    reply.find("outcome is unknown") == std::string::npos) ||
                   (reply.starts_with("-WRONGPASS") && !sent && RealClock().NowMonoUs() < login_deadline);
      if (reply.starts_with("-MOVED ") && hop < kHopsMax) {
        // -MOVED slot host:port
        auto sp = reply.find(' ', 7);
        auto colon = reply.rfind(':');
        if (sp != std::string::npos && colon != std::string::npos && colon > sp) {
          host = reply.substr(sp + 1, colon - sp - 1);
          port = static_cast<uint16_t>(std::atoi(reply.c_str() + colon + 1));
          continue;
        }
      }
      if (!retry) co_return reply;
      last = reply;
    }
    if (RealClock().NowMonoUs() > deadline) break;
    pause.expires_after(kRetryPause);
    co_await pause.async_wait(as_tuple(asio::use_awaitable));
  }
  co_return last;
}

}  // namespace shoal::server
