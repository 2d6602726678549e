#include "raft/read_only.h"

namespace shoal::raft {

void ReadOnly::add(Index commit, NodeId from, const std::string& context, NodeId self) {
  if (pending_.count(context) != 0) return;
  Pending p{commit, from, context, {self}};
  pending_.emplace(context, std::move(p));
  queue_.push_back(context);
}

const std::set<NodeId>* ReadOnly::ack(NodeId from, const std::string& context) {
  auto it = pending_.find(context);
  if (it == pending_.end()) return nullptr;
  it->second.acks.insert(from);
  return &it->second.acks;
}

std::vector<ReadOnly::Pending> ReadOnly::advance(const std::string& context) {
  std::vector<Pending> out;
  if (pending_.count(context) == 0) return out;
  while (!queue_.empty()) {
    std::string ctx = std::move(queue_.front());
    queue_.pop_front();
    auto it = pending_.find(ctx);
    out.push_back(std::move(it->second));
    pending_.erase(it);
    if (ctx == context) break;
  }
  return out;
}

std::string ReadOnly::last_pending_context() const { return queue_.empty() ? "" : queue_.back(); }

void ReadOnly::clear() {
  pending_.clear();
  queue_.clear();
}

}  // namespace shoal::raft
