// Blocked pops (BLPOP, BLMOVE, BZPOPMIN...): the clients waiting on keys, in
// the order they came. A blocking command is applied at once as its
// non-blocking form; when that finds nothing, its connection registers here
// and sleeps until a write changes one of its keys (kv::KeyWatcher, told by
// the shard's apply on the leader), then applies it again. Only the client
// that has waited longest on a key is woken; once it took something it wakes
// the next, so clients are served in arrival order.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kv/shard.h"

namespace shoal::server {

// One waiting command. Its fields are touched on its connection's worker only.
struct BlockedClient {
  explicit BlockedClient(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;        // the command sleeps on it; cancelled to wake it
  std::atomic<uint64_t> wakes{0};  // writes to its keys it was woken for (any thread)
  std::vector<std::pair<uint16_t, std::string>> keys;  // (db, key)
  kv::ValueType wants = kv::ValueType::kList;          // what it pops: lists or sorted sets
};

class BlockingKeys : public kv::KeyWatcher {
 public:
  // Queues c behind the clients already waiting on each of its keys.
  void Add(const std::shared_ptr<BlockedClient>& c);
  // Takes c out of the queues. pass_on: c took something (or was woken and
  // leaves without trying), so the next client of each key that pops what
  // c pops is woken.
  void Remove(const std::shared_ptr<BlockedClient>& c, bool pass_on);
  size_t blocked() const { return clients_.load(std::memory_order_relaxed); }

  bool Watching() const override { return clients_.load(std::memory_order_acquire) > 0; }
  // Wakes, for each key, the client that has waited longest for its type
  // (a BLPOP on a key that became a sorted set waits on, as in Redis 7.0).
  void KeysChanged(std::span<const kv::ChangedKey> keys) override;

 private:
  static void Wake(std::shared_ptr<BlockedClient> c);
  // Wakes the first client of `queue` that pops `type`.
  static void WakeFirst(const std::deque<std::shared_ptr<BlockedClient>>& queue, kv::ValueType type);
  mutable std::mutex mu_;
  std::map<std::pair<uint16_t, std::string>, std::deque<std::shared_ptr<BlockedClient>>> by_key_;
  std::atomic<size_t> clients_{0};
};

}  // namespace shoal::server
