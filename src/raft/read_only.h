// ReadOnly: the leader's queue of pending ReadIndex requests awaiting a
// heartbeat quorum that proves it is still leader.
#pragma once

#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "raft/types.h"

namespace shoal::raft {

// A linearizable read that may proceed once the state machine has applied
// `index`. `context` is the caller's request id, returned unchanged.
struct ReadState {
  Index index = 0;
  std::string context;
  bool operator==(const ReadState&) const = default;
};

// Pending reads of one leader term; cleared when the term ends.
class ReadOnly {
 public:
  // One pending request: the commit index when it arrived and who asked.
  struct Pending {
    Index index = 0;
    NodeId from = kNoNode;  // kNoNode: this node itself
    std::string context;
    std::set<NodeId> acks;
  };

  // Queues a request; a duplicate context is ignored.
  void add(Index commit, NodeId from, const std::string& context, NodeId self);
  // Records that `from` acknowledged the heartbeat carrying `context`;
  // returns that request's acks, or nullptr if unknown.
  const std::set<NodeId>* ack(NodeId from, const std::string& context);
  // Dequeues every request up to and including `context` (earlier requests
  // are confirmed by the same heartbeat round).
  std::vector<Pending> advance(const std::string& context);
  // Context of the newest pending request, or empty.
  std::string last_pending_context() const;
  // Number of pending requests; clear() drops them all.
  size_t size() const { return queue_.size(); }
  void clear();

 private:
  std::map<std::string, Pending> pending_;
  std::deque<std::string> queue_;
};

}  // namespace shoal::raft
