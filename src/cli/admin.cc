#include "cli/admin.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "resp/reply_scan.h"

namespace shoal::cli {
namespace {

constexpr size_t kReplyBytesMax = 64 << 20;
// How long a TRYAGAIN answer is asked again before it is reported.
constexpr int kTryAgainSeconds = 10;

// A reply as the admin verbs produce them: a status, an error, a bulk
// string, or an array of those.
struct Reply {
  char type = 0;  // '+', '-', '$', '*', ':'
  std::string text;
  std::vector<std::string> lines;
};

class Conn {
 public:
  ~Conn() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  // TLS over the open connection: the node's certificate must verify
  // against `cacert`; `cert`/`key` are shown if given.
  bool StartTls(const AdminOptions& o, std::string* err) {
    auto fail = [&](const std::string& what) {
      unsigned long e = ERR_get_error();
      *err = what + (e != 0 && ERR_reason_error_string(e) != nullptr ? std::string(": ") + ERR_reason_error_string(e)
                                                                       : std::string());
      return false;
    };
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr) return fail("TLS unavailable");
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (o.cacert.empty()) return fail("--tls needs --cacert (the CA that signed the node's certificate)");
    if (SSL_CTX_load_verify_locations(ctx_, o.cacert.c_str(), nullptr) != 1) return fail("--cacert " + o.cacert);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!o.cert.empty() && SSL_CTX_use_certificate_chain_file(ctx_, o.cert.c_str()) != 1) return fail("--cert " + o.cert);
    if (!o.key.empty() && SSL_CTX_use_PrivateKey_file(ctx_, o.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return fail("--key " + o.key);
    }
    ssl_ = SSL_new(ctx_);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return fail("TLS unavailable");
    if (SSL_connect(ssl_) != 1) return fail("TLS handshake failed");
    return true;
  }
  bool Open(const std::string& host, int port, std::string* err) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) {
      *err = "cannot resolve " + host;
      return false;
    }
    for (addrinfo* a = res; a != nullptr && fd_ < 0; a = a->ai_next) {
      int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (fd < 0) continue;
      timeval tv{10, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
      } else {
        close(fd);
      }
    }
    freeaddrinfo(res);
    if (fd_ < 0) *err = "cannot connect to " + host + ":" + std::to_string(port);
    return fd_ >= 0;
  }

  std::optional<Reply> Call(const std::vector<std::string>& args, std::string* err) {
    std::string req = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    for (size_t off = 0; off < req.size();) {
      ssize_t n = ssl_ != nullptr ? SSL_write(ssl_, req.data() + off, static_cast<int>(req.size() - off))
                                  : write(fd_, req.data() + off, req.size() - off);
      if (n <= 0) {
        *err = "connection lost while sending";
        return std::nullopt;
      }
      off += static_cast<size_t>(n);
    }
    std::string in;
    size_t len = resp::kReplyIncomplete;
    while ((len = resp::ScanReply(in.data(), in.size())) == resp::kReplyIncomplete) {
      char buf[16384];
      ssize_t n = ssl_ != nullptr ? SSL_read(ssl_, buf, sizeof(buf)) : read(fd_, buf, sizeof(buf));
      if (n <= 0 || in.size() > kReplyBytesMax) {
        *err = n == 0 ? "connection closed" : "no answer in time";
        if (ssl_ != nullptr && n <= 0) {
          *err = "the node closed the TLS connection (does it want this tool's certificate: --cert, --key?)";
        }
        return std::nullopt;
      }
      in.append(buf, static_cast<size_t>(n));
    }
    if (len == resp::kReplyMalformed) {
      *err = "malformed reply";
      return std::nullopt;
    }
    return Parse(in.substr(0, len));
  }

 private:
  static Reply Parse(const std::string& raw) {
    Reply r;
    r.type = raw[0];
    auto line_end = raw.find("\r\n");
    std::string head = raw.substr(1, line_end - 1);
    if (r.type != '*' && r.type != '$') {
      r.text = head;
      return r;
    }
    if (r.type == '$') {
      long n = std::strtol(head.c_str(), nullptr, 10);
      if (n >= 0) r.text = raw.substr(line_end + 2, static_cast<size_t>(n));
      return r;
    }
    size_t pos = line_end + 2;
    long count = std::strtol(head.c_str(), nullptr, 10);
    for (long i = 0; i < count && pos < raw.size(); ++i) {
      char t = raw[pos];
      size_t e = raw.find("\r\n", pos);
      std::string h = raw.substr(pos + 1, e - pos - 1);
      if (t == '$') {
        size_t n = std::strtoul(h.c_str(), nullptr, 10);
        r.lines.push_back(raw.substr(e + 2, n));
        pos = e + 2 + n + 2;
      } else {
        r.lines.push_back(h);
        pos = e + 2;
      }
    }
    return r;
  }
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// From STATUS lines: the node's line ("node <id> <addr> <state> replicas N leaders N ...").
std::vector<std::string> NodeLine(const std::vector<std::string>& status, const std::string& who) {
  for (const auto& l : status) {
    auto w = Words(l);
    if (w.size() >= 8 && w[0] == "node" && (w[1] == who.substr(0, 16) || w[2] == who)) return w;
  }
  return {};
}

// The shards whose status line says no leader is known, as "3, 7", or "".
std::string LeaderlessShards(const std::vector<std::string>& status) {
  std::string ids;
  for (const auto& l : status) {
    auto w = Words(l);
    if (w.size() >= 2 && w[0] == "shard" && l.find("(no leader known)") != std::string::npos) {
      ids += (ids.empty() ? "" : ", ") + w[1];
    }
  }
  return ids;
}

int MovesInFlight(const std::vector<std::string>& status) {
  for (const auto& l : status) {
    auto w = Words(l);
    if (w.size() == 2 && w[0] == "moves-in-flight") return std::atoi(w[1].c_str());
  }
  return -1;
}

// Bytes of snapshots received over the cluster's up nodes (the "transfers"
// line), or -1.
double BytesReceived(const std::vector<std::string>& status) {
  for (const auto& l : status) {
    auto w = Words(l);
    if (w.size() == 7 && w[0] == "transfers") return std::atof(w[6].c_str());
  }
  return -1;
}

// "230 MB moved at 45.1 MB/s" since `base`, or "".
std::string Moved(double base, double now, double secs) {
  if (base < 0 || now <= base || secs <= 0) return "";
  char buf[96];
  double mb = (now - base) / (1 << 20);
  std::snprintf(buf, sizeof(buf), ", %.0f MB moved at %.1f MB/s", mb, mb / secs);
  return buf;
}

std::string Duration(double s) {
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof(buf), "%.0fs", s);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0fm%02.0fs", s / 60, static_cast<double>(static_cast<int>(s) % 60));
  }
  return buf;
}

// Progress on one line: rewritten in place on a terminal, one line per
// change when piped.
class Progress {
 public:
  Progress() : tty_(isatty(STDOUT_FILENO) != 0) {}
  void Show(const std::string& line) {
    if (tty_) {
      std::printf("\r\033[K%s", line.c_str());
      std::fflush(stdout);
    } else if (line != last_) {
      std::printf("%s\n", line.c_str());
    }
    last_ = line;
  }
  void Done(const std::string& line) {
    if (tty_) std::printf("\r\033[K");
    std::printf("%s\n", line.c_str());
  }

 private:
  bool tty_;
  std::string last_;
};

}  // namespace

int RunAdmin(const AdminOptions& opts) {
  Conn conn;
  std::string err;
  if (!conn.Open(opts.host, opts.port, &err) || (opts.tls && !conn.StartTls(opts, &err))) {
    std::cerr << "shoal admin: " << err << "\n";
    return 2;
  }
  auto call = [&](std::vector<std::string> args) -> std::optional<Reply> {
    auto r = conn.Call(args, &err);
    if (!r) std::cerr << "shoal admin: " << err << "\n";
    return r;
  };
  if (!opts.password.empty()) {
    auto r = opts.user.empty() ? call({"AUTH", opts.password}) : call({"AUTH", opts.user, opts.password});
    if (!r || r->type == '-') {
      std::cerr << "shoal admin: AUTH failed" << (r ? ": " + r->text : "") << "\n";
      return 2;
    }
  }
  // A TRYAGAIN (another cluster change being applied, the meta shard busy,
  // a move in flight) changed nothing: asked again every 200 ms, for up to
  // kTryAgainSeconds, before it is reported.
  auto admin = [&](std::vector<std::string> args) -> std::optional<Reply> {
    args.insert(args.begin(), "SHOAL.ADMIN");
    const auto first = std::chrono::steady_clock::now();
    auto r = call(args);
    while (r && r->type == '-' && r->text.rfind("TRYAGAIN", 0) == 0 &&
           std::chrono::steady_clock::now() - first < std::chrono::seconds(kTryAgainSeconds)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      r = call(args);
    }
    if (r && r->type == '-') std::cerr << "shoal admin: " << r->text << "\n";
    return r && r->type != '-' ? r : std::nullopt;
  };
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };

  if (opts.verb == "status" || opts.verb == "plan") {
    auto r = admin({opts.verb});
    if (!r) return 1;
    for (const auto& l : r->lines) std::printf("%s\n", l.c_str());
    if (opts.verb == "plan" && r->lines.empty()) std::printf("(no move planned; a shard without a leader gets none: see status)\n");
    return 0;
  }
  if (opts.verb == "recover" && opts.args.size() == 1 && opts.args[0] != "meta") {
    std::cerr << "shoal admin: recover wants SHARD NODE, or meta\n";
    return 2;
  }
  if (opts.verb == "recover" && !opts.unsafe) {
    std::cerr << "shoal admin: recover is unsafe: the shard keeps only what the chosen replica has, and writes "
                 "only the lost voters held are gone. Use it only when those nodes are gone for good and will "
                 "never return; then add --unsafe.\n";
    return 2;
  }
  if (opts.verb == "balance" || opts.verb == "remove" || opts.verb == "move" || opts.verb == "transfer" ||
      opts.verb == "split" || opts.verb == "recover") {
    std::vector<std::string> args = {opts.verb};
    args.insert(args.end(), opts.args.begin(), opts.args.end());
    if (opts.verb == "recover") args.push_back("UNSAFE");
    if (args.size() == 1) args.push_back("");
    auto r = admin(args);
    if (!r) return 1;
    for (const auto& l : r->lines) std::printf("%s\n", l.c_str());
    return 0;
  }
  if (opts.verb == "drain") {
    auto r = admin({"drain", opts.args[0]});
    if (!r) return 1;
    for (const auto& l : r->lines) std::printf("%s\n", l.c_str());
    if (!opts.wait) return 0;
    Progress progress;
    int first = -1;
    double base = -1;
    while (elapsed() < opts.timeout_s) {
      auto st = admin({"status"});
      if (!st) return 1;
      auto node = NodeLine(st->lines, opts.args[0]);
      if (node.empty()) {
        std::cerr << "shoal admin: the node left the status\n";
        return 1;
      }
      if (node[3] == "removed") {
        progress.Done("drained and removed " + node[1] + " in " + Duration(elapsed()));
        return 0;
      }
      int left = std::atoi(node[5].c_str());
      if (first < 0) first = left;
      if (base < 0) base = BytesReceived(st->lines);
      double rate = elapsed() > 0 ? (first - left) / elapsed() : 0;
      std::string eta = rate > 0 ? ", about " + Duration(left / rate) + " left" : "";
      // A shard with no leader known may still hold the node: the drain
      // waits for it (docs/OPERATIONS.md), and says which.
      std::string leaderless = LeaderlessShards(st->lines);
      if (!leaderless.empty()) leaderless = ", waiting for shard " + leaderless + " (no leader known)";
      progress.Show("draining " + node[1] + ": " + std::to_string(left) + " replicas and " + node[7] +
                    " leaderships left, " + std::to_string(MovesInFlight(st->lines)) + " moves in flight" +
                    Moved(base, BytesReceived(st->lines), elapsed()) + leaderless + ", " + Duration(elapsed()) +
                    eta);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    progress.Done("still draining after " + Duration(elapsed()) + "; `shoal admin status` shows where it stands");
    return 1;
  }
  if (opts.verb == "watch") {
    Progress progress;
    int quiet = 0;
    double base = -1;
    while (elapsed() < opts.timeout_s) {
      auto st = admin({"status"});
      if (!st) return 1;
      if (base < 0) base = BytesReceived(st->lines);
      int moving = MovesInFlight(st->lines);
      std::string nodes;
      for (const auto& l : st->lines) {
        auto w = Words(l);
        if (w.size() >= 8 && w[0] == "node") nodes += " " + w[2] + "=" + w[5] + "/" + w[7];
      }
      quiet = moving == 0 ? quiet + 1 : 0;
      if (quiet >= 3 || !opts.wait) {
        progress.Done("balanced: replicas/leaders per node" + nodes);
        return 0;
      }
      progress.Show(std::to_string(moving) + " moves in flight" + Moved(base, BytesReceived(st->lines), elapsed()) +
                    "; replicas/leaders per node" + nodes + " (" + Duration(elapsed()) + ")");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    progress.Done("moves still in flight after " + Duration(elapsed()));
    return 1;
  }
  std::cerr << "shoal admin: unknown verb '" << opts.verb << "'\n";
  return 2;
}

}  // namespace shoal::cli
