#include "server/blocking.h"

#include <asio/post.hpp>

#include <algorithm>

namespace shoal::server {

void BlockingKeys::Wake(std::shared_ptr<BlockedClient> c) {
  // Counted at once (a client that leaves meanwhile sees it and passes it
  // on); the timer is the client's worker's to cancel.
  c->wakes.fetch_add(1);
  auto& timer = c->timer;
  asio::post(timer.get_executor(), [c = std::move(c)] { c->timer.cancel(); });
}

void BlockingKeys::WakeFirst(const std::deque<std::shared_ptr<BlockedClient>>& queue, kv::ValueType type) {
  for (const auto& c : queue) {
    if (c->wants == type) return Wake(c);
  }
}

void BlockingKeys::Add(const std::shared_ptr<BlockedClient>& c) {
  std::lock_guard lock(mu_);
  for (const auto& k : c->keys) {
    auto& q = by_key_[k];
    if (std::find(q.begin(), q.end(), c) == q.end()) q.push_back(c);  // a key named twice waits once
  }
  clients_.fetch_add(1, std::memory_order_release);
}

void BlockingKeys::Remove(const std::shared_ptr<BlockedClient>& c, bool pass_on) {
  std::lock_guard lock(mu_);
  for (const auto& k : c->keys) {
    auto it = by_key_.find(k);
    if (it == by_key_.end()) continue;
    std::erase(it->second, c);
    if (it->second.empty()) {
      by_key_.erase(it);
    } else if (pass_on) {
      WakeFirst(it->second, c->wants);
    }
  }
  clients_.fetch_sub(1, std::memory_order_release);
}

void BlockingKeys::KeysChanged(std::span<const kv::ChangedKey> keys) {
  std::lock_guard lock(mu_);
  for (const auto& k : keys) {
    auto it = by_key_.find({k.db, k.key});
    if (it != by_key_.end()) WakeFirst(it->second, k.type);
  }
}

}  // namespace shoal::server
