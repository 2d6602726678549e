// Raft messages to and from their wire form (proto/peer.proto).
#pragma once

#include "peer.pb.h"
#include "raft/types.h"

namespace shoal::node {

void ToProto(const raft::Message& m, proto::RaftMessage* out);
// Returns false for a message that is not well formed (unknown type...).
bool FromProto(const proto::RaftMessage& in, raft::Message* m);

}  // namespace shoal::node
