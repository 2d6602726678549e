// Deadline: every socket operation in shoal has one. While a Deadline is
// alive, the socket's pending operations are cancelled (they complete with
// operation_aborted) once `limit` has passed; destroying it disarms it.
// Single-threaded, like the socket: use it on the socket's own executor.
#pragma once

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <memory>

namespace shoal::node {

class Deadline {
 public:
  // kClose: the socket is closed instead, for steps that give up on the
  // connection when late (a handshake): a multi-step operation (TLS) whose
  // next read was already under way when the time came cannot go on.
  enum Expiry { kCancel, kClose };
  Deadline(asio::ip::tcp::socket& socket, std::chrono::steady_clock::duration limit, Expiry expiry = kCancel)
      : timer_(socket.get_executor()), armed_(std::make_shared<bool>(true)) {
    timer_.expires_after(limit);
    timer_.async_wait([&socket, armed = armed_, expiry](const asio::error_code& ec) {
      // `armed` is false once the Deadline is gone (the socket may be too).
      if (ec || !*armed) return;
      asio::error_code ignored;
      if (expiry == kClose) {
        socket.close(ignored);
      } else {
        socket.cancel(ignored);
      }
    });
  }
  ~Deadline() {
    *armed_ = false;
    timer_.cancel();
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  // Whether the limit passed (the operation was cut short by it).
  bool expired() const { return timer_.expiry() <= std::chrono::steady_clock::now(); }

 private:
  asio::steady_timer timer_;
  std::shared_ptr<bool> armed_;
};

}  // namespace shoal::node
