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

// A deadline that moves, for a connection whose every frame has one: Set()
// costs a clock reading, not a timer's arming and cancelling. A timer that
// looks every `period` cancels the socket's pending operations once the
// deadline has passed (so it acts up to `period` late). Single-threaded, on
// the socket's own executor, like Deadline.
class MovingDeadline {
 public:
  MovingDeadline(asio::ip::tcp::socket& socket, std::chrono::steady_clock::duration period)
      : socket_(socket), timer_(socket.get_executor()), period_(period), state_(std::make_shared<State>()) {
    Arm();
  }
  ~MovingDeadline() {
    state_->armed = false;
    timer_.cancel();
  }
  MovingDeadline(const MovingDeadline&) = delete;
  MovingDeadline& operator=(const MovingDeadline&) = delete;
  // What is pending from now on must end within `limit`.
  void Set(std::chrono::steady_clock::duration limit) { state_->at = std::chrono::steady_clock::now() + limit; }
  // No deadline until the next Set.
  void Clear() { state_->at = std::chrono::steady_clock::time_point::max(); }
  // Whether a deadline has passed (the socket's operations were cancelled)
  // since this was made.
  bool expired() const { return state_->expired; }

 private:
  struct State {
    std::chrono::steady_clock::time_point at = std::chrono::steady_clock::time_point::max();
    bool armed = true;
    bool expired = false;
  };
  void Arm() {
    timer_.expires_after(period_);
    timer_.async_wait([this, state = state_](const asio::error_code& ec) {
      // `armed` is false once the MovingDeadline is gone (`this` with it).
      if (ec || !state->armed) return;
      if (std::chrono::steady_clock::now() >= state->at) {
        state->expired = true;
        state->at = std::chrono::steady_clock::time_point::max();
        asio::error_code ignored;
        socket_.cancel(ignored);
      }
      Arm();
    });
  }
  asio::ip::tcp::socket& socket_;
  asio::steady_timer timer_;
  std::chrono::steady_clock::duration period_;
  std::shared_ptr<State> state_;
};

}  // namespace shoal::node
