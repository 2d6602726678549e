// Test-only helpers: a small cluster of RawNodes over MemoryStorage with a
// synchronous, filterable network. Every Ready is persisted at once.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "raft/raw_node.h"

namespace shoal::raft::testing {

class TestCluster {
 public:
  // Creates voters 1..n (bootstrapped at index 1, term 1); `tweak` adjusts each config.
  explicit TestCluster(size_t n, const std::function<void(Config&)>& tweak = {}) {
    ConfState cs;
    for (NodeId id = 1; id <= n; ++id) cs.voters.push_back(id);
    for (NodeId id = 1; id <= n; ++id) add(id, cs, tweak);
  }

  // Adds a replica; `cs` empty means a brand-new, unconfigured replica.
  void add(NodeId id, const ConfState& cs, const std::function<void(Config&)>& tweak = {}) {
    Member& m = members_[id];
    m.storage = std::make_unique<MemoryStorage>();
    if (!cs.voters.empty()) {
      SHOAL_CHECK(m.storage->apply_snapshot(bootstrap_snapshot(cs, "")).ok());
      m.storage->set_hard_state(HardState{1, kNoNode, 1});
    }
    m.config.id = id;
    m.config.seed = id;
    m.config.check_quorum = false;
    m.config.pre_vote = false;
    if (tweak) tweak(m.config);
    restart(id);
  }

  // Rebuilds a replica from its durable storage (a crash loses nothing
  // here: every Ready is persisted at once).
  void restart(NodeId id) {
    Member& m = members_.at(id);
    auto node = RawNode::create(m.config, m.storage.get());
    SHOAL_CHECK(node.ok());
    m.node = std::move(*node);
    m.applied.clear();
  }

  RawNode& node(NodeId id) { return *members_.at(id).node; }
  const Raft& raft(NodeId id) { return members_.at(id).node->raft(); }
  MemoryStorage& storage(NodeId id) { return *members_.at(id).storage; }
  // Data of the normal, non-empty entries node `id` applied, in order.
  const std::vector<std::string>& applied(NodeId id) { return members_.at(id).applied; }
  std::vector<ReadState>& read_states(NodeId id) { return members_.at(id).read_states; }

  // Cuts all links to and from `id` (messages to it are dropped).
  void isolate(NodeId id) { isolated_.insert(id); }
  void heal() {
    isolated_.clear();
    filter_ = nullptr;
  }
  void recover(NodeId id) { isolated_.erase(id); }
  // Drops every message for which `drop` returns true, until heal().
  void set_filter(std::function<bool(const Message&)> drop) { filter_ = std::move(drop); }

  void tick(NodeId id, int n = 1) {
    for (int i = 0; i < n; ++i) members_.at(id).node->tick();
    deliver();
  }
  void tick_all(int n = 1) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, m] : members_) m.node->tick();
      deliver();
    }
  }
  void campaign(NodeId id) {
    node(id).campaign();
    deliver();
  }
  Proposal propose(NodeId id, std::string data) {
    Proposal p = node(id).propose(std::move(data));
    deliver();
    return p;
  }

  // Drains every node's Ready and delivers messages until quiet.
  void deliver() {
    for (int round = 0; round < 10000; ++round) {
      bool any = false;
      for (auto& [id, m] : members_) any = drain(id, m) || any;
      if (queue_.empty() && !any) return;
      while (!queue_.empty()) {
        Message msg = std::move(queue_.front());
        queue_.pop_front();
        if (isolated_.count(msg.from) || isolated_.count(msg.to) || members_.count(msg.to) == 0) continue;
        if (filter_ && filter_(msg)) continue;
        (void)members_.at(msg.to).node->step(std::move(msg));
      }
    }
    FAIL() << "network did not quiesce";
  }

 private:
  struct Member {
    std::unique_ptr<MemoryStorage> storage;
    std::unique_ptr<RawNode> node;
    Config config;
    std::vector<std::string> applied;
    std::vector<ReadState> read_states;
  };

  bool drain(NodeId id, Member& m) {
    (void)id;
    if (!m.node->has_ready()) return false;
    Ready rd = m.node->ready();
    if (rd.snapshot) SHOAL_CHECK(m.storage->apply_snapshot(*rd.snapshot).ok());
    SHOAL_CHECK(m.storage->append(rd.entries).ok());
    if (rd.hard_state) m.storage->set_hard_state(*rd.hard_state);
    for (Message& msg : rd.messages) queue_.push_back(std::move(msg));
    for (Message& msg : rd.messages_after_persist) queue_.push_back(std::move(msg));
    for (const Entry& e : rd.committed_entries) {
      if (e.type == EntryType::kConfChange) {
        auto cc = decode_conf_change(e.data);
        SHOAL_CHECK(cc.ok());
        m.node->apply_conf_change(*cc);
      } else if (!e.data.empty()) {
        m.applied.push_back(e.data);
      }
    }
    for (ReadState& rs : rd.read_states) m.read_states.push_back(std::move(rs));
    m.node->advance();
    return true;
  }

  std::map<NodeId, Member> members_;
  std::deque<Message> queue_;
  std::set<NodeId> isolated_;
  std::function<bool(const Message&)> filter_;
};

}  // namespace shoal::raft::testing
